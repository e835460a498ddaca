//! SPEC §2 rules 19–26 and the `/v1/promotional_credits` rows of §3, end to
//! end: a real server on a real store, real HTTP, the simulated clock. Each
//! test is named after the rule it proves and asserts the exact JSON.

mod common;

use common::{START, Server, assert_error};
use serde_json::{Value, json};

// ---- helpers --------------------------------------------------------------------

const UNKNOWN_CUSTOMER: &str = "cus_01JZZZZZZZZZZZZZZZZZZZZZZZ";

/// A well-formed customer id that names nobody.
fn unknown_customer(index: usize) -> String {
    format!("cus_01J{}{index:05}", "Z".repeat(18))
}

fn rows(list: &[(&str, &str, &str, &str)]) -> Vec<(String, String, String, String)> {
    list.iter()
        .map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), d.to_string()))
        .collect()
}

fn ids(list: &Value) -> Vec<String> {
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["id"].as_str().unwrap().to_string())
        .collect()
}

fn customer_ids(list: &Value) -> Vec<String> {
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["customer"]["id"].as_str().unwrap().to_string())
        .collect()
}

fn skipped(pairs: &[(&str, &str)]) -> Value {
    Value::Array(
        pairs
            .iter()
            .map(|(customer, reason)| json!({"customer_id": customer, "reason": reason}))
            .collect(),
    )
}

impl Server {
    async fn promo_create(&self, body: Value) -> common::Response {
        self.post("/v1/promotional_credits", body).await
    }

    /// Creates a campaign funding `credit_system_id` with `quantity`; `extra`
    /// fields are merged in. Returns its id.
    async fn promo(&self, credit_system_id: &str, quantity: &str, extra: Value) -> String {
        let mut body = json!({
            "name": "Launch promo",
            "credit_system_id": credit_system_id,
            "quantity": quantity,
        });
        for (field, value) in extra.as_object().unwrap() {
            body[field] = value.clone();
        }
        self.promo_create(body).await.ok().id()
    }

    async fn promo_get(&self, promo: &str) -> Value {
        self.get(&format!("/v1/promotional_credits/{promo}"))
            .await
            .ok()
            .body
    }

    async fn promo_patch(&self, promo: &str, body: Value) -> common::Response {
        self.patch(&format!("/v1/promotional_credits/{promo}"), body)
            .await
    }

    async fn promo_grant(&self, promo: &str, customers: &[&str]) -> common::Response {
        self.post(
            &format!("/v1/promotional_credits/{promo}/grant"),
            json!({ "customer_ids": customers }),
        )
        .await
    }

    async fn promo_grant_all(&self, promo: &str) -> common::Response {
        self.post(
            &format!("/v1/promotional_credits/{promo}/grant"),
            json!({"all_customers": true}),
        )
        .await
    }

    async fn promo_revoke(&self, promo: &str, customers: &[&str]) -> common::Response {
        self.post(
            &format!("/v1/promotional_credits/{promo}/revoke"),
            json!({ "customer_ids": customers }),
        )
        .await
    }

    async fn promo_revoke_all(&self, promo: &str) -> common::Response {
        self.post(
            &format!("/v1/promotional_credits/{promo}/revoke"),
            json!({"all_customers": true}),
        )
        .await
    }

    /// `GET /v1/promotional_credits/{promo}/customers?{query}`.
    async fn promo_customers(&self, promo: &str, query: &str) -> Value {
        self.get(&format!(
            "/v1/promotional_credits/{promo}/customers?{query}"
        ))
        .await
        .ok()
        .body
    }

    /// A customer with this name, email and external id.
    async fn named_customer(
        &self,
        name: &str,
        email: Option<&str>,
        external: Option<&str>,
    ) -> String {
        self.post(
            "/v1/customers",
            json!({"name": name, "email": email, "external_id": external}),
        )
        .await
        .ok()
        .id()
    }

    /// A wallet for `customer` in `credit_system_id`.
    async fn open_wallet(&self, customer: &str, credit_system_id: &str) -> String {
        self.post(
            "/v1/wallets",
            json!({"customer_id": customer, "credit_system_id": credit_system_id}),
        )
        .await
        .ok()
        .id()
    }

    /// A new customer with a wallet in `credit_system_id`: (customer, wallet).
    async fn member(&self, credit_system_id: &str, name: &str) -> (String, String) {
        let customer = self.customer(name).await;
        let wallet = self.open_wallet(&customer, credit_system_id).await;
        (customer, wallet)
    }
}

/// The assignment JSON the API must return, taking the generated `id` and
/// `grant_id` from `actual`.
fn assignment(
    actual: &Value,
    promo: &str,
    customer: &str,
    wallet: &str,
    granted_at: &str,
    expires_at: Option<&str>,
    revoked_at: Option<&str>,
) -> Value {
    json!({
        "id": actual["id"],
        "object": "promotional_credit_assignment",
        "promotional_credit_id": promo,
        "customer_id": customer,
        "wallet_id": wallet,
        "grant_id": actual["grant_id"],
        "active": revoked_at.is_none(),
        "granted_at": granted_at,
        "expires_at": expires_at,
        "revoked_at": revoked_at,
    })
}

/// One row of the customers listing.
fn customer_row(
    customer: Value,
    status: &str,
    active_assignments: u64,
    last_granted_at: &str,
    revoked_at: Option<&str>,
) -> Value {
    json!({
        "object": "promotional_credit_customer",
        "customer": customer,
        "status": status,
        "active_assignments": active_assignments,
        "last_granted_at": last_granted_at,
        "revoked_at": revoked_at,
    })
}

fn plain(customer: &str, name: &str) -> Value {
    json!({"id": customer, "name": name, "email": null, "external_id": null})
}

fn counts(promo: &Value) -> (u64, u64) {
    (
        promo["granted_count"].as_u64().unwrap(),
        promo["revoked_count"].as_u64().unwrap(),
    )
}

// ---- rule 19: the campaign policy -------------------------------------------------

#[tokio::test]
async fn rule_19_create_read_and_list_the_campaign_policy() {
    let server = Server::start().await;
    let cs = server.credit_system("ai_tokens", 2).await;
    let full = server
        .promo_create(json!({
            "name": "Spring launch",
            "description": "Q2 push for new sign-ups",
            "credit_system_id": cs,
            "starts_at": "2025-02-01T00:00:00Z",
            "ends_at": "2025-03-01T00:00:00Z",
            "quantity": "100.50",
            "reset_interval": "month",
            "access_period": {"duration_value": 3, "duration_unit": "month"},
            "allow_multiple_grants": true,
        }))
        .await
        .ok();
    let full_id = full.id();
    assert!(full_id.starts_with("pc_"), "{full_id}");
    assert_eq!(
        full.body,
        json!({
            "id": full_id,
            "object": "promotional_credit",
            "name": "Spring launch",
            "description": "Q2 push for new sign-ups",
            "credit_system_id": cs,
            "starts_at": "2025-02-01T00:00:00Z",
            "ends_at": "2025-03-01T00:00:00Z",
            "quantity": "100.5",
            "reset_interval": "month",
            "access_period": {"duration_value": 3, "duration_unit": "month"},
            "allow_multiple_grants": true,
            "status": "scheduled",
            "is_applied": false,
            "granted_count": 0,
            "revoked_count": 0,
            "created_at": START,
        })
    );
    assert_eq!(server.promo_get(&full_id).await, full.body);

    // Only the required fields: starts now, never ends, never resets, forever.
    let minimal = server
        .promo_create(json!({"name": "Welcome", "credit_system_id": cs, "quantity": "5"}))
        .await
        .ok();
    let minimal_id = minimal.id();
    assert_eq!(
        minimal.body,
        json!({
            "id": minimal_id,
            "object": "promotional_credit",
            "name": "Welcome",
            "description": null,
            "credit_system_id": cs,
            "starts_at": null,
            "ends_at": null,
            "quantity": "5",
            "reset_interval": "never",
            "access_period": null,
            "allow_multiple_grants": false,
            "status": "active",
            "is_applied": false,
            "granted_count": 0,
            "revoked_count": 0,
            "created_at": START,
        })
    );

    let list = server.get("/v1/promotional_credits").await.ok().body;
    assert_eq!(
        list,
        json!({"object": "list", "data": [minimal.body, full.body], "has_more": false}),
        "newest first"
    );
    let page = server
        .get("/v1/promotional_credits?limit=1")
        .await
        .ok()
        .body;
    assert_eq!(ids(&page), vec![minimal_id.clone()]);
    assert_eq!(page["has_more"], true);
    let next = server
        .get(&format!(
            "/v1/promotional_credits?limit=1&starting_after={minimal_id}"
        ))
        .await
        .ok()
        .body;
    assert_eq!(ids(&next), vec![full_id]);
    assert_eq!(next["has_more"], false);
    assert_error(
        &server
            .get("/v1/promotional_credits/pc_01JZZZZZZZZZZZZZZZZZZZZZZZ")
            .await,
        404,
        "resource_not_found",
        None,
    );
}

#[tokio::test]
async fn rule_19_credit_system_must_be_active() {
    let server = Server::start().await;
    let cs = server.credit_system("retired", 0).await;
    let live = server.credit_system("live", 0).await;
    let unapplied = server.promo(&live, "10", json!({})).await;
    server
        .patch(
            &format!("/v1/credit_systems/{cs}"),
            json!({"status": "inactive"}),
        )
        .await
        .ok();

    let response = server
        .promo_create(json!({"name": "Nope", "credit_system_id": cs, "quantity": "10"}))
        .await;
    assert_error(
        &response,
        409,
        "credit_system_inactive",
        Some("credit_system_id"),
    );
    // Moving an unapplied campaign onto an inactive system is refused too.
    let before = server.promo_get(&unapplied).await;
    assert_error(
        &server
            .promo_patch(&unapplied, json!({"credit_system_id": cs}))
            .await,
        409,
        "credit_system_inactive",
        Some("credit_system_id"),
    );
    assert_eq!(server.promo_get(&unapplied).await, before);
    assert_eq!(
        ids(&server.get("/v1/promotional_credits").await.ok().body),
        vec![unapplied.clone()],
        "nothing was created"
    );

    server
        .patch(
            &format!("/v1/credit_systems/{cs}"),
            json!({"status": "active"}),
        )
        .await
        .ok();
    let created = server
        .promo_create(json!({"name": "Now", "credit_system_id": cs, "quantity": "10"}))
        .await
        .ok();
    assert_eq!(created.body["credit_system_id"], cs);
    assert_eq!(created.body["status"], "active");
}

#[tokio::test]
async fn rule_19_invalid_policy_fields_are_refused_with_param() {
    let server = Server::start().await;
    let cs = server.credit_system("two", 2).await;
    let base = json!({"name": "Bad", "credit_system_id": cs, "quantity": "10"});
    let cases: Vec<(Value, &str)> = vec![
        (json!({"reset_interval": "fortnight"}), "reset_interval"),
        (json!({"reset_interval": "hour"}), "reset_interval"),
        (json!({"reset_interval": "Month"}), "reset_interval"),
        (json!({"reset_interval": ""}), "reset_interval"),
        (
            json!({"access_period": {"duration_value": 1, "duration_unit": "hour"}}),
            "access_period.duration_unit",
        ),
        (
            json!({"access_period": {"duration_value": 1, "duration_unit": "never"}}),
            "access_period.duration_unit",
        ),
        (
            json!({"access_period": {"duration_value": 0, "duration_unit": "month"}}),
            "access_period.duration_value",
        ),
        (json!({"quantity": "0"}), "quantity"),
        (json!({"quantity": "0.00"}), "quantity"),
        (json!({"quantity": "-5"}), "quantity"),
        (json!({"quantity": "1.234"}), "quantity"),
        (json!({"quantity": "abc"}), "quantity"),
        (json!({"quantity": ""}), "quantity"),
        (json!({"quantity": 5}), "quantity"),
        (json!({"quantity": "1000000000000.01"}), "quantity"),
        (json!({"name": ""}), "name"),
        (
            json!({"credit_system_id": "cs_01JZZZZZZZZZZZZZZZZZZZZZZZ"}),
            "credit_system_id",
        ),
        (json!({"starts_at": "2025-01-01T00:00:00Z"}), "starts_at"),
        (
            json!({"starts_at": "2025-03-01T00:00:00Z", "ends_at": "2025-02-01T00:00:00Z"}),
            "ends_at",
        ),
        (json!({"ends_at": START}), "ends_at"),
    ];
    for (change, param) in &cases {
        let mut body = base.clone();
        for (field, value) in change.as_object().unwrap() {
            body[field] = value.clone();
        }
        let response = server.promo_create(body.clone()).await;
        assert_error(&response, 400, "parameter_invalid", Some(param));
    }
    assert_eq!(
        server.get("/v1/promotional_credits").await.ok().body["data"],
        json!([]),
        "nothing was created"
    );

    // The same values are refused by an edit, which changes nothing.
    let promo = server.promo(&cs, "10", json!({})).await;
    let before = server.promo_get(&promo).await;
    for (change, param) in cases {
        if change.get("name").is_some() && change["name"] == "" {
            continue;
        }
        let response = server.promo_patch(&promo, change.clone()).await;
        assert_error(&response, 400, "parameter_invalid", Some(param));
        assert_eq!(server.promo_get(&promo).await, before, "{change}");
    }
    assert_error(
        &server.promo_patch(&promo, json!({"name": ""})).await,
        400,
        "parameter_invalid",
        Some("name"),
    );
    assert_eq!(server.promo_get(&promo).await, before);
}

#[tokio::test]
async fn rule_19_status_is_derived_from_the_clock_and_filters_the_list() {
    let server = Server::start().await;
    let cs = server.credit_system("ai", 0).await;
    let forever = server.promo(&cs, "10", json!({"name": "forever"})).await;
    let later = server
        .promo(
            &cs,
            "10",
            json!({"name": "later", "starts_at": "2025-02-01T00:00:00Z", "ends_at": "2025-02-10T00:00:00Z"}),
        )
        .await;
    let short = server
        .promo(
            &cs,
            "10",
            json!({"name": "short", "ends_at": "2025-02-05T00:00:00Z"}),
        )
        .await;
    let by_status = |status: &'static str| {
        let server = &server;
        async move {
            ids(&server
                .get(&format!("/v1/promotional_credits?status={status}"))
                .await
                .ok()
                .body)
        }
    };
    let status_of = |promo: String| {
        let server = &server;
        async move { server.promo_get(&promo).await["status"].clone() }
    };

    assert_eq!(by_status("scheduled").await, vec![later.clone()]);
    assert_eq!(
        by_status("active").await,
        vec![short.clone(), forever.clone()]
    );
    assert_eq!(by_status("ended").await, Vec::<String>::new());
    assert_eq!(status_of(later.clone()).await, "scheduled");

    // Half-open window: active from starts_at exactly.
    server.advance("2025-01-31T23:59:59Z").await;
    assert_eq!(by_status("scheduled").await, vec![later.clone()]);
    server.advance("2025-02-01T00:00:00Z").await;
    assert_eq!(by_status("scheduled").await, Vec::<String>::new());
    assert_eq!(
        by_status("active").await,
        vec![short.clone(), later.clone(), forever.clone()]
    );
    assert_eq!(status_of(later.clone()).await, "active");

    // Ended from ends_at exactly.
    server.advance("2025-02-05T00:00:00Z").await;
    assert_eq!(by_status("ended").await, vec![short.clone()]);
    assert_eq!(
        by_status("active").await,
        vec![later.clone(), forever.clone()]
    );
    assert_eq!(status_of(short.clone()).await, "ended");

    server.advance("2025-03-01T00:00:00Z").await;
    assert_eq!(by_status("ended").await, vec![short.clone(), later.clone()]);
    assert_eq!(by_status("active").await, vec![forever.clone()]);
    assert_eq!(by_status("scheduled").await, Vec::<String>::new());
    assert_eq!(
        ids(&server.get("/v1/promotional_credits").await.ok().body),
        vec![short, later, forever],
        "no filter lists every status"
    );

    for bad in ["bogus", "Active", "expired"] {
        assert_error(
            &server
                .get(&format!("/v1/promotional_credits?status={bad}"))
                .await,
            400,
            "parameter_invalid",
            Some("status"),
        );
    }
}

// ---- rule 20: the promo window ---------------------------------------------------

#[tokio::test]
async fn rule_20_promo_window_governs_granting_only() {
    let server = Server::start().await;
    let cs = server.credit_system("ai", 0).await;
    let (ada, ada_wallet) = server.member(&cs, "Ada").await;
    let (bob, bob_wallet) = server.member(&cs, "Bob").await;
    let (cyd, cyd_wallet) = server.member(&cs, "Cyd").await;
    let promo = server
        .promo(
            &cs,
            "50",
            json!({
                "starts_at": "2025-02-01T00:00:00Z",
                "ends_at": "2025-02-10T00:00:00Z",
                "reset_interval": "week",
                "access_period": {"duration_value": 1, "duration_unit": "month"},
            }),
        )
        .await;

    // Scheduled: granting is refused and nothing changes.
    let before = server.promo_get(&promo).await;
    assert_eq!(before["status"], "scheduled");
    assert_error(
        &server.promo_grant(&promo, &[&ada]).await,
        409,
        "promotion_not_active",
        None,
    );
    assert_error(
        &server.promo_grant_all(&promo).await,
        409,
        "promotion_not_active",
        None,
    );
    assert_eq!(server.promo_get(&promo).await, before);
    assert_eq!(server.grants(&ada_wallet).await, Vec::<Value>::new());
    assert_eq!(server.promo_customers(&promo, "").await["data"], json!([]));

    // Active.
    server.advance("2025-02-01T00:00:00Z").await;
    let granted = server.promo_grant(&promo, &[&ada, &bob]).await.ok().body;
    assert_eq!(
        granted["granted"],
        json!([
            assignment(
                &granted["granted"][0],
                &promo,
                &ada,
                &ada_wallet,
                "2025-02-01T00:00:00Z",
                Some("2025-03-01T00:00:00Z"),
                None
            ),
            assignment(
                &granted["granted"][1],
                &promo,
                &bob,
                &bob_wallet,
                "2025-02-01T00:00:00Z",
                Some("2025-03-01T00:00:00Z"),
                None
            ),
        ])
    );
    let promo_now = server.promo_get(&promo).await;
    assert_eq!(
        (&promo_now["status"], &promo_now["is_applied"]),
        (&json!("active"), &json!(true))
    );

    // Ended: granting is refused, to new and to existing customers alike.
    server.advance("2025-02-10T00:00:00Z").await;
    let before = server.promo_get(&promo).await;
    assert_eq!(before["status"], "ended");
    assert_eq!(counts(&before), (2, 0));
    for response in [
        server.promo_grant(&promo, &[&cyd]).await,
        server.promo_grant(&promo, &[&ada]).await,
        server.promo_grant_all(&promo).await,
    ] {
        assert_error(&response, 409, "promotion_not_active", None);
    }
    assert_eq!(server.promo_get(&promo).await, before);
    assert_eq!(server.grants(&cyd_wallet).await, Vec::<Value>::new());

    // Assignments made live on and keep renewing within their access period.
    server.debit(&ada_wallet, "20").await.ok();
    server.advance("2025-02-20T00:00:00Z").await;
    assert_eq!(
        server.promo_customers(&promo, "status=granted").await["data"],
        json!([
            customer_row(
                plain(&bob, "Bob"),
                "granted",
                1,
                "2025-02-01T00:00:00Z",
                None
            ),
            customer_row(
                plain(&ada, "Ada"),
                "granted",
                1,
                "2025-02-01T00:00:00Z",
                None
            ),
        ])
    );
    assert_eq!(server.balance(&ada_wallet).await["balance"], "50");
    // Revoking is allowed after the window ended.
    let revoked = server.promo_revoke(&promo, &[&bob]).await.ok().body;
    assert_eq!(revoked["revoked_count"], 1);
    assert_eq!(revoked["revoked"][0]["revoked_at"], "2025-02-20T00:00:00Z");

    server.advance("2025-03-05T00:00:00Z").await;
    assert_eq!(
        server.ledger(&ada_wallet).await,
        rows(&[
            ("grant", "50", "50", "2025-02-01T00:00:00Z"),
            ("expiry", "-50", "0", "2025-02-08T00:00:00Z"),
            ("renewal", "50", "50", "2025-02-08T00:00:00Z"),
            ("debit", "-20", "30", "2025-02-10T00:00:00Z"),
            ("expiry", "-30", "0", "2025-02-15T00:00:00Z"),
            ("renewal", "50", "50", "2025-02-15T00:00:00Z"),
            ("expiry", "-50", "0", "2025-02-22T00:00:00Z"),
            ("renewal", "50", "50", "2025-02-22T00:00:00Z"),
            // The access period ends Mar 1: no renewal at or after it.
            ("expiry", "-50", "0", "2025-03-01T00:00:00Z"),
        ])
    );
    assert_eq!(
        server.promo_customers(&promo, "").await["data"],
        json!([
            customer_row(
                plain(&bob, "Bob"),
                "revoked",
                0,
                "2025-02-01T00:00:00Z",
                Some("2025-02-20T00:00:00Z")
            ),
            customer_row(
                plain(&ada, "Ada"),
                "expired",
                0,
                "2025-02-01T00:00:00Z",
                None
            ),
        ])
    );
    assert_eq!(counts(&server.promo_get(&promo).await), (0, 1));
    server.check_invariants(&ada_wallet).await;
    server.check_invariants(&bob_wallet).await;
}

// ---- rule 21: what a grant puts in the wallet ----------------------------------------

#[tokio::test]
async fn rule_21_grant_creates_an_assignment_backed_by_a_promotional_grant() {
    let server = Server::start().await;
    let cs = server.credit_system("ai", 2).await;
    let (ada, wallet) = server.member(&cs, "Ada").await;
    server
        .grant_ok(&wallet, json!({"amount": "3", "purpose": "paid"}))
        .await;
    let promo = server
        .promo(
            &cs,
            "25.5",
            json!({
                "name": "Spring launch",
                "reset_interval": "month",
                "access_period": {"duration_value": 3, "duration_unit": "month"},
            }),
        )
        .await;
    let response = server.promo_grant(&promo, &[&ada]).await.ok().body;
    let granted = &response["granted"][0];
    assert!(granted["id"].as_str().unwrap().starts_with("pca_"));
    assert_eq!(
        response,
        json!({
            "object": "promotional_credit_grant",
            "granted": [assignment(granted, &promo, &ada, &wallet, START, Some("2025-04-30T10:00:00Z"), None)],
            "skipped": [],
            "granted_count": 1,
            "skipped_count": 0,
        })
    );
    let grant_id = granted["grant_id"].as_str().unwrap().to_string();
    let grant = server.get_grant(&grant_id).await;
    assert_eq!(
        grant,
        json!({
            "id": grant_id,
            "object": "grant",
            "wallet_id": wallet,
            "amount": "25.5",
            "purpose": "promotional",
            "priority": 10,
            "effective_at": START,
            "expires_at": "2025-04-30T10:00:00Z",
            "recurrence": {"interval": "month", "interval_count": 1},
            "rollover_max": "0",
            "remaining": "25.5",
            "held": "0",
            "status": "active",
            "cycle": {"number": 1, "starts_at": START, "ends_at": "2025-02-28T10:00:00Z"},
            "next_renewal_at": "2025-02-28T10:00:00Z",
            "ended_at": null,
            "description": "Spring launch",
            "metadata": {},
            "source": {
                "type": "promotional_credit",
                "promotional_credit_id": promo,
                "assignment_id": granted["id"],
            },
            "created_at": START,
        })
    );
    let grants = server.grants(&wallet).await;
    assert_eq!(grants.len(), 2);
    assert_eq!(grants[0], grant, "newest first");
    let balance = server.balance(&wallet).await;
    assert_eq!(balance["balance"], "28.5");
    assert_eq!(
        balance["by_purpose"],
        json!({"promotional": "25.5", "bundled": "0", "paid": "3"})
    );
    assert_eq!(
        server.ledger(&wallet).await,
        rows(&[("grant", "3", "3", START), ("grant", "25.5", "28.5", START),])
    );
    let entries = server.entries(&wallet).await;
    assert_eq!(entries[1]["grant_id"], grant_id);
    // Promotional credit is drawn first.
    let debit = server.debit(&wallet, "26").await.ok().body;
    assert_eq!(
        debit["allocations"],
        json!([{"grant_id": grant_id, "amount": "25.5"}, {"grant_id": grants[1]["id"], "amount": "0.5"}])
    );
    let applied = server.promo_get(&promo).await;
    assert_eq!(
        (&applied["is_applied"], counts(&applied)),
        (&json!(true), (1, 0))
    );

    // Reset never, access forever: no recurrence, no expiry.
    let forever = server.promo(&cs, "7", json!({"name": "Forever"})).await;
    let response = server.promo_grant(&forever, &[&ada]).await.ok().body;
    let granted = &response["granted"][0];
    assert_eq!(
        *granted,
        assignment(granted, &forever, &ada, &wallet, START, None, None)
    );
    let grant = server
        .get_grant(granted["grant_id"].as_str().unwrap())
        .await;
    assert_eq!(
        (
            &grant["amount"],
            &grant["expires_at"],
            &grant["recurrence"],
            &grant["next_renewal_at"],
            &grant["description"],
            &grant["source"]
        ),
        (
            &json!("7"),
            &Value::Null,
            &Value::Null,
            &Value::Null,
            &json!("Forever"),
            &json!({"type": "promotional_credit", "promotional_credit_id": forever, "assignment_id": granted["id"]})
        )
    );
    server.check_invariants(&wallet).await;
}

#[tokio::test]
async fn rule_21_quantity_renews_each_cycle_from_the_grant_time() {
    let server = Server::start().await;
    let cs = server.credit_system("ai", 0).await;
    let (ada, ada_wallet) = server.member(&cs, "Ada").await;
    let (bob, bob_wallet) = server.member(&cs, "Bob").await;
    let promo = server
        .promo(&cs, "100", json!({"reset_interval": "month"}))
        .await;
    let ada_grant = server.promo_grant(&promo, &[&ada]).await.ok().body["granted"][0]["grant_id"]
        .as_str()
        .unwrap()
        .to_string();
    server.debit(&ada_wallet, "30").await.ok();

    // Bob is granted later: his cycles are anchored at his own grant time.
    server.advance("2025-02-15T12:00:00Z").await;
    let bob_grant = server.promo_grant(&promo, &[&bob]).await.ok().body["granted"][0]["grant_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        server.get_grant(&bob_grant).await["next_renewal_at"],
        "2025-03-15T12:00:00Z"
    );

    server.advance("2025-02-28T10:00:00Z").await;
    let grant = server.get_grant(&ada_grant).await;
    assert_eq!(grant["remaining"], "100", "back to exactly the quantity");
    assert_eq!(
        grant["cycle"],
        json!({"number": 2, "starts_at": "2025-02-28T10:00:00Z", "ends_at": "2025-03-31T10:00:00Z"})
    );
    server.debit(&ada_wallet, "100").await.ok();
    server.advance("2025-04-01T00:00:00Z").await;
    let grant = server.get_grant(&ada_grant).await;
    assert_eq!(grant["remaining"], "100");
    assert_eq!(grant["next_renewal_at"], "2025-04-30T10:00:00Z");
    assert_eq!(
        server.ledger(&ada_wallet).await,
        rows(&[
            ("grant", "100", "100", START),
            ("debit", "-30", "70", START),
            ("expiry", "-70", "0", "2025-02-28T10:00:00Z"),
            ("renewal", "100", "100", "2025-02-28T10:00:00Z"),
            ("debit", "-100", "0", "2025-02-28T10:00:00Z"),
            ("renewal", "100", "100", "2025-03-31T10:00:00Z"),
        ])
    );
    assert_eq!(
        server.ledger(&bob_wallet).await,
        rows(&[
            ("grant", "100", "100", "2025-02-15T12:00:00Z"),
            ("expiry", "-100", "0", "2025-03-15T12:00:00Z"),
            ("renewal", "100", "100", "2025-03-15T12:00:00Z"),
        ])
    );
    server.check_invariants(&ada_wallet).await;
    server.check_invariants(&bob_wallet).await;
}

#[tokio::test]
async fn rule_21_access_period_end_expires_the_grant_and_the_assignment() {
    let server = Server::start().await;
    let cs = server.credit_system("ai", 0).await;
    let (ada, wallet) = server.member(&cs, "Ada").await;
    let promo = server
        .promo(
            &cs,
            "100",
            json!({"access_period": {"duration_value": 1, "duration_unit": "month"}}),
        )
        .await;
    let first = server.promo_grant(&promo, &[&ada]).await.ok().body["granted"][0].clone();
    assert_eq!(first["expires_at"], "2025-02-28T10:00:00Z");
    let grant_id = first["grant_id"].as_str().unwrap().to_string();
    server.debit(&wallet, "40").await.ok();

    // Just before the end: still granted, so a second grant is skipped.
    server.advance("2025-02-28T09:59:59Z").await;
    assert_eq!(
        server.promo_grant(&promo, &[&ada]).await.ok().body["skipped"],
        skipped(&[(&ada, "already_granted")])
    );
    assert_eq!(counts(&server.promo_get(&promo).await), (1, 0));

    // At granted_at + access_period exactly, the grant expires.
    server.advance("2025-02-28T10:00:00Z").await;
    assert_eq!(
        server.ledger(&wallet).await,
        rows(&[
            ("grant", "100", "100", START),
            ("debit", "-40", "60", START),
            ("expiry", "-60", "0", "2025-02-28T10:00:00Z"),
        ])
    );
    let grant = server.get_grant(&grant_id).await;
    assert_eq!(
        (&grant["status"], &grant["remaining"], &grant["ended_at"]),
        (
            &json!("expired"),
            &json!("0"),
            &json!("2025-02-28T10:00:00Z")
        )
    );
    let row = customer_row(plain(&ada, "Ada"), "expired", 0, START, None);
    assert_eq!(
        server.promo_customers(&promo, "").await["data"],
        json!([row])
    );
    assert_eq!(
        server.promo_customers(&promo, "status=expired").await["data"],
        json!([row])
    );
    assert_eq!(
        server.promo_customers(&promo, "status=granted").await["data"],
        json!([])
    );
    assert_eq!(
        server.promo_customers(&promo, "status=revoked").await["data"],
        json!([])
    );
    assert_eq!(counts(&server.promo_get(&promo).await), (0, 0));
    // Nothing left to revoke.
    assert_eq!(
        server.promo_revoke(&promo, &[&ada]).await.ok().body["skipped"],
        skipped(&[(&ada, "not_granted")])
    );

    // Without multiple grants, the customer can be granted again once it ended.
    let again = server.promo_grant(&promo, &[&ada]).await.ok().body;
    let second = &again["granted"][0];
    assert_eq!(
        *second,
        assignment(
            second,
            &promo,
            &ada,
            &wallet,
            "2025-02-28T10:00:00Z",
            Some("2025-03-28T10:00:00Z"),
            None
        )
    );
    assert_ne!(second["id"], first["id"]);
    assert_ne!(second["grant_id"], first["grant_id"]);
    assert_eq!(
        server.promo_customers(&promo, "").await["data"],
        json!([customer_row(
            plain(&ada, "Ada"),
            "granted",
            1,
            "2025-02-28T10:00:00Z",
            None
        )])
    );
    assert_eq!(server.balance(&wallet).await["balance"], "100");
    assert_eq!(counts(&server.promo_get(&promo).await), (1, 0));
    server.check_invariants(&wallet).await;
}

// ---- rule 22: eligibility ------------------------------------------------------------

#[tokio::test]
async fn rule_22_eligibility_needs_a_wallet_in_the_credit_system() {
    let server = Server::start().await;
    let cs = server.credit_system("ai", 0).await;
    let other = server.credit_system("other", 0).await;
    let (eligible, eligible_wallet) = server.member(&cs, "Eligible").await;
    let (elsewhere, elsewhere_wallet) = server.member(&other, "Elsewhere").await;
    let walletless = server.customer("Walletless").await;
    let promo = server.promo(&cs, "10", json!({})).await;

    let response = server
        .promo_grant(
            &promo,
            &[&elsewhere, &eligible, UNKNOWN_CUSTOMER, &walletless],
        )
        .await
        .ok()
        .body;
    assert_eq!(
        response,
        json!({
            "object": "promotional_credit_grant",
            "granted": [assignment(&response["granted"][0], &promo, &eligible, &eligible_wallet, START, None, None)],
            "skipped": skipped(&[
                (&elsewhere, "no_wallet"),
                (UNKNOWN_CUSTOMER, "customer_not_found"),
                (&walletless, "no_wallet"),
            ]),
            "granted_count": 1,
            "skipped_count": 3,
        })
    );
    assert_eq!(server.grants(&elsewhere_wallet).await, Vec::<Value>::new());
    assert_eq!(
        customer_ids(&server.promo_customers(&promo, "").await),
        vec![eligible.clone()]
    );

    // Once the customer opens a wallet in the credit system, they are eligible.
    let new_wallet = server.open_wallet(&walletless, &cs).await;
    let response = server.promo_grant(&promo, &[&walletless]).await.ok().body;
    assert_eq!(
        response["granted"],
        json!([assignment(
            &response["granted"][0],
            &promo,
            &walletless,
            &new_wallet,
            START,
            None,
            None
        )])
    );
    assert_eq!(server.balance(&new_wallet).await["balance"], "10");
}

#[tokio::test]
async fn rule_22_all_customers_grants_every_customer_with_a_wallet() {
    let server = Server::start().await;
    let cs = server.credit_system("ai", 0).await;
    let other = server.credit_system("other", 0).await;
    let (e1, w1) = server.member(&cs, "One").await;
    let walletless = server.customer("Walletless").await;
    let (e2, w2) = server.member(&cs, "Two").await;
    let (elsewhere, elsewhere_wallet) = server.member(&other, "Elsewhere").await;
    let (e3, w3) = server.member(&cs, "Three").await;
    let promo = server.promo(&cs, "10", json!({})).await;

    let response = server.promo_grant_all(&promo).await.ok().body;
    let g = &response["granted"];
    assert_eq!(
        response,
        json!({
            "object": "promotional_credit_grant",
            "granted": [
                assignment(&g[0], &promo, &e1, &w1, START, None, None),
                assignment(&g[1], &promo, &e2, &w2, START, None, None),
                assignment(&g[2], &promo, &e3, &w3, START, None, None),
            ],
            "skipped": [],
            "granted_count": 3,
            "skipped_count": 0,
        }),
        "only customers with a wallet in the credit system are considered"
    );
    for wallet in [&w1, &w2, &w3] {
        assert_eq!(
            server.balance(wallet).await["by_purpose"]["promotional"],
            "10"
        );
    }
    assert_eq!(server.grants(&elsewhere_wallet).await, Vec::<Value>::new());
    assert_eq!(
        server.promo_grant(&promo, &[&elsewhere]).await.ok().body["skipped"],
        skipped(&[(&elsewhere, "no_wallet")])
    );
    let promotion = server.promo_get(&promo).await;
    assert_eq!(
        (promotion["is_applied"].clone(), counts(&promotion)),
        (json!(true), (3, 0))
    );
    assert_eq!(
        customer_ids(&server.promo_customers(&promo, "").await),
        vec![e3.clone(), e2.clone(), e1.clone()]
    );

    // A second call skips everyone as already granted.
    let again = server.promo_grant_all(&promo).await.ok().body;
    assert_eq!(
        again,
        json!({
            "object": "promotional_credit_grant",
            "granted": [],
            "skipped": skipped(&[(&e1, "already_granted"), (&e2, "already_granted"), (&e3, "already_granted")]),
            "granted_count": 0,
            "skipped_count": 3,
        })
    );
    for wallet in [&w1, &w2, &w3] {
        assert_eq!(server.grants(wallet).await.len(), 1);
    }

    // "At that moment": a wallet opened later is picked up by the next call.
    let late_wallet = server.open_wallet(&walletless, &cs).await;
    let response = server.promo_grant_all(&promo).await.ok().body;
    assert_eq!(
        response["granted"],
        json!([assignment(
            &response["granted"][0],
            &promo,
            &walletless,
            &late_wallet,
            START,
            None,
            None
        )])
    );
    assert_eq!(
        (&response["granted_count"], &response["skipped_count"]),
        (&json!(1), &json!(3))
    );

    // Revoke everyone.
    server.advance("2025-02-01T00:00:00Z").await;
    let revoked = server.promo_revoke_all(&promo).await.ok().body;
    let r = &revoked["revoked"];
    let at = Some("2025-02-01T00:00:00Z");
    assert_eq!(
        revoked,
        json!({
            "object": "promotional_credit_revoke",
            "revoked": [
                assignment(&r[0], &promo, &e1, &w1, START, None, at),
                assignment(&r[1], &promo, &walletless, &late_wallet, START, None, at),
                assignment(&r[2], &promo, &e2, &w2, START, None, at),
                assignment(&r[3], &promo, &e3, &w3, START, None, at),
            ],
            "skipped": [],
            "revoked_count": 4,
            "skipped_count": 0,
        })
    );
    assert_eq!(counts(&server.promo_get(&promo).await), (0, 4));
    for wallet in [&w1, &w2, &w3, &late_wallet] {
        assert_eq!(server.balance(wallet).await["balance"], "0");
        assert_eq!(
            server.ledger(wallet).await.last().unwrap(),
            &(
                "void".to_string(),
                "-10".to_string(),
                "0".to_string(),
                "2025-02-01T00:00:00Z".to_string()
            )
        );
    }
    assert_eq!(
        server.promo_revoke_all(&promo).await.ok().body,
        json!({"object": "promotional_credit_revoke", "revoked": [], "skipped": [], "revoked_count": 0, "skipped_count": 0}),
        "nobody left to revoke"
    );
    // Everyone can be granted again.
    let regrant = server.promo_grant_all(&promo).await.ok().body;
    assert_eq!(
        (&regrant["granted_count"], &regrant["skipped_count"]),
        (&json!(4), &json!(0))
    );
    assert_eq!(counts(&server.promo_get(&promo).await), (4, 0));
    for wallet in [&w1, &w2, &w3, &late_wallet] {
        server.check_invariants(wallet).await;
    }
}

#[tokio::test]
async fn rule_22_all_customers_lists_are_cut_to_100_while_counts_stay_whole() {
    let server = Server::start().await;
    let cs = server.credit_system("ai", 0).await;
    let other = server.credit_system("other", 0).await;
    let mut eligible = Vec::new();
    for index in 0..250 {
        let customer = server.customer(&format!("Customer {index:03}")).await;
        server.open_wallet(&customer, &cs).await;
        eligible.push(customer);
        if index % 50 == 0 {
            server.customer("Walletless").await;
            server.member(&other, "Elsewhere").await;
        }
    }
    let promo = server.promo(&cs, "10", json!({})).await;

    let response = server.promo_grant_all(&promo).await.ok().body;
    let granted: Vec<&str> = response["granted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["customer_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        granted,
        eligible[..100]
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        "the first 100 by customer"
    );
    assert_eq!(
        (
            &response["granted_count"],
            &response["skipped"],
            &response["skipped_count"]
        ),
        (&json!(250), &json!([]), &json!(0))
    );
    assert_eq!(counts(&server.promo_get(&promo).await), (250, 0));

    let again = server.promo_grant_all(&promo).await.ok().body;
    let expected: Vec<(&str, &str)> = eligible[..100]
        .iter()
        .map(|c| (c.as_str(), "already_granted"))
        .collect();
    assert_eq!(
        again,
        json!({
            "object": "promotional_credit_grant",
            "granted": [],
            "skipped": skipped(&expected),
            "granted_count": 0,
            "skipped_count": 250,
        })
    );

    // Every customer is listed once, across pages of 100, newest first.
    let mut listed = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = server
            .promo_customers(&promo, &format!("limit=100{cursor}"))
            .await;
        let page_ids = customer_ids(&page);
        cursor = format!("&starting_after={}", page_ids.last().unwrap());
        listed.extend(page_ids);
        if page["has_more"] == false {
            break;
        }
    }
    let mut newest_first = eligible.clone();
    newest_first.reverse();
    assert_eq!(listed, newest_first);

    let revoked = server.promo_revoke_all(&promo).await.ok().body;
    assert_eq!(revoked["revoked"].as_array().unwrap().len(), 100);
    assert_eq!(
        (&revoked["revoked_count"], &revoked["skipped_count"]),
        (&json!(250), &json!(0))
    );
    assert_eq!(counts(&server.promo_get(&promo).await), (0, 250));
}

// ---- rule 23: multiple grants and re-grants --------------------------------------------

#[tokio::test]
async fn rule_23_without_multiple_grants_an_active_customer_is_skipped() {
    let server = Server::start().await;
    let cs = server.credit_system("ai", 0).await;
    let (ada, ada_wallet) = server.member(&cs, "Ada").await;
    let (bob, bob_wallet) = server.member(&cs, "Bob").await;
    let promo = server
        .promo(&cs, "10", json!({"allow_multiple_grants": false}))
        .await;
    server.promo_grant(&promo, &[&ada]).await.ok();
    server.advance("2025-02-01T00:00:00Z").await;
    let response = server
        .promo_grant(&promo, &[&ada, &bob, &bob])
        .await
        .ok()
        .body;
    assert_eq!(
        response,
        json!({
            "object": "promotional_credit_grant",
            "granted": [assignment(&response["granted"][0], &promo, &bob, &bob_wallet, "2025-02-01T00:00:00Z", None, None)],
            "skipped": skipped(&[(&ada, "already_granted"), (&bob, "already_granted")]),
            "granted_count": 1,
            "skipped_count": 2,
        }),
        "a customer named twice in one call is granted once"
    );
    assert_eq!(server.grants(&ada_wallet).await.len(), 1);
    assert_eq!(server.grants(&bob_wallet).await.len(), 1);
    assert_eq!(server.balance(&ada_wallet).await["balance"], "10");
    assert_eq!(
        server.promo_customers(&promo, "").await["data"],
        json!([
            customer_row(
                plain(&bob, "Bob"),
                "granted",
                1,
                "2025-02-01T00:00:00Z",
                None
            ),
            customer_row(plain(&ada, "Ada"), "granted", 1, START, None),
        ])
    );
}

#[tokio::test]
async fn rule_23_with_multiple_grants_assignments_coexist() {
    let server = Server::start().await;
    let cs = server.credit_system("ai", 0).await;
    let (ada, wallet) = server.member(&cs, "Ada").await;
    let promo = server
        .promo(
            &cs,
            "10",
            json!({"allow_multiple_grants": true, "reset_interval": "month"}),
        )
        .await;
    let first = server.promo_grant(&promo, &[&ada]).await.ok().body["granted"][0].clone();
    server.advance("2025-02-10T00:00:00Z").await;
    let second = server.promo_grant(&promo, &[&ada]).await.ok().body;
    assert_eq!(
        second,
        json!({
            "object": "promotional_credit_grant",
            "granted": [assignment(&second["granted"][0], &promo, &ada, &wallet, "2025-02-10T00:00:00Z", None, None)],
            "skipped": [],
            "granted_count": 1,
            "skipped_count": 0,
        })
    );
    let second = second["granted"][0].clone();
    assert_ne!(first["id"], second["id"]);
    let grants = server.grants(&wallet).await;
    assert_eq!(grants.len(), 2);
    for (grant, assignment) in grants.iter().zip([&second, &first]) {
        assert_eq!(grant["id"], assignment["grant_id"]);
        assert_eq!(grant["amount"], "10");
        assert_eq!(grant["purpose"], "promotional");
        assert_eq!(grant["status"], "active");
        assert_eq!(grant["source"]["assignment_id"], assignment["id"]);
    }
    assert_eq!(grants[0]["next_renewal_at"], "2025-03-10T00:00:00Z");
    assert_eq!(grants[1]["next_renewal_at"], "2025-02-28T10:00:00Z");
    assert_eq!(server.balance(&wallet).await["balance"], "20");
    assert_eq!(
        server.promo_customers(&promo, "").await["data"],
        json!([customer_row(
            plain(&ada, "Ada"),
            "granted",
            2,
            "2025-02-10T00:00:00Z",
            None
        )])
    );
    assert_eq!(
        counts(&server.promo_get(&promo).await),
        (1, 0),
        "counts are of customers"
    );

    // Revoking ends both.
    server.advance("2025-02-11T00:00:00Z").await;
    let revoked = server.promo_revoke(&promo, &[&ada]).await.ok().body;
    let at = Some("2025-02-11T00:00:00Z");
    assert_eq!(
        revoked,
        json!({
            "object": "promotional_credit_revoke",
            "revoked": [
                assignment(&first, &promo, &ada, &wallet, START, None, at),
                assignment(&second, &promo, &ada, &wallet, "2025-02-10T00:00:00Z", None, at),
            ],
            "skipped": [],
            "revoked_count": 2,
            "skipped_count": 0,
        })
    );
    assert_eq!(server.balance(&wallet).await["balance"], "0");
    for grant in server.grants(&wallet).await {
        assert_eq!(grant["status"], "voided");
    }
    server.check_invariants(&wallet).await;
}

#[tokio::test]
async fn rule_23_revoked_customer_can_be_granted_again() {
    let server = Server::start().await;
    let cs = server.credit_system("ai", 0).await;
    let (ada, wallet) = server.member(&cs, "Ada").await;
    let promo = server
        .promo(
            &cs,
            "100",
            json!({"access_period": {"duration_value": 1, "duration_unit": "month"}}),
        )
        .await;
    let first = server.promo_grant(&promo, &[&ada]).await.ok().body["granted"][0].clone();
    server.advance("2025-02-10T00:00:00Z").await;
    server.promo_revoke(&promo, &[&ada]).await.ok();
    assert_eq!(
        server.promo_customers(&promo, "status=revoked").await["data"],
        json!([customer_row(
            plain(&ada, "Ada"),
            "revoked",
            0,
            START,
            Some("2025-02-10T00:00:00Z")
        )])
    );
    assert_eq!(counts(&server.promo_get(&promo).await), (0, 1));

    server.advance("2025-02-12T00:00:00Z").await;
    let again = server.promo_grant(&promo, &[&ada]).await.ok().body;
    let second = &again["granted"][0];
    assert_eq!(
        *second,
        assignment(
            second,
            &promo,
            &ada,
            &wallet,
            "2025-02-12T00:00:00Z",
            Some("2025-03-12T00:00:00Z"),
            None
        ),
        "a new assignment with its own access period"
    );
    assert_ne!(second["id"], first["id"]);
    assert_ne!(second["grant_id"], first["grant_id"]);
    assert_eq!(
        server.get_grant(first["grant_id"].as_str().unwrap()).await["status"],
        "voided"
    );
    let grant = server.get_grant(second["grant_id"].as_str().unwrap()).await;
    assert_eq!(
        (&grant["status"], &grant["remaining"], &grant["expires_at"]),
        (
            &json!("active"),
            &json!("100"),
            &json!("2025-03-12T00:00:00Z")
        )
    );
    let granted = server.promo_customers(&promo, "status=granted").await["data"].clone();
    assert_eq!(granted.as_array().unwrap().len(), 1);
    assert_eq!(granted[0]["status"], "granted");
    assert_eq!(granted[0]["active_assignments"], 1);
    assert_eq!(granted[0]["last_granted_at"], "2025-02-12T00:00:00Z");
    assert_eq!(
        server.promo_customers(&promo, "status=revoked").await["data"],
        json!([])
    );
    assert_eq!(counts(&server.promo_get(&promo).await), (1, 0));
    assert_eq!(
        server.ledger(&wallet).await,
        rows(&[
            ("grant", "100", "100", START),
            ("void", "-100", "0", "2025-02-10T00:00:00Z"),
            ("grant", "100", "100", "2025-02-12T00:00:00Z"),
        ])
    );
    server.check_invariants(&wallet).await;
}

// ---- rule 24: revoking ------------------------------------------------------------------

#[tokio::test]
async fn rule_24_revoke_voids_the_grant_and_stops_renewals() {
    let server = Server::start().await;
    let cs = server.credit_system("ai", 0).await;
    let (ada, wallet) = server.member(&cs, "Ada").await;
    let (never, never_wallet) = server.member(&cs, "Never granted").await;
    server
        .grant_ok(&wallet, json!({"amount": "5", "purpose": "paid"}))
        .await;
    let promo = server
        .promo(&cs, "100", json!({"reset_interval": "month"}))
        .await;
    let granted = server.promo_grant(&promo, &[&ada]).await.ok().body["granted"][0].clone();
    let grant_id = granted["grant_id"].as_str().unwrap().to_string();
    server.debit(&wallet, "30").await.ok();

    server.advance("2025-02-10T00:00:00Z").await;
    let at = "2025-02-10T00:00:00Z";
    let response = server
        .promo_revoke(&promo, &[&never, &ada, UNKNOWN_CUSTOMER])
        .await
        .ok()
        .body;
    assert_eq!(
        response,
        json!({
            "object": "promotional_credit_revoke",
            "revoked": [assignment(&granted, &promo, &ada, &wallet, START, None, Some(at))],
            "skipped": skipped(&[(&never, "not_granted"), (UNKNOWN_CUSTOMER, "customer_not_found")]),
            "revoked_count": 1,
            "skipped_count": 2,
        })
    );
    let grant = server.get_grant(&grant_id).await;
    assert_eq!(
        (
            &grant["status"],
            &grant["remaining"],
            &grant["ended_at"],
            &grant["next_renewal_at"]
        ),
        (&json!("voided"), &json!("0"), &json!(at), &Value::Null)
    );
    let expected = rows(&[
        ("grant", "5", "5", START),
        ("grant", "100", "105", START),
        ("debit", "-30", "75", START),
        ("void", "-70", "5", at),
    ]);
    assert_eq!(
        server.ledger(&wallet).await,
        expected,
        "only the promotional balance is taken back"
    );
    let entries = server.entries(&wallet).await;
    assert_eq!(entries[3]["grant_id"], grant_id);

    // No renewal after the next reset, or ever.
    server.advance("2025-05-01T00:00:00Z").await;
    assert_eq!(server.ledger(&wallet).await, expected);
    let balance = server.balance(&wallet).await;
    assert_eq!(balance["balance"], "5");
    assert_eq!(
        balance["by_purpose"],
        json!({"promotional": "0", "bundled": "0", "paid": "5"})
    );
    assert_eq!(server.get_grant(&grant_id).await["status"], "voided");

    // Revoking again: nothing active.
    assert_eq!(
        server.promo_revoke(&promo, &[&ada]).await.ok().body,
        json!({
            "object": "promotional_credit_revoke",
            "revoked": [],
            "skipped": skipped(&[(&ada, "not_granted")]),
            "revoked_count": 0,
            "skipped_count": 1,
        })
    );
    assert_eq!(server.grants(&never_wallet).await, Vec::<Value>::new());
    assert_eq!(
        server.promo_customers(&promo, "").await["data"],
        json!([customer_row(
            plain(&ada, "Ada"),
            "revoked",
            0,
            START,
            Some(at)
        )])
    );
    assert_eq!(counts(&server.promo_get(&promo).await), (0, 1));
    server.check_invariants(&wallet).await;
}

#[tokio::test]
async fn rule_24_revoke_after_an_operator_voided_the_grant() {
    let server = Server::start().await;
    let cs = server.credit_system("ai", 0).await;
    let (ada, wallet) = server.member(&cs, "Ada").await;
    let promo = server.promo(&cs, "10", json!({})).await;
    let granted = server.promo_grant(&promo, &[&ada]).await.ok().body["granted"][0].clone();
    server
        .post(
            &format!("/v1/grants/{}/void", granted["grant_id"].as_str().unwrap()),
            json!({}),
        )
        .await
        .ok();
    let response = server.promo_revoke(&promo, &[&ada]).await.ok().body;
    assert_eq!(
        response["revoked"],
        json!([assignment(
            &granted,
            &promo,
            &ada,
            &wallet,
            START,
            None,
            Some(START)
        )]),
        "the assignment ends all the same"
    );
    assert_eq!(
        server.ledger(&wallet).await,
        rows(&[("grant", "10", "10", START), ("void", "-10", "0", START)]),
        "voided once"
    );
}

#[tokio::test]
async fn rule_24_customers_listing_status_search_and_paging() {
    let server = Server::start().await;
    let cs = server.credit_system("ai", 0).await;
    let people = [
        ("Ada Lovelace", Some("ada@example.com"), Some("EXT-ada")),
        ("Grace Hopper", Some("grace@NAVY.mil"), Some("gh-1")),
        ("Alan Turing", None, None),
        ("Bob", Some("bob@example.com"), Some("ADA-BOB")),
        ("100% Pure_Joy", None, Some("pure")),
    ];
    let mut customers = Vec::new();
    for (name, email, external) in people {
        let id = server.named_customer(name, email, external).await;
        server.open_wallet(&id, &cs).await;
        customers.push(json!({"id": id, "name": name, "email": email, "external_id": external}));
    }
    // Has a wallet, never granted: never listed.
    let (_outsider, _) = server.member(&cs, "Ada Outsider").await;
    let id = |index: usize| customers[index]["id"].as_str().unwrap().to_string();
    let promo = server.promo(&cs, "10", json!({})).await;
    let all: Vec<String> = (0..5).map(id).collect();
    let all_refs: Vec<&str> = all.iter().map(String::as_str).collect();
    server.promo_grant(&promo, &all_refs).await.ok();
    server.advance("2025-02-01T00:00:00Z").await;
    server.promo_revoke(&promo, &[&id(1)]).await.ok();

    let granted = |index: usize| customer_row(customers[index].clone(), "granted", 1, START, None);
    let revoked = customer_row(
        customers[1].clone(),
        "revoked",
        0,
        START,
        Some("2025-02-01T00:00:00Z"),
    );
    assert_eq!(
        server.promo_customers(&promo, "").await,
        json!({
            "object": "list",
            "data": [granted(4), granted(3), granted(2), revoked.clone(), granted(0)],
            "has_more": false,
        }),
        "newest customer first"
    );
    assert_eq!(
        server.promo_customers(&promo, "status=granted").await["data"],
        json!([granted(4), granted(3), granted(2), granted(0)])
    );
    assert_eq!(
        server.promo_customers(&promo, "status=revoked").await["data"],
        json!([revoked])
    );
    assert_eq!(
        server.promo_customers(&promo, "status=expired").await["data"],
        json!([])
    );

    // q searches name, email and external_id, case-insensitive.
    let search = |q: &'static str| {
        let server = &server;
        let promo = promo.clone();
        async move { customer_ids(&server.promo_customers(&promo, &format!("q={q}")).await) }
    };
    assert_eq!(
        search("ada").await,
        vec![id(3), id(0)],
        "name, email, external_id"
    );
    assert_eq!(search("LOVELACE").await, vec![id(0)]);
    assert_eq!(search("navy").await, vec![id(1)]);
    assert_eq!(search("GH-").await, vec![id(1)]);
    assert_eq!(search("example.com").await, vec![id(3), id(0)]);
    assert_eq!(search("%25").await, vec![id(4)], "% is literal");
    assert_eq!(search("_").await, vec![id(4)], "_ is literal");
    assert_eq!(search("nobody").await, Vec::<String>::new());
    assert_eq!(
        customer_ids(&server.promo_customers(&promo, "q=ada&status=granted").await),
        vec![id(3), id(0)]
    );
    assert_eq!(
        customer_ids(
            &server
                .promo_customers(&promo, "q=grace&status=granted")
                .await
        ),
        Vec::<String>::new()
    );

    // Paging.
    let page = server.promo_customers(&promo, "limit=2").await;
    assert_eq!(customer_ids(&page), vec![id(4), id(3)]);
    assert_eq!(page["has_more"], true);
    let page = server
        .promo_customers(&promo, &format!("limit=2&starting_after={}", id(3)))
        .await;
    assert_eq!(customer_ids(&page), vec![id(2), id(1)]);
    assert_eq!(page["has_more"], true);
    let page = server
        .promo_customers(&promo, &format!("limit=2&starting_after={}", id(1)))
        .await;
    assert_eq!(customer_ids(&page), vec![id(0)]);
    assert_eq!(page["has_more"], false);
    let page = server
        .promo_customers(
            &promo,
            &format!("status=granted&limit=1&starting_after={}", id(3)),
        )
        .await;
    assert_eq!(customer_ids(&page), vec![id(2)]);
    assert_eq!(page["has_more"], true);

    for bad in ["status=bogus", "limit=0", "limit=101"] {
        let response = server
            .get(&format!("/v1/promotional_credits/{promo}/customers?{bad}"))
            .await;
        assert_eq!(response.status.as_u16(), 400, "{bad}: {}", response.body);
    }
    assert_error(
        &server
            .get("/v1/promotional_credits/pc_01JZZZZZZZZZZZZZZZZZZZZZZZ/customers")
            .await,
        404,
        "resource_not_found",
        None,
    );
}

// ---- rule 25: per-customer results ---------------------------------------------------------

#[tokio::test]
async fn rule_25_one_skipped_customer_never_fails_the_others() {
    let server = Server::start().await;
    let cs = server.credit_system("ai", 0).await;
    let (a, wa) = server.member(&cs, "A").await;
    let (b, wb) = server.member(&cs, "B").await;
    let (c, wc) = server.member(&cs, "C").await;
    let walletless = server.customer("Walletless").await;
    let promo = server.promo(&cs, "10", json!({})).await;
    server.promo_grant(&promo, &[&b]).await.ok();

    let response = server
        .promo_grant(&promo, &[UNKNOWN_CUSTOMER, &a, &b, &walletless, &c])
        .await
        .ok()
        .body;
    let g = &response["granted"];
    assert_eq!(
        response,
        json!({
            "object": "promotional_credit_grant",
            "granted": [
                assignment(&g[0], &promo, &a, &wa, START, None, None),
                assignment(&g[1], &promo, &c, &wc, START, None, None),
            ],
            "skipped": skipped(&[
                (UNKNOWN_CUSTOMER, "customer_not_found"),
                (&b, "already_granted"),
                (&walletless, "no_wallet"),
            ]),
            "granted_count": 2,
            "skipped_count": 3,
        })
    );
    for wallet in [&wa, &wb, &wc] {
        assert_eq!(server.balance(wallet).await["balance"], "10");
    }

    // Every customer skipped is still a 200 and changes nothing.
    let before = server.promo_get(&promo).await;
    let response = server
        .promo_grant(&promo, &[&walletless, UNKNOWN_CUSTOMER])
        .await
        .ok()
        .body;
    assert_eq!(
        (
            &response["granted"],
            &response["granted_count"],
            &response["skipped_count"]
        ),
        (&json!([]), &json!(0), &json!(2))
    );
    assert_eq!(server.promo_get(&promo).await, before);

    let response = server
        .promo_revoke(&promo, &[&a, &walletless, UNKNOWN_CUSTOMER, &c])
        .await
        .ok()
        .body;
    assert_eq!(
        (&response["revoked_count"], &response["skipped"]),
        (
            &json!(2),
            &skipped(&[
                (&walletless, "not_granted"),
                (UNKNOWN_CUSTOMER, "customer_not_found")
            ])
        )
    );
    assert_eq!(counts(&server.promo_get(&promo).await), (1, 2));

    // A campaign granted to nobody is not applied.
    let untouched = server.promo(&cs, "10", json!({})).await;
    server
        .promo_grant(&untouched, &[&walletless, UNKNOWN_CUSTOMER])
        .await
        .ok();
    assert_eq!(server.promo_get(&untouched).await["is_applied"], false);
    server
        .promo_patch(&untouched, json!({"quantity": "20"}))
        .await
        .ok();
}

#[tokio::test]
async fn rule_25_grant_and_revoke_calls_are_idempotent() {
    let server = Server::start().await;
    let cs = server.credit_system("ai", 0).await;
    let (ada, ada_wallet) = server.member(&cs, "Ada").await;
    let promo = server
        .promo(&cs, "10", json!({"allow_multiple_grants": true}))
        .await;
    let path = format!("/v1/promotional_credits/{promo}/grant");
    let body = json!({ "customer_ids": [ada] });

    let first = server.post_key(&path, body.clone(), "grant-1").await.ok();
    assert!(first.headers.get("idempotent-replayed").is_none());
    let replay = server.post_key(&path, body.clone(), "grant-1").await.ok();
    assert_eq!(replay.body, first.body);
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    assert_eq!(server.grants(&ada_wallet).await.len(), 1, "granted once");
    assert_error(
        &server
            .post_key(&path, json!({"customer_ids": [ada, ada]}), "grant-1")
            .await,
        409,
        "idempotency_key_reused",
        None,
    );

    // All customers.
    let (bob, bob_wallet) = server.member(&cs, "Bob").await;
    let all = json!({"all_customers": true});
    let first_all = server.post_key(&path, all.clone(), "grant-all").await.ok();
    assert_eq!(first_all.body["granted_count"], 2);
    assert!(first_all.headers.get("idempotent-replayed").is_none());
    let (_cyd, cyd_wallet) = server.member(&cs, "Cyd").await;
    let replay = server.post_key(&path, all.clone(), "grant-all").await.ok();
    assert_eq!(
        replay.body, first_all.body,
        "the first response, not a new run"
    );
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    assert_eq!(server.grants(&ada_wallet).await.len(), 2);
    assert_eq!(server.grants(&bob_wallet).await.len(), 1);
    assert_eq!(server.grants(&cyd_wallet).await.len(), 0, "nothing changed");
    assert_error(
        &server.post_key(&path, body.clone(), "grant-all").await,
        409,
        "idempotency_key_reused",
        None,
    );
    // A new key is a new call.
    let fresh = server
        .post_key(&path, all.clone(), "grant-all-2")
        .await
        .ok();
    assert_eq!(fresh.body["granted_count"], 3);

    // Revokes.
    let revoke_path = format!("/v1/promotional_credits/{promo}/revoke");
    let revoke = json!({ "customer_ids": [bob] });
    let first = server
        .post_key(&revoke_path, revoke.clone(), "revoke-1")
        .await
        .ok();
    assert_eq!(first.body["revoked_count"], 2);
    let replay = server
        .post_key(&revoke_path, revoke.clone(), "revoke-1")
        .await
        .ok();
    assert_eq!(replay.body, first.body);
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    let first = server
        .post_key(&revoke_path, all.clone(), "revoke-all")
        .await
        .ok();
    assert_eq!(
        first.body["revoked_count"], 4,
        "assignments: Ada's last two and Cyd's one"
    );
    server.member(&cs, "Dee").await;
    let replay = server
        .post_key(&revoke_path, all.clone(), "revoke-all")
        .await
        .ok();
    assert_eq!(replay.body, first.body);
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    assert_eq!(counts(&server.promo_get(&promo).await), (0, 3));
    // The grant key and the revoke key live apart: the same key on another path.
    assert_error(
        &server
            .post_key(&revoke_path, all.clone(), "grant-all")
            .await,
        409,
        "idempotency_key_reused",
        None,
    );
}

#[tokio::test]
async fn rule_25_grant_and_revoke_requests_are_validated() {
    let server = Server::start().await;
    let cs = server.credit_system("ai", 0).await;
    let (ada, wallet) = server.member(&cs, "Ada").await;
    let promo = server.promo(&cs, "10", json!({})).await;
    let too_many: Vec<String> = (0..1001).map(unknown_customer).collect();
    let cases = [
        (
            json!({"customer_ids": [ada], "all_customers": true}),
            "customer_ids",
        ),
        (json!({}), "customer_ids"),
        (json!({"all_customers": false}), "customer_ids"),
        (json!({"customer_ids": []}), "customer_ids"),
        (json!({ "customer_ids": too_many }), "customer_ids"),
        (
            json!({"customer_ids": [ada, "not-an-id"]}),
            "customer_ids[1]",
        ),
        (json!({"customer_ids": [wallet]}), "customer_ids[0]"),
    ];
    let before = server.snapshot(&wallet).await;
    let promo_before = server.promo_get(&promo).await;
    for action in ["grant", "revoke"] {
        let path = format!("/v1/promotional_credits/{promo}/{action}");
        for (body, param) in &cases {
            let response = server.post(&path, body.clone()).await;
            assert_error(&response, 400, "parameter_invalid", Some(param));
        }
        let response = server
            .post(&path, json!({"customer_ids": [ada], "extra": 1}))
            .await;
        assert_eq!(response.status.as_u16(), 400, "{}", response.body);
    }
    assert_eq!(server.snapshot(&wallet).await, before);
    assert_eq!(server.promo_get(&promo).await, promo_before);

    // Exactly 1000 is allowed.
    let thousand: Vec<String> = (0..999)
        .map(unknown_customer)
        .chain([ada.clone()])
        .collect();
    let response = server
        .post(
            &format!("/v1/promotional_credits/{promo}/grant"),
            json!({ "customer_ids": thousand }),
        )
        .await
        .ok()
        .body;
    assert_eq!(
        (&response["granted_count"], &response["skipped_count"]),
        (&json!(1), &json!(999))
    );
    assert_eq!(response["skipped"][998]["reason"], "customer_not_found");
    assert_eq!(response["granted"][0]["customer_id"], ada);

    for action in ["grant", "revoke"] {
        assert_error(
            &server
                .post(
                    &format!("/v1/promotional_credits/pc_01JZZZZZZZZZZZZZZZZZZZZZZZ/{action}"),
                    json!({"customer_ids": [ada]}),
                )
                .await,
            404,
            "resource_not_found",
            None,
        );
        assert_error(
            &server
                .post(
                    &format!("/v1/promotional_credits/pc_01JZZZZZZZZZZZZZZZZZZZZZZZ/{action}"),
                    json!({"all_customers": true}),
                )
                .await,
            404,
            "resource_not_found",
            None,
        );
    }
}

// ---- rule 26: the lock -----------------------------------------------------------------------

#[tokio::test]
async fn rule_26_locked_fields_are_refused_one_by_one_once_applied() {
    let server = Server::start().await;
    let cs = server.credit_system("ai", 0).await;
    let other = server.credit_system("other", 0).await;
    let (ada, wallet) = server.member(&cs, "Ada").await;
    let (bob, _) = server.member(&cs, "Bob").await;
    let promo = server
        .promo(
            &cs,
            "100",
            json!({
                "description": "first",
                "reset_interval": "month",
                "access_period": {"duration_value": 3, "duration_unit": "month"},
            }),
        )
        .await;
    let unapplied = server.promo_get(&promo).await;
    assert_eq!(unapplied["is_applied"], false);
    let granted = server.promo_grant(&promo, &[&ada]).await.ok().body["granted"][0].clone();
    let grant_before = server
        .get_grant(granted["grant_id"].as_str().unwrap())
        .await;
    let applied = server.promo_get(&promo).await;
    assert_eq!(applied["is_applied"], true);

    let changes = [
        ("credit_system_id", json!(other)),
        ("quantity", json!("200")),
        ("quantity", json!("1")),
        ("reset_interval", json!("never")),
        ("reset_interval", json!("week")),
        ("access_period", Value::Null),
        (
            "access_period",
            json!({"duration_value": 2, "duration_unit": "month"}),
        ),
        (
            "access_period",
            json!({"duration_value": 3, "duration_unit": "week"}),
        ),
        ("allow_multiple_grants", json!(true)),
        ("starts_at", json!("2025-03-01T00:00:00Z")),
    ];
    for (field, value) in &changes {
        let response = server.promo_patch(&promo, json!({ *field: value })).await;
        assert_error(&response, 409, "promotion_locked", Some(field));
        assert_eq!(server.promo_get(&promo).await, applied, "{field} unchanged");
        // Together with a safe field, the whole edit is refused.
        let response = server
            .promo_patch(&promo, json!({"name": "Renamed", *field: value}))
            .await;
        assert_error(&response, 409, "promotion_locked", Some(field));
        assert_eq!(server.promo_get(&promo).await, applied, "nothing changes");
    }
    assert_eq!(
        server
            .get_grant(granted["grant_id"].as_str().unwrap())
            .await,
        grant_before
    );

    // Sending the current values is not a change.
    let same = server
        .promo_patch(
            &promo,
            json!({
                "credit_system_id": cs,
                "quantity": "100",
                "reset_interval": "month",
                "access_period": {"duration_value": 3, "duration_unit": "month"},
                "allow_multiple_grants": false,
                "starts_at": null,
            }),
        )
        .await
        .ok();
    assert_eq!(same.body, applied);

    // Name, description and ends_at stay editable.
    let edited = server
        .promo_patch(
            &promo,
            json!({"name": "Renamed", "description": "second", "ends_at": "2025-03-01T00:00:00Z"}),
        )
        .await
        .ok()
        .body;
    let mut expected = applied.clone();
    expected["name"] = json!("Renamed");
    expected["description"] = json!("second");
    expected["ends_at"] = json!("2025-03-01T00:00:00Z");
    assert_eq!(edited, expected);
    assert_eq!(server.promo_get(&promo).await, expected);
    let edited = server
        .promo_patch(&promo, json!({"description": null, "ends_at": null}))
        .await
        .ok()
        .body;
    expected["description"] = Value::Null;
    expected["ends_at"] = Value::Null;
    assert_eq!(edited, expected);

    // Ending the campaign early stops granting; what customers hold stays.
    server.advance("2025-02-01T00:00:00Z").await;
    let ended = server
        .promo_patch(&promo, json!({"ends_at": "2025-02-01T00:00:00Z"}))
        .await
        .ok()
        .body;
    assert_eq!(ended["status"], "ended");
    assert_error(
        &server.promo_grant(&promo, &[&bob]).await,
        409,
        "promotion_not_active",
        None,
    );
    let grant_now = server
        .get_grant(granted["grant_id"].as_str().unwrap())
        .await;
    assert_eq!(grant_now, grant_before);
    // Extending it again reopens granting.
    let reopened = server
        .promo_patch(&promo, json!({"ends_at": "2025-06-01T00:00:00Z"}))
        .await
        .ok()
        .body;
    assert_eq!(reopened["status"], "active");
    server.promo_grant(&promo, &[&bob]).await.ok();

    // Still locked after everyone is revoked; an applied campaign cannot be deleted.
    server.promo_revoke_all(&promo).await.ok();
    let after = server.promo_get(&promo).await;
    assert_eq!(
        (after["is_applied"].clone(), counts(&after)),
        (json!(true), (0, 2))
    );
    assert_error(
        &server.promo_patch(&promo, json!({"quantity": "5"})).await,
        409,
        "promotion_locked",
        Some("quantity"),
    );
    let response = server
        .delete(&format!("/v1/promotional_credits/{promo}"))
        .await;
    assert_error(&response, 409, "promotion_locked", None);
    assert_eq!(server.promo_get(&promo).await, after);
    server.check_invariants(&wallet).await;
}

#[tokio::test]
async fn rule_26_unapplied_campaign_edits_freely_and_deletes() {
    let server = Server::start().await;
    let cs = server.credit_system("ai", 0).await;
    let cents = server.credit_system("cents", 2).await;
    let promo = server.promo(&cs, "100", json!({})).await;
    let edited = server
        .promo_patch(
            &promo,
            json!({
                "name": "Edited",
                "description": "all fields",
                "credit_system_id": cents,
                "quantity": "7.25",
                "reset_interval": "week",
                "access_period": {"duration_value": 10, "duration_unit": "day"},
                "allow_multiple_grants": true,
                "starts_at": "2025-02-01T00:00:00Z",
                "ends_at": "2025-03-01T00:00:00Z",
            }),
        )
        .await
        .ok()
        .body;
    let mut expected = json!({
        "id": promo,
        "object": "promotional_credit",
        "name": "Edited",
        "description": "all fields",
        "credit_system_id": cents,
        "starts_at": "2025-02-01T00:00:00Z",
        "ends_at": "2025-03-01T00:00:00Z",
        "quantity": "7.25",
        "reset_interval": "week",
        "access_period": {"duration_value": 10, "duration_unit": "day"},
        "allow_multiple_grants": true,
        "status": "scheduled",
        "is_applied": false,
        "granted_count": 0,
        "revoked_count": 0,
        "created_at": START,
    });
    assert_eq!(edited, expected);
    assert_eq!(server.promo_get(&promo).await, expected);

    let edited = server
        .promo_patch(
            &promo,
            json!({
                "description": null,
                "access_period": null,
                "starts_at": null,
                "ends_at": null,
                "reset_interval": "never",
                "allow_multiple_grants": false,
            }),
        )
        .await
        .ok()
        .body;
    expected["description"] = Value::Null;
    expected["access_period"] = Value::Null;
    expected["starts_at"] = Value::Null;
    expected["ends_at"] = Value::Null;
    expected["reset_interval"] = json!("never");
    expected["allow_multiple_grants"] = json!(false);
    expected["status"] = json!("active");
    assert_eq!(edited, expected);
    assert_eq!(
        server.promo_patch(&promo, json!({})).await.ok().body,
        expected,
        "an empty edit changes nothing"
    );

    // Moving to a credit system of another scale keeps the quantity's value.
    let moved = server
        .promo_patch(&promo, json!({"credit_system_id": cs}))
        .await;
    assert_error(&moved, 400, "parameter_invalid", Some("quantity"));
    assert_eq!(
        server.promo_get(&promo).await,
        expected,
        "7.25 does not fit scale 0"
    );
    let moved = server
        .promo_patch(&promo, json!({"credit_system_id": cs, "quantity": "7"}))
        .await
        .ok()
        .body;
    assert_eq!(
        (&moved["credit_system_id"], &moved["quantity"]),
        (&json!(cs), &json!("7"))
    );
    let moved = server
        .promo_patch(&promo, json!({"credit_system_id": cents}))
        .await
        .ok()
        .body;
    assert_eq!(
        (&moved["credit_system_id"], &moved["quantity"]),
        (&json!(cents), &json!("7")),
        "7 stays 7 at scale 2"
    );

    // Delete, then 404 everywhere.
    let keep = server.promo(&cs, "1", json!({})).await;
    let deleted = server
        .delete(&format!("/v1/promotional_credits/{promo}"))
        .await
        .ok()
        .body;
    assert_eq!(
        deleted,
        json!({"id": promo, "object": "promotional_credit", "deleted": true})
    );
    let (ada, _) = server.member(&cents, "Ada").await;
    for response in [
        server
            .get(&format!("/v1/promotional_credits/{promo}"))
            .await,
        server.promo_patch(&promo, json!({"name": "x"})).await,
        server
            .delete(&format!("/v1/promotional_credits/{promo}"))
            .await,
        server.promo_grant(&promo, &[&ada]).await,
        server.promo_grant_all(&promo).await,
        server.promo_revoke(&promo, &[&ada]).await,
        server
            .get(&format!("/v1/promotional_credits/{promo}/customers"))
            .await,
    ] {
        assert_error(&response, 404, "resource_not_found", None);
    }
    assert_eq!(
        ids(&server.get("/v1/promotional_credits").await.ok().body),
        vec![keep]
    );
}

#[tokio::test]
async fn rule_25_concurrent_all_customers_grants_with_one_key_run_once() {
    let server = Server::start().await;
    let cs = server.credit_system("ai", 0).await;
    let mut wallets = Vec::new();
    for index in 0..40 {
        wallets.push(server.member(&cs, &format!("Customer {index}")).await.1);
    }
    let promo = server
        .promo(&cs, "10", json!({"allow_multiple_grants": true}))
        .await;
    let path = format!("/v1/promotional_credits/{promo}/grant");
    let all = json!({"all_customers": true});
    let (first, second) = tokio::join!(
        server.post_key(&path, all.clone(), "same-key"),
        server.post_key(&path, all.clone(), "same-key"),
    );
    // The repeat waits for the first call and replays its response.
    for response in [&first, &second] {
        assert_eq!(response.status.as_u16(), 200, "{}", response.body);
    }
    assert_eq!(first.body, second.body, "the same response");
    let replayed = [&first, &second]
        .iter()
        .filter(|r| r.headers.get("idempotent-replayed").is_some())
        .count();
    assert_eq!(replayed, 1);
    for wallet in &wallets {
        assert_eq!(
            server.grants(wallet).await.len(),
            1,
            "granted once under one idempotency key"
        );
    }
    assert_eq!(counts(&server.promo_get(&promo).await), (40, 0));
}

#[tokio::test]
async fn rule_22_a_stalled_call_to_all_customers_is_taken_over_and_changes_nothing_after() {
    use credstack::engine::{BulkClaim, BulkClaimRequest, Outcome, Request, RunStep};
    use credstack::error::Error;
    use credstack::ids::{Kind, parse};
    let server = Server::start().await;
    let ledger = server.ledger.clone().unwrap();
    let cs = server.credit_system("ai", 0).await;
    let mut members = Vec::new();
    for index in 0..3 {
        members.push(server.member(&cs, &format!("Customer {index}")).await);
    }
    let promo = server
        .promo(&cs, "10", json!({"allow_multiple_grants": true}))
        .await;
    let promotion_id = parse(Kind::PromotionalCredit, &promo).unwrap();
    let path = format!("/v1/promotional_credits/{promo}/grant");
    let now = chrono::Utc::now();
    // A claim made at `now + at` holding the campaign until `now + until`.
    let claim = |at: i64, until: i64| {
        Request::ClaimBulkRun(BulkClaimRequest {
            promotion_id,
            run_id: 1,
            action: "grant".into(),
            idempotency: None,
            wall_now: now + chrono::Duration::seconds(at),
            lease_until: now + chrono::Duration::seconds(until),
            total: None,
        })
    };

    // A call holding a live lease: another call is refused, and changes nothing.
    let started = ledger.execute(claim(0, 60)).await.unwrap();
    assert!(matches!(
        started,
        Outcome::BulkClaim(BulkClaim::Started { cursor: None, .. })
    ));
    let refused = server.post(&path, json!({"all_customers": true})).await;
    assert_error(&refused, 409, "bulk_run_in_progress", None);

    // Its lease passes (its process died, say; here it is claimed again from
    // the future, leaving a lease already over): a new call takes over and
    // grants everyone once.
    let again = ledger.execute(claim(120, -1)).await.unwrap();
    assert!(matches!(
        again,
        Outcome::BulkClaim(BulkClaim::Started { .. })
    ));
    let done = server
        .post(&path, json!({"all_customers": true}))
        .await
        .ok();
    assert_eq!(done.body["granted_count"], 3);

    // The stalled call wakes up: its next chunk is refused before it grants
    // anybody.
    let customer = parse(Kind::Customer, &members[0].0).unwrap();
    let chunk = Request::GrantPromotion {
        id: promotion_id,
        customer_ids: vec![customer],
        run: Some(RunStep {
            run_id: 1,
            cursor: customer,
            lease_until: chrono::Utc::now() + chrono::Duration::seconds(10),
        }),
    };
    match ledger.execute(chunk).await {
        Err(Error::Conflict { code, .. }) => assert_eq!(code, "bulk_run_taken_over"),
        other => panic!("a stalled chunk ran: {other:?}"),
    }
    for (_, wallet) in &members {
        assert_eq!(server.grants(wallet).await.len(), 1, "granted once");
    }
}

#[tokio::test]
async fn rule_25_a_keyed_call_to_all_customers_replays_once_finished_and_resumes_after_a_takeover()
{
    use credstack::engine::{
        BulkClaim, BulkClaimRequest, Idempotency, Outcome, Reply, Request, RunStep,
    };
    use credstack::ids::{Kind, parse};
    use credstack::ledger::{BulkAction, BulkCall};
    let server = Server::start().await;
    let ledger = server.ledger.clone().unwrap();
    let cs = server.credit_system("ai", 0).await;
    let mut members = Vec::new();
    for index in 0..4 {
        members.push(server.member(&cs, &format!("Customer {index}")).await);
    }
    let promo = server
        .promo(&cs, "10", json!({"allow_multiple_grants": true}))
        .await;
    let promotion_id = parse(Kind::PromotionalCredit, &promo).unwrap();
    let customers: Vec<u128> = members
        .iter()
        .map(|(c, _)| parse(Kind::Customer, c).unwrap())
        .collect();
    let first_customer = *customers.iter().min().unwrap();
    let key = |name: &str| Idempotency::new(name.to_string(), &[b"grant everyone"]);
    let render = |_: &credstack::ledger::BulkOutcome| json!({"done": true});

    // K1 claims the campaign, grants its first chunk (one customer), then
    // fails and lets the campaign go.
    let now = chrono::Utc::now();
    let claim = BulkClaimRequest {
        promotion_id,
        run_id: 7,
        action: "grant".into(),
        idempotency: Some(key("k1")),
        wall_now: now,
        lease_until: now + chrono::Duration::seconds(60),
        total: None,
    };
    let started = ledger.execute(Request::ClaimBulkRun(claim)).await.unwrap();
    assert!(matches!(
        started,
        Outcome::BulkClaim(BulkClaim::Started { .. })
    ));
    let chunk = Request::GrantPromotion {
        id: promotion_id,
        customer_ids: vec![first_customer],
        run: Some(RunStep {
            run_id: 7,
            cursor: first_customer,
            lease_until: now + chrono::Duration::seconds(60),
        }),
    };
    ledger.execute(chunk).await.unwrap();
    ledger
        .execute(Request::ReleaseBulkRun {
            promotion_id,
            run_id: 7,
        })
        .await
        .unwrap();

    // Another call takes the campaign over and grants everyone.
    let other = ledger
        .to_all(
            BulkCall::new(BulkAction::Grant, promotion_id, None),
            &|_| {},
            &render,
        )
        .await;
    assert!(matches!(other, Reply::Fresh(Ok(_))), "{other:?}");

    // K1's retry resumes after its first chunk: the first customer is not
    // granted a third time, the others once more.
    let retried = ledger
        .to_all(
            BulkCall::new(BulkAction::Grant, promotion_id, Some(key("k1"))),
            &|_| {},
            &render,
        )
        .await;
    assert!(matches!(retried, Reply::Fresh(Ok(_))), "{retried:?}");
    for (customer, wallet) in &members {
        assert_eq!(server.grants(wallet).await.len(), 2, "{customer}");
    }

    // Finished, K1 replays, also when its claim reaches the writer after
    // the finish (a repeat racing the end of the call).
    let now = chrono::Utc::now();
    let late = BulkClaimRequest {
        promotion_id,
        run_id: 8,
        action: "grant".into(),
        idempotency: Some(key("k1")),
        wall_now: now,
        lease_until: now + chrono::Duration::seconds(60),
        total: None,
    };
    let replayed = ledger.execute(Request::ClaimBulkRun(late)).await.unwrap();
    assert!(matches!(
        replayed,
        Outcome::BulkClaim(BulkClaim::Replayed(_))
    ));
    let again = ledger
        .to_all(
            BulkCall::new(BulkAction::Grant, promotion_id, Some(key("k1"))),
            &|_| {},
            &render,
        )
        .await;
    assert!(matches!(again, Reply::Replayed(_)), "{again:?}");
    for (_, wallet) in &members {
        assert_eq!(server.grants(wallet).await.len(), 2);
    }
}
