//! The design most billing systems use, as the baseline for `pg-debits`:
//! per debit, one PostgreSQL transaction that records the idempotency key,
//! selects the wallet's live grants `FOR UPDATE` in drawdown order, updates
//! their remainders and inserts one entry per grant drawn. Prepared
//! statements, one connection per concurrent caller (threads, since the
//! client is synchronous), the same data shape as credstack's (wallets of
//! four stacked grants) in the same database server, in the same run.

use crate::drive::{Measured, histogram, measured};
use postgres::{Client, NoTls};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

const SCHEMA: &str = "
CREATE TABLE naive_grants (
    wallet_id bigint NOT NULL,
    grant_id bigint NOT NULL,
    priority int NOT NULL,
    expires_at timestamptz,
    remaining bigint NOT NULL CHECK (remaining >= 0),
    PRIMARY KEY (wallet_id, grant_id)
);
CREATE TABLE naive_entries (
    id bigserial PRIMARY KEY,
    wallet_id bigint NOT NULL,
    grant_id bigint NOT NULL,
    amount bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX naive_entries_by_wallet ON naive_entries (wallet_id, id);
CREATE TABLE naive_idempotency (
    key text PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now()
);
";

/// Creates the baseline's tables in `config`'s database with `wallets`
/// wallets of four grants (promotional expiring in 30 days, bundled, two
/// paid; priorities as credstack's defaults).
pub fn seed(config: &postgres::Config, wallets: u64) {
    let mut client = config.connect(NoTls).expect("connect for the baseline");
    client.batch_execute(SCHEMA).expect("baseline schema");
    client
        .execute(
            "INSERT INTO naive_grants (wallet_id, grant_id, priority, expires_at, remaining)
             SELECT w, g, CASE g WHEN 1 THEN 10 WHEN 2 THEN 20 ELSE 30 END,
                    CASE g WHEN 1 THEN now() + interval '30 days' END, 1000000000
             FROM generate_series(1, $1::bigint) w, generate_series(1, 4) g",
            &[&(wallets as i64)],
        )
        .expect("baseline grants");
    client
        .batch_execute("VACUUM ANALYZE naive_grants")
        .expect("analyze");
}

/// Runs `total` debits of 1 from `connections` threads, each on its own
/// connection; `pick(n)` chooses the wallet (1-based) of debit `n`.
/// Each debit carries a client's random key ([`crate::client_key`]).
pub fn run(
    config: &postgres::Config,
    connections: usize,
    total: u64,
    pick: Arc<dyn Fn(u64) -> u64 + Send + Sync>,
) -> Measured {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let threads: Vec<_> = (0..connections)
        .map(|_| {
            let mut client = config.connect(NoTls).expect("connect for the baseline");
            let next = next.clone();
            let pick = pick.clone();
            std::thread::spawn(move || {
                let mut latencies = histogram();
                let statements = Statements::prepare(&mut client);
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        return latencies;
                    }
                    let began = Instant::now();
                    let key = crate::client_key();
                    debit(&mut client, &statements, pick(n) as i64, 1, &key);
                    latencies.saturating_record((began.elapsed().as_micros() as u64).max(1));
                }
            })
        })
        .collect();
    let mut latencies = histogram();
    for thread in threads {
        latencies
            .add(thread.join().expect("baseline thread"))
            .expect("same bounds");
    }
    measured(total, started.elapsed().as_secs_f64(), &latencies)
}

struct Statements {
    key: postgres::Statement,
    grants: postgres::Statement,
    update: postgres::Statement,
    entry: postgres::Statement,
}

impl Statements {
    fn prepare(client: &mut Client) -> Statements {
        Statements {
            key: client
                .prepare("INSERT INTO naive_idempotency (key) VALUES ($1)")
                .unwrap(),
            grants: client
                .prepare(
                    "SELECT grant_id, remaining FROM naive_grants
                     WHERE wallet_id = $1 AND remaining > 0
                       AND (expires_at IS NULL OR expires_at > now())
                     ORDER BY priority, expires_at NULLS LAST, grant_id
                     FOR UPDATE",
                )
                .unwrap(),
            update: client
                .prepare(
                    "UPDATE naive_grants SET remaining = remaining - $3
                     WHERE wallet_id = $1 AND grant_id = $2",
                )
                .unwrap(),
            entry: client
                .prepare(
                    "INSERT INTO naive_entries (wallet_id, grant_id, amount) VALUES ($1, $2, $3)",
                )
                .unwrap(),
        }
    }
}

/// One debit, the naive way: one transaction, grants locked in drawdown order.
fn debit(client: &mut Client, s: &Statements, wallet: i64, amount: i64, key: &str) {
    let mut t = client.transaction().expect("begin");
    t.execute(&s.key, &[&key]).expect("idempotency key");
    let grants = t.query(&s.grants, &[&wallet]).expect("grants");
    let mut left = amount;
    for row in grants {
        if left == 0 {
            break;
        }
        let grant: i64 = row.get(0);
        let remaining: i64 = row.get(1);
        let take = left.min(remaining);
        t.execute(&s.update, &[&wallet, &grant, &take])
            .expect("update grant");
        t.execute(&s.entry, &[&wallet, &grant, &-take])
            .expect("entry");
        left -= take;
    }
    assert_eq!(left, 0, "the baseline's wallets never run dry");
    t.commit().expect("commit");
}
