//! Storage: the [`Store`] trait and its two backends.
//!
//! - [`sqlite`]: the embedded store, one SQLite file (the default).
//! - [`postgres`]: one PostgreSQL database shared by several processes.
//!
//! Both backends implement every method with the same meaning; the
//! conformance suites (`tests/store_conformance.rs` at this level, and every
//! end-to-end suite's `_postgres` twin over HTTP) hold them to it. A
//! method runs inside whatever transaction the caller holds; the writer
//! opens one per batch with [`Store::begin`].
//!
//! The trait and both implementations come from one list of signatures
//! (`store_api!` below), each implementation delegating to the backend
//! module's function of the same name, so a method cannot be missing or
//! differ in shape on one backend. What both backends read alike (each
//! record's column list and its decoding from a row) is written once, in
//! `rows`.

pub mod codec;
pub mod journal;
pub mod postgres;
mod rows;
pub mod sqlite;
pub mod tail;

use crate::records::*;
use credstack_core::{Amount, Grant, Instant, Purpose, Wallet};

/// The entries behind a wallet's balance chart (the console's), with what
/// each purpose holds now, read in one snapshot so that the two agree:
/// [`Store::entries_with_purpose`].
#[derive(Clone, Debug)]
pub struct PurposeLedger {
    /// Oldest first; each with its grant's purpose, `None` for the debt's entries.
    pub entries: Vec<(EntryRecord, Option<Purpose>)>,
    /// Σ remainders of the wallet's grants of each purpose, now.
    pub promotional: Amount,
    pub bundled: Amount,
    pub paid: Amount,
    pub debt: Amount,
}

/// Most entries [`Store::entries_with_purpose`] returns.
pub const CHART_ENTRIES_MAX: usize = 500;

/// A store failure, classified by what the caller can do about it.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct StoreError {
    /// A conflict with another transaction (deadlock, serialization
    /// failure, a unique key taken concurrently): rolling back and running
    /// the same work again can succeed.
    pub retryable: bool,
    /// The connection is gone: drop it and connect again.
    pub broken: bool,
    pub message: String,
}

pub type StoreResult<T> = std::result::Result<T, StoreError>;

/// The sequence of a wallet's last entry at or before `at` (0 when its first
/// is later), among its entries `1..=last`, by bisection: `occurred_at`
/// reads one entry's instant, about log2(last) times. Sound because a
/// wallet's entries never go back in time ([`EntryRecord::append_to`]),
/// which is what lets the stores keep no index of entries by time.
pub fn last_sequence_at<E>(
    last: u64,
    at: Instant,
    mut occurred_at: impl FnMut(u64) -> Result<Instant, E>,
) -> Result<u64, E> {
    // Entry `low` is at or before `at` (0 stands before the first); every
    // entry after `high` is later.
    let (mut low, mut high) = (0, last);
    while low < high {
        let middle = low + (high - low).div_ceil(2);
        if occurred_at(middle)? <= at {
            low = middle;
        } else {
            high = middle - 1;
        }
    }
    Ok(low)
}

impl From<rusqlite::Error> for StoreError {
    /// Nothing is worth running again on SQLite: one process writes, under
    /// `BEGIN IMMEDIATE`, so a constraint violation is the same every time
    /// and a busy database has already been waited for (busy timeout).
    fn from(error: rusqlite::Error) -> StoreError {
        StoreError {
            retryable: false,
            broken: false,
            message: format!("sqlite: {error}"),
        }
    }
}

impl From<::postgres::Error> for StoreError {
    fn from(error: ::postgres::Error) -> StoreError {
        use ::postgres::error::SqlState;
        let retryable = error.code().is_some_and(|code| {
            // Not a lock wait that timed out (55P03): the row's holder is
            // stalled, and waiting again would only hold up the whole queue.
            [
                SqlState::T_R_SERIALIZATION_FAILURE,
                SqlState::T_R_DEADLOCK_DETECTED,
                SqlState::UNIQUE_VIOLATION,
            ]
            .contains(code)
        });
        // No SQL state means the failure was not the server answering a
        // statement: the connection is closed, timed out or refused. An
        // administrator ending the session (57P01) or the server shutting
        // down (57P02, 57P03) closes it too.
        let broken = error.is_closed()
            || error.code().is_none()
            || error.code().is_some_and(|code| {
                code.code().starts_with("57P") || code.code().starts_with("08")
            });
        StoreError {
            retryable,
            broken,
            message: format!("postgres: {}", postgres::describe(&error)),
        }
    }
}

impl From<r2d2::Error> for StoreError {
    fn from(error: r2d2::Error) -> StoreError {
        StoreError {
            retryable: false,
            broken: true,
            message: format!("no connection: {error}"),
        }
    }
}

macro_rules! store_api {
    ($( $(#[$doc:meta])* fn $name:ident(&mut self $(, $arg:ident: $ty:ty)*) -> $ret:ty; )*) => {
        /// Everything credstack reads and writes. See the backend modules
        /// for what each method does; they document the SQL.
        pub trait Store: Send {
            $( $(#[$doc])* fn $name(&mut self $(, $arg: $ty)*) -> StoreResult<$ret>; )*
        }

        impl Store for rusqlite::Connection {
            $( fn $name(&mut self $(, $arg: $ty)*) -> StoreResult<$ret> {
                Ok(sqlite::$name(self $(, $arg)*)?)
            } )*
        }

        impl Store for ::postgres::Client {
            $( fn $name(&mut self $(, $arg: $ty)*) -> StoreResult<$ret> {
                Ok(postgres::$name(self $(, $arg)*)?)
            } )*
        }

        /// A store laid over another ([`Overlay::under`]): each method goes
        /// to the store under it unless the implementation answers it
        /// itself ([`tail::Overlaid`], the embedded journal's tail for
        /// readers, and the writer's view of what it has not merged).
        pub trait Overlay: Send {
            fn under(&mut self) -> &mut dyn Store;
            $( fn $name(&mut self $(, $arg: $ty)*) -> StoreResult<$ret> {
                self.under().$name($($arg),*)
            } )*
        }

        impl<T: Overlay> Store for T {
            $( fn $name(&mut self $(, $arg: $ty)*) -> StoreResult<$ret> {
                Overlay::$name(self $(, $arg)*)
            } )*
        }
    };
}

store_api! {
    /// Starts the writer's transaction. SQLite takes the write lock now
    /// (`BEGIN IMMEDIATE`); PostgreSQL runs at READ COMMITTED and relies on
    /// the row locks of [`Store::lock_wallets`].
    fn begin(&mut self) -> ();
    /// Starts a read-only transaction that sees one consistent snapshot of
    /// the whole store while writers go on (`credstack verify` online);
    /// ended by `rollback`.
    fn begin_snapshot(&mut self) -> ();
    fn commit(&mut self) -> ();
    fn rollback(&mut self) -> ();
    /// Locks these wallets' rows until the transaction ends, in id order
    /// (so two writers locking overlapping sets cannot deadlock), and
    /// returns each existing wallet's `version`.
    fn lock_wallets(&mut self, ids: &[u128]) -> Vec<(u128, i64)>;
    /// The wallets these holds belong to, to lock them with the batch's others.
    fn hold_wallet_ids(&mut self, hold_ids: &[u128]) -> Vec<u128>;
    /// The wallets these grants belong to, to lock them with the batch's others.
    fn grant_wallet_ids(&mut self, grant_ids: &[u128]) -> Vec<u128>;
    fn credit_system(&mut self, id: u128) -> Option<CreditSystem>;
    fn credit_system_by_key(&mut self, key: &str) -> Option<CreditSystem>;
    fn list_credit_systems(&mut self, limit: usize, starting_after: Option<u128>) -> Page<CreditSystem>;
    fn upsert_credit_system(&mut self, cs: &CreditSystem) -> ();
    fn customer(&mut self, id: u128) -> Option<Customer>;
    fn customer_by_external_id(&mut self, external_id: &str) -> Option<Customer>;
    fn list_customers(&mut self, query: Option<&str>, limit: usize, starting_after: Option<u128>) -> Page<Customer>;
    fn upsert_customer(&mut self, customer: &Customer) -> ();
    fn wallet_info(&mut self, id: u128) -> Option<WalletInfo>;
    fn wallet_by_owner(&mut self, customer_id: u128, credit_system_id: u128) -> Option<WalletInfo>;
    fn list_wallets(&mut self, customer_id: Option<u128>, credit_system_id: Option<u128>, limit: usize, starting_after: Option<u128>) -> Page<WalletInfo>;
    fn load_wallet(&mut self, id: u128) -> Option<(WalletInfo, Wallet)>;
    /// [`Store::load_wallet`] for many (unknown ids left out): three
    /// statements on PostgreSQL whatever their number.
    /// Each with its last entry's [`ChainHead`] ([`ChainHead::START`]
    /// before its first), which the wallet's next entry follows.
    fn load_wallets(&mut self, ids: &[u128]) -> Vec<(WalletInfo, Wallet, ChainHead)>;
    fn insert_wallet(&mut self, info: &WalletInfo, wallet: &Wallet) -> ();
    /// Writes these wallets' balances and next events, adding one to each
    /// one's `version`, and these grants' states ([`Store::update_grant_state`]):
    /// one statement per table on PostgreSQL.
    fn update_states(&mut self, wallets: &[(u128, &Wallet)], grants: &[&Grant]) -> ();
    fn due_wallets(&mut self, now: Instant, limit: usize) -> Vec<u128>;
    fn wallet_next_event_at(&mut self, id: u128) -> Option<Instant>;
    fn grant(&mut self, id: u128) -> Option<GrantRecord>;
    fn list_grants(&mut self, wallet_id: u128, status: Option<&str>, limit: usize, starting_after: Option<u128>) -> Page<GrantRecord>;
    fn insert_grant(&mut self, record: &GrantRecord) -> ();
    fn update_grant_state(&mut self, grant: &Grant) -> ();
    fn hold(&mut self, id: u128) -> Option<HoldRecord>;
    fn insert_hold(&mut self, hold: &HoldRecord) -> ();
    fn finish_hold(&mut self, id: u128, status: HoldStatus, debit_id: Option<u128>, ended_at: Instant) -> ();
    fn debit(&mut self, id: u128) -> Option<DebitRecord>;
    fn list_debits(&mut self, wallet_id: u128, limit: usize, starting_after: Option<u128>) -> Page<DebitRecord>;
    /// Inserts entries, debits and kept responses: one statement per
    /// table on PostgreSQL.
    fn insert_rows(&mut self, rows: &NewRows) -> ();
    fn list_entries(&mut self, wallet_id: u128, ascending: bool, limit: usize, starting_after: Option<u128>) -> Page<EntryRecord>;
    /// The sequence of the wallet's last entry at or before `at`, 0 if
    /// none (SPEC rule 17), found by [`last_sequence_at`].
    fn last_sequence_at(&mut self, wallet_id: u128, at: Instant) -> u64;
    /// The balance after entry `sequence` (0 before the first).
    fn balance_after(&mut self, wallet_id: u128, sequence: u64) -> Amount;
    /// Each grant's remainder after entry `sequence`: the sum of its entries.
    fn grant_remainders_through(&mut self, wallet_id: u128, sequence: u64) -> Vec<(u128, Amount)>;
    fn api_keys(&mut self) -> Vec<ApiKey>;
    fn list_api_keys(&mut self, limit: usize, starting_after: Option<u128>) -> Page<ApiKey>;
    fn insert_api_key(&mut self, key: &ApiKey) -> ();
    fn delete_api_key(&mut self, id: u128) -> bool;
    fn idempotency(&mut self, key: &str) -> Option<([u8; 32], Kept)>;
    /// The kept responses of those of these keys that have one, in one statement.
    fn idempotency_many(&mut self, keys: &[&str]) -> Vec<KeptResponse>;
    fn purge_idempotency(&mut self, before: Instant) -> usize;
    fn promotion(&mut self, id: u128) -> Option<PromotionalCredit>;
    fn list_promotions(&mut self, status: Option<credstack_core::promotion::Status>, now: Instant, limit: usize, starting_after: Option<u128>) -> Page<PromotionalCredit>;
    fn upsert_promotion(&mut self, p: &PromotionalCredit) -> ();
    fn delete_promotion(&mut self, id: u128) -> ();
    fn active_assignments(&mut self, promotion_id: u128, customer_id: u128, now: Instant) -> Vec<Assignment>;
    fn upsert_assignment(&mut self, a: &Assignment) -> ();
    fn customers_with_wallets(&mut self, credit_system_id: u128, after: Option<u128>, limit: usize) -> Vec<u128>;
    fn customers_with_open_assignments(&mut self, promotion_id: u128, after: Option<u128>, limit: usize) -> Vec<u128>;
    fn promotion_counts(&mut self, promotion_id: u128, now: Instant) -> (u64, u64);
    fn promotion_customers(&mut self, promotion_id: u128, status: Option<&str>, query: Option<&str>, now: Instant, limit: usize, starting_after: Option<u128>) -> Page<PromotionCustomer>;
    fn insert_session(&mut self, session: &ConsoleSession) -> ();
    fn session(&mut self, token_hash: &[u8; 32], now: Instant) -> Option<ConsoleSession>;
    fn delete_session(&mut self, token_hash: &[u8; 32]) -> ();
    fn purge_sessions(&mut self, expired_by: Instant) -> usize;
    /// The wallets in this credit system, or in all of them (`None`).
    fn count_wallets(&mut self, credit_system_id: Option<u128>) -> u64;
    fn promotion_has_customers(&mut self, promotion_id: u128) -> bool;
    /// The last `limit` (at most [`CHART_ENTRIES_MAX`]) entries of a
    /// wallet, oldest first, each with its grant's purpose, and what each
    /// purpose and the debt stand at now. `None` if the wallet does not exist.
    fn entries_with_purpose(&mut self, wallet_id: u128, limit: usize) -> Option<PurposeLedger>;
    fn entry_in_wallet(&mut self, wallet_id: u128, entry_id: u128) -> bool;
    /// The campaign, locked until the transaction ends.
    fn lock_promotion(&mut self, id: u128) -> Option<PromotionalCredit>;
    fn bulk_run(&mut self, promotion_id: u128) -> Option<BulkRun>;
    fn upsert_bulk_run(&mut self, run: &BulkRun) -> ();
    fn delete_bulk_run(&mut self, promotion_id: u128) -> ();
    fn save_bulk_resume(&mut self, resume: &BulkResume) -> ();
    /// The saved place of this campaign's keyed call, removed as it is read.
    fn take_bulk_resume(&mut self, promotion_id: u128, key: &str) -> Option<BulkResume>;
    fn purge_bulk_resumes(&mut self, before: Instant, promotion_id: Option<u128>) -> usize;
    /// Writes a wallet's settings beside its state: its low-balance threshold.
    fn update_wallet_info(&mut self, info: &WalletInfo) -> ();
    /// The sequence of the wallet's last event, 0 before its first.
    fn last_event_sequence(&mut self, wallet_id: u128) -> u64;
    fn event(&mut self, id: u128) -> Option<EventRecord>;
    /// Events newest first, of one wallet or of all.
    fn list_events(&mut self, wallet_id: Option<u128>, limit: usize, starting_after: Option<u128>) -> Page<EventRecord>;
    /// The oldest events not fanned out yet. PostgreSQL locks them (skipping
    /// those another node has locked) until the transaction ends.
    fn undispatched_events(&mut self, limit: usize) -> Vec<EventRecord>;
    fn mark_dispatched(&mut self, event_ids: &[u128]) -> ();
    /// Events not fanned out yet, and deliveries pending.
    fn outbox_backlog(&mut self) -> (u64, u64);
    /// Whether a delivery to an enabled endpoint is due by `now`. A delivery
    /// made behind a pending one of its wallet and endpoint waits with no
    /// time, and gets one when the one ahead of it ends (succeeded or given
    /// up), so no claim reads it while it waits, and this says whether a
    /// claim would find anything to send.
    fn deliveries_due(&mut self, now: Instant) -> bool;
    /// Gives `now` to waiting deliveries with nothing pending ahead of them
    /// (on PostgreSQL, a fan-out that raced the end of the one ahead on
    /// another node); how many.
    fn release_waiting_deliveries(&mut self, now: Instant) -> u64;
    fn webhook_endpoint(&mut self, id: u128) -> Option<WebhookEndpoint>;
    fn webhook_endpoints(&mut self) -> Vec<WebhookEndpoint>;
    fn list_webhook_endpoints(&mut self, limit: usize, starting_after: Option<u128>) -> Page<WebhookEndpoint>;
    /// Inserts an endpoint, or changes its url, description, types and
    /// `enabled` (never its secret or creation time).
    fn upsert_webhook_endpoint(&mut self, endpoint: &WebhookEndpoint) -> ();
    /// Deletes an endpoint with its deliveries and their attempts.
    fn delete_webhook_endpoint(&mut self, id: u128) -> bool;
    fn insert_deliveries(&mut self, deliveries: &[Delivery]) -> ();
    /// Claims deliveries due by `now`, each the first pending one of its
    /// wallet for its endpoint, until `lease_until`; see the backends.
    fn claim_deliveries(&mut self, now: Instant, lease_until: Instant, limit: usize) -> Vec<DeliveryJob>;
    /// Records an attempt's end if the delivery is still as it claimed it.
    fn finish_attempt(&mut self, attempt: &Attempt, end: &AttemptEnd) -> bool;
    fn delivery(&mut self, id: u128) -> Option<Delivery>;
    fn list_deliveries(&mut self, endpoint_id: u128, status: Option<DeliveryStatus>, limit: usize, starting_after: Option<u128>) -> Page<Delivery>;
    fn delivery_attempts(&mut self, delivery_id: u128) -> Vec<Attempt>;
    /// Makes a finished delivery pending from `now`; false if it is pending.
    fn redeliver(&mut self, id: u128, now: Instant) -> bool;
}

#[cfg(test)]
mod tests {
    use super::last_sequence_at;
    use chrono::{DateTime, Utc};
    use proptest::prelude::*;

    fn instant(seconds: i64) -> credstack_core::Instant {
        DateTime::<Utc>::from_timestamp(seconds, 0).expect("in range")
    }

    proptest! {
        /// Bisection finds what a scan finds: the last entry at or before
        /// `at`, among entries in time order, ties and all.
        #[test]
        fn bisection_agrees_with_a_scan(
            steps in proptest::collection::vec(0i64..3, 0..60),
            at in -1i64..200,
        ) {
            let times: Vec<i64> = steps
                .iter()
                .scan(0, |t, step| {
                    *t += step;
                    Some(*t)
                })
                .collect();
            let scanned = times.iter().rposition(|t| *t <= at).map_or(0, |i| i as u64 + 1);
            let mut probes = 0;
            let found = last_sequence_at(times.len() as u64, instant(at), |sequence| {
                probes += 1;
                Ok::<_, ()>(instant(times[sequence as usize - 1]))
            })
            .unwrap();
            prop_assert_eq!(found, scanned);
            prop_assert!(probes <= 7, "{} probes for {} entries", probes, times.len());
        }
    }
}
