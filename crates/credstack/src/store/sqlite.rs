//! The embedded store: one SQLite database file in WAL mode. This module
//! knows rows and SQL, nothing about HTTP; it maps records to rows, and rows
//! to records through `rows.rs`, and every function runs inside whatever
//! transaction the caller holds. Durability: `synchronous = FULL`, so a
//! committed write survives a crash or power loss.
//!
//! Why this file is past ~800 lines: it is one function per `Store` method
//! (about ninety), each beside its SQL, in sections by table in the same
//! order as `postgres.rs`, so a method reads side by side with its twin. What
//! the two backends read alike, each record's columns and its decoding, is
//! written once in `rows.rs`; what is left here differs by backend (SQL
//! dialect, placeholders, one statement per row). The next cut is by table
//! (`sqlite/{wallets,grants,…}.rs`), once the journal's statements below
//! (`Write`, `execute_write`, `*_values`) have been replaced.

use super::codec;
use super::rows::{self, Record, Row as _, columns, select};
use super::{CHART_ENTRIES_MAX, PurposeLedger};
use crate::ids;
use crate::records::*;
use credstack_core::{Amount, Grant, GrantId, Hold, HoldId, Instant, Purpose, Reservation, Wallet};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row, params};
use std::path::Path;

const MIGRATIONS: &[&str] = &[
    include_str!("schema_v1.sql"),
    include_str!("schema_v2.sql"),
    include_str!("schema_v3.sql"),
    include_str!("schema_v4.sql"),
    include_str!("schema_v5.sql"),
    include_str!("schema_v6.sql"),
    include_str!("schema_v7.sql"),
    include_str!("schema_v8.sql"),
    include_str!("schema_v9.sql"),
    include_str!("schema_v10.sql"),
    include_str!("schema_v11.sql"),
    include_str!("schema_v12.sql"),
    include_str!("schema_v13.sql"),
    include_str!("schema_v14.sql"),
];

/// The version whose migration adds entry hashes, which existing entries
/// then get from [`backfill_entry_hashes`].
const ENTRY_HASHES_VERSION: usize = 10;

/// Opens (creating if needed) the database and migrates it.
/// The schema version this release migrates a store to (its `user_version`).
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

pub fn open(path: &Path) -> rusqlite::Result<Connection> {
    let connection = open_unmigrated(path)?;
    migrate(&connection)?;
    Ok(connection)
}

/// [`open`] without migrating: what the journal left at the store's schema
/// is merged first (`ledger::open_journal`).
pub fn open_unmigrated(path: &Path) -> rusqlite::Result<Connection> {
    let connection = Connection::open(path)?;
    configure(&connection)?;
    Ok(connection)
}

pub fn configure(connection: &Connection) -> rusqlite::Result<()> {
    connection.busy_timeout(std::time::Duration::from_secs(5))?;
    // Switching a new file to WAL needs a moment alone with it; a second
    // process opening the file at the same instant may be told it is busy.
    let mut tries = 0;
    loop {
        match connection.pragma_update(None, "journal_mode", "WAL") {
            Err(error)
                if tries < 50
                    && error.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) =>
            {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            other => break other?,
        }
    }
    connection.pragma_update(None, "synchronous", "FULL")?;
    connection.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

pub fn migrate(connection: &Connection) -> rusqlite::Result<()> {
    // A store that is up to date needs no lock: opening it beside a server
    // (`backup`, `verify`) never waits for the merger's transaction.
    let version: usize = connection.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version >= MIGRATIONS.len() {
        return Ok(());
    }
    // Read the version again under the write lock, so two processes opening
    // a new file at once apply each migration once: the second waits (busy
    // timeout), then finds the version moved.
    connection.execute_batch("BEGIN IMMEDIATE")?;
    let applied = (|| {
        let version: usize = connection.pragma_query_value(None, "user_version", |r| r.get(0))?;
        for (index, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            connection.execute_batch(sql)?;
            if index + 1 == ENTRY_HASHES_VERSION {
                backfill_entry_hashes(connection)?;
            }
            connection.pragma_update(None, "user_version", index + 1)?;
        }
        Ok(())
    })();
    match applied {
        Ok(()) => connection.execute_batch("COMMIT"),
        Err(error) => {
            let _ = connection.execute_batch("ROLLBACK");
            Err(error)
        }
    }
}

/// Chains the entries written before entries had hashes, in pages of
/// (wallet, sequence) order, inside the migration's transaction.
fn backfill_entry_hashes(c: &Connection) -> rusqlite::Result<()> {
    let mut after: (Vec<u8>, i64) = (Vec::new(), 0);
    let (mut wallet, mut previous) = (None, CHAIN_START);
    loop {
        let page: Vec<EntryRecord> = c
            .prepare(select!(
                entry_without_hash,
                " FROM entries e
                 WHERE (e.wallet_id, e.sequence) > (?, ?)
                 ORDER BY e.wallet_id, e.sequence LIMIT 10000"
            ))?
            .query_map(params![after.0, after.1], |row| {
                rows::entry_without_hash(row)
            })?
            .collect::<rusqlite::Result<_>>()?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        after = (ids::to_bytes(last.wallet_id).to_vec(), last.sequence as i64);
        let mut update =
            c.prepare_cached("UPDATE entries SET hash = ? WHERE wallet_id = ? AND sequence = ?")?;
        for entry in &page {
            if wallet != Some(entry.wallet_id) {
                (wallet, previous) = (Some(entry.wallet_id), CHAIN_START);
            }
            previous = entry.chain(&previous);
            update.execute(params![
                previous.as_slice(),
                ids::to_bytes(entry.wallet_id),
                entry.sequence
            ])?;
        }
    }
}

// ---- transactions -------------------------------------------------------------

/// Takes the database's write lock now, not at the first write, so a
/// second process writing the same file waits here (busy timeout) instead
/// of failing part way through a batch.
pub fn begin(c: &Connection) -> rusqlite::Result<()> {
    c.execute_batch("BEGIN IMMEDIATE")
}

/// A deferred transaction: in WAL mode its first read fixes the snapshot
/// every later read sees, while the writer commits beside it.
pub fn begin_snapshot(c: &Connection) -> rusqlite::Result<()> {
    c.execute_batch("BEGIN DEFERRED")
}

pub fn commit(c: &Connection) -> rusqlite::Result<()> {
    c.execute_batch("COMMIT")
}

pub fn rollback(c: &Connection) -> rusqlite::Result<()> {
    if c.is_autocommit() {
        return Ok(());
    }
    c.execute_batch("ROLLBACK")
}

/// The versions of these wallets, in id order, each once. The write lock
/// `begin` took already covers every row, so this only reads.
pub fn lock_wallets(c: &Connection, ids: &[u128]) -> rusqlite::Result<Vec<(u128, i64)>> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let mut statement = c.prepare_cached("SELECT version FROM wallets WHERE id = ?")?;
    let mut versions = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(version) = statement
            .query_row([ids::to_bytes(id)], |row| row.get(0))
            .optional()?
        {
            versions.push((id, version));
        }
    }
    Ok(versions)
}

/// The wallets these holds belong to (unknown ids are left out).
pub fn hold_wallet_ids(c: &Connection, hold_ids: &[u128]) -> rusqlite::Result<Vec<u128>> {
    let mut statement = c.prepare_cached("SELECT wallet_id FROM holds WHERE id = ?")?;
    let mut wallets = Vec::with_capacity(hold_ids.len());
    for &id in hold_ids {
        if let Some(wallet) = statement
            .query_row([ids::to_bytes(id)], |row| row.value(0))
            .optional()?
        {
            wallets.push(wallet);
        }
    }
    Ok(wallets)
}

/// The wallets these grants belong to (unknown ids are left out).
pub fn grant_wallet_ids(c: &Connection, grant_ids: &[u128]) -> rusqlite::Result<Vec<u128>> {
    let mut statement = c.prepare_cached("SELECT wallet_id FROM grants WHERE id = ?")?;
    let mut wallets = Vec::with_capacity(grant_ids.len());
    for &id in grant_ids {
        if let Some(wallet) = statement
            .query_row([ids::to_bytes(id)], |row| row.value(0))
            .optional()?
        {
            wallets.push(wallet);
        }
    }
    Ok(wallets)
}

// ---- value mapping ----------------------------------------------------------

pub fn micros(at: Instant) -> i64 {
    at.timestamp_micros()
}

fn opt_id_bytes(id: Option<u128>) -> Option<[u8; 16]> {
    id.map(ids::to_bytes)
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

/// A row read as the record of its columns ([`Record`]).
fn record<T: Record>(row: &Row) -> rusqlite::Result<T> {
    T::read(row)
}

// ---- credit systems -----------------------------------------------------------

pub fn credit_system(c: &Connection, id: u128) -> rusqlite::Result<Option<CreditSystem>> {
    c.prepare_cached(select!(credit_system, " FROM credit_systems WHERE id = ?"))?
        .query_row([ids::to_bytes(id)], record)
        .optional()
}

pub fn credit_system_by_key(c: &Connection, key: &str) -> rusqlite::Result<Option<CreditSystem>> {
    c.prepare_cached(select!(credit_system, " FROM credit_systems WHERE key = ?"))?
        .query_row([key], record)
        .optional()
}

pub fn list_credit_systems(
    c: &Connection,
    limit: usize,
    starting_after: Option<u128>,
) -> rusqlite::Result<Page<CreditSystem>> {
    let sql = select!(
        credit_system,
        " FROM credit_systems WHERE id < ? ORDER BY id DESC LIMIT ?"
    );
    page(c, sql, &[], limit, starting_after)
}

pub fn upsert_credit_system(c: &Connection, cs: &CreditSystem) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO credit_systems (id, key, name, unit, scale, active, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, active = excluded.active",
    )?
    .execute(params![
        ids::to_bytes(cs.id),
        cs.key,
        cs.name,
        cs.unit,
        cs.scale.places(),
        cs.active,
        micros(cs.created_at)
    ])?;
    Ok(())
}

// ---- customers ----------------------------------------------------------------

pub fn customer(c: &Connection, id: u128) -> rusqlite::Result<Option<Customer>> {
    c.prepare_cached(select!(customer, " FROM customers WHERE id = ?"))?
        .query_row([ids::to_bytes(id)], record)
        .optional()
}

pub fn customer_by_external_id(
    c: &Connection,
    external_id: &str,
) -> rusqlite::Result<Option<Customer>> {
    c.prepare_cached(select!(customer, " FROM customers WHERE external_id = ?"))?
        .query_row([external_id], record)
        .optional()
}

/// Customers newest first; `query` matches name, email or external id,
/// case-insensitively, as a substring.
pub fn list_customers(
    c: &Connection,
    query: Option<&str>,
    limit: usize,
    starting_after: Option<u128>,
) -> rusqlite::Result<Page<Customer>> {
    match query {
        None => {
            let sql = select!(
                customer,
                " FROM customers WHERE id < ? ORDER BY id DESC LIMIT ?"
            );
            page(c, sql, &[], limit, starting_after)
        }
        Some(query) => {
            let pattern = format!("%{}%", codec::like_escape(&query.to_lowercase()));
            let sql = select!(
                customer,
                " FROM customers
                 WHERE (lower(name) LIKE ?1 ESCAPE '\\' OR lower(coalesce(email, '')) LIKE ?1 ESCAPE '\\'
                        OR lower(coalesce(external_id, '')) LIKE ?1 ESCAPE '\\')
                   AND id < ?2 ORDER BY id DESC LIMIT ?3"
            );
            page(c, sql, &[&pattern], limit, starting_after)
        }
    }
}

pub fn upsert_customer(c: &Connection, customer: &Customer) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO customers (id, name, email, external_id, metadata, created_at)
         VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, email = excluded.email,
            external_id = excluded.external_id, metadata = excluded.metadata",
    )?
    .execute(params![
        ids::to_bytes(customer.id),
        customer.name,
        customer.email,
        customer.external_id,
        metadata_json(&customer.metadata),
        micros(customer.created_at)
    ])?;
    Ok(())
}

// ---- wallets ------------------------------------------------------------------

pub fn wallet_info(c: &Connection, id: u128) -> rusqlite::Result<Option<WalletInfo>> {
    c.prepare_cached(select!(wallet_info, " FROM wallets WHERE id = ?"))?
        .query_row([ids::to_bytes(id)], record)
        .optional()
}

pub fn wallet_by_owner(
    c: &Connection,
    customer_id: u128,
    credit_system_id: u128,
) -> rusqlite::Result<Option<WalletInfo>> {
    c.prepare_cached(select!(
        wallet_info,
        " FROM wallets WHERE customer_id = ? AND credit_system_id = ?"
    ))?
    .query_row(
        [ids::to_bytes(customer_id), ids::to_bytes(credit_system_id)],
        record,
    )
    .optional()
}

pub fn list_wallets(
    c: &Connection,
    customer_id: Option<u128>,
    credit_system_id: Option<u128>,
    limit: usize,
    starting_after: Option<u128>,
) -> rusqlite::Result<Page<WalletInfo>> {
    let customer = customer_id.map(ids::to_bytes);
    let credit_system = credit_system_id.map(ids::to_bytes);
    let sql = select!(
        wallet_info,
        " FROM wallets
         WHERE (?1 IS NULL OR customer_id = ?1) AND (?2 IS NULL OR credit_system_id = ?2)
           AND id < ?3 ORDER BY id DESC LIMIT ?4"
    );
    page(c, sql, &[&customer, &credit_system], limit, starting_after)
}

/// The live state of a wallet: settings, balances, live grants, active holds.
pub fn load_wallet(c: &Connection, id: u128) -> rusqlite::Result<Option<(WalletInfo, Wallet)>> {
    let key = ids::to_bytes(id);
    let head: Option<(WalletInfo, Wallet)> = c
        .prepare_cached(select!(wallet, " FROM wallets WHERE id = ?"))?
        .query_row([key], record)
        .optional()?;
    let Some((info, mut wallet)) = head else {
        return Ok(None);
    };
    wallet.grants = c
        .prepare_cached(select!(
            grant,
            " FROM grants g WHERE g.wallet_id = ? AND g.live = 1"
        ))?
        .query_map([key], |row| Ok(GrantRecord::read(row)?.grant))?
        .collect::<rusqlite::Result<_>>()?;
    wallet.holds = c
        .prepare_cached(select!(
            hold,
            " FROM holds h WHERE h.wallet_id = ? AND h.status = 'active'"
        ))?
        .query_map([key], |row| {
            let record = HoldRecord::read(row)?;
            Ok(Hold {
                id: HoldId(record.id),
                amount: record.amount,
                expires_at: record.expires_at,
                reservations: record.reservations,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    wallet.grants.sort_by_key(|g| g.id);
    wallet.holds.sort_by_key(|h| h.id);
    Ok(Some((info, wallet)))
}

/// These wallets with their live grants and active holds (unknown ids are left out).
pub fn load_wallets(
    c: &Connection,
    ids: &[u128],
) -> rusqlite::Result<Vec<(WalletInfo, Wallet, ChainHead)>> {
    let mut wallets = Vec::with_capacity(ids.len());
    for &id in ids {
        if let Some((info, wallet)) = load_wallet(c, id)? {
            let head = chain_head(c, id)?;
            wallets.push((info, wallet, head));
        }
    }
    Ok(wallets)
}

/// The wallet's last entry's hash and instant ([`ChainHead::START`] before its first).
fn chain_head(c: &Connection, wallet_id: u128) -> rusqlite::Result<ChainHead> {
    let last = c
        .prepare_cached(
            "SELECT hash, occurred_at FROM entries WHERE wallet_id = ?
             ORDER BY sequence DESC LIMIT 1",
        )?
        .query_row([ids::to_bytes(wallet_id)], |row| {
            Ok((row.value(0)?, row.value(1)?))
        })
        .optional()?;
    Ok(match last {
        None => ChainHead::START,
        Some((hash, at)) => ChainHead { hash, at: Some(at) },
    })
}

pub fn insert_wallet(c: &Connection, info: &WalletInfo, wallet: &Wallet) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO wallets (id, customer_id, credit_system_id, scale, overdraft_limit, debt,
            balance, last_sequence, next_event_at, created_at, low_balance_threshold)
         VALUES (?, ?, ?, ?, ?, 0, 0, 0, NULL, ?, ?)",
    )?
    .execute(params![
        ids::to_bytes(info.id),
        ids::to_bytes(info.customer_id),
        ids::to_bytes(info.credit_system_id),
        info.scale.places(),
        wallet.overdraft_limit.atomic(),
        micros(info.created_at),
        info.low_balance_threshold.map(Amount::atomic)
    ])?;
    Ok(())
}

/// Writes a wallet's settings kept beside its state (its threshold).
pub fn update_wallet_info(c: &Connection, info: &WalletInfo) -> rusqlite::Result<()> {
    c.prepare_cached("UPDATE wallets SET low_balance_threshold = ? WHERE id = ?")?
        .execute(params![
            info.low_balance_threshold.map(Amount::atomic),
            ids::to_bytes(info.id)
        ])?;
    Ok(())
}

fn update_wallet_state(c: &Connection, id: u128, wallet: &Wallet) -> rusqlite::Result<()> {
    execute_write(c, Write::WalletState, &wallet_state_values(id, wallet, 1))
}

// ---- the writes the journal carries ---------------------------------------------
//
// The rows a debit writes, as the values of one statement each, so the
// journal (`super::journal`) keeps exactly what a direct write would
// execute and merges it later with the same SQL.

/// One of the statements a debit batch writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Write {
    Entry,
    Debit,
    Key,
    /// A wallet's balances and next event; its last value adds to `version`.
    WalletState,
    GrantState,
    FinishHold,
    /// A new grant's row (a campaign's grant).
    Grant,
    /// A campaign assignment, new or revoked.
    Assignment,
    /// A campaign's row (a campaign marks itself applied).
    Promotion,
    /// A call to all customers' progress.
    BulkRun,
    /// An event of the outbox.
    Event,
}

impl Write {
    fn sql(self) -> &'static str {
        match self {
            Write::Entry => {
                "INSERT INTO entries (wallet_id, sequence, id, type, amount, balance_after,
                    occurred_at, grant_id, reference, hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
            }
            Write::Debit => {
                "INSERT INTO debits (id, wallet_id, amount, allocations, balance_after, description,
                    metadata, hold_id, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
            }
            Write::Key => {
                "INSERT INTO idempotency_keys (key, fingerprint, status, body, debit_id, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
            }
            Write::WalletState => {
                "UPDATE wallets SET overdraft_limit = ?2, debt = ?3, balance = ?4,
                    last_sequence = ?5, next_event_at = ?6, version = version + ?7 WHERE id = ?1"
            }
            Write::GrantState => {
                "UPDATE grants SET remaining = ?2, held = ?3, cycle = ?4, status = ?5,
                    ended_at = ?6, live = ?7 WHERE id = ?1"
            }
            Write::FinishHold => {
                "UPDATE holds SET status = ?2, debit_id = ?3, ended_at = ?4 WHERE id = ?1"
            }
            Write::Grant => {
                "INSERT INTO grants (id, wallet_id, amount, purpose, priority, effective_at,
                    expires_at, recurrence_interval, recurrence_count, rollover_max, remaining,
                    held, cycle, status, ended_at, live, description, metadata, source, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                    ?17, ?18, ?19, ?20)"
            }
            Write::Assignment => {
                "INSERT INTO promotion_assignments (id, promotional_credit_id, customer_id,
                    wallet_id, grant_id, granted_at, expires_at, revoked_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (id) DO UPDATE SET revoked_at = excluded.revoked_at"
            }
            Write::Promotion => {
                "INSERT INTO promotional_credits (id, name, description, credit_system_id,
                    starts_at, ends_at, quantity, reset_interval, access_period_value,
                    access_period_unit, allow_multiple_grants, applied, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name,
                    description = excluded.description,
                    credit_system_id = excluded.credit_system_id, starts_at = excluded.starts_at,
                    ends_at = excluded.ends_at, quantity = excluded.quantity,
                    reset_interval = excluded.reset_interval,
                    access_period_value = excluded.access_period_value,
                    access_period_unit = excluded.access_period_unit,
                    allow_multiple_grants = excluded.allow_multiple_grants,
                    applied = excluded.applied"
            }
            Write::Event => {
                "INSERT INTO events (id, wallet_id, sequence, type, occurred_at, data)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
            }
            Write::BulkRun => {
                "INSERT OR REPLACE INTO bulk_runs (promotional_credit_id, run_id, action,
                    idempotency_key, fingerprint, cursor, progress, lease_until, total,
                    finished_at, error)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
            }
        }
    }
}

/// Runs one of the journal's statements with its values.
pub fn execute_write(c: &Connection, write: Write, values: &[Value]) -> rusqlite::Result<()> {
    c.prepare_cached(write.sql())?
        .execute(rusqlite::params_from_iter(values))?;
    Ok(())
}

fn id_value(id: u128) -> Value {
    Value::Blob(ids::to_bytes(id).to_vec())
}

fn sequence_value(sequence: u64) -> Value {
    Value::Integer(i64::try_from(sequence).expect("a wallet has fewer than 2^63 entries"))
}

fn opt_id_value(id: Option<u128>) -> Value {
    id.map_or(Value::Null, id_value)
}

/// A wallet's state row, its id first; `versions` is what its version
/// moves by (the journal merges several batches' states into the last).
pub fn wallet_state_values(id: u128, wallet: &Wallet, versions: i64) -> Vec<Value> {
    vec![
        id_value(id),
        Value::Integer(wallet.overdraft_limit.atomic()),
        Value::Integer(wallet.debt.atomic()),
        Value::Integer(wallet.balance.atomic()),
        sequence_value(wallet.last_sequence),
        wallet.next_event_at().map(micros).into(),
        Value::Integer(versions),
    ]
}

pub fn grant_state_values(grant: &Grant) -> Vec<Value> {
    vec![
        id_value(grant.id.0),
        Value::Integer(grant.remaining.atomic()),
        Value::Integer(grant.held.atomic()),
        Value::Integer(i64::try_from(grant.cycle).expect("a grant renews fewer than 2^63 times")),
        Value::Text(grant.status.as_str().to_string()),
        grant.ended_at.map(micros).into(),
        Value::Integer(i64::from(grant.is_live())),
    ]
}

pub fn finish_hold_values(
    id: u128,
    status: HoldStatus,
    debit_id: Option<u128>,
    ended_at: Instant,
) -> Vec<Value> {
    vec![
        id_value(id),
        Value::Text(status.as_str().to_string()),
        opt_id_value(debit_id),
        Value::Integer(micros(ended_at)),
    ]
}

pub fn entry_values(entry: &EntryRecord) -> Vec<Value> {
    vec![
        id_value(entry.wallet_id),
        sequence_value(entry.sequence),
        id_value(entry.id),
        Value::Text(entry.kind.as_str().to_string()),
        Value::Integer(entry.amount.atomic()),
        Value::Integer(entry.balance_after.atomic()),
        Value::Integer(micros(entry.occurred_at)),
        opt_id_value(entry.grant_id),
        Value::Text(entry.reference.clone()),
        Value::Blob(entry.hash.to_vec()),
    ]
}

pub fn debit_values(debit: &DebitRecord) -> Vec<Value> {
    vec![
        id_value(debit.id),
        id_value(debit.wallet_id),
        Value::Integer(debit.amount.atomic()),
        Value::Text(parts_json(
            debit.allocations.iter().map(|a| (a.grant, a.amount)),
        )),
        Value::Integer(debit.balance_after.atomic()),
        debit.description.clone().into(),
        Value::Text(metadata_json(&debit.metadata)),
        opt_id_value(debit.hold_id),
        Value::Integer(micros(debit.created_at)),
    ]
}

pub fn key_values(kept: &KeptResponse) -> Vec<Value> {
    let (status, body, debit_id) = kept_columns(&kept.kept);
    vec![
        Value::Text(kept.key.clone()),
        Value::Blob(kept.fingerprint.to_vec()),
        Value::Integer(i64::from(status)),
        Value::Text(body.to_string()),
        debit_id.map_or(Value::Null, |id| Value::Blob(id.to_vec())),
        Value::Integer(micros(kept.at)),
    ]
}

pub fn event_values(event: &EventRecord) -> Vec<Value> {
    vec![
        id_value(event.id),
        id_value(event.wallet_id),
        sequence_value(event.sequence),
        Value::Text(event.kind.as_str().to_string()),
        Value::Integer(micros(event.occurred_at)),
        Value::Text(event.data.clone()),
    ]
}

pub fn update_states(
    c: &Connection,
    wallets: &[(u128, &Wallet)],
    grants: &[&Grant],
) -> rusqlite::Result<()> {
    for (id, wallet) in wallets {
        update_wallet_state(c, *id, wallet)?;
    }
    for grant in grants {
        update_grant_state(c, grant)?;
    }
    Ok(())
}

/// Wallets with an event due at or before `now`, soonest first.
pub fn due_wallets(c: &Connection, now: Instant, limit: usize) -> rusqlite::Result<Vec<u128>> {
    c.prepare_cached(
        "SELECT id FROM wallets WHERE next_event_at IS NOT NULL AND next_event_at <= ?
         ORDER BY next_event_at LIMIT ?",
    )?
    .query_map(params![micros(now), limit as i64], |row| row.value(0))?
    .collect()
}

/// When the wallet next has an event due, as last committed.
pub fn wallet_next_event_at(c: &Connection, id: u128) -> rusqlite::Result<Option<Instant>> {
    let value: Option<Option<Instant>> = c
        .prepare_cached("SELECT next_event_at FROM wallets WHERE id = ?")?
        .query_row([ids::to_bytes(id)], |row| row.value(0))
        .optional()?;
    Ok(value.flatten())
}

// ---- grants -------------------------------------------------------------------

pub fn grant(c: &Connection, id: u128) -> rusqlite::Result<Option<GrantRecord>> {
    c.prepare_cached(select!(grant, " FROM grants g WHERE g.id = ?"))?
        .query_row([ids::to_bytes(id)], record)
        .optional()
}

/// Grants of a wallet newest first, optionally only those whose stored
/// status is `status` (`depleted` is an active grant with nothing left).
pub fn list_grants(
    c: &Connection,
    wallet_id: u128,
    status: Option<&str>,
    limit: usize,
    starting_after: Option<u128>,
) -> rusqlite::Result<Page<GrantRecord>> {
    let wallet = ids::to_bytes(wallet_id);
    let status = status.map(str::to_string);
    let sql = select!(
        grant,
        " FROM grants g WHERE g.wallet_id = ?1
           AND (?2 IS NULL
                OR (?2 = 'depleted' AND g.status = 'active' AND g.remaining = 0)
                OR (?2 = 'active' AND g.status = 'active' AND g.remaining > 0)
                OR (?2 NOT IN ('active', 'depleted') AND g.status = ?2))
           AND g.id < ?3 ORDER BY g.id DESC LIMIT ?4"
    );
    page(c, sql, &[&wallet, &status], limit, starting_after)
}

pub fn insert_grant(c: &Connection, record: &GrantRecord) -> rusqlite::Result<()> {
    execute_write(c, Write::Grant, &grant_values(record))
}

/// A new grant's row, its id first.
pub fn grant_values(record: &GrantRecord) -> Vec<Value> {
    let g = &record.grant;
    vec![
        id_value(g.id.0),
        id_value(record.wallet_id),
        Value::Integer(g.terms.amount.atomic()),
        Value::Text(g.terms.purpose.as_str().to_string()),
        Value::Integer(i64::from(g.terms.priority)),
        Value::Integer(micros(g.terms.effective_at)),
        g.terms.expires_at.map(micros).into(),
        g.terms
            .recurrence
            .map(|p| p.interval.as_str().to_string())
            .into(),
        g.terms.recurrence.map(|p| i64::from(p.count)).into(),
        Value::Integer(g.terms.rollover_max.atomic()),
        Value::Integer(g.remaining.atomic()),
        Value::Integer(g.held.atomic()),
        Value::Integer(i64::try_from(g.cycle).expect("a grant renews fewer than 2^63 times")),
        Value::Text(g.status.as_str().to_string()),
        g.ended_at.map(micros).into(),
        Value::Integer(i64::from(g.is_live())),
        record.description.clone().into(),
        Value::Text(metadata_json(&record.metadata)),
        Value::Text(record.source.to_stored()),
        Value::Integer(micros(record.created_at)),
    ]
}

/// Writes what changes on a grant after creation.
pub fn update_grant_state(c: &Connection, grant: &Grant) -> rusqlite::Result<()> {
    execute_write(c, Write::GrantState, &grant_state_values(grant))
}

// ---- holds --------------------------------------------------------------------

pub fn hold(c: &Connection, id: u128) -> rusqlite::Result<Option<HoldRecord>> {
    c.prepare_cached(select!(hold, " FROM holds h WHERE h.id = ?"))?
        .query_row([ids::to_bytes(id)], record)
        .optional()
}

pub fn insert_hold(c: &Connection, hold: &HoldRecord) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO holds (id, wallet_id, amount, reservations, status, expires_at, debit_id,
            ended_at, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![
        ids::to_bytes(hold.id),
        ids::to_bytes(hold.wallet_id),
        hold.amount.atomic(),
        reservations_json(&hold.reservations),
        hold.status.as_str(),
        micros(hold.expires_at),
        opt_id_bytes(hold.debit_id),
        hold.ended_at.map(micros),
        micros(hold.created_at)
    ])?;
    Ok(())
}

pub fn finish_hold(
    c: &Connection,
    id: u128,
    status: HoldStatus,
    debit_id: Option<u128>,
    ended_at: Instant,
) -> rusqlite::Result<()> {
    let values = finish_hold_values(id, status, debit_id, ended_at);
    execute_write(c, Write::FinishHold, &values)
}

// ---- debits -------------------------------------------------------------------

pub fn debit(c: &Connection, id: u128) -> rusqlite::Result<Option<DebitRecord>> {
    c.prepare_cached(select!(debit, " FROM debits d WHERE d.id = ?"))?
        .query_row([ids::to_bytes(id)], record)
        .optional()
}

pub fn list_debits(
    c: &Connection,
    wallet_id: u128,
    limit: usize,
    starting_after: Option<u128>,
) -> rusqlite::Result<Page<DebitRecord>> {
    let wallet = ids::to_bytes(wallet_id);
    let sql = select!(
        debit,
        " FROM debits d WHERE d.wallet_id = ?1 AND d.id < ?2
         ORDER BY d.id DESC LIMIT ?3"
    );
    page(c, sql, &[&wallet], limit, starting_after)
}

fn insert_debit(c: &Connection, debit: &DebitRecord) -> rusqlite::Result<()> {
    execute_write(c, Write::Debit, &debit_values(debit))
}

// ---- entries ------------------------------------------------------------------

fn insert_entry(c: &Connection, entry: &EntryRecord) -> rusqlite::Result<()> {
    execute_write(c, Write::Entry, &entry_values(entry))
}

/// The wallet's ledger by sequence, `ascending` or newest first, after the
/// entry `starting_after` in that order.
pub fn list_entries(
    c: &Connection,
    wallet_id: u128,
    ascending: bool,
    limit: usize,
    starting_after: Option<u128>,
) -> rusqlite::Result<Page<EntryRecord>> {
    let wallet = ids::to_bytes(wallet_id);
    let cursor: Option<u64> = match starting_after {
        None => None,
        Some(id) => c
            .prepare_cached("SELECT sequence FROM entries WHERE id = ? AND wallet_id = ?")?
            .query_row(params![ids::to_bytes(id), wallet], |row| row.get(0))
            .optional()?,
    };
    let (sql, start) = if ascending {
        let sql = select!(
            entry,
            " FROM entries e WHERE e.wallet_id = ? AND e.sequence > ?
             ORDER BY e.sequence ASC LIMIT ?"
        );
        (sql, cursor.unwrap_or(0) as i64)
    } else {
        let sql = select!(
            entry,
            " FROM entries e WHERE e.wallet_id = ? AND e.sequence < ?
             ORDER BY e.sequence DESC LIMIT ?"
        );
        (sql, cursor.map_or(i64::MAX, |s| s as i64))
    };
    let mut items: Vec<EntryRecord> = c
        .prepare_cached(sql)?
        .query_map(params![wallet, start, limit as i64 + 1], record)?
        .collect::<rusqlite::Result<_>>()?;
    let has_more = items.len() > limit;
    items.truncate(limit);
    Ok(Page { items, has_more })
}

/// The sequence of the wallet's last entry at or before `at` (0 if none).
pub fn last_sequence_at(c: &Connection, wallet_id: u128, at: Instant) -> rusqlite::Result<u64> {
    let wallet = ids::to_bytes(wallet_id);
    let last: Option<u64> = c
        .prepare_cached("SELECT max(sequence) FROM entries WHERE wallet_id = ?")?
        .query_row([wallet], |row| row.get(0))?;
    let mut probe =
        c.prepare_cached("SELECT occurred_at FROM entries WHERE wallet_id = ? AND sequence = ?")?;
    super::last_sequence_at(last.unwrap_or(0), at, |sequence| {
        probe
            .query_row(params![wallet, sequence as i64], |row| row.value(0))
            .optional()?
            .ok_or_else(|| {
                rusqlite::Error::FromSqlConversionFailure(
                    0,
                    rusqlite::types::Type::Blob,
                    "a wallet's entry sequences have a gap".into(),
                )
            })
    })
}

/// The balance after entry `sequence` (0 before the first).
pub fn balance_after(c: &Connection, wallet_id: u128, sequence: u64) -> rusqlite::Result<Amount> {
    let value: Option<i64> = c
        .prepare_cached("SELECT balance_after FROM entries WHERE wallet_id = ? AND sequence = ?")?
        .query_row(params![ids::to_bytes(wallet_id), sequence as i64], |row| {
            row.get(0)
        })
        .optional()?;
    Ok(Amount::from_atomic(value.unwrap_or(0)))
}

/// Each grant's remainder after entry `sequence`, summed from its entries.
pub fn grant_remainders_through(
    c: &Connection,
    wallet_id: u128,
    sequence: u64,
) -> rusqlite::Result<Vec<(u128, Amount)>> {
    c.prepare_cached(
        "SELECT grant_id, sum(amount) FROM entries
         WHERE wallet_id = ? AND sequence <= ? AND grant_id IS NOT NULL
         GROUP BY grant_id ORDER BY grant_id",
    )?
    .query_map(params![ids::to_bytes(wallet_id), sequence as i64], |row| {
        Ok((row.value(0)?, row.value(1)?))
    })?
    .collect()
}

// ---- api keys -----------------------------------------------------------------

pub fn api_keys(c: &Connection) -> rusqlite::Result<Vec<ApiKey>> {
    c.prepare_cached(select!(api_key, " FROM api_keys ORDER BY id DESC"))?
        .query_map([], record)?
        .collect()
}

pub fn list_api_keys(
    c: &Connection,
    limit: usize,
    starting_after: Option<u128>,
) -> rusqlite::Result<Page<ApiKey>> {
    let sql = select!(
        api_key,
        " FROM api_keys WHERE id < ? ORDER BY id DESC LIMIT ?"
    );
    page(c, sql, &[], limit, starting_after)
}

pub fn insert_api_key(c: &Connection, key: &ApiKey) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO api_keys (id, name, scope, secret_hash, created_at) VALUES (?, ?, ?, ?, ?)",
    )?
    .execute(params![
        ids::to_bytes(key.id),
        key.name,
        key.scope.as_str(),
        key.secret_hash.as_slice(),
        micros(key.created_at)
    ])?;
    Ok(())
}

pub fn delete_api_key(c: &Connection, id: u128) -> rusqlite::Result<bool> {
    let deleted = c
        .prepare_cached("DELETE FROM api_keys WHERE id = ?")?
        .execute([ids::to_bytes(id)])?;
    Ok(deleted > 0)
}

// ---- idempotency ----------------------------------------------------------------

pub fn idempotency(c: &Connection, key: &str) -> rusqlite::Result<Option<([u8; 32], Kept)>> {
    Ok(idempotency_many(c, &[key])?
        .pop()
        .map(|kept| (kept.fingerprint, kept.kept)))
}

/// A kept response in its columns: `status` and `body`, or for a debit
/// `debit_id` (with `status` 0 and an empty `body`).
fn kept_columns(kept: &Kept) -> (u16, &str, Option<[u8; 16]>) {
    match kept {
        Kept::Response(response) => (response.status, response.body.as_str(), None),
        Kept::Debit(id) => (0, "", Some(ids::to_bytes(*id))),
    }
}

fn insert_idempotency(c: &Connection, kept: &KeptResponse) -> rusqlite::Result<()> {
    execute_write(c, Write::Key, &key_values(kept))
}

/// The kept responses of those of these keys that have one.
pub fn idempotency_many(c: &Connection, keys: &[&str]) -> rusqlite::Result<Vec<KeptResponse>> {
    let mut statement = c.prepare_cached(select!(kept, " FROM idempotency_keys WHERE key = ?"))?;
    let mut found = Vec::new();
    for key in keys {
        let kept = statement.query_row([key], record).optional()?;
        found.extend(kept);
    }
    Ok(found)
}

/// Inserts the rows a batch gathered. In-process statements cost little
/// each, so this is one prepared statement per row.
pub fn insert_rows(c: &Connection, rows: &NewRows) -> rusqlite::Result<()> {
    for entry in &rows.entries {
        insert_entry(c, entry)?;
    }
    for debit in &rows.debits {
        insert_debit(c, debit)?;
    }
    for kept in &rows.responses {
        insert_idempotency(c, kept)?;
    }
    for event in &rows.events {
        execute_write(c, Write::Event, &event_values(event))?;
    }
    Ok(())
}

pub fn purge_idempotency(c: &Connection, before: Instant) -> rusqlite::Result<usize> {
    c.prepare_cached("DELETE FROM idempotency_keys WHERE created_at < ?")?
        .execute([micros(before)])
}

// ---- paging -------------------------------------------------------------------

/// Runs a list query whose last two placeholders are the id cursor and the
/// limit, fetching one extra row to learn whether more follow.
fn page<T: Record>(
    c: &Connection,
    sql: &str,
    leading: &[&dyn rusqlite::ToSql],
    limit: usize,
    starting_after: Option<u128>,
) -> rusqlite::Result<Page<T>> {
    let cursor = ids::to_bytes(starting_after.unwrap_or(u128::MAX));
    let fetch = limit as i64 + 1;
    let mut all: Vec<&dyn rusqlite::ToSql> = leading.to_vec();
    all.push(&cursor);
    all.push(&fetch);
    let mut items: Vec<T> = c
        .prepare_cached(sql)?
        .query_map(all.as_slice(), record)?
        .collect::<rusqlite::Result<_>>()?;
    let has_more = items.len() > limit;
    items.truncate(limit);
    Ok(Page { items, has_more })
}

// ---- promotional credits --------------------------------------------------------

pub fn promotion(c: &Connection, id: u128) -> rusqlite::Result<Option<PromotionalCredit>> {
    c.prepare_cached(select!(
        promotion,
        " FROM promotional_credits p WHERE p.id = ?"
    ))?
    .query_row([ids::to_bytes(id)], record)
    .optional()
}

/// Campaigns newest first; `status` filters by the window at `now`.
pub fn list_promotions(
    c: &Connection,
    status: Option<credstack_core::promotion::Status>,
    now: Instant,
    limit: usize,
    starting_after: Option<u128>,
) -> rusqlite::Result<Page<PromotionalCredit>> {
    use credstack_core::promotion::Status;
    let condition = match status {
        None => "1",
        Some(Status::Scheduled) => "coalesce(p.starts_at, p.created_at) > ?1",
        Some(Status::Active) => {
            "coalesce(p.starts_at, p.created_at) <= ?1 AND (p.ends_at IS NULL OR p.ends_at > ?1)"
        }
        Some(Status::Ended) => "p.ends_at IS NOT NULL AND p.ends_at <= ?1",
    };
    let sql = format!(
        "SELECT {} FROM promotional_credits p
         WHERE (?1 IS NOT NULL) AND {condition} AND p.id < ?2 ORDER BY p.id DESC LIMIT ?3",
        columns!(promotion)
    );
    page(c, &sql, &[&micros(now)], limit, starting_after)
}

pub fn upsert_promotion(c: &Connection, p: &PromotionalCredit) -> rusqlite::Result<()> {
    execute_write(c, Write::Promotion, &promotion_values(p))
}

/// A campaign's row, its id first.
pub fn promotion_values(p: &PromotionalCredit) -> Vec<Value> {
    vec![
        id_value(p.id),
        Value::Text(p.name.clone()),
        p.description.clone().into(),
        id_value(p.credit_system_id),
        p.starts_at.map(micros).into(),
        p.ends_at.map(micros).into(),
        Value::Integer(p.policy.quantity.atomic()),
        Value::Text(
            p.policy
                .reset_interval
                .map_or("never", |i| i.as_str())
                .to_string(),
        ),
        p.policy.access_period.map(|a| i64::from(a.count)).into(),
        p.policy
            .access_period
            .map(|a| a.interval.as_str().to_string())
            .into(),
        Value::Integer(i64::from(p.policy.allow_multiple_grants)),
        Value::Integer(i64::from(p.applied)),
        Value::Integer(micros(p.created_at)),
    ]
}

pub fn delete_promotion(c: &Connection, id: u128) -> rusqlite::Result<()> {
    c.prepare_cached("DELETE FROM promotional_credits WHERE id = ?")?
        .execute([ids::to_bytes(id)])?;
    Ok(())
}

/// A customer's assignments in a campaign that are active at `now`.
pub fn active_assignments(
    c: &Connection,
    promotion_id: u128,
    customer_id: u128,
    now: Instant,
) -> rusqlite::Result<Vec<Assignment>> {
    c.prepare_cached(select!(
        assignment,
        " FROM promotion_assignments
         WHERE promotional_credit_id = ? AND customer_id = ? AND revoked_at IS NULL
           AND (expires_at IS NULL OR expires_at > ?) ORDER BY id"
    ))?
    .query_map(
        params![
            ids::to_bytes(promotion_id),
            ids::to_bytes(customer_id),
            micros(now)
        ],
        record,
    )?
    .collect()
}

pub fn upsert_assignment(c: &Connection, a: &Assignment) -> rusqlite::Result<()> {
    execute_write(c, Write::Assignment, &assignment_values(a))
}

/// An assignment's row, its id first.
pub fn assignment_values(a: &Assignment) -> Vec<Value> {
    vec![
        id_value(a.id),
        id_value(a.promotional_credit_id),
        id_value(a.customer_id),
        id_value(a.wallet_id),
        id_value(a.grant_id),
        Value::Integer(micros(a.granted_at)),
        a.expires_at.map(micros).into(),
        a.revoked_at.map(micros).into(),
    ]
}

/// Customers with a wallet in `credit_system_id`, by customer id, after `after`.
pub fn customers_with_wallets(
    c: &Connection,
    credit_system_id: u128,
    after: Option<u128>,
    limit: usize,
) -> rusqlite::Result<Vec<u128>> {
    c.prepare_cached(
        "SELECT customer_id FROM wallets WHERE credit_system_id = ? AND customer_id > ?
         ORDER BY customer_id LIMIT ?",
    )?
    .query_map(
        params![
            ids::to_bytes(credit_system_id),
            ids::to_bytes(after.unwrap_or(0)),
            limit as i64
        ],
        |row| row.value(0),
    )?
    .collect()
}

/// Customers with an assignment not yet revoked, by customer id, after `after`.
pub fn customers_with_open_assignments(
    c: &Connection,
    promotion_id: u128,
    after: Option<u128>,
    limit: usize,
) -> rusqlite::Result<Vec<u128>> {
    c.prepare_cached(
        "SELECT DISTINCT customer_id FROM promotion_assignments
         WHERE promotional_credit_id = ? AND revoked_at IS NULL AND customer_id > ?
         ORDER BY customer_id LIMIT ?",
    )?
    .query_map(
        params![
            ids::to_bytes(promotion_id),
            ids::to_bytes(after.unwrap_or(0)),
            limit as i64
        ],
        |row| row.value(0),
    )?
    .collect()
}

/// How many customers are granted (an active assignment) and how many
/// revoked (no active assignment, the latest one revoked), at `now`.
pub fn promotion_counts(
    c: &Connection,
    promotion_id: u128,
    now: Instant,
) -> rusqlite::Result<(u64, u64)> {
    c.prepare_cached(
        "SELECT coalesce(sum(active > 0), 0), coalesce(sum(active = 0 AND latest_revoked), 0) FROM (
            SELECT customer_id,
                   sum(revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?2)) AS active,
                   (SELECT l.revoked_at IS NOT NULL FROM promotion_assignments l
                     WHERE l.promotional_credit_id = ?1 AND l.customer_id = a.customer_id
                     ORDER BY l.id DESC LIMIT 1) AS latest_revoked
            FROM promotion_assignments a WHERE promotional_credit_id = ?1 GROUP BY customer_id)",
    )?
    .query_row(params![ids::to_bytes(promotion_id), micros(now)], |row| Ok((row.get(0)?, row.get(1)?)))
}

/// One row per customer ever granted, newest customer first, filtered by
/// status (`granted`, `revoked`, `expired`) and a case-insensitive search.
pub fn promotion_customers(
    c: &Connection,
    promotion_id: u128,
    status: Option<&str>,
    query: Option<&str>,
    now: Instant,
    limit: usize,
    starting_after: Option<u128>,
) -> rusqlite::Result<Page<PromotionCustomer>> {
    let pattern = query.map(|q| format!("%{}%", codec::like_escape(&q.to_lowercase())));
    let status = status.map(str::to_string);
    let sql = concat!(
        "SELECT * FROM (
            SELECT ",
        columns!(customer_c),
        ",
                   sum(a.revoked_at IS NULL AND (a.expires_at IS NULL OR a.expires_at > ?2)) AS active,
                   max(a.granted_at), max(a.revoked_at),
                   (SELECT l.revoked_at IS NOT NULL FROM promotion_assignments l
                     WHERE l.promotional_credit_id = ?1 AND l.customer_id = c.id
                     ORDER BY l.id DESC LIMIT 1) AS latest_revoked
            FROM promotion_assignments a JOIN customers c ON c.id = a.customer_id
            WHERE a.promotional_credit_id = ?1
              AND (?3 IS NULL OR lower(c.name) LIKE ?3 ESCAPE '\\'
                   OR lower(coalesce(c.email, '')) LIKE ?3 ESCAPE '\\'
                   OR lower(coalesce(c.external_id, '')) LIKE ?3 ESCAPE '\\')
            GROUP BY c.id)
         WHERE (?4 IS NULL OR (?4 = 'granted' AND active > 0)
                OR (?4 = 'revoked' AND active = 0 AND latest_revoked)
                OR (?4 = 'expired' AND active = 0 AND NOT latest_revoked))
           AND id < ?5 ORDER BY id DESC LIMIT ?6"
    );
    page(
        c,
        sql,
        &[
            &ids::to_bytes(promotion_id),
            &micros(now),
            &pattern,
            &status,
        ],
        limit,
        starting_after,
    )
}

// ---- console sessions -------------------------------------------------------------

pub fn insert_session(c: &Connection, session: &ConsoleSession) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO console_sessions (token_hash, csrf_token, api_key_id, created_at, expires_at)
         VALUES (?, ?, ?, ?, ?)",
    )?
    .execute(params![
        session.token_hash.as_slice(),
        session.csrf_token,
        ids::to_bytes(session.api_key_id),
        micros(session.created_at),
        micros(session.expires_at)
    ])?;
    Ok(())
}

/// The session with this token hash, if it has not expired by `now`.
pub fn session(
    c: &Connection,
    token_hash: &[u8; 32],
    now: Instant,
) -> rusqlite::Result<Option<ConsoleSession>> {
    c.prepare_cached(select!(
        session,
        " FROM console_sessions WHERE token_hash = ? AND expires_at > ?"
    ))?
    .query_row(params![token_hash.as_slice(), micros(now)], record)
    .optional()
}

pub fn delete_session(c: &Connection, token_hash: &[u8; 32]) -> rusqlite::Result<()> {
    c.prepare_cached("DELETE FROM console_sessions WHERE token_hash = ?")?
        .execute([token_hash.as_slice()])?;
    Ok(())
}

pub fn purge_sessions(c: &Connection, expired_by: Instant) -> rusqlite::Result<usize> {
    c.prepare_cached("DELETE FROM console_sessions WHERE expires_at <= ?")?
        .execute([micros(expired_by)])
}

/// How many wallets a credit system has: the customers an all-customers
/// grant will consider.
/// The wallets in this credit system (through its index), or in all of them.
pub fn count_wallets(c: &Connection, credit_system_id: Option<u128>) -> rusqlite::Result<u64> {
    match credit_system_id {
        Some(id) => c
            .prepare_cached("SELECT count(*) FROM wallets WHERE credit_system_id = ?")?
            .query_row([ids::to_bytes(id)], |row| row.get(0)),
        None => c
            .prepare_cached("SELECT count(*) FROM wallets")?
            .query_row([], |row| row.get(0)),
    }
}

/// Whether any customer was ever granted this campaign.
pub fn promotion_has_customers(c: &Connection, promotion_id: u128) -> rusqlite::Result<bool> {
    c.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM promotion_assignments WHERE promotional_credit_id = ?)",
    )?
    .query_row([ids::to_bytes(promotion_id)], |row| row.get(0))
}

// ---- console: the wallet chart ----------------------------------------------------

/// The last `limit` (at most [`CHART_ENTRIES_MAX`]) entries of a wallet,
/// oldest first, each with its grant's purpose, and what each purpose and
/// the debt stand at now. `None` if the wallet does not exist.
pub fn entries_with_purpose(
    c: &Connection,
    wallet_id: u128,
    limit: usize,
) -> rusqlite::Result<Option<PurposeLedger>> {
    let limit = limit.min(CHART_ENTRIES_MAX);
    let key = ids::to_bytes(wallet_id);
    // One snapshot for the debt and the entries: the caller's transaction,
    // or a read transaction of our own (ended, unchanged, when dropped).
    let own = if c.is_autocommit() {
        Some(c.unchecked_transaction()?)
    } else {
        None
    };
    let snapshot = c;
    let debt: Option<i64> = snapshot
        .prepare_cached("SELECT debt FROM wallets WHERE id = ?")?
        .query_row([key], |row| row.get(0))
        .optional()?;
    let Some(debt) = debt else {
        return Ok(None);
    };
    let mut entries: Vec<(EntryRecord, Option<Purpose>)> = snapshot
        .prepare_cached(select!(
            entry,
            ", g.purpose FROM entries e LEFT JOIN grants g ON g.id = e.grant_id
             WHERE e.wallet_id = ? ORDER BY e.sequence DESC LIMIT ?"
        ))?
        .query_map(params![key, limit as i64], |row| {
            let purpose: Option<&str> = row.value(11)?;
            Ok((EntryRecord::read(row)?, purpose.and_then(Purpose::parse)))
        })?
        .collect::<rusqlite::Result<_>>()?;
    entries.reverse();
    let totals: Vec<(String, i64)> = snapshot
        .prepare_cached(
            "SELECT purpose, coalesce(sum(remaining), 0) FROM grants WHERE wallet_id = ?
             GROUP BY purpose",
        )?
        .query_map([key], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    if let Some(own) = own {
        own.finish()?;
    }
    Ok(Some(PurposeLedger::new(entries, debt, totals)))
}

/// Whether `entry_id` is an entry of `wallet_id` (a valid entries cursor).
pub fn entry_in_wallet(c: &Connection, wallet_id: u128, entry_id: u128) -> rusqlite::Result<bool> {
    c.prepare_cached("SELECT EXISTS (SELECT 1 FROM entries WHERE id = ? AND wallet_id = ?)")?
        .query_row(
            params![ids::to_bytes(entry_id), ids::to_bytes(wallet_id)],
            |row| row.get(0),
        )
}

// ---- calls to all customers ---------------------------------------------------

/// The campaign row; the write lock `begin` took covers it.
pub fn lock_promotion(c: &Connection, id: u128) -> rusqlite::Result<Option<PromotionalCredit>> {
    promotion(c, id)
}

pub fn bulk_run(c: &Connection, promotion_id: u128) -> rusqlite::Result<Option<BulkRun>> {
    c.prepare_cached(select!(
        bulk_run,
        " FROM bulk_runs WHERE promotional_credit_id = ?"
    ))?
    .query_row([ids::to_bytes(promotion_id)], record)
    .optional()
}

pub fn upsert_bulk_run(c: &Connection, run: &BulkRun) -> rusqlite::Result<()> {
    execute_write(c, Write::BulkRun, &bulk_run_values(run))
}

/// A call to all customers' row, its campaign's id first.
pub fn bulk_run_values(run: &BulkRun) -> Vec<Value> {
    vec![
        id_value(run.promotional_credit_id),
        id_value(run.run_id),
        Value::Text(run.action.clone()),
        run.idempotency_key.clone().into(),
        run.fingerprint.map(|f| f.to_vec()).into(),
        opt_id_value(run.cursor),
        Value::Text(run.progress.clone()),
        Value::Integer(micros(run.lease_until)),
        run.total.map(|t| t as i64).into(),
        run.finished_at.map(micros).into(),
        run.error.clone().into(),
    ]
}

pub fn delete_bulk_run(c: &Connection, promotion_id: u128) -> rusqlite::Result<()> {
    c.prepare_cached("DELETE FROM bulk_runs WHERE promotional_credit_id = ?")?
        .execute([ids::to_bytes(promotion_id)])?;
    Ok(())
}

pub fn save_bulk_resume(c: &Connection, resume: &BulkResume) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT OR REPLACE INTO bulk_run_resumes (promotional_credit_id, idempotency_key,
            fingerprint, action, cursor, progress, saved_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![
        ids::to_bytes(resume.promotional_credit_id),
        resume.idempotency_key,
        resume.fingerprint,
        resume.action,
        opt_id_bytes(resume.cursor),
        resume.progress,
        micros(resume.saved_at),
    ])?;
    Ok(())
}

/// The saved place of this campaign's keyed call, removed as it is read.
pub fn take_bulk_resume(
    c: &Connection,
    promotion_id: u128,
    key: &str,
) -> rusqlite::Result<Option<BulkResume>> {
    let resume = c
        .prepare_cached(select!(
            bulk_resume,
            " FROM bulk_run_resumes WHERE promotional_credit_id = ? AND idempotency_key = ?"
        ))?
        .query_row(params![ids::to_bytes(promotion_id), key], record)
        .optional()?;
    if resume.is_some() {
        c.prepare_cached(
            "DELETE FROM bulk_run_resumes WHERE promotional_credit_id = ? AND idempotency_key = ?",
        )?
        .execute(params![ids::to_bytes(promotion_id), key])?;
    }
    Ok(resume)
}

/// Drops saved places older than `before` and, with `promotion_id`, all of
/// that campaign's.
pub fn purge_bulk_resumes(
    c: &Connection,
    before: Instant,
    promotion_id: Option<u128>,
) -> rusqlite::Result<usize> {
    c.prepare_cached(
        "DELETE FROM bulk_run_resumes WHERE saved_at < ? OR promotional_credit_id = ?",
    )?
    .execute(params![micros(before), opt_id_bytes(promotion_id)])
}

// ---- events and webhooks ----------------------------------------------------------

/// The sequence of the wallet's last event, 0 before its first.
pub fn last_event_sequence(c: &Connection, wallet_id: u128) -> rusqlite::Result<u64> {
    c.prepare_cached("SELECT coalesce(max(sequence), 0) FROM events WHERE wallet_id = ?")?
        .query_row([ids::to_bytes(wallet_id)], |row| row.get(0))
}

pub fn event(c: &Connection, id: u128) -> rusqlite::Result<Option<EventRecord>> {
    c.prepare_cached(select!(event, " FROM events ev WHERE ev.id = ?"))?
        .query_row([ids::to_bytes(id)], record)
        .optional()
}

/// Events newest first, of one wallet or all.
pub fn list_events(
    c: &Connection,
    wallet_id: Option<u128>,
    limit: usize,
    starting_after: Option<u128>,
) -> rusqlite::Result<Page<EventRecord>> {
    // One statement each, so each has its index: (wallet_id, id) for one
    // wallet's, the primary key for all.
    match wallet_id {
        Some(wallet) => {
            let sql = select!(
                event,
                " FROM events ev
                 WHERE ev.wallet_id = ?1 AND ev.id < ?2 ORDER BY ev.id DESC LIMIT ?3"
            );
            let wallet = ids::to_bytes(wallet);
            page(c, sql, &[&wallet], limit, starting_after)
        }
        None => {
            let sql = select!(
                event,
                " FROM events ev WHERE ev.id < ?1 ORDER BY ev.id DESC LIMIT ?2"
            );
            page(c, sql, &[], limit, starting_after)
        }
    }
}

/// The oldest events not yet fanned out to the endpoints.
pub fn undispatched_events(c: &Connection, limit: usize) -> rusqlite::Result<Vec<EventRecord>> {
    c.prepare_cached(select!(
        event,
        " FROM events ev WHERE ev.dispatched = 0 ORDER BY ev.id LIMIT ?"
    ))?
    .query_map([limit as i64], record)?
    .collect()
}

pub fn mark_dispatched(c: &Connection, event_ids: &[u128]) -> rusqlite::Result<()> {
    let mut statement = c.prepare_cached("UPDATE events SET dispatched = 1 WHERE id = ?")?;
    for id in event_ids {
        statement.execute([ids::to_bytes(*id)])?;
    }
    Ok(())
}

/// Gives `now` to pending deliveries waiting with no time and nothing
/// pending ahead of them; how many.
pub fn release_waiting_deliveries(c: &Connection, now: Instant) -> rusqlite::Result<u64> {
    let released = c
        .prepare_cached(
            "UPDATE webhook_deliveries SET next_attempt_at = ?1
             WHERE status = 'pending' AND next_attempt_at IS NULL
               AND NOT EXISTS (SELECT 1 FROM webhook_deliveries p
                   WHERE p.endpoint_id = webhook_deliveries.endpoint_id
                     AND p.wallet_id = webhook_deliveries.wallet_id
                     AND p.status = 'pending' AND p.sequence < webhook_deliveries.sequence)",
        )?
        .execute([micros(now)])?;
    Ok(released as u64)
}

/// Whether a delivery to an enabled endpoint is due by `now`.
pub fn deliveries_due(c: &Connection, now: Instant) -> rusqlite::Result<bool> {
    c.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM webhook_deliveries d
            JOIN webhook_endpoints w ON w.id = d.endpoint_id
            WHERE d.status = 'pending' AND d.next_attempt_at <= ? AND w.enabled = 1)",
    )?
    .query_row([micros(now)], |row| row.get(0))
}

/// How many events wait to be fanned out, and how many deliveries are pending.
pub fn outbox_backlog(c: &Connection) -> rusqlite::Result<(u64, u64)> {
    c.prepare_cached(
        "SELECT (SELECT count(*) FROM events WHERE dispatched = 0),
                (SELECT count(*) FROM webhook_deliveries WHERE status = 'pending')",
    )?
    .query_row([], |row| Ok((row.get(0)?, row.get(1)?)))
}

pub fn webhook_endpoint(c: &Connection, id: u128) -> rusqlite::Result<Option<WebhookEndpoint>> {
    c.prepare_cached(select!(endpoint, " FROM webhook_endpoints WHERE id = ?"))?
        .query_row([ids::to_bytes(id)], record)
        .optional()
}

/// Every endpoint, enabled or not (there are few).
pub fn webhook_endpoints(c: &Connection) -> rusqlite::Result<Vec<WebhookEndpoint>> {
    c.prepare_cached(select!(endpoint, " FROM webhook_endpoints ORDER BY id"))?
        .query_map([], record)?
        .collect()
}

pub fn list_webhook_endpoints(
    c: &Connection,
    limit: usize,
    starting_after: Option<u128>,
) -> rusqlite::Result<Page<WebhookEndpoint>> {
    let sql = select!(
        endpoint,
        " FROM webhook_endpoints WHERE id < ? ORDER BY id DESC LIMIT ?"
    );
    page(c, sql, &[], limit, starting_after)
}

pub fn upsert_webhook_endpoint(c: &Connection, endpoint: &WebhookEndpoint) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO webhook_endpoints (id, url, description, event_types, secret, enabled,
            created_at) VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (id) DO UPDATE SET url = excluded.url, description = excluded.description,
            event_types = excluded.event_types, enabled = excluded.enabled",
    )?
    .execute(params![
        ids::to_bytes(endpoint.id),
        endpoint.url,
        endpoint.description,
        codec::strings_to_text(&endpoint.event_types),
        endpoint.secret,
        endpoint.enabled,
        micros(endpoint.created_at)
    ])?;
    Ok(())
}

/// Deletes an endpoint with its deliveries and their attempts.
pub fn delete_webhook_endpoint(c: &Connection, id: u128) -> rusqlite::Result<bool> {
    let key = ids::to_bytes(id);
    c.prepare_cached(
        "DELETE FROM webhook_attempts WHERE delivery_id IN
            (SELECT id FROM webhook_deliveries WHERE endpoint_id = ?)",
    )?
    .execute([key])?;
    c.prepare_cached("DELETE FROM webhook_deliveries WHERE endpoint_id = ?")?
        .execute([key])?;
    let deleted = c
        .prepare_cached("DELETE FROM webhook_endpoints WHERE id = ?")?
        .execute([key])?;
    Ok(deleted > 0)
}

pub fn insert_deliveries(c: &Connection, deliveries: &[Delivery]) -> rusqlite::Result<()> {
    let mut statement = c.prepare_cached(
        "INSERT INTO webhook_deliveries (id, endpoint_id, event_id, type, wallet_id, sequence,
            status, attempts, next_attempt_at, retry_from, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8,
            CASE WHEN EXISTS (SELECT 1 FROM webhook_deliveries p
                WHERE p.endpoint_id = ?2 AND p.wallet_id = ?5 AND p.status = 'pending'
                  AND p.sequence < ?6) THEN NULL ELSE ?9 END,
            ?10, ?11)",
    )?;
    for d in deliveries {
        statement.execute(params![
            ids::to_bytes(d.id),
            ids::to_bytes(d.endpoint_id),
            ids::to_bytes(d.event_id),
            d.event_type.as_str(),
            ids::to_bytes(d.wallet_id),
            i64::try_from(d.sequence).expect("fewer than 2^63 events"),
            d.status.as_str(),
            d.attempts,
            d.next_attempt_at.map(micros),
            micros(d.retry_from),
            micros(d.created_at)
        ])?;
    }
    Ok(())
}

/// Claims up to `limit` deliveries due by `now` to enabled endpoints, each
/// the first pending one of its wallet for its endpoint (so a wallet's
/// events arrive in order): counts the attempt and moves its next attempt
/// to `lease_until`, so nobody else sends it meanwhile.
pub fn claim_deliveries(
    c: &Connection,
    now: Instant,
    lease_until: Instant,
    limit: usize,
) -> rusqlite::Result<Vec<DeliveryJob>> {
    let jobs: Vec<DeliveryJob> = c
        .prepare_cached(select!(
            delivery_job,
            " FROM webhook_deliveries d
             JOIN webhook_endpoints w ON w.id = d.endpoint_id
             JOIN events ev ON ev.id = d.event_id
             WHERE d.status = 'pending' AND d.next_attempt_at <= ?1 AND w.enabled = 1
               AND NOT EXISTS (SELECT 1 FROM webhook_deliveries p
                   WHERE p.endpoint_id = d.endpoint_id AND p.wallet_id = d.wallet_id
                     AND p.status = 'pending' AND p.sequence < d.sequence)
               AND NOT EXISTS (SELECT 1 FROM events e
                   WHERE e.wallet_id = d.wallet_id AND e.dispatched = 0
                     AND e.sequence < d.sequence)
             ORDER BY d.next_attempt_at, d.id LIMIT ?2"
        ))?
        .query_map(params![micros(now), limit as i64], record)?
        .collect::<rusqlite::Result<_>>()?;
    let mut claim = c.prepare_cached(
        "UPDATE webhook_deliveries SET attempts = attempts + 1, next_attempt_at = ?,
            last_attempt_at = ? WHERE id = ?",
    )?;
    let mut claimed = Vec::with_capacity(jobs.len());
    for mut job in jobs {
        claim.execute(params![
            micros(lease_until),
            micros(now),
            ids::to_bytes(job.delivery.id)
        ])?;
        job.delivery.attempts += 1;
        job.delivery.next_attempt_at = Some(lease_until);
        job.delivery.last_attempt_at = Some(now);
        claimed.push(job);
    }
    Ok(claimed)
}

/// Records an attempt and what follows it, if the delivery is still the
/// one that attempt claimed (pending, with that many attempts); false if not.
pub fn finish_attempt(
    c: &Connection,
    attempt: &Attempt,
    end: &AttemptEnd,
) -> rusqlite::Result<bool> {
    let (status, next) = match end {
        AttemptEnd::Succeeded => (DeliveryStatus::Succeeded, None),
        AttemptEnd::Retry(at) => (DeliveryStatus::Pending, Some(micros(*at))),
        AttemptEnd::GiveUp => (DeliveryStatus::Failed, None),
    };
    let key = ids::to_bytes(attempt.delivery_id);
    let updated = c
        .prepare_cached(
            "UPDATE webhook_deliveries SET status = ?, next_attempt_at = ?, last_status_code = ?,
                last_error = ? WHERE id = ? AND attempts = ? AND status = 'pending'",
        )?
        .execute(params![
            status.as_str(),
            next,
            attempt.status_code,
            attempt.error,
            key,
            attempt.number
        ])?;
    if updated == 0 {
        return Ok(false);
    }
    if !matches!(end, AttemptEnd::Retry(_)) {
        // The next of its wallet's deliveries to this endpoint may go now.
        c.prepare_cached(
            "UPDATE webhook_deliveries SET next_attempt_at = ?1
             WHERE id = (SELECT f.id FROM webhook_deliveries f, webhook_deliveries d
                 WHERE d.id = ?2 AND f.endpoint_id = d.endpoint_id
                   AND f.wallet_id = d.wallet_id AND f.status = 'pending'
                   AND f.sequence > d.sequence
                 ORDER BY f.sequence LIMIT 1)
               AND (next_attempt_at IS NULL OR next_attempt_at > ?1)",
        )?
        .execute(params![micros(attempt.at), key])?;
    }
    c.prepare_cached(
        "INSERT OR REPLACE INTO webhook_attempts (delivery_id, number, at, status_code, error,
            duration_ms) VALUES (?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![
        key,
        attempt.number,
        micros(attempt.at),
        attempt.status_code,
        attempt.error,
        attempt.duration_ms
    ])?;
    Ok(true)
}

pub fn delivery(c: &Connection, id: u128) -> rusqlite::Result<Option<Delivery>> {
    c.prepare_cached(select!(
        delivery,
        " FROM webhook_deliveries d WHERE d.id = ?"
    ))?
    .query_row([ids::to_bytes(id)], record)
    .optional()
}

/// An endpoint's deliveries newest first, of one status or all.
pub fn list_deliveries(
    c: &Connection,
    endpoint_id: u128,
    status: Option<DeliveryStatus>,
    limit: usize,
    starting_after: Option<u128>,
) -> rusqlite::Result<Page<Delivery>> {
    let endpoint = ids::to_bytes(endpoint_id);
    let status = status.map(DeliveryStatus::as_str);
    let sql = select!(
        delivery,
        " FROM webhook_deliveries d
         WHERE d.endpoint_id = ?1 AND (?2 IS NULL OR d.status = ?2) AND d.id < ?3
         ORDER BY d.id DESC LIMIT ?4"
    );
    page(c, sql, &[&endpoint, &status], limit, starting_after)
}

pub fn delivery_attempts(c: &Connection, delivery_id: u128) -> rusqlite::Result<Vec<Attempt>> {
    c.prepare_cached(select!(
        attempt,
        " FROM webhook_attempts WHERE delivery_id = ? ORDER BY number"
    ))?
    .query_map([ids::to_bytes(delivery_id)], record)?
    .collect()
}

/// Sends a finished delivery again: pending from `now`, with a new retry
/// window. False when it is not finished (pending: its attempts go on).
pub fn redeliver(c: &Connection, id: u128, now: Instant) -> rusqlite::Result<bool> {
    let updated = c
        .prepare_cached(
            "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = ?1,
                retry_from = ?1, attempts_before_retry = attempts
             WHERE id = ?2 AND status <> 'pending'",
        )?
        .execute(params![micros(now), ids::to_bytes(id)])?;
    Ok(updated > 0)
}
