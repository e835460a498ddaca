//! The end-to-end harness: a real server on a real store, over real HTTP.
//! Each test gets its own store in a temporary directory, a server bound to
//! port 0 on loopback, and a simulated clock it moves through the API.
#![allow(dead_code)]

pub mod browser;
pub mod pg;
pub mod process;
pub mod receiver;

use credstack::clock::Clock;
use credstack::ledger::{Backend, Config, Ledger};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

pub const ADMIN_KEY: &str = "csk_test_admin_key";
pub const START: &str = "2025-01-31T10:00:00Z";

pub struct Server {
    pub base: String,
    pub client: reqwest::Client,
    pub key: String,
    _data: tempfile::TempDir,
    /// The PostgreSQL database, when the suite runs on PostgreSQL.
    pub db: Option<pg::TestDb>,
    /// The ledger behind an in-process server, for tests that drive its
    /// Rust API directly.
    pub ledger: Option<Ledger>,
}

/// Whether this test target runs its servers on PostgreSQL: the targets
/// named `<suite>_postgres` (each includes `<suite>.rs` whole).
pub const ON_POSTGRES: bool = ends_with(env!("CARGO_CRATE_NAME"), "_postgres");

const fn ends_with(text: &str, suffix: &str) -> bool {
    let (text, suffix) = (text.as_bytes(), suffix.as_bytes());
    if text.len() < suffix.len() {
        return false;
    }
    let offset = text.len() - suffix.len();
    let mut i = 0;
    while i < suffix.len() {
        if text[offset + i] != suffix[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The backend for a new server: a fresh PostgreSQL database on the
/// `_postgres` targets, a temporary directory otherwise. Without a
/// PostgreSQL server outside CI, the `_postgres` tests print a skip and end
/// the test binary with success.
pub fn backend(data: &tempfile::TempDir) -> (Backend, Option<pg::TestDb>) {
    if !ON_POSTGRES {
        let backend = Backend::Embedded {
            data_dir: data.path().to_path_buf(),
        };
        return (backend, None);
    }
    let Some(db) = pg::TestDb::create() else {
        println!("SKIP: {} needs PostgreSQL", env!("CARGO_CRATE_NAME"));
        std::process::exit(0);
    };
    let backend = Backend::Postgres {
        url: db.url(),
        readers: 4,
    };
    (backend, Some(db))
}

pub struct Response {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Response {
    /// The body's field, as a string (amounts, ids and instants are strings).
    pub fn str(&self, field: &str) -> String {
        self.body[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field} in {}", self.body))
            .to_string()
    }

    pub fn id(&self) -> String {
        self.str("id")
    }

    pub fn error_code(&self) -> String {
        self.body["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error in {}", self.body))
            .to_string()
    }

    pub fn error_param(&self) -> Option<String> {
        self.body["error"]["param"].as_str().map(str::to_string)
    }

    #[track_caller]
    pub fn ok(self) -> Response {
        assert_eq!(self.status, StatusCode::OK, "body: {}", self.body);
        self
    }

    #[track_caller]
    pub fn status(self, status: u16) -> Response {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        self
    }
}

impl Server {
    /// A server on the simulated clock, starting at [`START`].
    pub async fn start() -> Server {
        Server::start_at(START).await
    }

    pub async fn start_at(start: &str) -> Server {
        Server::start_with(start, credstack::http::limits::Limits::default()).await
    }

    /// A server at `start` on the simulated clock, within `limits`.
    pub async fn start_with(start: &str, limits: credstack::http::limits::Limits) -> Server {
        let data = tempfile::tempdir().expect("temp dir");
        let (backend, db) = backend(&data);
        let ledger = Ledger::open(Config {
            backend,
            clock: Clock::simulated(start.parse().expect("start instant")),
            render: credstack::wire::render,
        })
        .expect("open ledger");
        ledger.ensure_admin_key(ADMIN_KEY).await.expect("admin key");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(credstack::server::run_with(
            listener,
            ledger.clone(),
            limits,
            std::future::pending(),
        ));
        Server {
            base,
            client: reqwest::Client::new(),
            key: ADMIN_KEY.to_string(),
            _data: data,
            db,
            ledger: Some(ledger),
        }
    }

    /// The directory of the embedded store (empty on PostgreSQL).
    pub fn data_dir(&self) -> &std::path::Path {
        self._data.path()
    }

    /// A client of a server running elsewhere (a `serve` process).
    pub fn remote(base: &str, key: &str) -> Server {
        Server {
            base: base.to_string(),
            client: reqwest::Client::new(),
            key: key.to_string(),
            _data: tempfile::tempdir().expect("temp dir"),
            db: None,
            ledger: None,
        }
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Response {
        let mut request = self
            .client
            .request(method, format!("{}{}", self.base, path));
        if !self.key.is_empty() {
            request = request.bearer_auth(&self.key);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Response {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Response {
        self.send(Method::GET, path, None, &[]).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Response {
        self.send(Method::POST, path, Some(body), &[]).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Response {
        self.send(Method::PATCH, path, Some(body), &[]).await
    }

    /// Moves the simulated clock to `to` (RFC 3339).
    pub async fn advance(&self, to: &str) {
        self.post("/v1/test_clock/advance", json!({ "to": to }))
            .await
            .ok();
    }

    pub async fn credit_system(&self, key: &str, scale: u8) -> String {
        self.post(
            "/v1/credit_systems",
            json!({"key": key, "name": key, "unit": "credits", "scale": scale}),
        )
        .await
        .ok()
        .id()
    }

    pub async fn customer(&self, name: &str) -> String {
        self.post("/v1/customers", json!({ "name": name }))
            .await
            .ok()
            .id()
    }

    /// A new customer with a wallet in a new credit system of `scale`.
    pub async fn wallet(&self, scale: u8) -> String {
        let cs = self
            .credit_system(&format!("cs{}", rand_suffix()), scale)
            .await;
        self.wallet_in(&cs).await
    }

    pub async fn wallet_in(&self, credit_system_id: &str) -> String {
        let customer = self.customer("Customer").await;
        self.wallet_of(&customer, credit_system_id).await
    }

    /// The customer's new wallet in the credit system.
    pub async fn wallet_of(&self, customer_id: &str, credit_system_id: &str) -> String {
        self.post(
            "/v1/wallets",
            json!({"customer_id": customer_id, "credit_system_id": credit_system_id}),
        )
        .await
        .ok()
        .id()
    }

    pub async fn grant(&self, wallet: &str, body: Value) -> Response {
        self.post(&format!("/v1/wallets/{wallet}/grants"), body)
            .await
    }

    pub async fn debit(&self, wallet: &str, amount: &str) -> Response {
        self.post(
            &format!("/v1/wallets/{wallet}/debits"),
            json!({ "amount": amount }),
        )
        .await
    }

    pub async fn balance(&self, wallet: &str) -> Value {
        self.get(&format!("/v1/wallets/{wallet}/balance"))
            .await
            .ok()
            .body
    }

    /// Whole units the wallet's `debit` entries took (scale 0 wallets).
    pub async fn debited_units(&self, wallet: &str) -> i64 {
        self.entries(wallet)
            .await
            .iter()
            .filter(|e| e["type"] == "debit")
            .map(|e| -e["amount"].as_str().unwrap().parse::<i64>().unwrap())
            .sum()
    }

    /// Every entry of the wallet, oldest first.
    pub async fn entries(&self, wallet: &str) -> Vec<Value> {
        let mut all = Vec::new();
        let mut after = String::new();
        loop {
            let cursor = if after.is_empty() {
                String::new()
            } else {
                format!("&starting_after={after}")
            };
            let page = self
                .get(&format!(
                    "/v1/wallets/{wallet}/entries?order=asc&limit=100{cursor}"
                ))
                .await
                .ok()
                .body;
            let data = page["data"].as_array().unwrap().clone();
            if let Some(last) = data.last() {
                after = last["id"].as_str().unwrap().to_string();
            }
            all.extend(data);
            if !page["has_more"].as_bool().unwrap() {
                return all;
            }
        }
    }
}

/// A sample's value in a `/v1/metrics` text, 0 when the series is absent.
pub fn metric_sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().expect("a number"))
        })
        .unwrap_or(0.0)
}

/// Waits until `check` holds, polling every 50 ms, at most a minute.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

// ---- helpers added for the end-to-end suites ------------------------------------

impl Server {
    /// Sends with an explicit API key (`None`: no Authorization header).
    pub async fn send_as(
        &self,
        key: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Response {
        let mut request = self
            .client
            .request(method, format!("{}{}", self.base, path));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        into_response(request.send().await.expect("request")).await
    }

    /// Sends raw bytes as the body, with the admin key and the given headers.
    pub async fn send_raw(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> Response {
        let mut request = self
            .client
            .request(method, format!("{}{}", self.base, path))
            .bearer_auth(&self.key);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        into_response(request.body(body).send().await.expect("request")).await
    }

    /// POST with extra headers (such as `Idempotency-Key`).
    pub async fn post_with(&self, path: &str, body: Value, headers: &[(&str, &str)]) -> Response {
        self.send(Method::POST, path, Some(body), headers).await
    }

    /// POST with an `Idempotency-Key`.
    pub async fn post_key(&self, path: &str, body: Value, key: &str) -> Response {
        self.post_with(path, body, &[("Idempotency-Key", key)])
            .await
    }

    pub async fn delete(&self, path: &str) -> Response {
        self.send(Method::DELETE, path, None, &[]).await
    }

    /// Creates an API key of `scope` and returns its secret.
    pub async fn api_key(&self, scope: &str) -> String {
        self.post(
            "/v1/api_keys",
            json!({"name": format!("{scope} key"), "scope": scope}),
        )
        .await
        .ok()
        .str("secret")
    }

    /// A new customer with a wallet in `credit_system_id` with this overdraft limit.
    pub async fn wallet_with_overdraft(
        &self,
        credit_system_id: &str,
        overdraft_limit: &str,
    ) -> String {
        let customer = self.customer("Customer").await;
        self.post(
            "/v1/wallets",
            json!({"customer_id": customer, "credit_system_id": credit_system_id, "overdraft_limit": overdraft_limit}),
        )
        .await
        .ok()
        .id()
    }

    /// Adds a grant that must succeed; returns its id.
    pub async fn grant_ok(&self, wallet: &str, body: Value) -> String {
        self.grant(wallet, body).await.ok().id()
    }

    pub async fn hold(&self, wallet: &str, body: Value) -> Response {
        self.post(&format!("/v1/wallets/{wallet}/holds"), body)
            .await
    }

    /// Every grant of the wallet, newest first.
    pub async fn grants(&self, wallet: &str) -> Vec<Value> {
        self.get(&format!("/v1/wallets/{wallet}/grants?limit=100"))
            .await
            .ok()
            .body["data"]
            .as_array()
            .unwrap()
            .clone()
    }

    pub async fn get_grant(&self, grant: &str) -> Value {
        self.get(&format!("/v1/grants/{grant}")).await.ok().body
    }

    /// The entries as `(type, amount, balance_after, occurred_at)`, oldest first.
    pub async fn ledger(&self, wallet: &str) -> Vec<(String, String, String, String)> {
        self.entries(wallet)
            .await
            .iter()
            .map(|e| {
                (
                    e["type"].as_str().unwrap().to_string(),
                    e["amount"].as_str().unwrap().to_string(),
                    e["balance_after"].as_str().unwrap().to_string(),
                    e["occurred_at"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// Everything a bad request could change about a wallet and the lists
    /// around it, to compare before and after.
    pub async fn snapshot(&self, wallet: &str) -> Value {
        let mut balance = self.balance(wallet).await;
        balance.as_object_mut().unwrap().remove("at");
        json!({
            "balance": balance,
            "wallet": self.get(&format!("/v1/wallets/{wallet}")).await.ok().body,
            "entries": self.entries(wallet).await,
            "grants": self.grants(wallet).await,
            "debits": self.get(&format!("/v1/wallets/{wallet}/debits?limit=100")).await.ok().body,
            "customers": self.get("/v1/customers?limit=100").await.ok().body,
            "wallets": self.get("/v1/wallets?limit=100").await.ok().body,
            "credit_systems": self.get("/v1/credit_systems?limit=100").await.ok().body,
            "api_keys": self.get("/v1/api_keys").await.ok().body,
        })
    }

    /// SPEC rules 15 and 16 over HTTP: gapless sequences from 1, each
    /// `balance_after` the running sum, and balance = Σ entries = Σ grant
    /// remainders − debt, with no negative remainder and debt ≤ limit.
    #[track_caller]
    pub fn check_invariants_of(&self, balance: &Value, entries: &[Value], grants: &[Value]) {
        let mut running = 0i128;
        for (index, entry) in entries.iter().enumerate() {
            assert_eq!(
                entry["sequence"].as_u64(),
                Some(index as u64 + 1),
                "gapless sequence: {entry}"
            );
            running += atomic(entry["amount"].as_str().unwrap());
            assert_eq!(
                atomic(entry["balance_after"].as_str().unwrap()),
                running,
                "balance_after: {entry}"
            );
        }
        let remainders: i128 = grants
            .iter()
            .map(|g| {
                let remaining = atomic(g["remaining"].as_str().unwrap());
                assert!(remaining >= 0, "negative remainder: {g}");
                remaining
            })
            .sum();
        let debt = atomic(balance["debt"].as_str().unwrap());
        let total = atomic(balance["balance"].as_str().unwrap());
        assert_eq!(total, running, "balance == sum of entries");
        assert_eq!(
            total,
            remainders - debt,
            "balance == grant remainders - debt"
        );
        assert!(
            debt >= 0 && debt <= atomic(balance["overdraft_limit"].as_str().unwrap()),
            "debt within limit"
        );
        assert_eq!(
            atomic(balance["available"].as_str().unwrap()),
            total - atomic(balance["held"].as_str().unwrap()),
            "available == balance - held"
        );
    }

    pub async fn check_invariants(&self, wallet: &str) {
        let balance = self.balance(wallet).await;
        let entries = self.entries(wallet).await;
        let grants = self.grants(wallet).await;
        self.check_invariants_of(&balance, &entries, &grants);
    }
}

/// A decimal string as micro-units (scale 6 is the most a system has).
pub fn atomic(text: &str) -> i128 {
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    assert!(fraction.len() <= 6, "at most 6 places: {text}");
    let value = whole.parse::<i128>().unwrap() * 1_000_000
        + format!("{fraction:0<6}").parse::<i128>().unwrap();
    if negative { -value } else { value }
}

async fn into_response(response: reqwest::Response) -> Response {
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Response {
        status,
        headers,
        body,
    }
}

/// Asserts the SPEC error shape `{"error": {"type", "code", "message", "param"?}}`
/// with this status and code (and param, when given).
#[track_caller]
pub fn assert_error(response: &Response, status: u16, code: &str, param: Option<&str>) {
    assert_eq!(
        response.status.as_u16(),
        status,
        "status of {}",
        response.body
    );
    let error = response.body["error"]
        .as_object()
        .unwrap_or_else(|| panic!("error shape: {}", response.body));
    assert_eq!(
        response.body.as_object().unwrap().len(),
        1,
        "only `error`: {}",
        response.body
    );
    assert!(error["type"].is_string(), "type: {}", response.body);
    assert_eq!(error["code"], code, "code of {}", response.body);
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "message: {}",
        response.body
    );
    for field in error.keys() {
        assert!(
            ["type", "code", "message", "param"].contains(&field.as_str()),
            "unexpected {field}: {}",
            response.body
        );
    }
    if let Some(param) = param {
        assert_eq!(
            error.get("param").and_then(Value::as_str),
            Some(param),
            "param of {}",
            response.body
        );
    }
}

// ---- the store behind the server, for the integrity suites ------------------------

/// Runs the `credstack` binary with these arguments (no store from the
/// environment); its exit code and everything it printed.
pub fn run_cli(args: &[&str]) -> (i32, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_credstack"))
        .args(args)
        .env_remove("CREDSTACK_DATA")
        .env_remove("DATABASE_URL")
        .output()
        .expect("run credstack");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}

impl Server {
    /// The CLI's arguments naming this server's store.
    pub fn store_args(&self) -> Vec<String> {
        match &self.db {
            Some(db) => vec!["--database-url".into(), db.url()],
            None => vec![
                "--data".into(),
                self._data.path().to_string_lossy().into_owned(),
            ],
        }
    }

    /// Runs `credstack <command> <store args> <extra>`; its exit code and
    /// everything it printed.
    pub fn cli(&self, command: &str, extra: &[&str]) -> (i32, String) {
        let store = self.store_args();
        let mut args = vec![command];
        args.extend(store.iter().map(String::as_str));
        args.extend(extra);
        run_cli(&args)
    }

    /// Runs one SQL statement straight on the store, behind the ledger's
    /// back: the SQLite file or the PostgreSQL database. `id`, when given,
    /// is its one parameter (`$1`). Returns the rows changed.
    pub fn execute_sql(&self, sql: &str, id: Option<u128>) -> u64 {
        let bytes = id.map(|id| credstack::ids::to_bytes(id).to_vec());
        match &self.db {
            Some(db) => std::thread::scope(|scope| {
                scope
                    .spawn(|| {
                        let mut client = db.connect();
                        match &bytes {
                            Some(bytes) => client.execute(sql, &[bytes]),
                            None => client.execute(sql, &[]),
                        }
                        .expect(sql)
                    })
                    .join()
                    .expect("PostgreSQL thread")
            }),
            None => {
                let path = credstack::ledger::database_path(self._data.path());
                let connection = rusqlite::Connection::open(path).expect("open the store");
                connection
                    .busy_timeout(std::time::Duration::from_secs(5))
                    .unwrap();
                let changed = match &bytes {
                    Some(bytes) => connection.execute(sql, [bytes]),
                    None => connection.execute(sql, []),
                };
                changed.expect(sql) as u64
            }
        }
    }
}

/// Signs in to the console at `base` with `key` through its login form;
/// returns the session cookie's value, or `None` if sign-in was refused.
pub async fn console_sign_in(base: &str, key: &str) -> Option<String> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = http.get(format!("{base}/login")).send().await.unwrap();
    let login_cookie = set_cookie(&page, "credstack_login").expect("a login cookie");
    let html = page.text().await.unwrap();
    let marker = "name=\"login_token\" value=\"";
    let start = html.find(marker).expect("a login token") + marker.len();
    let token = html[start..].split('"').next().unwrap();
    let response = http
        .post(format!("{base}/login"))
        .header(
            reqwest::header::COOKIE,
            format!("credstack_login={login_cookie}"),
        )
        .form(&[("api_key", key), ("login_token", token), ("next", "/")])
        .send()
        .await
        .unwrap();
    set_cookie(&response, "credstack_session")
}

/// The value a response sets for cookie `name`.
fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap().to_string())
        .filter(|v| !v.is_empty())
}

/// Through the ledger's Rust API: a credit system, a customer and a wallet
/// (scale 0), with a paid grant of `amount` (its first entry, at the
/// ledger's now). Returns the wallet's id.
pub async fn wallet_with_a_grant(ledger: &Ledger, amount: &str) -> u128 {
    use credstack::engine::{NewGrant, Outcome, Request};
    let Outcome::CreditSystem(cs) = ledger
        .execute(Request::CreateCreditSystem {
            key: "tokens".into(),
            name: "Tokens".into(),
            unit: "token".into(),
            scale: 0,
        })
        .await
        .unwrap()
    else {
        unreachable!("a credit system")
    };
    let Outcome::Customer(customer) = ledger
        .execute(Request::CreateCustomer {
            name: "Ada".into(),
            email: None,
            external_id: None,
            metadata: Default::default(),
        })
        .await
        .unwrap()
    else {
        unreachable!("a customer")
    };
    let Outcome::Wallet(wallet) = ledger
        .execute(Request::CreateWallet {
            customer_id: customer.id,
            credit_system_id: cs.id,
            overdraft_limit: None,
            low_balance_threshold: None,
        })
        .await
        .unwrap()
    else {
        unreachable!("a wallet")
    };
    ledger
        .execute(Request::AddGrant(NewGrant {
            wallet_id: wallet.info.id,
            amount: amount.into(),
            purpose: credstack_core::Purpose::Paid,
            priority: None,
            effective_at: None,
            expires_at: None,
            recurrence: None,
            rollover_max: None,
            description: None,
            metadata: Default::default(),
        }))
        .await
        .unwrap();
    wallet.info.id
}
