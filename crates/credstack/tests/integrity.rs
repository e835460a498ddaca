//! `credstack verify` (issue 7, integrity): a ledger built through every
//! kind of write verifies clean, online, beside a busy writer; every kind of
//! damage done to the store behind the ledger's back is found and named;
//! and a store migrated from before entries had hashes gets the very
//! hashes the writer would have written. `integrity_postgres.rs` runs all of
//! it again on PostgreSQL.

mod common;

use common::Server;
use credstack::ids::{self, Kind};
use serde_json::json;

/// A ledger with every kind of entry: grants of each purpose, a scheduled
/// one arriving, renewals with rollover, expiries, debt and its repayment,
/// holds captured, released and expired, a void, a batch. Returns its wallets.
async fn busy_ledger(server: &Server) -> Vec<String> {
    let system = server.credit_system("tokens", 2).await;
    let mut wallets = Vec::new();
    for n in 0..4 {
        let wallet = server.wallet_with_overdraft(&system, "50").await;
        server
            .grant_ok(
                &wallet,
                json!({"amount": "100", "purpose": "promotional", "expires_at": "2025-02-15T00:00:00Z"}),
            )
            .await;
        server
            .grant_ok(
                &wallet,
                json!({"amount": "300", "purpose": "bundled",
                       "recurrence": {"interval": "month", "interval_count": 1},
                       "rollover_max": "50"}),
            )
            .await;
        let paid = server
            .grant_ok(&wallet, json!({"amount": "25.50", "purpose": "paid"}))
            .await;
        server
            .grant_ok(
                &wallet,
                json!({"amount": "10", "purpose": "paid", "effective_at": "2025-02-10T00:00:00Z"}),
            )
            .await;
        for amount in ["12.34", "150", "0.01"] {
            server.debit(&wallet, amount).await.ok();
        }
        let captured = server
            .hold(&wallet, json!({"amount": "20"}))
            .await
            .ok()
            .id();
        server
            .post(
                &format!("/v1/holds/{captured}/capture"),
                json!({"amount": "25"}),
            )
            .await
            .ok();
        let released = server.hold(&wallet, json!({"amount": "5"})).await.ok().id();
        server
            .post(&format!("/v1/holds/{released}/release"), json!({}))
            .await
            .ok();
        server
            .hold(&wallet, json!({"amount": "1", "expires_in_seconds": 60}))
            .await
            .ok();
        if n % 2 == 0 {
            server
                .post(&format!("/v1/grants/{paid}/void"), json!({}))
                .await
                .ok();
        }
        wallets.push(wallet);
    }
    let items: Vec<_> = wallets
        .iter()
        .enumerate()
        .map(|(i, w)| json!({"wallet_id": w, "amount": "1", "idempotency_key": format!("batch-{i}")}))
        .collect();
    server
        .post("/v1/debits/batch", json!({ "debits": items }))
        .await
        .ok();
    // Holds expire, the scheduled grant arrives, the promotion expires,
    // the bundled grant renews twice (rolling over up to 50).
    server.advance("2025-03-31T12:00:00Z").await;
    for wallet in &wallets {
        // Into debt, then a grant that repays it first.
        let available = server.balance(wallet).await["available"]
            .as_str()
            .unwrap()
            .to_string();
        server.debit(wallet, &available).await.ok();
        server.debit(wallet, "40").await.ok();
        server
            .grant_ok(wallet, json!({"amount": "60", "purpose": "paid"}))
            .await;
        // Reads materialise what happened since (rule 11).
        server.check_invariants(wallet).await;
    }
    wallets
}

fn wallet_bytes_id(wallet: &str) -> u128 {
    ids::parse(Kind::Wallet, wallet).expect("a wallet id")
}

#[tokio::test]
async fn a_busy_ledger_verifies_online() {
    let server = Server::start().await;
    let wallets = busy_ledger(&server).await;
    let (code, report) = server.cli("verify", &[]);
    assert_eq!(code, 0, "{report}");
    assert!(report.contains("OK: every balance"), "{report}");
    assert!(
        report.contains(&format!("checked {} wallets", wallets.len())),
        "{report}"
    );
    let entries: usize = {
        let mut total = 0;
        for wallet in &wallets {
            total += server.entries(wallet).await.len();
        }
        total
    };
    assert!(
        report.contains(&format!("{entries} entries")),
        "every entry read: {entries} in {report}"
    );
}

#[tokio::test]
async fn verify_runs_beside_a_busy_writer() {
    let server = std::sync::Arc::new(Server::start().await);
    let wallets = busy_ledger(&server).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for wallet in wallets.clone() {
        let (server, stop) = (server.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut debits = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                server
                    .grant_ok(&wallet, json!({"amount": "1", "purpose": "paid"}))
                    .await;
                server.debit(&wallet, "0.5").await.ok();
                debits += 1;
            }
            debits
        }));
    }
    for _ in 0..3 {
        let server = server.clone();
        let (code, report) = tokio::task::spawn_blocking(move || server.cli("verify", &[]))
            .await
            .unwrap();
        assert_eq!(code, 0, "{report}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut debits = 0;
    for writer in writers {
        debits += writer.await.unwrap();
    }
    assert!(debits > 0, "the writers wrote while verify ran");
    let (code, report) = server.cli("verify", &[]);
    assert_eq!(code, 0, "{report}");
}

/// One kind of damage: what is done to one wallet's rows, and what the
/// report must then say of that wallet.
struct Damage {
    name: &'static str,
    sql: &'static str,
    reported: &'static [&'static str],
}

const DAMAGE: &[Damage] = &[
    Damage {
        name: "an entry's amount edited",
        sql: "UPDATE entries SET amount = amount + 1 WHERE wallet_id = $1 AND sequence = 3",
        reported: &["does not match its hash", "is not the sum of its entries"],
    },
    Damage {
        name: "an entry's time edited",
        sql: "UPDATE entries SET occurred_at = occurred_at - 1000000 WHERE wallet_id = $1 AND sequence = 2",
        reported: &[
            "(sequence 2) does not match its hash",
            "(sequence 2) is dated",
        ],
    },
    Damage {
        name: "an entry in the middle deleted",
        sql: "DELETE FROM entries WHERE wallet_id = $1 AND sequence = 4",
        reported: &[
            "has sequence 5 where 4 was expected",
            "does not match its hash",
        ],
    },
    Damage {
        name: "the last entry deleted",
        sql: "DELETE FROM entries WHERE wallet_id = $1
              AND sequence = (SELECT max(sequence) FROM entries WHERE wallet_id = $1)",
        reported: &["entries were deleted or added"],
    },
    Damage {
        name: "a wallet's balance edited",
        sql: "UPDATE wallets SET balance = balance + 100 WHERE id = $1",
        reported: &["balance must equal grant remainders minus debt"],
    },
    Damage {
        name: "a grant's remainder edited",
        sql: "UPDATE grants SET remaining = remaining + 7 WHERE wallet_id = $1 AND purpose = 'bundled'",
        reported: &["remaining", "is not the sum of its entries"],
    },
    Damage {
        name: "a debit deleted",
        sql: "DELETE FROM debits WHERE id = (SELECT id FROM debits WHERE wallet_id = $1 ORDER BY id LIMIT 1)",
        reported: &["which is not one of this wallet's debits"],
    },
    Damage {
        name: "a debit's amount edited",
        sql: "UPDATE debits SET amount = amount * 2 WHERE id = (SELECT id FROM debits WHERE wallet_id = $1 ORDER BY id LIMIT 1)",
        reported: &["but allocations sum to", "but its entries sum to"],
    },
    Damage {
        name: "a wallet's debt edited",
        sql: "UPDATE wallets SET debt = debt + 1, balance = balance - 1 WHERE id = $1",
        reported: &["debt 1 is not minus the sum of its entries without a grant"],
    },
];

#[tokio::test]
async fn verify_names_every_kind_of_damage() {
    let server = Server::start().await;
    let system = server.credit_system("tokens", 2).await;
    let mut damaged = Vec::new();
    for damage in DAMAGE {
        let wallet = server.wallet_in(&system).await;
        server
            .grant_ok(&wallet, json!({"amount": "100", "purpose": "paid"}))
            .await;
        server
            .grant_ok(
                &wallet,
                json!({"amount": "50", "purpose": "bundled",
                       "recurrence": {"interval": "month", "interval_count": 1}}),
            )
            .await;
        for amount in ["10", "60", "5", "1"] {
            server.debit(&wallet, amount).await.ok();
        }
        damaged.push((damage, wallet));
    }
    let untouched = server.wallet_in(&system).await;
    server
        .grant_ok(&untouched, json!({"amount": "9", "purpose": "paid"}))
        .await;
    server.debit(&untouched, "4").await.ok();
    let (code, report) = server.cli("verify", &[]);
    assert_eq!(code, 0, "clean before the damage: {report}");

    for (damage, wallet) in &damaged {
        let changed = server.execute_sql(damage.sql, Some(wallet_bytes_id(wallet)));
        assert!(changed > 0, "{}: the damage changed a row", damage.name);
    }
    let (code, report) = server.cli("verify", &[]);
    assert_eq!(code, 1, "verify fails: {report}");
    assert!(report.contains("FAILED"), "{report}");
    for (damage, wallet) in &damaged {
        let lines: Vec<&str> = report
            .lines()
            .filter(|line| line.trim_start().starts_with(wallet.as_str()))
            .collect();
        for needle in damage.reported {
            assert!(
                lines.iter().any(|line| line.contains(needle)),
                "{}: expected {needle:?} for {wallet} in\n{report}",
                damage.name
            );
        }
    }
    assert!(
        !report.contains(&untouched),
        "the untouched wallet is not reported: {report}"
    );
}

#[tokio::test]
async fn a_store_from_before_hashes_gets_the_hashes_the_writer_writes() {
    let server = Server::start().await;
    busy_ledger(&server).await;
    let (code, before) = server.cli("verify", &[]);
    assert_eq!(code, 0, "{before}");
    let digest = |report: &str| {
        report
            .lines()
            .find_map(|line| line.strip_prefix("ledger digest: "))
            .expect("a digest")
            .to_string()
    };
    // Back to the previous schema version: no hash column, and none of
    // what the versions since added that they cannot add twice (the
    // events and webhooks of embedded v14 and PostgreSQL v8).
    let since_hashes = [
        "DROP TABLE webhook_attempts",
        "DROP TABLE webhook_deliveries",
        "DROP TABLE webhook_endpoints",
        "DROP TABLE events",
        "ALTER TABLE wallets DROP COLUMN low_balance_threshold",
        "ALTER TABLE entries DROP COLUMN hash",
    ];
    for sql in since_hashes {
        server.execute_sql(sql, None);
    }
    match &server.db {
        Some(_) => {
            server.execute_sql("DELETE FROM schema_migrations WHERE version >= 6", None);
        }
        None => {
            server.execute_sql("PRAGMA user_version = 9", None);
        }
    }
    // verify migrates the store as serve would: the backfill chains every
    // entry, and the chain heads are the ones the writer had written.
    let (code, after) = server.cli("verify", &[]);
    assert_eq!(code, 0, "{after}");
    assert_eq!(digest(&after), digest(&before), "{before}\n{after}");
}
