//! The store conformance suite: every method of the [`Store`] trait, held
//! to the same expectations on both backends.
//!
//! Each check below is written once, against `&mut dyn Store`, and the
//! `conformance!` list turns it into two tests:
//!
//! - `embedded::<check>`: the SQLite store, `store::sqlite::open` on a file
//!   in a fresh temporary directory;
//! - `postgres::<check>`: the PostgreSQL store, `store::postgres::open` on a
//!   fresh database (created by `common::pg::TestDb`, dropped with its
//!   connections when the test ends).
//!
//! A check that needs a second connection (another node, another writer)
//! takes two stores, each its own connection to the same database.
//!
//! The PostgreSQL server is `DATABASE_URL`, else
//! `postgres://postgres@127.0.0.1:5432/postgres`. Without a reachable server
//! the `postgres::` tests print `SKIP` and pass, unless `CI` is set, where
//! they fail.
//!
//! What exists on one backend only by nature (PostgreSQL's migrations under
//! an advisory lock and `schema_migrations`, its pool's session settings;
//! SQLite's `user_version` and pragmas) is tested in `backend_specific` at
//! the end, each PostgreSQL test next to its embedded counterpart.

mod common;

use common::pg::TestDb;
use credstack::records::*;
use credstack::store::postgres as pg;
use credstack::store::{Store, StoreError, sqlite};
use credstack_core::promotion::{Policy, Status};
use credstack_core::{
    Allocation, Amount, EntryKind, Grant, GrantId, GrantStatus, GrantTerms, Hold, HoldId, Instant,
    Interval, Period, Purpose, Reservation, Scale, Wallet,
};
use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};

// ---- the two backends ---------------------------------------------------------------

/// One test's database; every [`Db::open`] is a new connection to it.
enum Db {
    Embedded(tempfile::TempDir),
    Postgres(Box<TestDb>),
}

impl Db {
    fn embedded() -> Db {
        Db::Embedded(tempfile::tempdir().expect("a temporary directory"))
    }

    /// `None` (after printing `SKIP`) when no server is reachable outside CI.
    fn postgres() -> Option<Db> {
        TestDb::create().map(|db| Db::Postgres(Box::new(db)))
    }

    /// A new connection to a migrated database.
    fn open(&self) -> Box<dyn Store> {
        match self {
            Db::Embedded(dir) => {
                Box::new(sqlite::open(&dir.path().join("t.db")).expect("open the SQLite store"))
            }
            Db::Postgres(db) => Box::new(pg::open(&db.url()).expect("open the PostgreSQL store")),
        }
    }
}

/// For each `check(conn, ...)`, a test `embedded::check` and a test
/// `postgres::check`, each calling the function `check` with one new
/// connection per name given (all to the same database).
macro_rules! conformance {
    ($( $check:ident($($conn:ident),+); )*) => {
        /// The checks on the embedded store (SQLite).
        mod embedded {
            $(
                #[test]
                fn $check() {
                    let db = super::Db::embedded();
                    $( let mut $conn = db.open(); )+
                    super::$check($(&mut *$conn),+);
                }
            )*
        }

        /// The checks on the PostgreSQL store; each passes without running
        /// when no server is reachable outside CI.
        mod postgres {
            $(
                #[test]
                fn $check() {
                    let Some(db) = super::Db::postgres() else {
                        return;
                    };
                    $( let mut $conn = db.open(); )+
                    super::$check($(&mut *$conn),+);
                }
            )*
        }
    };
}

conformance! {
    credit_systems_round_trip_and_page(store);
    customers_round_trip_and_search(store);
    wallets_load_update_and_come_due(store);
    grants_round_trip_update_and_list_by_status(store);
    holds_and_debits_round_trip(store);
    entries_list_and_answer_point_in_time_queries(store);
    entries_with_purpose_runs_inside_a_callers_transaction(store);
    api_keys_round_trip(store);
    idempotency_keys_replay_across_connections_and_purge(node_a, node_b);
    console_sessions_round_trip(store);
    promotions_and_assignments_round_trip(store);
    functions_run_inside_a_callers_transaction(store, other);
    lock_wallets_returns_existing_versions(store);
    lock_wallets_answers_in_id_order(store);
    a_locked_wallet_waits_for_the_holders_commit(writer, other);
    holds_and_grants_name_their_wallets(store);
    bulk_runs_round_trip_under_the_campaign_lock(store);
    webhook_deliveries_go_out_in_order_per_wallet(store);
    entries_keep_their_hash_chain(store);
    a_snapshot_sees_one_state(store, other);
}

// ---- fixtures -------------------------------------------------------------------

const BASE_MICROS: i64 = 1_767_225_600_123_456;

/// An instant `seconds` after a fixed base, with microseconds that must survive.
fn at(seconds: i64) -> Instant {
    Instant::from_timestamp_micros(BASE_MICROS + seconds * 1_000_000).expect("in range")
}

/// Ids that increase with `n`, like ULIDs made one after another.
fn id(n: u64) -> u128 {
    (0x0198_0000_0000_u128 << 80) | u128::from(n)
}

fn scale() -> Scale {
    Scale::new(2).unwrap()
}

fn amount(atomic: i64) -> Amount {
    Amount::from_atomic(atomic)
}

fn metadata(pairs: &[(&str, &str)]) -> Metadata {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect::<BTreeMap<_, _>>()
}

fn credit_system(n: u64, key: &str) -> CreditSystem {
    CreditSystem {
        id: id(n),
        key: key.to_string(),
        name: format!("{key} credits"),
        unit: "credit".to_string(),
        scale: scale(),
        active: true,
        created_at: at(n as i64),
    }
}

fn customer(n: u64, name: &str, email: Option<&str>, external_id: Option<&str>) -> Customer {
    Customer {
        id: id(n),
        name: name.to_string(),
        email: email.map(str::to_string),
        external_id: external_id.map(str::to_string),
        metadata: metadata(&[("plan", "pro"), ("n", &n.to_string())]),
        created_at: at(n as i64),
    }
}

fn wallet_info(n: u64, customer_id: u128, credit_system_id: u128) -> WalletInfo {
    WalletInfo {
        id: id(n),
        customer_id,
        credit_system_id,
        scale: scale(),
        created_at: at(n as i64),
        low_balance_threshold: None,
    }
}

fn grant(n: u64, purpose: Purpose, remaining: i64, status: GrantStatus) -> Grant {
    Grant {
        id: GrantId(id(n)),
        terms: GrantTerms {
            amount: amount(1_000),
            purpose,
            priority: purpose.default_priority(),
            effective_at: at(0),
            expires_at: Some(at(86_400)),
            recurrence: Period::new(Interval::Month, 1),
            rollover_max: amount(250),
        },
        remaining: amount(remaining),
        held: amount(0),
        cycle: 3,
        status,
        ended_at: None,
    }
}

fn grant_record(grant: Grant, wallet_id: u128) -> GrantRecord {
    GrantRecord {
        grant,
        wallet_id,
        scale: scale(),
        description: Some("monthly allowance".to_string()),
        metadata: metadata(&[("order", "o-1")]),
        source: Source::PromotionalCredit {
            promotional_credit_id: id(900),
            assignment_id: id(901),
        },
        created_at: at(5),
    }
}

/// A credit system (1), a customer (2) and a wallet (3) joining them.
fn base(store: &mut dyn Store) -> (CreditSystem, Customer, WalletInfo) {
    let cs = credit_system(1, "tokens");
    let cus = customer(2, "Ada Lovelace", Some("ada@example.com"), Some("crm-ada"));
    let info = wallet_info(3, cus.id, cs.id);
    store.upsert_credit_system(&cs).unwrap();
    store.upsert_customer(&cus).unwrap();
    store
        .insert_wallet(&info, &Wallet::new(amount(500)))
        .unwrap();
    (cs, cus, info)
}

// ---- credit systems and customers -------------------------------------------------

fn credit_systems_round_trip_and_page(store: &mut dyn Store) {
    let systems: Vec<CreditSystem> = (1..=3)
        .map(|n| credit_system(n, &format!("key{n}")))
        .collect();
    for cs in &systems {
        store.upsert_credit_system(cs).unwrap();
    }
    assert_eq!(
        store.credit_system(id(2)).unwrap(),
        Some(systems[1].clone())
    );
    assert_eq!(
        store.credit_system_by_key("key3").unwrap(),
        Some(systems[2].clone())
    );
    assert_eq!(store.credit_system(id(99)).unwrap(), None);

    let mut changed = systems[0].clone();
    changed.name = "renamed".to_string();
    changed.active = false;
    changed.key = "ignored-on-update".to_string();
    store.upsert_credit_system(&changed).unwrap();
    let stored = store.credit_system(id(1)).unwrap().unwrap();
    assert_eq!(stored.name, "renamed");
    assert!(!stored.active);
    assert_eq!(stored.key, "key1");

    let first = store.list_credit_systems(2, None).unwrap();
    let ids: Vec<u128> = first.items.iter().map(|cs| cs.id).collect();
    assert_eq!(ids, vec![id(3), id(2)]);
    assert!(first.has_more);
    let second = store.list_credit_systems(2, Some(id(2))).unwrap();
    assert_eq!(second.items.len(), 1);
    assert_eq!(second.items[0].id, id(1));
    assert!(!second.has_more);
    let exact = store.list_credit_systems(3, None).unwrap();
    assert_eq!(exact.items.len(), 3);
    assert!(!exact.has_more);
}

fn customers_round_trip_and_search(store: &mut dyn Store) {
    let customers = [
        customer(1, "Ada Lovelace", Some("ADA@Example.com"), Some("crm-1")),
        customer(2, "100% Pure", None, None),
        customer(3, "1000 Pure", None, Some("x_y")),
        customer(4, "Back\\slash", Some("b@example.org"), Some("xay")),
        customer(5, "Grace Hopper", None, Some("CRM-5")),
    ];
    for cus in &customers {
        store.upsert_customer(cus).unwrap();
    }
    assert_eq!(store.customer(id(1)).unwrap(), Some(customers[0].clone()));
    assert_eq!(
        store.customer_by_external_id("crm-1").unwrap(),
        Some(customers[0].clone())
    );
    assert_eq!(store.customer_by_external_id("nope").unwrap(), None);

    let mut search = |q: &str| -> Vec<u128> {
        store
            .list_customers(Some(q), 10, None)
            .unwrap()
            .items
            .iter()
            .map(|cus| cus.id)
            .collect()
    };
    // Case-insensitive, over name, email and external id.
    assert_eq!(search("LOVELACE"), vec![id(1)]);
    assert_eq!(search("example"), vec![id(4), id(1)]);
    assert_eq!(search("crm-"), vec![id(5), id(1)]);
    // `%`, `_` and `\` match only themselves.
    assert_eq!(search("0%"), vec![id(2)]);
    assert_eq!(search("x_y"), vec![id(3)]);
    assert_eq!(search("_"), vec![id(3)]);
    assert_eq!(search("%"), vec![id(2)]);
    assert_eq!(search("k\\s"), vec![id(4)]);
    assert_eq!(search("pure"), vec![id(3), id(2)]);
    assert!(search("zzz").is_empty());

    let page = store.list_customers(Some("pure"), 1, None).unwrap();
    assert_eq!(page.items[0].id, id(3));
    assert!(page.has_more);
    let page = store.list_customers(Some("pure"), 1, Some(id(3))).unwrap();
    assert_eq!(page.items[0].id, id(2));
    assert!(!page.has_more);
    let all = store.list_customers(None, 10, None).unwrap();
    assert_eq!(all.items.len(), 5);
    assert_eq!(all.items[0], customers[4]);

    let mut changed = customers[0].clone();
    changed.name = "Ada King".to_string();
    changed.email = None;
    changed.external_id = Some("crm-new".to_string());
    changed.metadata = metadata(&[]);
    store.upsert_customer(&changed).unwrap();
    assert_eq!(store.customer(id(1)).unwrap(), Some(changed));
}

// ---- wallets ------------------------------------------------------------------------

fn wallets_load_update_and_come_due(store: &mut dyn Store) {
    let (cs, cus, info) = base(store);
    assert_eq!(store.wallet_info(info.id).unwrap(), Some(info.clone()));
    assert_eq!(
        store.wallet_by_owner(cus.id, cs.id).unwrap(),
        Some(info.clone())
    );
    assert_eq!(store.wallet_by_owner(cs.id, cus.id).unwrap(), None);

    let (loaded_info, loaded) = store.load_wallet(info.id).unwrap().unwrap();
    assert_eq!(loaded_info, info);
    assert_eq!(loaded, Wallet::new(amount(500)));
    assert_eq!(store.load_wallet(id(99)).unwrap(), None);
    assert_eq!(store.lock_wallets(&[info.id]).unwrap(), vec![(info.id, 0)]);

    // Live grants and active holds load; final grants and finished holds do not.
    let live_b = grant(11, Purpose::Paid, 700, GrantStatus::Active);
    let live_a = grant(10, Purpose::Promotional, 300, GrantStatus::Active);
    let mut ended = grant(12, Purpose::Bundled, 0, GrantStatus::Expired);
    ended.ended_at = Some(at(50));
    for g in [&live_b, &live_a, &ended] {
        store
            .insert_grant(&grant_record(g.clone(), info.id))
            .unwrap();
    }
    let reservations = vec![
        Reservation {
            grant: Some(live_a.id),
            amount: amount(40),
            cycle: 3,
        },
        Reservation {
            grant: None,
            amount: amount(10),
            cycle: 0,
        },
    ];
    let hold = HoldRecord {
        id: id(20),
        wallet_id: info.id,
        scale: scale(),
        amount: amount(50),
        reservations: reservations.clone(),
        status: HoldStatus::Active,
        expires_at: at(3_600),
        debit_id: None,
        ended_at: None,
        created_at: at(20),
    };
    store.insert_hold(&hold).unwrap();
    store
        .insert_hold(&HoldRecord {
            id: id(21),
            status: HoldStatus::Released,
            ended_at: Some(at(30)),
            ..hold.clone()
        })
        .unwrap();

    let wallet = Wallet {
        overdraft_limit: amount(600),
        debt: amount(10),
        balance: amount(990),
        last_sequence: 7,
        grants: vec![live_a.clone(), live_b.clone()],
        holds: vec![Hold {
            id: HoldId(hold.id),
            amount: hold.amount,
            expires_at: hold.expires_at,
            reservations,
        }],
    };
    update_wallet(store, info.id, &wallet);
    let (_, loaded) = store.load_wallet(info.id).unwrap().unwrap();
    assert_eq!(loaded, wallet);
    assert_eq!(store.lock_wallets(&[info.id]).unwrap(), vec![(info.id, 1)]);

    // The next event is the hold's expiry, before the grants' month renewal.
    let next = wallet.next_event_at().unwrap();
    assert_eq!(next, at(3_600));
    assert_eq!(store.wallet_next_event_at(info.id).unwrap(), Some(next));
    assert_eq!(store.wallet_next_event_at(id(99)).unwrap(), None);
    assert_eq!(store.due_wallets(at(3_599), 10).unwrap(), vec![]);
    assert_eq!(store.due_wallets(at(3_600), 10).unwrap(), vec![info.id]);

    // A second wallet, due sooner, for ordering and limits.
    let other_customer = customer(4, "Grace", None, None);
    store.upsert_customer(&other_customer).unwrap();
    let other = wallet_info(5, other_customer.id, cs.id);
    store
        .insert_wallet(&other, &Wallet::new(amount(0)))
        .unwrap();
    let mut other_state = Wallet::new(amount(0));
    other_state.holds.push(Hold {
        id: HoldId(id(22)),
        amount: amount(1),
        expires_at: at(100),
        reservations: vec![],
    });
    update_wallet(store, other.id, &other_state);
    // Many at once: each with its own grants and holds, unknown ids left out.
    let mut many = store.load_wallets(&[other.id, id(99), info.id]).unwrap();
    many.sort_by_key(|(info, _, _)| info.id);
    let mut other_loaded = other_state.clone();
    other_loaded.holds.clear(); // its hold has no row: only holds in the table load
    assert_eq!(
        many,
        vec![
            (info.clone(), wallet.clone(), ChainHead::START),
            (other.clone(), other_loaded, ChainHead::START)
        ]
    );
    assert_eq!(store.load_wallets(&[]).unwrap(), vec![]);
    assert_eq!(
        store.due_wallets(at(10_000), 10).unwrap(),
        vec![other.id, info.id]
    );
    assert_eq!(store.due_wallets(at(10_000), 1).unwrap(), vec![other.id]);
    update_wallet(store, other.id, &Wallet::new(amount(0)));
    assert_eq!(store.wallet_next_event_at(other.id).unwrap(), None);
    assert_eq!(store.due_wallets(at(10_000), 10).unwrap(), vec![info.id]);

    // Listing, filtering, counting, walking customers.
    let all = store.list_wallets(None, None, 10, None).unwrap();
    assert_eq!(all.items, vec![other.clone(), info.clone()]);
    let mine = store.list_wallets(Some(cus.id), None, 10, None).unwrap();
    assert_eq!(mine.items, vec![info.clone()]);
    let by_system = store.list_wallets(None, Some(cs.id), 1, None).unwrap();
    assert_eq!(by_system.items, vec![other.clone()]);
    assert!(by_system.has_more);
    let both = store
        .list_wallets(Some(cus.id), Some(cs.id), 10, Some(info.id))
        .unwrap();
    assert!(both.items.is_empty());
    assert!(!both.has_more);
    assert!(
        store
            .list_wallets(None, Some(id(99)), 10, None)
            .unwrap()
            .items
            .is_empty()
    );
    assert_eq!(store.count_wallets(Some(cs.id)).unwrap(), 2);
    assert_eq!(store.count_wallets(Some(id(99))).unwrap(), 0);
    assert_eq!(store.count_wallets(None).unwrap(), 2);
    assert_eq!(
        store.customers_with_wallets(cs.id, None, 10).unwrap(),
        vec![cus.id, other_customer.id]
    );
    assert_eq!(
        store
            .customers_with_wallets(cs.id, Some(cus.id), 10)
            .unwrap(),
        vec![other_customer.id]
    );
    assert_eq!(
        store.customers_with_wallets(cs.id, None, 1).unwrap(),
        vec![cus.id]
    );
}

// ---- grants -------------------------------------------------------------------------

fn grants_round_trip_update_and_list_by_status(store: &mut dyn Store) {
    let (_, _, info) = base(store);
    let mut plain = grant(10, Purpose::Bundled, 0, GrantStatus::Active);
    plain.terms.recurrence = None;
    plain.terms.expires_at = None;
    plain.terms.rollover_max = amount(0);
    plain.terms.priority = 0;
    let records = [
        GrantRecord {
            description: None,
            metadata: metadata(&[]),
            source: Source::Api,
            ..grant_record(plain, info.id)
        },
        grant_record(grant(11, Purpose::Paid, 400, GrantStatus::Active), info.id),
        grant_record(grant(12, Purpose::Paid, 0, GrantStatus::Scheduled), info.id),
        grant_record(
            grant(13, Purpose::Promotional, 0, GrantStatus::Active),
            info.id,
        ),
    ];
    for r in &records {
        store.insert_grant(r).unwrap();
    }
    for r in &records {
        assert_eq!(store.grant(r.grant.id.0).unwrap().as_ref(), Some(r));
    }
    assert_eq!(store.grant(id(99)).unwrap(), None);

    let mut expired = records[1].grant.clone();
    expired.status = GrantStatus::Expired;
    expired.remaining = amount(25);
    expired.held = amount(25);
    expired.cycle = 4;
    expired.ended_at = Some(at(999));
    store.update_grant_state(&expired).unwrap();
    assert_eq!(store.grant(expired.id.0).unwrap().unwrap().grant, expired);
    // Still live (it holds), so it still loads with the wallet.
    let (_, wallet) = store.load_wallet(info.id).unwrap().unwrap();
    assert!(wallet.grants.contains(&expired));
    expired.held = amount(0);
    expired.remaining = amount(0);
    store.update_grant_state(&expired).unwrap();
    let (_, wallet) = store.load_wallet(info.id).unwrap().unwrap();
    let live: Vec<u128> = wallet.grants.iter().map(|g| g.id.0).collect();
    // The plain depleted grant is final; 12 scheduled and 13 recurring are live.
    assert_eq!(live, vec![id(12), id(13)]);

    let mut list = |status: Option<&str>| -> Vec<u128> {
        store
            .list_grants(info.id, status, 10, None)
            .unwrap()
            .items
            .iter()
            .map(|r| r.grant.id.0)
            .collect()
    };
    assert_eq!(list(None), vec![id(13), id(12), id(11), id(10)]);
    assert_eq!(list(Some("depleted")), vec![id(13), id(10)]);
    assert_eq!(list(Some("active")), Vec::<u128>::new());
    assert_eq!(list(Some("scheduled")), vec![id(12)]);
    assert_eq!(list(Some("expired")), vec![id(11)]);
    assert_eq!(list(Some("voided")), Vec::<u128>::new());

    let mut topped = records[3].grant.clone();
    topped.remaining = amount(5);
    store.update_grant_state(&topped).unwrap();
    assert_eq!(
        store
            .list_grants(info.id, Some("active"), 10, None)
            .unwrap()
            .items
            .len(),
        1
    );
    let page = store.list_grants(info.id, None, 2, Some(id(13))).unwrap();
    let ids: Vec<u128> = page.items.iter().map(|r| r.grant.id.0).collect();
    assert_eq!(ids, vec![id(12), id(11)]);
    assert!(page.has_more);
    assert!(
        store
            .list_grants(id(99), None, 10, None)
            .unwrap()
            .items
            .is_empty()
    );
}

// ---- holds and debits -----------------------------------------------------------------

fn holds_and_debits_round_trip(store: &mut dyn Store) {
    let (_, _, info) = base(store);
    store
        .insert_grant(&grant_record(
            grant(10, Purpose::Paid, 900, GrantStatus::Active),
            info.id,
        ))
        .unwrap();
    let hold = HoldRecord {
        id: id(20),
        wallet_id: info.id,
        scale: scale(),
        amount: amount(75),
        reservations: vec![
            Reservation {
                grant: Some(GrantId(id(10))),
                amount: amount(70),
                cycle: 3,
            },
            Reservation {
                grant: None,
                amount: amount(5),
                cycle: 0,
            },
        ],
        status: HoldStatus::Active,
        expires_at: at(600),
        debit_id: None,
        ended_at: None,
        created_at: at(30),
    };
    store.insert_hold(&hold).unwrap();
    assert_eq!(store.hold(hold.id).unwrap(), Some(hold.clone()));
    assert_eq!(store.hold(id(99)).unwrap(), None);

    let debit = DebitRecord {
        id: id(30),
        wallet_id: info.id,
        scale: scale(),
        amount: amount(75),
        allocations: vec![
            Allocation {
                grant: Some(GrantId(id(10))),
                amount: amount(70),
            },
            Allocation {
                grant: None,
                amount: amount(5),
            },
        ],
        balance_after: amount(825),
        description: Some("api calls".to_string()),
        metadata: metadata(&[("request", "r-1")]),
        hold_id: Some(hold.id),
        created_at: at(40),
    };
    insert_debits(store, std::slice::from_ref(&debit));
    store
        .finish_hold(hold.id, HoldStatus::Captured, Some(debit.id), at(40))
        .unwrap();
    let finished = store.hold(hold.id).unwrap().unwrap();
    assert_eq!(
        finished,
        HoldRecord {
            status: HoldStatus::Captured,
            debit_id: Some(debit.id),
            ended_at: Some(at(40)),
            ..hold.clone()
        }
    );
    store
        .finish_hold(hold.id, HoldStatus::Expired, None, at(41))
        .unwrap();
    let finished = store.hold(hold.id).unwrap().unwrap();
    assert_eq!(finished.status, HoldStatus::Expired);
    assert_eq!(finished.debit_id, None);

    assert_eq!(store.debit(debit.id).unwrap(), Some(debit.clone()));
    assert_eq!(store.debit(id(99)).unwrap(), None);
    let second = DebitRecord {
        id: id(31),
        allocations: vec![],
        description: None,
        metadata: metadata(&[]),
        hold_id: None,
        ..debit.clone()
    };
    insert_debits(store, std::slice::from_ref(&second));
    let page = store.list_debits(info.id, 1, None).unwrap();
    assert_eq!(page.items, vec![second.clone()]);
    assert!(page.has_more);
    let page = store.list_debits(info.id, 1, Some(second.id)).unwrap();
    assert_eq!(page.items, vec![debit]);
    assert!(!page.has_more);
}

// ---- entries ------------------------------------------------------------------------

fn entry(
    n: u64,
    wallet_id: u128,
    sequence: u64,
    grant_id: Option<u128>,
    delta: i64,
) -> EntryRecord {
    EntryRecord {
        id: id(n),
        wallet_id,
        scale: scale(),
        sequence,
        kind: if delta >= 0 {
            EntryKind::Grant
        } else {
            EntryKind::Debit
        },
        amount: amount(delta),
        balance_after: amount(0),
        occurred_at: at(sequence as i64 * 10),
        grant_id,
        reference: format!("deb_{n}"),
        hash: CHAIN_START,
    }
}

/// The base wallet with a paid grant (10), a promotional one (11) and five
/// entries on them (entry n at base + 10n seconds).
fn entries_fixture(
    store: &mut dyn Store,
) -> (WalletInfo, GrantRecord, GrantRecord, Vec<EntryRecord>) {
    let (_, _, info) = base(store);
    let g1 = grant_record(grant(10, Purpose::Paid, 0, GrantStatus::Active), info.id);
    let g2 = grant_record(
        grant(11, Purpose::Promotional, 0, GrantStatus::Active),
        info.id,
    );
    store.insert_grant(&g1).unwrap();
    store.insert_grant(&g2).unwrap();
    let deltas = [
        (Some(id(10)), 1_000),
        (Some(id(11)), 200),
        (Some(id(11)), -150),
        (None, -30),
        (Some(id(10)), -400),
    ];
    let mut balance = 0;
    let mut entries = Vec::new();
    let mut chain = CHAIN_START;
    for (i, (grant_id, delta)) in deltas.into_iter().enumerate() {
        balance += delta;
        let mut e = entry(100 + i as u64, info.id, i as u64 + 1, grant_id, delta);
        e.balance_after = amount(balance);
        e.hash = e.chain(&chain);
        chain = e.hash;
        entries.push(e);
    }
    // Written together, as the writer writes a batch's rows.
    let rows = NewRows {
        entries: entries.clone(),
        ..NewRows::default()
    };
    store.insert_rows(&rows).unwrap();
    (info, g1, g2, entries)
}

fn entries_keep_their_hash_chain(store: &mut dyn Store) {
    let (info, _, _, entries) = entries_fixture(store);
    // Every hash is stored as written, and each chains from the one before.
    let page = store.list_entries(info.id, true, 10, None).unwrap();
    assert_eq!(page.items, entries);
    let mut chain = CHAIN_START;
    for entry in &page.items {
        assert_eq!(entry.hash, entry.chain(&chain));
        chain = entry.hash;
    }
    // Any field changed changes the hash.
    let mut edited = entries[2].clone();
    edited.amount = amount(-149);
    assert_ne!(edited.chain(&entries[1].hash), entries[2].hash);
    let mut moved = entries[2].clone();
    moved.sequence = 4;
    assert_ne!(moved.chain(&entries[1].hash), entries[2].hash);
    assert_ne!(entries[2].chain(&entries[0].hash), entries[2].hash);
    // A wallet loads with its last entry's hash, which the next one chains
    // from, and its instant, which the next one may not precede.
    let loaded = store.load_wallets(&[info.id]).unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(
        loaded[0].2,
        ChainHead {
            hash: entries[4].hash,
            at: Some(entries[4].occurred_at)
        }
    );
}

fn a_snapshot_sees_one_state(store: &mut dyn Store, other: &mut dyn Store) {
    let (_, _, info) = base(store);
    let mut state = Wallet::new(amount(0));
    update_wallet(store, info.id, &state);
    store.begin_snapshot().unwrap();
    let seen = store.load_wallet(info.id).unwrap().unwrap().1;
    assert_eq!(seen.overdraft_limit, amount(0));
    // Another connection commits meanwhile; the snapshot does not see it.
    state.overdraft_limit = amount(500);
    other.begin().unwrap();
    update_wallet(other, info.id, &state);
    other.commit().unwrap();
    let again = store.load_wallet(info.id).unwrap().unwrap().1;
    assert_eq!(again.overdraft_limit, amount(0));
    store.rollback().unwrap();
    let after = store.load_wallet(info.id).unwrap().unwrap().1;
    assert_eq!(after.overdraft_limit, amount(500));
}

/// Writes one wallet's state, as the writer writes a batch's.
fn update_wallet(store: &mut dyn Store, id: u128, wallet: &Wallet) {
    store.update_states(&[(id, wallet)], &[]).unwrap();
}

fn insert_debits(store: &mut dyn Store, debits: &[DebitRecord]) {
    let rows = NewRows {
        debits: debits.to_vec(),
        ..NewRows::default()
    };
    store.insert_rows(&rows).unwrap();
}

/// Kept responses, written as the writer writes a batch's.
fn keep(store: &mut dyn Store, kept: &[(&str, u8, Kept, Instant)]) -> Result<(), StoreError> {
    let rows = NewRows {
        responses: kept
            .iter()
            .map(|(key, fingerprint, kept, at)| KeptResponse {
                key: key.to_string(),
                fingerprint: [*fingerprint; 32],
                kept: kept.clone(),
                at: *at,
            })
            .collect(),
        ..NewRows::default()
    };
    store.insert_rows(&rows)
}

fn entries_list_and_answer_point_in_time_queries(store: &mut dyn Store) {
    let (info, g1, g2, entries) = entries_fixture(store);

    let asc = store.list_entries(info.id, true, 2, None).unwrap();
    assert_eq!(asc.items, entries[..2].to_vec());
    assert!(asc.has_more);
    let asc = store
        .list_entries(info.id, true, 3, Some(entries[1].id))
        .unwrap();
    assert_eq!(asc.items, entries[2..].to_vec());
    assert!(!asc.has_more);
    let desc = store.list_entries(info.id, false, 2, None).unwrap();
    assert_eq!(desc.items, vec![entries[4].clone(), entries[3].clone()]);
    assert!(desc.has_more);
    let desc = store
        .list_entries(info.id, false, 10, Some(entries[2].id))
        .unwrap();
    assert_eq!(desc.items, vec![entries[1].clone(), entries[0].clone()]);
    assert!(!desc.has_more);

    // Entry n occurs at base + 10n seconds.
    assert_eq!(store.last_sequence_at(info.id, at(5)).unwrap(), 0);
    assert_eq!(store.last_sequence_at(info.id, at(35)).unwrap(), 3);
    assert_eq!(store.last_sequence_at(info.id, at(50)).unwrap(), 5);
    assert_eq!(balance_at(store, info.id, at(5)).unwrap(), amount(0));
    assert_eq!(balance_at(store, info.id, at(10)).unwrap(), amount(1_000));
    assert_eq!(balance_at(store, info.id, at(20)).unwrap(), amount(1_200));
    assert_eq!(balance_at(store, info.id, at(35)).unwrap(), amount(1_050));
    assert_eq!(balance_at(store, info.id, at(49)).unwrap(), amount(1_020));
    assert_eq!(balance_at(store, info.id, at(50)).unwrap(), amount(620));
    assert_eq!(balance_at(store, id(99), at(50)).unwrap(), amount(0));
    assert_eq!(balance_at(store, info.id, at(1_000)).unwrap(), amount(620));
    assert_eq!(remainders_at(store, info.id, at(5)).unwrap(), vec![]);
    assert_eq!(
        remainders_at(store, info.id, at(30)).unwrap(),
        vec![(id(10), amount(1_000)), (id(11), amount(50))]
    );
    assert_eq!(
        remainders_at(store, info.id, at(10)).unwrap(),
        vec![(id(10), amount(1_000))]
    );
    assert_eq!(
        remainders_at(store, info.id, at(50)).unwrap(),
        vec![(id(10), amount(600)), (id(11), amount(50))]
    );

    // The chart: entries oldest first with purposes, and what each purpose holds.
    // (States written together, as the writer writes a batch's.)
    let mut paid = g1.grant.clone();
    paid.remaining = amount(600);
    let mut promo = g2.grant.clone();
    promo.remaining = amount(50);
    let mut state = Wallet::new(amount(500));
    state.debt = amount(30);
    let version = store.lock_wallets(&[info.id]).unwrap()[0].1;
    store
        .update_states(&[(info.id, &state)], &[&paid, &promo])
        .unwrap();
    assert_eq!(
        store.lock_wallets(&[info.id]).unwrap(),
        vec![(info.id, version + 1)]
    );
    assert_eq!(store.grant(g1.grant.id.0).unwrap().unwrap().grant, paid);
    assert_eq!(store.grant(g2.grant.id.0).unwrap().unwrap().grant, promo);
    let ledger = store.entries_with_purpose(info.id, 3).unwrap().unwrap();
    assert_eq!(
        ledger.entries,
        vec![
            (entries[2].clone(), Some(Purpose::Promotional)),
            (entries[3].clone(), None),
            (entries[4].clone(), Some(Purpose::Paid)),
        ]
    );
    assert_eq!(ledger.paid, amount(600));
    assert_eq!(ledger.promotional, amount(50));
    assert_eq!(ledger.bundled, amount(0));
    assert_eq!(ledger.debt, amount(30));
    let all = store
        .entries_with_purpose(info.id, 10_000)
        .unwrap()
        .unwrap();
    assert_eq!(all.entries.len(), 5);
    assert!(store.entries_with_purpose(id(99), 10).unwrap().is_none());
}

/// The chart's query inside a caller's transaction, like every other method.
fn entries_with_purpose_runs_inside_a_callers_transaction(store: &mut dyn Store) {
    let (info, _, _, entries) = entries_fixture(store);
    store.begin().unwrap();
    let ledger = store.entries_with_purpose(info.id, 1).unwrap().unwrap();
    assert_eq!(
        ledger.entries,
        vec![(entries[4].clone(), Some(Purpose::Paid))]
    );
    store.commit().unwrap();
}

// ---- api keys, idempotency, sessions ----------------------------------------------------

fn api_keys_round_trip(store: &mut dyn Store) {
    let keys: Vec<ApiKey> = [(1, Scope::Read), (2, Scope::Usage), (3, Scope::Admin)]
        .into_iter()
        .map(|(n, scope)| ApiKey {
            id: id(n),
            name: format!("key {n}"),
            scope,
            secret_hash: [n as u8; 32],
            created_at: at(n as i64),
        })
        .collect();
    for key in &keys {
        store.insert_api_key(key).unwrap();
    }
    let newest_first: Vec<ApiKey> = keys.iter().rev().cloned().collect();
    assert_eq!(store.api_keys().unwrap(), newest_first);
    let page = store.list_api_keys(2, None).unwrap();
    assert_eq!(page.items, newest_first[..2].to_vec());
    assert!(page.has_more);
    let page = store.list_api_keys(2, Some(id(2))).unwrap();
    assert_eq!(page.items, vec![keys[0].clone()]);
    assert!(!page.has_more);
    assert!(store.delete_api_key(id(2)).unwrap());
    assert!(!store.delete_api_key(id(2)).unwrap());
    assert_eq!(store.api_keys().unwrap().len(), 2);
}

fn idempotency_keys_replay_across_connections_and_purge(
    node_a: &mut dyn Store,
    node_b: &mut dyn Store,
) {
    // A response as sent, and a debit's id (a debit's key keeps only that).
    let response = Kept::Response(StoredResponse {
        status: 201,
        body: "{\"id\":\"deb_1\"}".to_string(),
    });
    let debit = Kept::Debit(id(77));
    keep(
        node_a,
        &[
            ("k-old", 1, response.clone(), at(0)),
            ("k-new", 2, debit.clone(), at(100)),
        ],
    )
    .unwrap();
    // Written on one node, read on another, one key or many at once.
    assert_eq!(
        node_b.idempotency("k-new").unwrap(),
        Some(([2; 32], debit.clone()))
    );
    assert_eq!(
        node_b.idempotency("k-old").unwrap(),
        Some(([1; 32], response.clone()))
    );
    assert_eq!(node_b.idempotency("missing").unwrap(), None);
    let mut many = node_b
        .idempotency_many(&["k-new", "missing", "k-old"])
        .unwrap();
    many.sort_by(|a, b| a.key.cmp(&b.key));
    let kept = |key: &str, fingerprint: u8, kept: &Kept, at: Instant| KeptResponse {
        key: key.to_string(),
        fingerprint: [fingerprint; 32],
        kept: kept.clone(),
        at,
    };
    assert_eq!(
        many,
        vec![
            kept("k-new", 2, &debit, at(100)),
            kept("k-old", 1, &response, at(0))
        ]
    );
    assert_eq!(node_b.idempotency_many(&[]).unwrap(), vec![]);
    // A key is stored once. (Whether the loser may run again is the
    // backend's: a PostgreSQL unique violation is retryable, since another
    // node may have taken the key; SQLite has one writer, so it is not.)
    let taken =
        keep(node_b, &[("k-new", 3, response.clone(), at(1))]).expect_err("a key is stored once");
    assert!(!taken.broken, "{taken}");
    assert_eq!(
        node_a.idempotency("k-new").unwrap(),
        Some(([2; 32], debit.clone()))
    );
    assert_eq!(node_b.purge_idempotency(at(100)).unwrap(), 1);
    assert_eq!(node_a.idempotency("k-old").unwrap(), None);
    assert!(node_a.idempotency("k-new").unwrap().is_some());
    assert_eq!(node_a.purge_idempotency(at(100)).unwrap(), 0);
}

fn console_sessions_round_trip(store: &mut dyn Store) {
    let session = ConsoleSession {
        token_hash: [7; 32],
        csrf_token: "csrf-token".to_string(),
        api_key_id: id(1),
        created_at: at(0),
        expires_at: at(3_600),
    };
    store.insert_session(&session).unwrap();
    let other = ConsoleSession {
        token_hash: [8; 32],
        expires_at: at(60),
        ..session.clone()
    };
    store.insert_session(&other).unwrap();
    assert_eq!(
        store.session(&[7; 32], at(10)).unwrap(),
        Some(session.clone())
    );
    assert_eq!(store.session(&[7; 32], at(3_600)).unwrap(), None);
    assert_eq!(store.session(&[9; 32], at(10)).unwrap(), None);
    assert_eq!(store.purge_sessions(at(60)).unwrap(), 1);
    assert_eq!(store.session(&[8; 32], at(0)).unwrap(), None);
    store.delete_session(&[7; 32]).unwrap();
    assert_eq!(store.session(&[7; 32], at(10)).unwrap(), None);
    store.delete_session(&[7; 32]).unwrap();
}

// ---- promotions -----------------------------------------------------------------------

fn promotion(
    n: u64,
    credit_system_id: u128,
    starts: Option<i64>,
    ends: Option<i64>,
) -> PromotionalCredit {
    PromotionalCredit {
        id: id(n),
        name: format!("campaign {n}"),
        description: Some("welcome credits".to_string()),
        credit_system_id,
        scale: scale(),
        starts_at: starts.map(at),
        ends_at: ends.map(at),
        policy: Policy {
            quantity: amount(500),
            reset_interval: Some(Interval::Month),
            access_period: Period::new(Interval::Day, 30),
            allow_multiple_grants: true,
        },
        applied: false,
        created_at: at(0),
    }
}

fn promotions_and_assignments_round_trip(store: &mut dyn Store) {
    let cs = credit_system(1, "tokens");
    store.upsert_credit_system(&cs).unwrap();

    // Campaigns: 10 active (starts at creation, never ends), 11 scheduled,
    // 12 ended, 13 active with a window; seen at `now` = at(1_000).
    let now = at(1_000);
    let mut active = promotion(10, cs.id, None, None);
    active.policy.reset_interval = None;
    active.policy.access_period = None;
    active.description = None;
    let campaigns = [
        active,
        promotion(11, cs.id, Some(2_000), None),
        promotion(12, cs.id, Some(0), Some(500)),
        promotion(13, cs.id, Some(0), Some(5_000)),
    ];
    for p in &campaigns {
        store.upsert_promotion(p).unwrap();
    }
    for p in &campaigns {
        assert_eq!(store.promotion(p.id).unwrap().as_ref(), Some(p));
    }
    let mut list = |status: Option<Status>| -> Vec<u128> {
        store
            .list_promotions(status, now, 10, None)
            .unwrap()
            .items
            .iter()
            .map(|p| p.id)
            .collect()
    };
    assert_eq!(list(None), vec![id(13), id(12), id(11), id(10)]);
    assert_eq!(list(Some(Status::Active)), vec![id(13), id(10)]);
    assert_eq!(list(Some(Status::Scheduled)), vec![id(11)]);
    assert_eq!(list(Some(Status::Ended)), vec![id(12)]);
    let page = store.list_promotions(None, now, 3, Some(id(13))).unwrap();
    assert_eq!(page.items.len(), 3);
    assert!(!page.has_more);

    let mut changed = campaigns[3].clone();
    changed.name = "renamed".to_string();
    changed.applied = true;
    changed.ends_at = None;
    changed.policy.allow_multiple_grants = false;
    store.upsert_promotion(&changed).unwrap();
    assert_eq!(store.promotion(changed.id).unwrap(), Some(changed));
    store.delete_promotion(id(11)).unwrap();
    assert_eq!(store.promotion(id(11)).unwrap(), None);

    // Customers of campaign 10, with a wallet and a grant each:
    // 20 granted; 21 revoked; 22 expired; 23 revoked once, granted again.
    let people = [
        customer(20, "Ada Lovelace", Some("ada@example.com"), None),
        customer(21, "Bob 50%_off", None, Some("crm-bob")),
        customer(22, "Carol", Some("carol@EXAMPLE.com"), None),
        customer(23, "Dan", None, Some("crm-dan")),
    ];
    let mut next = 100;
    let mut assign = |c: &mut dyn Store,
                      cus: &Customer,
                      granted: i64,
                      expires: Option<i64>,
                      revoked: Option<i64>| {
        next += 3;
        let wallet = match c.wallet_by_owner(cus.id, cs.id).unwrap() {
            Some(w) => w,
            None => {
                let w = wallet_info(next, cus.id, cs.id);
                c.insert_wallet(&w, &Wallet::new(amount(0))).unwrap();
                w
            }
        };
        let g = grant_record(
            grant(next + 1, Purpose::Promotional, 500, GrantStatus::Active),
            wallet.id,
        );
        c.insert_grant(&g).unwrap();
        let a = Assignment {
            id: id(next + 2),
            promotional_credit_id: id(10),
            customer_id: cus.id,
            wallet_id: wallet.id,
            grant_id: g.grant.id.0,
            granted_at: at(granted),
            expires_at: expires.map(at),
            revoked_at: revoked.map(at),
        };
        c.upsert_assignment(&a).unwrap();
        a
    };
    for cus in &people {
        store.upsert_customer(cus).unwrap();
    }
    assert!(!store.promotion_has_customers(id(10)).unwrap());
    let ada = assign(store, &people[0], 10, Some(2_000), None);
    let mut bob = assign(store, &people[1], 20, None, None);
    let _carol = assign(store, &people[2], 30, Some(900), None);
    let mut dan_old = assign(store, &people[3], 40, None, None);
    let dan_new = assign(store, &people[3], 50, None, None);
    // Revoking is an upsert that changes only revoked_at.
    bob.revoked_at = Some(at(60));
    store.upsert_assignment(&bob).unwrap();
    dan_old.revoked_at = Some(at(45));
    store.upsert_assignment(&dan_old).unwrap();

    assert!(store.promotion_has_customers(id(10)).unwrap());
    assert!(!store.promotion_has_customers(id(12)).unwrap());
    assert_eq!(
        store.active_assignments(id(10), people[0].id, now).unwrap(),
        vec![ada.clone()]
    );
    assert_eq!(
        store
            .active_assignments(id(10), people[0].id, at(2_000))
            .unwrap(),
        vec![]
    );
    assert_eq!(
        store.active_assignments(id(10), people[1].id, now).unwrap(),
        vec![]
    );
    assert_eq!(
        store.active_assignments(id(10), people[3].id, now).unwrap(),
        vec![dan_new.clone()]
    );
    assert_eq!(
        store
            .customers_with_open_assignments(id(10), None, 10)
            .unwrap(),
        vec![people[0].id, people[2].id, people[3].id]
    );
    assert_eq!(
        store
            .customers_with_open_assignments(id(10), Some(people[2].id), 10)
            .unwrap(),
        vec![people[3].id]
    );
    assert_eq!(
        store
            .customers_with_open_assignments(id(10), None, 1)
            .unwrap(),
        vec![people[0].id]
    );

    // Granted: Ada and Dan; revoked: Bob; Carol's expired.
    assert_eq!(store.promotion_counts(id(10), now).unwrap(), (2, 1));
    assert_eq!(store.promotion_counts(id(12), now).unwrap(), (0, 0));

    let mut customers = |status: Option<&str>, q: Option<&str>| -> Vec<(u128, &'static str)> {
        store
            .promotion_customers(id(10), status, q, now, 10, None)
            .unwrap()
            .items
            .iter()
            .map(|pc| (pc.customer.id, pc.status()))
            .collect()
    };
    assert_eq!(
        customers(None, None),
        vec![
            (people[3].id, "granted"),
            (people[2].id, "expired"),
            (people[1].id, "revoked"),
            (people[0].id, "granted"),
        ]
    );
    assert_eq!(
        customers(Some("granted"), None),
        vec![(people[3].id, "granted"), (people[0].id, "granted")]
    );
    assert_eq!(
        customers(Some("revoked"), None),
        vec![(people[1].id, "revoked")]
    );
    assert_eq!(
        customers(Some("expired"), None),
        vec![(people[2].id, "expired")]
    );
    assert_eq!(
        customers(None, Some("example.COM")),
        vec![(people[2].id, "expired"), (people[0].id, "granted")]
    );
    assert_eq!(
        customers(None, Some("0%_")),
        vec![(people[1].id, "revoked")]
    );
    assert_eq!(customers(None, Some("%")), vec![(people[1].id, "revoked")]);
    assert_eq!(
        customers(Some("granted"), Some("crm")),
        vec![(people[3].id, "granted")]
    );
    assert_eq!(customers(Some("expired"), Some("crm")), vec![]);

    let page = store
        .promotion_customers(id(10), None, None, now, 1, Some(people[3].id))
        .unwrap();
    assert!(page.has_more);
    let carol = &page.items[0];
    assert_eq!(carol.customer, people[2]);
    assert_eq!(carol.active_assignments, 0);
    assert_eq!(carol.last_granted_at, at(30));
    assert_eq!(carol.revoked_at, None);
    assert!(!carol.latest_revoked);
    let dan = &store
        .promotion_customers(id(10), Some("granted"), Some("dan"), now, 10, None)
        .unwrap()
        .items[0];
    assert_eq!(dan.active_assignments, 1);
    assert_eq!(dan.last_granted_at, at(50));
    assert_eq!(dan.revoked_at, Some(at(45)));
    assert!(!dan.latest_revoked);
}

// ---- transactions ---------------------------------------------------------------------

/// Every method runs inside the caller's transaction: a write is visible
/// to the connection that made it, to no other until committed, and gone
/// after a rollback.
fn functions_run_inside_a_callers_transaction(store: &mut dyn Store, other: &mut dyn Store) {
    let cs = credit_system(1, "tokens");
    // Outside a transaction a rollback does nothing (the writer rolls back
    // after any failure, in a transaction or not).
    store.rollback().unwrap();
    store.begin().unwrap();
    store.upsert_credit_system(&cs).unwrap();
    assert_eq!(store.credit_system(cs.id).unwrap(), Some(cs.clone()));
    assert_eq!(other.credit_system(cs.id).unwrap(), None);
    store.rollback().unwrap();
    assert_eq!(store.credit_system(cs.id).unwrap(), None);
    store.begin().unwrap();
    store.upsert_credit_system(&cs).unwrap();
    store.commit().unwrap();
    assert_eq!(store.credit_system(cs.id).unwrap(), Some(cs.clone()));
    assert_eq!(other.credit_system(cs.id).unwrap(), Some(cs));
}

/// The base wallet (3) and a second one (5) of another customer.
fn two_wallets(store: &mut dyn Store) -> (WalletInfo, WalletInfo) {
    let (cs, _, info) = base(store);
    let grace = customer(4, "Grace", None, None);
    store.upsert_customer(&grace).unwrap();
    let other = wallet_info(5, grace.id, cs.id);
    store
        .insert_wallet(&other, &Wallet::new(amount(0)))
        .unwrap();
    (info, other)
}

/// `lock_wallets` returns `(id, version)` for the wallets that exist;
/// `update_states` adds one to the version, undone by a rollback and
/// kept by a commit.
fn lock_wallets_returns_existing_versions(store: &mut dyn Store) {
    let (info, other) = two_wallets(store);
    store.begin().unwrap();
    assert_eq!(store.lock_wallets(&[]).unwrap(), vec![]);
    assert_eq!(store.lock_wallets(&[id(99)]).unwrap(), vec![]);
    assert_eq!(
        store.lock_wallets(&[info.id, other.id, id(99)]).unwrap(),
        vec![(info.id, 0), (other.id, 0)]
    );
    let mut state = Wallet::new(amount(500));
    state.debt = amount(7);
    update_wallet(store, info.id, &state);
    assert_eq!(
        store.lock_wallets(&[info.id, other.id]).unwrap(),
        vec![(info.id, 1), (other.id, 0)]
    );
    store.rollback().unwrap();
    assert_eq!(store.lock_wallets(&[info.id]).unwrap(), vec![(info.id, 0)]);
    let (_, loaded) = store.load_wallet(info.id).unwrap().unwrap();
    assert_eq!(loaded, Wallet::new(amount(500)));

    store.begin().unwrap();
    assert_eq!(store.lock_wallets(&[info.id]).unwrap(), vec![(info.id, 0)]);
    update_wallet(store, info.id, &state);
    update_wallet(store, info.id, &state);
    store.commit().unwrap();
    assert_eq!(
        store.lock_wallets(&[info.id, other.id]).unwrap(),
        vec![(info.id, 2), (other.id, 0)]
    );
    let (_, loaded) = store.load_wallet(info.id).unwrap().unwrap();
    assert_eq!(loaded, state);
}

/// `lock_wallets` answers in id order, the order it locks in, whatever the
/// order of the ids it is given.
fn lock_wallets_answers_in_id_order(store: &mut dyn Store) {
    let (info, other) = two_wallets(store);
    assert!(info.id < other.id);
    store.begin().unwrap();
    assert_eq!(
        store.lock_wallets(&[other.id, id(99), info.id]).unwrap(),
        vec![(info.id, 0), (other.id, 0)]
    );
    store.commit().unwrap();
}

/// While one writer's transaction holds a wallet, a second writer cannot
/// lock it: it waits (five seconds: SQLite's busy timeout, PostgreSQL's
/// `lock_timeout`) and fails, not to be run again at once (the holder is
/// stalled). Once the first commits, the second locks it and sees the new
/// version.
fn a_locked_wallet_waits_for_the_holders_commit(writer: &mut dyn Store, other: &mut dyn Store) {
    let (_, _, info) = base(writer);
    writer.begin().unwrap();
    assert_eq!(writer.lock_wallets(&[info.id]).unwrap(), vec![(info.id, 0)]);
    update_wallet(writer, info.id, &Wallet::new(amount(500)));
    // SQLite's `begin` takes the database's write lock, PostgreSQL's
    // `lock_wallets` the row's: the second writer fails at one or the other.
    let error: StoreError = match other.begin() {
        Err(error) => error,
        Ok(()) => other
            .lock_wallets(&[info.id])
            .expect_err("the wallet is locked by another transaction"),
    };
    assert!(!error.retryable, "{error}");
    assert!(!error.broken, "{error}");
    other.rollback().unwrap();
    writer.commit().unwrap();

    other.begin().unwrap();
    assert_eq!(other.lock_wallets(&[info.id]).unwrap(), vec![(info.id, 1)]);
    other.commit().unwrap();
}

// ---- backend-specific: migrations and connection settings ------------------------------

/// Migrations and session settings are not part of the `Store` trait: each
/// backend has its own schema bookkeeping (PostgreSQL's `schema_migrations`
/// under an advisory lock, SQLite's `user_version`) and its own settings
/// (`lock_timeout` against pragmas), so they are tested per backend, each
/// PostgreSQL test next to its embedded counterpart.
mod backend_specific {
    use super::*;

    /// The number of SQLite migrations, `src/store/schema_v*.sql`.
    fn embedded_schema_version() -> i64 {
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/src/store"))
            .expect("the store's sources")
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("schema_v") && name.ends_with(".sql"))
            .count() as i64
    }

    fn user_version(c: &rusqlite::Connection) -> i64 {
        c.pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap()
    }

    fn count(c: &mut ::postgres::Client, sql: &str) -> i64 {
        c.query_one(sql, &[]).unwrap().get(0)
    }

    fn show(c: &mut ::postgres::Client, setting: &str) -> String {
        c.query_one(&format!("SHOW {setting}"), &[]).unwrap().get(0)
    }

    /// PostgreSQL only: `migrate` is public there (it may run inside a
    /// caller's transaction) and records versions in `schema_migrations`.
    /// Its tables are compared with the embedded store's here too.
    #[test]
    fn postgres_migrate_applies_the_schema_once() {
        let Some(db) = TestDb::create() else {
            return;
        };
        let mut c = db.connect();
        pg::configure(&mut c).expect("configure");
        pg::migrate(&mut c).expect("migrate");
        pg::migrate(&mut c).expect("a second migrate is a no-op");
        let mut t = c.transaction().unwrap();
        pg::migrate(&mut t).expect("migrate runs inside a transaction too");
        t.commit().unwrap();
        assert_eq!(
            count(&mut c, "SELECT count(*) FROM schema_migrations"),
            pg::SCHEMA_VERSION
        );
        assert_eq!(
            count(
                &mut c,
                "SELECT count(*) FROM information_schema.columns
                 WHERE table_name = 'wallets' AND column_name = 'version'"
            ),
            1
        );
        // The same tables as the embedded store, plus schema_migrations.
        let mut tables: Vec<String> = c
            .query(
                "SELECT table_name::text FROM information_schema.tables
                 WHERE table_schema = 'public' AND table_name <> 'schema_migrations'
                 ORDER BY 1",
                &[],
            )
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let sqlite = sqlite::open(&dir.path().join("x.db")).unwrap();
        // Less the embedded journal's mark (`store::journal`): PostgreSQL
        // has no journal.
        let mut embedded: Vec<String> = sqlite
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name <> 'journal_merged'
                 ORDER BY 1",
            )
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        tables.sort();
        embedded.sort();
        assert_eq!(tables, embedded);
    }

    /// The counterpart: opening the file again migrates nothing and keeps
    /// the data; `user_version` counts the migrations applied.
    #[test]
    fn embedded_open_applies_the_schema_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let mut first = sqlite::open(&path).expect("open");
        let cs = credit_system(1, "tokens");
        first.upsert_credit_system(&cs).unwrap();
        let mut second = sqlite::open(&path).expect("a second open is a no-op migration");
        assert_eq!(user_version(&second), embedded_schema_version());
        assert_eq!(second.credit_system(cs.id).unwrap(), Some(cs));
        let columns: i64 = second
            .query_row(
                "SELECT count(*) FROM pragma_table_info('wallets') WHERE name = 'version'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(columns, 1);
    }

    /// PostgreSQL only: migrations serialise on an advisory lock, which
    /// SQLite does not have.
    #[test]
    fn postgres_two_processes_migrating_at_once_both_succeed() {
        let Some(db) = TestDb::create() else {
            return;
        };
        let barrier = Arc::new(Barrier::new(2));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let mut client = db.connect();
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    barrier.wait();
                    pg::migrate(&mut client)
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap().expect("each migrate succeeds");
        }
        let mut c = db.connect();
        assert_eq!(
            count(
                &mut c,
                "SELECT count(*) FROM schema_migrations WHERE version = 1"
            ),
            1
        );
        let store: &mut dyn Store = &mut c;
        assert!(
            store
                .list_wallets(None, None, 1, None)
                .unwrap()
                .items
                .is_empty()
        );
    }

    /// The counterpart: two connections opening (and so migrating) a new
    /// file at the same moment.
    #[test]
    fn embedded_two_processes_opening_at_once_both_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let barrier = Arc::new(Barrier::new(2));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let path = path.clone();
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    barrier.wait();
                    sqlite::open(&path).map(drop).map_err(|e| e.to_string())
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap().expect("each open succeeds");
        }
        let mut c = sqlite::open(&path).unwrap();
        assert_eq!(user_version(&c), embedded_schema_version());
        let store: &mut dyn Store = &mut c;
        assert!(
            store
                .list_wallets(None, None, 1, None)
                .unwrap()
                .items
                .is_empty()
        );
    }

    /// PostgreSQL only: `lock_timeout` is a PostgreSQL session setting, and
    /// `open_pool` a PostgreSQL function (the embedded reader pool is built
    /// inside the ledger, not by the store).
    #[test]
    fn postgres_open_and_the_pool_connect_and_migrate() {
        let Some(db) = TestDb::create() else {
            return;
        };
        let mut client = pg::open(&db.url()).expect("open");
        assert_eq!(
            count(&mut client, "SELECT count(*) FROM schema_migrations"),
            pg::SCHEMA_VERSION
        );
        assert_eq!(show(&mut client, "lock_timeout"), "5s");
        let pool = pg::open_pool(&db.url(), 2).expect("pool");
        let mut connection = pool.get().unwrap();
        assert_eq!(show(&mut connection, "lock_timeout"), "5s");
    }

    /// The counterpart: `open` sets the pragmas that match PostgreSQL's
    /// session settings (a five-second wait for a lock, durable commits).
    #[test]
    fn embedded_open_configures_the_connection() {
        let dir = tempfile::tempdir().unwrap();
        let c = sqlite::open(&dir.path().join("t.db")).expect("open");
        let pragma = |name: &str| -> String {
            c.pragma_query_value(None, name, |row| row.get::<_, rusqlite::types::Value>(0))
                .map(|value| match value {
                    rusqlite::types::Value::Integer(n) => n.to_string(),
                    rusqlite::types::Value::Text(text) => text,
                    other => format!("{other:?}"),
                })
                .unwrap()
        };
        assert_eq!(pragma("busy_timeout"), "5000");
        assert_eq!(pragma("journal_mode"), "wal");
        assert_eq!(pragma("synchronous"), "2");
        assert_eq!(pragma("foreign_keys"), "1");
        assert_eq!(user_version(&c), embedded_schema_version());
    }
}

/// `hold_wallet_ids` and `grant_wallet_ids` name the wallets of the holds
/// and grants that exist (the writer locks them with the batch's others).
fn holds_and_grants_name_their_wallets(store: &mut dyn Store) {
    let (info, other) = two_wallets(store);
    store
        .insert_grant(&grant_record(
            grant(10, Purpose::Paid, 900, GrantStatus::Active),
            info.id,
        ))
        .unwrap();
    store
        .insert_grant(&grant_record(
            grant(11, Purpose::Bundled, 100, GrantStatus::Active),
            other.id,
        ))
        .unwrap();
    let hold = HoldRecord {
        id: id(20),
        wallet_id: other.id,
        scale: scale(),
        amount: amount(5),
        reservations: Vec::new(),
        status: HoldStatus::Active,
        expires_at: at(60),
        debit_id: None,
        ended_at: None,
        created_at: at(0),
    };
    store.insert_hold(&hold).unwrap();
    let mut grants = store.grant_wallet_ids(&[id(10), id(11), id(99)]).unwrap();
    grants.sort_unstable();
    let mut both = vec![info.id, other.id];
    both.sort_unstable();
    assert_eq!(grants, both);
    assert_eq!(
        store.hold_wallet_ids(&[id(20), id(98)]).unwrap(),
        vec![other.id]
    );
    assert_eq!(store.hold_wallet_ids(&[]).unwrap(), Vec::<u128>::new());
    assert_eq!(store.grant_wallet_ids(&[]).unwrap(), Vec::<u128>::new());
}

/// A campaign's call to all customers: `lock_promotion` reads the campaign
/// inside the writer's transaction; the run row round-trips, is replaced by
/// a later claim, and goes with `delete_bulk_run`.
fn bulk_runs_round_trip_under_the_campaign_lock(store: &mut dyn Store) {
    let cs = credit_system(1, "tokens");
    store.upsert_credit_system(&cs).unwrap();
    let campaign = promotion(10, cs.id, None, None);
    store.upsert_promotion(&campaign).unwrap();
    store.begin().unwrap();
    assert_eq!(store.lock_promotion(id(10)).unwrap(), Some(campaign));
    assert_eq!(store.lock_promotion(id(11)).unwrap(), None);
    assert_eq!(store.bulk_run(id(10)).unwrap(), None);
    let mut run = BulkRun {
        promotional_credit_id: id(10),
        run_id: id(30),
        action: "grant".into(),
        idempotency_key: Some("everyone".into()),
        fingerprint: Some([7; 32]),
        cursor: None,
        progress: r#"{"done":0,"skipped":0,"skipped_by_reason":{}}"#.into(),
        lease_until: at(10),
        total: Some(1002),
        finished_at: None,
        error: None,
    };
    store.upsert_bulk_run(&run).unwrap();
    store.commit().unwrap();
    assert_eq!(store.bulk_run(id(10)).unwrap().as_ref(), Some(&run));

    run.cursor = Some(id(40));
    run.lease_until = at(20);
    run.progress = r#"{"done":1000,"skipped":2,"skipped_by_reason":{"no_wallet":2}}"#.into();
    store.upsert_bulk_run(&run).unwrap();
    assert_eq!(store.bulk_run(id(10)).unwrap().as_ref(), Some(&run));

    // An ended call stays, with its outcome, until the next claim.
    run.finished_at = Some(at(25));
    run.error = Some("the promotional credit is not active".into());
    store.upsert_bulk_run(&run).unwrap();
    assert_eq!(store.bulk_run(id(10)).unwrap().as_ref(), Some(&run));

    let taken_over = BulkRun {
        run_id: id(31),
        action: "revoke".into(),
        idempotency_key: None,
        fingerprint: None,
        cursor: None,
        total: None,
        finished_at: None,
        error: None,
        ..run.clone()
    };
    store.upsert_bulk_run(&taken_over).unwrap();
    assert_eq!(store.bulk_run(id(10)).unwrap(), Some(taken_over));
    store.delete_bulk_run(id(10)).unwrap();
    assert_eq!(store.bulk_run(id(10)).unwrap(), None);
}

/// The balance at `at`, as history reads it (SPEC rule 17).
fn balance_at(
    store: &mut dyn Store,
    wallet_id: u128,
    at: Instant,
) -> credstack::store::StoreResult<Amount> {
    let sequence = store.last_sequence_at(wallet_id, at)?;
    store.balance_after(wallet_id, sequence)
}

/// Each grant's remainder at `at`, as history reads it (SPEC rule 17).
fn remainders_at(
    store: &mut dyn Store,
    wallet_id: u128,
    at: Instant,
) -> credstack::store::StoreResult<Vec<(u128, Amount)>> {
    let sequence = store.last_sequence_at(wallet_id, at)?;
    store.grant_remainders_through(wallet_id, sequence)
}

// ---- events and webhook deliveries --------------------------------------------------

fn event(n: u64, wallet_id: u128, sequence: u64) -> EventRecord {
    EventRecord {
        id: id(n),
        wallet_id,
        sequence,
        kind: EventType::GrantCreated,
        occurred_at: at(10 + sequence as i64),
        data: format!("{{\"n\":{n}}}"),
    }
}

fn delivery(n: u64, endpoint_id: u128, event: &EventRecord, next: Instant) -> Delivery {
    Delivery {
        id: id(n),
        endpoint_id,
        event_id: event.id,
        event_type: event.kind,
        wallet_id: event.wallet_id,
        sequence: event.sequence,
        status: DeliveryStatus::Pending,
        attempts: 0,
        next_attempt_at: Some(next),
        retry_from: next,
        attempts_before_retry: 0,
        created_at: next,
        last_attempt_at: None,
        last_status_code: None,
        last_error: None,
    }
}

fn claimed(store: &mut dyn Store, now: i64, lease: i64) -> Vec<(u128, u32)> {
    store
        .claim_deliveries(at(now), at(lease), 10)
        .unwrap()
        .into_iter()
        .map(|job| (job.delivery.id, job.delivery.attempts))
        .collect()
}

fn end(store: &mut dyn Store, delivery: u128, number: u32, now: i64, end: AttemptEnd) -> bool {
    let attempt = Attempt {
        delivery_id: delivery,
        number,
        at: at(now),
        status_code: Some(500),
        error: Some("the endpoint answered 500".into()),
        duration_ms: 3,
    };
    store.finish_attempt(&attempt, &end).unwrap()
}

fn next_attempt(store: &mut dyn Store, delivery: u128) -> Option<Instant> {
    store.delivery(delivery).unwrap().unwrap().next_attempt_at
}

/// The outbox and the delivery log: a wallet's deliveries to an endpoint
/// are claimed one at a time in sequence order, never ahead of an event
/// not fanned out yet; those behind a retry wait for it (not due, so
/// nothing reads them), and go as soon as it ends.
fn webhook_deliveries_go_out_in_order_per_wallet(store: &mut dyn Store) {
    let (_, _, info) = base(store);
    let w = info.id;
    let endpoint = WebhookEndpoint {
        id: id(100),
        url: "https://example.com/hooks".into(),
        description: Some("billing".into()),
        event_types: vec!["*".into()],
        secret: "whsec_test".into(),
        enabled: true,
        created_at: at(0),
    };
    store.upsert_webhook_endpoint(&endpoint).unwrap();
    assert_eq!(store.webhook_endpoints().unwrap(), vec![endpoint.clone()]);
    let e = endpoint.id;
    let events: Vec<EventRecord> = (1..=3).map(|n| event(10 + n, w, n)).collect();
    store
        .insert_rows(&NewRows {
            events: events.clone(),
            ..NewRows::default()
        })
        .unwrap();
    assert_eq!(store.last_event_sequence(w).unwrap(), 3);
    assert_eq!(store.event(events[1].id).unwrap(), Some(events[1].clone()));
    assert_eq!(store.undispatched_events(10).unwrap(), events);
    assert_eq!(store.outbox_backlog().unwrap(), (3, 0));

    // Event 2 fanned out before event 1 (another node's fan-out of event 1
    // in flight): its delivery waits for event 1.
    let d2 = delivery(22, e, &events[1], at(100));
    store.insert_deliveries(std::slice::from_ref(&d2)).unwrap();
    store.mark_dispatched(&[events[1].id]).unwrap();
    assert_eq!(claimed(store, 200, 300), vec![]);
    let d1 = delivery(21, e, &events[0], at(100));
    store.insert_deliveries(std::slice::from_ref(&d1)).unwrap();
    store.mark_dispatched(&[events[0].id]).unwrap();
    assert_eq!(store.outbox_backlog().unwrap(), (1, 2));
    // Only the first of the wallet's deliveries goes, leased.
    assert_eq!(claimed(store, 200, 300), vec![(d1.id, 1)]);
    assert_eq!(next_attempt(store, d1.id), Some(at(300)));
    assert_eq!(claimed(store, 200, 300), vec![], "leased");

    // It fails. The one behind it was made before it (event 2 fanned out
    // first), so it has a time, but no claim takes it ahead of event 1's.
    assert!(end(store, d1.id, 1, 210, AttemptEnd::Retry(at(1000))));
    assert_eq!(next_attempt(store, d2.id), Some(at(100)));
    assert_eq!(claimed(store, 999, 1100), vec![]);
    assert_eq!(claimed(store, 1000, 1100), vec![(d1.id, 2)]);
    assert!(
        !end(store, d1.id, 1, 1000, AttemptEnd::Succeeded),
        "an attempt whose claim was taken over records nothing"
    );
    // Made behind pending ones, a delivery waits with no time: no claim
    // and no due check reads it, and nothing lets it go before its turn.
    let d3 = delivery(23, e, &events[2], at(1000));
    store.insert_deliveries(std::slice::from_ref(&d3)).unwrap();
    store.mark_dispatched(&[events[2].id]).unwrap();
    assert_eq!(next_attempt(store, d3.id), None);
    assert_eq!(store.release_waiting_deliveries(at(1000)).unwrap(), 0);
    // The first succeeds: the next goes, one at a time.
    assert!(end(store, d1.id, 2, 1000, AttemptEnd::Succeeded));
    assert_eq!(next_attempt(store, d3.id), None, "event 2's goes first");
    assert_eq!(claimed(store, 1000, 1100), vec![(d2.id, 1)]);
    assert!(end(store, d2.id, 1, 1005, AttemptEnd::GiveUp));
    assert_eq!(
        next_attempt(store, d3.id),
        Some(at(1005)),
        "let go when the one ahead ended"
    );
    assert!(store.deliveries_due(at(1005)).unwrap());
    assert_eq!(claimed(store, 1005, 1100), vec![(d3.id, 1)]);
    assert!(end(store, d3.id, 1, 1005, AttemptEnd::Succeeded));
    assert_eq!(store.outbox_backlog().unwrap(), (0, 0));
    assert!(!store.deliveries_due(at(5000)).unwrap());

    // The log.
    let first = store.delivery(d1.id).unwrap().unwrap();
    assert_eq!(first.status, DeliveryStatus::Succeeded);
    assert_eq!(first.attempts, 2);
    assert_eq!(first.last_status_code, Some(500));
    let attempts = store.delivery_attempts(d1.id).unwrap();
    assert_eq!(
        attempts
            .iter()
            .map(|a| (a.number, a.at))
            .collect::<Vec<_>>(),
        vec![(1, at(210)), (2, at(1000))]
    );
    let failed = store
        .list_deliveries(e, Some(DeliveryStatus::Failed), 10, None)
        .unwrap();
    assert_eq!(
        failed.items.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![d2.id]
    );
    // Sent again by hand: once, from now, its backoff starting again.
    assert!(store.redeliver(d2.id, at(2000)).unwrap());
    let again = store.delivery(d2.id).unwrap().unwrap();
    assert_eq!(
        (
            again.retry_from,
            again.attempts,
            again.attempts_before_retry
        ),
        (at(2000), 1, 1)
    );
    assert!(
        !store.redeliver(d2.id, at(2000)).unwrap(),
        "already pending"
    );
    assert_eq!(claimed(store, 2000, 2100), vec![(d2.id, 2)]);
    // A disabled endpoint gets nothing claimed.
    assert!(end(store, d2.id, 2, 2000, AttemptEnd::Retry(at(2500))));
    store
        .upsert_webhook_endpoint(&WebhookEndpoint {
            enabled: false,
            ..endpoint.clone()
        })
        .unwrap();
    assert!(!store.deliveries_due(at(3000)).unwrap());
    assert_eq!(claimed(store, 3000, 3100), vec![]);
    // Deleting the endpoint deletes its log.
    assert!(store.delete_webhook_endpoint(e).unwrap());
    assert_eq!(store.delivery(d1.id).unwrap(), None);
    assert_eq!(store.delivery_attempts(d1.id).unwrap(), vec![]);
    assert_eq!(store.list_events(Some(w), 10, None).unwrap().items.len(), 3);
}
