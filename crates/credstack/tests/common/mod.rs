//! The end-to-end harness: a real server on a real store, over real HTTP.
//! Each test gets its own store in a temporary directory, a server bound to
//! port 0 on loopback, and a simulated clock it moves through the API.
#![allow(dead_code)]

use credstack::clock::Clock;
use credstack::ledger::{Config, Ledger};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

pub const ADMIN_KEY: &str = "csk_test_admin_key";
pub const START: &str = "2025-01-31T10:00:00Z";

pub struct Server {
    pub base: String,
    pub client: reqwest::Client,
    pub key: String,
    _data: tempfile::TempDir,
}

pub struct Response {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Response {
    /// The body's field, as a string (amounts, ids and instants are strings).
    pub fn str(&self, field: &str) -> String {
        self.body[field].as_str().unwrap_or_else(|| panic!("{field} in {}", self.body)).to_string()
    }

    pub fn id(&self) -> String {
        self.str("id")
    }

    pub fn error_code(&self) -> String {
        self.body["error"]["code"].as_str().unwrap_or_else(|| panic!("no error in {}", self.body)).to_string()
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
        let data = tempfile::tempdir().expect("temp dir");
        let ledger = Ledger::open(Config {
            data_dir: data.path().to_path_buf(),
            clock: Clock::simulated(start.parse().expect("start instant")),
            render: credstack::http::render,
        })
        .expect("open ledger");
        ledger.ensure_admin_key(ADMIN_KEY).await.expect("admin key");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(credstack::server::run(listener, ledger, std::future::pending()));
        Server { base, client: reqwest::Client::new(), key: ADMIN_KEY.to_string(), _data: data }
    }

    pub async fn send(&self, method: Method, path: &str, body: Option<Value>, headers: &[(&str, &str)]) -> Response {
        let mut request = self.client.request(method, format!("{}{}", self.base, path));
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
        let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        Response { status, headers, body }
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
        self.post("/v1/test_clock/advance", json!({ "to": to })).await.ok();
    }

    pub async fn credit_system(&self, key: &str, scale: u8) -> String {
        self.post("/v1/credit_systems", json!({"key": key, "name": key, "unit": "credits", "scale": scale}))
            .await
            .ok()
            .id()
    }

    pub async fn customer(&self, name: &str) -> String {
        self.post("/v1/customers", json!({ "name": name })).await.ok().id()
    }

    /// A new customer with a wallet in a new credit system of `scale`.
    pub async fn wallet(&self, scale: u8) -> String {
        let cs = self.credit_system(&format!("cs{}", rand_suffix()), scale).await;
        self.wallet_in(&cs).await
    }

    pub async fn wallet_in(&self, credit_system_id: &str) -> String {
        let customer = self.customer("Customer").await;
        self.post("/v1/wallets", json!({"customer_id": customer, "credit_system_id": credit_system_id}))
            .await
            .ok()
            .id()
    }

    pub async fn grant(&self, wallet: &str, body: Value) -> Response {
        self.post(&format!("/v1/wallets/{wallet}/grants"), body).await
    }

    pub async fn debit(&self, wallet: &str, amount: &str) -> Response {
        self.post(&format!("/v1/wallets/{wallet}/debits"), json!({ "amount": amount })).await
    }

    pub async fn balance(&self, wallet: &str) -> Value {
        self.get(&format!("/v1/wallets/{wallet}/balance")).await.ok().body
    }

    /// Every entry of the wallet, oldest first.
    pub async fn entries(&self, wallet: &str) -> Vec<Value> {
        let mut all = Vec::new();
        let mut after = String::new();
        loop {
            let cursor = if after.is_empty() { String::new() } else { format!("&starting_after={after}") };
            let page = self.get(&format!("/v1/wallets/{wallet}/entries?order=asc&limit=100{cursor}")).await.ok().body;
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

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
