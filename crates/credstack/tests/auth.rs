//! Authentication and scopes over real HTTP (SPEC §3): nothing under `/v1`
//! without a key, each scope reaching exactly what it should, secrets shown
//! once; plus the routes outside the ledger: health, test clock, OpenAPI.

mod common;

use common::{START, Server, assert_error};
use reqwest::Method;
use serde_json::{Value, json};

/// A wallet with balance and an active hold, for scope checks.
struct Setup {
    wallet: String,
    customer: String,
    /// A customer without a wallet, for wallet creation.
    other_customer: String,
    system: String,
    grant: String,
    debit: String,
    hold: String,
}

async fn setup(server: &Server) -> Setup {
    let system = server.credit_system("auth", 0).await;
    let customer = server.customer("Scoped").await;
    let other_customer = server.customer("Walletless").await;
    let wallet = server.wallet_of(&customer, &system).await;
    let grant = server
        .grant_ok(&wallet, json!({"amount": "1000", "purpose": "paid"}))
        .await;
    let debit = server.debit(&wallet, "1").await.ok().id();
    let hold = server.hold(&wallet, json!({"amount": "1"})).await.ok().id();
    Setup {
        wallet,
        customer,
        other_customer,
        system,
        grant,
        debit,
        hold,
    }
}

fn reads(s: &Setup) -> Vec<String> {
    vec![
        "/v1/credit_systems".into(),
        format!("/v1/credit_systems/{}", s.system),
        "/v1/customers".into(),
        format!("/v1/customers/{}", s.customer),
        "/v1/wallets".into(),
        format!("/v1/wallets/{}", s.wallet),
        format!("/v1/wallets/{}/balance", s.wallet),
        format!("/v1/wallets/{}/grants", s.wallet),
        format!("/v1/grants/{}", s.grant),
        format!("/v1/wallets/{}/debits", s.wallet),
        format!("/v1/debits/{}", s.debit),
        format!("/v1/holds/{}", s.hold),
        format!("/v1/wallets/{}/entries", s.wallet),
        "/v1/test_clock".into(),
        "/v1/openapi.json".into(),
    ]
}

/// Writes only an admin key may make.
fn admin_writes(s: &Setup) -> Vec<(Method, String, Value)> {
    vec![
        (
            Method::POST,
            "/v1/credit_systems".into(),
            json!({"key": "nope", "name": "n", "unit": "u"}),
        ),
        (
            Method::PATCH,
            format!("/v1/credit_systems/{}", s.system),
            json!({"name": "Renamed system"}),
        ),
        (
            Method::POST,
            "/v1/customers".into(),
            json!({"name": "Nope"}),
        ),
        (
            Method::PATCH,
            format!("/v1/customers/{}", s.customer),
            json!({"name": "Renamed"}),
        ),
        (
            Method::POST,
            "/v1/wallets".into(),
            json!({"customer_id": s.other_customer, "credit_system_id": s.system}),
        ),
        (
            Method::PATCH,
            format!("/v1/wallets/{}", s.wallet),
            json!({"overdraft_limit": "100"}),
        ),
        (
            Method::POST,
            format!("/v1/wallets/{}/grants", s.wallet),
            json!({"amount": "5", "purpose": "paid"}),
        ),
        (
            Method::POST,
            format!("/v1/grants/{}/void", s.grant),
            json!({}),
        ),
        (
            Method::POST,
            "/v1/api_keys".into(),
            json!({"name": "escalate", "scope": "admin"}),
        ),
        (
            Method::POST,
            "/v1/test_clock/advance".into(),
            json!({"to": "2025-02-01T00:00:00Z"}),
        ),
    ]
}

/// Writes that record usage: a `usage` key may make them.
fn usage_writes(s: &Setup, hold: &str, tag: &str) -> Vec<(Method, String, Value)> {
    vec![
        (
            Method::POST,
            format!("/v1/wallets/{}/debits", s.wallet),
            json!({"amount": "2"}),
        ),
        (
            Method::POST,
            "/v1/debits/batch".into(),
            json!({"debits": [{"wallet_id": s.wallet, "amount": "3", "idempotency_key": format!("{tag}-batch")}]}),
        ),
        (
            Method::POST,
            format!("/v1/wallets/{}/holds", s.wallet),
            json!({"amount": "4"}),
        ),
        (
            Method::POST,
            format!("/v1/holds/{hold}/capture"),
            json!({"amount": "1"}),
        ),
    ]
}

#[tokio::test]
async fn no_key_or_a_wrong_key_is_401() {
    let server = Server::start().await;
    let s = setup(&server).await;
    let before = server.snapshot(&s.wallet).await;
    for path in reads(&s) {
        let response = server.send_as(None, Method::GET, &path, None).await;
        assert_error(&response, 401, "missing_api_key", None);
        assert_eq!(response.body["error"]["type"], "authentication_error");
        let response = server
            .send_as(Some("csk_wrong"), Method::GET, &path, None)
            .await;
        assert_error(&response, 401, "invalid_api_key", None);
    }
    for (method, path, body) in admin_writes(&s)
        .into_iter()
        .chain(usage_writes(&s, &s.hold, "anon"))
    {
        let response = server
            .send_as(None, method.clone(), &path, Some(body.clone()))
            .await;
        assert_error(&response, 401, "missing_api_key", None);
        let response = server
            .send_as(Some(""), method.clone(), &path, Some(body.clone()))
            .await;
        assert_eq!(
            response.status.as_u16(),
            401,
            "{method} {path}: {}",
            response.body
        );
        let response = server
            .send_as(Some("csk_test_admin_keyx"), method, &path, Some(body))
            .await;
        assert_error(&response, 401, "invalid_api_key", None);
    }
    // Not a bearer token.
    let response = server
        .client
        .get(format!("{}/v1/customers", server.base))
        .header("Authorization", format!("Basic {}", server.key))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    let response = server
        .client
        .get(format!("{}/v1/customers", server.base))
        .header("Authorization", &server.key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    assert_eq!(
        server.snapshot(&s.wallet).await,
        before,
        "nothing changed without a key"
    );
}

#[tokio::test]
async fn read_key_may_get_but_not_write() {
    let server = Server::start().await;
    let s = setup(&server).await;
    let read = server.api_key("read").await;
    for path in reads(&s) {
        let response = server.send_as(Some(&read), Method::GET, &path, None).await;
        assert_eq!(
            response.status.as_u16(),
            200,
            "GET {path}: {}",
            response.body
        );
    }
    let before = server.snapshot(&s.wallet).await;
    for (method, path, body) in admin_writes(&s)
        .into_iter()
        .chain(usage_writes(&s, &s.hold, "read"))
    {
        let response = server
            .send_as(Some(&read), method.clone(), &path, Some(body))
            .await;
        assert_error(&response, 403, "insufficient_scope", None);
        assert_eq!(
            response.body["error"]["type"], "permission_error",
            "{method} {path}"
        );
    }
    let release = format!("/v1/holds/{}/release", s.hold);
    assert_error(
        &server
            .send_as(Some(&read), Method::POST, &release, Some(json!({})))
            .await,
        403,
        "insufficient_scope",
        None,
    );
    assert_eq!(
        server.snapshot(&s.wallet).await,
        before,
        "a read key changed nothing"
    );
    assert_eq!(
        server
            .get(&format!("/v1/holds/{}", s.hold))
            .await
            .ok()
            .str("status"),
        "active"
    );
}

#[tokio::test]
async fn usage_key_may_record_usage_and_read_but_not_administer() {
    let server = Server::start().await;
    let s = setup(&server).await;
    let usage = server.api_key("usage").await;
    for path in reads(&s) {
        let response = server.send_as(Some(&usage), Method::GET, &path, None).await;
        assert_eq!(
            response.status.as_u16(),
            200,
            "GET {path}: {}",
            response.body
        );
    }
    let before = server.snapshot(&s.wallet).await;
    for (method, path, body) in admin_writes(&s) {
        let response = server
            .send_as(Some(&usage), method.clone(), &path, Some(body))
            .await;
        assert_error(&response, 403, "insufficient_scope", None);
        assert_eq!(
            response.body["error"]["type"], "permission_error",
            "{method} {path}"
        );
    }
    assert_eq!(
        server.snapshot(&s.wallet).await,
        before,
        "refused writes changed nothing"
    );

    for (method, path, body) in usage_writes(&s, &s.hold, "usage") {
        let response = server
            .send_as(Some(&usage), method.clone(), &path, Some(body))
            .await;
        assert_eq!(
            response.status.as_u16(),
            200,
            "{method} {path}: {}",
            response.body
        );
    }
    let hold = server
        .send_as(
            Some(&usage),
            Method::POST,
            &format!("/v1/wallets/{}/holds", s.wallet),
            Some(json!({"amount": "7"})),
        )
        .await
        .ok();
    let released = server
        .send_as(
            Some(&usage),
            Method::POST,
            &format!("/v1/holds/{}/release", hold.id()),
            Some(json!({})),
        )
        .await
        .ok();
    assert_eq!(released.body["status"], "released");
    // 1000 - 1 (setup debit) - 2 (debit) - 3 (batch) - 1 (capture); one hold of 4 is still active.
    let balance = server.balance(&s.wallet).await;
    assert_eq!(
        (&balance["balance"], &balance["held"]),
        (&json!("993"), &json!("4"))
    );
    server.check_invariants(&s.wallet).await;
}

#[tokio::test]
async fn admin_key_reaches_everything() {
    let server = Server::start().await;
    let s = setup(&server).await;
    let admin = server.api_key("admin").await;
    for path in reads(&s).into_iter().chain(["/v1/api_keys".to_string()]) {
        let response = server.send_as(Some(&admin), Method::GET, &path, None).await;
        assert_eq!(
            response.status.as_u16(),
            200,
            "GET {path}: {}",
            response.body
        );
    }
    for (method, path, body) in usage_writes(&s, &s.hold, "admin")
        .into_iter()
        .chain(admin_writes(&s))
    {
        let response = server
            .send_as(Some(&admin), method.clone(), &path, Some(body))
            .await;
        assert_eq!(
            response.status.as_u16(),
            200,
            "{method} {path}: {}",
            response.body
        );
    }
    let keys = server
        .send_as(Some(&admin), Method::GET, "/v1/api_keys", None)
        .await
        .ok();
    let id = keys.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "escalate")
        .unwrap()["id"]
        .clone();
    let deleted = server
        .send_as(
            Some(&admin),
            Method::DELETE,
            &format!("/v1/api_keys/{}", id.as_str().unwrap()),
            None,
        )
        .await
        .ok();
    assert_eq!(
        deleted.body,
        json!({"id": id, "object": "api_key", "deleted": true})
    );
}

#[tokio::test]
async fn api_key_secret_is_shown_once() {
    let server = Server::start().await;
    let created = server
        .post("/v1/api_keys", json!({"name": "ci", "scope": "usage"}))
        .await
        .ok();
    let secret = created.str("secret");
    let id = created.id();
    assert!(id.starts_with("key_"), "{id}");
    assert_eq!(created.body["object"], "api_key");
    assert_eq!(created.body["scope"], "usage");
    assert_eq!(created.body["name"], "ci");
    assert_eq!(created.body["created_at"], START);
    assert!(secret.len() >= 20, "a secret worth the name: {secret}");
    let listed = server.get("/v1/api_keys").await.ok().body;
    assert_eq!(listed["object"], "list");
    let keys = listed["data"].as_array().unwrap();
    assert!(keys.iter().any(|k| k["id"] == id.as_str()));
    for key in keys {
        assert!(key.get("secret").is_none(), "no secret in the list: {key}");
        assert!(!key.to_string().contains(&secret));
        assert!(!key.to_string().contains(common::ADMIN_KEY));
    }
    // A replay of the creation does not show the secret again.
    let first = server
        .post_key(
            "/v1/api_keys",
            json!({"name": "replayed", "scope": "read"}),
            "key-1",
        )
        .await
        .ok();
    assert!(first.body["secret"].is_string());
    let again = server
        .post_key(
            "/v1/api_keys",
            json!({"name": "replayed", "scope": "read"}),
            "key-1",
        )
        .await
        .ok();
    assert_eq!(again.headers.get("idempotent-replayed").unwrap(), "true");
    assert!(
        again.body.get("secret").is_none(),
        "replay shows no secret: {}",
        again.body
    );
    assert_eq!(again.id(), first.id());

    // The secret works until the key is deleted.
    assert_eq!(
        server
            .send_as(Some(&secret), Method::GET, "/v1/customers", None)
            .await
            .status
            .as_u16(),
        200
    );
    server.delete(&format!("/v1/api_keys/{id}")).await.ok();
    let response = server
        .send_as(Some(&secret), Method::GET, "/v1/customers", None)
        .await;
    assert_error(&response, 401, "invalid_api_key", None);
    assert_error(
        &server.delete(&format!("/v1/api_keys/{id}")).await,
        404,
        "resource_not_found",
        None,
    );
    assert!(
        !server
            .get("/v1/api_keys")
            .await
            .ok()
            .body
            .to_string()
            .contains(&id)
    );
    let response = server
        .post("/v1/api_keys", json!({"name": "bad", "scope": "superuser"}))
        .await;
    assert_error(&response, 400, "parameter_invalid", Some("scope"));
}

#[tokio::test]
async fn healthz_needs_no_key() {
    let server = Server::start().await;
    let response = server.send_as(None, Method::GET, "/healthz", None).await;
    assert_eq!(response.status.as_u16(), 200);
    assert_eq!(response.body, json!({"status": "ok"}));
    let response = server
        .send_as(Some("csk_wrong"), Method::GET, "/healthz", None)
        .await;
    assert_eq!(
        response.status.as_u16(),
        200,
        "a bad key does not break health checks"
    );
}

#[tokio::test]
async fn test_clock_reads_and_moves_forward() {
    let server = Server::start().await;
    let clock = server.get("/v1/test_clock").await.ok();
    assert_eq!(clock.body, json!({"object": "test_clock", "now": START}));
    let moved = server
        .post(
            "/v1/test_clock/advance",
            json!({"to": "2025-02-01T00:00:00+01:00"}),
        )
        .await
        .ok();
    assert_eq!(
        moved.body,
        json!({"object": "test_clock", "now": "2025-01-31T23:00:00Z"})
    );
    assert_eq!(
        server.get("/v1/test_clock").await.ok().body["now"],
        "2025-01-31T23:00:00Z"
    );
    let created = server
        .post("/v1/customers", json!({"name": "Timed"}))
        .await
        .ok();
    assert_eq!(
        created.body["created_at"], "2025-01-31T23:00:00Z",
        "writes happen at the test clock's now"
    );
    let response = server
        .send_as(None, Method::GET, "/v1/test_clock", None)
        .await;
    assert_error(&response, 401, "missing_api_key", None);
}

#[tokio::test]
async fn openapi_document_lists_the_v1_paths() {
    let server = Server::start().await;
    let read = server.api_key("read").await;
    let document = server
        .send_as(Some(&read), Method::GET, "/v1/openapi.json", None)
        .await
        .ok()
        .body;
    let version = document["openapi"].as_str().unwrap();
    assert!(version.starts_with("3.1"), "OpenAPI 3.1, got {version}");
    assert!(document["info"]["title"].is_string());
    let paths = document["paths"].as_object().unwrap();
    for path in [
        "/healthz",
        "/v1/credit_systems",
        "/v1/credit_systems/{id}",
        "/v1/customers",
        "/v1/customers/{id}",
        "/v1/wallets",
        "/v1/wallets/{id}",
        "/v1/wallets/{id}/balance",
        "/v1/wallets/{id}/grants",
        "/v1/grants/{id}",
        "/v1/grants/{id}/void",
        "/v1/wallets/{id}/debits",
        "/v1/debits/{id}",
        "/v1/debits/batch",
        "/v1/wallets/{id}/holds",
        "/v1/holds/{id}",
        "/v1/holds/{id}/capture",
        "/v1/holds/{id}/release",
        "/v1/wallets/{id}/entries",
        "/v1/api_keys",
        "/v1/api_keys/{id}",
        "/v1/test_clock",
        "/v1/test_clock/advance",
    ] {
        assert!(paths.contains_key(path), "{path} in the OpenAPI document");
    }
    assert!(paths["/v1/wallets/{id}/debits"].get("post").is_some());
    assert!(paths["/v1/wallets/{id}/debits"].get("get").is_some());
    assert!(paths["/v1/customers/{id}"].get("patch").is_some());
    let schemes = &document["components"]["securitySchemes"];
    assert!(
        schemes.as_object().is_some_and(|s| !s.is_empty()),
        "bearer auth is documented"
    );
}

#[tokio::test]
async fn api_key_list_pages_newest_first() {
    // SPEC §3: every list is newest first with `limit` (1–100) and `starting_after`.
    let server = Server::start().await;
    let bootstrap = server.get("/v1/api_keys").await.ok().body["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut created = Vec::new();
    for scope in ["read", "usage", "admin"] {
        created.push(
            server
                .post("/v1/api_keys", json!({"name": scope, "scope": scope}))
                .await
                .ok()
                .id(),
        );
    }
    let ids = |page: &Value| -> Vec<String> {
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["id"].as_str().unwrap().to_string())
            .collect()
    };
    let page = server.get("/v1/api_keys?limit=2").await.ok().body;
    assert_eq!(ids(&page), vec![created[2].clone(), created[1].clone()]);
    assert_eq!(page["has_more"], true);
    let page = server
        .get(&format!(
            "/v1/api_keys?limit=2&starting_after={}",
            created[1]
        ))
        .await
        .ok()
        .body;
    assert_eq!(ids(&page), vec![created[0].clone(), bootstrap]);
    assert_eq!(page["has_more"], false);
    let response = server.get("/v1/api_keys?limit=0").await;
    assert_error(&response, 400, "parameter_invalid", Some("limit"));
}
