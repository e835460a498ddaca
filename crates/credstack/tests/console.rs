//! The operator console in a real Chromium against the real server on a real
//! store. Each test saves screenshots of the pages it visits.

mod common;

use common::receiver::Receiver;
use common::{ADMIN_KEY, Server, browser, eventually};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::json;
use sha2::Sha256;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Customers with wallets (and one without) in a new credit system.
async fn seed(server: &Server) -> (String, Vec<(String, String)>) {
    let cs = server
        .post(
            "/v1/credit_systems",
            json!({"key": "ai_tokens", "name": "AI tokens", "unit": "tokens"}),
        )
        .await
        .ok()
        .id();
    let mut customers = Vec::new();
    for (name, email) in [
        ("Ada Lovelace", "ada@example.com"),
        ("Grace Hopper", "grace@example.com"),
        ("Alan Turing", "alan@example.com"),
        ("Katherine Johnson", "katherine@example.com"),
    ] {
        let customer = server
            .post("/v1/customers", json!({"name": name, "email": email}))
            .await
            .ok()
            .id();
        let wallet = server
            .post(
                "/v1/wallets",
                json!({"customer_id": customer, "credit_system_id": cs}),
            )
            .await
            .ok()
            .id();
        customers.push((customer, wallet));
    }
    server
        .post("/v1/customers", json!({"name": "Edsger Dijkstra"}))
        .await
        .ok();
    (cs, customers)
}

#[tokio::test]
async fn console_sign_in_refuses_a_wrong_key_and_signs_out() {
    let server = Server::start().await;
    let Some(browser) = browser::start().await else {
        return;
    };
    let base = &server.base;
    browser
        .goto(&format!("{base}/offers/promotions/credit"))
        .await;
    let path = browser.current_path().await;
    assert!(
        path.starts_with("/login"),
        "signed-out visits go to sign-in: {path} {}",
        browser.page_text().await
    );
    browser.screenshot("sign-in").await;
    browser.fill("#api_key", "csk_not_a_key").await;
    browser
        .submit("form[action='/login'] button[type=submit]")
        .await;
    browser.wait_for_text("That is not an admin API key.").await;
    let usage = server
        .post("/v1/api_keys", json!({"name": "meter", "scope": "usage"}))
        .await
        .ok()
        .str("secret");
    browser.fill("#api_key", &usage).await;
    browser
        .submit("form[action='/login'] button[type=submit]")
        .await;
    browser.wait_for_text("That is not an admin API key.").await;
    browser.fill("#api_key", ADMIN_KEY).await;
    browser
        .submit("form[action='/login'] button[type=submit]")
        .await;
    browser.find("nav.sidebar").await;
    assert_eq!(
        browser.current_path().await,
        "/offers/promotions/credit",
        "sign-in returns to the page asked for"
    );
    browser.click("form.signout button").await;
    browser.find("#api_key").await;
    browser.goto(&format!("{base}/credit-systems")).await;
    assert!(
        browser.current_path().await.starts_with("/login"),
        "the session ended"
    );
}

#[tokio::test]
async fn console_credit_systems_create_deactivate_reactivate() {
    let server = Server::start().await;
    let Some(browser) = browser::start().await else {
        return;
    };
    let base = &server.base;
    browser.sign_in(base, ADMIN_KEY).await;
    browser.goto(&format!("{base}/credit-systems")).await;
    browser
        .click("button[data-open='create-credit-system']")
        .await;
    browser.fill("#cs-name", "API calls").await;
    browser.fill("#cs-key", "api_calls").await;
    browser.fill("#cs-unit", "calls").await;
    browser.fill("#cs-scale", "2").await;
    browser
        .click("#create-credit-system button[type=submit]")
        .await;
    browser
        .wait_for_text("Credit system api_calls created.")
        .await;
    browser.screenshot("credit-systems").await;
    // The same key again: the API's error shows next to the field.
    browser
        .click("button[data-open='create-credit-system']")
        .await;
    browser.fill("#cs-name", "Again").await;
    browser.fill("#cs-key", "api_calls").await;
    browser.fill("#cs-unit", "calls").await;
    browser
        .click("#create-credit-system button[type=submit]")
        .await;
    browser.wait_for_text("already exists").await;
    browser.goto(&format!("{base}/credit-systems")).await;
    browser
        .click("button[aria-label='Deactivate API calls']")
        .await;
    browser.wait_for_text("Credit system deactivated.").await;
    let listed = server.get("/v1/credit_systems").await.ok().body;
    assert_eq!(listed["data"][0]["status"], "inactive");
    browser
        .click("button[aria-label='Reactivate API calls']")
        .await;
    browser.wait_for_text("Credit system reactivated.").await;
    let listed = server.get("/v1/credit_systems").await.ok().body;
    assert_eq!(listed["data"][0]["status"], "active");
}

/// Seed 000, done in the console by someone who has read only the seed.
#[tokio::test]
async fn console_promotional_credit_as_seed_000_walks_through_it() {
    let server = Server::start().await;
    let (cs, customers) = seed(&server).await;
    let Some(browser) = browser::start().await else {
        return;
    };
    let base = &server.base;
    browser.sign_in(base, ADMIN_KEY).await;

    // Offers → Promotions → Credit, then "Create promotional credit".
    browser.click("a[href='/offers/promotions/credit']").await;
    browser.wait_for_text("No promotional credits yet.").await;
    browser
        .click(".page-head button[data-open='create-promotional-credit']")
        .await;
    browser.fill("#create-name", "Spring launch").await;
    browser
        .fill("#create-description", "Welcome offer for new sign-ups")
        .await;
    browser.select("#create-credit-system", &cs).await;
    browser
        .click("#create-promotional-credit input[name=start][value=date]")
        .await;
    browser
        .set_value("#create-starts-at", "2025-02-01T09:00")
        .await;
    browser.fill("#create-quantity", "500.5").await;
    browser.select("#create-reset", "month").await;
    browser
        .click("#create-promotional-credit input[name=access][value=on]")
        .await;
    browser.fill("#create-duration-value", "3").await;
    browser.select("#create-duration-unit", "month").await;
    browser.screenshot("create-promotional-credit").await;
    browser
        .click("#create-promotional-credit button[type=submit]")
        .await;
    // The API refuses an over-precise quantity; the modal reopens with the
    // error next to the field and what was typed kept.
    browser
        .wait_for_text("has more decimal places than the credit system's scale")
        .await;
    assert_eq!(
        browser
            .find("#create-name")
            .await
            .prop("value")
            .await
            .unwrap()
            .unwrap(),
        "Spring launch"
    );
    browser.fill("#create-quantity", "500").await;
    browser
        .click("#create-promotional-credit button[type=submit]")
        .await;
    browser.wait_for_text("Promotional credit created.").await;
    let promotion_path = browser.current_path().await;
    let promotion_path = promotion_path.split('?').next().unwrap().to_string();
    let promotion_id = promotion_path.rsplit('/').next().unwrap().to_string();

    // Scheduled until its start: granting is refused, the page says so.
    browser.wait_for_text("scheduled").await;
    browser.wait_for_text("No customers yet.").await;
    server.advance("2025-02-01T09:00:00Z").await;
    browser.goto(&format!("{base}{promotion_path}")).await;
    browser.wait_for_text("active").await;
    browser.screenshot("promotion-empty").await;

    // Grant to specific customers, chosen by search.
    browser
        .click(".empty button[data-open='grant-dialog']")
        .await;
    browser
        .click("#grant-dialog input[name=target][value=specific]")
        .await;
    browser.fill("#grant-search", "ada").await;
    browser
        .click(&format!(
            "#grant-candidates input[value='{}']",
            customers[0].0
        ))
        .await;
    browser.fill("#grant-search", "grace").await;
    browser
        .click(&format!(
            "#grant-candidates input[value='{}']",
            customers[1].0
        ))
        .await;
    browser.screenshot("grant-specific").await;
    browser.click("#grant-dialog button[type=submit]").await;
    browser.wait_for_text("Granted 2 customers.").await;
    // The lock state: locked fields are shown locked; name stays editable.
    browser.wait_for_text("Applied: economics locked").await;
    let balance = server.balance(&customers[0].1).await;
    assert_eq!(balance["by_purpose"]["promotional"], "500");
    browser
        .click(".actions button[data-open='edit-dialog']")
        .await;
    assert!(
        browser
            .find("#edit-quantity")
            .await
            .attr("disabled")
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        browser
            .find("#edit-credit-system")
            .await
            .attr("disabled")
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        browser
            .find("#edit-name")
            .await
            .attr("disabled")
            .await
            .unwrap()
            .is_none()
    );
    browser.screenshot("promotion-locked-edit").await;
    browser.fill("#edit-name", "Spring launch 2025").await;
    browser.click("#edit-dialog button[type=submit]").await;
    browser.wait_for_text("Changes saved.").await;
    let promotion = server
        .get(&format!("/v1/promotional_credits/{promotion_id}"))
        .await
        .ok()
        .body;
    assert_eq!(promotion["name"], "Spring launch 2025");
    assert_eq!(promotion["quantity"], "500");

    // Grant to all customers: progress, then the outcome.
    browser
        .click(".actions button[data-open='grant-dialog']")
        .await;
    browser
        .click("#grant-dialog input[name=target][value=all]")
        .await;
    browser.click("#grant-dialog button[type=submit]").await;
    browser.wait_for_text("Done.").await;
    browser.wait_for_text("Granted 2 · skipped 2 of 4").await;
    browser.screenshot("grant-all-done").await;
    let promotion = server
        .get(&format!("/v1/promotional_credits/{promotion_id}"))
        .await
        .ok()
        .body;
    assert_eq!(promotion["granted_count"], 4);

    // Row action: revoke Ada.
    browser.goto(&format!("{base}{promotion_path}")).await;
    browser
        .click("button[aria-label='Revoke Ada Lovelace']")
        .await;
    browser.wait_for_text("Revoked 1 customer.").await;
    let balance = server.balance(&customers[0].1).await;
    assert_eq!(
        balance["by_purpose"]["promotional"], "0",
        "revoking takes the unspent credit back"
    );

    // Manage access: bulk revoke from the Granted filter, with a search.
    browser
        .click("a[href^='/offers/promotions/credit/'][href*='filter=granted']")
        .await;
    browser.fill("#customer-search", "o").await;
    browser.click("form[role=search] button[type=submit]").await;
    browser.wait_for_text("Katherine Johnson").await;
    let text = browser.page_text().await;
    assert!(
        !text.contains("Ada Lovelace"),
        "Ada is revoked, not in the Granted filter"
    );
    browser.click("input[data-select-all]").await;
    browser.screenshot("manage-access-granted").await;
    browser
        .click("button[formaction$='/revoke'][data-needs-selection]")
        .await;
    browser.wait_for_text("Revoked 3 customers.").await;

    // Bulk re-grant from the Revoked filter.
    browser
        .click("a[href^='/offers/promotions/credit/'][href*='filter=revoked']")
        .await;
    browser.wait_for_text("Ada Lovelace").await;
    browser
        .click(&format!(
            "input[name=customer_ids][value='{}']",
            customers[0].0
        ))
        .await;
    browser
        .click(&format!(
            "input[name=customer_ids][value='{}']",
            customers[2].0
        ))
        .await;
    browser.screenshot("manage-access-revoked").await;
    browser
        .click("button[formaction$='/grant'][data-needs-selection]")
        .await;
    browser.wait_for_text("Granted 2 customers.").await;
    let listed = server
        .get(&format!(
            "/v1/promotional_credits/{promotion_id}/customers?status=granted"
        ))
        .await
        .ok()
        .body;
    let mut granted: Vec<String> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["customer"]["name"].as_str().unwrap().to_string())
        .collect();
    granted.sort();
    assert_eq!(granted, ["Ada Lovelace", "Alan Turing"]);
    browser
        .goto(&format!("{base}/offers/promotions/credit"))
        .await;
    browser.wait_for_text("Spring launch 2025").await;
    browser.screenshot("promotions-list").await;
}

fn count(html: &str, needle: &str) -> usize {
    html.matches(needle).count()
}

/// Customers in the console: create one, give them a wallet and grants,
/// make a test debit, and watch the balance and its chart change as time
/// passes (an expiry and a renewal appear as markers).
#[tokio::test]
async fn console_customer_balance_and_chart_change() {
    let server = Server::start().await;
    let cs = server
        .post(
            "/v1/credit_systems",
            json!({"key": "ai_tokens", "name": "AI tokens", "unit": "tokens"}),
        )
        .await
        .ok()
        .id();
    let Some(browser) = browser::start().await else {
        return;
    };
    let base = &server.base;
    browser.sign_in(base, ADMIN_KEY).await;
    browser.click("a[href='/customers']").await;
    browser
        .click(".page-head button[data-open='create-customer']")
        .await;
    browser.fill("#cus-name", "Ada Lovelace").await;
    browser.fill("#cus-email", "ada@example.com").await;
    browser.fill("#cus-external-id", "user_42").await;
    browser.click("#create-customer button[type=submit]").await;
    browser.wait_for_text("Customer since").await;
    let customer_path = browser.current_path().await;
    let customer_path = customer_path.split('?').next().unwrap().to_string();

    // A wallet in the credit system.
    browser.select("#wallet-system", &cs).await;
    browser.click("#new-wallet button[type=submit]").await;
    browser.wait_for_text("AI tokens wallet").await;
    let wallet = server.get("/v1/wallets").await.ok().body["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();

    // A promotional grant expiring in a week, and a monthly bundled allowance.
    browser
        .click(".page-head button[data-open='add-grant']")
        .await;
    browser.fill("#grant-amount", "1000").await;
    browser.select("#grant-purpose", "promotional").await;
    browser
        .set_value("#grant-expires", "2025-02-07T10:00")
        .await;
    browser.click("#add-grant button[type=submit]").await;
    browser.wait_for_text("Grants in drawdown order").await;
    browser
        .click(".page-head button[data-open='add-grant']")
        .await;
    browser.fill("#grant-amount", "500").await;
    browser.select("#grant-purpose", "bundled").await;
    browser.select("#grant-recurrence", "month").await;
    browser.click("#add-grant button[type=submit]").await;
    browser.wait_for_text("Grants in drawdown order").await;
    let balance = server.balance(&wallet).await;
    assert_eq!(
        (
            balance["balance"].as_str(),
            balance["by_purpose"]["promotional"].as_str()
        ),
        (Some("1500"), Some("1000"))
    );

    // A test debit takes from the promotional grant first.
    browser.fill("#debit-amount", "300").await;
    browser.click("#test-debit button[type=submit]").await;
    browser.wait_for_text("promotional").await;
    let balance = server.balance(&wallet).await;
    assert_eq!(balance["balance"], "1200");
    assert_eq!(balance["by_purpose"]["promotional"], "700");
    browser.screenshot("customer").await;
    let html = browser.client.source().await.unwrap();
    assert_eq!(
        count(&html, "class=\"marker expiry\""),
        0,
        "nothing has expired yet"
    );

    // Time passes: the promotion expires, the allowance renews.
    server.advance("2025-03-01T10:00:00Z").await;
    browser.goto(&format!("{base}{customer_path}")).await;
    browser.wait_for_text("Ledger").await;
    let html = browser.client.source().await.unwrap();
    // Two expiries: the promotional grant's remainder on Feb 7, and the
    // allowance's unspent cycle forfeited at its renewal on Feb 28 (rule 10).
    assert_eq!(
        count(&html, "class=\"marker expiry\""),
        2,
        "the expiries are marked"
    );
    assert_eq!(
        count(&html, "class=\"marker renewal\""),
        1,
        "the allowance renewed on Feb 28"
    );
    let balance = server.balance(&wallet).await;
    assert_eq!(balance["balance"], "500");
    browser.screenshot("customer-chart").await;

    // Void the bundled grant from its row.
    browser.click("summary[aria-label^='Void grant']").await;
    browser.click("form.confirm-pop button[type=submit]").await;
    browser.wait_for_text("void").await;
    let balance = server.balance(&wallet).await;
    assert_eq!(balance["balance"], "0", "voiding forfeits the remainder");
    let entries = server.entries(&wallet).await;
    assert_eq!(entries.last().unwrap()["type"], "void");
}

/// Webhooks in the console: add an endpoint for one event type (its secret
/// shown once), watch a delivery to a failing receiver give up in the
/// delivery log, redeliver it by hand once the receiver recovers, then
/// disable and delete the endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_webhooks_add_an_endpoint_and_redeliver_by_hand() {
    let server = Server::start().await;
    let Some(browser) = browser::start().await else {
        return;
    };
    // The delivery loop `serve` runs, with a window short enough to give up
    // within the test.
    credstack::webhooks::spawn(
        server.ledger.clone().expect("an in-process server"),
        credstack::webhooks::Settings {
            timeout: Duration::from_secs(5),
            retry_base: Duration::from_millis(100),
            retry_window: Duration::from_secs(1),
        },
    );
    let receiver = Receiver::start().await;
    receiver.state.fail.store(usize::MAX, Ordering::SeqCst);
    let wallet = server.wallet(0).await;
    let base = &server.base;
    browser.sign_in(base, ADMIN_KEY).await;
    browser.goto(&format!("{base}/webhooks")).await;
    browser.wait_for_text("No webhook endpoints yet.").await;
    browser.click("button[data-open='create-endpoint']").await;
    browser.fill("#wh-url", &receiver.url).await;
    browser.fill("#wh-description", "Billing system").await;
    browser
        .click("input[name=event_types][value='grant.created']")
        .await;
    browser.submit("#create-endpoint button[type=submit]").await;
    browser.wait_for_text("shown only this once").await;
    let secret = browser.text("#webhook-secret").await;
    assert!(secret.starts_with("whsec_"), "{secret}");
    browser.screenshot("webhooks").await;
    let listed = server.get("/v1/webhook_endpoints").await.ok().body;
    let endpoint = listed["data"][0].clone();
    assert_eq!(endpoint["url"], receiver.url.as_str());
    assert_eq!(endpoint["event_types"], json!(["grant.created"]));
    assert_eq!(endpoint["description"], "Billing system");
    let endpoint_id = endpoint["id"].as_str().unwrap().to_string();
    // Shown once: the list and the endpoint's page never show it again.
    browser.goto(&format!("{base}/webhooks")).await;
    assert!(!browser.page_text().await.contains(&secret));

    // A grant (grant.created, subscribed) and a debit to zero
    // (wallet.depleted, not subscribed): one delivery, which fails until
    // its window closes.
    server
        .grant_ok(&wallet, json!({"amount": "5", "purpose": "paid"}))
        .await;
    server.debit(&wallet, "5").await.ok();
    let deliveries = format!("/v1/webhook_endpoints/{endpoint_id}/deliveries");
    eventually("the delivery is given up", || async {
        let log = server.get(&deliveries).await.ok().body;
        log["data"][0]["status"] == "failed"
    })
    .await;
    let log = server.get(&deliveries).await.ok().body;
    assert_eq!(log["data"].as_array().unwrap().len(), 1, "{log}");
    browser
        .goto(&format!("{base}/webhooks/{endpoint_id}"))
        .await;
    assert_eq!(browser.text("tr[data-delivery] .badge").await, "failed");
    let page = browser.page_text().await;
    assert!(page.contains("the endpoint answered 500"), "{page}");
    assert!(!page.contains(&secret));
    browser.screenshot("webhook-delivery-log").await;

    // The receiver recovers; the operator sends the delivery again.
    receiver.state.fail.store(0, Ordering::SeqCst);
    browser
        .submit("button[aria-label='Redeliver grant.created 1']")
        .await;
    browser.wait_for_text("will be sent again").await;
    eventually("the redelivery arrives", || async {
        receiver.delivered().len() == 1
    })
    .await;
    let delivered = &receiver.delivered()[0];
    assert_eq!(delivered["type"], "grant.created");
    assert_eq!(delivered["wallet_id"], wallet.as_str());
    let arrived = receiver.received();
    let last = arrived.last().unwrap();
    // Signed with the secret the page showed.
    let (t, v1) = last.signature.split_once(",v1=").unwrap();
    let t = t.strip_prefix("t=").unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{}", last.raw).as_bytes());
    assert_eq!(hex::encode(mac.finalize().into_bytes()), v1);
    browser
        .goto(&format!("{base}/webhooks/{endpoint_id}?status=succeeded"))
        .await;
    assert_eq!(browser.text("tr[data-delivery] .badge").await, "succeeded");

    // Disable, then delete (behind a confirmation).
    browser.submit("form[action$='/enabled'] button").await;
    browser.wait_for_text("Endpoint disabled").await;
    let read = server
        .get(&format!("/v1/webhook_endpoints/{endpoint_id}"))
        .await
        .ok()
        .body;
    assert_eq!(read["enabled"], false);
    browser.click("summary[aria-label='Delete endpoint']").await;
    browser
        .submit("form[action$='/delete'] button[type=submit]")
        .await;
    browser.wait_for_text("Endpoint deleted").await;
    let listed = server.get("/v1/webhook_endpoints").await.ok().body;
    assert_eq!(listed["data"], json!([]));
    assert_eq!(server.get(&deliveries).await.status, 404);
}
