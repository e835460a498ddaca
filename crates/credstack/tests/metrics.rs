//! `/v1/metrics` (issue 8, observability): behind a key like every `/v1`
//! route, in the OpenMetrics text format, and exact: debits counted by
//! outcome (applied, refused, replayed, invalid; single, batch items and
//! captures), every request by matched route and status with its latency,
//! and every writer commit. `metrics_postgres.rs` runs it on PostgreSQL.

mod common;

use common::{Server, assert_error, metric_sample as sample};
use reqwest::Method;
use serde_json::json;

/// The value of the sample `name{labels}` (labels as printed), or 0.

#[tokio::test]
async fn metrics_count_debits_requests_and_commits_exactly() {
    let server = Server::start().await;
    let response = server.send_as(None, Method::GET, "/v1/metrics", None).await;
    assert_error(&response, 401, "missing_api_key", None);

    let wallet = server.wallet(0).await;
    server
        .grant_ok(&wallet, json!({"amount": "10", "purpose": "paid"}))
        .await;
    for _ in 0..3 {
        server.debit(&wallet, "2").await.ok();
    }
    // Refused for want of balance, twice; invalid once.
    server.debit(&wallet, "100").await.status(402);
    server.debit(&wallet, "100").await.status(402);
    server.debit(&wallet, "-1").await.status(400);
    // A keyed debit, then its replay.
    let key = [("Idempotency-Key", "metrics-1")];
    let path = format!("/v1/wallets/{wallet}/debits");
    server
        .post_with(&path, json!({"amount": "1"}), &key)
        .await
        .ok();
    server
        .post_with(&path, json!({"amount": "1"}), &key)
        .await
        .ok();
    // A batch: two applied, one refused.
    let batch = json!({"debits": [
        {"wallet_id": wallet, "amount": "1", "idempotency_key": "b1"},
        {"wallet_id": wallet, "amount": "50", "idempotency_key": "b2"},
        {"wallet_id": wallet, "amount": "1", "idempotency_key": "b3"},
    ]});
    server.post("/v1/debits/batch", batch).await.ok();
    // A hold captured: one more applied debit.
    let hold = server.hold(&wallet, json!({"amount": "1"})).await.ok().id();
    server
        .post(&format!("/v1/holds/{hold}/capture"), json!({"amount": "1"}))
        .await
        .ok();

    let read = server.api_key("read").await;
    let response = server
        .send_as(Some(&read), Method::GET, "/v1/metrics", None)
        .await;
    assert_eq!(response.status, 200);
    let content_type = response.headers["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = response.body.as_str().expect("a text body").to_string();
    assert!(
        text.trim_end().ends_with("# EOF"),
        "OpenMetrics ends with # EOF"
    );

    // 3 single + 1 keyed + 2 batch items + 1 capture applied.
    assert_eq!(
        sample(&text, r#"credstack_debits_total{outcome="applied"}"#),
        7.0
    );
    assert_eq!(
        sample(&text, r#"credstack_debits_total{outcome="refused"}"#),
        3.0
    );
    assert_eq!(
        sample(&text, r#"credstack_debits_total{outcome="replayed"}"#),
        1.0
    );
    // The negative amount: the writer parses amounts in the wallet's scale.
    assert_eq!(
        sample(&text, r#"credstack_debits_total{outcome="invalid"}"#),
        1.0
    );

    let route = "/v1/wallets/{id}/debits";
    let requests = |status: u16| {
        sample(
            &text,
            &format!(
                r#"credstack_http_requests_total{{method="POST",route="{route}",status="{status}"}}"#
            ),
        )
    };
    assert_eq!(requests(200), 5.0, "3 debits, the keyed one and its replay");
    assert_eq!(requests(402), 2.0);
    assert_eq!(requests(400), 1.0);
    let latency = format!(
        r#"credstack_http_request_duration_seconds_count{{method="POST",route="{route}"}}"#
    );
    assert_eq!(sample(&text, &latency), 8.0);
    assert!(
        text.contains(r#"route="/v1/wallets/{id}/balance""#) || !text.contains("balance"),
        "routes are labelled by pattern, never by id"
    );
    assert!(!text.contains(&wallet), "no id in any label");

    // The hold and the read key came after the last debits, and a write
    // that is not a debit waits for the journal to be merged first: nothing
    // waits now (and PostgreSQL has no journal).
    assert_eq!(sample(&text, "credstack_journal_unmerged_batches"), 0.0);

    let commits = sample(&text, "credstack_commit_requests_count");
    assert!(commits >= 1.0, "{text}");
    assert_eq!(
        sample(&text, "credstack_commit_duration_seconds_count"),
        commits
    );
    // Every write reached the writer in some commit: the grant, the wallet
    // and its system and customer, 6 debits, 1 replay, the batch, the hold
    // and its capture, the read key: at least 15 requests.
    assert!(
        sample(&text, "credstack_commit_requests_sum") >= 15.0,
        "{text}"
    );
}
