//! Usage from NATS JetStream (issue 8), against the real NATS server on
//! 127.0.0.1:4222 (`NATS_URL` overrides) and a real `credstack serve`
//! process: every message is debited exactly once, redeliveries and
//! duplicates replay, refusals go to the dead-letter subject with their
//! reason, and a server killed mid-stream picks up where it was.
//! Required in CI; elsewhere a missing NATS server is a printed skip.

mod common;

use async_nats::jetstream;
use common::process::Process;
use common::{Server, eventually, metric_sample as sample};
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::time::Duration;

const KEY: &str = "csk_usage_nats_admin_key";

fn nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// JetStream, or `None` (a printed skip) when no NATS server answers
/// outside CI.
async fn jetstream() -> Option<jetstream::Context> {
    match async_nats::connect(nats_url()).await {
        Ok(client) => Some(jetstream::new(client)),
        Err(error) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI needs the NATS server at {}: {error}",
                nats_url()
            );
            println!("SKIP: no NATS server at {}: {error}", nats_url());
            None
        }
    }
}

/// Stream, subject and consumer names of one test, apart from every other.
struct Names {
    url: String,
    stream: String,
    subject: String,
    dead_stream: String,
    dead_subject: String,
}

impl Names {
    fn new() -> Names {
        let suffix = rand::random::<u64>();
        Names {
            url: nats_url(),
            stream: format!("USAGE_{suffix}"),
            subject: format!("test.usage.{suffix}"),
            dead_stream: format!("USAGE_DEAD_{suffix}"),
            dead_subject: format!("test.usage.{suffix}.dead"),
        }
    }

    fn args<'a>(&'a self, data: &'a str) -> Vec<&'a str> {
        vec![
            "--data",
            data,
            "--nats-url",
            &self.url,
            "--nats-stream",
            &self.stream,
            "--nats-subject",
            &self.subject,
            "--nats-dead-letter-stream",
            &self.dead_stream,
            "--nats-dead-letter-subject",
            &self.dead_subject,
        ]
    }

    /// Removes the test's streams from the shared NATS server.
    async fn delete(&self, js: &jetstream::Context) {
        js.delete_stream(&self.stream).await.ok();
        js.delete_stream(&self.dead_stream).await.ok();
    }
}

/// One test's NATS streams, data directory and server log; `None` (a
/// skip) on PostgreSQL runs and, outside CI, without a NATS server.
struct Setup {
    js: jetstream::Context,
    names: Names,
    data: std::path::PathBuf,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
    _log: common::process::LogOnFailure,
}

impl Setup {
    async fn new() -> Option<Setup> {
        if common::ON_POSTGRES {
            return None;
        }
        let js = jetstream().await?;
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("serve.log");
        Some(Setup {
            js,
            names: Names::new(),
            data: dir.path().join("data"),
            _log: common::process::LogOnFailure(log.clone()),
            log,
            _dir: dir,
        })
    }

    /// A `serve` consuming the test's stream, on `port` or a free one.
    async fn serve(&self, port: Option<u16>) -> Process {
        let data = self.data.to_str().unwrap();
        let args = self.names.args(data);
        match port {
            Some(port) => Process::spawn_on(port, &args, KEY, &self.log).await,
            None => Process::spawn(&args, KEY, &self.log).await,
        }
    }
}

async fn publish(js: &jetstream::Context, subject: &str, payload: String) {
    js.publish(subject.to_string(), payload.into())
        .await
        .expect("publish")
        .await
        .expect("stored by JetStream");
}

async fn balance(client: &Server, wallet: &str) -> i64 {
    client.balance(wallet).await["balance"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Every message in a stream, oldest first.
async fn stream_messages(js: &jetstream::Context, stream: &str) -> Vec<Value> {
    let Ok(stream) = js.get_stream(stream).await else {
        return Vec::new();
    };
    let consumer: jetstream::consumer::PullConsumer = stream
        .create_consumer(jetstream::consumer::pull::Config {
            ack_policy: jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut batch = consumer
        .fetch()
        .max_messages(1000)
        .expires(Duration::from_millis(500))
        .messages()
        .await
        .unwrap();
    let mut all = Vec::new();
    while let Some(message) = batch.next().await {
        all.push(serde_json::from_slice(&message.unwrap().payload).unwrap());
    }
    all
}

#[tokio::test]
async fn usage_is_debited_once_and_refusals_are_dead_lettered() {
    let Some(test) = Setup::new().await else {
        return;
    };
    let (js, names) = (&test.js, &test.names);
    let server = test.serve(None).await;
    let client = Server::remote(&server.base, KEY);
    let system = client.credit_system("tokens", 0).await;
    let customer = client
        .post(
            "/v1/customers",
            json!({"name": "Acme", "external_id": "acme-1"}),
        )
        .await
        .ok()
        .id();
    let wallet = client.wallet_of(&customer, &system).await;
    client
        .grant_ok(&wallet, json!({"amount": "1000", "purpose": "paid"}))
        .await;

    let usage = |key: &str, amount: &str| {
        json!({"wallet_id": wallet, "amount": amount, "idempotency_key": key}).to_string()
    };
    for n in 0..50 {
        publish(js, &names.subject, usage(&format!("u-{n}"), "3")).await;
    }
    // Duplicates (a producer that retried): the same key and usage.
    for n in 0..10 {
        publish(js, &names.subject, usage(&format!("u-{n}"), "3")).await;
    }
    // By the customer's external id and the credit system's key.
    for n in 0..5 {
        let message = json!({"customer_external_id": "acme-1", "credit_system_key": "tokens",
            "amount": "2", "idempotency_key": format!("c-{n}"), "description": "by external id"});
        publish(js, &names.subject, message.to_string()).await;
    }
    // Refused: more than the wallet holds, not JSON, no such wallet, a key
    // reused for other usage.
    publish(js, &names.subject, usage("too-much", "100000")).await;
    publish(js, &names.subject, "{not json".into()).await;
    let unknown = json!({"customer_external_id": "nobody", "credit_system_key": "tokens",
        "amount": "1", "idempotency_key": "who"});
    publish(js, &names.subject, unknown.to_string()).await;
    publish(js, &names.subject, usage("u-0", "4")).await;

    let expected = 1000 - 50 * 3 - 5 * 2;
    eventually("the usage to be debited", || async {
        balance(&client, &wallet).await == expected
    })
    .await;
    eventually("four dead letters", || async {
        stream_messages(js, &names.dead_stream).await.len() >= 4
    })
    .await;
    let dead = stream_messages(js, &names.dead_stream).await;
    let mut reasons: Vec<(u64, String)> = dead
        .iter()
        .map(|d| {
            (
                d["status"].as_u64().unwrap(),
                d["error"]["code"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        [
            (400, "invalid".to_string()),
            (402, "insufficient_balance".to_string()),
            (404, "not_found".to_string()),
            (409, "idempotency_key_reused".to_string()),
        ],
        "{dead:?}"
    );
    assert!(
        dead.iter()
            .any(|d| d["message"].as_str() == Some("{not json")),
        "the dead letter carries the message: {dead:?}"
    );
    // Exactly the debits the usage asked for: duplicates replayed.
    let debits = client
        .get(&format!("/v1/wallets/{wallet}/debits?limit=100"))
        .await
        .ok()
        .body;
    assert_eq!(debits["data"].as_array().unwrap().len(), 55, "{debits}");
    assert!(!debits["has_more"].as_bool().unwrap());
    // Nothing more arrives later.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(balance(&client, &wallet).await, expected);
    assert_eq!(stream_messages(js, &names.dead_stream).await.len(), 4);
    // The same usage over HTTP replays the debit the message made.
    let replay = client
        .post_key(
            &format!("/v1/wallets/{wallet}/debits"),
            json!({"amount": "3"}),
            "u-7",
        )
        .await;
    assert_eq!(replay.status, 200, "{}", replay.body);
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    // The metrics count the messages by outcome, and the lag falls to 0.
    let metrics = || async {
        let response = client.get("/v1/metrics").await;
        response.body.as_str().expect("a text body").to_string()
    };
    let text = metrics().await;
    assert_eq!(
        sample(
            &text,
            r#"credstack_usage_messages_total{outcome="debited"}"#
        ),
        65.0,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"credstack_usage_messages_total{outcome="dead_lettered"}"#
        ),
        4.0
    );
    eventually("the consumer's lag to read 0", || async {
        let text = metrics().await;
        text.contains("credstack_usage_pending_messages ")
            && sample(&text, "credstack_usage_pending_messages") == 0.0
    })
    .await;
    names.delete(js).await;
}

#[tokio::test]
async fn a_server_killed_mid_stream_debits_each_message_once_after_restart() {
    let Some(test) = Setup::new().await else {
        return;
    };
    let (js, names) = (&test.js, &test.names);
    let mut server = test.serve(None).await;
    let port: u16 = server.base.rsplit(':').next().unwrap().parse().unwrap();
    let client = Server::remote(&server.base, KEY);
    let wallet = client.wallet(0).await;
    client
        .grant_ok(&wallet, json!({"amount": "100000", "purpose": "paid"}))
        .await;
    const MESSAGES: i64 = 3000;
    let publisher = {
        let (js, subject, wallet) = (js.clone(), names.subject.clone(), wallet.clone());
        tokio::spawn(async move {
            for n in 0..MESSAGES {
                let message = json!({"wallet_id": wallet, "amount": "1", "idempotency_key": format!("k-{n}")});
                publish(&js, &subject, message.to_string()).await;
            }
        })
    };
    // Killed once some, not all, of the usage is debited.
    eventually("some usage to be debited", || async {
        balance(&client, &wallet).await <= 100000 - 200
    })
    .await;
    server.kill();
    let debited = 100000 - balance_in_store(&test.data, &wallet);
    assert!(debited < MESSAGES, "killed mid-stream: {debited} debited");
    publisher.await.unwrap();
    let server = test.serve(Some(port)).await;
    let client = Server::remote(&server.base, KEY);
    // The restarted consumer starts behind the stream: the metrics show its
    // lag (read as it starts), then 0 once it has caught up.
    let lag = || async {
        let text = client.get("/v1/metrics").await.body;
        sample(
            text.as_str().expect("a text body"),
            "credstack_usage_pending_messages",
        )
    };
    eventually("the consumer's lag to show", || async { lag().await > 0.0 }).await;
    eventually("every message to be debited", || async {
        balance(&client, &wallet).await == 100000 - MESSAGES
    })
    .await;
    // And no more: redelivered messages replayed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(balance(&client, &wallet).await, 100000 - MESSAGES);
    assert!(stream_messages(js, &names.dead_stream).await.is_empty());
    eventually("the consumer's lag to read 0", || async {
        lag().await == 0.0
    })
    .await;
    names.delete(js).await;
}

/// The balance in the store a killed server left (opening it merges its
/// journal).
fn balance_in_store(data: &std::path::Path, wallet: &str) -> i64 {
    let data = data.to_path_buf();
    let wallet = credstack::ids::parse(credstack::ids::Kind::Wallet, wallet).unwrap();
    let mut store =
        credstack::ledger::open_store(&credstack::ledger::Backend::Embedded { data_dir: data })
            .expect("open the store");
    let (_, state) = store.load_wallet(wallet).unwrap().expect("the wallet");
    state.balance.atomic()
}
