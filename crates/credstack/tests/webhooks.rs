//! Webhooks (issue 8) from a real `credstack serve` to a real HTTP receiver
//! in this test: every event of the outbox delivered, signed, in order per
//! wallet; a failing receiver retried until it recovers; a delivery given
//! up after its window and sent again by hand; a server killed while a
//! delivery is in flight delivers it after its restart.

mod common;

use common::process::{LogOnFailure, Process, free_port};
use common::receiver::{Received, Receiver};
use common::{START, Server, eventually, metric_sample};
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};
use std::sync::atomic::Ordering;
use std::time::Duration;

const KEY: &str = "csk_webhooks_admin_key";

/// Checks the signature header independently: HMAC-SHA256 under the
/// secret of `<t>.<body>`.
fn assert_signed(received: &Received, secret: &str) {
    let (t, v1) = received.signature.split_once(',').expect("t=…,v1=…");
    let t = t.strip_prefix("t=").expect("t=");
    let v1 = v1.strip_prefix("v1=").expect("v1=");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{}", received.raw).as_bytes());
    assert_eq!(hex::encode(mac.finalize().into_bytes()), v1, "signature");
    let age = chrono::Utc::now().timestamp() - t.parse::<i64>().unwrap();
    assert!((0..120).contains(&age), "timestamp {t} is the sending time");
}

/// A `serve` process on its own store, with these extra flags.
struct Node {
    store: Vec<String>,
    log: std::path::PathBuf,
    _db: Option<common::pg::TestDb>,
    _dir: tempfile::TempDir,
    _log: LogOnFailure,
}

impl Node {
    /// `None` (a skip) on PostgreSQL runs without a database outside CI.
    fn new() -> Option<Node> {
        let dir = tempfile::tempdir().unwrap();
        let db = if common::ON_POSTGRES {
            Some(common::pg::TestDb::create()?)
        } else {
            None
        };
        let store = match &db {
            Some(db) => vec!["--database-url".into(), db.url()],
            None => vec![
                "--data".into(),
                dir.path().join("data").to_str().unwrap().into(),
            ],
        };
        let log = dir.path().join("serve.log");
        Some(Node {
            store,
            _log: LogOnFailure(log.clone()),
            log,
            _db: db,
            _dir: dir,
        })
    }

    async fn serve(&self, port: u16, extra: &[&str]) -> Process {
        let mut args: Vec<&str> = self.store.iter().map(String::as_str).collect();
        args.extend(extra);
        Process::spawn_on(port, &args, KEY, &self.log).await
    }
}

async fn metrics(client: &Server) -> String {
    let body = client.get("/v1/metrics").await.ok().body;
    body.as_str().expect("metrics are text").to_string()
}

/// Creates an endpoint for every event type; returns its id and secret.
async fn endpoint(client: &Server, url: &str) -> (String, String) {
    let created = client
        .post(
            "/v1/webhook_endpoints",
            json!({"url": url, "event_types": ["*"], "description": "test receiver"}),
        )
        .await
        .ok();
    let secret = created.str("secret");
    assert!(secret.starts_with("whsec_"), "{}", created.body);
    // Shown once: never again.
    let read = client
        .get(&format!("/v1/webhook_endpoints/{}", created.id()))
        .await
        .ok();
    assert!(read.body.get("secret").is_none(), "{}", read.body);
    (created.id(), secret)
}

/// Every event of the wallet, oldest first, as the API shows them.
async fn events_of(client: &Server, wallet: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut path = format!("/v1/events?wallet_id={wallet}&limit=100");
        if let Some(id) = &after {
            path.push_str(&format!("&starting_after={id}"));
        }
        let page = client.get(&path).await.ok().body;
        let data = page["data"].as_array().unwrap().clone();
        after = data.last().map(|e| e["id"].as_str().unwrap().to_string());
        all.extend(data);
        if page["has_more"] != true {
            break;
        }
    }
    all.reverse();
    all
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_is_delivered_signed_once_and_in_order_per_wallet() {
    let Some(node) = Node::new() else { return };
    let receiver = Receiver::start().await;
    let server = node
        .serve(
            free_port(),
            &[
                "--clock",
                "simulated",
                "--start",
                START,
                "--webhook-retry-base-ms",
                "50",
            ],
        )
        .await;
    let client = Server::remote(&server.base, KEY);
    let (_, secret) = endpoint(&client, &receiver.url).await;
    let system = client.credit_system("tokens", 0).await;
    let customer = client.customer("Acme").await;
    let wallet = client
        .post(
            "/v1/wallets",
            json!({"customer_id": customer, "credit_system_id": system, "low_balance_threshold": "30"}),
        )
        .await
        .ok();
    assert_eq!(wallet.str("low_balance_threshold"), "30");
    let wallet = wallet.id();
    // A second wallet's events interleave with the first's.
    let other = client.wallet_in(&system).await;
    client
        .grant_ok(&other, json!({"amount": "5", "purpose": "paid"}))
        .await;

    // grant.created ×2; the balance is 110.
    let paid = client
        .grant_ok(
            &wallet,
            json!({"amount": "100", "purpose": "paid", "expires_at": "2025-02-02T10:00:00Z"}),
        )
        .await;
    client
        .grant_ok(
            &wallet,
            json!({"amount": "10", "purpose": "bundled",
                   "recurrence": {"interval": "month", "interval_count": 1}}),
        )
        .await;
    // 110 → 25: below 30 (wallet.low_balance); 25 → 0 (wallet.depleted).
    client.debit(&wallet, "85").await.ok();
    client.debit(&wallet, "25").await.ok();
    client.debit(&other, "5").await.ok();
    // A hold that expires (hold.expired), on a grant then voided
    // (grant.voided), which takes the balance from 50 back to 0
    // (wallet.low_balance and wallet.depleted again).
    let topup = client
        .grant_ok(&wallet, json!({"amount": "50", "purpose": "paid"}))
        .await;
    client
        .hold(&wallet, json!({"amount": "20", "expires_in_seconds": 60}))
        .await
        .ok();
    client.advance("2025-01-31T10:05:00Z").await;
    client
        .post(&format!("/v1/grants/{topup}/void"), json!({}))
        .await
        .ok();
    // The paid grant expires (grant.expired); the bundled one renews
    // (grant.renewed) on the last day of February.
    client.advance("2025-03-01T00:00:00Z").await;
    // A campaign's grant and revoke.
    let promo = client
        .post(
            "/v1/promotional_credits",
            json!({"name": "Launch", "credit_system_id": system, "quantity": "7"}),
        )
        .await
        .ok()
        .id();
    client
        .post(
            &format!("/v1/promotional_credits/{promo}/grant"),
            json!({"customer_ids": [customer]}),
        )
        .await
        .ok();
    client
        .post(
            &format!("/v1/promotional_credits/{promo}/revoke"),
            json!({"customer_ids": [customer]}),
        )
        .await
        .ok();

    let events = events_of(&client, &wallet).await;
    assert_eq!(
        types(&events),
        vec![
            "grant.created",
            "grant.created",
            "wallet.low_balance",
            "wallet.depleted",
            "grant.created",
            "hold.expired",
            "grant.voided",
            "wallet.low_balance",
            "wallet.depleted",
            "grant.expired",
            "grant.renewed",
            "grant.created",
            "promotional_credit.granted",
            "grant.voided",
            "promotional_credit.revoked",
        ]
    );
    let sequences: Vec<u64> = events
        .iter()
        .map(|e| e["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(
        sequences,
        (1..=15).collect::<Vec<u64>>(),
        "gapless per wallet"
    );
    assert_eq!(events[0]["data"]["grant_id"], paid);
    assert_eq!(events[0]["data"]["amount"], "100");
    assert_eq!(events[0]["data"]["customer_id"], customer);
    assert_eq!(
        events[2]["data"],
        json!({"balance": "25", "low_balance_threshold": "30",
               "customer_id": customer, "credit_system_id": system})
    );
    assert_eq!(events[2]["created_at"], START);
    assert_eq!(
        events[5]["created_at"], "2025-01-31T10:01:00Z",
        "dated when it expired"
    );
    assert_eq!(events[6]["data"]["forfeited"], "50");
    // Voiding the top-up took the balance from 50 to 0: below the
    // threshold again, and empty again.
    assert_eq!(events[7]["data"]["balance"], "0");
    assert_eq!(events[10]["data"]["cycle"], 2);
    let other_events = events_of(&client, &other).await;
    assert_eq!(
        types(&other_events),
        vec!["grant.created", "wallet.depleted"]
    );

    let all = events.len() + other_events.len();
    eventually("every event delivered", || async {
        receiver.delivered().len() >= all
    })
    .await;
    // Nothing more comes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let received = receiver.received();
    assert_eq!(received.len(), all, "each event delivered once");
    for request in &received {
        assert_signed(request, &secret);
        let id = request.body["id"].as_str().unwrap();
        let stored = client.get(&format!("/v1/events/{id}")).await.ok().body;
        assert_eq!(
            request.body, stored,
            "the body is the event as the API shows it"
        );
    }
    // In order per wallet.
    let arrived: Vec<Value> = received
        .iter()
        .filter(|r| r.body["wallet_id"] == wallet.as_str())
        .map(|r| r.body.clone())
        .collect();
    assert_eq!(arrived, events);

    let text = metrics(&client).await;
    assert_eq!(
        metric_sample(
            &text,
            "credstack_webhook_attempts_total{outcome=\"succeeded\"}"
        ),
        all as f64
    );
    assert_eq!(
        metric_sample(&text, "credstack_webhook_delivery_lag_seconds_count"),
        all as f64,
        "each successful delivery's lag observed"
    );
    eventually("the outbox drained", || async {
        let text = metrics(&client).await;
        metric_sample(&text, "credstack_outbox_pending_events") == 0.0
            && metric_sample(&text, "credstack_webhook_pending_deliveries") == 0.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_is_retried_in_order_until_it_recovers() {
    let Some(node) = Node::new() else { return };
    let receiver = Receiver::start().await;
    receiver.state.fail.store(3, Ordering::SeqCst);
    let server = node
        .serve(free_port(), &["--webhook-retry-base-ms", "100"])
        .await;
    let client = Server::remote(&server.base, KEY);
    let (endpoint_id, secret) = endpoint(&client, &receiver.url).await;
    let wallet = client.wallet(0).await;
    for amount in ["1", "2", "3"] {
        client
            .grant_ok(&wallet, json!({"amount": amount, "purpose": "paid"}))
            .await;
    }
    eventually("three events delivered", || async {
        receiver.delivered().len() == 3
    })
    .await;
    let received = receiver.received();
    // The first event failed three times before anything else was sent.
    let statuses: Vec<(u64, u16)> = received
        .iter()
        .map(|r| (r.body["sequence"].as_u64().unwrap(), r.status))
        .collect();
    assert_eq!(
        statuses,
        vec![(1, 500), (1, 500), (1, 500), (1, 200), (2, 200), (3, 200)]
    );
    received.iter().for_each(|r| assert_signed(r, &secret));

    // The delivery log.
    let log = client
        .get(&format!("/v1/webhook_endpoints/{endpoint_id}/deliveries"))
        .await
        .ok()
        .body;
    let deliveries = log["data"].as_array().unwrap();
    assert_eq!(deliveries.len(), 3);
    let first = deliveries.last().unwrap();
    assert_eq!(first["status"], "succeeded");
    assert_eq!(first["attempt_count"], 4);
    assert_eq!(first["last_status_code"], 200);
    let first = client
        .get(&format!(
            "/v1/webhook_deliveries/{}",
            first["id"].as_str().unwrap()
        ))
        .await
        .ok()
        .body;
    let codes: Vec<Value> = first["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status_code"].clone())
        .collect();
    assert_eq!(codes, vec![json!(500), json!(500), json!(500), json!(200)]);
    assert_eq!(
        first["attempts"][0]["error"],
        "the endpoint answered 500 Internal Server Error"
    );
    let failed = client
        .get(&format!(
            "/v1/webhook_endpoints/{endpoint_id}/deliveries?status=failed"
        ))
        .await
        .ok()
        .body;
    assert_eq!(failed["data"], json!([]));
    let text = metrics(&client).await;
    assert_eq!(
        metric_sample(
            &text,
            "credstack_webhook_attempts_total{outcome=\"failed\"}"
        ),
        3.0
    );

    // Redelivered by hand: the same event again.
    let id = first["id"].as_str().unwrap();
    let again = client
        .post(&format!("/v1/webhook_deliveries/{id}/redeliver"), json!({}))
        .await
        .ok()
        .body;
    assert_eq!(again["status"], "pending");
    eventually("the redelivery", || async {
        receiver.delivered().len() == 4
    })
    .await;
    assert_eq!(receiver.delivered()[3], receiver.delivered()[0]);
    eventually("the redelivery recorded", || async {
        let d = client
            .get(&format!("/v1/webhook_deliveries/{id}"))
            .await
            .ok()
            .body;
        d["status"] == "succeeded" && d["attempt_count"] == 5
    })
    .await;

    // A disabled endpoint gets nothing new.
    client
        .patch(
            &format!("/v1/webhook_endpoints/{endpoint_id}"),
            json!({"enabled": false}),
        )
        .await
        .ok();
    client
        .grant_ok(&wallet, json!({"amount": "4", "purpose": "paid"}))
        .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(receiver.received().len(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_is_given_up_after_its_window_then_redelivered_by_hand() {
    let Some(node) = Node::new() else { return };
    let receiver = Receiver::start().await;
    receiver.state.fail.store(usize::MAX, Ordering::SeqCst);
    let server = node
        .serve(
            free_port(),
            &[
                "--webhook-retry-base-ms",
                "100",
                "--webhook-retry-window-seconds",
                "1",
            ],
        )
        .await;
    let client = Server::remote(&server.base, KEY);
    let (endpoint_id, _) = endpoint(&client, &receiver.url).await;
    let wallet = client.wallet(0).await;
    client
        .grant_ok(&wallet, json!({"amount": "1", "purpose": "paid"}))
        .await;
    client
        .grant_ok(&wallet, json!({"amount": "2", "purpose": "paid"}))
        .await;
    let path = format!("/v1/webhook_endpoints/{endpoint_id}/deliveries?status=failed");
    eventually("both given up", || async {
        client.get(&path).await.ok().body["data"]
            .as_array()
            .unwrap()
            .len()
            == 2
    })
    .await;
    let failed = client.get(&path).await.ok().body;
    let first = failed["data"][1].clone();
    assert_eq!(first["sequence"], 1);
    assert!(first["attempt_count"].as_u64().unwrap() >= 2, "{first}");
    assert_eq!(first["next_attempt_at"], Value::Null);
    let text = metrics(&client).await;
    assert_eq!(
        metric_sample(
            &text,
            "credstack_webhook_attempts_total{outcome=\"given_up\"}"
        ),
        2.0
    );
    // Redelivering one that is pending is refused; a failed one is sent again.
    receiver.state.fail.store(0, Ordering::SeqCst);
    let id = first["id"].as_str().unwrap();
    client
        .post(&format!("/v1/webhook_deliveries/{id}/redeliver"), json!({}))
        .await
        .ok();
    eventually("the redelivery", || async {
        receiver.delivered().len() == 1
    })
    .await;
    assert_eq!(receiver.delivered()[0]["sequence"], 1);
    let refused = client
        .post(
            "/v1/webhook_deliveries/whd_00000000000000000000000000/redeliver",
            json!({}),
        )
        .await;
    assert_eq!(refused.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_delivery_delivers_after_restart() {
    let Some(node) = Node::new() else { return };
    let receiver = Receiver::start().await;
    receiver.state.stall.store(1, Ordering::SeqCst);
    let port = free_port();
    let flags = [
        "--webhook-timeout-ms",
        "1000",
        "--webhook-retry-base-ms",
        "100",
    ];
    let mut server = node.serve(port, &flags).await;
    let client = Server::remote(&server.base, KEY);
    endpoint(&client, &receiver.url).await;
    let wallet = client.wallet(0).await;
    client
        .grant_ok(&wallet, json!({"amount": "1", "purpose": "paid"}))
        .await;
    // The first delivery is in flight (the receiver holds it); the next
    // events wait behind it in the outbox and the delivery queue.
    eventually("the first delivery in flight", || async {
        receiver.state.stall.load(Ordering::SeqCst) == 0
    })
    .await;
    for amount in ["2", "3"] {
        client
            .grant_ok(&wallet, json!({"amount": amount, "purpose": "paid"}))
            .await;
    }
    server.kill();
    let server = node.serve(port, &flags).await;
    let client = Server::remote(&server.base, KEY);
    eventually("every event delivered after the restart", || async {
        receiver.delivered().len() == 3
    })
    .await;
    let sequences: Vec<Value> = receiver
        .delivered()
        .iter()
        .map(|b| b["sequence"].clone())
        .collect();
    assert_eq!(sequences, vec![json!(1), json!(2), json!(3)]);
    assert_eq!(events_of(&client, &wallet).await.len(), 3);
}

#[tokio::test]
async fn webhook_input_is_checked() {
    let server = Server::start().await;
    let cases = [
        (
            json!({"url": "ftp://x.example/", "event_types": ["*"]}),
            "url",
        ),
        (json!({"url": "/relative", "event_types": ["*"]}), "url"),
        (
            json!({"url": "http://a:b@x.example/", "event_types": ["*"]}),
            "url",
        ),
        (
            json!({"url": "https://x.example/", "event_types": []}),
            "event_types",
        ),
        (
            json!({"url": "https://x.example/", "event_types": ["grant.made"]}),
            "event_types",
        ),
    ];
    for (body, param) in cases {
        let response = server.post("/v1/webhook_endpoints", body).await;
        common::assert_error(&response, 400, "parameter_invalid", Some(param));
    }
    let listed = server.get("/v1/webhook_endpoints").await.ok().body;
    assert_eq!(listed["data"], json!([]), "refusals change nothing");
    let wallet = server.wallet(2).await;
    let refused = server
        .patch(
            &format!("/v1/wallets/{wallet}"),
            json!({"low_balance_threshold": "-1"}),
        )
        .await;
    common::assert_error(
        &refused,
        400,
        "parameter_invalid",
        Some("low_balance_threshold"),
    );
    let set = server
        .patch(
            &format!("/v1/wallets/{wallet}"),
            json!({"low_balance_threshold": "2.5"}),
        )
        .await
        .ok();
    assert_eq!(set.str("low_balance_threshold"), "2.5");
    let cleared = server
        .patch(
            &format!("/v1/wallets/{wallet}"),
            json!({"low_balance_threshold": null}),
        )
        .await
        .ok();
    assert_eq!(cleared.body["low_balance_threshold"], Value::Null);
    assert_eq!(cleared.str("overdraft_limit"), "0"); // untouched
    let status = server
        .get("/v1/webhook_endpoints/we_00000000000000000000000000/deliveries?status=lost")
        .await;
    common::assert_error(&status, 400, "parameter_invalid", Some("status"));
    let missing = server
        .get("/v1/webhook_endpoints/we_00000000000000000000000000/deliveries")
        .await;
    assert_eq!(missing.status, 404);
}
