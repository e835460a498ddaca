//! A wallet's entries never go back in time, whatever the clock of the
//! process writing them: an entry is dated no earlier than the wallet's last
//! one (`EntryRecord::append_to`). History at an instant relies on it: it
//! bisects a wallet's entries by sequence, with no index by time.
//!
//! - Embedded: a server restarted with its clock an hour behind the last
//!   entry (the system clock stepped back while it was down).
//! - PostgreSQL: two nodes at once, one an hour behind the other. Needs
//!   PostgreSQL (see `common/pg.rs`): skipped without it outside CI.

mod common;

use credstack::engine::{NewDebit, Request};
use credstack::ledger::{Backend, Config, Ledger};
use credstack::records::EntryRecord;
use credstack_core::Instant;

fn at(text: &str) -> Instant {
    text.parse().expect("an instant")
}

const LATER: &str = "2025-03-01T12:00:00Z";
const EARLIER: &str = "2025-03-01T11:00:00Z";

fn open(backend: Backend, now: &str) -> Ledger {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        // A dropped ledger's writer lets go of the data directory's lock
        // once it has ended.
        match Ledger::open(Config {
            backend: backend.clone(),
            clock: credstack::clock::Clock::simulated(at(now)),
            render: credstack::wire::render,
        }) {
            Ok(ledger) => return ledger,
            Err(error) if std::time::Instant::now() > deadline => panic!("open: {error}"),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    }
}

async fn debit(ledger: &Ledger, wallet_id: u128, amount: &str) {
    ledger
        .execute(Request::Debit(NewDebit {
            wallet_id,
            amount: amount.into(),
            description: None,
            metadata: Default::default(),
        }))
        .await
        .unwrap();
}

async fn entries(ledger: &Ledger, wallet_id: u128) -> Vec<EntryRecord> {
    ledger
        .read(move |c| c.list_entries(wallet_id, true, 100, None))
        .await
        .unwrap()
        .items
}

async fn balance_at(ledger: &Ledger, wallet_id: u128, instant: &str) -> i64 {
    let view = credstack::history::at(ledger, wallet_id, at(instant))
        .await
        .unwrap();
    view.summary.balance.atomic()
}

/// The entries' instants, and the history read at and around them.
async fn check(ledger: &Ledger, wallet_id: u128, balance: i64) {
    let entries = entries(ledger, wallet_id).await;
    let dates: Vec<Instant> = entries.iter().map(|e| e.occurred_at).collect();
    assert_eq!(
        dates,
        vec![at(LATER); 3],
        "the behind clock's entries follow"
    );
    let verified = entries
        .windows(2)
        .all(|w| w[1].hash == w[1].chain(&w[0].hash));
    assert!(verified, "the chain covers the entries as dated");
    assert_eq!(balance_at(ledger, wallet_id, LATER).await, balance);
    assert_eq!(
        balance_at(ledger, wallet_id, "2025-03-01T11:59:59Z").await,
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn entries_follow_the_last_one_after_the_clock_stepped_back() {
    let data = tempfile::tempdir().unwrap();
    let backend = Backend::Embedded {
        data_dir: data.path().to_path_buf(),
    };
    let wallet_id = {
        let ledger = open(backend.clone(), LATER);
        let wallet_id = common::wallet_with_a_grant(&ledger, "100").await;
        ledger.settle().await;
        wallet_id
    };
    let ledger = open(backend, EARLIER);
    debit(&ledger, wallet_id, "30").await;
    debit(&ledger, wallet_id, "5").await;
    check(&ledger, wallet_id, 65).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_behind_dates_its_entries_after_the_other_nodes() {
    let Some(db) = common::pg::TestDb::create() else {
        return;
    };
    let backend = Backend::Postgres {
        url: db.url(),
        readers: 2,
    };
    let ahead = open(backend.clone(), LATER);
    let behind = open(backend, EARLIER);
    let wallet_id = common::wallet_with_a_grant(&ahead, "100").await;
    debit(&behind, wallet_id, "30").await;
    debit(&ahead, wallet_id, "5").await;
    check(&behind, wallet_id, 65).await;
    check(&ahead, wallet_id, 65).await;
}
