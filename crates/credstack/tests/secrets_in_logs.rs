//! Secrets never reach the logs: a real `credstack serve` at the most
//! verbose level (`CREDSTACK_LOG=trace`, every crate), in text and in JSON,
//! is given the admin key, creates keys, is called with them (right and
//! wrong ones, in the `Authorization` header) and signed in to through the
//! console's form, and signs a webhook delivery with an endpoint's secret;
//! then its whole log is searched for every secret.

mod common;

use common::process::{LogOnFailure, Process};
use common::receiver::Receiver;
use common::{ON_POSTGRES, Server, console_sign_in, eventually, pg::TestDb};
use reqwest::Method;
use serde_json::json;

/// A secret as sent, and its hex part.
fn forms_of(secret: &str) -> Vec<String> {
    let mut forms = vec![secret.to_string()];
    if let Some(hex_part) = secret
        .strip_prefix("csk_")
        .or_else(|| secret.strip_prefix("whsec_"))
    {
        forms.push(hex_part.to_string());
    }
    forms
}

fn random_key() -> String {
    format!("csk_{}", hex::encode(rand::random::<[u8; 32]>()))
}

#[tokio::test]
async fn no_secret_reaches_the_logs_in_either_format() {
    for format in ["text", "json"] {
        let data = tempfile::tempdir().unwrap();
        let log = data.path().join(format!("serve-{format}.log"));
        let _show = LogOnFailure(log.clone());
        let db = if ON_POSTGRES {
            let Some(db) = TestDb::create() else {
                return;
            };
            Some(db)
        } else {
            None
        };
        let store = match &db {
            Some(db) => vec!["--database-url".to_string(), db.url()],
            None => vec![
                "--data".to_string(),
                data.path().join("store").display().to_string(),
            ],
        };
        let mut args: Vec<&str> = store.iter().map(String::as_str).collect();
        args.extend(["--log-format", format]);
        let admin_key = random_key();
        let mut process =
            Process::spawn_with_env(&args, &admin_key, &log, &[("CREDSTACK_LOG", "trace")]).await;
        let server = Server::remote(&process.base, &admin_key);

        let mut secrets = vec![admin_key.clone()];
        for scope in ["admin", "usage", "read"] {
            let created = server
                .post("/v1/api_keys", json!({"name": scope, "scope": scope}))
                .await
                .ok();
            secrets.push(created.str("secret"));
        }
        for key in &secrets {
            server
                .send_as(Some(key), Method::GET, "/v1/customers", None)
                .await
                .ok();
        }
        // Refused keys: a wrong one, and a key of too narrow a scope.
        let wrong = random_key();
        server
            .send_as(Some(&wrong), Method::GET, "/v1/customers", None)
            .await
            .status(401);
        server
            .send_as(
                Some(&secrets[3]),
                Method::POST,
                "/v1/customers",
                Some(json!({"name": "x"})),
            )
            .await
            .status(403);
        secrets.push(wrong.clone());
        // The console's sign-in form, with a good key and a refused one.
        let session = console_sign_in(&server.base, &secrets[1])
            .await
            .expect("an admin key signs in");
        secrets.push(session);
        assert_eq!(console_sign_in(&server.base, &wrong).await, None);
        // A webhook endpoint's signing secret, used to sign a delivery.
        let receiver = Receiver::start().await;
        let endpoint = server
            .post(
                "/v1/webhook_endpoints",
                json!({"url": receiver.url, "event_types": ["*"]}),
            )
            .await
            .ok();
        secrets.push(endpoint.str("secret"));
        let wallet = server.wallet(0).await;
        server
            .grant_ok(&wallet, json!({"amount": "1", "purpose": "paid"}))
            .await;
        eventually("a signed delivery", || async {
            !receiver.delivered().is_empty()
        })
        .await;
        process.kill();

        let text = std::fs::read_to_string(&log).unwrap();
        // The log is as verbose as it gets: every request is in it.
        let debug_marker = if format == "json" {
            "\"level\":\"DEBUG\""
        } else {
            "DEBUG"
        };
        assert!(text.contains(debug_marker), "debug lines are logged");
        assert!(text.contains("/v1/api_keys"), "requests are logged");
        assert!(text.contains("/login"), "console requests are logged");
        let mut searched = 0;
        for secret in &secrets {
            for form in forms_of(secret) {
                let line = text.lines().find(|line| line.contains(&form));
                assert_eq!(line, None, "a secret is in the {format} log: {form}");
                searched += 1;
            }
        }
        println!(
            "{format}: {} secrets ({searched} forms) searched in {} log lines",
            secrets.len(),
            text.lines().count()
        );
    }
}
