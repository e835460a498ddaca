//! The embedded store's journal: the durable record of debit batches, merged
//! into the indexed tables behind the writer (issue 6).
//!
//! A debit batch on SQLite used to update its rows in place: each debit on a
//! different wallet dirtied about four random B-tree pages (its entries, its
//! debit's index, its key, the wallet and grant rows), each written whole to
//! the WAL and again by the checkpoint, ~32 KB per debit. Now a batch made
//! only of debits (and `Materialise` requests, which write the same kinds of
//! row) is one row of `journal.db` (`batches`: the batch number and
//! the statements it would have run, with their values), appended and
//! committed (`synchronous = FULL`) before any caller hears back. A merger
//! thread then runs those statements against `credstack.db` many batches at a
//! time, in one transaction, sorted by key and with each wallet's and grant's
//! state written once (its last), so a dirty page carries many debits. The
//! batch number merged through is kept in `credstack.db` in the same
//! transaction (`journal_merged`), so a crash anywhere merges each batch
//! exactly once: at open, every journalled batch past it is merged before
//! anything is served.
//!
//! Who sees what:
//! - The writer keeps every wallet it journalled in memory until its batch is
//!   merged, and an index of what unmerged batches wrote that it reads back
//!   (`engine::journaled`), so it never reads a stale row.
//! - Readers never wait for the merger: each committed batch is published to
//!   the tail (`store::tail`) before its callers hear back, and a read lays
//!   the batches its snapshot lacks over the store.
//! - Any other write (a grant, a hold, a customer…) first waits for the
//!   journal to be merged ([`Progress::drain`]), then runs on `credstack.db`
//!   directly as before.
//! - A backup takes a snapshot of the journal and merges what the copy of the
//!   store lacks into the copy ([`snapshot`], `backup.rs`).

use super::sqlite::{self, Write};
use crate::records::Change;
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// The journal's format, kept as its `user_version`: a journal in a later
/// format is not merged (the release that wrote it merges it at open).
/// Format 2 added campaign grants' statements to format 1's; format 3 keeps
/// with each batch the store's schema version it was written against
/// (`batches.schema`). An earlier journal is read as it is and marked 3.
const FORMAT: i64 = 3;

/// The schema version a batch of format 1 or 2 was written against: the
/// last one a release writing those formats had.
const SCHEMA_OF_FORMAT_2: i64 = 14;

/// The most batches one merge transaction takes.
const MERGE_BATCHES_MAX: i64 = 512;

pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("journal.db")
}

/// Opens (creating) the journal beside the store.
pub fn open(path: &Path) -> Result<Connection, String> {
    let cannot = |e: rusqlite::Error| format!("cannot open {}: {e}", path.display());
    let connection = Connection::open(path).map_err(cannot)?;
    sqlite::configure(&connection).map_err(cannot)?;
    let format: i64 = connection
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(cannot)?;
    match format {
        0 => connection
            .execute_batch(&format!(
                "CREATE TABLE IF NOT EXISTS batches (batch INTEGER PRIMARY KEY,
                    body BLOB NOT NULL, schema INTEGER);
                 PRAGMA user_version = {FORMAT};"
            ))
            .map_err(cannot)?,
        1 | 2 => connection
            .execute_batch(&format!(
                "ALTER TABLE batches ADD COLUMN schema INTEGER;
                 PRAGMA user_version = {FORMAT};"
            ))
            .map_err(cannot)?,
        FORMAT => {}
        other => {
            return Err(format!(
                "{} is in format {other}, this release reads format {FORMAT}: \
                 open the store once with the release that wrote it",
                path.display()
            ));
        }
    }
    Ok(connection)
}

/// A read snapshot of the journal at `path` (none if there is no journal):
/// a connection in a read transaction that has already read, so it sees the
/// batches committed by now however the writer appends and deletes after.
/// Never writes the journal, so it can be taken beside a running server.
pub fn snapshot(path: &Path) -> Result<Option<Connection>, String> {
    if !path.is_file() {
        return Ok(None);
    }
    let cannot = |e: rusqlite::Error| format!("cannot read {}: {e}", path.display());
    let connection = Connection::open(path).map_err(cannot)?;
    connection
        .busy_timeout(Duration::from_secs(5))
        .map_err(cannot)?;
    let format: i64 = connection
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(cannot)?;
    if !matches!(format, 0..=FORMAT) {
        return Err(format!(
            "{} is in format {format}, this release reads format {FORMAT}",
            path.display()
        ));
    }
    connection.execute_batch("BEGIN").map_err(cannot)?;
    // An empty file (no table yet) holds no batch.
    let tables: i64 = connection
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'batches'",
            [],
            |r| r.get(0),
        )
        .map_err(cannot)?;
    Ok((tables == 1).then_some(connection))
}

/// A value as the journal encodes it (SQLite's storage classes, without
/// floats: credstack stores none).
#[derive(Serialize)]
enum CellRef<'a> {
    Null,
    Int(i64),
    Text(&'a str),
    Blob(&'a [u8]),
}

#[derive(Deserialize)]
enum Cell {
    Null,
    Int(i64),
    Text(String),
    Blob(Vec<u8>),
}

impl From<Cell> for Value {
    fn from(cell: Cell) -> Value {
        match cell {
            Cell::Null => Value::Null,
            Cell::Int(i) => Value::Integer(i),
            Cell::Text(t) => Value::Text(t),
            Cell::Blob(b) => Value::Blob(b),
        }
    }
}

/// One batch's records, encoded one after another. A record is a typed
/// [`Change`], encoded as the statement `sqlite.rs` runs for it when it
/// writes the change directly (`Write` and the row's values, from the same
/// functions), so a merged batch writes exactly what a direct one would;
/// the values' order is the schema's, and each batch keeps the schema
/// version it was written against.
#[derive(Default)]
pub struct Body {
    bytes: Vec<u8>,
    statements: usize,
}

impl Body {
    /// Appends a change's statements.
    pub fn push_change(&mut self, change: &Change) {
        match change {
            Change::Entry(entry) => self.push(Write::Entry, &sqlite::entry_values(entry)),
            Change::Debit(debit) => self.push(Write::Debit, &sqlite::debit_values(debit)),
            Change::Key(kept) => self.push(Write::Key, &sqlite::key_values(kept)),
            Change::Event(event) => self.push(Write::Event, &sqlite::event_values(event)),
            Change::WalletState(info, wallet, grants) => {
                self.push(
                    Write::WalletState,
                    &sqlite::wallet_state_values(info.id, wallet, 1),
                );
                for grant in grants {
                    self.push(Write::GrantState, &sqlite::grant_state_values(grant));
                }
            }
            Change::GrantState(grant) => {
                self.push(Write::GrantState, &sqlite::grant_state_values(grant))
            }
            Change::HoldFinished {
                id,
                status,
                debit_id,
                at,
            } => self.push(
                Write::FinishHold,
                &sqlite::finish_hold_values(*id, *status, *debit_id, *at),
            ),
            Change::Grant(record) => self.push(Write::Grant, &sqlite::grant_values(record)),
            Change::Assignment(assignment) => {
                self.push(Write::Assignment, &sqlite::assignment_values(assignment))
            }
            Change::Promotion(promotion) => {
                self.push(Write::Promotion, &sqlite::promotion_values(promotion))
            }
            Change::BulkRun(run) => self.push(Write::BulkRun, &sqlite::bulk_run_values(run)),
        }
    }

    fn push(&mut self, write: Write, values: &[Value]) {
        let cells: Vec<CellRef> = values
            .iter()
            .map(|value| match value {
                Value::Null => CellRef::Null,
                Value::Integer(i) => CellRef::Int(*i),
                Value::Text(t) => CellRef::Text(t),
                Value::Blob(b) => CellRef::Blob(b),
                Value::Real(_) => unreachable!("credstack stores no floating point values"),
            })
            .collect();
        postcard::to_io(&(write, cells), &mut self.bytes).expect("writing to a Vec cannot fail");
        self.statements += 1;
    }

    /// The batch as it is written in the journal.
    pub fn encoded(&self) -> &[u8] {
        &self.bytes
    }

    /// How many statements the batch holds.
    pub fn statements(&self) -> usize {
        self.statements
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
        self.statements = 0;
    }
}

fn decode(mut bytes: &[u8]) -> Result<Vec<(Write, Vec<Value>)>, String> {
    let mut writes = Vec::new();
    while !bytes.is_empty() {
        let ((write, cells), rest): ((Write, Vec<Cell>), &[u8]) = postcard::take_from_bytes(bytes)
            .map_err(|e| format!("a journal batch is damaged: {e}"))?;
        writes.push((write, cells.into_iter().map(Value::from).collect()));
        bytes = rest;
    }
    Ok(writes)
}

/// The writer's side: appends batches.
pub struct Journal {
    connection: Connection,
    /// The number the next batch gets.
    next: u64,
    /// Batches at or below this are merged and deleted.
    deleted_through: u64,
}

impl Journal {
    /// After [`merge_all`]: every batch in it is merged.
    pub fn open(path: &Path, merged: u64) -> Result<Journal, String> {
        let connection = open(path)?;
        let last: Option<i64> = connection
            .query_row("SELECT max(batch) FROM batches", [], |r| r.get(0))
            .optional()
            .map_err(|e| e.to_string())?
            .flatten();
        let last = last.map_or(0, |b| b as u64).max(merged);
        Ok(Journal {
            connection,
            next: last + 1,
            deleted_through: 0,
        })
    }

    /// The number the batch being built will have.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// Appends `body` as the next batch and commits it durably, deleting
    /// the batches merged through `merged` in the same transaction. The
    /// batch's number is used up even when this fails: the commit may
    /// have reached the disk, and the merger merges whatever is there.
    pub fn append(&mut self, body: &Body, merged: u64) -> rusqlite::Result<u64> {
        let batch = self.next;
        self.next += 1;
        let c = &self.connection;
        c.execute_batch("BEGIN IMMEDIATE")?;
        let written = (|| {
            c.prepare_cached("INSERT INTO batches (batch, body, schema) VALUES (?, ?, ?)")?
                .execute(rusqlite::params![
                    batch as i64,
                    body.bytes,
                    sqlite::SCHEMA_VERSION as i64
                ])?;
            if merged > self.deleted_through {
                c.prepare_cached("DELETE FROM batches WHERE batch <= ?")?
                    .execute([merged as i64])?;
            }
            c.execute_batch("COMMIT")
        })();
        if written.is_err() {
            let _ = c.execute_batch("ROLLBACK");
        } else {
            self.deleted_through = self.deleted_through.max(merged);
        }
        written.map(|()| batch)
    }
}

/// Whether the journal holds any batch (merged or not).
pub fn holds_batches(journal: &Connection) -> rusqlite::Result<bool> {
    journal.query_row("SELECT EXISTS (SELECT 1 FROM batches)", [], |r| r.get(0))
}

/// The batch the store is merged through.
pub fn merged_mark(main: &Connection) -> rusqlite::Result<u64> {
    let mark: i64 = main.query_row("SELECT batch FROM journal_merged", [], |r| r.get(0))?;
    Ok(mark as u64)
}

/// Merges every journalled batch past `journal_merged` into the store, in
/// transactions of up to [`MERGE_BATCHES_MAX`] batches; `merged` hears of
/// each. Returns the batch merged through. Safe beside another merger:
/// each transaction reads the mark under the write lock.
pub fn merge_all(
    main: &Connection,
    journal: &Connection,
    mut merged: impl FnMut(u64),
) -> Result<u64, String> {
    loop {
        let (through, more) = merge_some(main, journal).map_err(|e| e.to_string())??;
        merged(through);
        if !more {
            return Ok(through);
        }
    }
}

type Merge = Result<(u64, bool), String>;

fn merge_some(main: &Connection, journal: &Connection) -> rusqlite::Result<Merge> {
    main.execute_batch("BEGIN IMMEDIATE")?;
    let merged = (|| {
        let from: i64 = main.query_row("SELECT batch FROM journal_merged", [], |r| r.get(0))?;
        let store_schema: i64 = main.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let batches: Vec<(i64, Vec<u8>, Option<i64>)> = journal
            .prepare_cached(
                "SELECT batch, body, schema FROM batches WHERE batch > ? ORDER BY batch LIMIT ?",
            )?
            .query_map([from, MERGE_BATCHES_MAX], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let Some(&(through, _, _)) = batches.last() else {
            return Ok(Ok((from as u64, false)));
        };
        let more = batches.len() as i64 == MERGE_BATCHES_MAX;
        // A batch's values are in its schema's order: merged only into a
        // store at that schema (the release that wrote it merges it).
        if let Some((batch, _, schema)) = batches
            .iter()
            .find(|(_, _, schema)| schema.unwrap_or(SCHEMA_OF_FORMAT_2) != store_schema)
        {
            return Ok(Err(format!(
                "journal batch {batch} was written against schema version {}, and the store \
                 is at {store_schema}: open the store once with the release that wrote it, \
                 which merges it",
                schema.unwrap_or(SCHEMA_OF_FORMAT_2)
            )));
        }
        let mut writes = Vec::new();
        for (_, body, _) in &batches {
            match decode(body) {
                Ok(decoded) => writes.extend(decoded),
                Err(error) => return Ok(Err(error)),
            }
        }
        for (write, values) in sorted(writes) {
            sqlite::execute_write(main, write, &values)?;
        }
        main.execute("UPDATE journal_merged SET batch = ?", [through])?;
        Ok(Ok((through as u64, more)))
    })();
    match merged {
        Ok(Ok(done)) => {
            main.execute_batch("COMMIT")?;
            Ok(Ok(done))
        }
        other => {
            let _ = main.execute_batch("ROLLBACK");
            other
        }
    }
}

/// The batches' statements in the order that touches the fewest pages:
/// inserts sorted by key, and each wallet's and grant's state once, its
/// last, with the wallet's version moved by as many states as it had.
fn sorted(writes: Vec<(Write, Vec<Value>)>) -> Vec<(Write, Vec<Value>)> {
    use std::collections::HashMap;
    let mut inserts: Vec<(Write, Vec<Value>)> = Vec::with_capacity(writes.len());
    let mut wallets: HashMap<Vec<u8>, (Vec<Value>, i64)> = HashMap::new();
    let mut grants: HashMap<Vec<u8>, Vec<Value>> = HashMap::new();
    for (write, values) in writes {
        let Value::Blob(id) = &values[0] else {
            inserts.push((write, values));
            continue;
        };
        match write {
            Write::WalletState => {
                let id = id.clone();
                let versions = match &values[6] {
                    Value::Integer(n) => *n,
                    _ => 1,
                };
                wallets
                    .entry(id)
                    .and_modify(|(last, count)| {
                        *last = values.clone();
                        *count += versions;
                    })
                    .or_insert((values, versions));
            }
            Write::GrantState => {
                grants.insert(id.clone(), values);
            }
            _ => inserts.push((write, values)),
        }
    }
    // Stable: an upsert of one row (a campaign, a run) keeps its order, so
    // the last one written is the one that stays.
    inserts.sort_by(|(a, x), (b, y)| {
        let upsert = matches!(a, Write::Promotion | Write::BulkRun);
        (*a as u8)
            .cmp(&(*b as u8))
            .then_with(|| key_order(&x[0], &y[0]))
            .then_with(|| match upsert {
                true => std::cmp::Ordering::Equal,
                false => key_order(&x[1], &y[1]),
            })
    });
    let mut wallets: Vec<_> = wallets.into_iter().collect();
    wallets.sort_by(|a, b| a.0.cmp(&b.0));
    let mut grants: Vec<_> = grants.into_iter().collect();
    grants.sort_by(|a, b| a.0.cmp(&b.0));
    inserts.extend(wallets.into_iter().map(|(_, (mut values, versions))| {
        values[6] = Value::Integer(versions);
        (Write::WalletState, values)
    }));
    inserts.extend(
        grants
            .into_iter()
            .map(|(_, values)| (Write::GrantState, values)),
    );
    inserts
}

fn key_order(a: &Value, b: &Value) -> std::cmp::Ordering {
    match (a, b) {
        (Value::Blob(a), Value::Blob(b)) => a.cmp(b),
        (Value::Text(a), Value::Text(b)) => a.cmp(b),
        (Value::Integer(a), Value::Integer(b)) => a.cmp(b),
        _ => std::cmp::Ordering::Equal,
    }
}

/// What the writer, the merger and the readers tell each other.
#[derive(Default)]
pub struct Progress {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// The last batch committed to the journal.
    committed: u64,
    /// The last batch merged into the store.
    merged: u64,
    /// Drains asked for, and the last one done: a drain merges whatever
    /// the journal holds, committed as far as the writer knows or not.
    drains_asked: u64,
    drains_done: u64,
    stopping: bool,
}

/// How long a reader or the writer waits for the merger before giving up
/// (`Unavailable`): the merger is failing, and says why in the log.
pub const WAIT_MAX: Duration = Duration::from_secs(30);

impl Progress {
    pub fn starting_at(merged: u64) -> Progress {
        Progress {
            state: Mutex::new(State {
                committed: merged,
                merged,
                ..State::default()
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn committed(&self, batch: u64) {
        let mut state = self.lock();
        state.committed = state.committed.max(batch);
        self.changed.notify_all();
    }

    pub fn merged(&self) -> u64 {
        self.lock().merged
    }

    /// Batches committed and not merged yet.
    pub fn lag(&self) -> u64 {
        let state = self.lock();
        state.committed.saturating_sub(state.merged)
    }

    /// Waits, at most [`WAIT_MAX`], until `done` holds; false if it did not.
    fn wait_until(&self, mut state: MutexGuard<'_, State>, done: impl Fn(&State) -> bool) -> bool {
        let deadline = std::time::Instant::now() + WAIT_MAX;
        while !done(&state) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    /// Waits until everything committed now is merged.
    pub fn wait_caught_up(&self) -> bool {
        let state = self.lock();
        let target = state.committed;
        self.wait_until(state, |state| state.merged >= target)
    }

    /// Waits until batch `batch` is merged.
    pub fn wait_merged(&self, batch: u64) -> bool {
        self.wait_until(self.lock(), |state| state.merged >= batch)
    }

    /// Waits until everything the writer committed is merged, or, after a
    /// failure, [`Progress::drain_all`].
    pub fn drain(&self) -> bool {
        let state = self.lock();
        if state.merged >= state.committed && state.drains_done == state.drains_asked {
            return true;
        }
        drop(state);
        self.drain_all()
    }

    /// Has the merger merge everything in the journal, and waits for it.
    /// Needed where the writer cannot know what is there: after a commit
    /// that failed (it may have reached the disk).
    pub fn drain_all(&self) -> bool {
        let mut state = self.lock();
        state.drains_asked += 1;
        let asked = state.drains_asked;
        self.changed.notify_all();
        self.wait_until(state, |state| state.drains_done >= asked)
    }

    /// Tells the merger to stop once the journal is merged.
    pub fn stop(&self) {
        self.lock().stopping = true;
        self.changed.notify_all();
    }

    fn record_merged(&self, batch: u64) {
        let mut state = self.lock();
        state.merged = state.merged.max(batch);
        state.committed = state.committed.max(state.merged);
        self.changed.notify_all();
    }
}

/// Starts the merger thread: it merges whenever the writer commits past
/// what is merged, or a drain is asked for, and stops when told to.
pub fn spawn_merger(
    main: Connection,
    journal: Connection,
    progress: std::sync::Arc<Progress>,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("credstack-merger".into())
        .spawn(move || {
            loop {
                let drain = {
                    let mut state = progress.lock();
                    while state.committed <= state.merged
                        && state.drains_done == state.drains_asked
                        && !state.stopping
                    {
                        state = progress
                            .changed
                            .wait(state)
                            .unwrap_or_else(|e| e.into_inner());
                    }
                    if state.stopping
                        && state.committed <= state.merged
                        && state.drains_done == state.drains_asked
                    {
                        return;
                    }
                    state.drains_asked
                };
                match merge_all(&main, &journal, |batch| progress.record_merged(batch)) {
                    Ok(_) => {
                        let mut state = progress.lock();
                        state.drains_done = state.drains_done.max(drain);
                        progress.changed.notify_all();
                    }
                    Err(error) => {
                        tracing::error!(%error, "merging the journal failed; trying again");
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
            }
        })
        .expect("spawn merger thread")
}
