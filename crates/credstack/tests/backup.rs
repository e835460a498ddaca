//! `credstack backup` and `credstack restore` of the embedded store (issue
//! 7): a backup taken while writers are busy is one consistent snapshot,
//! so every wallet's ledger in it is an exact prefix of the live one; it
//! verifies, restores into an empty data directory, and serves again. Both
//! commands refuse to overwrite anything. (PostgreSQL is backed up with its
//! own tools: RELIABILITY.md.)

mod common;

use common::{Server, run_cli as run};
use credstack::ledger::{Backend, open_store};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temp path")
}

/// Every entry of every wallet in the store at `data_dir`, by wallet.
fn ledgers(data_dir: &Path, wallets: &[u128]) -> Vec<Vec<credstack::records::EntryRecord>> {
    let mut store = open_store(&Backend::Embedded {
        data_dir: data_dir.to_path_buf(),
    })
    .expect("open the store");
    wallets
        .iter()
        .map(|&wallet| {
            let mut all = Vec::new();
            let mut after = None;
            loop {
                let page = store.list_entries(wallet, true, 1000, after).unwrap();
                after = page.items.last().map(|e| e.id);
                all.extend(page.items);
                if !page.has_more {
                    return all;
                }
            }
        })
        .collect()
}

#[tokio::test]
async fn an_online_backup_is_a_consistent_prefix_of_the_live_ledger() {
    if common::ON_POSTGRES {
        return;
    }
    // At the real time: the restored server runs on the system clock, and
    // would find keys made on the simulated one past their keeping time.
    let server = Arc::new(Server::start_at(&chrono::Utc::now().to_rfc3339()).await);
    let system = server.credit_system("tokens", 0).await;
    let mut wallets = Vec::new();
    for _ in 0..6 {
        let wallet = server.wallet_in(&system).await;
        server
            .grant_ok(&wallet, json!({"amount": "1000000", "purpose": "paid"}))
            .await;
        wallets.push(wallet);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for wallet in wallets.clone() {
        let (server, stop, written) = (server.clone(), stop.clone(), written.clone());
        writers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                server.debit(&wallet, "1").await.ok();
                written.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    while written.load(Ordering::Relaxed) < 200 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // Keyed debits, one taken and one refused, that the backup will hold.
    let debits = format!("/v1/wallets/{}/debits", wallets[0]);
    let taken = server
        .post_key(&debits, json!({"amount": "7"}), "backup-taken")
        .await;
    assert_eq!(taken.status, 200, "{}", taken.body);
    let refused = server
        .post_key(&debits, json!({"amount": "999999999"}), "backup-refused")
        .await;
    assert_eq!(refused.status, 402, "{}", refused.body);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("credstack.backup");
    let out = ["--out", path(&file)];
    let (code, report) = {
        let server = server.clone();
        let out = out.map(str::to_string);
        tokio::task::spawn_blocking(move || {
            server.cli(
                "backup",
                &out.iter().map(String::as_str).collect::<Vec<_>>(),
            )
        })
        .await
        .unwrap()
    };
    assert_eq!(code, 0, "{report}");
    assert!(report.contains("OK: every balance"), "{report}");
    // The writers go on past the backup's snapshot.
    let at_backup = written.load(Ordering::Relaxed);
    while written.load(Ordering::Relaxed) < at_backup + 50 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }

    // A backup never overwrites, not even an earlier backup.
    let (code, text) = server.cli("backup", &out);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("exists already"), "{text}");

    let restored = dir.path().join("restored");
    let (code, text) = run(&["restore", "--from", path(&file), "--data", path(&restored)]);
    assert_eq!(code, 0, "{text}");
    let (code, text) = run(&["restore", "--from", path(&file), "--data", path(&restored)]);
    assert_eq!(code, 1, "a restore never overwrites a store: {text}");
    assert!(text.contains("exists"), "{text}");
    // Nor does it restore beside another store's journal, whose batches
    // the first start would merge into the restored store.
    let beside_a_journal = dir.path().join("beside-a-journal");
    std::fs::create_dir_all(&beside_a_journal).unwrap();
    std::fs::write(beside_a_journal.join("journal.db"), b"").unwrap();
    let (code, text) = run(&[
        "restore",
        "--from",
        path(&file),
        "--data",
        path(&beside_a_journal),
    ]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("journal.db exists"), "{text}");
    assert!(!beside_a_journal.join("credstack.db").exists());
    let (code, text) = run(&["verify", "--data", path(&restored)]);
    assert_eq!(code, 0, "{text}");

    // Each wallet's ledger in the backup is a prefix of the live ledger:
    // one snapshot, whole batches only, nothing that was not committed.
    let ids: Vec<u128> = wallets
        .iter()
        .map(|w| credstack::ids::parse(credstack::ids::Kind::Wallet, w).unwrap())
        .collect();
    let live_dir = std::path::PathBuf::from(&server.store_args()[1]);
    let live = ledgers(&live_dir, &ids);
    let backed_up = ledgers(&restored, &ids);
    let (mut in_backup, mut in_live) = (0, 0);
    for (live, backed_up) in live.iter().zip(&backed_up) {
        assert!(backed_up.len() >= 2, "the grant and some debits");
        assert_eq!(&live[..backed_up.len()], backed_up.as_slice());
        in_backup += backed_up.len();
        in_live += live.len();
    }
    assert!(in_live > in_backup, "{in_live} live, {in_backup} backed up");

    // The restored store serves: its balances are the backup's.
    let restored_server = common::process::Process::spawn(
        &["--data", path(&restored)],
        "csk_restored_admin_key",
        &dir.path().join("serve.log"),
    )
    .await;
    let client = Server::remote(&restored_server.base, "csk_restored_admin_key");
    for (wallet, entries) in wallets.iter().zip(&backed_up) {
        let balance = client.balance(wallet).await;
        let expected = entries.last().unwrap().balance_after.atomic().to_string();
        assert_eq!(balance["balance"], expected.as_str(), "{balance}");
    }
    // The backup holds the idempotency keys: a retry of a backed-up debit
    // replays its first answer, and the taken one is not taken twice.
    let before = client.balance(&wallets[0]).await;
    for (key, amount, first) in [
        ("backup-taken", "7", &taken),
        ("backup-refused", "999999999", &refused),
    ] {
        let again = client
            .post_key(&debits, json!({"amount": amount}), key)
            .await;
        assert_eq!(again.status, first.status, "{}", again.body);
        assert_eq!(again.body, first.body);
        assert_eq!(again.headers["idempotent-replayed"], "true");
    }
    assert_eq!(
        client.balance(&wallets[0]).await["balance"],
        before["balance"]
    );
}

#[test]
fn backup_of_postgres_points_to_its_own_tools() {
    let (code, text) = run(&[
        "backup",
        "--database-url",
        "postgres://nobody@127.0.0.1:1/none",
        "--out",
        "/nonexistent/x",
    ]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("pg_dump"), "{text}");
}

#[test]
fn verify_and_backup_refuse_a_missing_store() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none");
    let (code, text) = run(&["verify", "--data", path(&missing)]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("no credstack store"), "{text}");
    let out = dir.path().join("b");
    let (code, text) = run(&["backup", "--data", path(&missing), "--out", path(&out)]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("no credstack store"), "{text}");
    assert!(!out.exists());
    assert!(!missing.exists(), "nothing created");
}

/// A long `verify` (and `backup`, which verifies its copy) draws a progress
/// bar on a terminal, and nothing but its report otherwise. The terminal is
/// a pseudo-terminal from util-linux's `script`.
#[tokio::test]
async fn verify_draws_progress_on_a_terminal_only() {
    if common::ON_POSTGRES {
        return;
    }
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs util-linux's script"
        );
        println!("SKIP: no `script` to make a terminal");
        return;
    }
    let server = Server::start().await;
    let system = server.credit_system("tokens", 0).await;
    for _ in 0..3 {
        let wallet = server.wallet_in(&system).await;
        server
            .grant_ok(&wallet, json!({"amount": "5", "purpose": "paid"}))
            .await;
    }
    let args = server.store_args();
    let command = format!(
        "{} verify {} {}",
        env!("CARGO_BIN_EXE_credstack"),
        args[0],
        args[1]
    );
    let output = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env_remove("CREDSTACK_DATA")
        .env_remove("DATABASE_URL")
        .output()
        .expect("run script");
    let on_terminal = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{on_terminal}");
    assert!(on_terminal.contains("verifying"), "{on_terminal}");
    assert!(on_terminal.contains("3/3 wallets"), "{on_terminal}");
    assert!(on_terminal.contains("OK: every balance"), "{on_terminal}");
    let (code, piped) = server.cli("verify", &[]);
    assert_eq!(code, 0, "{piped}");
    assert!(
        !piped.contains("/3 wallets"),
        "no bar when not a terminal: {piped}"
    );
    assert!(piped.starts_with("checked 3 wallets"), "{piped}");
}
