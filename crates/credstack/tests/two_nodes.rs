//! Two real `credstack serve` processes on one PostgreSQL database (SPEC §2
//! across processes), started at the same moment so they also migrate and
//! store the bootstrap key at once.
//!
//! - Concurrent clients hammer the same wallets through both nodes with
//!   debits, holds, captures and releases: the units spent equal exactly
//!   what the grants allowed, nothing is spent twice, and rule 16 holds for
//!   every wallet, read from either node.
//! - An idempotency key used on one node replays on the other, also when
//!   both receive it at the same moment.
//! - An expiry and a hold expiry happen once, though both nodes sweep; with
//!   simulated clocks moved on both nodes at once, every renewal, forfeit
//!   and expiry of twenty wallets is written once.
//! - A call to all customers sent to both nodes at once with one key runs
//!   once (the campaign allows multiple grants, so a second run would show);
//!   sent without a key, the second is refused while the first runs.
//!
//! Needs PostgreSQL (see `common/pg.rs`): skipped without it outside CI.

mod common;

use common::Server;
use common::pg::TestDb;
use common::process::{LogOnFailure, Process};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

const KEY: &str = "csk_two_nodes_admin_key";
const WALLETS: usize = 6;
const UNITS: i64 = 300;
const CLIENTS_PER_NODE: usize = 12;

async fn two_nodes(db: &TestDb, log: &std::path::Path) -> (Process, Process) {
    let url = db.url();
    let args = ["--database-url", url.as_str()];
    tokio::join!(
        Process::spawn(&args, KEY, log),
        Process::spawn(&args, KEY, log)
    )
}

/// Units each wallet spent: acknowledged debits and captures.
struct Spent(HashMap<String, AtomicI64>);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_share_wallets_keys_sweeps_and_campaigns() {
    let Some(db) = TestDb::create() else { return };
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    let _log = LogOnFailure(log.clone());
    let (a, b) = two_nodes(&db, &log).await;
    let nodes = [Server::remote(&a.base, KEY), Server::remote(&b.base, KEY)];

    // Wallets made through node A, each with UNITS units in two grants.
    let cs = nodes[0].credit_system("tokens", 0).await;
    let mut wallets = Vec::new();
    for _ in 0..WALLETS {
        let wallet = nodes[0].wallet_in(&cs).await;
        nodes[0]
            .grant_ok(
                &wallet,
                json!({"amount": (UNITS - 100).to_string(), "purpose": "paid"}),
            )
            .await;
        nodes[1]
            .grant_ok(&wallet, json!({"amount": "100", "purpose": "promotional"}))
            .await;
        wallets.push(wallet);
    }

    // The hammer: every client on one node, ops on random wallets, far
    // more demand than the wallets hold.
    let spent = Arc::new(Spent(
        wallets
            .iter()
            .map(|w| (w.clone(), AtomicI64::new(0)))
            .collect(),
    ));
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..2 * CLIENTS_PER_NODE {
        let node = Server::remote(&nodes[client % 2].base, KEY);
        let wallets = wallets.clone();
        let spent = spent.clone();
        clients.spawn(async move { hammer(client, node, wallets, spent).await });
    }
    let mut ops = 0;
    while let Some(done) = clients.join_next().await {
        ops += done.expect("client");
    }
    eprintln!("{ops} operations through two nodes");
    for wallet in &wallets {
        let spent = spent.0[wallet].load(Ordering::SeqCst);
        assert_eq!(spent, UNITS, "{wallet}: spent exactly what was granted");
        for node in &nodes {
            let balance = node.balance(wallet).await;
            assert_eq!(
                (&balance["balance"], &balance["held"]),
                (&json!("0"), &json!("0"))
            );
            node.check_invariants(wallet).await;
        }
        let debited = nodes[1].debited_units(wallet).await;
        assert_eq!(
            debited, UNITS,
            "the ledger agrees with the acknowledgements"
        );
    }

    keys_replay_across_nodes(&nodes, &cs).await;
    sweeps_happen_once(&nodes, &cs).await;
    campaigns_run_once(&nodes, &cs, &wallets).await;
    drop((a, b));
}

/// One client's share of the hammer; returns how many operations it sent.
async fn hammer(client: usize, node: Server, wallets: Vec<String>, spent: Arc<Spent>) -> usize {
    let mut ops = 0;
    let mut dry = 0;
    let mut n: u64 = client as u64 * 7919 + 1;
    let mut next = || {
        // xorshift: deterministic, no shared state between clients.
        n ^= n << 13;
        n ^= n >> 7;
        n ^= n << 17;
        n
    };
    while dry < 40 {
        ops += 1;
        let wallet = &wallets[next() as usize % wallets.len()];
        let key = format!("hammer-{client}-{ops}");
        let headers = [("Idempotency-Key", key.as_str())];
        if next() % 4 != 0 {
            let amount = 1 + next() % 3;
            let response = node
                .send(
                    reqwest::Method::POST,
                    &format!("/v1/wallets/{wallet}/debits"),
                    Some(json!({"amount": amount.to_string()})),
                    &headers,
                )
                .await;
            match response.status.as_u16() {
                200 => {
                    spent.0[wallet].fetch_add(amount as i64, Ordering::SeqCst);
                }
                402 => dry += 1,
                other => panic!("debit answered {other}: {}", response.body),
            }
            continue;
        }
        let amount = 1 + next() % 5;
        let response = node
            .send(
                reqwest::Method::POST,
                &format!("/v1/wallets/{wallet}/holds"),
                Some(json!({"amount": amount.to_string(), "expires_in_seconds": 60})),
                &headers,
            )
            .await;
        match response.status.as_u16() {
            200 => {}
            402 => {
                dry += 1;
                continue;
            }
            other => panic!("hold answered {other}: {}", response.body),
        }
        let hold = response.id();
        if next() % 3 == 0 {
            node.post(&format!("/v1/holds/{hold}/release"), json!({}))
                .await
                .ok();
        } else {
            let capture = 1 + next() % amount;
            node.post(
                &format!("/v1/holds/{hold}/capture"),
                json!({"amount": capture.to_string()}),
            )
            .await
            .ok();
            spent.0[wallet].fetch_add(capture as i64, Ordering::SeqCst);
        }
    }
    ops
}

async fn keys_replay_across_nodes(nodes: &[Server; 2], cs: &str) {
    let wallet = nodes[0].wallet_in(cs).await;
    nodes[0]
        .grant_ok(&wallet, json!({"amount": "100", "purpose": "paid"}))
        .await;
    let path = format!("/v1/wallets/{wallet}/debits");
    let headers = [("Idempotency-Key", "cross-node-1")];
    let first = nodes[0]
        .send(
            reqwest::Method::POST,
            &path,
            Some(json!({"amount": "7"})),
            &headers,
        )
        .await
        .ok();
    let again = nodes[1]
        .send(
            reqwest::Method::POST,
            &path,
            Some(json!({"amount": "7"})),
            &headers,
        )
        .await
        .ok();
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.body, first.body);
    // The same key on both nodes at the same moment: applied once.
    let headers = [("Idempotency-Key", "cross-node-2")];
    let (x, y) = tokio::join!(
        nodes[0].send(
            reqwest::Method::POST,
            &path,
            Some(json!({"amount": "11"})),
            &headers
        ),
        nodes[1].send(
            reqwest::Method::POST,
            &path,
            Some(json!({"amount": "11"})),
            &headers
        ),
    );
    let (x, y) = (x.ok(), y.ok());
    assert_eq!(x.body, y.body, "one debit, answered twice");
    let replayed = [&x, &y]
        .iter()
        .filter(|r| r.headers.get("idempotent-replayed").is_some())
        .count();
    assert_eq!(replayed, 1);
    assert_eq!(nodes[1].balance(&wallet).await["balance"], "82");
    nodes[0].check_invariants(&wallet).await;
}

async fn sweeps_happen_once(nodes: &[Server; 2], cs: &str) {
    let wallet = nodes[0].wallet_in(cs).await;
    let soon = (chrono::Utc::now() + chrono::Duration::seconds(3))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    nodes[0]
        .grant_ok(
            &wallet,
            json!({"amount": "50", "purpose": "promotional", "expires_at": soon}),
        )
        .await;
    nodes[1]
        .grant_ok(&wallet, json!({"amount": "20", "purpose": "paid"}))
        .await;
    nodes[1]
        .post(
            &format!("/v1/wallets/{wallet}/holds"),
            json!({"amount": "5", "expires_in_seconds": 1}),
        )
        .await
        .ok();
    // The hold lapses (about 1 s) well before the grant expires (2 to 3 s:
    // `soon` drops the fraction), so the grant expires whole, in one entry.
    // A hold that lapsed after its grant expired would expire its 5 in an
    // entry of its own, rightly, and this test would count two.
    // Both nodes sweep every half second; nobody reads the wallet meanwhile.
    tokio::time::sleep(Duration::from_millis(5000)).await;
    let entries = nodes[1].entries(&wallet).await;
    let expiries = entries.iter().filter(|e| e["type"] == "expiry").count();
    assert_eq!(expiries, 1, "one expiry entry: {entries:?}");
    let balance = nodes[0].balance(&wallet).await;
    assert_eq!(
        (&balance["balance"], &balance["held"]),
        (&json!("20"), &json!("0"))
    );
    for node in nodes {
        node.check_invariants(&wallet).await;
    }
}

/// How many grants of campaign `promo` each of these wallets holds.
async fn promo_grants(node: &Server, promo: &str, wallets: &[String]) -> Vec<usize> {
    let mut counts = Vec::new();
    for wallet in wallets {
        let grants = node.grants(wallet).await;
        counts.push(
            grants
                .iter()
                .filter(|g| g["source"]["promotional_credit_id"] == promo)
                .count(),
        );
    }
    counts
}

async fn campaigns_run_once(nodes: &[Server; 2], cs: &str, wallets: &[String]) {
    let customers = 1500;
    let mut made = tokio::task::JoinSet::new();
    for worker in 0..16 {
        let node = Server::remote(&nodes[worker % 2].base, KEY);
        let cs = cs.to_string();
        made.spawn(async move {
            for _ in (worker..customers).step_by(16) {
                node.wallet_in(&cs).await;
            }
        });
    }
    while let Some(done) = made.join_next().await {
        done.expect("wallet maker");
    }
    let promo = nodes[0]
        .post(
            "/v1/promotional_credits",
            json!({"name": "Both nodes", "credit_system_id": cs, "quantity": "3",
                   "allow_multiple_grants": true}),
        )
        .await
        .ok()
        .id();
    let path = format!("/v1/promotional_credits/{promo}/grant");
    let all = json!({"all_customers": true});
    // Both nodes take the same keyed call at once. The one that waits for
    // the campaign's lock may give up after PostgreSQL's lock_timeout (5 s)
    // while the other holds it for a chunk, on a loaded machine: a 503 that
    // changed nothing, which a client answers by sending the same key again.
    let grant_everyone = |node: &Server| {
        let (path, all) = (path.clone(), all.clone());
        let node = Server::remote(&node.base, KEY);
        async move {
            let headers = [("Idempotency-Key", "grant-everyone")];
            let mut tries = 0;
            loop {
                let response = node
                    .send(reqwest::Method::POST, &path, Some(all.clone()), &headers)
                    .await;
                tries += 1;
                if response.status.as_u16() != 503 || tries == 5 {
                    return response;
                }
            }
        }
    };
    let (x, y) = tokio::join!(grant_everyone(&nodes[0]), grant_everyone(&nodes[1]));
    let (x, y) = (x.ok(), y.ok());
    assert_eq!(x.body, y.body, "one run, answered twice");
    let granted = x.body["granted_count"].as_u64().unwrap();
    let promotion = nodes[1]
        .get(&format!("/v1/promotional_credits/{promo}"))
        .await
        .ok();
    assert_eq!(
        promotion.body["granted_count"].as_u64(),
        Some(granted),
        "every customer granted once, though multiple grants are allowed"
    );
    assert!(granted as usize >= customers);

    // Without a key, a second call while the first runs is refused.
    let (x, y) = tokio::join!(
        nodes[0].send(reqwest::Method::POST, &path, Some(all.clone()), &[]),
        nodes[1].send(reqwest::Method::POST, &path, Some(all.clone()), &[]),
    );
    let statuses = [x.status.as_u16(), y.status.as_u16()];
    let ran = statuses.iter().filter(|s| **s == 200).count();
    for response in [&x, &y] {
        if response.status != 200 {
            assert_eq!(response.status, 409, "{}", response.body);
            assert_eq!(response.error_code(), "bulk_run_in_progress");
        }
    }
    assert_eq!(
        promo_grants(&nodes[0], &promo, wallets).await,
        vec![1 + ran; wallets.len()],
        "each run that answered 200 granted everyone once more: {statuses:?}"
    );
}

/// Renewals and expiries on two nodes whose (simulated) clocks both move
/// past them: both sweep, each event is written once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_write_each_renewal_and_expiry_once() {
    let Some(db) = TestDb::create() else { return };
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    let _log = LogOnFailure(log.clone());
    let url = db.url();
    let args = [
        "--database-url",
        url.as_str(),
        "--clock",
        "simulated",
        "--start",
        common::START,
    ];
    let (a, b) = tokio::join!(
        Process::spawn(&args, KEY, &log),
        Process::spawn(&args, KEY, &log)
    );
    let nodes = [Server::remote(&a.base, KEY), Server::remote(&b.base, KEY)];
    let cs = nodes[0].credit_system("tokens", 0).await;
    let mut wallets = Vec::new();
    for index in 0..20 {
        let wallet = nodes[index % 2].wallet_in(&cs).await;
        nodes[0]
            .grant_ok(
                &wallet,
                json!({"amount": "100", "purpose": "bundled", "recurrence": {"interval": "month"}}),
            )
            .await;
        nodes[1]
            .grant_ok(
                &wallet,
                json!({"amount": "40", "purpose": "promotional", "expires_at": "2025-02-15T00:00:00Z"}),
            )
            .await;
        // The promotional grant burns first: 10 of it is left to expire.
        nodes[index % 2].debit(&wallet, "30").await.ok();
        wallets.push(wallet);
    }
    // Both clocks move past the expiry (Feb 15) and two renewals (Feb 28,
    // Mar 31) at the same moment; each node sweeps as its clock moves.
    tokio::join!(
        nodes[0].advance("2025-04-02T00:00:00Z"),
        nodes[1].advance("2025-04-02T00:00:00Z")
    );
    for wallet in &wallets {
        // Two grants and the debit, then: the promotional grant's expiry
        // (-10 on Feb 15), and at each renewal the unused allowance
        // forfeited (an `expiry` of -100) and renewed (+100). Anything
        // written twice would show here.
        let entries = nodes[1].entries(wallet).await;
        let kinds: Vec<(&str, &str)> = entries
            .iter()
            .map(|e| (e["type"].as_str().unwrap(), e["amount"].as_str().unwrap()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("grant", "100"),
                ("grant", "40"),
                ("debit", "-30"),
                ("expiry", "-10"),
                ("expiry", "-100"),
                ("renewal", "100"),
                ("expiry", "-100"),
                ("renewal", "100"),
            ]
        );
        let balance = nodes[0].balance(wallet).await;
        assert_eq!(balance["balance"], "100");
        for node in &nodes {
            node.check_invariants(wallet).await;
        }
    }
    drop((a, b));
}
