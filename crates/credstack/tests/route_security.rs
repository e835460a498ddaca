//! Every `/v1` route, read from the OpenAPI document, against every kind
//! of caller (SPEC §3, §6: "nothing is reachable without a key of the right
//! scope"). The routes come from the document the server serves, and the
//! document is checked against the `.route(...)` calls in the source, so a
//! route added without documenting it, or documented without a row in the
//! scope matrix below, fails this suite. Every refused request is checked
//! to have changed nothing.

mod common;

use common::Server;
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeSet;

/// The scope each route needs, route by route: the whole matrix. A route in
/// the document without a row here, or a row for a route the document does
/// not have, fails `the_matrix_covers_every_documented_route`.
const MATRIX: &[(&str, &str, Scope)] = &[
    ("GET", "/v1/credit_systems", Scope::Read),
    ("POST", "/v1/credit_systems", Scope::Admin),
    ("GET", "/v1/credit_systems/{id}", Scope::Read),
    ("PATCH", "/v1/credit_systems/{id}", Scope::Admin),
    ("GET", "/v1/customers", Scope::Read),
    ("POST", "/v1/customers", Scope::Admin),
    ("GET", "/v1/customers/{id}", Scope::Read),
    ("PATCH", "/v1/customers/{id}", Scope::Admin),
    ("GET", "/v1/wallets", Scope::Read),
    ("POST", "/v1/wallets", Scope::Admin),
    ("GET", "/v1/wallets/{id}", Scope::Read),
    ("PATCH", "/v1/wallets/{id}", Scope::Admin),
    ("GET", "/v1/wallets/{id}/balance", Scope::Read),
    ("GET", "/v1/wallets/{id}/grants", Scope::Read),
    ("POST", "/v1/wallets/{id}/grants", Scope::Admin),
    ("GET", "/v1/grants/{id}", Scope::Read),
    ("POST", "/v1/grants/{id}/void", Scope::Admin),
    ("GET", "/v1/wallets/{id}/debits", Scope::Read),
    ("POST", "/v1/wallets/{id}/debits", Scope::Usage),
    ("POST", "/v1/debits/batch", Scope::Usage),
    ("GET", "/v1/debits/{id}", Scope::Read),
    ("POST", "/v1/wallets/{id}/holds", Scope::Usage),
    ("GET", "/v1/holds/{id}", Scope::Read),
    ("POST", "/v1/holds/{id}/capture", Scope::Usage),
    ("POST", "/v1/holds/{id}/release", Scope::Usage),
    ("GET", "/v1/wallets/{id}/entries", Scope::Read),
    ("GET", "/v1/promotional_credits", Scope::Read),
    ("POST", "/v1/promotional_credits", Scope::Admin),
    ("GET", "/v1/promotional_credits/{id}", Scope::Read),
    ("PATCH", "/v1/promotional_credits/{id}", Scope::Admin),
    ("DELETE", "/v1/promotional_credits/{id}", Scope::Admin),
    ("POST", "/v1/promotional_credits/{id}/grant", Scope::Admin),
    ("POST", "/v1/promotional_credits/{id}/revoke", Scope::Admin),
    ("GET", "/v1/promotional_credits/{id}/customers", Scope::Read),
    ("GET", "/v1/api_keys", Scope::Admin),
    ("POST", "/v1/api_keys", Scope::Admin),
    ("DELETE", "/v1/api_keys/{id}", Scope::Admin),
    ("GET", "/v1/events", Scope::Read),
    ("GET", "/v1/events/{id}", Scope::Read),
    ("GET", "/v1/webhook_endpoints", Scope::Admin),
    ("POST", "/v1/webhook_endpoints", Scope::Admin),
    ("GET", "/v1/webhook_endpoints/{id}", Scope::Admin),
    ("PATCH", "/v1/webhook_endpoints/{id}", Scope::Admin),
    ("DELETE", "/v1/webhook_endpoints/{id}", Scope::Admin),
    ("GET", "/v1/webhook_endpoints/{id}/deliveries", Scope::Admin),
    ("GET", "/v1/webhook_deliveries/{id}", Scope::Admin),
    (
        "POST",
        "/v1/webhook_deliveries/{id}/redeliver",
        Scope::Admin,
    ),
    ("GET", "/v1/test_clock", Scope::Read),
    ("POST", "/v1/test_clock/advance", Scope::Admin),
    ("GET", "/v1/metrics", Scope::Read),
    // Served but not a path of the document it serves.
    ("GET", "/v1/openapi.json", Scope::Read),
];

/// Served `/v1` routes the OpenAPI document does not list, and why.
const UNDOCUMENTED: &[(&str, &str)] = &[
    // The document itself.
    ("GET", "/v1/openapi.json"),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Scope {
    Read,
    Usage,
    Admin,
}

impl Scope {
    fn name(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Usage => "usage",
            Scope::Admin => "admin",
        }
    }
}

type Route = (String, String);

/// `(METHOD, path)` of every `/v1` operation in the OpenAPI document.
fn documented(document: &Value) -> BTreeSet<Route> {
    let mut routes = BTreeSet::new();
    for (path, operations) in document["paths"].as_object().expect("paths") {
        if !path.starts_with("/v1") {
            continue;
        }
        for method in operations.as_object().expect("operations").keys() {
            if ["get", "post", "patch", "put", "delete"].contains(&method.as_str()) {
                routes.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    routes
}

/// `(METHOD, path)` of every `.route("/v1…", …)` call in the crate's source:
/// what the router really serves.
fn served() -> BTreeSet<Route> {
    let mut routes = BTreeSet::new();
    let source_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for file in source_files(&source_dir) {
        let text = std::fs::read_to_string(&file).expect("source file");
        for call in route_calls(&text) {
            let Some(path) = call.split('"').nth(1) else {
                continue;
            };
            if !path.starts_with("/v1") {
                continue;
            }
            let methods = method_calls(&call);
            assert!(!methods.is_empty(), "no method found in .route({call})");
            for method in methods {
                routes.insert((method, path.to_string()));
            }
        }
    }
    routes
}

fn source_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("source dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files.extend(source_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// The argument text of each `.route(` call, up to its closing parenthesis.
fn route_calls(text: &str) -> Vec<String> {
    let mut calls = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(".route(") {
        let after = &rest[start + ".route(".len()..];
        let mut depth = 1;
        let mut end = after.len();
        for (i, c) in after.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i;
                        break;
                    }
                }
                _ => {}
            }
        }
        calls.push(after[..end].to_string());
        rest = &after[end..];
    }
    calls
}

/// The HTTP methods named in a route's method router: `get(`, `post(`, …
/// as whole words.
fn method_calls(call: &str) -> Vec<String> {
    let mut methods = Vec::new();
    for method in ["get", "post", "patch", "put", "delete"] {
        let pattern = format!("{method}(");
        for (at, _) in call.match_indices(&pattern) {
            let before = call[..at].chars().next_back();
            if before.is_none_or(|c| !(c.is_alphanumeric() || c == '_')) {
                methods.push(method.to_uppercase());
            }
        }
    }
    methods
}

fn matrix() -> BTreeSet<Route> {
    MATRIX
        .iter()
        .map(|(m, p, _)| (m.to_string(), p.to_string()))
        .collect()
}

async fn document(server: &Server) -> Value {
    server.get("/v1/openapi.json").await.ok().body
}

#[tokio::test]
async fn the_matrix_covers_every_documented_route() {
    let server = Server::start().await;
    let documented = documented(&document(&server).await);
    let served = served();
    let undocumented: BTreeSet<Route> = UNDOCUMENTED
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert!(
        documented.len() >= 39,
        "the document lists the API: {documented:?}"
    );
    let missing_from_document: Vec<&Route> = served
        .difference(&documented)
        .filter(|r| !undocumented.contains(r))
        .collect();
    assert!(
        missing_from_document.is_empty(),
        "served but not in the OpenAPI document: {missing_from_document:?}"
    );
    let not_served: Vec<&Route> = documented.difference(&served).collect();
    assert!(
        not_served.is_empty(),
        "in the document but not routed: {not_served:?}"
    );
    let all: BTreeSet<Route> = documented.union(&undocumented).cloned().collect();
    assert_eq!(
        matrix(),
        all,
        "the scope matrix has one row per served /v1 route"
    );
    println!(
        "routes: {} documented + {} undocumented = {} in the matrix",
        documented.len(),
        undocumented.len(),
        MATRIX.len()
    );
}

#[test]
fn the_source_scan_finds_routes() {
    let calls = route_calls(
        r#"x.route("/v1/a/{id}", get(get_a).patch(patch_a)).route("/v1/b", axum::routing::delete(delete_b)).route_layer(y)"#,
    );
    assert_eq!(calls.len(), 2);
    assert_eq!(method_calls(&calls[0]), vec!["GET", "PATCH"]);
    assert_eq!(method_calls(&calls[1]), vec!["DELETE"]);
}

/// Objects for every `{id}` the routes take; writes that consume their
/// object (void, release, delete) get one of their own.
struct Fixtures {
    system: String,
    customer: String,
    walletless_customer: String,
    wallet: String,
    grant: String,
    grant_to_void: String,
    debit: String,
    hold: String,
    hold_to_release: String,
    promotion: String,
    promotion_to_delete: String,
    key_to_delete: String,
    event: String,
    endpoint: String,
    endpoint_to_delete: String,
    delivery: String,
    tag: String,
}

async fn fixtures(server: &Server, tag: &str) -> Fixtures {
    let system = server.credit_system(&format!("routes_{tag}"), 0).await;
    let customer = server.customer("Routed").await;
    let walletless_customer = server.customer("Walletless").await;
    let wallet = server.wallet_of(&customer, &system).await;
    let grant = server
        .grant_ok(&wallet, json!({"amount": "1000", "purpose": "paid"}))
        .await;
    let grant_to_void = server
        .grant_ok(&wallet, json!({"amount": "10", "purpose": "bundled"}))
        .await;
    let debit = server.debit(&wallet, "1").await.ok().id();
    let hold = server.hold(&wallet, json!({"amount": "5"})).await.ok().id();
    let hold_to_release = server.hold(&wallet, json!({"amount": "5"})).await.ok().id();
    let promotion_body = json!({"name": "Promo", "credit_system_id": system, "quantity": "3"});
    let promotion = server
        .post("/v1/promotional_credits", promotion_body.clone())
        .await
        .ok()
        .id();
    let promotion_to_delete = server
        .post("/v1/promotional_credits", promotion_body)
        .await
        .ok()
        .id();
    let key_to_delete = server
        .post("/v1/api_keys", json!({"name": "doomed", "scope": "read"}))
        .await
        .ok()
        .id();
    let endpoint_body = json!({"url": "https://hooks.example/in", "event_types": ["*"]});
    let endpoint = server
        .post("/v1/webhook_endpoints", endpoint_body.clone())
        .await
        .ok()
        .id();
    let endpoint_to_delete = server
        .post("/v1/webhook_endpoints", endpoint_body)
        .await
        .ok()
        .id();
    let event = server
        .get(&format!("/v1/events?wallet_id={wallet}&limit=1"))
        .await
        .ok()
        .body["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let delivery = delivered(server, &endpoint).await;
    Fixtures {
        system,
        customer,
        walletless_customer,
        wallet,
        grant,
        grant_to_void,
        debit,
        hold,
        hold_to_release,
        promotion,
        promotion_to_delete,
        key_to_delete,
        event,
        endpoint,
        endpoint_to_delete,
        delivery,
        tag: tag.to_string(),
    }
}

/// A delivery to this endpoint that has ended, so it can be redelivered:
/// the delivery loop's steps (it runs only in `serve`), driven by hand
/// through the ledger, with an attempt that succeeded.
async fn delivered(server: &Server, endpoint: &str) -> String {
    use credstack::engine::{Outcome, Request};
    use credstack::records::{Attempt, AttemptEnd};
    let ledger = server.ledger.as_ref().expect("an in-process server");
    ledger
        .execute(Request::DispatchEvents { limit: 1000 })
        .await
        .unwrap();
    let Outcome::Claimed(jobs) = ledger
        .execute(Request::ClaimDeliveries {
            limit: 1000,
            lease: chrono::Duration::seconds(60),
        })
        .await
        .unwrap()
    else {
        panic!("claimed deliveries")
    };
    let ends = jobs
        .iter()
        .map(|job| {
            let attempt = Attempt {
                delivery_id: job.delivery.id,
                number: job.delivery.attempts,
                at: chrono::Utc::now(),
                status_code: Some(200),
                error: None,
                duration_ms: 1,
            };
            (attempt, AttemptEnd::Succeeded)
        })
        .collect();
    ledger.execute(Request::FinishAttempts(ends)).await.unwrap();
    let log = server
        .get(&format!(
            "/v1/webhook_endpoints/{endpoint}/deliveries?status=succeeded&limit=1"
        ))
        .await
        .ok()
        .body;
    log["data"][0]["id"]
        .as_str()
        .expect("a delivery")
        .to_string()
}

/// The concrete path of a route for these fixtures.
fn path_of(method: &str, template: &str, f: &Fixtures) -> String {
    let id = match (method, template) {
        (_, t) if !t.contains("{id}") => return t.to_string(),
        (_, "/v1/grants/{id}/void") => &f.grant_to_void,
        (_, "/v1/holds/{id}/release") => &f.hold_to_release,
        ("DELETE", "/v1/promotional_credits/{id}") => &f.promotion_to_delete,
        (_, t) if t.starts_with("/v1/credit_systems/") => &f.system,
        (_, t) if t.starts_with("/v1/customers/") => &f.customer,
        (_, t) if t.starts_with("/v1/wallets/") => &f.wallet,
        (_, t) if t.starts_with("/v1/grants/") => &f.grant,
        (_, t) if t.starts_with("/v1/debits/") => &f.debit,
        (_, t) if t.starts_with("/v1/holds/") => &f.hold,
        (_, t) if t.starts_with("/v1/promotional_credits/") => &f.promotion,
        (_, t) if t.starts_with("/v1/api_keys/") => &f.key_to_delete,
        ("DELETE", "/v1/webhook_endpoints/{id}") => &f.endpoint_to_delete,
        (_, t) if t.starts_with("/v1/webhook_endpoints/") => &f.endpoint,
        (_, t) if t.starts_with("/v1/webhook_deliveries/") => &f.delivery,
        (_, t) if t.starts_with("/v1/events/") => &f.event,
        _ => panic!("{method} {template}: a new kind of id; add it to path_of"),
    };
    template.replace("{id}", id)
}

/// A valid body for each write, so a request that got through would change
/// something: a refusal that changed nothing proves the refusal.
fn body_of(method: &str, template: &str, f: &Fixtures) -> Option<Value> {
    let tag = &f.tag;
    let body = match (method, template) {
        ("GET" | "DELETE", _) => return None,
        ("POST", "/v1/credit_systems") => {
            json!({"key": format!("made_{tag}"), "name": "Made", "unit": "u", "scale": 0})
        }
        ("PATCH", "/v1/credit_systems/{id}") => json!({"name": format!("Renamed {tag}")}),
        ("POST", "/v1/customers") => json!({"name": format!("Made {tag}")}),
        ("PATCH", "/v1/customers/{id}") => json!({"name": format!("Renamed {tag}")}),
        ("POST", "/v1/wallets") => {
            json!({"customer_id": f.walletless_customer, "credit_system_id": f.system})
        }
        ("PATCH", "/v1/wallets/{id}") => json!({"overdraft_limit": "50"}),
        ("POST", "/v1/wallets/{id}/grants") => json!({"amount": "7", "purpose": "paid"}),
        ("POST", "/v1/grants/{id}/void") => json!({}),
        ("POST", "/v1/wallets/{id}/debits") => json!({"amount": "2"}),
        ("POST", "/v1/debits/batch") => json!({"debits": [
            {"wallet_id": f.wallet, "amount": "3", "idempotency_key": format!("batch-{tag}")}
        ]}),
        ("POST", "/v1/wallets/{id}/holds") => json!({"amount": "4"}),
        ("POST", "/v1/holds/{id}/capture") => json!({"amount": "1"}),
        ("POST", "/v1/holds/{id}/release") => json!({}),
        ("POST", "/v1/promotional_credits") => {
            json!({"name": "Made", "credit_system_id": f.system, "quantity": "1"})
        }
        ("PATCH", "/v1/promotional_credits/{id}") => json!({"name": format!("Renamed {tag}")}),
        ("POST", "/v1/promotional_credits/{id}/grant") => json!({"customer_ids": [f.customer]}),
        ("POST", "/v1/promotional_credits/{id}/revoke") => {
            json!({"customer_ids": [f.customer]})
        }
        ("POST", "/v1/api_keys") => json!({"name": format!("made {tag}"), "scope": "admin"}),
        ("POST", "/v1/webhook_endpoints") => {
            json!({"url": format!("https://hooks.example/{tag}"), "event_types": ["*"]})
        }
        ("PATCH", "/v1/webhook_endpoints/{id}") => json!({"description": format!("Renamed {tag}")}),
        ("POST", "/v1/webhook_deliveries/{id}/redeliver") => json!({}),
        ("POST", "/v1/test_clock/advance") => json!({"to": "2025-02-01T00:00:00Z"}),
        _ => panic!("{method} {template}: add a valid body to body_of"),
    };
    Some(body)
}

/// Everything a request could change, read with the admin key.
/// `method template` with the fixtures' ids and body, as `key`; the path
/// sent and the answer.
async fn call(
    server: &Server,
    key: &str,
    method: &str,
    template: &str,
    f: &Fixtures,
) -> (String, common::Response) {
    let path = path_of(method, template, f);
    let response = server
        .send_as(
            Some(key),
            Method::from_bytes(method.as_bytes()).unwrap(),
            &path,
            body_of(method, template, f),
        )
        .await;
    (path, response)
}

async fn state(server: &Server, f: &Fixtures) -> Value {
    json!({
        "wallet": server.snapshot(&f.wallet).await,
        "promotions": server.get("/v1/promotional_credits?limit=100").await.ok().body,
        "promotion_customers": server
            .get(&format!("/v1/promotional_credits/{}/customers", f.promotion))
            .await.ok().body,
        "holds": [
            server.get(&format!("/v1/holds/{}", f.hold)).await.ok().body,
            server.get(&format!("/v1/holds/{}", f.hold_to_release)).await.ok().body,
        ],
        "clock": server.get("/v1/test_clock").await.ok().body,
        "endpoints": server.get("/v1/webhook_endpoints?limit=100").await.ok().body,
        "delivery": server
            .get(&format!("/v1/webhook_deliveries/{}", f.delivery))
            .await.ok().body,
    })
}

#[tokio::test]
async fn every_route_refuses_a_missing_or_wrong_key() {
    let server = Server::start().await;
    let routes = documented(&document(&server).await);
    let f = fixtures(&server, "anon").await;
    let before = state(&server, &f).await;
    let wrong = format!("csk_{}", "0".repeat(64));
    let mut checked = 0;
    for (method, template) in routes
        .iter()
        .chain(&[("GET".to_string(), "/v1/openapi.json".to_string())])
    {
        let path = path_of(method, template, &f);
        let body = body_of(method, template, &f);
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let callers: [(Option<&str>, &str); 4] = [
            (None, "missing_api_key"),
            (Some(""), "missing_api_key"),
            (Some(&wrong), "invalid_api_key"),
            // The admin key less its last character.
            (Some(&server.key[..server.key.len() - 1]), "invalid_api_key"),
        ];
        for (key, code) in callers {
            let response = server
                .send_as(key, method.clone(), &path, body.clone())
                .await;
            assert_eq!(
                (
                    response.status.as_u16(),
                    response.body["error"]["code"].as_str()
                ),
                (401, Some(code)),
                "{method} {path} with key {key:?}: {}",
                response.body
            );
            assert_eq!(response.body["error"]["type"], "authentication_error");
            checked += 1;
        }
        // Another scheme than Bearer.
        let mut request = server
            .client
            .request(method.clone(), format!("{}{}", server.base, path))
            .header("Authorization", format!("Basic {}", server.key));
        if let Some(body) = &body {
            request = request.json(body);
        }
        assert_eq!(
            request.send().await.unwrap().status().as_u16(),
            401,
            "{method} {path} with Basic"
        );
        checked += 1;
    }
    assert_eq!(
        state(&server, &f).await,
        before,
        "no unauthenticated request changed anything"
    );
    println!(
        "401 checks: {checked} ({} routes x 5 callers)",
        routes.len() + 1
    );
}

#[tokio::test]
async fn the_scope_matrix_holds_route_by_route() {
    let server = Server::start().await;
    let mut refused = 0;
    let mut allowed = 0;
    for scope in [Scope::Read, Scope::Usage, Scope::Admin] {
        let key = server.api_key(scope.name()).await;
        let f = fixtures(&server, scope.name()).await;
        // Refusals first, all of them, then the state must be as it was.
        let before = state(&server, &f).await;
        for (method, template, needed) in MATRIX.iter().filter(|(_, _, n)| *n > scope) {
            let (path, response) = call(&server, &key, method, template, &f).await;
            assert_eq!(
                (
                    response.status.as_u16(),
                    response.body["error"]["code"].as_str()
                ),
                (403, Some("insufficient_scope")),
                "{} key, {method} {path}: {}",
                scope.name(),
                response.body
            );
            assert_eq!(response.body["error"]["type"], "permission_error");
            assert!(
                response.body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains(needed.name()),
                "the refusal names the scope needed: {}",
                response.body
            );
            refused += 1;
        }
        assert_eq!(
            state(&server, &f).await,
            before,
            "the {} key's refused requests changed nothing",
            scope.name()
        );
        // Then every route the key may use answers as it would for an admin.
        for (method, template, _) in MATRIX.iter().filter(|(_, _, n)| *n <= scope) {
            let (path, response) = call(&server, &key, method, template, &f).await;
            assert_eq!(
                response.status.as_u16(),
                200,
                "{} key, {method} {path}: {}",
                scope.name(),
                response.body
            );
            allowed += 1;
        }
    }
    println!("scope matrix: {refused} refusals (403) and {allowed} allowed calls, 3 scopes");
    assert_eq!(refused + allowed, 3 * MATRIX.len());
}
