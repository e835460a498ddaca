//! The embedded store's journal (`store::journal`): batches merge into the
//! store exactly once, however many mergers run and however often, each
//! wallet's state lands as its last with its version moved once per batch,
//! and a journal in a format this release does not know is refused.
//! Crashes and restarts with a journal in use are `crash.rs`'s; reads
//! following writes are every HTTP suite's.

use credstack::ledger::{Backend, Config, Ledger};
use credstack::records::{Change, CreditSystem, Customer, EntryRecord, WalletInfo};
use credstack::store::Store;
use credstack::store::journal::{self, Body, Journal};
use credstack::store::sqlite;
use credstack_core::{Amount, EntryKind, Scale, Wallet};

fn at(seconds: i64) -> credstack_core::Instant {
    chrono::DateTime::from_timestamp(1_790_000_000 + seconds, 0).unwrap()
}

/// A store with one wallet (id 3), and its journal.
fn store_with_a_wallet(dir: &std::path::Path) -> (rusqlite::Connection, WalletInfo) {
    let mut main = sqlite::open(&dir.join("credstack.db")).unwrap();
    let scale = Scale::new(0).unwrap();
    main.upsert_credit_system(&CreditSystem {
        id: 1,
        key: "tokens".into(),
        name: "Tokens".into(),
        unit: "token".into(),
        scale,
        active: true,
        created_at: at(0),
    })
    .unwrap();
    main.upsert_customer(&Customer {
        id: 2,
        name: "Ada".into(),
        email: None,
        external_id: None,
        metadata: Default::default(),
        created_at: at(0),
    })
    .unwrap();
    let info = WalletInfo {
        id: 3,
        customer_id: 2,
        credit_system_id: 1,
        scale,
        created_at: at(0),
        low_balance_threshold: None,
    };
    main.insert_wallet(&info, &Wallet::new(Amount::from_atomic(100)))
        .unwrap();
    (main, info)
}

/// Batch `n`: one debt entry of 1 and the wallet's state after it.
fn batch(info: &WalletInfo, n: u64) -> Body {
    let mut body = Body::default();
    let entry = EntryRecord {
        id: 1_000 + u128::from(n),
        wallet_id: info.id,
        scale: info.scale,
        sequence: n,
        kind: EntryKind::Debit,
        amount: Amount::from_atomic(-1),
        balance_after: Amount::from_atomic(-(n as i64)),
        occurred_at: at(n as i64),
        grant_id: None,
        reference: format!("debit_{n}"),
        hash: [n as u8; 32],
    };
    body.push_change(&Change::Entry(entry));
    let mut wallet = Wallet::new(Amount::from_atomic(100));
    wallet.debt = Amount::from_atomic(n as i64);
    wallet.balance = Amount::from_atomic(-(n as i64));
    wallet.last_sequence = n;
    body.push_change(&Change::WalletState(info.clone(), wallet, Vec::new()));
    body
}

fn count(c: &rusqlite::Connection, sql: &str) -> i64 {
    c.query_row(sql, [], |row| row.get(0)).unwrap()
}

#[test]
fn batches_merge_exactly_once_with_the_last_state() {
    let dir = tempfile::tempdir().unwrap();
    let (main, info) = store_with_a_wallet(dir.path());
    let journal_path = journal::path(dir.path());
    let mut writer = Journal::open(&journal_path, 0).unwrap();
    for n in 1..=40 {
        assert_eq!(writer.append(&batch(&info, n), 0).unwrap(), n);
    }
    // Two mergers at once, then one more run: each batch lands once.
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let dir = dir.path().to_path_buf();
            std::thread::spawn(move || {
                let main = sqlite::open(&dir.join("credstack.db")).unwrap();
                let journal = journal::open(&journal::path(&dir)).unwrap();
                journal::merge_all(&main, &journal, |_| {}).unwrap()
            })
        })
        .collect();
    for thread in threads {
        assert_eq!(thread.join().unwrap(), 40);
    }
    let journal = journal::open(&journal_path).unwrap();
    assert_eq!(journal::merge_all(&main, &journal, |_| {}).unwrap(), 40);
    assert_eq!(count(&main, "SELECT count(*) FROM entries"), 40);
    assert_eq!(count(&main, "SELECT batch FROM journal_merged"), 40);
    // The wallet's row is its last state; its version moved once per batch.
    assert_eq!(count(&main, "SELECT balance FROM wallets"), -40);
    assert_eq!(count(&main, "SELECT debt FROM wallets"), 40);
    assert_eq!(count(&main, "SELECT last_sequence FROM wallets"), 40);
    assert_eq!(count(&main, "SELECT version FROM wallets"), 40);
    // Merged batches are deleted by the next append, and numbering goes on.
    assert_eq!(writer.append(&batch(&info, 41), 40).unwrap(), 41);
    assert_eq!(count(&journal, "SELECT count(*) FROM batches"), 1);
    assert_eq!(count(&journal, "SELECT min(batch) FROM batches"), 41);
    let reopened = Journal::open(&journal_path, 40).unwrap();
    assert_eq!(reopened.next(), 42);
}

#[test]
fn a_damaged_batch_stops_the_merge_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (main, info) = store_with_a_wallet(dir.path());
    let journal_path = journal::path(dir.path());
    let mut writer = Journal::open(&journal_path, 0).unwrap();
    writer.append(&batch(&info, 1), 0).unwrap();
    let journal = journal::open(&journal_path).unwrap();
    journal
        .execute("INSERT INTO batches (batch, body) VALUES (2, x'09ff')", [])
        .unwrap();
    let error = journal::merge_all(&main, &journal, |_| {}).unwrap_err();
    assert!(error.contains("damaged"), "{error}");
    assert_eq!(count(&main, "SELECT count(*) FROM entries"), 0);
    assert_eq!(count(&main, "SELECT batch FROM journal_merged"), 0);
}

fn embedded(data_dir: &std::path::Path) -> Config {
    Config {
        backend: Backend::Embedded {
            data_dir: data_dir.to_path_buf(),
        },
        clock: credstack::clock::Clock::system(),
        render: credstack::wire::render,
    }
}

#[test]
fn a_journal_in_an_unknown_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = || embedded(dir.path());
    drop(Ledger::open(config()).unwrap());
    // The dropped ledger's writer lets the data directory go as it stops.
    let journal = rusqlite::Connection::open(journal::path(dir.path())).unwrap();
    journal.pragma_update(None, "user_version", 99).unwrap();
    drop(journal);
    let error = Ledger::open(config()).err().expect("refused");
    assert!(error.contains("format 99"), "{error}");
}

/// A journal an earlier release left (format 2: no schema version per
/// batch) is merged as written at the last schema those releases had, and
/// marked format 3; an earlier release then refuses it rather than
/// misreading it.
#[test]
fn a_format_2_journal_is_merged_and_marked_format_3() {
    let dir = tempfile::tempdir().unwrap();
    let (main, info) = store_with_a_wallet(dir.path());
    drop(main);
    let journal = rusqlite::Connection::open(journal::path(dir.path())).unwrap();
    journal
        .execute_batch(
            "CREATE TABLE batches (batch INTEGER PRIMARY KEY, body BLOB NOT NULL);
             PRAGMA user_version = 2;",
        )
        .unwrap();
    journal
        .execute(
            "INSERT INTO batches (batch, body) VALUES (1, ?)",
            [batch(&info, 1).encoded()],
        )
        .unwrap();
    drop(journal);
    let ledger = Ledger::open(embedded(dir.path())).expect("a format 2 journal opens");
    drop(ledger);
    let main = sqlite::open(&dir.path().join("credstack.db")).unwrap();
    assert_eq!(count(&main, "SELECT count(*) FROM entries"), 1);
    let journal = rusqlite::Connection::open(journal::path(dir.path())).unwrap();
    let format: i64 = journal
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(format, 3);
}

/// A batch's values are in the order of the schema it was written against:
/// a journal written against another schema version is not merged (nor the
/// store migrated past it), and the refusal says which release merges it.
#[test]
fn a_batch_written_against_another_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (main, info) = store_with_a_wallet(dir.path());
    drop(main);
    let mut writer = Journal::open(&journal::path(dir.path()), 0).unwrap();
    writer.append(&batch(&info, 1), 0).unwrap();
    drop(writer);
    let journal = rusqlite::Connection::open(journal::path(dir.path())).unwrap();
    let older = sqlite::SCHEMA_VERSION as i64 - 1;
    journal
        .execute("UPDATE batches SET schema = ?", [older])
        .unwrap();
    drop(journal);
    let error = Ledger::open(embedded(dir.path())).err().expect("refused");
    assert!(
        error.contains(&format!("schema version {older}")),
        "{error}"
    );
    assert!(error.contains("the release that wrote it"), "{error}");
    let main = rusqlite::Connection::open(dir.path().join("credstack.db")).unwrap();
    assert_eq!(count(&main, "SELECT count(*) FROM entries"), 0);
}

#[test]
fn a_second_server_on_one_data_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = || embedded(dir.path());
    let _first = Ledger::open(config()).unwrap();
    let error = Ledger::open(config()).err().expect("refused");
    assert!(error.contains("another credstack process"), "{error}");
}

/// Campaign grants are journalled. While the merger cannot write (another
/// connection holds `credstack.db`'s write lock), a customer granted in an
/// unmerged batch is not granted again and a call to all customers counts
/// every chunk, both read back from the writer's tail; once the merger
/// writes, the store holds each grant once and the run's full count.
#[tokio::test(flavor = "multi_thread")]
async fn campaign_grants_read_back_their_unmerged_batches() {
    use credstack::engine::{NewPromotion, Outcome, Request, RunStep};
    use credstack::ledger::{BulkAction, BulkCall, Claimed};

    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(embedded(dir.path())).unwrap();
    let Ok(Outcome::CreditSystem(system)) = ledger
        .execute(Request::CreateCreditSystem {
            key: "tokens".into(),
            name: "Tokens".into(),
            unit: "tokens".into(),
            scale: 0,
        })
        .await
    else {
        panic!("a credit system")
    };
    let mut customers = Vec::new();
    let mut wallets = Vec::new();
    for name in ["Ada", "Grace", "Edsger"] {
        let Ok(Outcome::Customer(customer)) = ledger
            .execute(Request::CreateCustomer {
                name: name.into(),
                email: None,
                external_id: None,
                metadata: Default::default(),
            })
            .await
        else {
            panic!("a customer")
        };
        let Ok(Outcome::Wallet(wallet)) = ledger
            .execute(Request::CreateWallet {
                customer_id: customer.id,
                credit_system_id: system.id,
                overdraft_limit: None,
                low_balance_threshold: None,
            })
            .await
        else {
            panic!("a wallet")
        };
        customers.push(customer.id);
        wallets.push(wallet.info.id);
    }
    let Ok(Outcome::Promotion(view)) = ledger
        .execute(Request::CreatePromotion(NewPromotion {
            name: "Launch".into(),
            description: None,
            credit_system_id: system.id,
            starts_at: None,
            ends_at: None,
            quantity: "500".into(),
            reset_interval: None,
            access_period: None,
            allow_multiple_grants: false,
        }))
        .await
    else {
        panic!("a promotion")
    };
    let campaign = view.promotion.id;
    let call = BulkCall::new(BulkAction::Grant, campaign, None);
    let Ok(Claimed::Started { .. }) = ledger.claim_to_all(&call).await else {
        panic!("the call claims its campaign")
    };

    let blocker = rusqlite::Connection::open(dir.path().join("credstack.db")).unwrap();
    blocker
        .busy_timeout(std::time::Duration::from_secs(10))
        .unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let step = |cursor| {
        Some(RunStep {
            run_id: call.run_id,
            cursor,
            lease_until: chrono::Utc::now() + chrono::Duration::hours(1),
        })
    };
    let grant = |customer_ids: Vec<u128>, run| {
        let ledger = ledger.clone();
        async move {
            let request = Request::GrantPromotion {
                id: campaign,
                customer_ids,
                run,
            };
            match ledger.execute(request).await {
                Ok(Outcome::PromotionGrant(grant)) => grant,
                other => panic!("a campaign grant: {other:?}"),
            }
        }
    };
    let [ada, grace, edsger] = customers[..] else {
        unreachable!()
    };
    let first = grant(vec![ada], step(ada)).await;
    assert_eq!(first.granted.len(), 1);
    let second = grant(vec![ada, grace], step(grace)).await;
    assert_eq!(second.granted.len(), 1, "Ada holds the campaign already");
    assert_eq!(
        second.skipped,
        vec![(ada, credstack_core::promotion::Skip::AlreadyGranted)]
    );
    let third = grant(vec![edsger], None).await;
    assert_eq!(third.granted.len(), 1);
    let unmerged: u64 = ledger
        .render_metrics()
        .lines()
        .find_map(|line| line.strip_prefix("credstack_journal_unmerged_batches "))
        .expect("the gauge")
        .trim()
        .parse()
        .unwrap();
    assert!(
        unmerged >= 3,
        "the grants waited in the journal: {unmerged}"
    );
    blocker.execute_batch("ROLLBACK").unwrap();

    // Reads wait for the merge.
    let run = ledger
        .read(move |c| c.bulk_run(campaign))
        .await
        .unwrap()
        .expect("the run");
    let counts: serde_json::Value = serde_json::from_str(&run.progress).unwrap();
    assert_eq!(
        (&counts["done"], &counts["skipped"]),
        (&2.into(), &1.into())
    );
    assert_eq!(run.cursor, Some(grace));
    let now = chrono::Utc::now();
    for customer in customers {
        let held = ledger
            .read(move |c| c.active_assignments(campaign, customer, now))
            .await
            .unwrap();
        assert_eq!(held.len(), 1, "one assignment each");
    }
    for wallet in wallets {
        let grants = ledger
            .read(move |c| c.list_grants(wallet, None, 10, None))
            .await
            .unwrap();
        assert_eq!(grants.items.len(), 1, "one grant each");
        assert_eq!(grants.items[0].grant.remaining.atomic(), 500);
    }
    let applied = ledger
        .read(move |c| c.promotion(campaign))
        .await
        .unwrap()
        .expect("the campaign")
        .applied;
    assert!(applied);
}
