//! PostgreSQL drops every connection of a running `credstack serve`,
//! several times, while clients debit through it.
//!
//! Every answer is a 200 or a clean 503 in the API's error shape (never a
//! 500, never a hang); the service reconnects by itself; and afterwards,
//! with every failed debit retried under its idempotency key, each key is
//! applied exactly once: nothing acknowledged is lost, nothing is applied
//! twice, and rule 16 holds for every wallet.
//!
//! Needs PostgreSQL (see `common/pg.rs`): skipped without it outside CI.

mod common;

use common::Server;
use common::pg::TestDb;
use common::process::{LogOnFailure, Process};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const KEY: &str = "csk_outage_admin_key";
const WALLETS: usize = 4;
const CLIENTS: usize = 16;
const OUTAGES: usize = 5;

/// One debit a client sent: its key, wallet and amount, and whether it
/// was acknowledged.
struct Sent {
    key: String,
    wallet: String,
    amount: i64,
    acknowledged: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_killed_under_load_lose_nothing_acknowledged() {
    let Some(db) = TestDb::create() else { return };
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    let _log = LogOnFailure(log.clone());
    let url = db.url();
    let process = Process::spawn(&["--database-url", url.as_str()], KEY, &log).await;
    let server = Server::remote(&process.base, KEY);
    let cs = server.credit_system("outage", 0).await;
    let mut wallets = Vec::new();
    for _ in 0..WALLETS {
        let wallet = server.wallet_in(&cs).await;
        server
            .grant_ok(&wallet, json!({"amount": "1000000", "purpose": "paid"}))
            .await;
        wallets.push(wallet);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..CLIENTS {
        let server = Server::remote(&process.base, KEY);
        let wallets = wallets.clone();
        let stop = stop.clone();
        clients.spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .unwrap();
            let mut sent = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let n = sent.len();
                let wallet = wallets[(client + n) % wallets.len()].clone();
                let amount = 1 + (n % 9) as i64;
                let key = format!("outage-{client}-{n}");
                let response = http
                    .post(format!("{}/v1/wallets/{wallet}/debits", server.base))
                    .bearer_auth(KEY)
                    .header("Idempotency-Key", &key)
                    .json(&json!({"amount": amount.to_string()}))
                    .send()
                    .await
                    .expect("an answer, not a hang or a dropped connection");
                let status = response.status().as_u16();
                let body: serde_json::Value = response.json().await.expect("a JSON body");
                let acknowledged = match status {
                    200 => true,
                    503 => {
                        assert_eq!(body["error"]["code"], "service_unavailable", "{body}");
                        false
                    }
                    other => panic!("a debit answered {other}: {body}"),
                };
                sent.push(Sent {
                    key,
                    wallet,
                    amount,
                    acknowledged,
                });
            }
            sent
        });
    }

    // Drop every connection of the database, again and again.
    let config = db.config.clone();
    let killed = tokio::task::spawn_blocking(move || {
        std::thread::sleep(Duration::from_millis(700));
        let mut admin = config.connect(postgres::NoTls).expect("admin connection");
        let mut killed = 0;
        for _ in 0..OUTAGES {
            killed += admin
                .query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                     WHERE datname = current_database() AND pid <> pg_backend_pid()",
                    &[],
                )
                .expect("terminate backends")
                .len();
            std::thread::sleep(Duration::from_millis(600));
        }
        std::thread::sleep(Duration::from_millis(700));
        killed
    })
    .await
    .unwrap();
    stop.store(true, Ordering::SeqCst);
    let mut sent = Vec::new();
    while let Some(done) = clients.join_next().await {
        sent.extend(done.expect("client"));
    }
    let acknowledged = sent.iter().filter(|s| s.acknowledged).count();
    let failed = sent.len() - acknowledged;
    eprintln!(
        "{} debits sent: {acknowledged} acknowledged, {failed} answered 503; {killed} connections killed",
        sent.len()
    );
    assert!(killed >= OUTAGES, "connections were killed");
    assert!(failed > 0, "the outages were felt");
    assert!(acknowledged > 0, "debits went through between outages");

    // The service recovered by itself: retry every failed debit under its
    // key until it is answered. Each was applied at most once before (its
    // commit may have landed with the answer lost); now exactly once.
    for debit in sent.iter().filter(|s| !s.acknowledged) {
        let mut tries = 0;
        loop {
            let response = server
                .send(
                    reqwest::Method::POST,
                    &format!("/v1/wallets/{}/debits", debit.wallet),
                    Some(json!({"amount": debit.amount.to_string()})),
                    &[("Idempotency-Key", debit.key.as_str())],
                )
                .await;
            if response.status == 200 {
                break;
            }
            tries += 1;
            assert!(
                tries < 100,
                "the service did not recover: {}",
                response.body
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Each key applied exactly once: the ledger's debits equal the sum of
    // every key's amount, wallet by wallet.
    for wallet in &wallets {
        let expected: i64 = sent
            .iter()
            .filter(|s| &s.wallet == wallet)
            .map(|s| s.amount)
            .sum();
        let debited = server.debited_units(wallet).await;
        assert_eq!(
            debited, expected,
            "{wallet}: every key applied exactly once"
        );
        let balance = server.balance(wallet).await;
        assert_eq!(
            balance["balance"].as_str().unwrap().parse::<i64>().unwrap(),
            1_000_000 - expected
        );
        server.check_invariants(wallet).await;
    }
    drop(process);
}

/// A commit that fails (here a deferred trigger refuses it at COMMIT)
/// leaves no state behind in the writer's memory: after another node moves
/// the wallet on, this node's next debit applies to the committed state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_leaves_nothing_stale_in_memory() {
    use credstack::clock::Clock;
    use credstack::engine::{NewDebit, Outcome, Request};
    use credstack::error::Error;
    use credstack::ledger::{Backend, Config, Ledger};
    let Some(db) = TestDb::create() else { return };
    let open = || {
        Ledger::open(Config {
            backend: Backend::Postgres {
                url: db.url(),
                readers: 2,
            },
            clock: Clock::system(),
            render: credstack::wire::render,
        })
        .expect("open")
    };
    let (a, b) = (open(), open());
    let wallet = common::wallet_with_a_grant(&a, "100").await;
    let debit = |amount: &str| {
        Request::Debit(NewDebit {
            wallet_id: wallet,
            amount: amount.into(),
            description: None,
            metadata: Default::default(),
        })
    };
    // Any debit of 13 is refused at COMMIT.
    let config = db.config.clone();
    tokio::task::spawn_blocking(move || {
        let mut admin = config.connect(postgres::NoTls).unwrap();
        admin
            .batch_execute(
                "CREATE FUNCTION refuse_13() RETURNS trigger LANGUAGE plpgsql AS $$
                 BEGIN IF NEW.amount = -13 THEN RAISE EXCEPTION 'refused at commit'; END IF;
                 RETURN NULL; END $$;
                 CREATE CONSTRAINT TRIGGER refuse_13 AFTER INSERT ON entries
                 DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_13();",
            )
            .unwrap();
    })
    .await
    .unwrap();
    assert_eq!(
        a.execute(debit("13")).await.unwrap_err(),
        Error::Unavailable
    );
    b.execute(debit("1")).await.unwrap();
    let Outcome::Debit(last) = a.execute(debit("1")).await.unwrap() else {
        unreachable!()
    };
    assert_eq!(
        last.balance_after.atomic(),
        98,
        "applied to the committed state"
    );
    let entries: i64 = a
        .read(move |c| {
            let page = c.list_entries(wallet, true, 100, None)?;
            Ok(page.items.iter().map(|e| e.amount.atomic()).sum())
        })
        .await
        .unwrap();
    assert_eq!(entries, 98);
}
