//! Where a batch's writes go: the [`Sink`] the writer hands every batch to,
//! and [`Direct`], the sink that writes straight into the store's
//! transaction (PostgreSQL, and the embedded store's batches that are not
//! journalled). The embedded store's [`super::journaled::Journalled`] is
//! the other.
//!
//! Owns: the order a direct batch writes its [`Change`]s in (the closed
//! list of what a ledger change writes lives in `records`, where the
//! journal encodes it too).
//! May not: decide anything about a request, read the clock, or know
//! which sink the writer has: the writer sees only this trait.

pub use crate::records::Change;
use crate::records::*;
use crate::store::{Store, StoreError, StoreResult};
use credstack_core::{Grant, Wallet};

/// A store failure inside a batch: the batch is rolled back, then run again
/// if the failure was a conflict with another writer, or answered with
/// `Unavailable` otherwise. The cause is logged where it happens.
pub struct StoreFailure {
    pub retryable: bool,
}

impl From<StoreError> for StoreFailure {
    fn from(error: StoreError) -> StoreFailure {
        StoreFailure {
            retryable: matches!(
                crate::error::Error::from(error),
                crate::error::Error::Contended
            ),
        }
    }
}

/// Opens a new connection for the writer, after the last one failed.
pub type Connect = Box<dyn Fn() -> StoreResult<Box<dyn Store>> + Send>;

/// One way of storing a batch. The writer calls `begin`, then any number of
/// `store` and `write`, then `commit` (or `rollback` after a failure), one
/// batch at a time.
pub trait Sink: Send {
    /// Starts a batch. `ledger_only`: every request of it writes only
    /// [`Change`]s.
    fn begin(&mut self, ledger_only: bool) -> Result<(), StoreFailure>;
    /// The store as the batch sees it: everything committed, and everything
    /// the batch wrote so far.
    fn store(&mut self) -> StoreResult<&mut dyn Store>;
    /// Writes a change in the batch's commit.
    fn write(&mut self, change: Change) -> StoreResult<()>;
    /// Locks these wallets' rows until the batch ends and returns each
    /// existing one's version; `None` where no other process writes the
    /// store, so the writer's cached wallets are current as they are.
    fn lock_wallets(&mut self, ids: &[u128]) -> StoreResult<Option<Vec<(u128, i64)>>>;
    /// Makes the batch durable; only then may its callers hear back.
    fn commit(&mut self) -> Result<(), StoreFailure>;
    /// Drops the batch after a failure.
    fn rollback(&mut self);
    /// Whether the store holds every committed state now, so a cached
    /// wallet may be dropped and loaded again (waits a bounded time).
    fn settled(&mut self) -> bool;
    /// The writer stops: nothing more comes.
    fn stop(&mut self);
}

/// Writes into the store's own transaction. Appended rows are gathered and
/// written together (one statement per table on PostgreSQL) before the
/// commit or before anything else reaches the store; wallet states (and
/// the grants they changed) together at the commit; the rest at once,
/// after the rows before it, so a read later in the batch sees it.
pub struct Direct {
    store: Box<dyn Store>,
    /// Set when the connection failed: the next batch connects again first.
    broken: bool,
    connect: Connect,
    /// Whether another process may write the store (PostgreSQL): then
    /// wallets are locked and their versions read.
    shared: bool,
    rows: NewRows,
    wallets: Vec<(u128, Wallet)>,
    grants: Vec<Grant>,
}

impl Direct {
    pub fn new(store: Box<dyn Store>, connect: Connect, shared: bool) -> Direct {
        Direct {
            store,
            broken: false,
            connect,
            shared,
            rows: NewRows::default(),
            wallets: Vec::new(),
            grants: Vec::new(),
        }
    }

    /// Writes the rows gathered so far.
    fn write_rows(&mut self) -> StoreResult<()> {
        if !self.rows.is_empty() {
            self.store.insert_rows(&self.rows)?;
            self.rows.clear();
        }
        Ok(())
    }

    fn clear(&mut self) {
        self.rows.clear();
        self.wallets.clear();
        self.grants.clear();
    }
}

impl Sink for Direct {
    fn begin(&mut self, _ledger_only: bool) -> Result<(), StoreFailure> {
        if self.broken {
            self.store = (self.connect)()?;
            self.broken = false;
            tracing::info!("the writer connected to the store again");
        }
        self.store.begin()?;
        Ok(())
    }

    fn store(&mut self) -> StoreResult<&mut dyn Store> {
        self.write_rows()?;
        Ok(&mut *self.store)
    }

    fn write(&mut self, change: Change) -> StoreResult<()> {
        match change {
            Change::Entry(entry) => self.rows.entries.push(entry),
            Change::Debit(debit) => self.rows.debits.push(debit),
            Change::Key(kept) => self.rows.responses.push(kept),
            Change::Event(event) => self.rows.events.push(event),
            Change::WalletState(info, wallet, grants) => {
                self.wallets.push((info.id, wallet));
                self.grants.extend(grants);
            }
            Change::GrantState(grant) => self.store()?.update_grant_state(&grant)?,
            Change::HoldFinished {
                id,
                status,
                debit_id,
                at,
            } => self.store()?.finish_hold(id, status, debit_id, at)?,
            Change::Grant(record) => self.store()?.insert_grant(&record)?,
            Change::Assignment(assignment) => self.store()?.upsert_assignment(&assignment)?,
            Change::Promotion(promotion) => self.store()?.upsert_promotion(&promotion)?,
            Change::BulkRun(run) => self.store()?.upsert_bulk_run(&run)?,
        }
        Ok(())
    }

    fn lock_wallets(&mut self, ids: &[u128]) -> StoreResult<Option<Vec<(u128, i64)>>> {
        if !self.shared {
            return Ok(None);
        }
        self.write_rows()?;
        self.store.lock_wallets(ids).map(Some)
    }

    fn commit(&mut self) -> Result<(), StoreFailure> {
        self.write_rows()?;
        if !self.wallets.is_empty() {
            let wallets: Vec<(u128, &Wallet)> =
                self.wallets.iter().map(|(id, w)| (*id, w)).collect();
            let grants: Vec<&Grant> = self.grants.iter().collect();
            self.store.update_states(&wallets, &grants)?;
        }
        self.clear();
        self.store.commit()?;
        Ok(())
    }

    fn rollback(&mut self) {
        self.clear();
        if let Err(error) = self.store.rollback() {
            tracing::warn!(%error, "rollback failed; reconnecting");
            self.broken = true;
        }
    }

    fn settled(&mut self) -> bool {
        true
    }

    fn stop(&mut self) {}
}
