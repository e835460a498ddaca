//! Crash consistency (issue 7; SPEC §6: "an acknowledged write is durable
//! and survives a crash; no debit is applied twice").
//!
//! The real binary serves a real store under concurrent load: debits, batch
//! debits, holds then captures or releases, grants and campaign grants,
//! every one with an idempotency key. The harness kills it with SIGKILL at
//! random moments and starts it again on the same store and port. A client
//! whose answer was lost (the connection died) sends the same request with
//! the same key until an answer comes. At the end:
//!
//! - every acknowledged write is there, exactly once: each debit the
//!   clients were told of exists with its amount, and the wallet's ledger
//!   holds no other debit; grants likewise;
//! - each balance is exactly what the acknowledged writes make it;
//! - every key replays its first answer, status and body;
//! - `credstack verify` finds every invariant of rule 16, every sequence
//!   and every hash in order.
//!
//! `crash_postgres.rs` runs it on PostgreSQL. The short run (5 kills) is
//! part of the test suite; the long run is
//! `CREDSTACK_CRASH_KILLS=100 cargo test -p credstack --test crash -- --nocapture`
//! (RELIABILITY.md); `CREDSTACK_CRASH_SEED` repeats a run.

mod common;

use common::process::{LogOnFailure, Process, free_port};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const KEY: &str = "csk_crash_consistency_admin";
const START: &str = "2025-01-31T10:00:00Z";
const WALLETS: usize = 6;
const CLIENTS: usize = 12;
const PROMO_QUANTITY: i64 = 7;

/// A small deterministic generator (xorshift64*), seeded per client.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Answer {
    status: u16,
    body: Value,
    replayed: bool,
}

/// One acknowledged call: what was sent and what came back.
struct Acked {
    path: String,
    body: Value,
    key: Option<String>,
    answer: Value,
    status: u16,
}

#[derive(Default)]
struct Log {
    acked: Vec<Acked>,
    /// Debit ids acknowledged, by wallet, with their amounts.
    debits: BTreeMap<String, BTreeMap<String, i64>>,
    /// Grants acknowledged (API and campaign), by wallet, with their amounts.
    grants: BTreeMap<String, BTreeMap<String, i64>>,
    /// Calls whose first answer was lost and that were sent again.
    retried: u64,
}

struct Harness {
    base: String,
    client: reqwest::Client,
    log: Mutex<Log>,
    acked: AtomicU64,
}

impl Harness {
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        key: Option<&str>,
    ) -> Option<Answer> {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(KEY)
            .timeout(Duration::from_secs(20));
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.ok()?;
        let status = response.status().as_u16();
        let replayed = response.headers().contains_key("idempotent-replayed");
        let text = response.text().await.ok()?;
        if status >= 500 {
            return None;
        }
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Some(Answer {
            status,
            body,
            replayed,
        })
    }

    /// Posts until an answer comes, the same request with the same key each
    /// time; a lost answer (the server died) is retried.
    async fn post(&self, path: &str, body: Value, key: Option<String>) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut lost = false;
        let answer = loop {
            match self
                .send(Method::POST, path, Some(&body), key.as_deref())
                .await
            {
                Some(answer) => break answer,
                None => {
                    lost = true;
                    assert!(
                        Instant::now() < deadline,
                        "no answer to {path} for 2 minutes"
                    );
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
            }
        };
        assert_eq!(answer.status, 200, "POST {path} {body}: {}", answer.body);
        let mut log = self.log.lock().unwrap();
        log.retried += u64::from(lost);
        log.acked.push(Acked {
            path: path.to_string(),
            body,
            key,
            answer: answer.body.clone(),
            status: answer.status,
        });
        self.acked.fetch_add(1, Ordering::Relaxed);
        answer.body
    }

    /// Gets, again and again while the server is down.
    async fn get(&self, path: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(answer) = self.send(Method::GET, path, None, None).await {
                assert_eq!(answer.status, 200, "GET {path}: {}", answer.body);
                return answer.body;
            }
            assert!(
                Instant::now() < deadline,
                "no answer to GET {path} for 2 minutes"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn debited(&self, wallet: &str, debit: &Value) {
        let amount: i64 = debit["amount"].as_str().unwrap().parse().unwrap();
        let id = debit["id"].as_str().unwrap().to_string();
        let mut log = self.log.lock().unwrap();
        let previous = log
            .debits
            .entry(wallet.to_string())
            .or_default()
            .insert(id.clone(), amount);
        assert!(previous.is_none(), "debit {id} acknowledged twice");
    }

    fn granted(&self, wallet: &str, grant: &str, amount: i64) {
        let mut log = self.log.lock().unwrap();
        let previous = log
            .grants
            .entry(wallet.to_string())
            .or_default()
            .insert(grant.to_string(), amount);
        assert!(previous.is_none(), "grant {grant} acknowledged twice");
    }
}

struct Setup {
    wallets: Vec<String>,
    customers: Vec<String>,
    promotion: String,
}

async fn set_up(h: &Harness) -> Setup {
    let system = h
        .post(
            "/v1/credit_systems",
            json!({"key": "tokens", "name": "Tokens", "unit": "token", "scale": 0}),
            Some("setup-system".into()),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (mut wallets, mut customers) = (Vec::new(), Vec::new());
    for n in 0..WALLETS {
        let customer = h
            .post(
                "/v1/customers",
                json!({"name": format!("Customer {n}")}),
                Some(format!("setup-customer-{n}")),
            )
            .await["id"]
            .as_str()
            .unwrap()
            .to_string();
        let wallet = h
            .post(
                "/v1/wallets",
                json!({"customer_id": customer, "credit_system_id": system}),
                Some(format!("setup-wallet-{n}")),
            )
            .await["id"]
            .as_str()
            .unwrap()
            .to_string();
        let grant = h
            .post(
                &format!("/v1/wallets/{wallet}/grants"),
                json!({"amount": "1000000", "purpose": "paid"}),
                Some(format!("setup-grant-{n}")),
            )
            .await;
        h.granted(&wallet, grant["id"].as_str().unwrap(), 1_000_000);
        wallets.push(wallet);
        customers.push(customer);
    }
    let promotion = h
        .post(
            "/v1/promotional_credits",
            json!({"name": "Crash promo", "credit_system_id": system,
                   "quantity": PROMO_QUANTITY.to_string(), "allow_multiple_grants": true}),
            Some("setup-promotion".into()),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    Setup {
        wallets,
        customers,
        promotion,
    }
}

/// One client's load until `stop`: a random mix of every keyed write.
async fn client(
    h: Arc<Harness>,
    setup: Arc<Setup>,
    index: usize,
    seed: u64,
    stop: Arc<AtomicBool>,
) {
    let mut rng = Rng(seed ^ (index as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let key = |what: &str| Some(format!("c{index}-{n}-{what}"));
        let w = rng.below(WALLETS as u64) as usize;
        let wallet = &setup.wallets[w];
        let amount = 1 + rng.below(9) as i64;
        match rng.below(10) {
            0..=3 => {
                let debit = h
                    .post(
                        &format!("/v1/wallets/{wallet}/debits"),
                        json!({"amount": amount.to_string()}),
                        key("debit"),
                    )
                    .await;
                h.debited(wallet, &debit);
            }
            4 => {
                let items: Vec<(usize, Value)> = (0..3)
                    .map(|i| {
                        let w = rng.below(WALLETS as u64) as usize;
                        let item = json!({"wallet_id": setup.wallets[w], "amount": (i + 1).to_string(),
                                          "idempotency_key": format!("c{index}-{n}-item{i}")});
                        (w, item)
                    })
                    .collect();
                let body = json!({"debits": items.iter().map(|(_, item)| item.clone()).collect::<Vec<_>>()});
                let answer = h.post("/v1/debits/batch", body, None).await;
                for ((w, _), result) in items.iter().zip(answer["data"].as_array().unwrap()) {
                    assert_eq!(result["status"], 200, "{result}");
                    h.debited(&setup.wallets[*w], &result["debit"]);
                }
            }
            5 | 6 => {
                let hold = h
                    .post(
                        &format!("/v1/wallets/{wallet}/holds"),
                        json!({"amount": amount.to_string()}),
                        key("hold"),
                    )
                    .await;
                let hold = hold["id"].as_str().unwrap();
                if rng.below(3) == 0 {
                    h.post(
                        &format!("/v1/holds/{hold}/release"),
                        json!({}),
                        key("release"),
                    )
                    .await;
                } else {
                    // Up to one more than was held: the excess is debited too.
                    let captured = amount - 1 + rng.below(3) as i64;
                    let captured = captured.max(1);
                    let debit = h
                        .post(
                            &format!("/v1/holds/{hold}/capture"),
                            json!({"amount": captured.to_string()}),
                            key("capture"),
                        )
                        .await;
                    let debit_id = debit["debit_id"]
                        .as_str()
                        .expect("a captured hold names its debit");
                    let debit = h.get(&format!("/v1/debits/{debit_id}")).await;
                    assert_eq!(debit["amount"], captured.to_string(), "{debit}");
                    h.debited(wallet, &debit);
                }
            }
            7 | 8 => {
                let amount = 1 + rng.below(100) as i64;
                let grant = h
                    .post(
                        &format!("/v1/wallets/{wallet}/grants"),
                        json!({"amount": amount.to_string(), "purpose": "paid"}),
                        key("grant"),
                    )
                    .await;
                h.granted(wallet, grant["id"].as_str().unwrap(), amount);
            }
            _ => {
                let customer = &setup.customers[w];
                let answer = h
                    .post(
                        &format!("/v1/promotional_credits/{}/grant", setup.promotion),
                        json!({"customer_ids": [customer]}),
                        key("promo"),
                    )
                    .await;
                let granted = answer["granted"].as_array().unwrap();
                assert_eq!(granted.len(), 1, "{answer}");
                let grant = granted[0]["grant_id"]
                    .as_str()
                    .expect("the assignment's grant");
                h.granted(wallet, grant, PROMO_QUANTITY);
            }
        }
    }
}

fn seed() -> u64 {
    std::env::var("CREDSTACK_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

fn kills() -> usize {
    std::env::var("CREDSTACK_CRASH_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill_exactly_once() {
    let data = tempfile::tempdir().unwrap();
    let db = if common::ON_POSTGRES {
        match common::pg::TestDb::create() {
            Some(db) => Some(db),
            None => return,
        }
    } else {
        None
    };
    let store: Vec<String> = match &db {
        Some(db) => vec!["--database-url".into(), db.url()],
        None => vec!["--data".into(), data.path().to_str().unwrap().into()],
    };
    let mut args: Vec<&str> = store.iter().map(String::as_str).collect();
    args.extend(["--clock", "simulated", "--start", START]);
    let log_path = data.path().join("serve.log");
    let _log = LogOnFailure(log_path.clone());
    let port = free_port();
    let mut server = Process::spawn_on(port, &args, KEY, &log_path).await;

    let harness = Arc::new(Harness {
        base: server.base.clone(),
        client: reqwest::Client::new(),
        log: Mutex::default(),
        acked: AtomicU64::new(0),
    });
    let setup = Arc::new(set_up(&harness).await);
    let seed = seed();
    println!("crash test: seed {seed} (CREDSTACK_CRASH_SEED repeats it)");
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|index| {
            tokio::spawn(client(
                harness.clone(),
                setup.clone(),
                index,
                seed,
                stop.clone(),
            ))
        })
        .collect();

    // Kill at random moments, each once the clients have made progress
    // since the last start, so every kill lands under load.
    let mut rng = Rng(seed | 1);
    let started = Instant::now();
    for _ in 0..kills() {
        let before = harness.acked.load(Ordering::Relaxed);
        while harness.acked.load(Ordering::Relaxed) < before + 20 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.below(300))).await;
        server.kill();
        server = Process::spawn_on(port, &args, KEY, &log_path).await;
    }
    let before = harness.acked.load(Ordering::Relaxed);
    while harness.acked.load(Ordering::Relaxed) < before + 20 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let elapsed = started.elapsed();

    // Every acknowledged write is there exactly once, and nothing else.
    let h = &harness;
    let log = std::mem::take(&mut *h.log.lock().unwrap());
    let mut checked = 0;
    for (n, wallet) in setup.wallets.iter().enumerate() {
        let debits = log.debits.get(wallet).cloned().unwrap_or_default();
        let grants = log.grants.get(wallet).cloned().unwrap_or_default();
        for (id, amount) in &debits {
            let debit = h.get(&format!("/v1/debits/{id}")).await;
            assert_eq!(debit["amount"], amount.to_string(), "{debit}");
            checked += 1;
        }
        let entries = all_entries(h, wallet).await;
        let in_ledger: BTreeSet<String> = entries
            .iter()
            .filter(|e| e["type"] == "debit")
            .map(|e| e["reference"].as_str().unwrap().to_string())
            .collect();
        let acked: BTreeSet<String> = debits.keys().cloned().collect();
        assert_eq!(
            in_ledger, acked,
            "wallet {n}: the ledger's debits are the acknowledged ones"
        );
        let mut granted: HashMap<String, i64> = HashMap::new();
        for entry in entries.iter().filter(|e| e["type"] == "grant") {
            *granted
                .entry(entry["grant_id"].as_str().unwrap().to_string())
                .or_default() += entry["amount"].as_str().unwrap().parse::<i64>().unwrap();
        }
        let expected: HashMap<String, i64> = grants.clone().into_iter().collect();
        assert_eq!(
            granted, expected,
            "wallet {n}: the ledger's grants are the acknowledged ones"
        );
        let balance = h.get(&format!("/v1/wallets/{wallet}/balance")).await;
        let model: i64 = grants.values().sum::<i64>() - debits.values().sum::<i64>();
        assert_eq!(
            balance["balance"],
            model.to_string(),
            "wallet {n}: {balance}"
        );
        assert_eq!(balance["held"], "0", "every hold was captured or released");
    }

    // Every key replays its first answer.
    let mut replayed = 0;
    for acked in log.acked.iter().filter(|a| a.key.is_some()) {
        let answer = h
            .send(
                Method::POST,
                &acked.path,
                Some(&acked.body),
                acked.key.as_deref(),
            )
            .await
            .expect("a replay");
        assert!(answer.replayed, "{} replays: {}", acked.path, answer.body);
        assert_eq!((answer.status, &answer.body), (acked.status, &acked.answer));
        replayed += 1;
    }

    // The store itself: every invariant, sequence and hash.
    server.kill();
    let mut verify = vec!["verify"];
    verify.extend(store.iter().map(String::as_str));
    let (code, report) = common::run_cli(&verify);
    assert_eq!(code, 0, "{report}");
    println!(
        "crash test: {} kills in {:.1}s; {} calls acknowledged ({} after a lost answer), {checked} debits checked, {replayed} keys replayed; verify: {}",
        kills(),
        elapsed.as_secs_f64(),
        log.acked.len(),
        log.retried,
        report.lines().next().unwrap_or_default()
    );
}

async fn all_entries(h: &Harness, wallet: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = h
            .get(&format!(
                "/v1/wallets/{wallet}/entries?order=asc&limit=100{cursor}"
            ))
            .await;
        let data = page["data"].as_array().unwrap().clone();
        if let Some(last) = data.last() {
            cursor = format!("&starting_after={}", last["id"].as_str().unwrap());
        }
        all.extend(data);
        if page["has_more"] != true {
            return all;
        }
    }
}
