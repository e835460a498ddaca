//! Structured logs with request ids (issue 8, observability): a real
//! `serve --log-format json` gives every request an id — the caller's
//! `X-Request-Id` when it is a plain token, else its own — sends it back,
//! and every log line written while answering carries it in its span, as
//! JSON. The per-request line names the route pattern and status, never the
//! query string.

mod common;

use common::process::Process;
use serde_json::{Value, json};

const KEY: &str = "csk_request_id_admin_key";

#[tokio::test]
async fn every_request_has_an_id_in_its_answer_and_its_log_lines() {
    let data = tempfile::tempdir().unwrap();
    let log = data.path().join("serve.log");
    let dir = data.path().join("store");
    let server = Process::spawn_with_env(
        &["--data", dir.to_str().unwrap(), "--log-format", "json"],
        KEY,
        &log,
        &[("CREDSTACK_LOG", "credstack=debug")],
    )
    .await;
    let client = reqwest::Client::new();
    let send = |id: Option<&str>, path: &str| {
        let mut request = client
            .get(format!("{}{path}", server.base))
            .bearer_auth(KEY);
        if let Some(id) = id {
            request = request.header("X-Request-Id", id);
        }
        request.send()
    };
    let given = send(Some("trace-me.1"), "/v1/customers?q=ada@example.com")
        .await
        .unwrap();
    assert_eq!(given.headers()["x-request-id"], "trace-me.1");
    let made = send(None, "/v1/credit_systems").await.unwrap();
    let made_id = made.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(
        made_id.starts_with("req_") && made_id.len() == 30,
        "{made_id}"
    );
    // Not a plain token (a space, a newline would forge log lines): replaced.
    let refused = send(Some("two words"), "/v1/credit_systems").await.unwrap();
    let replaced = refused.headers()["x-request-id"].to_str().unwrap();
    assert!(replaced.starts_with("req_"), "{replaced}");
    let not_found = client
        .post(format!("{}/v1/wallets/wal_nope/debits", server.base))
        .bearer_auth(KEY)
        .header("X-Request-Id", "missing-wallet")
        .json(&json!({"amount": "1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(not_found.status(), 404);
    drop(server);

    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("JSON: {line}")))
        .collect();
    let answered = |id: &str| {
        lines
            .iter()
            .find(|l| l["span"]["request_id"] == id && l["fields"]["message"] == "answered")
            .unwrap_or_else(|| panic!("a line for {id} in\n{text}"))
            .clone()
    };
    let line = answered("trace-me.1");
    assert_eq!(line["span"]["route"], "/v1/customers");
    assert_eq!(line["span"]["method"], "GET");
    assert_eq!(line["fields"]["status"], 200);
    assert!(line["fields"]["micros"].is_u64());
    assert_eq!(answered(&made_id)["span"]["route"], "/v1/credit_systems");
    assert_eq!(answered(replaced)["fields"]["status"], 200);
    let line = answered("missing-wallet");
    assert_eq!(line["span"]["route"], "/v1/wallets/{id}/debits");
    assert_eq!(line["fields"]["status"], 404);
    assert!(
        !text.contains("ada@example.com"),
        "no query string in the log"
    );
    assert!(!text.contains("two words"));
}
