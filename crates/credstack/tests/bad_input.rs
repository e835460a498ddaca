//! Bad input over real HTTP (SPEC §3, §6): every malformed, mistyped,
//! unknown, missing, out-of-range or oversized request gets a 4xx in the
//! error shape `{"error": {"type", "code", "message", "param"?}}`, and each
//! is proven to change nothing by comparing the wallet, its ledger and the
//! lists around it before and after.

mod common;

use common::{Server, assert_error};
use reqwest::Method;
use serde_json::{Value, json};

const MISSING_WALLET: &str = "wal_01JZZZZZZZZZZZZZZZZZZZZZZZ";
const MISSING_GRANT: &str = "gr_01JZZZZZZZZZZZZZZZZZZZZZZZ";
const MISSING_DEBIT: &str = "deb_01JZZZZZZZZZZZZZZZZZZZZZZZ";
const MISSING_HOLD: &str = "hold_01JZZZZZZZZZZZZZZZZZZZZZZZ";
const MISSING_CUSTOMER: &str = "cus_01JZZZZZZZZZZZZZZZZZZZZZZZ";
const MISSING_SYSTEM: &str = "cs_01JZZZZZZZZZZZZZZZZZZZZZZZ";

enum Body {
    None,
    Json(Value),
    Raw(Vec<u8>, &'static str),
}

/// A wallet with a grant, a debit, an active hold, and the ids around it.
struct Fixture {
    server: Server,
    wallet: String,
    customer: String,
    system: String,
    grant: String,
    debit: String,
    hold: String,
}

impl Fixture {
    async fn new() -> Fixture {
        let server = Server::start().await;
        let system = server.credit_system("bad_input", 2).await;
        let customer = server.customer("Existing").await;
        let wallet = server
            .post("/v1/wallets", json!({"customer_id": customer, "credit_system_id": system, "overdraft_limit": "5"}))
            .await
            .ok()
            .id();
        let grant = server
            .grant_ok(&wallet, json!({"amount": "100", "purpose": "paid"}))
            .await;
        let debit = server.debit(&wallet, "10.25").await.ok().id();
        let hold = server.hold(&wallet, json!({"amount": "5"})).await.ok().id();
        Fixture {
            server,
            wallet,
            customer,
            system,
            grant,
            debit,
            hold,
        }
    }

    /// Sends a bad request and asserts the error and that nothing changed.
    #[allow(clippy::too_many_arguments)]
    async fn refuse(
        &self,
        method: Method,
        path: &str,
        body: Body,
        headers: &[(&str, &str)],
        status: u16,
        code: &str,
        param: Option<&str>,
    ) {
        let before = self.server.snapshot(&self.wallet).await;
        let response = match body {
            Body::None => self.server.send(method.clone(), path, None, headers).await,
            Body::Json(value) => {
                self.server
                    .send(method.clone(), path, Some(value), headers)
                    .await
            }
            Body::Raw(bytes, content_type) => {
                let mut all = vec![("Content-Type", content_type)];
                all.extend_from_slice(headers);
                self.server
                    .send_raw(method.clone(), path, bytes, &all)
                    .await
            }
        };
        assert!(
            response.status.is_client_error(),
            "{method} {path}: {} {}",
            response.status,
            response.body
        );
        assert_error(&response, status, code, param);
        let expected_type = match status {
            401 => "authentication_error",
            403 => "permission_error",
            402 => "balance_error",
            _ => "invalid_request_error",
        };
        assert_eq!(
            response.body["error"]["type"], expected_type,
            "{method} {path}: {}",
            response.body
        );
        let message = response.body["error"]["message"]
            .as_str()
            .unwrap()
            .to_lowercase();
        for leak in [
            "sqlite",
            "rusqlite",
            "panicked",
            "select ",
            "insert ",
            "/src/",
            "backtrace",
        ] {
            assert!(!message.contains(leak), "internals leak in {message}");
        }
        let after = self.server.snapshot(&self.wallet).await;
        assert_eq!(before, after, "{method} {path} changed something");
    }

    async fn post(&self, path: &str, body: Value, status: u16, code: &str, param: Option<&str>) {
        self.refuse(
            Method::POST,
            path,
            Body::Json(body),
            &[],
            status,
            code,
            param,
        )
        .await;
    }

    async fn get(&self, path: &str, status: u16, code: &str, param: Option<&str>) {
        self.refuse(Method::GET, path, Body::None, &[], status, code, param)
            .await;
    }

    fn debits(&self) -> String {
        format!("/v1/wallets/{}/debits", self.wallet)
    }

    fn grants(&self) -> String {
        format!("/v1/wallets/{}/grants", self.wallet)
    }

    fn holds(&self) -> String {
        format!("/v1/wallets/{}/holds", self.wallet)
    }

    fn capture(&self) -> String {
        format!("/v1/holds/{}/capture", self.hold)
    }
}

#[tokio::test]
async fn malformed_json_is_refused() {
    let f = Fixture::new().await;
    let raw = |text: &str| Body::Raw(text.as_bytes().to_vec(), "application/json");
    for text in ["not json", r#"{'amount': '1'}"#, "{,}", "{\"", "}"] {
        f.refuse(
            Method::POST,
            &f.debits(),
            raw(text),
            &[],
            400,
            "invalid_json",
            None,
        )
        .await;
        f.refuse(
            Method::POST,
            &f.grants(),
            raw(text),
            &[],
            400,
            "invalid_json",
            None,
        )
        .await;
        f.refuse(
            Method::POST,
            "/v1/customers",
            raw(text),
            &[],
            400,
            "invalid_json",
            None,
        )
        .await;
        f.refuse(
            Method::POST,
            "/v1/debits/batch",
            raw(text),
            &[],
            400,
            "invalid_json",
            None,
        )
        .await;
    }
    for text in [
        r#"{"amount": "1""#,
        r#"{"amount": "1",}"#,
        "{\"amount\": \"1\"} trailing",
        r#"{"amount": "1"}}"#,
        r#"{"amount" "1"}"#,
    ] {
        f.refuse(
            Method::POST,
            &f.debits(),
            raw(text),
            &[],
            400,
            "invalid_json",
            None,
        )
        .await;
    }
    // JSON that is not an object.
    for text in ["[]", "\"amount\"", "42", "null"] {
        f.refuse(
            Method::POST,
            &f.debits(),
            raw(text),
            &[],
            400,
            "parameter_invalid",
            None,
        )
        .await;
    }
    // Invalid UTF-8.
    let bytes = b"{\"amount\": \"\xff\xfe\"}".to_vec();
    f.refuse(
        Method::POST,
        &f.debits(),
        Body::Raw(bytes, "application/json"),
        &[],
        400,
        "invalid_json",
        None,
    )
    .await;
    // A JSON body sent as something else.
    let body = Body::Raw(br#"{"amount": "1"}"#.to_vec(), "text/plain");
    f.refuse(
        Method::POST,
        &f.debits(),
        body,
        &[],
        400,
        "content_type_invalid",
        None,
    )
    .await;
    // An empty body where fields are required.
    let body = Body::Raw(Vec::new(), "application/json");
    f.refuse(
        Method::POST,
        &f.debits(),
        body,
        &[],
        400,
        "parameter_missing",
        Some("amount"),
    )
    .await;
}

#[tokio::test]
async fn wrong_types_are_refused_naming_the_field() {
    let f = Fixture::new().await;
    for amount in [
        json!(5),
        json!(5.5),
        json!(null),
        json!(true),
        json!(["1"]),
        json!({"value": "1"}),
    ] {
        f.post(
            &f.debits(),
            json!({ "amount": amount }),
            400,
            "parameter_invalid",
            Some("amount"),
        )
        .await;
        f.post(
            &f.grants(),
            json!({"amount": amount, "purpose": "paid"}),
            400,
            "parameter_invalid",
            Some("amount"),
        )
        .await;
        f.post(
            &f.holds(),
            json!({ "amount": amount }),
            400,
            "parameter_invalid",
            Some("amount"),
        )
        .await;
        f.post(
            &f.capture(),
            json!({ "amount": amount }),
            400,
            "parameter_invalid",
            Some("amount"),
        )
        .await;
    }
    let grant = |extra: Value| {
        let mut body = json!({"amount": "1", "purpose": "paid"});
        for (key, value) in extra.as_object().unwrap() {
            body[key] = value.clone();
        }
        body
    };
    let cases = [
        (json!({"priority": "high"}), "priority"),
        (json!({"priority": -1}), "priority"),
        (json!({"priority": 256}), "priority"),
        (json!({"priority": 101}), "priority"),
        (json!({"purpose": 3}), "purpose"),
        (json!({"purpose": "gift"}), "purpose"),
        (json!({"effective_at": "tomorrow"}), "effective_at"),
        (json!({"effective_at": 1738317600}), "effective_at"),
        (json!({"expires_at": "2025-13-01T00:00:00Z"}), "expires_at"),
        (json!({"expires_at": "2025-01-31T10:00:00Z"}), "expires_at"),
        (
            json!({"effective_at": "2025-02-02T00:00:00Z", "expires_at": "2025-02-01T00:00:00Z"}),
            "expires_at",
        ),
        (json!({"recurrence": "monthly"}), "recurrence"),
        (
            json!({"recurrence": {"interval": "month", "interval_count": "2"}}),
            "recurrence.interval_count",
        ),
        (
            json!({"recurrence": {"interval": "month", "interval_count": 0}}),
            "recurrence.interval_count",
        ),
        (
            json!({"recurrence": {"interval": "fortnight"}}),
            "recurrence.interval",
        ),
        (json!({"rollover_max": 5}), "rollover_max"),
        (json!({"metadata": {"key": 1}}), "metadata.key"),
        (json!({"metadata": ["a"]}), "metadata"),
        (json!({"description": 7}), "description"),
    ];
    for (extra, param) in cases {
        f.post(
            &f.grants(),
            grant(extra),
            400,
            "parameter_invalid",
            Some(param),
        )
        .await;
    }
    let cases: [(&str, Value, &str); 14] = [
        ("/v1/customers", json!({"name": 5}), "name"),
        ("/v1/customers", json!({"name": ""}), "name"),
        ("/v1/customers", json!({"name": "   "}), "name"),
        ("/v1/customers", json!({"name": "x".repeat(201)}), "name"),
        ("/v1/customers", json!({"name": "a", "email": 1}), "email"),
        (
            "/v1/customers",
            json!({"name": "a", "metadata": {"k": ["v"]}}),
            "metadata.k",
        ),
        (
            "/v1/credit_systems",
            json!({"key": "k1", "name": "n", "unit": "u", "scale": 7}),
            "scale",
        ),
        (
            "/v1/credit_systems",
            json!({"key": "k1", "name": "n", "unit": "u", "scale": "2"}),
            "scale",
        ),
        (
            "/v1/credit_systems",
            json!({"key": "k1", "name": "n", "unit": "u", "scale": 300}),
            "scale",
        ),
        (
            "/v1/credit_systems",
            json!({"key": "Bad Key", "name": "n", "unit": "u"}),
            "key",
        ),
        (
            "/v1/api_keys",
            json!({"name": "k", "scope": "root"}),
            "scope",
        ),
        (
            "/v1/debits/batch",
            json!({"debits": {"wallet_id": "x"}}),
            "debits",
        ),
        ("/v1/test_clock/advance", json!({"to": "soon"}), "to"),
        (
            "/v1/test_clock/advance",
            json!({"to": "2025-01-01T00:00:00Z"}),
            "to",
        ),
    ];
    for (path, body, param) in cases {
        f.post(path, body, 400, "parameter_invalid", Some(param))
            .await;
    }
    let batch = json!({"debits": [{"wallet_id": f.wallet, "amount": 1, "idempotency_key": "x"}]});
    f.post(
        "/v1/debits/batch",
        batch,
        400,
        "parameter_invalid",
        Some("debits[0].amount"),
    )
    .await;
    let batch =
        json!({"debits": [{"wallet_id": "wallet-1", "amount": "1", "idempotency_key": "x"}]});
    f.post(
        "/v1/debits/batch",
        batch,
        400,
        "parameter_invalid",
        Some("debits[0].wallet_id"),
    )
    .await;
    let hold = json!({"amount": "1", "expires_in_seconds": "60"});
    f.post(
        &f.holds(),
        hold,
        400,
        "parameter_invalid",
        Some("expires_in_seconds"),
    )
    .await;
    let hold = json!({"amount": "1", "expires_in_seconds": 1.5});
    f.post(
        &f.holds(),
        hold,
        400,
        "parameter_invalid",
        Some("expires_in_seconds"),
    )
    .await;
    let wallet = format!("/v1/wallets/{}", f.wallet);
    for limit in [json!(5), json!("-1"), json!("1.001"), json!(null)] {
        let body = Body::Json(json!({ "overdraft_limit": limit }));
        f.refuse(
            Method::PATCH,
            &wallet,
            body,
            &[],
            400,
            "parameter_invalid",
            Some("overdraft_limit"),
        )
        .await;
    }
    let body = json!({"customer_id": 1, "credit_system_id": f.system});
    f.post(
        "/v1/wallets",
        body,
        400,
        "parameter_invalid",
        Some("customer_id"),
    )
    .await;
    let body = json!({"customer_id": f.customer, "credit_system_id": "cs_nope"});
    f.post(
        "/v1/wallets",
        body,
        400,
        "parameter_invalid",
        Some("credit_system_id"),
    )
    .await;
    let system = format!("/v1/credit_systems/{}", f.system);
    let body = Body::Json(json!({"status": "paused"}));
    f.refuse(
        Method::PATCH,
        &system,
        body,
        &[],
        400,
        "parameter_invalid",
        Some("status"),
    )
    .await;
    let customer = format!("/v1/customers/{}", f.customer);
    let body = Body::Json(json!({"name": ""}));
    f.refuse(
        Method::PATCH,
        &customer,
        body,
        &[],
        400,
        "parameter_invalid",
        Some("name"),
    )
    .await;
    let many: serde_json::Map<String, Value> =
        (0..51).map(|i| (format!("k{i}"), json!("v"))).collect();
    f.post(
        "/v1/customers",
        json!({"name": "a", "metadata": many}),
        400,
        "parameter_invalid",
        Some("metadata"),
    )
    .await;
}

#[tokio::test]
async fn unknown_fields_are_refused_naming_the_field() {
    let f = Fixture::new().await;
    let void = format!("/v1/grants/{}/void", f.grant);
    let release = format!("/v1/holds/{}/release", f.hold);
    let cases: Vec<(String, Value, &str)> = vec![
        (f.debits(), json!({"amount": "1", "amont": "2"}), "amont"),
        (
            f.grants(),
            json!({"amount": "1", "purpose": "paid", "expiry": "2026-01-01T00:00:00Z"}),
            "expiry",
        ),
        (
            f.grants(),
            json!({"amount": "1", "purpose": "paid", "recurrence": {"interval": "month", "every": 2}}),
            "recurrence.every",
        ),
        (f.holds(), json!({"amount": "1", "ttl": 5}), "ttl"),
        (f.capture(), json!({"amount": "1", "final": true}), "final"),
        (void, json!({"reason": "fraud"}), "reason"),
        (release, json!({"now": true}), "now"),
        (
            "/v1/customers".into(),
            json!({"name": "a", "phone": "1"}),
            "phone",
        ),
        (
            "/v1/wallets".into(),
            json!({"customer_id": f.customer, "credit_system_id": f.system, "balance": "9"}),
            "balance",
        ),
        (
            "/v1/credit_systems".into(),
            json!({"key": "k2", "name": "n", "unit": "u", "decimals": 2}),
            "decimals",
        ),
        (
            "/v1/api_keys".into(),
            json!({"name": "k", "scope": "read", "secret": "mine"}),
            "secret",
        ),
        (
            "/v1/debits/batch".into(),
            json!({"debits": [{"wallet_id": f.wallet, "amount": "1", "idempotency_key": "u", "force": true}]}),
            "debits[0].force",
        ),
        (
            "/v1/debits/batch".into(),
            json!({"debits": [], "atomic": true}),
            "atomic",
        ),
        (
            "/v1/test_clock/advance".into(),
            json!({"to": "2025-02-01T00:00:00Z", "by": "1d"}),
            "by",
        ),
    ];
    for (path, body, param) in cases {
        f.post(&path, body, 400, "parameter_unknown", Some(param))
            .await;
    }
    let wallet = format!("/v1/wallets/{}", f.wallet);
    let body = Body::Json(json!({"overdraft_limit": "1", "debt": "0"}));
    f.refuse(
        Method::PATCH,
        &wallet,
        body,
        &[],
        400,
        "parameter_unknown",
        Some("debt"),
    )
    .await;
    let customer = format!("/v1/customers/{}", f.customer);
    let body = Body::Json(json!({"nickname": "x"}));
    f.refuse(
        Method::PATCH,
        &customer,
        body,
        &[],
        400,
        "parameter_unknown",
        Some("nickname"),
    )
    .await;
    let system = format!("/v1/credit_systems/{}", f.system);
    let body = Body::Json(json!({"scale": 3}));
    f.refuse(
        Method::PATCH,
        &system,
        body,
        &[],
        400,
        "parameter_unknown",
        Some("scale"),
    )
    .await;
}

#[tokio::test]
async fn missing_fields_are_refused_naming_the_field() {
    let f = Fixture::new().await;
    let cases: Vec<(String, Value, &str)> = vec![
        (f.debits(), json!({}), "amount"),
        (f.debits(), json!({"description": "no amount"}), "amount"),
        (f.grants(), json!({"amount": "1"}), "purpose"),
        (f.grants(), json!({"purpose": "paid"}), "amount"),
        (
            f.grants(),
            json!({"amount": "1", "purpose": "paid", "recurrence": {}}),
            "recurrence.interval",
        ),
        (f.holds(), json!({}), "amount"),
        (f.capture(), json!({}), "amount"),
        ("/v1/customers".into(), json!({"email": "a@b.c"}), "name"),
        (
            "/v1/wallets".into(),
            json!({ "customer_id": f.customer }),
            "credit_system_id",
        ),
        (
            "/v1/wallets".into(),
            json!({ "credit_system_id": f.system }),
            "customer_id",
        ),
        (
            "/v1/credit_systems".into(),
            json!({"key": "k3", "unit": "u"}),
            "name",
        ),
        ("/v1/api_keys".into(), json!({"name": "k"}), "scope"),
        ("/v1/debits/batch".into(), json!({}), "debits"),
        (
            "/v1/debits/batch".into(),
            json!({"debits": [{"amount": "1", "idempotency_key": "m"}]}),
            "debits[0].wallet_id",
        ),
        ("/v1/test_clock/advance".into(), json!({}), "to"),
    ];
    for (path, body, param) in cases {
        f.post(&path, body, 400, "parameter_missing", Some(param))
            .await;
    }
    // Every field of a wallet's PATCH is optional: an empty one changes
    // nothing and answers the wallet as it is.
    let wallet = format!("/v1/wallets/{}", f.wallet);
    let before = f.server.get(&wallet).await.ok().body;
    let after = f.server.patch(&wallet, json!({})).await.ok().body;
    assert_eq!(after, before);
}

#[tokio::test]
async fn negative_over_precise_and_huge_amounts_are_refused() {
    let f = Fixture::new().await;
    let amounts = [
        "-1",
        "-0.01",
        "0",
        "0.001",
        "1.999",
        "1000000000001",
        "1000000000000.01",
        "1e2",
        "0x10",
        "١٢",
    ];
    for (index, amount) in amounts.into_iter().enumerate() {
        f.post(
            &f.debits(),
            json!({ "amount": amount }),
            400,
            "parameter_invalid",
            Some("amount"),
        )
        .await;
        f.post(
            &f.grants(),
            json!({"amount": amount, "purpose": "paid"}),
            400,
            "parameter_invalid",
            Some("amount"),
        )
        .await;
        f.post(
            &f.holds(),
            json!({ "amount": amount }),
            400,
            "parameter_invalid",
            Some("amount"),
        )
        .await;
        f.post(
            &f.capture(),
            json!({ "amount": amount }),
            400,
            "parameter_invalid",
            Some("amount"),
        )
        .await;
        let batch = json!({"debits": [{"wallet_id": f.wallet, "amount": amount, "idempotency_key": format!("neg-{index}")}]});
        // A batch answers per item; the refused item changes nothing.
        let before = f.server.snapshot(&f.wallet).await;
        let results = f.server.post("/v1/debits/batch", batch).await.ok();
        assert_eq!(results.body["data"][0]["status"], 400, "{}", results.body);
        assert_eq!(results.body["data"][0]["error"]["param"], "amount");
        assert_eq!(f.server.snapshot(&f.wallet).await, before);
    }
    let body = json!({"amount": "1", "purpose": "paid", "recurrence": {"interval": "month"}, "rollover_max": "-1"});
    f.post(
        &f.grants(),
        body,
        400,
        "parameter_invalid",
        Some("rollover_max"),
    )
    .await;
    let body = json!({"amount": "1", "purpose": "paid", "recurrence": {"interval": "month"}, "rollover_max": "0.001"});
    f.post(
        &f.grants(),
        body,
        400,
        "parameter_invalid",
        Some("rollover_max"),
    )
    .await;
    // The fixture's customer already has a wallet here; a fresh one isolates the amount check.
    let fresh = f.server.customer("Fresh").await;
    let body = json!({"customer_id": fresh, "credit_system_id": f.system, "overdraft_limit": "-5"});
    f.post(
        "/v1/wallets",
        body,
        400,
        "parameter_invalid",
        Some("overdraft_limit"),
    )
    .await;
}

#[tokio::test]
async fn unknown_and_malformed_ids_are_404() {
    let f = Fixture::new().await;
    let malformed_wallets = [
        MISSING_WALLET.to_string(),
        "wal_123".to_string(),
        "wallet".to_string(),
        f.customer.clone(),
        format!("{}x", f.wallet),
        f.wallet.replace("wal_", "wal-"),
        "wal_%00".to_string(),
    ];
    for wallet in &malformed_wallets {
        for suffix in ["", "/balance", "/entries", "/grants", "/debits"] {
            f.get(
                &format!("/v1/wallets/{wallet}{suffix}"),
                404,
                "resource_not_found",
                None,
            )
            .await;
        }
        for (suffix, body) in [
            ("/debits", json!({"amount": "1"})),
            ("/grants", json!({"amount": "1", "purpose": "paid"})),
            ("/holds", json!({"amount": "1"})),
        ] {
            f.post(
                &format!("/v1/wallets/{wallet}{suffix}"),
                body,
                404,
                "resource_not_found",
                None,
            )
            .await;
        }
        let body = Body::Json(json!({"overdraft_limit": "1"}));
        f.refuse(
            Method::PATCH,
            &format!("/v1/wallets/{wallet}"),
            body,
            &[],
            404,
            "resource_not_found",
            None,
        )
        .await;
    }
    for grant in [MISSING_GRANT, "gr_1", f.debit.as_str(), f.wallet.as_str()] {
        f.get(
            &format!("/v1/grants/{grant}"),
            404,
            "resource_not_found",
            None,
        )
        .await;
        f.post(
            &format!("/v1/grants/{grant}/void"),
            json!({}),
            404,
            "resource_not_found",
            None,
        )
        .await;
    }
    for debit in [MISSING_DEBIT, "deb_", f.grant.as_str()] {
        f.get(
            &format!("/v1/debits/{debit}"),
            404,
            "resource_not_found",
            None,
        )
        .await;
    }
    for hold in [MISSING_HOLD, "hold_x", f.debit.as_str()] {
        f.get(
            &format!("/v1/holds/{hold}"),
            404,
            "resource_not_found",
            None,
        )
        .await;
        f.post(
            &format!("/v1/holds/{hold}/capture"),
            json!({"amount": "1"}),
            404,
            "resource_not_found",
            None,
        )
        .await;
        f.post(
            &format!("/v1/holds/{hold}/release"),
            json!({}),
            404,
            "resource_not_found",
            None,
        )
        .await;
    }
    for customer in [MISSING_CUSTOMER, "cus_?", f.wallet.as_str()] {
        let path = format!("/v1/customers/{customer}");
        f.get(&path, 404, "resource_not_found", None).await;
        f.refuse(
            Method::PATCH,
            &path,
            Body::Json(json!({"name": "x"})),
            &[],
            404,
            "resource_not_found",
            None,
        )
        .await;
    }
    for system in [MISSING_SYSTEM, "cs_", f.customer.as_str()] {
        let path = format!("/v1/credit_systems/{system}");
        f.get(&path, 404, "resource_not_found", None).await;
        f.refuse(
            Method::PATCH,
            &path,
            Body::Json(json!({"name": "x"})),
            &[],
            404,
            "resource_not_found",
            None,
        )
        .await;
    }
    f.refuse(
        Method::DELETE,
        "/v1/api_keys/key_01JZZZZZZZZZZZZZZZZZZZZZZZ",
        Body::None,
        &[],
        404,
        "resource_not_found",
        None,
    )
    .await;
    f.refuse(
        Method::DELETE,
        "/v1/api_keys/nope",
        Body::None,
        &[],
        404,
        "resource_not_found",
        None,
    )
    .await;
    // Unknown ids inside a body name the field.
    for (body, param) in [
        (
            json!({"customer_id": MISSING_CUSTOMER, "credit_system_id": f.system}),
            "customer_id",
        ),
        (
            json!({"customer_id": f.customer, "credit_system_id": MISSING_SYSTEM}),
            "credit_system_id",
        ),
    ] {
        let before = f.server.snapshot(&f.wallet).await;
        let response = f.server.post("/v1/wallets", body).await;
        assert!(
            [400, 404].contains(&response.status.as_u16()),
            "{}",
            response.body
        );
        assert_eq!(response.error_param().as_deref(), Some(param));
        assert_eq!(f.server.snapshot(&f.wallet).await, before);
    }
    // Unknown routes and methods answer in the error shape too.
    f.get("/v1/nothing_here", 404, "route_not_found", None)
        .await;
    f.get("/v1/wallets/x/y/z", 404, "route_not_found", None)
        .await;
    let path = format!("/v1/wallets/{}", f.wallet);
    f.refuse(
        Method::DELETE,
        &path,
        Body::None,
        &[],
        405,
        "method_not_allowed",
        None,
    )
    .await;
    f.refuse(
        Method::PUT,
        &f.debits(),
        Body::Json(json!({"amount": "1"})),
        &[],
        405,
        "method_not_allowed",
        None,
    )
    .await;
}

#[tokio::test]
async fn body_over_one_mebibyte_is_413() {
    let f = Fixture::new().await;
    let description = "x".repeat(1024 * 1024 + 1);
    let body = serde_json::to_vec(&json!({"amount": "1", "description": description})).unwrap();
    f.refuse(
        Method::POST,
        &f.debits(),
        Body::Raw(body.clone(), "application/json"),
        &[],
        413,
        "body_too_large",
        None,
    )
    .await;
    f.refuse(
        Method::POST,
        "/v1/customers",
        Body::Raw(body, "application/json"),
        &[],
        413,
        "body_too_large",
        None,
    )
    .await;
    let items: Vec<Value> = (0..1000)
        .map(|i| json!({"wallet_id": f.wallet, "amount": "0.01", "idempotency_key": format!("{i:0>250}"), "description": "d".repeat(900)}))
        .collect();
    let body = serde_json::to_vec(&json!({ "debits": items })).unwrap();
    assert!(body.len() > 1024 * 1024);
    f.refuse(
        Method::POST,
        "/v1/debits/batch",
        Body::Raw(body, "application/json"),
        &[],
        413,
        "body_too_large",
        None,
    )
    .await;
    // Just under the limit is read (and refused for its content, not its size).
    let description = "x".repeat(1024 * 1024 - 100);
    let body = serde_json::to_vec(&json!({"amount": "1", "description": description})).unwrap();
    f.refuse(
        Method::POST,
        &f.debits(),
        Body::Raw(body, "application/json"),
        &[],
        400,
        "parameter_invalid",
        Some("description"),
    )
    .await;
}

#[tokio::test]
async fn bad_list_parameters_are_400() {
    let f = Fixture::new().await;
    let lists = [
        "/v1/customers".to_string(),
        "/v1/wallets".to_string(),
        "/v1/credit_systems".to_string(),
        f.grants(),
        f.debits(),
        format!("/v1/wallets/{}/entries", f.wallet),
    ];
    for list in &lists {
        for limit in [
            "0",
            "101",
            "-1",
            "abc",
            "1.5",
            "",
            "99999999999999999999999",
        ] {
            f.get(
                &format!("{list}?limit={limit}"),
                400,
                "parameter_invalid",
                Some("limit"),
            )
            .await;
        }
        for after in ["nope", "wal_", MISSING_HOLD] {
            f.get(
                &format!("{list}?starting_after={after}"),
                400,
                "parameter_invalid",
                Some("starting_after"),
            )
            .await;
        }
        // The bounds themselves are fine.
        f.server.get(&format!("{list}?limit=1")).await.ok();
        f.server.get(&format!("{list}?limit=100")).await.ok();
    }
    let entries = format!("/v1/wallets/{}/entries?order=sideways", f.wallet);
    f.get(&entries, 400, "parameter_invalid", Some("order"))
        .await;
    f.get(
        &format!("{}?status=gone", f.grants()),
        400,
        "parameter_invalid",
        Some("status"),
    )
    .await;
    f.get(
        "/v1/wallets?customer_id=nope",
        400,
        "parameter_invalid",
        Some("customer_id"),
    )
    .await;
    f.get(
        "/v1/wallets?credit_system_id=cus_x",
        400,
        "parameter_invalid",
        Some("credit_system_id"),
    )
    .await;
    f.get(
        &format!("/v1/wallets/{}/balance?at=2025-13-01", f.wallet),
        400,
        "parameter_invalid",
        Some("at"),
    )
    .await;
    f.get(
        &format!("/v1/wallets/{}/balance?at=2099-01-01T00:00:00Z", f.wallet),
        400,
        "parameter_invalid",
        Some("at"),
    )
    .await;
}

#[tokio::test]
async fn bad_idempotency_keys_are_400_and_apply_nothing() {
    let f = Fixture::new().await;
    let long = "k".repeat(256);
    for key in [long.as_str(), "has space", "", "tab\tkey"] {
        let headers = [("Idempotency-Key", key)];
        let body = Body::Json(json!({"amount": "1"}));
        f.refuse(
            Method::POST,
            &f.debits(),
            body,
            &headers,
            400,
            "parameter_invalid",
            Some("Idempotency-Key"),
        )
        .await;
        let body = Body::Json(json!({"amount": "1", "purpose": "paid"}));
        f.refuse(
            Method::POST,
            &f.grants(),
            body,
            &headers,
            400,
            "parameter_invalid",
            Some("Idempotency-Key"),
        )
        .await;
        let body = Body::Json(json!({"name": "Keyed"}));
        f.refuse(
            Method::POST,
            "/v1/customers",
            body,
            &headers,
            400,
            "parameter_invalid",
            Some("Idempotency-Key"),
        )
        .await;
    }
    let batch =
        json!({"debits": [{"wallet_id": f.wallet, "amount": "1", "idempotency_key": long}]});
    f.post(
        "/v1/debits/batch",
        batch,
        400,
        "parameter_invalid",
        Some("debits[0].idempotency_key"),
    )
    .await;
    let batch = json!({"debits": [
        {"wallet_id": f.wallet, "amount": "1", "idempotency_key": "fine"},
        {"wallet_id": f.wallet, "amount": "1", "idempotency_key": "not fine"},
    ]});
    f.post(
        "/v1/debits/batch",
        batch,
        400,
        "parameter_invalid",
        Some("debits[1].idempotency_key"),
    )
    .await;
    // 255 visible characters is the longest accepted key.
    let longest = "k".repeat(255);
    let first = f
        .server
        .post_key(&f.debits(), json!({"amount": "1"}), &longest)
        .await
        .ok();
    let again = f
        .server
        .post_key(&f.debits(), json!({"amount": "1"}), &longest)
        .await
        .ok();
    assert_eq!(again.headers.get("idempotent-replayed").unwrap(), "true");
    assert_eq!(first.body, again.body);
}

#[tokio::test]
async fn refusals_do_not_disturb_later_requests() {
    // After every kind of refusal the wallet still works and its ledger is whole.
    let f = Fixture::new().await;
    f.post(
        &f.debits(),
        json!({"amount": "1000"}),
        402,
        "insufficient_balance",
        None,
    )
    .await;
    f.post(
        &f.holds(),
        json!({"amount": "1000"}),
        402,
        "insufficient_balance",
        None,
    )
    .await;
    f.post(
        &f.capture(),
        json!({"amount": "1000"}),
        402,
        "insufficient_balance",
        None,
    )
    .await;
    let debit = f.server.debit(&f.wallet, "1").await.ok();
    assert_eq!(debit.str("balance_after"), "88.75");
    let capture = f
        .server
        .post(&f.capture(), json!({"amount": "5"}))
        .await
        .ok();
    assert_eq!(capture.body["status"], "captured");
    f.post(
        &f.capture(),
        json!({"amount": "5"}),
        409,
        "hold_not_active",
        None,
    )
    .await;
    f.server.check_invariants(&f.wallet).await;
    let entries = f.server.entries(&f.wallet).await;
    assert_eq!(entries.len(), 4);
}

#[tokio::test]
async fn control_characters_in_text_and_searches_are_refused() {
    let f = Fixture::new().await;
    for text in ["a\u{0}b", "bell\u{7}", "escape\u{1b}[0m"] {
        f.post(
            &f.debits(),
            json!({"amount": "1", "description": text}),
            400,
            "parameter_invalid",
            Some("description"),
        )
        .await;
        f.post(
            "/v1/customers",
            json!({"name": text}),
            400,
            "parameter_invalid",
            Some("name"),
        )
        .await;
        let q: String = serde_urlencoded::to_string([("q", text)]).unwrap();
        f.get(
            &format!("/v1/customers?{q}"),
            400,
            "parameter_invalid",
            Some("q"),
        )
        .await;
    }
    // Tabs and line breaks are text, not control.
    f.server
        .post(
            &f.debits(),
            json!({"amount": "0.01", "description": "line one\nline two\tand a tab"}),
        )
        .await
        .ok();
}
