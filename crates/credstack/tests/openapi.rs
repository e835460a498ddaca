//! The OpenAPI document describes every response a route can give (issue 7:
//! "every response matches the document"; `.ci/schemathesis` checks it by
//! fuzzing, this checks it by reading the document). Each `/v1` operation
//! documents 401, each write 403, each body 400 and 413, each POST its
//! `Idempotency-Key` and 409; every error response is a shared response whose
//! body is the `ErrorBody` schema; every `{id}` is a declared parameter.

mod common;

use common::Server;
use serde_json::Value;

async fn document() -> Value {
    let server = Server::start().await;
    server.get("/v1/openapi.json").await.ok().body
}

/// Every `(path, method, operation)` of the document.
fn operations(document: &Value) -> Vec<(String, String, Value)> {
    let mut all = Vec::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            if ["get", "post", "patch", "delete", "put"].contains(&method.as_str()) {
                all.push((path.clone(), method.to_uppercase(), operation.clone()));
            }
        }
    }
    all
}

fn has_parameter(operation: &Value, name: &str, location: &str) -> bool {
    operation["parameters"]
        .as_array()
        .is_some_and(|ps| ps.iter().any(|p| p["name"] == name && p["in"] == location))
}

#[tokio::test]
async fn every_operation_documents_the_responses_its_extractors_give() {
    let document = document().await;
    let operations = operations(&document);
    assert!(operations.len() >= 40, "{} operations", operations.len());
    for (path, method, operation) in &operations {
        let responses = operation["responses"].as_object().expect("responses");
        let has = |status: &str| responses.contains_key(status);
        assert!(has("200"), "{method} {path}: 200");
        if !path.starts_with("/v1/") {
            assert_eq!(
                operation["security"],
                serde_json::json!([{}]),
                "{method} {path} takes no key"
            );
            continue;
        }
        assert!(has("401"), "{method} {path}: 401");
        assert_eq!(
            has("403"),
            method != "GET",
            "{method} {path}: 403 for writes only"
        );
        if method == "POST" || method == "PATCH" {
            assert!(has("400") && has("413"), "{method} {path}: 400 and 413");
        }
        if method == "POST" && !path.starts_with("/v1/test_clock") {
            assert!(has("409"), "{method} {path}: 409 for a reused key");
            assert!(
                has_parameter(operation, "Idempotency-Key", "header"),
                "{method} {path}: Idempotency-Key"
            );
        }
        if path.contains("{id}") {
            assert!(
                has_parameter(operation, "id", "path"),
                "{method} {path}: the id parameter"
            );
            assert!(has("404"), "{method} {path}: 404 for an unknown id");
        }
        let takes_query = operation["parameters"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["in"] == "query"));
        if takes_query {
            assert!(has("400"), "{method} {path}: 400 for a bad query");
        }
    }
}

#[tokio::test]
async fn every_error_response_is_a_shared_response_with_the_error_schema() {
    let document = document().await;
    let shared = document["components"]["responses"]
        .as_object()
        .expect("shared responses");
    for (name, response) in shared {
        assert_eq!(
            response["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ErrorBody",
            "{name}"
        );
    }
    let error_body = &document["components"]["schemas"]["ErrorBody"];
    assert_eq!(error_body["required"], serde_json::json!(["error"]));
    for (path, method, operation) in operations(&document) {
        for (status, response) in operation["responses"].as_object().unwrap() {
            if status.starts_with('2') {
                continue;
            }
            let reference = response["$ref"].as_str().unwrap_or_else(|| {
                panic!("{method} {path} {status}: not a shared response: {response}")
            });
            let name = reference
                .strip_prefix("#/components/responses/")
                .unwrap_or_else(|| panic!("{method} {path} {status}: {reference}"));
            assert!(
                shared.contains_key(name),
                "{method} {path} {status}: {name}"
            );
        }
    }
}

/// A request: method, path, the path's template, the key (none: no
/// Authorization header) and the body.
type Probe<'a> = (
    reqwest::Method,
    String,
    &'a str,
    Option<&'a str>,
    Option<Value>,
);

/// The answers the document promises are the ones the server gives: a few
/// of each shared error, checked against the document's own status list.
#[tokio::test]
async fn the_server_answers_only_documented_statuses() {
    let server = Server::start().await;
    let document = server.get("/v1/openapi.json").await.ok().body;
    let documented = |path: &str, method: &str, status: u16| {
        document["paths"][path][method.to_lowercase()]["responses"]
            .as_object()
            .is_some_and(|r| r.contains_key(&status.to_string()))
    };
    let system = server.credit_system("documented", 0).await;
    let wallet = server.wallet_in(&system).await;
    let read = server.api_key("read").await;
    let cases: Vec<Probe> = vec![
        (
            reqwest::Method::GET,
            "/v1/wallets/wal_nope".into(),
            "/v1/wallets/{id}",
            Some(server.key.as_str()),
            None,
        ),
        (
            reqwest::Method::GET,
            "/v1/wallets?limit=0".into(),
            "/v1/wallets",
            Some(server.key.as_str()),
            None,
        ),
        (
            reqwest::Method::GET,
            format!("/v1/wallets/{wallet}"),
            "/v1/wallets/{id}",
            None,
            None,
        ),
        (
            reqwest::Method::POST,
            format!("/v1/wallets/{wallet}/debits"),
            "/v1/wallets/{id}/debits",
            Some(read.as_str()),
            Some(serde_json::json!({"amount": "1"})),
        ),
        (
            reqwest::Method::POST,
            format!("/v1/wallets/{wallet}/debits"),
            "/v1/wallets/{id}/debits",
            Some(server.key.as_str()),
            Some(serde_json::json!({"amount": "1"})),
        ),
        (
            reqwest::Method::PATCH,
            format!("/v1/credit_systems/{system}"),
            "/v1/credit_systems/{id}",
            Some(server.key.as_str()),
            Some(serde_json::json!(["renamed"])),
        ),
    ];
    for (method, path, template, key, body) in cases {
        let response = server.send_as(key, method.clone(), &path, body).await;
        let status = response.status.as_u16();
        assert!(status >= 400, "{method} {path}: {status}");
        assert!(
            documented(template, method.as_str(), status),
            "{method} {path} answered {status}, which {template} does not document: {}",
            response.body
        );
    }
}
