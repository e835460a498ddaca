//! The PostgreSQL store against a real server. Each test creates its own
//! database (dropped at the end), migrates it and round-trips records.
//!
//! The server is `DATABASE_URL`, else `postgres://postgres@127.0.0.1:5432/postgres`.
//! Without a reachable server the tests print `SKIP` and pass, unless `CI`
//! is set, where they fail.

use credstack::records::*;
use credstack::store::postgres as pg;
use credstack_core::promotion::{Policy, Status};
use credstack_core::{
    Allocation, Amount, EntryKind, Grant, GrantId, GrantStatus, GrantTerms, Hold, HoldId, Instant,
    Interval, Period, Purpose, Reservation, Scale, Wallet,
};
use postgres::{Client, Config, NoTls};
use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};

fn server_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// A fresh database, dropped (with its connections) when this goes out of scope.
struct TestDb {
    name: String,
    config: Config,
}

impl TestDb {
    /// `None` (after printing `SKIP`) when no server is reachable outside CI.
    fn create() -> Option<TestDb> {
        let url = server_url();
        let mut admin = match Client::connect(&url, NoTls) {
            Ok(client) => client,
            Err(error) => {
                if std::env::var_os("CI").is_some() {
                    panic!("PostgreSQL not reachable at {url}: {error}");
                }
                println!("SKIP: PostgreSQL not reachable");
                return None;
            }
        };
        let name = format!("credstack_test_{:032x}", ulid::Ulid::generate().0);
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create the test database");
        let mut config: Config = url.parse().expect("a valid DATABASE_URL");
        config.dbname(&name);
        Some(TestDb { name, config })
    }

    fn connect(&self) -> Client {
        self.config
            .connect(NoTls)
            .expect("connect to the test database")
    }

    /// A connection to a migrated database.
    fn migrated(&self) -> Client {
        let mut client = self.connect();
        pg::configure(&mut client).expect("configure");
        pg::migrate(&mut client).expect("migrate");
        client
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut admin) = Client::connect(&server_url(), NoTls) {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

macro_rules! test_db {
    () => {
        match TestDb::create() {
            Some(db) => db,
            None => return,
        }
    };
}

// ---- fixtures -------------------------------------------------------------------

const BASE_MICROS: i64 = 1_767_225_600_123_456;

/// An instant `seconds` after a fixed base, with microseconds that must survive.
fn at(seconds: i64) -> Instant {
    pg::instant(BASE_MICROS + seconds * 1_000_000)
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
fn base(c: &mut Client) -> (CreditSystem, Customer, WalletInfo) {
    let cs = credit_system(1, "tokens");
    let cus = customer(2, "Ada Lovelace", Some("ada@example.com"), Some("crm-ada"));
    let info = wallet_info(3, cus.id, cs.id);
    pg::upsert_credit_system(c, &cs).unwrap();
    pg::upsert_customer(c, &cus).unwrap();
    pg::insert_wallet(c, &info, &Wallet::new(amount(500))).unwrap();
    (cs, cus, info)
}

fn count(c: &mut Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).unwrap().get(0)
}

// ---- migrations -----------------------------------------------------------------

#[test]
fn migrate_applies_the_schema_once() {
    let db = test_db!();
    let mut c = db.migrated();
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
    let sqlite = credstack::store::sqlite::open(&dir.path().join("x.db")).unwrap();
    let mut embedded: Vec<String> = sqlite
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY 1")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    tables.sort();
    embedded.sort();
    assert_eq!(tables, embedded);
}

#[test]
fn two_processes_migrating_at_once_both_succeed() {
    let db = test_db!();
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
    assert_eq!(count(&mut c, "SELECT count(*) FROM wallets"), 0);
}

#[test]
fn open_and_the_pool_connect_and_migrate() {
    let db = test_db!();
    let mut config_url = server_url();
    // Point the URL at the test database.
    if let Some(slash) = config_url.rfind('/') {
        config_url.truncate(slash + 1);
        config_url.push_str(&db.name);
    }
    let mut client = pg::open(&config_url).expect("open");
    assert_eq!(
        count(&mut client, "SELECT count(*) FROM schema_migrations"),
        pg::SCHEMA_VERSION
    );
    let pool = pg::open_pool(&config_url, 2).expect("pool");
    let mut connection = pool.get().unwrap();
    let timeout: String = connection
        .query_one("SHOW lock_timeout", &[])
        .unwrap()
        .get(0);
    assert_eq!(timeout, "5s");
}

// ---- credit systems and customers -------------------------------------------------

#[test]
fn credit_systems_round_trip_and_page() {
    let db = test_db!();
    let mut c = db.migrated();
    let systems: Vec<CreditSystem> = (1..=3)
        .map(|n| credit_system(n, &format!("key{n}")))
        .collect();
    for cs in &systems {
        pg::upsert_credit_system(&mut c, cs).unwrap();
    }
    assert_eq!(
        pg::credit_system(&mut c, id(2)).unwrap(),
        Some(systems[1].clone())
    );
    assert_eq!(
        pg::credit_system_by_key(&mut c, "key3").unwrap(),
        Some(systems[2].clone())
    );
    assert_eq!(pg::credit_system(&mut c, id(99)).unwrap(), None);

    let mut changed = systems[0].clone();
    changed.name = "renamed".to_string();
    changed.active = false;
    changed.key = "ignored-on-update".to_string();
    pg::upsert_credit_system(&mut c, &changed).unwrap();
    let stored = pg::credit_system(&mut c, id(1)).unwrap().unwrap();
    assert_eq!(stored.name, "renamed");
    assert!(!stored.active);
    assert_eq!(stored.key, "key1");

    let first = pg::list_credit_systems(&mut c, 2, None).unwrap();
    let ids: Vec<u128> = first.items.iter().map(|cs| cs.id).collect();
    assert_eq!(ids, vec![id(3), id(2)]);
    assert!(first.has_more);
    let second = pg::list_credit_systems(&mut c, 2, Some(id(2))).unwrap();
    assert_eq!(second.items.len(), 1);
    assert_eq!(second.items[0].id, id(1));
    assert!(!second.has_more);
    let exact = pg::list_credit_systems(&mut c, 3, None).unwrap();
    assert_eq!(exact.items.len(), 3);
    assert!(!exact.has_more);
}

#[test]
fn customers_round_trip_and_search() {
    let db = test_db!();
    let mut c = db.migrated();
    let customers = [
        customer(1, "Ada Lovelace", Some("ADA@Example.com"), Some("crm-1")),
        customer(2, "100% Pure", None, None),
        customer(3, "1000 Pure", None, Some("x_y")),
        customer(4, "Back\\slash", Some("b@example.org"), Some("xay")),
        customer(5, "Grace Hopper", None, Some("CRM-5")),
    ];
    for cus in &customers {
        pg::upsert_customer(&mut c, cus).unwrap();
    }
    assert_eq!(
        pg::customer(&mut c, id(1)).unwrap(),
        Some(customers[0].clone())
    );
    assert_eq!(
        pg::customer_by_external_id(&mut c, "crm-1").unwrap(),
        Some(customers[0].clone())
    );
    assert_eq!(pg::customer_by_external_id(&mut c, "nope").unwrap(), None);

    let mut search = |q: &str| -> Vec<u128> {
        pg::list_customers(&mut c, Some(q), 10, None)
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

    let page = pg::list_customers(&mut c, Some("pure"), 1, None).unwrap();
    assert_eq!(page.items[0].id, id(3));
    assert!(page.has_more);
    let page = pg::list_customers(&mut c, Some("pure"), 1, Some(id(3))).unwrap();
    assert_eq!(page.items[0].id, id(2));
    assert!(!page.has_more);
    let all = pg::list_customers(&mut c, None, 10, None).unwrap();
    assert_eq!(all.items.len(), 5);
    assert_eq!(all.items[0], customers[4]);

    let mut changed = customers[0].clone();
    changed.name = "Ada King".to_string();
    changed.email = None;
    changed.external_id = Some("crm-new".to_string());
    changed.metadata = metadata(&[]);
    pg::upsert_customer(&mut c, &changed).unwrap();
    assert_eq!(pg::customer(&mut c, id(1)).unwrap(), Some(changed));
}

// ---- wallets ------------------------------------------------------------------------

#[test]
fn wallets_load_update_and_come_due() {
    let db = test_db!();
    let mut c = db.migrated();
    let (cs, cus, info) = base(&mut c);
    assert_eq!(
        pg::wallet_info(&mut c, info.id).unwrap(),
        Some(info.clone())
    );
    assert_eq!(
        pg::wallet_by_owner(&mut c, cus.id, cs.id).unwrap(),
        Some(info.clone())
    );
    assert_eq!(pg::wallet_by_owner(&mut c, cs.id, cus.id).unwrap(), None);

    let (loaded_info, loaded) = pg::load_wallet(&mut c, info.id).unwrap().unwrap();
    assert_eq!(loaded_info, info);
    assert_eq!(loaded, Wallet::new(amount(500)));
    assert_eq!(pg::load_wallet(&mut c, id(99)).unwrap(), None);
    assert_eq!(
        pg::lock_wallets(&mut c, &[info.id]).unwrap(),
        vec![(info.id, 0)]
    );

    // Live grants and active holds load; final grants and finished holds do not.
    let live_b = grant(11, Purpose::Paid, 700, GrantStatus::Active);
    let live_a = grant(10, Purpose::Promotional, 300, GrantStatus::Active);
    let mut ended = grant(12, Purpose::Bundled, 0, GrantStatus::Expired);
    ended.ended_at = Some(at(50));
    for g in [&live_b, &live_a, &ended] {
        pg::insert_grant(&mut c, &grant_record(g.clone(), info.id)).unwrap();
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
    pg::insert_hold(&mut c, &hold).unwrap();
    pg::insert_hold(
        &mut c,
        &HoldRecord {
            id: id(21),
            status: HoldStatus::Released,
            ended_at: Some(at(30)),
            ..hold.clone()
        },
    )
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
    pg::update_wallet_state(&mut c, info.id, &wallet).unwrap();
    let (_, loaded) = pg::load_wallet(&mut c, info.id).unwrap().unwrap();
    assert_eq!(loaded, wallet);
    assert_eq!(
        pg::lock_wallets(&mut c, &[info.id]).unwrap(),
        vec![(info.id, 1)]
    );

    // The next event is the hold's expiry, before the grants' month renewal.
    let next = wallet.next_event_at().unwrap();
    assert_eq!(next, at(3_600));
    assert_eq!(
        pg::wallet_next_event_at(&mut c, info.id).unwrap(),
        Some(next)
    );
    assert_eq!(pg::wallet_next_event_at(&mut c, id(99)).unwrap(), None);
    assert_eq!(pg::due_wallets(&mut c, at(3_599), 10).unwrap(), vec![]);
    assert_eq!(
        pg::due_wallets(&mut c, at(3_600), 10).unwrap(),
        vec![info.id]
    );

    // A second wallet, due sooner, for ordering and limits.
    let other_customer = customer(4, "Grace", None, None);
    pg::upsert_customer(&mut c, &other_customer).unwrap();
    let other = wallet_info(5, other_customer.id, cs.id);
    pg::insert_wallet(&mut c, &other, &Wallet::new(amount(0))).unwrap();
    let mut other_state = Wallet::new(amount(0));
    other_state.holds.push(Hold {
        id: HoldId(id(22)),
        amount: amount(1),
        expires_at: at(100),
        reservations: vec![],
    });
    pg::update_wallet_state(&mut c, other.id, &other_state).unwrap();
    assert_eq!(
        pg::due_wallets(&mut c, at(10_000), 10).unwrap(),
        vec![other.id, info.id]
    );
    assert_eq!(
        pg::due_wallets(&mut c, at(10_000), 1).unwrap(),
        vec![other.id]
    );
    pg::update_wallet_state(&mut c, other.id, &Wallet::new(amount(0))).unwrap();
    assert_eq!(pg::wallet_next_event_at(&mut c, other.id).unwrap(), None);
    assert_eq!(
        pg::due_wallets(&mut c, at(10_000), 10).unwrap(),
        vec![info.id]
    );

    // Listing, filtering, counting, walking customers.
    let all = pg::list_wallets(&mut c, None, None, 10, None).unwrap();
    assert_eq!(all.items, vec![other.clone(), info.clone()]);
    let mine = pg::list_wallets(&mut c, Some(cus.id), None, 10, None).unwrap();
    assert_eq!(mine.items, vec![info.clone()]);
    let by_system = pg::list_wallets(&mut c, None, Some(cs.id), 1, None).unwrap();
    assert_eq!(by_system.items, vec![other.clone()]);
    assert!(by_system.has_more);
    let both = pg::list_wallets(&mut c, Some(cus.id), Some(cs.id), 10, Some(info.id)).unwrap();
    assert!(both.items.is_empty());
    assert!(!both.has_more);
    assert!(
        pg::list_wallets(&mut c, None, Some(id(99)), 10, None)
            .unwrap()
            .items
            .is_empty()
    );
    assert_eq!(pg::count_wallets(&mut c, cs.id).unwrap(), 2);
    assert_eq!(pg::count_wallets(&mut c, id(99)).unwrap(), 0);
    assert_eq!(
        pg::customers_with_wallets(&mut c, cs.id, None, 10).unwrap(),
        vec![cus.id, other_customer.id]
    );
    assert_eq!(
        pg::customers_with_wallets(&mut c, cs.id, Some(cus.id), 10).unwrap(),
        vec![other_customer.id]
    );
    assert_eq!(
        pg::customers_with_wallets(&mut c, cs.id, None, 1).unwrap(),
        vec![cus.id]
    );
}

// ---- grants -------------------------------------------------------------------------

#[test]
fn grants_round_trip_update_and_list_by_status() {
    let db = test_db!();
    let mut c = db.migrated();
    let (_, _, info) = base(&mut c);
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
        pg::insert_grant(&mut c, r).unwrap();
    }
    for r in &records {
        assert_eq!(pg::grant(&mut c, r.grant.id.0).unwrap().as_ref(), Some(r));
    }
    assert_eq!(pg::grant(&mut c, id(99)).unwrap(), None);

    let mut expired = records[1].grant.clone();
    expired.status = GrantStatus::Expired;
    expired.remaining = amount(25);
    expired.held = amount(25);
    expired.cycle = 4;
    expired.ended_at = Some(at(999));
    pg::update_grant_state(&mut c, &expired).unwrap();
    assert_eq!(
        pg::grant(&mut c, expired.id.0).unwrap().unwrap().grant,
        expired
    );
    // Still live (it holds), so it still loads with the wallet.
    let (_, wallet) = pg::load_wallet(&mut c, info.id).unwrap().unwrap();
    assert!(wallet.grants.contains(&expired));
    expired.held = amount(0);
    expired.remaining = amount(0);
    pg::update_grant_state(&mut c, &expired).unwrap();
    let (_, wallet) = pg::load_wallet(&mut c, info.id).unwrap().unwrap();
    let live: Vec<u128> = wallet.grants.iter().map(|g| g.id.0).collect();
    // The plain depleted grant is final; 12 scheduled and 13 recurring are live.
    assert_eq!(live, vec![id(12), id(13)]);

    let mut list = |status: Option<&str>| -> Vec<u128> {
        pg::list_grants(&mut c, info.id, status, 10, None)
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
    pg::update_grant_state(&mut c, &topped).unwrap();
    assert_eq!(
        pg::list_grants(&mut c, info.id, Some("active"), 10, None)
            .unwrap()
            .items
            .len(),
        1
    );
    let page = pg::list_grants(&mut c, info.id, None, 2, Some(id(13))).unwrap();
    let ids: Vec<u128> = page.items.iter().map(|r| r.grant.id.0).collect();
    assert_eq!(ids, vec![id(12), id(11)]);
    assert!(page.has_more);
    assert!(
        pg::list_grants(&mut c, id(99), None, 10, None)
            .unwrap()
            .items
            .is_empty()
    );
}

// ---- holds and debits -----------------------------------------------------------------

#[test]
fn holds_and_debits_round_trip() {
    let db = test_db!();
    let mut c = db.migrated();
    let (_, _, info) = base(&mut c);
    pg::insert_grant(
        &mut c,
        &grant_record(grant(10, Purpose::Paid, 900, GrantStatus::Active), info.id),
    )
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
    pg::insert_hold(&mut c, &hold).unwrap();
    assert_eq!(pg::hold(&mut c, hold.id).unwrap(), Some(hold.clone()));
    assert_eq!(pg::hold(&mut c, id(99)).unwrap(), None);

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
    pg::insert_debit(&mut c, &debit).unwrap();
    pg::finish_hold(
        &mut c,
        hold.id,
        HoldStatus::Captured,
        Some(debit.id),
        at(40),
    )
    .unwrap();
    let finished = pg::hold(&mut c, hold.id).unwrap().unwrap();
    assert_eq!(
        finished,
        HoldRecord {
            status: HoldStatus::Captured,
            debit_id: Some(debit.id),
            ended_at: Some(at(40)),
            ..hold.clone()
        }
    );
    pg::finish_hold(&mut c, hold.id, HoldStatus::Expired, None, at(41)).unwrap();
    let finished = pg::hold(&mut c, hold.id).unwrap().unwrap();
    assert_eq!(finished.status, HoldStatus::Expired);
    assert_eq!(finished.debit_id, None);

    assert_eq!(pg::debit(&mut c, debit.id).unwrap(), Some(debit.clone()));
    assert_eq!(pg::debit(&mut c, id(99)).unwrap(), None);
    let second = DebitRecord {
        id: id(31),
        allocations: vec![],
        description: None,
        metadata: metadata(&[]),
        hold_id: None,
        ..debit.clone()
    };
    pg::insert_debit(&mut c, &second).unwrap();
    let page = pg::list_debits(&mut c, info.id, 1, None).unwrap();
    assert_eq!(page.items, vec![second.clone()]);
    assert!(page.has_more);
    let page = pg::list_debits(&mut c, info.id, 1, Some(second.id)).unwrap();
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
    }
}

#[test]
fn entries_list_and_answer_point_in_time_queries() {
    let db = test_db!();
    let mut c = db.migrated();
    let (_, _, info) = base(&mut c);
    let g1 = grant_record(grant(10, Purpose::Paid, 0, GrantStatus::Active), info.id);
    let g2 = grant_record(
        grant(11, Purpose::Promotional, 0, GrantStatus::Active),
        info.id,
    );
    pg::insert_grant(&mut c, &g1).unwrap();
    pg::insert_grant(&mut c, &g2).unwrap();
    let deltas = [
        (Some(id(10)), 1_000),
        (Some(id(11)), 200),
        (Some(id(11)), -150),
        (None, -30),
        (Some(id(10)), -400),
    ];
    let mut balance = 0;
    let mut entries = Vec::new();
    for (i, (grant_id, delta)) in deltas.into_iter().enumerate() {
        balance += delta;
        let mut e = entry(100 + i as u64, info.id, i as u64 + 1, grant_id, delta);
        e.balance_after = amount(balance);
        pg::insert_entry(&mut c, &e).unwrap();
        entries.push(e);
    }

    let asc = pg::list_entries(&mut c, info.id, true, 2, None).unwrap();
    assert_eq!(asc.items, entries[..2].to_vec());
    assert!(asc.has_more);
    let asc = pg::list_entries(&mut c, info.id, true, 3, Some(entries[1].id)).unwrap();
    assert_eq!(asc.items, entries[2..].to_vec());
    assert!(!asc.has_more);
    let desc = pg::list_entries(&mut c, info.id, false, 2, None).unwrap();
    assert_eq!(desc.items, vec![entries[4].clone(), entries[3].clone()]);
    assert!(desc.has_more);
    let desc = pg::list_entries(&mut c, info.id, false, 10, Some(entries[2].id)).unwrap();
    assert_eq!(desc.items, vec![entries[1].clone(), entries[0].clone()]);
    assert!(!desc.has_more);

    // Entry n occurs at base + 10n seconds.
    assert_eq!(pg::balance_at(&mut c, info.id, at(5)).unwrap(), amount(0));
    assert_eq!(
        pg::balance_at(&mut c, info.id, at(10)).unwrap(),
        amount(1_000)
    );
    assert_eq!(
        pg::balance_at(&mut c, info.id, at(35)).unwrap(),
        amount(1_050)
    );
    assert_eq!(
        pg::balance_at(&mut c, info.id, at(1_000)).unwrap(),
        amount(620)
    );
    assert_eq!(
        pg::grant_remainders_at(&mut c, info.id, at(5)).unwrap(),
        vec![]
    );
    assert_eq!(
        pg::grant_remainders_at(&mut c, info.id, at(30)).unwrap(),
        vec![(id(10), amount(1_000)), (id(11), amount(50))]
    );
    assert_eq!(
        pg::grant_remainders_at(&mut c, info.id, at(50)).unwrap(),
        vec![(id(10), amount(600)), (id(11), amount(50))]
    );

    // The chart: entries oldest first with purposes, and what each purpose holds.
    let mut paid = g1.grant.clone();
    paid.remaining = amount(600);
    pg::update_grant_state(&mut c, &paid).unwrap();
    let mut promo = g2.grant.clone();
    promo.remaining = amount(50);
    pg::update_grant_state(&mut c, &promo).unwrap();
    let mut state = Wallet::new(amount(500));
    state.debt = amount(30);
    pg::update_wallet_state(&mut c, info.id, &state).unwrap();
    let ledger = pg::entries_with_purpose(&mut c, info.id, 3)
        .unwrap()
        .unwrap();
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
    let all = pg::entries_with_purpose(&mut c, info.id, 10_000)
        .unwrap()
        .unwrap();
    assert_eq!(all.entries.len(), 5);
    assert!(
        pg::entries_with_purpose(&mut c, id(99), 10)
            .unwrap()
            .is_none()
    );
    // And inside a caller's transaction.
    let mut t = c.transaction().unwrap();
    let ledger = pg::entries_with_purpose(&mut t, info.id, 1)
        .unwrap()
        .unwrap();
    assert_eq!(
        ledger.entries,
        vec![(entries[4].clone(), Some(Purpose::Paid))]
    );
    t.commit().unwrap();
}

// ---- api keys, idempotency, sessions ----------------------------------------------------

#[test]
fn api_keys_round_trip() {
    let db = test_db!();
    let mut c = db.migrated();
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
        pg::insert_api_key(&mut c, key).unwrap();
    }
    let newest_first: Vec<ApiKey> = keys.iter().rev().cloned().collect();
    assert_eq!(pg::api_keys(&mut c).unwrap(), newest_first);
    let page = pg::list_api_keys(&mut c, 2, None).unwrap();
    assert_eq!(page.items, newest_first[..2].to_vec());
    assert!(page.has_more);
    let page = pg::list_api_keys(&mut c, 2, Some(id(2))).unwrap();
    assert_eq!(page.items, vec![keys[0].clone()]);
    assert!(!page.has_more);
    assert!(pg::delete_api_key(&mut c, id(2)).unwrap());
    assert!(!pg::delete_api_key(&mut c, id(2)).unwrap());
    assert_eq!(pg::api_keys(&mut c).unwrap().len(), 2);
}

#[test]
fn idempotency_keys_replay_across_connections_and_purge() {
    let db = test_db!();
    let mut node_a = db.migrated();
    let mut node_b = db.connect();
    let response = StoredResponse {
        status: 201,
        body: "{\"id\":\"deb_1\"}".to_string(),
    };
    pg::insert_idempotency(&mut node_a, "k-old", &[1; 32], &response, at(0)).unwrap();
    pg::insert_idempotency(&mut node_a, "k-new", &[2; 32], &response, at(100)).unwrap();
    // Written on one node, read on another.
    assert_eq!(
        pg::idempotency(&mut node_b, "k-new").unwrap(),
        Some(([2; 32], response.clone()))
    );
    assert_eq!(pg::idempotency(&mut node_b, "missing").unwrap(), None);
    // A key is stored once.
    assert!(pg::insert_idempotency(&mut node_b, "k-new", &[3; 32], &response, at(1)).is_err());
    assert_eq!(pg::purge_idempotency(&mut node_b, at(100)).unwrap(), 1);
    assert_eq!(pg::idempotency(&mut node_a, "k-old").unwrap(), None);
    assert!(pg::idempotency(&mut node_a, "k-new").unwrap().is_some());
    assert_eq!(pg::purge_idempotency(&mut node_a, at(100)).unwrap(), 0);
}

#[test]
fn console_sessions_round_trip() {
    let db = test_db!();
    let mut c = db.migrated();
    let session = ConsoleSession {
        token_hash: [7; 32],
        csrf_token: "csrf-token".to_string(),
        api_key_id: id(1),
        created_at: at(0),
        expires_at: at(3_600),
    };
    pg::insert_session(&mut c, &session).unwrap();
    let other = ConsoleSession {
        token_hash: [8; 32],
        expires_at: at(60),
        ..session.clone()
    };
    pg::insert_session(&mut c, &other).unwrap();
    assert_eq!(
        pg::session(&mut c, &[7; 32], at(10)).unwrap(),
        Some(session.clone())
    );
    assert_eq!(pg::session(&mut c, &[7; 32], at(3_600)).unwrap(), None);
    assert_eq!(pg::session(&mut c, &[9; 32], at(10)).unwrap(), None);
    assert_eq!(pg::purge_sessions(&mut c, at(60)).unwrap(), 1);
    assert_eq!(pg::session(&mut c, &[8; 32], at(0)).unwrap(), None);
    pg::delete_session(&mut c, &[7; 32]).unwrap();
    assert_eq!(pg::session(&mut c, &[7; 32], at(10)).unwrap(), None);
    pg::delete_session(&mut c, &[7; 32]).unwrap();
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

#[test]
fn promotions_and_assignments_round_trip() {
    let db = test_db!();
    let mut c = db.migrated();
    let cs = credit_system(1, "tokens");
    pg::upsert_credit_system(&mut c, &cs).unwrap();

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
        pg::upsert_promotion(&mut c, p).unwrap();
    }
    for p in &campaigns {
        assert_eq!(pg::promotion(&mut c, p.id).unwrap().as_ref(), Some(p));
    }
    let mut list = |status: Option<Status>| -> Vec<u128> {
        pg::list_promotions(&mut c, status, now, 10, None)
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
    let page = pg::list_promotions(&mut c, None, now, 3, Some(id(13))).unwrap();
    assert_eq!(page.items.len(), 3);
    assert!(!page.has_more);

    let mut changed = campaigns[3].clone();
    changed.name = "renamed".to_string();
    changed.applied = true;
    changed.ends_at = None;
    changed.policy.allow_multiple_grants = false;
    pg::upsert_promotion(&mut c, &changed).unwrap();
    assert_eq!(pg::promotion(&mut c, changed.id).unwrap(), Some(changed));
    pg::delete_promotion(&mut c, id(11)).unwrap();
    assert_eq!(pg::promotion(&mut c, id(11)).unwrap(), None);

    // Customers of campaign 10, with a wallet and a grant each:
    // 20 granted; 21 revoked; 22 expired; 23 revoked once, granted again.
    let people = [
        customer(20, "Ada Lovelace", Some("ada@example.com"), None),
        customer(21, "Bob 50%_off", None, Some("crm-bob")),
        customer(22, "Carol", Some("carol@EXAMPLE.com"), None),
        customer(23, "Dan", None, Some("crm-dan")),
    ];
    let mut next = 100;
    let mut assign = |c: &mut Client,
                      cus: &Customer,
                      granted: i64,
                      expires: Option<i64>,
                      revoked: Option<i64>| {
        next += 3;
        let wallet = match pg::wallet_by_owner(c, cus.id, cs.id).unwrap() {
            Some(w) => w,
            None => {
                let w = wallet_info(next, cus.id, cs.id);
                pg::insert_wallet(c, &w, &Wallet::new(amount(0))).unwrap();
                w
            }
        };
        let g = grant_record(
            grant(next + 1, Purpose::Promotional, 500, GrantStatus::Active),
            wallet.id,
        );
        pg::insert_grant(c, &g).unwrap();
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
        pg::upsert_assignment(c, &a).unwrap();
        a
    };
    for cus in &people {
        pg::upsert_customer(&mut c, cus).unwrap();
    }
    assert!(!pg::promotion_has_customers(&mut c, id(10)).unwrap());
    let ada = assign(&mut c, &people[0], 10, Some(2_000), None);
    let mut bob = assign(&mut c, &people[1], 20, None, None);
    let _carol = assign(&mut c, &people[2], 30, Some(900), None);
    let mut dan_old = assign(&mut c, &people[3], 40, None, None);
    let dan_new = assign(&mut c, &people[3], 50, None, None);
    // Revoking is an upsert that changes only revoked_at.
    bob.revoked_at = Some(at(60));
    pg::upsert_assignment(&mut c, &bob).unwrap();
    dan_old.revoked_at = Some(at(45));
    pg::upsert_assignment(&mut c, &dan_old).unwrap();

    assert!(pg::promotion_has_customers(&mut c, id(10)).unwrap());
    assert!(!pg::promotion_has_customers(&mut c, id(12)).unwrap());
    assert_eq!(
        pg::active_assignments(&mut c, id(10), people[0].id, now).unwrap(),
        vec![ada.clone()]
    );
    assert_eq!(
        pg::active_assignments(&mut c, id(10), people[0].id, at(2_000)).unwrap(),
        vec![]
    );
    assert_eq!(
        pg::active_assignments(&mut c, id(10), people[1].id, now).unwrap(),
        vec![]
    );
    assert_eq!(
        pg::active_assignments(&mut c, id(10), people[3].id, now).unwrap(),
        vec![dan_new.clone()]
    );
    assert_eq!(
        pg::customers_with_open_assignments(&mut c, id(10), None, 10).unwrap(),
        vec![people[0].id, people[2].id, people[3].id]
    );
    assert_eq!(
        pg::customers_with_open_assignments(&mut c, id(10), Some(people[2].id), 10).unwrap(),
        vec![people[3].id]
    );
    assert_eq!(
        pg::customers_with_open_assignments(&mut c, id(10), None, 1).unwrap(),
        vec![people[0].id]
    );

    // Granted: Ada and Dan; revoked: Bob; Carol's expired.
    assert_eq!(pg::promotion_counts(&mut c, id(10), now).unwrap(), (2, 1));
    assert_eq!(pg::promotion_counts(&mut c, id(12), now).unwrap(), (0, 0));

    let mut customers = |status: Option<&str>, q: Option<&str>| -> Vec<(u128, &'static str)> {
        pg::promotion_customers(&mut c, id(10), status, q, now, 10, None)
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

    let page =
        pg::promotion_customers(&mut c, id(10), None, None, now, 1, Some(people[3].id)).unwrap();
    assert!(page.has_more);
    let carol = &page.items[0];
    assert_eq!(carol.customer, people[2]);
    assert_eq!(carol.active_assignments, 0);
    assert_eq!(carol.last_granted_at, at(30));
    assert_eq!(carol.revoked_at, None);
    assert!(!carol.latest_revoked);
    let dan = &pg::promotion_customers(&mut c, id(10), Some("granted"), Some("dan"), now, 10, None)
        .unwrap()
        .items[0];
    assert_eq!(dan.active_assignments, 1);
    assert_eq!(dan.last_granted_at, at(50));
    assert_eq!(dan.revoked_at, Some(at(45)));
    assert!(!dan.latest_revoked);
}

// ---- transactions ---------------------------------------------------------------------

#[test]
fn functions_run_inside_a_callers_transaction() {
    let db = test_db!();
    let mut c = db.migrated();
    let cs = credit_system(1, "tokens");
    let mut t = c.transaction().unwrap();
    pg::upsert_credit_system(&mut t, &cs).unwrap();
    assert_eq!(pg::credit_system(&mut t, cs.id).unwrap(), Some(cs.clone()));
    t.rollback().unwrap();
    assert_eq!(pg::credit_system(&mut c, cs.id).unwrap(), None);
    let mut t = c.transaction().unwrap();
    pg::upsert_credit_system(&mut t, &cs).unwrap();
    t.commit().unwrap();
    assert_eq!(pg::credit_system(&mut c, cs.id).unwrap(), Some(cs));
}
