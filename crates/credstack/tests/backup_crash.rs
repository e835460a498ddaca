//! A backup holds every acknowledged write (issue 20). A real `serve` is
//! loaded with keyed single and batch debits while another connection holds
//! `credstack.db`'s write lock, so the merger cannot write and every
//! acknowledged debit is only in the journal: the case where a backup that
//! copied the store alone lost them. Then:
//!
//! - killed with SIGKILL, its stopped store is backed up, restored and
//!   served: every acknowledged key is there exactly once (a retry replays
//!   it, never debits again), each balance is its grant less the debits
//!   the store holds, and `verify` is clean;
//! - backed up while it runs under that load: everything acknowledged
//!   before the backup started is in the restored store.
//!
//! Embedded store only: PostgreSQL is backed up with its own tools
//! (RELIABILITY.md).

mod common;

use common::process::Process;
use common::{Server, run_cli};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const KEY: &str = "csk_backup_crash_admin";
const WALLETS: usize = 8;
const GRANT: i64 = 1_000_000_000;

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temp path")
}

/// What the server acknowledged: each key with its wallet and amount.
#[derive(Default)]
struct Acked {
    keys: HashMap<String, (String, i64)>,
}

/// A loaded server whose acknowledged debits all wait in the journal.
struct Loaded {
    _dir: tempfile::TempDir,
    data: std::path::PathBuf,
    log: std::path::PathBuf,
    server: Process,
    wallets: Vec<String>,
    acked: Arc<Mutex<Acked>>,
    /// Holds `credstack.db`'s write lock: the merger cannot merge.
    blocker: Option<Mutex<rusqlite::Connection>>,
}

async fn loaded_server() -> Loaded {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("serve.log");
    let server = Process::spawn(&["--data", path(&data)], KEY, &log).await;
    let client = Server::remote(&server.base, KEY);
    let system = client.credit_system("tokens", 0).await;
    let mut wallets = Vec::new();
    for _ in 0..WALLETS {
        let wallet = client.wallet_in(&system).await;
        client
            .grant_ok(
                &wallet,
                json!({"amount": GRANT.to_string(), "purpose": "paid"}),
            )
            .await;
        wallets.push(wallet);
    }
    // Once the server is idle (the first purge done, the grants' events
    // fanned out: writes that are not journalled, which would wait for the
    // merger held off below), only journalled debits follow.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    common::eventually("the outbox fanned out", || async {
        let metrics = client.get("/v1/metrics").await.ok().body;
        common::metric_sample(metrics.as_str().unwrap(), "credstack_outbox_pending_events") == 0.0
    })
    .await;
    let blocker = rusqlite::Connection::open(data.join("credstack.db")).unwrap();
    blocker.busy_timeout(Duration::from_secs(10)).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    Loaded {
        _dir: dir,
        data,
        log,
        server,
        wallets,
        acked: Arc::new(Mutex::new(Acked::default())),
        blocker: Some(Mutex::new(blocker)),
    }
}

impl Loaded {
    /// Sends `rounds` keyed single debits from each of 4 callers and
    /// `rounds / 4` batches of 25 from each of 2 more, recording what is
    /// acknowledged; errors (a killed server) are not.
    async fn load(&self, tag: &str, rounds: usize) {
        let mut callers = Vec::new();
        for caller in 0..6 {
            let (base, wallets, acked) = (
                self.server.base.clone(),
                self.wallets.clone(),
                self.acked.clone(),
            );
            let tag = format!("{tag}-{caller}");
            callers.push(tokio::spawn(async move {
                let client = reqwest::Client::new();
                if caller < 4 {
                    for round in 0..rounds {
                        let wallet = &wallets[(caller + round) % wallets.len()];
                        let key = format!("{tag}-{round}");
                        let amount = 1 + (round % 7) as i64;
                        let answer = client
                            .post(format!("{base}/v1/wallets/{wallet}/debits"))
                            .bearer_auth(KEY)
                            .header("Idempotency-Key", &key)
                            .json(&json!({"amount": amount.to_string()}))
                            .timeout(Duration::from_secs(20))
                            .send()
                            .await;
                        match answer {
                            Ok(r) if r.status() == 200 => {
                                acked
                                    .lock()
                                    .unwrap()
                                    .keys
                                    .insert(key, (wallet.clone(), amount));
                            }
                            _ => return,
                        }
                    }
                } else {
                    for round in 0..rounds / 4 {
                        let items: Vec<(String, String, i64)> = (0..25)
                            .map(|i| {
                                let wallet = wallets[(round + i) % wallets.len()].clone();
                                (wallet, format!("{tag}-{round}-{i}"), 1 + (i % 5) as i64)
                            })
                            .collect();
                        let body = json!({"debits": items.iter().map(|(w, k, a)| json!({
                            "wallet_id": w, "amount": a.to_string(), "idempotency_key": k
                        })).collect::<Vec<_>>()});
                        let answer = client
                            .post(format!("{base}/v1/debits/batch"))
                            .bearer_auth(KEY)
                            .json(&body)
                            .timeout(Duration::from_secs(20))
                            .send()
                            .await;
                        let Ok(response) = answer else { return };
                        if response.status() != 200 {
                            return;
                        }
                        let Ok(results) = response.json::<Value>().await else {
                            return;
                        };
                        let mut acked = acked.lock().unwrap();
                        for ((wallet, key, amount), result) in
                            items.into_iter().zip(results["data"].as_array().unwrap())
                        {
                            assert_eq!(result["status"], 200, "{result}");
                            acked.keys.insert(key, (wallet, amount));
                        }
                    }
                }
            }));
        }
        for caller in callers {
            caller.await.unwrap();
        }
    }

    /// How many journalled batches the server has not merged.
    async fn unmerged(&self) -> f64 {
        let metrics = reqwest::Client::new()
            .get(format!("{}/v1/metrics", self.server.base))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        common::metric_sample(&metrics, "credstack_journal_unmerged_batches")
    }

    fn backup(&self, out: &Path) {
        let (code, report) = run_cli(&["backup", "--data", path(&self.data), "--out", path(out)]);
        assert_eq!(code, 0, "{report}");
        assert!(report.contains("OK: every balance"), "{report}");
    }
}

/// Restores `file`, serves it and checks that every key in `acked` is in it
/// exactly once, and every balance is its grant less the debits it holds.
async fn check_restored(file: &Path, wallets: &[String], acked: &Acked) {
    let dir = tempfile::tempdir().unwrap();
    let restored = dir.path().join("restored");
    let (code, text) = run_cli(&["restore", "--from", path(file), "--data", path(&restored)]);
    assert_eq!(code, 0, "{text}");
    let (code, text) = run_cli(&["verify", "--data", path(&restored)]);
    assert_eq!(code, 0, "{text}");
    let server = Process::spawn(
        &["--data", path(&restored)],
        KEY,
        &dir.path().join("restored.log"),
    )
    .await;
    let client = Server::remote(&server.base, KEY);
    // Every debit the restored store holds, by id, per wallet.
    let mut held: HashMap<String, HashMap<String, i64>> = HashMap::new();
    for wallet in wallets {
        let mut after: Option<String> = None;
        let debits = held.entry(wallet.clone()).or_default();
        loop {
            let query = after
                .as_ref()
                .map_or(String::new(), |a| format!("&starting_after={a}"));
            let page = client
                .get(&format!("/v1/wallets/{wallet}/debits?limit=100{query}"))
                .await
                .ok()
                .body;
            for debit in page["data"].as_array().unwrap() {
                let amount: i64 = debit["amount"].as_str().unwrap().parse().unwrap();
                let previous = debits.insert(debit["id"].as_str().unwrap().to_string(), amount);
                assert!(previous.is_none(), "a debit listed twice");
            }
            after = page["data"]
                .as_array()
                .unwrap()
                .last()
                .map(|d| d["id"].as_str().unwrap().to_string());
            if page["has_more"] != true {
                break;
            }
        }
        let balance = client.balance(wallet).await;
        let spent: i64 = debits.values().sum();
        assert_eq!(
            balance["balance"],
            (GRANT - spent).to_string(),
            "{wallet}: its grant less the debits it holds"
        );
    }
    // Each acknowledged key replays its debit, which the store holds: a
    // retry after the restore is never a second debit.
    let before: Vec<Value> = {
        let mut all = Vec::new();
        for wallet in wallets {
            all.push(client.balance(wallet).await["balance"].clone());
        }
        all
    };
    for (key, (wallet, amount)) in &acked.keys {
        let again = client
            .post_key(
                &format!("/v1/wallets/{wallet}/debits"),
                json!({"amount": amount.to_string()}),
                key,
            )
            .await;
        assert_eq!(again.status, 200, "{key}: {}", again.body);
        assert_eq!(
            again
                .headers
                .get("idempotent-replayed")
                .map(|v| v.as_bytes()),
            Some(&b"true"[..]),
            "{key} was acknowledged before the backup, so the backup holds it"
        );
        let id = again.str("id");
        assert_eq!(held[wallet].get(&id), Some(amount), "{key}'s debit");
    }
    for (wallet, before) in wallets.iter().zip(before) {
        assert_eq!(client.balance(wallet).await["balance"], before);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_of_a_killed_store_holds_every_acknowledged_debit() {
    if common::ON_POSTGRES {
        return;
    }
    let mut loaded = loaded_server().await;
    let _log = common::process::LogOnFailure(loaded.log.clone());
    loaded.load("killed", 60).await;
    let unmerged = loaded.unmerged().await;
    assert!(
        unmerged > 0.0,
        "the acknowledged debits wait in the journal"
    );
    loaded.server.kill();
    drop(loaded.blocker.take());
    let acked = std::mem::take(&mut *loaded.acked.lock().unwrap());
    assert!(acked.keys.len() > 200, "{} acknowledged", acked.keys.len());
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("credstack.backup");
    loaded.backup(&file);
    check_restored(&file, &loaded.wallets, &acked).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_of_a_running_store_holds_what_was_acknowledged_before_it() {
    if common::ON_POSTGRES {
        return;
    }
    let loaded = Arc::new(loaded_server().await);
    let _log = common::process::LogOnFailure(loaded.log.clone());
    loaded.load("before", 40).await;
    assert!(loaded.unmerged().await > 0.0);
    let acked = std::mem::take(&mut *loaded.acked.lock().unwrap());
    // The load goes on while the backup runs.
    let during = {
        let loaded = loaded.clone();
        tokio::spawn(async move { loaded.load("during", 40).await })
    };
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("credstack.backup");
    {
        let (loaded, file) = (loaded.clone(), file.clone());
        tokio::task::spawn_blocking(move || loaded.backup(&file))
            .await
            .unwrap();
    }
    during.await.unwrap();
    check_restored(&file, &loaded.wallets, &acked).await;
}
