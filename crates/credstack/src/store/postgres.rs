//! The PostgreSQL store: the same rows, records and queries as
//! [`super::sqlite`], for several credstack processes sharing one database.
//! Every function takes `c: &mut impl GenericClient`, so it runs on a
//! `Client` (autocommit) or inside whatever `Transaction` the caller holds.
//!
//! Ids are the same 16-byte big-endian ULIDs as in SQLite (`bytea`), instants
//! the same microseconds (`bigint`); see `postgres_schema_v1.sql`.
//!
//! One difference callers must know: after any error inside a PostgreSQL
//! transaction (a unique violation from `insert_rows` on a key another node
//! took, say) the transaction is aborted and only a rollback is possible,
//! where SQLite lets the transaction carry on.
//!
//! Why this file is past ~800 lines: as `sqlite.rs`, one function per `Store`
//! method, each beside its SQL, in sections by table in the same order. What
//! both backends read alike is written once in `rows.rs`; what is left here
//! is PostgreSQL's own (`$n` placeholders, casts, `FOR UPDATE` locks, and the
//! batch writes as one `unnest` statement per table). When `sqlite.rs` is
//! cut by table, this file is cut the same way, so the two stay side by side.

use super::codec;
use super::rows::{self, Record, Row as _, Shifted, columns, select};
use crate::ids;
use crate::records::*;
use credstack_core::{
    Amount, Grant, GrantId, Hold, HoldId, Instant, Purpose, Reservation, Scale, Wallet,
};
use postgres::types::ToSql;
use postgres::{Client, GenericClient, NoTls, Row};

pub use super::sqlite::micros;
use super::{CHART_ENTRIES_MAX, PurposeLedger};

/// Migrations in order; `schema_migrations` records the applied versions.
const MIGRATIONS: &[&str] = &[
    include_str!("postgres_schema_v1.sql"),
    include_str!("postgres_schema_v2.sql"),
    include_str!("postgres_schema_v3.sql"),
    include_str!("postgres_schema_v4.sql"),
    include_str!("postgres_schema_v5.sql"),
    include_str!("postgres_schema_v6.sql"),
    include_str!("postgres_schema_v7.sql"),
    include_str!("postgres_schema_v8.sql"),
];

/// The schema version a migrated database is at.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The advisory lock every migrating process takes (any constant unique to
/// credstack; advisory locks are scoped to the current database).
const MIGRATION_LOCK: i64 = 0x6372_6564_7374_6b01; // "credstk" 1

type Params<'a> = [&'a (dyn ToSql + Sync)];

/// Connects (no TLS) to `url`, configures the session and migrates.
pub fn open(url: &str) -> Result<Client, OpenError> {
    let mut client = connect(&parse_url(url)?)?;
    migrate(&mut client)?;
    Ok(client)
}

/// Parses a `postgres://` URL or key=value string. Unless the URL says
/// otherwise, a connection attempt gives up after two seconds, so callers
/// hear 503 promptly while the database is down, and TCP keepalives start
/// after 30 s of silence.
pub fn parse_url(url: &str) -> Result<postgres::Config, OpenError> {
    let mut config: postgres::Config = url.parse().map_err(OpenError::Url)?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(std::time::Duration::from_secs(2));
    }
    if config.get_application_name().is_none() {
        config.application_name("credstack");
    }
    // libpq's default is two hours of silence before the first probe: a
    // server gone without closing the connection would stall the writer.
    if config.get_keepalives_idle() == std::time::Duration::from_secs(2 * 60 * 60) {
        config.keepalives_idle(std::time::Duration::from_secs(30));
    }
    Ok(config)
}

/// Creates the database `config` names if the server says it does not
/// exist, connecting to the `postgres` maintenance database to do it (the
/// user needs the CREATEDB privilege). Another process creating it at the
/// same moment is fine. Returns whether this call created it.
pub fn create_database_if_missing(config: &postgres::Config) -> Result<bool, postgres::Error> {
    let missing = match config.connect(NoTls) {
        Ok(_) => return Ok(false),
        Err(error) => {
            if error.code() != Some(&postgres::error::SqlState::INVALID_CATALOG_NAME) {
                return Err(error);
            }
            error
        }
    };
    let Some(name) = config.get_dbname().map(str::to_string) else {
        return Err(missing);
    };
    let mut maintenance = config.clone();
    maintenance.dbname("postgres");
    let mut client = maintenance.connect(NoTls)?;
    let quoted = format!("\"{}\"", name.replace('"', "\"\""));
    match client.batch_execute(&format!("CREATE DATABASE {quoted}")) {
        Ok(()) => Ok(true),
        // Another process won the race: PostgreSQL reports it either way.
        Err(error)
            if error.code() == Some(&postgres::error::SqlState::DUPLICATE_DATABASE)
                || error.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION) =>
        {
            Ok(false)
        }
        Err(error) => Err(error),
    }
}

/// The error with the server's own message and code, where `Display`
/// says only "db error".
pub fn describe(error: &postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} ({}): {}", db.severity(), db.code().code(), db.message()),
        None => match std::error::Error::source(error) {
            Some(source) => format!("{error}: {source}"),
            None => error.to_string(),
        },
    }
}

/// Opens one configured connection.
pub fn connect(config: &postgres::Config) -> Result<Client, postgres::Error> {
    let mut client = config.connect(NoTls)?;
    configure(&mut client)?;
    Ok(client)
}

/// Session settings, the counterpart of SQLite's pragmas: wait at most five
/// seconds for a row lock (SQLite's busy timeout), acknowledge a commit
/// only once it is flushed to disk (`synchronous = FULL`), keep notices
/// ("already exists, skipping") out of the log, and let the server end a
/// transaction left idle for 15 s (a node paused or cut off mid-batch), so
/// its row locks do not hold up the other nodes.
pub fn configure(c: &mut impl GenericClient) -> Result<(), postgres::Error> {
    c.batch_execute(
        "SET lock_timeout = '5s'; SET synchronous_commit = on; SET client_min_messages = warning;
         SET idle_in_transaction_session_timeout = '15s'",
    )
}

/// Applies the migrations not yet applied, in order, in one transaction
/// holding a transaction-level advisory lock: a second process migrating at
/// the same time waits for the lock, then finds the versions recorded and
/// applies nothing.
pub fn migrate(c: &mut impl GenericClient) -> Result<(), postgres::Error> {
    let mut t = c.transaction()?;
    t.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    t.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version bigint PRIMARY KEY,
            applied_at timestamptz NOT NULL DEFAULT now()
        )",
    )?;
    let applied: i64 = t
        .query_one(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            &[],
        )?
        .try_get(0)?;
    for (index, sql) in MIGRATIONS.iter().enumerate() {
        let version = index as i64 + 1;
        if version <= applied {
            continue;
        }
        t.batch_execute(sql)?;
        if version == ENTRY_HASHES_VERSION {
            backfill_entry_hashes(&mut t)?;
        }
        t.execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[&version],
        )?;
    }
    t.commit()
}

/// The version whose migration adds entry hashes, which existing entries
/// then get from [`backfill_entry_hashes`].
const ENTRY_HASHES_VERSION: i64 = 6;

/// Chains the entries written before entries had hashes, in pages of
/// (wallet, sequence) order, inside the migration's transaction.
fn backfill_entry_hashes(c: &mut impl GenericClient) -> Result<(), postgres::Error> {
    let mut after: (Vec<u8>, i64) = (Vec::new(), 0);
    let (mut wallet, mut previous) = (None, CHAIN_START);
    loop {
        let rows = c.query(
            select!(
                entry_without_hash,
                " FROM entries e
                 WHERE (e.wallet_id, e.sequence) > ($1, $2)
                 ORDER BY e.wallet_id, e.sequence LIMIT 10000"
            ),
            &[&after.0, &after.1],
        )?;
        let Some(last) = rows.last() else {
            return Ok(());
        };
        after = (last.try_get::<_, &[u8]>(1)?.to_vec(), last.try_get(2)?);
        let mut keys = (Vec::new(), Vec::new(), Vec::new());
        for row in &rows {
            let entry = rows::entry_without_hash(row)?;
            if wallet != Some(entry.wallet_id) {
                (wallet, previous) = (Some(entry.wallet_id), CHAIN_START);
            }
            previous = entry.chain(&previous);
            keys.0.push(id_bytes(entry.wallet_id));
            keys.1.push(counter(entry.sequence));
            keys.2.push(previous.to_vec());
        }
        c.execute(
            "UPDATE entries e SET hash = n.hash
             FROM unnest($1::bytea[], $2::bigint[], $3::bytea[]) AS n (wallet_id, sequence, hash)
             WHERE e.wallet_id = n.wallet_id AND e.sequence = n.sequence",
            &[&keys.0, &keys.1, &keys.2],
        )?;
    }
}

/// A pool of configured connections, for `r2d2` like the SQLite pool.
pub type Pool = r2d2::Pool<r2d2_postgres::PostgresConnectionManager<NoTls>>;

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("bad database url: {}", describe(.0))]
    Url(postgres::Error),
    #[error(transparent)]
    Pool(#[from] r2d2::Error),
    #[error("{}", describe(.0))]
    Postgres(#[from] postgres::Error),
}

#[derive(Debug)]
struct Configure;

impl r2d2::CustomizeConnection<Client, postgres::Error> for Configure {
    fn on_acquire(&self, client: &mut Client) -> Result<(), postgres::Error> {
        configure(client)
    }
}

/// Builds a pool of at most `max_size` connections to `url` and migrates
/// the database through one of them. A caller waits at most three seconds
/// for a connection; each is checked before it is handed out, so one the
/// server closed (a restart) is replaced, not used.
pub fn open_pool(url: &str, max_size: u32) -> Result<Pool, OpenError> {
    let manager = r2d2_postgres::PostgresConnectionManager::new(parse_url(url)?, NoTls);
    let pool = r2d2::Pool::builder()
        .max_size(max_size)
        .min_idle(Some(1))
        .connection_timeout(std::time::Duration::from_secs(3))
        .test_on_check_out(true)
        .connection_customizer(Box::new(Configure))
        .build(manager)?;
    migrate(&mut *pool.get()?)?;
    Ok(pool)
}

// ---- transactions -------------------------------------------------------------

/// Starts a READ COMMITTED transaction; writers serialise on the wallet
/// rows [`lock_wallets`] locks, and every other statement sees the latest
/// committed state.
pub fn begin(c: &mut impl GenericClient) -> Result<(), postgres::Error> {
    c.batch_execute("BEGIN")
}

/// One snapshot for the whole transaction, taken at its first statement.
pub fn begin_snapshot(c: &mut impl GenericClient) -> Result<(), postgres::Error> {
    c.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
}

pub fn commit(c: &mut impl GenericClient) -> Result<(), postgres::Error> {
    c.batch_execute("COMMIT")
}

pub fn rollback(c: &mut impl GenericClient) -> Result<(), postgres::Error> {
    c.batch_execute("ROLLBACK")
}

/// Locks these wallets' rows until the transaction ends and returns their
/// versions. One statement whatever the count; rows are locked in id
/// order, the same order on every node, so two writers locking
/// overlapping sets queue instead of deadlocking.
pub fn lock_wallets(
    c: &mut impl GenericClient,
    ids: &[u128],
) -> Result<Vec<(u128, i64)>, postgres::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<Vec<u8>> = ids.iter().map(|&id| id_bytes(id)).collect();
    c.query(
        "SELECT id, version FROM wallets WHERE id = ANY($1) ORDER BY id FOR UPDATE",
        &[&keys],
    )?
    .iter()
    .map(|row| Ok((row.value(0)?, row.try_get(1)?)))
    .collect()
}

/// The wallets these holds belong to (unknown ids are left out), in one statement.
pub fn hold_wallet_ids(
    c: &mut impl GenericClient,
    hold_ids: &[u128],
) -> Result<Vec<u128>, postgres::Error> {
    owners(
        c,
        "SELECT wallet_id FROM holds WHERE id = ANY($1)",
        hold_ids,
    )
}

/// The wallets these grants belong to (unknown ids are left out), in one statement.
pub fn grant_wallet_ids(
    c: &mut impl GenericClient,
    grant_ids: &[u128],
) -> Result<Vec<u128>, postgres::Error> {
    owners(
        c,
        "SELECT wallet_id FROM grants WHERE id = ANY($1)",
        grant_ids,
    )
}

fn owners(
    c: &mut impl GenericClient,
    sql: &str,
    ids: &[u128],
) -> Result<Vec<u128>, postgres::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<Vec<u8>> = ids.iter().map(|&id| id_bytes(id)).collect();
    c.query(sql, &[&keys])?
        .iter()
        .map(|row| row.value(0))
        .collect()
}

// ---- value mapping ----------------------------------------------------------

fn id_bytes(id: u128) -> Vec<u8> {
    ids::to_bytes(id).to_vec()
}

fn opt_id_bytes(id: Option<u128>) -> Option<Vec<u8>> {
    id.map(id_bytes)
}

fn scale_value(scale: Scale) -> i16 {
    i16::from(scale.places())
}

/// Sequences, cycles and counters are `u64` in Rust and `bigint` here.
fn counter(value: u64) -> i64 {
    i64::try_from(value).expect("counters fit a bigint")
}

fn metadata_json(metadata: &Metadata) -> String {
    codec::metadata_to_text(metadata)
}

fn parts_json(parts: impl Iterator<Item = (Option<GrantId>, Amount)>) -> String {
    codec::parts_to_text(parts)
}

fn reservations_json(reservations: &[Reservation]) -> String {
    codec::reservations_to_text(reservations)
}

/// `%text%` for `ILIKE ... ESCAPE '\'`: a case-insensitive substring match
/// in which `%`, `_` and `\` stand for themselves.
fn contains_pattern(text: &str) -> String {
    format!("%{}%", codec::like_escape(text))
}

fn one<T>(
    c: &mut impl GenericClient,
    sql: &str,
    params: &Params,
    map: impl FnOnce(&Row) -> Result<T, postgres::Error>,
) -> Result<Option<T>, postgres::Error> {
    c.query_opt(sql, params)?.as_ref().map(map).transpose()
}

fn all<T>(
    c: &mut impl GenericClient,
    sql: &str,
    params: &Params,
    map: impl Fn(&Row) -> Result<T, postgres::Error>,
) -> Result<Vec<T>, postgres::Error> {
    c.query(sql, params)?.iter().map(map).collect()
}

fn count(rows: u64) -> usize {
    usize::try_from(rows).expect("row counts fit usize")
}

/// A row read as the record of its columns ([`Record`]).
fn record<T: Record>(row: &Row) -> Result<T, postgres::Error> {
    T::read(row)
}

// ---- credit systems -----------------------------------------------------------

pub fn credit_system(
    c: &mut impl GenericClient,
    id: u128,
) -> Result<Option<CreditSystem>, postgres::Error> {
    let sql = select!(credit_system, " FROM credit_systems WHERE id = $1");
    one(c, sql, &[&id_bytes(id)], record)
}

pub fn credit_system_by_key(
    c: &mut impl GenericClient,
    key: &str,
) -> Result<Option<CreditSystem>, postgres::Error> {
    let sql = select!(credit_system, " FROM credit_systems WHERE key = $1");
    one(c, sql, &[&key], record)
}

pub fn list_credit_systems(
    c: &mut impl GenericClient,
    limit: usize,
    starting_after: Option<u128>,
) -> Result<Page<CreditSystem>, postgres::Error> {
    let sql = select!(
        credit_system,
        " FROM credit_systems WHERE id < $1 ORDER BY id DESC LIMIT $2"
    );
    page(c, sql, &[], limit, starting_after)
}

pub fn upsert_credit_system(
    c: &mut impl GenericClient,
    cs: &CreditSystem,
) -> Result<(), postgres::Error> {
    c.execute(
        "INSERT INTO credit_systems (id, key, name, unit, scale, active, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, active = excluded.active",
        &[
            &id_bytes(cs.id),
            &cs.key,
            &cs.name,
            &cs.unit,
            &scale_value(cs.scale),
            &cs.active,
            &micros(cs.created_at),
        ],
    )?;
    Ok(())
}

// ---- customers ----------------------------------------------------------------

pub fn customer(c: &mut impl GenericClient, id: u128) -> Result<Option<Customer>, postgres::Error> {
    let sql = select!(customer, " FROM customers WHERE id = $1");
    one(c, sql, &[&id_bytes(id)], record)
}

pub fn customer_by_external_id(
    c: &mut impl GenericClient,
    external_id: &str,
) -> Result<Option<Customer>, postgres::Error> {
    let sql = select!(customer, " FROM customers WHERE external_id = $1");
    one(c, sql, &[&external_id], record)
}

/// Customers newest first; `query` matches name, email or external id,
/// case-insensitively, as a substring.
pub fn list_customers(
    c: &mut impl GenericClient,
    query: Option<&str>,
    limit: usize,
    starting_after: Option<u128>,
) -> Result<Page<Customer>, postgres::Error> {
    match query {
        None => {
            let sql = select!(
                customer,
                " FROM customers WHERE id < $1 ORDER BY id DESC LIMIT $2"
            );
            page(c, sql, &[], limit, starting_after)
        }
        Some(query) => {
            let pattern = contains_pattern(query);
            let sql = select!(
                customer,
                " FROM customers
                 WHERE (name ILIKE $1 ESCAPE '\\' OR coalesce(email, '') ILIKE $1 ESCAPE '\\'
                        OR coalesce(external_id, '') ILIKE $1 ESCAPE '\\')
                   AND id < $2 ORDER BY id DESC LIMIT $3"
            );
            page(c, sql, &[&pattern], limit, starting_after)
        }
    }
}

pub fn upsert_customer(
    c: &mut impl GenericClient,
    customer: &Customer,
) -> Result<(), postgres::Error> {
    c.execute(
        "INSERT INTO customers (id, name, email, external_id, metadata, created_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, email = excluded.email,
            external_id = excluded.external_id, metadata = excluded.metadata",
        &[
            &id_bytes(customer.id),
            &customer.name,
            &customer.email,
            &customer.external_id,
            &metadata_json(&customer.metadata),
            &micros(customer.created_at),
        ],
    )?;
    Ok(())
}

// ---- wallets ------------------------------------------------------------------

pub fn wallet_info(
    c: &mut impl GenericClient,
    id: u128,
) -> Result<Option<WalletInfo>, postgres::Error> {
    let sql = select!(wallet_info, " FROM wallets WHERE id = $1");
    one(c, sql, &[&id_bytes(id)], record)
}

pub fn wallet_by_owner(
    c: &mut impl GenericClient,
    customer_id: u128,
    credit_system_id: u128,
) -> Result<Option<WalletInfo>, postgres::Error> {
    let sql = select!(
        wallet_info,
        " FROM wallets WHERE customer_id = $1 AND credit_system_id = $2"
    );
    one(
        c,
        sql,
        &[&id_bytes(customer_id), &id_bytes(credit_system_id)],
        record,
    )
}

pub fn list_wallets(
    c: &mut impl GenericClient,
    customer_id: Option<u128>,
    credit_system_id: Option<u128>,
    limit: usize,
    starting_after: Option<u128>,
) -> Result<Page<WalletInfo>, postgres::Error> {
    let customer = opt_id_bytes(customer_id);
    let credit_system = opt_id_bytes(credit_system_id);
    let sql = select!(
        wallet_info,
        " FROM wallets
         WHERE ($1::bytea IS NULL OR customer_id = $1) AND ($2::bytea IS NULL OR credit_system_id = $2)
           AND id < $3 ORDER BY id DESC LIMIT $4"
    );
    page(c, sql, &[&customer, &credit_system], limit, starting_after)
}

/// The live state of a wallet: settings, balances, live grants, active holds.
pub fn load_wallet(
    c: &mut impl GenericClient,
    id: u128,
) -> Result<Option<(WalletInfo, Wallet)>, postgres::Error> {
    Ok(load_wallets(c, &[id])?
        .pop()
        .map(|(info, wallet, _)| (info, wallet)))
}

/// These wallets with their live grants and active holds (unknown ids are
/// left out), in three statements whatever their number.
pub fn load_wallets(
    c: &mut impl GenericClient,
    ids: &[u128],
) -> Result<Vec<(WalletInfo, Wallet, ChainHead)>, postgres::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<Vec<u8>> = ids.iter().map(|&id| id_bytes(id)).collect();
    let mut wallets: Vec<(WalletInfo, Wallet, ChainHead)> = all(
        c,
        select!(
            wallet,
            ", last.hash, last.occurred_at
             FROM wallets LEFT JOIN LATERAL (
                SELECT e.hash, e.occurred_at FROM entries e WHERE e.wallet_id = wallets.id
                ORDER BY e.sequence DESC LIMIT 1) last ON true
             WHERE id = ANY($1)"
        ),
        &[&keys],
        |row| {
            let (info, wallet) = Record::read(row)?;
            let head = match row.value(10)? {
                None => ChainHead::START,
                Some(hash) => ChainHead {
                    hash,
                    at: row.value(11)?,
                },
            };
            Ok((info, wallet, head))
        },
    )?;
    let position: std::collections::HashMap<u128, usize> = wallets
        .iter()
        .enumerate()
        .map(|(index, (info, _, _))| (info.id, index))
        .collect();
    let grants: Vec<GrantRecord> = all(
        c,
        select!(
            grant,
            " FROM grants g WHERE g.wallet_id = ANY($1) AND g.live"
        ),
        &[&keys],
        record,
    )?;
    for record in grants {
        wallets[position[&record.wallet_id]]
            .1
            .grants
            .push(record.grant);
    }
    let holds: Vec<HoldRecord> = all(
        c,
        select!(
            hold,
            " FROM holds h
             WHERE h.wallet_id = ANY($1) AND h.status = 'active'"
        ),
        &[&keys],
        record,
    )?;
    for record in holds {
        wallets[position[&record.wallet_id]].1.holds.push(Hold {
            id: HoldId(record.id),
            amount: record.amount,
            expires_at: record.expires_at,
            reservations: record.reservations,
        });
    }
    for (_, wallet, _) in &mut wallets {
        wallet.grants.sort_by_key(|g| g.id);
        wallet.holds.sort_by_key(|h| h.id);
    }
    Ok(wallets)
}

pub fn insert_wallet(
    c: &mut impl GenericClient,
    info: &WalletInfo,
    wallet: &Wallet,
) -> Result<(), postgres::Error> {
    c.execute(
        "INSERT INTO wallets (id, customer_id, credit_system_id, scale, overdraft_limit, debt,
            balance, last_sequence, next_event_at, created_at, low_balance_threshold)
         VALUES ($1, $2, $3, $4, $5, 0, 0, 0, NULL, $6, $7)",
        &[
            &id_bytes(info.id),
            &id_bytes(info.customer_id),
            &id_bytes(info.credit_system_id),
            &scale_value(info.scale),
            &wallet.overdraft_limit.atomic(),
            &micros(info.created_at),
            &info.low_balance_threshold.map(Amount::atomic),
        ],
    )?;
    Ok(())
}

/// Writes a wallet's settings kept beside its state (its threshold). It
/// leaves `version` alone: the writer changes a wallet's settings in a
/// batch that also writes its state (`update_states`), which moves the
/// version, so other nodes reload the wallet with its new settings.
pub fn update_wallet_info(
    c: &mut impl GenericClient,
    info: &WalletInfo,
) -> Result<(), postgres::Error> {
    c.execute(
        "UPDATE wallets SET low_balance_threshold = $1 WHERE id = $2",
        &[
            &info.low_balance_threshold.map(Amount::atomic),
            &id_bytes(info.id),
        ],
    )?;
    Ok(())
}

/// Writes the wallet's balances and next event, and bumps its `version`.
/// Writes many wallets' and grants' states in one statement: an
/// `UPDATE … FROM unnest(…)` per table, each in a `WITH`. Each wallet and
/// grant appears at most once.
pub fn update_states(
    c: &mut impl GenericClient,
    wallets: &[(u128, &Wallet)],
    grants: &[&Grant],
) -> Result<(), postgres::Error> {
    if wallets.is_empty() && grants.is_empty() {
        return Ok(());
    }
    let w = wallets;
    let w_ids: Vec<Vec<u8>> = w.iter().map(|(id, _)| id_bytes(*id)).collect();
    let w_limits: Vec<i64> = w.iter().map(|(_, w)| w.overdraft_limit.atomic()).collect();
    let w_debts: Vec<i64> = w.iter().map(|(_, w)| w.debt.atomic()).collect();
    let w_balances: Vec<i64> = w.iter().map(|(_, w)| w.balance.atomic()).collect();
    let w_sequences: Vec<i64> = w.iter().map(|(_, w)| counter(w.last_sequence)).collect();
    let w_next: Vec<Option<i64>> = w
        .iter()
        .map(|(_, w)| w.next_event_at().map(micros))
        .collect();
    let g = grants;
    let g_ids: Vec<Vec<u8>> = g.iter().map(|g| id_bytes(g.id.0)).collect();
    let g_remaining: Vec<i64> = g.iter().map(|g| g.remaining.atomic()).collect();
    let g_held: Vec<i64> = g.iter().map(|g| g.held.atomic()).collect();
    let g_cycles: Vec<i64> = g.iter().map(|g| counter(g.cycle)).collect();
    let g_statuses: Vec<&str> = g.iter().map(|g| g.status.as_str()).collect();
    let g_ended: Vec<Option<i64>> = g.iter().map(|g| g.ended_at.map(micros)).collect();
    let g_live: Vec<bool> = g.iter().map(|g| g.is_live()).collect();
    c.execute(
        "WITH wallets_set AS (
            UPDATE wallets w SET overdraft_limit = u.overdraft_limit, debt = u.debt,
                balance = u.balance, last_sequence = u.last_sequence,
                next_event_at = u.next_event_at, version = w.version + 1
            FROM unnest($1::bytea[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[],
                $6::bigint[]) AS u(id, overdraft_limit, debt, balance, last_sequence, next_event_at)
            WHERE w.id = u.id
        ), grants_set AS (
            UPDATE grants g SET remaining = u.remaining, held = u.held, cycle = u.cycle,
                status = u.status, ended_at = u.ended_at, live = u.live
            FROM unnest($7::bytea[], $8::bigint[], $9::bigint[], $10::bigint[], $11::text[],
                $12::bigint[], $13::boolean[]) AS u(id, remaining, held, cycle, status, ended_at, live)
            WHERE g.id = u.id
        )
        SELECT 1",
        &[
            &w_ids,
            &w_limits,
            &w_debts,
            &w_balances,
            &w_sequences,
            &w_next,
            &g_ids,
            &g_remaining,
            &g_held,
            &g_cycles,
            &g_statuses,
            &g_ended,
            &g_live,
        ],
    )?;
    Ok(())
}

/// Wallets with an event due at or before `now`, soonest first.
pub fn due_wallets(
    c: &mut impl GenericClient,
    now: Instant,
    limit: usize,
) -> Result<Vec<u128>, postgres::Error> {
    all(
        c,
        "SELECT id FROM wallets WHERE next_event_at IS NOT NULL AND next_event_at <= $1
         ORDER BY next_event_at LIMIT $2",
        &[&micros(now), &(limit as i64)],
        |row| row.value(0),
    )
}

/// When the wallet next has an event due, as last committed.
pub fn wallet_next_event_at(
    c: &mut impl GenericClient,
    id: u128,
) -> Result<Option<Instant>, postgres::Error> {
    let value = one(
        c,
        "SELECT next_event_at FROM wallets WHERE id = $1",
        &[&id_bytes(id)],
        |row| row.value(0),
    )?;
    Ok(value.flatten())
}

// ---- grants -------------------------------------------------------------------

pub fn grant(c: &mut impl GenericClient, id: u128) -> Result<Option<GrantRecord>, postgres::Error> {
    let sql = select!(grant, " FROM grants g WHERE g.id = $1");
    one(c, sql, &[&id_bytes(id)], record)
}

/// Grants of a wallet newest first, optionally only those whose stored
/// status is `status` (`depleted` is an active grant with nothing left).
pub fn list_grants(
    c: &mut impl GenericClient,
    wallet_id: u128,
    status: Option<&str>,
    limit: usize,
    starting_after: Option<u128>,
) -> Result<Page<GrantRecord>, postgres::Error> {
    let wallet = id_bytes(wallet_id);
    let sql = select!(
        grant,
        " FROM grants g WHERE g.wallet_id = $1
           AND ($2::text IS NULL
                OR ($2 = 'depleted' AND g.status = 'active' AND g.remaining = 0)
                OR ($2 = 'active' AND g.status = 'active' AND g.remaining > 0)
                OR ($2 NOT IN ('active', 'depleted') AND g.status = $2))
           AND g.id < $3 ORDER BY g.id DESC LIMIT $4"
    );
    page(c, sql, &[&wallet, &status], limit, starting_after)
}

pub fn insert_grant(
    c: &mut impl GenericClient,
    record: &GrantRecord,
) -> Result<(), postgres::Error> {
    let g = &record.grant;
    c.execute(
        "INSERT INTO grants (id, wallet_id, amount, purpose, priority, effective_at, expires_at,
            recurrence_interval, recurrence_count, rollover_max, remaining, held, cycle, status,
            ended_at, live, description, metadata, source, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
            $18, $19, $20)",
        &[
            &id_bytes(g.id.0),
            &id_bytes(record.wallet_id),
            &g.terms.amount.atomic(),
            &g.terms.purpose.as_str(),
            &i16::from(g.terms.priority),
            &micros(g.terms.effective_at),
            &g.terms.expires_at.map(micros),
            &g.terms.recurrence.map(|p| p.interval.as_str()),
            &g.terms.recurrence.map(|p| i64::from(p.count)),
            &g.terms.rollover_max.atomic(),
            &g.remaining.atomic(),
            &g.held.atomic(),
            &counter(g.cycle),
            &g.status.as_str(),
            &g.ended_at.map(micros),
            &g.is_live(),
            &record.description,
            &metadata_json(&record.metadata),
            &record.source.to_stored(),
            &micros(record.created_at),
        ],
    )?;
    Ok(())
}

/// Writes what changes on a grant after creation.
pub fn update_grant_state(
    c: &mut impl GenericClient,
    grant: &Grant,
) -> Result<(), postgres::Error> {
    c.execute(
        "UPDATE grants SET remaining = $1, held = $2, cycle = $3, status = $4, ended_at = $5,
            live = $6 WHERE id = $7",
        &[
            &grant.remaining.atomic(),
            &grant.held.atomic(),
            &counter(grant.cycle),
            &grant.status.as_str(),
            &grant.ended_at.map(micros),
            &grant.is_live(),
            &id_bytes(grant.id.0),
        ],
    )?;
    Ok(())
}

// ---- holds --------------------------------------------------------------------

pub fn hold(c: &mut impl GenericClient, id: u128) -> Result<Option<HoldRecord>, postgres::Error> {
    let sql = select!(hold, " FROM holds h WHERE h.id = $1");
    one(c, sql, &[&id_bytes(id)], record)
}

pub fn insert_hold(c: &mut impl GenericClient, hold: &HoldRecord) -> Result<(), postgres::Error> {
    c.execute(
        "INSERT INTO holds (id, wallet_id, amount, reservations, status, expires_at, debit_id,
            ended_at, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            &id_bytes(hold.id),
            &id_bytes(hold.wallet_id),
            &hold.amount.atomic(),
            &reservations_json(&hold.reservations),
            &hold.status.as_str(),
            &micros(hold.expires_at),
            &opt_id_bytes(hold.debit_id),
            &hold.ended_at.map(micros),
            &micros(hold.created_at),
        ],
    )?;
    Ok(())
}

pub fn finish_hold(
    c: &mut impl GenericClient,
    id: u128,
    status: HoldStatus,
    debit_id: Option<u128>,
    ended_at: Instant,
) -> Result<(), postgres::Error> {
    c.execute(
        "UPDATE holds SET status = $1, debit_id = $2, ended_at = $3 WHERE id = $4",
        &[
            &status.as_str(),
            &opt_id_bytes(debit_id),
            &micros(ended_at),
            &id_bytes(id),
        ],
    )?;
    Ok(())
}

// ---- debits -------------------------------------------------------------------

pub fn debit(c: &mut impl GenericClient, id: u128) -> Result<Option<DebitRecord>, postgres::Error> {
    let sql = select!(debit, " FROM debits d WHERE d.id = $1");
    one(c, sql, &[&id_bytes(id)], record)
}

pub fn list_debits(
    c: &mut impl GenericClient,
    wallet_id: u128,
    limit: usize,
    starting_after: Option<u128>,
) -> Result<Page<DebitRecord>, postgres::Error> {
    let wallet = id_bytes(wallet_id);
    let sql = select!(
        debit,
        " FROM debits d WHERE d.wallet_id = $1 AND d.id < $2
         ORDER BY d.id DESC LIMIT $3"
    );
    page(c, sql, &[&wallet], limit, starting_after)
}

// ---- entries ------------------------------------------------------------------

/// The wallet's ledger by sequence, `ascending` or newest first, after the
/// entry `starting_after` in that order.
pub fn list_entries(
    c: &mut impl GenericClient,
    wallet_id: u128,
    ascending: bool,
    limit: usize,
    starting_after: Option<u128>,
) -> Result<Page<EntryRecord>, postgres::Error> {
    let wallet = id_bytes(wallet_id);
    let cursor: Option<u64> = match starting_after {
        None => None,
        Some(id) => one(
            c,
            "SELECT sequence FROM entries WHERE id = $1 AND wallet_id = $2",
            &[&id_bytes(id), &wallet],
            |row| row.value(0),
        )?,
    };
    let (sql, start) = if ascending {
        let sql = select!(
            entry,
            " FROM entries e WHERE e.wallet_id = $1 AND e.sequence > $2
             ORDER BY e.sequence ASC LIMIT $3"
        );
        (sql, cursor.unwrap_or(0) as i64)
    } else {
        let sql = select!(
            entry,
            " FROM entries e WHERE e.wallet_id = $1 AND e.sequence < $2
             ORDER BY e.sequence DESC LIMIT $3"
        );
        (sql, cursor.map_or(i64::MAX, |s| s as i64))
    };
    let mut items = all(c, sql, &[&wallet, &start, &(limit as i64 + 1)], record)?;
    let has_more = items.len() > limit;
    items.truncate(limit);
    Ok(Page { items, has_more })
}

/// The sequence of the wallet's last entry at or before `at` (0 if none).
pub fn last_sequence_at(
    c: &mut impl GenericClient,
    wallet_id: u128,
    at: Instant,
) -> Result<u64, postgres::Error> {
    let wallet = id_bytes(wallet_id);
    let last: Option<i64> = one(
        c,
        "SELECT max(sequence) FROM entries WHERE wallet_id = $1",
        &[&wallet],
        |row| row.try_get(0),
    )?
    .flatten();
    super::last_sequence_at(last.unwrap_or(0) as u64, at, |sequence| {
        // Always one row: a gap in the sequences reads as NULL, which
        // decoding an instant refuses (a NULL where none is stored) rather
        // than guess.
        let found = one(
            c,
            "SELECT (SELECT occurred_at FROM entries WHERE wallet_id = $1 AND sequence = $2)",
            &[&wallet, &(sequence as i64)],
            |row| row.value(0),
        )?;
        Ok(found.expect("a scalar subquery answers one row"))
    })
}

/// The balance after entry `sequence` (0 before the first).
pub fn balance_after(
    c: &mut impl GenericClient,
    wallet_id: u128,
    sequence: u64,
) -> Result<Amount, postgres::Error> {
    let sequence = sequence as i64;
    let value: Option<i64> = one(
        c,
        "SELECT balance_after FROM entries WHERE wallet_id = $1 AND sequence = $2",
        &[&id_bytes(wallet_id), &sequence],
        |row| row.try_get(0),
    )?;
    Ok(Amount::from_atomic(value.unwrap_or(0)))
}

/// Each grant's remainder after entry `sequence`, summed from its entries.
pub fn grant_remainders_through(
    c: &mut impl GenericClient,
    wallet_id: u128,
    sequence: u64,
) -> Result<Vec<(u128, Amount)>, postgres::Error> {
    let sequence = sequence as i64;
    all(
        c,
        "SELECT grant_id, sum(amount)::bigint FROM entries
         WHERE wallet_id = $1 AND sequence <= $2 AND grant_id IS NOT NULL
         GROUP BY grant_id ORDER BY grant_id",
        &[&id_bytes(wallet_id), &sequence],
        |row| Ok((row.value(0)?, row.value(1)?)),
    )
}

// ---- api keys -----------------------------------------------------------------

pub fn api_keys(c: &mut impl GenericClient) -> Result<Vec<ApiKey>, postgres::Error> {
    let sql = select!(api_key, " FROM api_keys ORDER BY id DESC");
    all(c, sql, &[], record)
}

pub fn list_api_keys(
    c: &mut impl GenericClient,
    limit: usize,
    starting_after: Option<u128>,
) -> Result<Page<ApiKey>, postgres::Error> {
    let sql = select!(
        api_key,
        " FROM api_keys WHERE id < $1 ORDER BY id DESC LIMIT $2"
    );
    page(c, sql, &[], limit, starting_after)
}

pub fn insert_api_key(c: &mut impl GenericClient, key: &ApiKey) -> Result<(), postgres::Error> {
    c.execute(
        "INSERT INTO api_keys (id, name, scope, secret_hash, created_at)
         VALUES ($1, $2, $3, $4, $5)",
        &[
            &id_bytes(key.id),
            &key.name,
            &key.scope.as_str(),
            &key.secret_hash.as_slice(),
            &micros(key.created_at),
        ],
    )?;
    Ok(())
}

pub fn delete_api_key(c: &mut impl GenericClient, id: u128) -> Result<bool, postgres::Error> {
    let deleted = c.execute("DELETE FROM api_keys WHERE id = $1", &[&id_bytes(id)])?;
    Ok(deleted > 0)
}

// ---- idempotency ----------------------------------------------------------------

pub fn idempotency(
    c: &mut impl GenericClient,
    key: &str,
) -> Result<Option<([u8; 32], Kept)>, postgres::Error> {
    Ok(idempotency_many(c, &[key])?
        .pop()
        .map(|kept| (kept.fingerprint, kept.kept)))
}

/// The kept responses of those of these keys that have one, in one statement.
pub fn idempotency_many(
    c: &mut impl GenericClient,
    keys: &[&str],
) -> Result<Vec<KeptResponse>, postgres::Error> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let sql = select!(kept, " FROM idempotency_keys WHERE key = ANY($1)");
    all(c, sql, &[&keys], record)
}

/// Inserts the rows a batch gathered (entries, debits, kept responses and
/// the outbox's events) in one statement, whatever their number: an
/// `INSERT … SELECT FROM unnest(…)` per table, each in a `WITH`
/// (PostgreSQL runs every data-modifying `WITH` to completion).
pub fn insert_rows(c: &mut impl GenericClient, rows: &NewRows) -> Result<(), postgres::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let e = &rows.entries;
    let e_wallets: Vec<Vec<u8>> = e.iter().map(|e| id_bytes(e.wallet_id)).collect();
    let e_sequences: Vec<i64> = e.iter().map(|e| counter(e.sequence)).collect();
    let e_ids: Vec<Vec<u8>> = e.iter().map(|e| id_bytes(e.id)).collect();
    let e_kinds: Vec<&str> = e.iter().map(|e| e.kind.as_str()).collect();
    let e_amounts: Vec<i64> = e.iter().map(|e| e.amount.atomic()).collect();
    let e_balances: Vec<i64> = e.iter().map(|e| e.balance_after.atomic()).collect();
    let e_times: Vec<i64> = e.iter().map(|e| micros(e.occurred_at)).collect();
    let e_grants: Vec<Option<Vec<u8>>> = e.iter().map(|e| opt_id_bytes(e.grant_id)).collect();
    let e_references: Vec<&str> = e.iter().map(|e| e.reference.as_str()).collect();
    let e_hashes: Vec<&[u8]> = e.iter().map(|e| e.hash.as_slice()).collect();
    let d = &rows.debits;
    let d_ids: Vec<Vec<u8>> = d.iter().map(|d| id_bytes(d.id)).collect();
    let d_wallets: Vec<Vec<u8>> = d.iter().map(|d| id_bytes(d.wallet_id)).collect();
    let d_amounts: Vec<i64> = d.iter().map(|d| d.amount.atomic()).collect();
    let d_allocations: Vec<String> = d
        .iter()
        .map(|d| parts_json(d.allocations.iter().map(|a| (a.grant, a.amount))))
        .collect();
    let d_balances: Vec<i64> = d.iter().map(|d| d.balance_after.atomic()).collect();
    let d_descriptions: Vec<Option<&str>> = d.iter().map(|d| d.description.as_deref()).collect();
    let d_metadata: Vec<String> = d.iter().map(|d| metadata_json(&d.metadata)).collect();
    let d_holds: Vec<Option<Vec<u8>>> = d.iter().map(|d| opt_id_bytes(d.hold_id)).collect();
    let d_times: Vec<i64> = d.iter().map(|d| micros(d.created_at)).collect();
    let r = &rows.responses;
    let r_keys: Vec<&str> = r.iter().map(|r| r.key.as_str()).collect();
    let r_fingerprints: Vec<&[u8]> = r.iter().map(|r| r.fingerprint.as_slice()).collect();
    // A debit's key keeps the debit's id (status 0, empty body).
    let r_statuses: Vec<i32> = r
        .iter()
        .map(|r| match &r.kept {
            Kept::Response(response) => i32::from(response.status),
            Kept::Debit(_) => 0,
        })
        .collect();
    let r_bodies: Vec<&str> = r
        .iter()
        .map(|r| match &r.kept {
            Kept::Response(response) => response.body.as_str(),
            Kept::Debit(_) => "",
        })
        .collect();
    let r_debits: Vec<Option<Vec<u8>>> = r
        .iter()
        .map(|r| match r.kept {
            Kept::Response(_) => None,
            Kept::Debit(id) => Some(id_bytes(id)),
        })
        .collect();
    let r_times: Vec<i64> = r.iter().map(|r| micros(r.at)).collect();
    let v = &rows.events;
    let v_ids: Vec<Vec<u8>> = v.iter().map(|v| id_bytes(v.id)).collect();
    let v_wallets: Vec<Vec<u8>> = v.iter().map(|v| id_bytes(v.wallet_id)).collect();
    let v_sequences: Vec<i64> = v.iter().map(|v| counter(v.sequence)).collect();
    let v_kinds: Vec<&str> = v.iter().map(|v| v.kind.as_str()).collect();
    let v_times: Vec<i64> = v.iter().map(|v| micros(v.occurred_at)).collect();
    let v_data: Vec<&str> = v.iter().map(|v| v.data.as_str()).collect();
    c.execute(
        "WITH entries_in AS (
            INSERT INTO entries (wallet_id, sequence, id, type, amount, balance_after,
                occurred_at, grant_id, reference, hash)
            SELECT * FROM unnest($1::bytea[], $2::bigint[], $3::bytea[], $4::text[],
                $5::bigint[], $6::bigint[], $7::bigint[], $8::bytea[], $9::text[], $25::bytea[])
        ), debits_in AS (
            INSERT INTO debits (id, wallet_id, amount, allocations, balance_after,
                description, metadata, hold_id, created_at)
            SELECT * FROM unnest($10::bytea[], $11::bytea[], $12::bigint[], $13::text[],
                $14::bigint[], $15::text[], $16::text[], $17::bytea[], $18::bigint[])
        ), responses_in AS (
            INSERT INTO idempotency_keys (key, fingerprint, status, body, created_at, debit_id)
            SELECT * FROM unnest($19::text[], $20::bytea[], $21::integer[], $22::text[],
                $23::bigint[], $24::bytea[])
        ), events_in AS (
            INSERT INTO events (id, wallet_id, sequence, type, occurred_at, data)
            SELECT * FROM unnest($26::bytea[], $27::bytea[], $28::bigint[], $29::text[],
                $30::bigint[], $31::text[])
        )
        SELECT 1",
        &[
            &e_wallets,
            &e_sequences,
            &e_ids,
            &e_kinds,
            &e_amounts,
            &e_balances,
            &e_times,
            &e_grants,
            &e_references,
            &d_ids,
            &d_wallets,
            &d_amounts,
            &d_allocations,
            &d_balances,
            &d_descriptions,
            &d_metadata,
            &d_holds,
            &d_times,
            &r_keys,
            &r_fingerprints,
            &r_statuses,
            &r_bodies,
            &r_times,
            &r_debits,
            &e_hashes,
            &v_ids,
            &v_wallets,
            &v_sequences,
            &v_kinds,
            &v_times,
            &v_data,
        ],
    )?;
    Ok(())
}

pub fn purge_idempotency(
    c: &mut impl GenericClient,
    before: Instant,
) -> Result<usize, postgres::Error> {
    let purged = c.execute(
        "DELETE FROM idempotency_keys WHERE created_at < $1",
        &[&micros(before)],
    )?;
    Ok(count(purged))
}

// ---- paging -------------------------------------------------------------------

/// Runs a list query whose last two placeholders are the id cursor and the
/// limit, fetching one extra row to learn whether more follow.
fn page<T: Record>(
    c: &mut impl GenericClient,
    sql: &str,
    leading: &Params,
    limit: usize,
    starting_after: Option<u128>,
) -> Result<Page<T>, postgres::Error> {
    let cursor = id_bytes(starting_after.unwrap_or(u128::MAX));
    let fetch = limit as i64 + 1;
    let mut params: Vec<&(dyn ToSql + Sync)> = leading.to_vec();
    params.push(&cursor);
    params.push(&fetch);
    let mut items = all(c, sql, &params, record)?;
    let has_more = items.len() > limit;
    items.truncate(limit);
    Ok(Page { items, has_more })
}

// ---- promotional credits --------------------------------------------------------

pub fn promotion(
    c: &mut impl GenericClient,
    id: u128,
) -> Result<Option<PromotionalCredit>, postgres::Error> {
    let sql = select!(promotion, " FROM promotional_credits p WHERE p.id = $1");
    one(c, sql, &[&id_bytes(id)], record)
}

/// Campaigns newest first; `status` filters by the window at `now`.
pub fn list_promotions(
    c: &mut impl GenericClient,
    status: Option<credstack_core::promotion::Status>,
    now: Instant,
    limit: usize,
    starting_after: Option<u128>,
) -> Result<Page<PromotionalCredit>, postgres::Error> {
    use credstack_core::promotion::Status;
    let condition = match status {
        None => "true",
        Some(Status::Scheduled) => "coalesce(p.starts_at, p.created_at) > $1",
        Some(Status::Active) => {
            "coalesce(p.starts_at, p.created_at) <= $1 AND (p.ends_at IS NULL OR p.ends_at > $1)"
        }
        Some(Status::Ended) => "p.ends_at IS NOT NULL AND p.ends_at <= $1",
    };
    let sql = format!(
        "SELECT {} FROM promotional_credits p
         WHERE ($1::bigint IS NOT NULL) AND {condition} AND p.id < $2 ORDER BY p.id DESC LIMIT $3",
        columns!(promotion)
    );
    page(c, &sql, &[&micros(now)], limit, starting_after)
}

pub fn upsert_promotion(
    c: &mut impl GenericClient,
    p: &PromotionalCredit,
) -> Result<(), postgres::Error> {
    c.execute(
        "INSERT INTO promotional_credits (id, name, description, credit_system_id, starts_at,
            ends_at, quantity, reset_interval, access_period_value, access_period_unit,
            allow_multiple_grants, applied, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, description = excluded.description,
            credit_system_id = excluded.credit_system_id, starts_at = excluded.starts_at,
            ends_at = excluded.ends_at, quantity = excluded.quantity,
            reset_interval = excluded.reset_interval,
            access_period_value = excluded.access_period_value,
            access_period_unit = excluded.access_period_unit,
            allow_multiple_grants = excluded.allow_multiple_grants, applied = excluded.applied",
        &[
            &id_bytes(p.id),
            &p.name,
            &p.description,
            &id_bytes(p.credit_system_id),
            &p.starts_at.map(micros),
            &p.ends_at.map(micros),
            &p.policy.quantity.atomic(),
            &p.policy.reset_interval.map_or("never", |i| i.as_str()),
            &p.policy.access_period.map(|a| i64::from(a.count)),
            &p.policy.access_period.map(|a| a.interval.as_str()),
            &p.policy.allow_multiple_grants,
            &p.applied,
            &micros(p.created_at),
        ],
    )?;
    Ok(())
}

pub fn delete_promotion(c: &mut impl GenericClient, id: u128) -> Result<(), postgres::Error> {
    c.execute(
        "DELETE FROM promotional_credits WHERE id = $1",
        &[&id_bytes(id)],
    )?;
    Ok(())
}

/// A customer's assignments in a campaign that are active at `now`.
pub fn active_assignments(
    c: &mut impl GenericClient,
    promotion_id: u128,
    customer_id: u128,
    now: Instant,
) -> Result<Vec<Assignment>, postgres::Error> {
    all(
        c,
        select!(
            assignment,
            " FROM promotion_assignments
             WHERE promotional_credit_id = $1 AND customer_id = $2 AND revoked_at IS NULL
               AND (expires_at IS NULL OR expires_at > $3) ORDER BY id"
        ),
        &[
            &id_bytes(promotion_id),
            &id_bytes(customer_id),
            &micros(now),
        ],
        record,
    )
}

pub fn upsert_assignment(
    c: &mut impl GenericClient,
    a: &Assignment,
) -> Result<(), postgres::Error> {
    c.execute(
        "INSERT INTO promotion_assignments (id, promotional_credit_id, customer_id, wallet_id,
            grant_id, granted_at, expires_at, revoked_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (id) DO UPDATE SET revoked_at = excluded.revoked_at",
        &[
            &id_bytes(a.id),
            &id_bytes(a.promotional_credit_id),
            &id_bytes(a.customer_id),
            &id_bytes(a.wallet_id),
            &id_bytes(a.grant_id),
            &micros(a.granted_at),
            &a.expires_at.map(micros),
            &a.revoked_at.map(micros),
        ],
    )?;
    Ok(())
}

/// Customers with a wallet in `credit_system_id`, by customer id, after `after`.
pub fn customers_with_wallets(
    c: &mut impl GenericClient,
    credit_system_id: u128,
    after: Option<u128>,
    limit: usize,
) -> Result<Vec<u128>, postgres::Error> {
    all(
        c,
        "SELECT customer_id FROM wallets WHERE credit_system_id = $1 AND customer_id > $2
         ORDER BY customer_id LIMIT $3",
        &[
            &id_bytes(credit_system_id),
            &id_bytes(after.unwrap_or(0)),
            &(limit as i64),
        ],
        |row| row.value(0),
    )
}

/// Customers with an assignment not yet revoked, by customer id, after `after`.
pub fn customers_with_open_assignments(
    c: &mut impl GenericClient,
    promotion_id: u128,
    after: Option<u128>,
    limit: usize,
) -> Result<Vec<u128>, postgres::Error> {
    all(
        c,
        "SELECT DISTINCT customer_id FROM promotion_assignments
         WHERE promotional_credit_id = $1 AND revoked_at IS NULL AND customer_id > $2
         ORDER BY customer_id LIMIT $3",
        &[
            &id_bytes(promotion_id),
            &id_bytes(after.unwrap_or(0)),
            &(limit as i64),
        ],
        |row| row.value(0),
    )
}

/// How many customers are granted (an active assignment) and how many
/// revoked (no active assignment, the latest one revoked), at `now`.
pub fn promotion_counts(
    c: &mut impl GenericClient,
    promotion_id: u128,
    now: Instant,
) -> Result<(u64, u64), postgres::Error> {
    let row = c.query_one(
        "SELECT count(*) FILTER (WHERE active > 0),
                count(*) FILTER (WHERE active = 0 AND latest_revoked)
         FROM (
            SELECT a.customer_id,
                   count(*) FILTER (WHERE a.revoked_at IS NULL
                                    AND (a.expires_at IS NULL OR a.expires_at > $2)) AS active,
                   (SELECT l.revoked_at IS NOT NULL FROM promotion_assignments l
                     WHERE l.promotional_credit_id = $1 AND l.customer_id = a.customer_id
                     ORDER BY l.id DESC LIMIT 1) AS latest_revoked
            FROM promotion_assignments a WHERE a.promotional_credit_id = $1
            GROUP BY a.customer_id) per_customer",
        &[&id_bytes(promotion_id), &micros(now)],
    )?;
    Ok((row.value(0)?, row.value(1)?))
}

/// One row per customer ever granted, newest customer first, filtered by
/// status (`granted`, `revoked`, `expired`) and a case-insensitive search.
pub fn promotion_customers(
    c: &mut impl GenericClient,
    promotion_id: u128,
    status: Option<&str>,
    query: Option<&str>,
    now: Instant,
    limit: usize,
    starting_after: Option<u128>,
) -> Result<Page<PromotionCustomer>, postgres::Error> {
    let pattern = query.map(contains_pattern);
    let sql = concat!(
        "SELECT * FROM (
            SELECT ",
        columns!(customer_c),
        ",
                   count(*) FILTER (WHERE a.revoked_at IS NULL
                                    AND (a.expires_at IS NULL OR a.expires_at > $2)) AS active,
                   max(a.granted_at) AS last_granted_at, max(a.revoked_at) AS revoked_at,
                   (SELECT l.revoked_at IS NOT NULL FROM promotion_assignments l
                     WHERE l.promotional_credit_id = $1 AND l.customer_id = c.id
                     ORDER BY l.id DESC LIMIT 1) AS latest_revoked
            FROM promotion_assignments a JOIN customers c ON c.id = a.customer_id
            WHERE a.promotional_credit_id = $1
              AND ($3::text IS NULL OR c.name ILIKE $3 ESCAPE '\\'
                   OR coalesce(c.email, '') ILIKE $3 ESCAPE '\\'
                   OR coalesce(c.external_id, '') ILIKE $3 ESCAPE '\\')
            GROUP BY c.id) per_customer
         WHERE ($4::text IS NULL OR ($4 = 'granted' AND active > 0)
                OR ($4 = 'revoked' AND active = 0 AND latest_revoked)
                OR ($4 = 'expired' AND active = 0 AND NOT latest_revoked))
           AND id < $5 ORDER BY id DESC LIMIT $6"
    );
    page(
        c,
        sql,
        &[&id_bytes(promotion_id), &micros(now), &pattern, &status],
        limit,
        starting_after,
    )
}

// ---- console sessions -------------------------------------------------------------

pub fn insert_session(
    c: &mut impl GenericClient,
    session: &ConsoleSession,
) -> Result<(), postgres::Error> {
    c.execute(
        "INSERT INTO console_sessions (token_hash, csrf_token, api_key_id, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5)",
        &[
            &session.token_hash.as_slice(),
            &session.csrf_token,
            &id_bytes(session.api_key_id),
            &micros(session.created_at),
            &micros(session.expires_at),
        ],
    )?;
    Ok(())
}

/// The session with this token hash, if it has not expired by `now`.
pub fn session(
    c: &mut impl GenericClient,
    token_hash: &[u8; 32],
    now: Instant,
) -> Result<Option<ConsoleSession>, postgres::Error> {
    let sql = select!(
        session,
        " FROM console_sessions WHERE token_hash = $1 AND expires_at > $2"
    );
    one(c, sql, &[&token_hash.as_slice(), &micros(now)], record)
}

pub fn delete_session(
    c: &mut impl GenericClient,
    token_hash: &[u8; 32],
) -> Result<(), postgres::Error> {
    c.execute(
        "DELETE FROM console_sessions WHERE token_hash = $1",
        &[&token_hash.as_slice()],
    )?;
    Ok(())
}

pub fn purge_sessions(
    c: &mut impl GenericClient,
    expired_by: Instant,
) -> Result<usize, postgres::Error> {
    let purged = c.execute(
        "DELETE FROM console_sessions WHERE expires_at <= $1",
        &[&micros(expired_by)],
    )?;
    Ok(count(purged))
}

/// How many wallets a credit system has: the customers an all-customers
/// grant will consider.
/// The wallets in this credit system (through its index), or in all of them.
pub fn count_wallets(
    c: &mut impl GenericClient,
    credit_system_id: Option<u128>,
) -> Result<u64, postgres::Error> {
    let row = match credit_system_id {
        Some(id) => c.query_one(
            "SELECT count(*) FROM wallets WHERE credit_system_id = $1",
            &[&id_bytes(id)],
        )?,
        None => c.query_one("SELECT count(*) FROM wallets", &[])?,
    };
    row.value(0)
}

/// Whether any customer was ever granted this campaign.
pub fn promotion_has_customers(
    c: &mut impl GenericClient,
    promotion_id: u128,
) -> Result<bool, postgres::Error> {
    c.query_one(
        "SELECT EXISTS (SELECT 1 FROM promotion_assignments WHERE promotional_credit_id = $1)",
        &[&id_bytes(promotion_id)],
    )?
    .try_get(0)
}

// ---- console: the wallet chart ----------------------------------------------------

/// The last `limit` (at most [`CHART_ENTRIES_MAX`]) entries of a wallet,
/// oldest first, each with its grant's purpose, and what each purpose and
/// the debt stand at now. `None` if the wallet does not exist.
///
/// SQLite reads these in one transaction for a consistent snapshot. Here
/// the caller may already hold a transaction (whose isolation level can no
/// longer be raised), so the three reads are one statement instead: a single
/// statement always sees a single snapshot. Rows are tagged: 0 the wallet's
/// debt, 1 a purpose's total, 2 an entry.
pub fn entries_with_purpose(
    c: &mut impl GenericClient,
    wallet_id: u128,
    limit: usize,
) -> Result<Option<PurposeLedger>, postgres::Error> {
    let limit = limit.min(CHART_ENTRIES_MAX) as i64;
    let key = id_bytes(wallet_id);
    let rows = c.query(
        concat!(
            "SELECT 0 AS tag, debt AS total, NULL::text AS purpose,
                    NULL::bytea, NULL::bytea, NULL::bigint, NULL::text, NULL::bigint,
                    NULL::bigint, NULL::bigint, NULL::bytea, NULL::text, NULL::smallint,
                    NULL::bytea
             FROM wallets WHERE id = $1
             UNION ALL
             SELECT 1, coalesce(sum(remaining), 0)::bigint, purpose,
                    NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
             FROM grants WHERE wallet_id = $1 GROUP BY purpose
             UNION ALL
             (SELECT 2, NULL, g.purpose, ",
            columns!(entry),
            "
              FROM entries e LEFT JOIN grants g ON g.id = e.grant_id
              WHERE e.wallet_id = $1 ORDER BY e.sequence DESC LIMIT $2)"
        ),
        &[&key, &limit],
    )?;
    let mut debt = None;
    let mut entries: Vec<(EntryRecord, Option<Purpose>)> = Vec::new();
    let mut totals: Vec<(String, i64)> = Vec::new();
    for row in &rows {
        let tag: i32 = row.try_get(0)?;
        match tag {
            0 => debt = Some(row.try_get::<_, i64>(1)?),
            1 => totals.push((row.try_get(2)?, row.try_get(1)?)),
            _ => {
                let purpose: Option<&str> = row.try_get(2)?;
                let entry = EntryRecord::read(&Shifted(row, 3))?;
                entries.push((entry, purpose.and_then(Purpose::parse)));
            }
        }
    }
    let Some(debt) = debt else {
        return Ok(None);
    };
    entries.sort_by_key(|(entry, _)| entry.sequence);
    Ok(Some(PurposeLedger::new(entries, debt, totals)))
}

/// Whether `entry_id` is an entry of `wallet_id` (a valid entries cursor).
pub fn entry_in_wallet(
    c: &mut impl GenericClient,
    wallet_id: u128,
    entry_id: u128,
) -> Result<bool, postgres::Error> {
    let row = c.query_one(
        "SELECT EXISTS (SELECT 1 FROM entries WHERE id = $1 AND wallet_id = $2)",
        &[&id_bytes(entry_id), &id_bytes(wallet_id)],
    )?;
    Ok(row.get(0))
}

// ---- calls to all customers ---------------------------------------------------

/// The campaign row, locked until the transaction ends: edits, grants and
/// revokes of one campaign from several nodes take turns.
pub fn lock_promotion(
    c: &mut impl GenericClient,
    id: u128,
) -> Result<Option<PromotionalCredit>, postgres::Error> {
    let sql = select!(
        promotion,
        " FROM promotional_credits p WHERE p.id = $1 FOR UPDATE"
    );
    one(c, sql, &[&id_bytes(id)], record)
}

pub fn bulk_run(
    c: &mut impl GenericClient,
    promotion_id: u128,
) -> Result<Option<BulkRun>, postgres::Error> {
    let sql = select!(bulk_run, " FROM bulk_runs WHERE promotional_credit_id = $1");
    one(c, sql, &[&id_bytes(promotion_id)], record)
}

pub fn upsert_bulk_run(c: &mut impl GenericClient, run: &BulkRun) -> Result<(), postgres::Error> {
    c.execute(
        concat!(
            "INSERT INTO bulk_runs (",
            columns!(bulk_run),
            ")
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             ON CONFLICT (promotional_credit_id) DO UPDATE SET run_id = excluded.run_id,
                action = excluded.action, idempotency_key = excluded.idempotency_key,
                fingerprint = excluded.fingerprint, cursor = excluded.cursor,
                progress = excluded.progress, lease_until = excluded.lease_until,
                total = excluded.total, finished_at = excluded.finished_at,
                error = excluded.error"
        ),
        &[
            &id_bytes(run.promotional_credit_id),
            &id_bytes(run.run_id),
            &run.action,
            &run.idempotency_key,
            &run.fingerprint.map(|f| f.to_vec()),
            &opt_id_bytes(run.cursor),
            &run.progress,
            &micros(run.lease_until),
            &run.total.map(|t| t as i64),
            &run.finished_at.map(micros),
            &run.error,
        ],
    )?;
    Ok(())
}

pub fn delete_bulk_run(
    c: &mut impl GenericClient,
    promotion_id: u128,
) -> Result<(), postgres::Error> {
    c.execute(
        "DELETE FROM bulk_runs WHERE promotional_credit_id = $1",
        &[&id_bytes(promotion_id)],
    )?;
    Ok(())
}

pub fn save_bulk_resume(
    c: &mut impl GenericClient,
    resume: &BulkResume,
) -> Result<(), postgres::Error> {
    c.execute(
        "INSERT INTO bulk_run_resumes (promotional_credit_id, idempotency_key, fingerprint,
            action, cursor, progress, saved_at) VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (promotional_credit_id, idempotency_key) DO UPDATE SET
            fingerprint = excluded.fingerprint, action = excluded.action,
            cursor = excluded.cursor, progress = excluded.progress, saved_at = excluded.saved_at",
        &[
            &id_bytes(resume.promotional_credit_id),
            &resume.idempotency_key,
            &resume.fingerprint.to_vec(),
            &resume.action,
            &opt_id_bytes(resume.cursor),
            &resume.progress,
            &micros(resume.saved_at),
        ],
    )?;
    Ok(())
}

/// The saved place of this campaign's keyed call, removed as it is read.
pub fn take_bulk_resume(
    c: &mut impl GenericClient,
    promotion_id: u128,
    key: &str,
) -> Result<Option<BulkResume>, postgres::Error> {
    let sql = concat!(
        "DELETE FROM bulk_run_resumes WHERE promotional_credit_id = $1 AND idempotency_key = $2
         RETURNING ",
        columns!(bulk_resume)
    );
    one(c, sql, &[&id_bytes(promotion_id), &key], record)
}

/// Drops saved places older than `before` and, with `promotion_id`, all of
/// that campaign's.
pub fn purge_bulk_resumes(
    c: &mut impl GenericClient,
    before: Instant,
    promotion_id: Option<u128>,
) -> Result<usize, postgres::Error> {
    let removed = c.execute(
        "DELETE FROM bulk_run_resumes WHERE saved_at < $1 OR promotional_credit_id = $2",
        &[&micros(before), &opt_id_bytes(promotion_id)],
    )?;
    Ok(removed as usize)
}

// ---- events and webhooks ----------------------------------------------------------

/// The sequence of the wallet's last event, 0 before its first.
pub fn last_event_sequence(
    c: &mut impl GenericClient,
    wallet_id: u128,
) -> Result<u64, postgres::Error> {
    let row = c.query_one(
        "SELECT coalesce(max(sequence), 0)::bigint FROM events WHERE wallet_id = $1",
        &[&id_bytes(wallet_id)],
    )?;
    row.value(0)
}

pub fn event(c: &mut impl GenericClient, id: u128) -> Result<Option<EventRecord>, postgres::Error> {
    let sql = select!(event, " FROM events ev WHERE ev.id = $1");
    one(c, sql, &[&id_bytes(id)], record)
}

/// Events newest first, of one wallet or all.
pub fn list_events(
    c: &mut impl GenericClient,
    wallet_id: Option<u128>,
    limit: usize,
    starting_after: Option<u128>,
) -> Result<Page<EventRecord>, postgres::Error> {
    // One statement each, so each has its index: (wallet_id, id) for one
    // wallet's, the primary key for all.
    match wallet_id {
        Some(wallet) => {
            let sql = select!(
                event,
                " FROM events ev
                 WHERE ev.wallet_id = $1 AND ev.id < $2 ORDER BY ev.id DESC LIMIT $3"
            );
            page(c, sql, &[&id_bytes(wallet)], limit, starting_after)
        }
        None => {
            let sql = select!(
                event,
                " FROM events ev WHERE ev.id < $1 ORDER BY ev.id DESC LIMIT $2"
            );
            page(c, sql, &[], limit, starting_after)
        }
    }
}

/// The oldest events not yet fanned out to the endpoints, locked until the
/// transaction ends. Events another node has locked are skipped, so two
/// nodes fanning out at once take different events; one a node has just
/// fanned out is found dispatched once its lock is released.
pub fn undispatched_events(
    c: &mut impl GenericClient,
    limit: usize,
) -> Result<Vec<EventRecord>, postgres::Error> {
    all(
        c,
        select!(
            event,
            " FROM events ev WHERE NOT ev.dispatched
             ORDER BY ev.id LIMIT $1 FOR UPDATE SKIP LOCKED"
        ),
        &[&(limit as i64)],
        record,
    )
}

/// Marks these events fanned out, in one statement.
pub fn mark_dispatched(
    c: &mut impl GenericClient,
    event_ids: &[u128],
) -> Result<(), postgres::Error> {
    if event_ids.is_empty() {
        return Ok(());
    }
    let keys: Vec<Vec<u8>> = event_ids.iter().map(|&id| id_bytes(id)).collect();
    c.execute(
        "UPDATE events SET dispatched = true WHERE id = ANY($1)",
        &[&keys],
    )?;
    Ok(())
}

/// Gives `now` to pending deliveries waiting with no time and nothing
/// pending ahead of them (a fan-out on one node that raced the end of the
/// delivery ahead on another); how many.
pub fn release_waiting_deliveries(
    c: &mut impl GenericClient,
    now: Instant,
) -> Result<u64, postgres::Error> {
    c.execute(
        "UPDATE webhook_deliveries d SET next_attempt_at = $1
         WHERE d.status = 'pending' AND d.next_attempt_at IS NULL
           AND NOT EXISTS (SELECT 1 FROM webhook_deliveries p
               WHERE p.endpoint_id = d.endpoint_id AND p.wallet_id = d.wallet_id
                 AND p.status = 'pending' AND p.sequence < d.sequence)",
        &[&micros(now)],
    )
}

/// Whether a delivery to an enabled endpoint is due by `now`.
pub fn deliveries_due(c: &mut impl GenericClient, now: Instant) -> Result<bool, postgres::Error> {
    let row = c.query_one(
        "SELECT EXISTS (SELECT 1 FROM webhook_deliveries d
            JOIN webhook_endpoints w ON w.id = d.endpoint_id
            WHERE d.status = 'pending' AND d.next_attempt_at <= $1 AND w.enabled)",
        &[&micros(now)],
    )?;
    row.try_get(0)
}

/// How many events wait to be fanned out, and how many deliveries are pending.
pub fn outbox_backlog(c: &mut impl GenericClient) -> Result<(u64, u64), postgres::Error> {
    let row = c.query_one(
        "SELECT (SELECT count(*) FROM events WHERE NOT dispatched),
                (SELECT count(*) FROM webhook_deliveries WHERE status = 'pending')",
        &[],
    )?;
    Ok((row.value(0)?, row.value(1)?))
}

pub fn webhook_endpoint(
    c: &mut impl GenericClient,
    id: u128,
) -> Result<Option<WebhookEndpoint>, postgres::Error> {
    let sql = select!(endpoint, " FROM webhook_endpoints WHERE id = $1");
    one(c, sql, &[&id_bytes(id)], record)
}

/// Every endpoint, enabled or not (there are few).
pub fn webhook_endpoints(
    c: &mut impl GenericClient,
) -> Result<Vec<WebhookEndpoint>, postgres::Error> {
    let sql = select!(endpoint, " FROM webhook_endpoints ORDER BY id");
    all(c, sql, &[], record)
}

pub fn list_webhook_endpoints(
    c: &mut impl GenericClient,
    limit: usize,
    starting_after: Option<u128>,
) -> Result<Page<WebhookEndpoint>, postgres::Error> {
    let sql = select!(
        endpoint,
        " FROM webhook_endpoints WHERE id < $1 ORDER BY id DESC LIMIT $2"
    );
    page(c, sql, &[], limit, starting_after)
}

/// Inserts an endpoint, or changes its url, description, types and
/// `enabled` (never its secret or creation time).
pub fn upsert_webhook_endpoint(
    c: &mut impl GenericClient,
    endpoint: &WebhookEndpoint,
) -> Result<(), postgres::Error> {
    c.execute(
        "INSERT INTO webhook_endpoints (id, url, description, event_types, secret, enabled,
            created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (id) DO UPDATE SET url = excluded.url, description = excluded.description,
            event_types = excluded.event_types, enabled = excluded.enabled",
        &[
            &id_bytes(endpoint.id),
            &endpoint.url,
            &endpoint.description,
            &codec::strings_to_text(&endpoint.event_types),
            &endpoint.secret,
            &endpoint.enabled,
            &micros(endpoint.created_at),
        ],
    )?;
    Ok(())
}

/// Deletes an endpoint with its deliveries and their attempts. (The
/// schema's cascades do the same for rows another node writes meanwhile.)
pub fn delete_webhook_endpoint(
    c: &mut impl GenericClient,
    id: u128,
) -> Result<bool, postgres::Error> {
    let key = id_bytes(id);
    c.execute(
        "DELETE FROM webhook_attempts WHERE delivery_id IN
            (SELECT id FROM webhook_deliveries WHERE endpoint_id = $1)",
        &[&key],
    )?;
    c.execute(
        "DELETE FROM webhook_deliveries WHERE endpoint_id = $1",
        &[&key],
    )?;
    let deleted = c.execute("DELETE FROM webhook_endpoints WHERE id = $1", &[&key])?;
    Ok(deleted > 0)
}

/// Inserts these deliveries in one statement, whatever their number.
pub fn insert_deliveries(
    c: &mut impl GenericClient,
    deliveries: &[Delivery],
) -> Result<(), postgres::Error> {
    if deliveries.is_empty() {
        return Ok(());
    }
    let d = deliveries;
    let ids: Vec<Vec<u8>> = d.iter().map(|d| id_bytes(d.id)).collect();
    let endpoints: Vec<Vec<u8>> = d.iter().map(|d| id_bytes(d.endpoint_id)).collect();
    let events: Vec<Vec<u8>> = d.iter().map(|d| id_bytes(d.event_id)).collect();
    let types: Vec<&str> = d.iter().map(|d| d.event_type.as_str()).collect();
    let wallets: Vec<Vec<u8>> = d.iter().map(|d| id_bytes(d.wallet_id)).collect();
    let sequences: Vec<i64> = d.iter().map(|d| counter(d.sequence)).collect();
    let statuses: Vec<&str> = d.iter().map(|d| d.status.as_str()).collect();
    let attempts: Vec<i64> = d.iter().map(|d| i64::from(d.attempts)).collect();
    let next: Vec<Option<i64>> = d.iter().map(|d| d.next_attempt_at.map(micros)).collect();
    let retry_from: Vec<i64> = d.iter().map(|d| micros(d.retry_from)).collect();
    let created: Vec<i64> = d.iter().map(|d| micros(d.created_at)).collect();
    c.execute(
        "INSERT INTO webhook_deliveries (id, endpoint_id, event_id, type, wallet_id, sequence,
            status, attempts, next_attempt_at, retry_from, created_at)
         SELECT u.id, u.endpoint_id, u.event_id, u.type, u.wallet_id, u.sequence, u.status,
            u.attempts,
            CASE WHEN u.sequence > min(u.sequence) OVER (PARTITION BY u.endpoint_id, u.wallet_id)
                OR EXISTS (SELECT 1 FROM webhook_deliveries p
                    WHERE p.endpoint_id = u.endpoint_id AND p.wallet_id = u.wallet_id
                      AND p.status = 'pending' AND p.sequence < u.sequence)
                THEN NULL ELSE u.next END,
            u.retry_from, u.created_at
         FROM unnest($1::bytea[], $2::bytea[], $3::bytea[], $4::text[], $5::bytea[],
            $6::bigint[], $7::text[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[])
            AS u(id, endpoint_id, event_id, type, wallet_id, sequence, status, attempts, next,
                 retry_from, created_at)
         WHERE EXISTS (SELECT 1 FROM webhook_endpoints w WHERE w.id = u.endpoint_id)",
        &[
            &ids,
            &endpoints,
            &events,
            &types,
            &wallets,
            &sequences,
            &statuses,
            &attempts,
            &next,
            &retry_from,
            &created,
        ],
    )?;
    Ok(())
}

/// Claims up to `limit` deliveries due by `now` to enabled endpoints, each
/// the first pending one of its wallet for its endpoint (so a wallet's
/// events arrive in order): counts the attempt and moves its next attempt
/// to `lease_until`, so nobody else sends it meanwhile.
///
/// The deliveries are locked as they are read, skipping those another node
/// is claiming: the later ones of the same wallet and endpoint stay
/// unclaimable while the first is pending, locked or not, and one claimed
/// meanwhile is found not due (PostgreSQL checks a locked row's latest
/// version again). Then one statement claims them.
pub fn claim_deliveries(
    c: &mut impl GenericClient,
    now: Instant,
    lease_until: Instant,
    limit: usize,
) -> Result<Vec<DeliveryJob>, postgres::Error> {
    let mut jobs: Vec<DeliveryJob> = all(
        c,
        select!(
            delivery_job,
            " FROM webhook_deliveries d
             JOIN webhook_endpoints w ON w.id = d.endpoint_id
             JOIN events ev ON ev.id = d.event_id
             WHERE d.status = 'pending' AND d.next_attempt_at <= $1 AND w.enabled
               AND NOT EXISTS (SELECT 1 FROM webhook_deliveries p
                   WHERE p.endpoint_id = d.endpoint_id AND p.wallet_id = d.wallet_id
                     AND p.status = 'pending' AND p.sequence < d.sequence)
               AND NOT EXISTS (SELECT 1 FROM events e
                   WHERE e.wallet_id = d.wallet_id AND NOT e.dispatched
                     AND e.sequence < d.sequence)
             ORDER BY d.next_attempt_at, d.id LIMIT $2
             FOR UPDATE OF d SKIP LOCKED"
        ),
        &[&micros(now), &(limit as i64)],
        record,
    )?;
    if jobs.is_empty() {
        return Ok(jobs);
    }
    let keys: Vec<Vec<u8>> = jobs.iter().map(|job| id_bytes(job.delivery.id)).collect();
    c.execute(
        "UPDATE webhook_deliveries SET attempts = attempts + 1, next_attempt_at = $1,
            last_attempt_at = $2 WHERE id = ANY($3)",
        &[&micros(lease_until), &micros(now), &keys],
    )?;
    for job in &mut jobs {
        job.delivery.attempts += 1;
        job.delivery.next_attempt_at = Some(lease_until);
        job.delivery.last_attempt_at = Some(now);
    }
    Ok(jobs)
}

/// Records an attempt and what follows it, if the delivery is still the
/// one that attempt claimed (pending, with that many attempts); false if not.
pub fn finish_attempt(
    c: &mut impl GenericClient,
    attempt: &Attempt,
    end: &AttemptEnd,
) -> Result<bool, postgres::Error> {
    let (status, next) = match end {
        AttemptEnd::Succeeded => (DeliveryStatus::Succeeded, None),
        AttemptEnd::Retry(at) => (DeliveryStatus::Pending, Some(micros(*at))),
        AttemptEnd::GiveUp => (DeliveryStatus::Failed, None),
    };
    let key = id_bytes(attempt.delivery_id);
    let number = i64::from(attempt.number);
    let status_code = attempt.status_code.map(i32::from);
    let updated = c.execute(
        "UPDATE webhook_deliveries SET status = $1, next_attempt_at = $2, last_status_code = $3,
            last_error = $4 WHERE id = $5 AND attempts = $6 AND status = 'pending'",
        &[
            &status.as_str(),
            &next,
            &status_code,
            &attempt.error,
            &key,
            &number,
        ],
    )?;
    if updated == 0 {
        return Ok(false);
    }
    if !matches!(end, AttemptEnd::Retry(_)) {
        // The next of its wallet's deliveries to this endpoint may go now.
        c.execute(
            "UPDATE webhook_deliveries SET next_attempt_at = $1
             WHERE id = (SELECT f.id FROM webhook_deliveries f, webhook_deliveries d
                 WHERE d.id = $2 AND f.endpoint_id = d.endpoint_id
                   AND f.wallet_id = d.wallet_id AND f.status = 'pending'
                   AND f.sequence > d.sequence
                 ORDER BY f.sequence LIMIT 1)
               AND (next_attempt_at IS NULL OR next_attempt_at > $1)",
            &[&micros(attempt.at), &key],
        )?;
    }
    c.execute(
        "INSERT INTO webhook_attempts (delivery_id, number, at, status_code, error, duration_ms)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (delivery_id, number) DO UPDATE SET at = excluded.at,
            status_code = excluded.status_code, error = excluded.error,
            duration_ms = excluded.duration_ms",
        &[
            &key,
            &number,
            &micros(attempt.at),
            &status_code,
            &attempt.error,
            &i64::from(attempt.duration_ms),
        ],
    )?;
    Ok(true)
}

pub fn delivery(c: &mut impl GenericClient, id: u128) -> Result<Option<Delivery>, postgres::Error> {
    let sql = select!(delivery, " FROM webhook_deliveries d WHERE d.id = $1");
    one(c, sql, &[&id_bytes(id)], record)
}

/// An endpoint's deliveries newest first, of one status or all.
pub fn list_deliveries(
    c: &mut impl GenericClient,
    endpoint_id: u128,
    status: Option<DeliveryStatus>,
    limit: usize,
    starting_after: Option<u128>,
) -> Result<Page<Delivery>, postgres::Error> {
    let endpoint = id_bytes(endpoint_id);
    let status = status.map(DeliveryStatus::as_str);
    let sql = select!(
        delivery,
        " FROM webhook_deliveries d
         WHERE d.endpoint_id = $1 AND ($2::text IS NULL OR d.status = $2) AND d.id < $3
         ORDER BY d.id DESC LIMIT $4"
    );
    page(c, sql, &[&endpoint, &status], limit, starting_after)
}

/// A delivery's attempts, first first.
pub fn delivery_attempts(
    c: &mut impl GenericClient,
    delivery_id: u128,
) -> Result<Vec<Attempt>, postgres::Error> {
    let sql = select!(
        attempt,
        " FROM webhook_attempts WHERE delivery_id = $1 ORDER BY number"
    );
    all(c, sql, &[&id_bytes(delivery_id)], record)
}

/// Sends a finished delivery again: pending from `now`, with a new retry
/// window. False when it is not finished (pending: its attempts go on).
pub fn redeliver(
    c: &mut impl GenericClient,
    id: u128,
    now: Instant,
) -> Result<bool, postgres::Error> {
    let updated = c.execute(
        "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = $1,
            retry_from = $1, attempts_before_retry = attempts
         WHERE id = $2 AND status <> 'pending'",
        &[&micros(now), &id_bytes(id)],
    )?;
    Ok(updated > 0)
}
