//! The writer: the one thread that changes the embedded store.
//!
//! Every write is a [`Request`] sent over a bounded channel. The writer takes
//! whatever is queued (up to [`BATCH_MAX`]), applies each request in order to
//! its in-memory wallet states and to one SQLite transaction, commits once
//! (one fsync for the whole batch: group commit), and only then answers each
//! caller. A failed commit answers every caller of the batch with
//! `Unavailable` and drops the in-memory states, which reload from disk.
//!
//! Invariants: a caller hears success only after its change is durable; an
//! idempotency record is written in the same commit as the change it guards;
//! the in-memory state of a wallet always equals committed state plus the
//! batch in flight.

pub mod journaled;
mod promotions;

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::ids::{self, Generator, Kind};
use crate::metrics::Metrics;
use crate::records::*;
use crate::store::{Store, StoreError, StoreResult};
use credstack_core::{
    Amount, AmountError, Changes, DebitId, Grant, GrantId, GrantTerms, HoldId, Instant, Period,
    Purpose, Reference, Scale, Summary, Wallet,
};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Most requests committed together.
pub const BATCH_MAX: usize = 4096;
/// Most requests waiting for the writer; senders wait when it is full.
pub const QUEUE_MAX: usize = 65_536;
/// Most items in one batch debit request.
pub const DEBIT_BATCH_MAX: usize = 1000;
/// Idempotency keys are kept at least this long (SPEC rule 18 asks 24 hours).
pub const IDEMPOTENCY_KEEP_HOURS: i64 = 48;
/// Most wallet states the writer keeps in memory. Past it, a tenth of them
/// is dropped after a commit; they reload from disk when next touched.
pub const WALLET_CACHE_MAX: usize = 1_000_000;

#[derive(Clone, Debug)]
pub struct NewGrant {
    pub wallet_id: u128,
    pub amount: String,
    pub purpose: Purpose,
    pub priority: Option<u8>,
    pub effective_at: Option<Instant>,
    pub expires_at: Option<Instant>,
    pub recurrence: Option<Period>,
    pub rollover_max: Option<String>,
    pub description: Option<String>,
    pub metadata: Metadata,
}

#[derive(Clone, Debug)]
pub struct NewDebit {
    pub wallet_id: u128,
    pub amount: String,
    pub description: Option<String>,
    pub metadata: Metadata,
}

/// An idempotency key and the fingerprint of the request it came with.
#[derive(Clone, Debug)]
pub struct Idempotency {
    pub key: String,
    pub fingerprint: [u8; 32],
}

impl Idempotency {
    pub fn new(key: String, request_parts: &[&[u8]]) -> Idempotency {
        let mut hasher = Sha256::new();
        for part in request_parts {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part);
        }
        Idempotency {
            key,
            fingerprint: hasher.finalize().into(),
        }
    }
}

pub use promotions::{
    BulkClaim, BulkClaimRequest, NewPromotion, PROMOTION_CUSTOMERS_MAX, PromotionEdit,
    PromotionGrant, PromotionRevoke, PromotionView, RunEnd, RunStep,
};

#[derive(Clone, Debug)]
pub struct BatchItem {
    pub debit: NewDebit,
    pub idempotency: Idempotency,
}

#[derive(Clone, Debug)]
pub enum Request {
    CreateCreditSystem {
        key: String,
        name: String,
        unit: String,
        scale: u8,
    },
    UpdateCreditSystem {
        id: u128,
        name: Option<String>,
        active: Option<bool>,
    },
    CreateCustomer {
        name: String,
        email: Option<String>,
        external_id: Option<String>,
        metadata: Metadata,
    },
    UpdateCustomer {
        id: u128,
        name: Option<String>,
        email: Option<Option<String>>,
        external_id: Option<Option<String>>,
        metadata: Option<Metadata>,
    },
    CreateWallet {
        customer_id: u128,
        credit_system_id: u128,
        overdraft_limit: Option<String>,
        low_balance_threshold: Option<String>,
    },
    /// Changes what is given; `Some(None)` clears the threshold.
    UpdateWallet {
        id: u128,
        overdraft_limit: Option<String>,
        low_balance_threshold: Option<Option<String>>,
    },
    AddGrant(NewGrant),
    VoidGrant {
        id: u128,
    },
    Debit(NewDebit),
    DebitBatch(Vec<BatchItem>),
    PlaceHold {
        wallet_id: u128,
        amount: String,
        expires_in_seconds: Option<i64>,
    },
    CaptureHold {
        id: u128,
        amount: String,
    },
    ReleaseHold {
        id: u128,
    },
    /// Brings wallets up to date with every event due by now (SPEC rule 11).
    Materialise {
        wallet_ids: Vec<u128>,
    },
    CreatePromotion(NewPromotion),
    UpdatePromotion {
        id: u128,
        edit: PromotionEdit,
    },
    DeletePromotion {
        id: u128,
    },
    GrantPromotion {
        id: u128,
        customer_ids: Vec<u128>,
        /// Set when the chunk is part of a call to all customers.
        run: Option<RunStep>,
    },
    RevokePromotion {
        id: u128,
        customer_ids: Vec<u128>,
        run: Option<RunStep>,
    },
    /// Starts a call to all customers of a campaign, unless one is running.
    ClaimBulkRun(BulkClaimRequest),
    /// Ends a call to all customers, keeping its response under the
    /// request's idempotency key in the same commit.
    FinishBulkRun {
        promotion_id: u128,
        run_id: u128,
        response: StoredResponse,
        /// The message of the error the call ended with, if any.
        error: Option<String>,
    },
    /// Lets another call take over a call to all customers that failed.
    ReleaseBulkRun {
        promotion_id: u128,
        run_id: u128,
    },
    CreateApiKey {
        name: String,
        scope: Scope,
        secret: String,
    },
    DeleteApiKey {
        id: u128,
    },
    /// Drops idempotency keys past their keeping time and expired console sessions.
    PurgeExpired,
    CreateSession(ConsoleSession),
    DeleteSession {
        token_hash: [u8; 32],
    },
    CreateWebhookEndpoint {
        url: String,
        description: Option<String>,
        event_types: Vec<String>,
        secret: String,
    },
    UpdateWebhookEndpoint {
        id: u128,
        url: Option<String>,
        description: Option<Option<String>>,
        event_types: Option<Vec<String>>,
        enabled: Option<bool>,
    },
    DeleteWebhookEndpoint {
        id: u128,
    },
    /// Gives up to `limit` events of the outbox a delivery for each enabled
    /// endpoint that wants them, and marks them dispatched.
    DispatchEvents {
        limit: usize,
    },
    /// Claims deliveries due now, for `lease` (see `Store::claim_deliveries`).
    ClaimDeliveries {
        limit: usize,
        lease: chrono::Duration,
    },
    /// Records how attempts ended.
    FinishAttempts(Vec<(Attempt, AttemptEnd)>),
    /// Sends a finished delivery again.
    Redeliver {
        id: u128,
    },
    /// Lets go deliveries left waiting with nothing ahead of them.
    ReleaseWaitingDeliveries,
}

/// A wallet with its live state and summary, as of the request that returned it.
#[derive(Clone, Debug)]
pub struct WalletView {
    pub info: WalletInfo,
    pub wallet: Wallet,
    pub summary: Summary,
    pub at: Instant,
}

#[derive(Clone, Debug)]
pub enum Outcome {
    CreditSystem(CreditSystem),
    Customer(Customer),
    Wallet(Box<WalletView>),
    Grant(Box<GrantRecord>),
    Debit(DebitRecord),
    DebitBatch(Vec<Reply>),
    Hold(HoldRecord),
    ApiKey {
        key: ApiKey,
        secret: Option<String>,
    },
    Deleted {
        kind: Kind,
        id: u128,
    },
    Promotion(Box<PromotionView>),
    PromotionGrant(PromotionGrant),
    PromotionRevoke(PromotionRevoke),
    BulkClaim(BulkClaim),
    /// A response already rendered: what a long call that ran in several
    /// commits keeps under its idempotency key when it finishes.
    Rendered(StoredResponse),
    /// The signing secret is shown once, when the endpoint is created.
    WebhookEndpoint {
        endpoint: Box<WebhookEndpoint>,
        secret: Option<String>,
    },
    /// How many events were fanned out (or waiting deliveries let go).
    Dispatched(usize),
    Claimed(Vec<DeliveryJob>),
    Delivery(Box<Delivery>),
    Done,
}

/// What a request gets back: a fresh result, or the stored response of an
/// earlier request with the same idempotency key.
#[derive(Clone, Debug)]
pub enum Reply {
    Fresh(Result<Outcome>),
    Replayed(StoredResponse),
}

/// Renders a result the way the API answers it, to keep for replays. The
/// HTTP layer supplies it, so the engine stays free of wire formats.
pub type Render = fn(&Result<Outcome>) -> StoredResponse;

struct Envelope {
    request: Request,
    idempotency: Option<Idempotency>,
    reply: oneshot::Sender<Reply>,
}

/// The handle callers use to submit writes.
#[derive(Clone)]
pub struct Engine {
    sender: mpsc::Sender<Envelope>,
}

impl Engine {
    /// Starts the writer thread on `store`; `connect` opens a new
    /// connection when that one fails.
    /// `journal` is the embedded store's (which also holds the lock that
    /// keeps every other process from writing it); `None` where other
    /// processes may write (PostgreSQL).
    pub fn start(
        store: Box<dyn Store>,
        connect: Connect,
        journal: Option<journaled::Journaled>,
        clock: Arc<Clock>,
        ids: Arc<Generator>,
        render: Render,
        metrics: Arc<Metrics>,
    ) -> (Engine, std::thread::JoinHandle<()>) {
        let (sender, receiver) = mpsc::channel(QUEUE_MAX);
        let writer = Writer {
            store,
            broken: false,
            connect,
            journal,
            clock,
            ids,
            render,
            metrics,
            wallets: HashMap::new(),
            locked: HashMap::new(),
            touched: HashMap::new(),
            pending: NewRows::default(),
            known: HashMap::new(),
        };
        let handle = std::thread::Builder::new()
            .name("credstack-writer".into())
            .spawn(move || {
                // A panic here is a broken invariant: the batch in flight was
                // not committed, and carrying on could write a corrupt
                // balance. Stop the whole process loudly; a restart resumes
                // from what is durable.
                let run = std::panic::AssertUnwindSafe(move || writer.run(receiver));
                if std::panic::catch_unwind(run).is_err() {
                    tracing::error!(
                        "the writer panicked: aborting so nothing corrupt is committed"
                    );
                    std::process::abort();
                }
            })
            .expect("spawn writer thread");
        (Engine { sender }, handle)
    }

    pub async fn submit(&self, request: Request, idempotency: Option<Idempotency>) -> Reply {
        let (reply, answer) = oneshot::channel();
        let envelope = Envelope {
            request,
            idempotency,
            reply,
        };
        if self.sender.send(envelope).await.is_err() {
            return Reply::Fresh(Err(Error::Unavailable));
        }
        answer
            .await
            .unwrap_or(Reply::Fresh(Err(Error::Unavailable)))
    }
}

/// A store failure inside a batch: the batch is rolled back, then run again
/// if the failure was a conflict with another writer, or answered with
/// `Unavailable` otherwise. The cause is logged where it happens.
struct StoreFailure {
    retryable: bool,
}

impl From<StoreError> for StoreFailure {
    fn from(error: StoreError) -> StoreFailure {
        StoreFailure {
            retryable: matches!(Error::from(error), Error::Contended),
        }
    }
}

/// How many times a batch runs before its callers hear `Unavailable`
/// because it kept conflicting with other writers.
const BATCH_ATTEMPTS_MAX: u32 = 8;

/// Opens a new connection for the writer, after the last one failed.
pub type Connect = Box<dyn Fn() -> StoreResult<Box<dyn Store>> + Send>;

/// A wallet as the writer keeps it: the state and the `version` it has in
/// the store once the batch in flight commits.
struct Cached {
    info: WalletInfo,
    wallet: Wallet,
    version: i64,
    /// The wallet's last entry, which its next entry follows.
    chain: ChainHead,
    /// The sequence of its last event, once read (see `emit`).
    events: Option<u64>,
}

struct Writer {
    store: Box<dyn Store>,
    /// Set when the connection failed: the next batch connects again first.
    broken: bool,
    connect: Connect,
    /// The embedded store's journal, where debit batches commit (see
    /// `store::journal`); `None` on PostgreSQL. It holds the data
    /// directory's lock: no other process writes the store, so the cached
    /// wallet states are the truth, and `lock` does not ask the store.
    journal: Option<journaled::Journaled>,
    clock: Arc<Clock>,
    ids: Arc<Generator>,
    render: Render,
    metrics: Arc<Metrics>,
    /// Wallets the writer has touched: committed state plus the batch in
    /// flight. An entry is trusted only once its row is locked in the
    /// batch's transaction and its version matches (see `lock`).
    wallets: HashMap<u128, Cached>,
    /// Wallets locked in the transaction in flight, with the version the
    /// store had when the lock was taken.
    locked: HashMap<u128, i64>,
    /// Wallets changed in the batch in flight, with their grants as they were before it.
    touched: HashMap<u128, Vec<Grant>>,
    /// Rows the batch in flight has yet to write: written together before
    /// the commit, or before anything else reaches the store (see `store`).
    pending: NewRows,
    /// What the batch in flight knows of its idempotency keys: the kept
    /// response, or `None` for a key the store does not have. Looked up
    /// for the whole batch in one statement, then kept up to date.
    known: HashMap<String, Option<([u8; 32], Kept)>>,
}

impl Writer {
    fn run(mut self, mut receiver: mpsc::Receiver<Envelope>) {
        let mut batch: Vec<Envelope> = Vec::with_capacity(BATCH_MAX);
        while let Some(first) = receiver.blocking_recv() {
            batch.push(first);
            while batch.len() < BATCH_MAX {
                match receiver.try_recv() {
                    Ok(envelope) => batch.push(envelope),
                    Err(_) => break,
                }
            }
            let replies = self.run_batch(&batch);
            for (envelope, reply) in batch.drain(..).zip(replies) {
                self.count(&envelope.request, &reply);
                let _ = envelope.reply.send(reply);
            }
        }
        if let Some(journal) = &self.journal {
            journal.progress.stop();
        }
        tracing::info!("writer stopped: every acknowledged write is committed");
    }

    /// Counts a debit's answer (single, batch items, hold captures).
    fn count(&self, request: &Request, reply: &Reply) {
        match (request, reply) {
            (Request::Debit(_) | Request::CaptureHold { .. }, reply) => self.metrics.debit(reply),
            (Request::DebitBatch(_), Reply::Fresh(Ok(Outcome::DebitBatch(items)))) => {
                items.iter().for_each(|item| self.metrics.debit(item));
            }
            (Request::DebitBatch(items), reply) => {
                items.iter().for_each(|_| self.metrics.debit(reply));
            }
            _ => {}
        }
    }

    fn run_batch(&mut self, batch: &[Envelope]) -> Vec<Reply> {
        let started = std::time::Instant::now();
        for attempt in 1..=BATCH_ATTEMPTS_MAX {
            match self.try_batch(batch) {
                Ok(replies) => {
                    self.metrics.commit(batch.len(), started.elapsed());
                    return replies;
                }
                Err(failure) => {
                    self.forget_batch();
                    if failure.retryable && attempt < BATCH_ATTEMPTS_MAX {
                        tracing::debug!(
                            attempt,
                            "batch conflicted with another writer; running it again"
                        );
                        continue;
                    }
                    tracing::error!("batch failed; rolled back, nothing acknowledged");
                    if !failure.retryable {
                        // The failure may have been a commit whose outcome
                        // is unknown: trust no cached state.
                        self.wallets.clear();
                    }
                    break;
                }
            }
        }
        batch
            .iter()
            .map(|_| Reply::Fresh(Err(Error::Unavailable)))
            .collect()
    }

    fn try_batch(&mut self, batch: &[Envelope]) -> std::result::Result<Vec<Reply>, StoreFailure> {
        if self.broken {
            self.store = (self.connect)()?;
            self.broken = false;
            tracing::info!("the writer connected to the store again");
        }
        let journalled = self.journal.is_some()
            && batch
                .iter()
                .all(|envelope| journaled::journals(&envelope.request));
        if let Some(journal) = &mut self.journal
            && !journal.prepare(journalled)
        {
            tracing::error!(
                "the journal is not being merged into the store; see the merger's errors"
            );
            return Err(StoreFailure { retryable: false });
        }
        if !journalled {
            self.store.begin()?;
        }
        // Lock every wallet the batch names in one statement; wallets found
        // only while applying (a hold's, a campaign's) are locked then.
        let mut named = Vec::new();
        let (mut holds, mut grants) = (Vec::new(), Vec::new());
        for envelope in batch {
            named_wallets(&envelope.request, &mut named);
            match &envelope.request {
                Request::CaptureHold { id, .. } | Request::ReleaseHold { id } => holds.push(*id),
                Request::VoidGrant { id } => grants.push(*id),
                _ => {}
            }
        }
        // Wallets named through a hold or a grant join them, so every lock
        // of the batch is taken in one id order: two nodes capturing and
        // debiting on the same wallets queue instead of deadlocking.
        if !holds.is_empty() {
            named.extend(self.store.hold_wallet_ids(&holds)?);
        }
        if !grants.is_empty() {
            named.extend(self.store.grant_wallet_ids(&grants)?);
        }
        self.lock(&named)?;
        self.look_up_keys(batch)?;
        let mut replies = Vec::with_capacity(batch.len());
        for envelope in batch {
            let reply =
                self.apply_with_idempotency(&envelope.request, envelope.idempotency.as_ref())?;
            replies.push(reply);
        }
        self.flush()?;
        match &mut self.journal {
            Some(journal) if journal.active => journal.commit().map_err(|error| {
                tracing::error!(%error, "the batch was not journalled");
                StoreFailure { retryable: false }
            })?,
            _ => self.store.commit()?,
        }
        // Only now do the cached states equal the store.
        self.touched.clear();
        self.locked.clear();
        self.known.clear();
        self.bound_cache();
        Ok(replies)
    }

    /// Rolls back the transaction in flight and drops every in-memory state
    /// it may have changed; they reload from the store when next touched.
    fn forget_batch(&mut self) {
        let journalled = match &mut self.journal {
            Some(journal) => {
                let active = journal.active;
                journal.forget_batch();
                active
            }
            None => false,
        };
        if journalled {
            // Nothing was begun on the store.
        } else if let Err(error) = self.store.rollback() {
            tracing::warn!(%error, "rollback failed; reconnecting");
            self.broken = true;
        }
        for (wallet_id, _) in self.touched.drain() {
            self.wallets.remove(&wallet_id);
        }
        self.locked.clear();
        self.pending.clear();
        self.known.clear();
    }

    /// The store, once the rows the batch has gathered are written, so
    /// whatever is read or written next sees them.
    fn store(&mut self) -> StoreResult<&mut dyn Store> {
        self.write_pending()?;
        Ok(&mut *self.store)
    }

    /// Writes the rows the batch has gathered so far.
    fn write_pending(&mut self) -> StoreResult<()> {
        if !self.pending.is_empty() {
            match &mut self.journal {
                Some(journal) if journal.active => {
                    journal.record(std::mem::take(&mut self.pending));
                }
                _ => {
                    self.store.insert_rows(&self.pending)?;
                    self.pending.clear();
                }
            }
        }
        Ok(())
    }

    /// The journal, when the batch in flight writes to it.
    fn journalling(&mut self) -> Option<&mut journaled::Journaled> {
        self.journal.as_mut().filter(|journal| journal.active)
    }

    /// Writes a grant's state now (one that finished while a wallet was
    /// brought up to date).
    fn write_grant_state(&mut self, grant: &Grant) -> StoreResult<()> {
        self.write_pending()?;
        match self.journalling() {
            Some(journal) => journal.grant_state(grant),
            None => self.store.update_grant_state(grant)?,
        }
        Ok(())
    }

    /// Looks up every idempotency key of the batch in one statement.
    fn look_up_keys(&mut self, batch: &[Envelope]) -> StoreResult<()> {
        let mut keys: Vec<&str> = Vec::new();
        for envelope in batch {
            keys.extend(envelope.idempotency.as_ref().map(|i| i.key.as_str()));
            if let Request::DebitBatch(items) = &envelope.request {
                keys.extend(items.iter().map(|item| item.idempotency.key.as_str()));
            }
        }
        if let Some(journal) = &self.journal {
            // Keys of batches the store does not have yet.
            keys.retain(|key| match journal.key(key) {
                Some(kept) => {
                    self.known.insert(key.to_string(), Some(kept));
                    false
                }
                None => true,
            });
        }
        if keys.is_empty() {
            return Ok(());
        }
        for kept in self.store.idempotency_many(&keys)? {
            self.known
                .insert(kept.key, Some((kept.fingerprint, kept.kept)));
        }
        for key in keys {
            self.known.entry(key.to_string()).or_insert(None);
        }
        Ok(())
    }

    /// Locks these wallets in the transaction in flight (those not locked
    /// yet) and drops any in-memory state another process has moved past:
    /// after this, a cached wallet equals the committed row it locked.
    fn lock(&mut self, ids: &[u128]) -> StoreResult<()> {
        let mut wanted: Vec<u128> = ids
            .iter()
            .copied()
            .filter(|id| !self.locked.contains_key(id))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        wanted.sort_unstable();
        wanted.dedup();
        let mut to_load = Vec::new();
        if self.journal.is_some() {
            // Only this writer changes the store: a cached wallet is current,
            // and one that is not cached is loaded (or found missing).
            for id in wanted {
                match self.wallets.get(&id) {
                    Some(cached) => {
                        self.locked.insert(id, cached.version);
                    }
                    None => to_load.push(id),
                }
            }
        } else {
            for (id, version) in self.store.lock_wallets(&wanted)? {
                if self.wallets.get(&id).is_none_or(|c| c.version != version) {
                    self.wallets.remove(&id);
                    to_load.push(id);
                }
                self.locked.insert(id, version);
            }
        }
        if to_load.is_empty() {
            return Ok(());
        }
        // Wallets not in memory, or moved on by another process, load together.
        for (info, wallet, chain) in self.store()?.load_wallets(&to_load)? {
            // Exclusive: the version is never compared, so it need not be read.
            let version = *self.locked.entry(info.id).or_insert(0);
            let cached = Cached {
                info,
                wallet,
                version,
                chain,
                events: None,
            };
            self.wallets.insert(cached.info.id, cached);
        }
        Ok(())
    }

    /// Keeps the in-memory wallet states within [`WALLET_CACHE_MAX`]. Runs
    /// after a commit, when every cached state equals what is on disk.
    fn bound_cache(&mut self) {
        if self.wallets.len() <= WALLET_CACHE_MAX {
            return;
        }
        // A wallet of an unmerged batch is newer in memory than in the store.
        if let Some(journal) = &self.journal
            && !journal.progress.wait_caught_up()
        {
            return;
        }
        let mut to_drop = WALLET_CACHE_MAX / 10;
        self.wallets.retain(|_, _| {
            let keep = to_drop == 0;
            to_drop = to_drop.saturating_sub(1);
            keep
        });
    }

    /// Writes each touched wallet's balances (adding one to its version)
    /// and every grant that changed. `touched` stays as it is until the
    /// commit succeeds, so a failed commit drops these states too.
    fn flush(&mut self) -> std::result::Result<(), StoreFailure> {
        self.write_pending()?;
        let mut wallets = Vec::with_capacity(self.touched.len());
        let mut grants: Vec<&Grant> = Vec::new();
        for (wallet_id, before) in &self.touched {
            let cached = &self.wallets[wallet_id];
            wallets.push((*wallet_id, &cached.wallet));
            grants.extend(
                cached
                    .wallet
                    .grants
                    .iter()
                    .filter(|grant| before.iter().find(|b| b.id == grant.id) != Some(grant)),
            );
        }
        match self.journal.as_mut().filter(|journal| journal.active) {
            Some(journal) => {
                for (id, wallet) in &wallets {
                    journal.wallet_state(*id, wallet);
                }
                for grant in &grants {
                    journal.grant_state(grant);
                }
            }
            None => self.store.update_states(&wallets, &grants)?,
        }
        for wallet_id in self.touched.keys() {
            let cached = self
                .wallets
                .get_mut(wallet_id)
                .expect("touched wallets are cached");
            cached.version += 1;
        }
        Ok(())
    }

    /// Applies a request, replaying or guarding it by its idempotency key.
    /// A store failure fails the whole batch: the in-memory state may then
    /// be ahead of the transaction, so it is dropped with the rollback.
    fn apply_with_idempotency(
        &mut self,
        request: &Request,
        idempotency: Option<&Idempotency>,
    ) -> std::result::Result<Reply, StoreFailure> {
        if let Some(idempotency) = idempotency
            && let Some(reply) = self.replay(idempotency)?
        {
            // A run that finds its answer already kept (by an earlier run
            // of the same call) still ends, so its campaign is free.
            if let Request::FinishBulkRun {
                promotion_id,
                run_id,
                error,
                ..
            } = request
            {
                let end = RunEnd::Finished {
                    at: chrono::Utc::now(),
                    error: error.clone(),
                };
                match self.end_bulk_run(*promotion_id, *run_id, end) {
                    Err(Error::Unavailable) => return Err(StoreFailure { retryable: false }),
                    Err(Error::Contended) => return Err(StoreFailure { retryable: true }),
                    _ => {}
                }
            }
            return Ok(reply);
        }
        let result = self.apply(request);
        match result {
            Err(Error::Unavailable) => return Err(StoreFailure { retryable: false }),
            Err(Error::Contended) => return Err(StoreFailure { retryable: true }),
            _ => {}
        }
        if let Some(idempotency) = idempotency {
            self.remember(idempotency, &result)?;
        }
        Ok(Reply::Fresh(result))
    }

    fn replay(&mut self, idempotency: &Idempotency) -> StoreResult<Option<Reply>> {
        let kept = match self.known.get(&idempotency.key) {
            Some(known) => known.clone(),
            None => self.store()?.idempotency(&idempotency.key)?,
        };
        Ok(match kept {
            None => None,
            Some((fingerprint, kept)) if fingerprint == idempotency.fingerprint => {
                let stored = match kept {
                    Kept::Response(stored) => stored,
                    // Perhaps a debit of this batch: written out first.
                    kept => {
                        // Perhaps a debit of this batch, or of one the
                        // journal holds and the store does not have yet.
                        self.write_pending()?;
                        let unmerged = match (&kept, &self.journal) {
                            (Kept::Debit(id), Some(journal)) => journal.debit(*id).cloned(),
                            _ => None,
                        };
                        match unmerged {
                            Some(debit) => (self.render)(&Ok(Outcome::Debit(debit))),
                            None => {
                                let render = self.render;
                                kept_response(self.store()?, render, kept)?
                            }
                        }
                    }
                };
                Some(Reply::Replayed(stored))
            }
            Some(_) => Some(Reply::Fresh(Err(Error::idempotency_key_reused()))),
        })
    }

    /// Keeps what a replay answers with: the rendered response, or a
    /// debit's id (see [`Kept`]).
    fn remember(&mut self, idempotency: &Idempotency, result: &Result<Outcome>) -> StoreResult<()> {
        let kept = match result {
            Ok(Outcome::Debit(debit)) => Kept::Debit(debit.id),
            // A key's secret is shown once and never stored, not even for replays.
            Ok(Outcome::ApiKey { key, .. }) => {
                Kept::Response((self.render)(&Ok(Outcome::ApiKey {
                    key: key.clone(),
                    secret: None,
                })))
            }
            Ok(Outcome::WebhookEndpoint { endpoint, .. }) => {
                Kept::Response((self.render)(&Ok(Outcome::WebhookEndpoint {
                    endpoint: endpoint.clone(),
                    secret: None,
                })))
            }
            _ => Kept::Response((self.render)(result)),
        };
        self.known.insert(
            idempotency.key.clone(),
            Some((idempotency.fingerprint, kept.clone())),
        );
        self.pending.responses.push(KeptResponse {
            key: idempotency.key.clone(),
            fingerprint: idempotency.fingerprint,
            kept,
            at: self.clock.now(),
        });
        Ok(())
    }

    /// Applies one request. A store failure comes back as `Error::Unavailable`.
    fn apply(&mut self, request: &Request) -> Result<Outcome> {
        let now = self.clock.now();
        match request {
            Request::CreateCreditSystem {
                key,
                name,
                unit,
                scale,
            } => self.create_credit_system(key, name, unit, *scale, now),
            Request::UpdateCreditSystem { id, name, active } => {
                let mut cs = self.store()?.credit_system(*id)?.ok_or(Error::NotFound {
                    what: "credit system",
                })?;
                if let Some(name) = name {
                    cs.name = checked_text("name", name, TEXT_SHORT_MAX)?;
                }
                if let Some(active) = active {
                    cs.active = *active;
                }
                self.store()?.upsert_credit_system(&cs)?;
                Ok(Outcome::CreditSystem(cs))
            }
            Request::CreateCustomer {
                name,
                email,
                external_id,
                metadata,
            } => {
                let customer = Customer {
                    id: self.ids.next(),
                    name: checked_text("name", name, TEXT_SHORT_MAX)?,
                    email: checked_opt_text("email", email.as_deref())?,
                    external_id: checked_opt_text("external_id", external_id.as_deref())?,
                    metadata: checked_metadata(metadata)?,
                    created_at: now,
                };
                self.save_customer(&customer)?;
                Ok(Outcome::Customer(customer))
            }
            Request::UpdateCustomer {
                id,
                name,
                email,
                external_id,
                metadata,
            } => {
                let mut customer = self
                    .store()?
                    .customer(*id)?
                    .ok_or(Error::NotFound { what: "customer" })?;
                if let Some(name) = name {
                    customer.name = checked_text("name", name, TEXT_SHORT_MAX)?;
                }
                if let Some(email) = email {
                    customer.email = checked_opt_text("email", email.as_deref())?;
                }
                if let Some(external_id) = external_id {
                    customer.external_id = checked_opt_text("external_id", external_id.as_deref())?;
                }
                if let Some(metadata) = metadata {
                    customer.metadata = checked_metadata(metadata)?;
                }
                self.save_customer(&customer)?;
                Ok(Outcome::Customer(customer))
            }
            Request::CreateWallet {
                customer_id,
                credit_system_id,
                overdraft_limit,
                low_balance_threshold,
            } => self.create_wallet(
                *customer_id,
                *credit_system_id,
                overdraft_limit.as_deref(),
                low_balance_threshold.as_deref(),
                now,
            ),
            Request::UpdateWallet {
                id,
                overdraft_limit,
                low_balance_threshold,
            } => self.update_wallet(
                *id,
                overdraft_limit.as_deref(),
                low_balance_threshold.as_ref().map(Option::as_deref),
                now,
            ),
            Request::AddGrant(new) => self.add_grant(new, now),
            Request::VoidGrant { id } => {
                let record = self
                    .store()?
                    .grant(*id)?
                    .ok_or(Error::NotFound { what: "grant" })?;
                self.void(record.wallet_id, *id, now)?;
                let record = self.store()?.grant(*id)?.expect("grant exists");
                let grant = self
                    .current_grant(record.wallet_id, GrantId(*id))
                    .unwrap_or(record.grant.clone());
                Ok(Outcome::Grant(Box::new(GrantRecord { grant, ..record })))
            }
            Request::Debit(new) => self.debit(new, now),
            Request::DebitBatch(items) => {
                let mut replies = Vec::with_capacity(items.len());
                for item in items {
                    let reply = self
                        .apply_with_idempotency(
                            &Request::Debit(item.debit.clone()),
                            Some(&item.idempotency),
                        )
                        .map_err(|failure| match failure.retryable {
                            true => Error::Contended,
                            false => Error::Unavailable,
                        })?;
                    replies.push(reply);
                }
                Ok(Outcome::DebitBatch(replies))
            }
            Request::PlaceHold {
                wallet_id,
                amount,
                expires_in_seconds,
            } => self.place_hold(*wallet_id, amount, *expires_in_seconds, now),
            Request::CaptureHold { id, amount } => self.capture(*id, amount, now),
            Request::ReleaseHold { id } => {
                let hold = self
                    .store()?
                    .hold(*id)?
                    .ok_or(Error::NotFound { what: "hold" })?;
                self.with_wallet(hold.wallet_id, now, |_, wallet, changes| {
                    wallet
                        .release(HoldId(*id), now, changes)
                        .map_err(|r| Error::from_rejection(r, "amount"))
                })?;
                let hold = self.store()?.hold(*id)?.expect("hold exists");
                Ok(Outcome::Hold(hold))
            }
            Request::Materialise { wallet_ids } => {
                for wallet_id in wallet_ids {
                    match self.with_wallet(*wallet_id, now, |_, _, _| Ok(())) {
                        Ok(()) | Err(Error::NotFound { .. }) => {}
                        Err(error) => return Err(error),
                    }
                }
                Ok(Outcome::Done)
            }
            Request::CreateApiKey {
                name,
                scope,
                secret,
            } => {
                let key = ApiKey {
                    id: self.ids.next(),
                    name: checked_text("name", name, TEXT_SHORT_MAX)?,
                    scope: *scope,
                    secret_hash: hash_secret(secret),
                    created_at: now,
                };
                // Only the bootstrap key has a secret chosen outside; two
                // nodes starting with the same one race to store it.
                if self
                    .store()?
                    .api_keys()?
                    .iter()
                    .any(|k| k.secret_hash == key.secret_hash)
                {
                    return Err(Error::conflict(
                        "api_key_exists",
                        "a key with this secret already exists",
                    ));
                }
                self.store()?.insert_api_key(&key)?;
                Ok(Outcome::ApiKey {
                    key,
                    secret: Some(secret.clone()),
                })
            }
            Request::DeleteApiKey { id } => {
                if !self.store()?.delete_api_key(*id)? {
                    return Err(Error::NotFound { what: "API key" });
                }
                Ok(Outcome::Deleted {
                    kind: Kind::ApiKey,
                    id: *id,
                })
            }
            Request::CreatePromotion(new) => self.create_promotion(new, now),
            Request::UpdatePromotion { id, edit } => self.update_promotion(*id, edit, now),
            Request::DeletePromotion { id } => self.delete_promotion(*id),
            Request::GrantPromotion {
                id,
                customer_ids,
                run,
            } => self.grant_promotion(*id, customer_ids, run.as_ref(), now),
            Request::RevokePromotion {
                id,
                customer_ids,
                run,
            } => self.revoke_promotion(*id, customer_ids, run.as_ref(), now),
            Request::ClaimBulkRun(claim) => self.claim_bulk_run(claim),
            Request::FinishBulkRun {
                promotion_id,
                run_id,
                response,
                error,
            } => {
                let end = RunEnd::Finished {
                    at: chrono::Utc::now(),
                    error: error.clone(),
                };
                self.end_bulk_run(*promotion_id, *run_id, end)?;
                Ok(Outcome::Rendered(response.clone()))
            }
            Request::ReleaseBulkRun {
                promotion_id,
                run_id,
            } => {
                let end = RunEnd::Released {
                    at: chrono::Utc::now(),
                };
                self.end_bulk_run(*promotion_id, *run_id, end)?;
                Ok(Outcome::Done)
            }
            Request::PurgeExpired => {
                let before = now - chrono::Duration::hours(IDEMPOTENCY_KEEP_HOURS);
                self.store()?.purge_idempotency(before)?;
                let wall_before =
                    chrono::Utc::now() - chrono::Duration::hours(IDEMPOTENCY_KEEP_HOURS);
                self.store()?.purge_bulk_resumes(wall_before, None)?;
                self.store()?.purge_sessions(chrono::Utc::now())?;
                Ok(Outcome::Done)
            }
            Request::CreateSession(session) => {
                self.store()?.insert_session(session)?;
                Ok(Outcome::Done)
            }
            Request::DeleteSession { token_hash } => {
                self.store()?.delete_session(token_hash)?;
                Ok(Outcome::Done)
            }
            Request::CreateWebhookEndpoint {
                url,
                description,
                event_types,
                secret,
            } => {
                let endpoint = WebhookEndpoint {
                    id: self.ids.next(),
                    url: crate::webhooks::checked_url(url)?,
                    description: checked_opt_text("description", description.as_deref())?,
                    event_types: crate::webhooks::checked_event_types(event_types)?,
                    secret: secret.clone(),
                    enabled: true,
                    created_at: now,
                };
                self.store()?.upsert_webhook_endpoint(&endpoint)?;
                Ok(Outcome::WebhookEndpoint {
                    endpoint: Box::new(endpoint),
                    secret: Some(secret.clone()),
                })
            }
            Request::UpdateWebhookEndpoint {
                id,
                url,
                description,
                event_types,
                enabled,
            } => {
                let mut endpoint = self
                    .store()?
                    .webhook_endpoint(*id)?
                    .ok_or(Error::NotFound {
                        what: "webhook endpoint",
                    })?;
                if let Some(url) = url {
                    endpoint.url = crate::webhooks::checked_url(url)?;
                }
                if let Some(description) = description {
                    endpoint.description = checked_opt_text("description", description.as_deref())?;
                }
                if let Some(types) = event_types {
                    endpoint.event_types = crate::webhooks::checked_event_types(types)?;
                }
                if let Some(enabled) = enabled {
                    endpoint.enabled = *enabled;
                }
                self.store()?.upsert_webhook_endpoint(&endpoint)?;
                Ok(Outcome::WebhookEndpoint {
                    endpoint: Box::new(endpoint),
                    secret: None,
                })
            }
            Request::DeleteWebhookEndpoint { id } => {
                if !self.store()?.delete_webhook_endpoint(*id)? {
                    return Err(Error::NotFound {
                        what: "webhook endpoint",
                    });
                }
                Ok(Outcome::Deleted {
                    kind: Kind::WebhookEndpoint,
                    id: *id,
                })
            }
            Request::DispatchEvents { limit } => self.dispatch_events(*limit),
            Request::ClaimDeliveries { limit, lease } => {
                let wall = chrono::Utc::now();
                let jobs = self
                    .store()?
                    .claim_deliveries(wall, wall + *lease, *limit)?;
                Ok(Outcome::Claimed(jobs))
            }
            Request::FinishAttempts(attempts) => {
                for (attempt, end) in attempts {
                    self.store()?.finish_attempt(attempt, end)?;
                }
                Ok(Outcome::Done)
            }
            Request::ReleaseWaitingDeliveries => {
                let released = self
                    .store()?
                    .release_waiting_deliveries(chrono::Utc::now())?;
                Ok(Outcome::Dispatched(
                    usize::try_from(released).unwrap_or(usize::MAX),
                ))
            }
            Request::Redeliver { id } => {
                if !self.store()?.redeliver(*id, chrono::Utc::now())? {
                    self.store()?.delivery(*id)?.ok_or(Error::NotFound {
                        what: "webhook delivery",
                    })?;
                    return Err(Error::conflict(
                        "delivery_pending",
                        "the delivery is pending: its attempts go on",
                    ));
                }
                let delivery = self.store()?.delivery(*id)?.expect("just redelivered");
                Ok(Outcome::Delivery(Box::new(delivery)))
            }
        }
    }

    /// Fans events out of the outbox: one pending delivery per enabled
    /// endpoint that wants each, in the commit that marks it dispatched. On
    /// PostgreSQL the events are locked as they are read, so two nodes
    /// fan out different events.
    fn dispatch_events(&mut self, limit: usize) -> Result<Outcome> {
        let events = self.store()?.undispatched_events(limit)?;
        if events.is_empty() {
            return Ok(Outcome::Dispatched(0));
        }
        let endpoints = self.store()?.webhook_endpoints()?;
        let wall = chrono::Utc::now();
        let mut deliveries = Vec::new();
        for event in &events {
            for endpoint in endpoints
                .iter()
                .filter(|endpoint| endpoint.enabled && endpoint.wants(event.kind))
            {
                deliveries.push(Delivery {
                    id: self.ids.next(),
                    endpoint_id: endpoint.id,
                    event_id: event.id,
                    event_type: event.kind,
                    wallet_id: event.wallet_id,
                    sequence: event.sequence,
                    status: DeliveryStatus::Pending,
                    attempts: 0,
                    next_attempt_at: Some(wall),
                    retry_from: wall,
                    attempts_before_retry: 0,
                    created_at: wall,
                    last_attempt_at: None,
                    last_status_code: None,
                    last_error: None,
                });
            }
        }
        let store = self.store()?;
        store.insert_deliveries(&deliveries)?;
        let ids: Vec<u128> = events.iter().map(|event| event.id).collect();
        store.mark_dispatched(&ids)?;
        Ok(Outcome::Dispatched(events.len()))
    }

    fn create_credit_system(
        &mut self,
        key: &str,
        name: &str,
        unit: &str,
        scale: u8,
        now: Instant,
    ) -> Result<Outcome> {
        let valid_key = !key.is_empty()
            && key.len() <= 64
            && key
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !valid_key {
            return Err(Error::invalid(
                "key",
                "must be 1 to 64 characters of a-z, 0-9, _ and -",
            ));
        }
        let scale =
            Scale::new(scale).ok_or_else(|| Error::invalid("scale", "must be between 0 and 6"))?;
        if self.store()?.credit_system_by_key(key)?.is_some() {
            return Err(Error::Conflict {
                code: "credit_system_key_taken",
                message: format!("a credit system with key {key:?} already exists"),
                param: Some("key".into()),
            });
        }
        let cs = CreditSystem {
            id: self.ids.next(),
            key: key.to_string(),
            name: checked_text("name", name, TEXT_SHORT_MAX)?,
            unit: checked_text("unit", unit, 32)?,
            scale,
            active: true,
            created_at: now,
        };
        self.store()?.upsert_credit_system(&cs)?;
        Ok(Outcome::CreditSystem(cs))
    }

    fn save_customer(&mut self, customer: &Customer) -> Result<()> {
        if let Some(external_id) = &customer.external_id
            && let Some(other) = self.store()?.customer_by_external_id(external_id)?
            && other.id != customer.id
        {
            return Err(Error::Conflict {
                code: "external_id_taken",
                message: "another customer has this external_id".into(),
                param: Some("external_id".into()),
            });
        }
        self.store()?.upsert_customer(customer)?;
        Ok(())
    }

    fn create_wallet(
        &mut self,
        customer_id: u128,
        credit_system_id: u128,
        overdraft_limit: Option<&str>,
        low_balance_threshold: Option<&str>,
        now: Instant,
    ) -> Result<Outcome> {
        if self.store()?.customer(customer_id)?.is_none() {
            return Err(Error::invalid("customer_id", "no such customer"));
        }
        let cs = self
            .store()?
            .credit_system(credit_system_id)?
            .ok_or_else(|| Error::invalid("credit_system_id", "no such credit system"))?;
        if !cs.active {
            return Err(Error::Conflict {
                code: "credit_system_inactive",
                message: "only active credit systems accept new wallets".into(),
                param: Some("credit_system_id".into()),
            });
        }
        if self
            .store()?
            .wallet_by_owner(customer_id, credit_system_id)?
            .is_some()
        {
            return Err(Error::Conflict {
                code: "wallet_exists",
                message: "this customer already has a wallet in this credit system".into(),
                param: None,
            });
        }
        let limit = match overdraft_limit {
            Some(text) => parse_amount(
                "overdraft_limit",
                text,
                cs.scale,
                Amount::parse_non_negative,
            )?,
            None => Amount::ZERO,
        };
        let info = WalletInfo {
            id: self.ids.next(),
            customer_id,
            credit_system_id,
            scale: cs.scale,
            created_at: now,
            low_balance_threshold: threshold(low_balance_threshold, cs.scale)?,
        };
        let wallet = Wallet::new(limit);
        self.store()?.insert_wallet(&info, &wallet)?;
        // The insert holds the new row's lock until the commit; touched, the
        // new state leaves memory with the batch if the batch fails.
        self.locked.insert(info.id, 0);
        self.touched.insert(info.id, Vec::new());
        let cached = Cached {
            info: info.clone(),
            wallet,
            version: 0,
            chain: ChainHead::START,
            events: Some(0),
        };
        self.wallets.insert(info.id, cached);
        self.wallet_view(info.id, now)
    }

    /// Changes a wallet's overdraft limit and low-balance threshold, both
    /// checked before either is written.
    fn update_wallet(
        &mut self,
        id: u128,
        overdraft_limit: Option<&str>,
        low_balance_threshold: Option<Option<&str>>,
        now: Instant,
    ) -> Result<Outcome> {
        let info = self.with_wallet(id, now, |info, wallet, changes| {
            let mut info = info.clone();
            if let Some(text) = low_balance_threshold {
                info.low_balance_threshold = threshold(text, info.scale)?;
            }
            if let Some(text) = overdraft_limit {
                let limit = parse_amount(
                    "overdraft_limit",
                    text,
                    info.scale,
                    Amount::parse_non_negative,
                )?;
                wallet
                    .set_overdraft_limit(limit, now, changes)
                    .map_err(|r| Error::from_rejection(r, "overdraft_limit"))?;
            }
            Ok(info)
        })?;
        if low_balance_threshold.is_some() {
            self.store()?.update_wallet_info(&info)?;
            self.wallets
                .get_mut(&id)
                .expect("a changed wallet is cached")
                .info = info;
        }
        self.wallet_view(id, now)
    }

    fn add_grant(&mut self, new: &NewGrant, now: Instant) -> Result<Outcome> {
        let grant_id = GrantId(self.ids.next());
        let record = self.with_wallet(new.wallet_id, now, |info, wallet, changes| {
            let amount = parse_amount("amount", &new.amount, info.scale, Amount::parse_positive)?;
            let rollover_max = match &new.rollover_max {
                Some(text) => {
                    parse_amount("rollover_max", text, info.scale, Amount::parse_non_negative)?
                }
                None => Amount::ZERO,
            };
            let terms = GrantTerms {
                amount,
                purpose: new.purpose,
                priority: new.priority.unwrap_or(new.purpose.default_priority()),
                effective_at: new.effective_at.unwrap_or(now),
                expires_at: new.expires_at,
                recurrence: new.recurrence,
                rollover_max,
            };
            let description = checked_opt_text("description", new.description.as_deref())?;
            let metadata = checked_metadata(&new.metadata)?;
            wallet
                .add_grant(grant_id, terms, now, changes)
                .map_err(|r| Error::from_rejection(r, "amount"))?;
            let grant = new_grant_state(wallet, changes, grant_id);
            Ok(GrantRecord {
                grant,
                wallet_id: info.id,
                scale: info.scale,
                description,
                metadata,
                source: Source::Api,
                created_at: now,
            })
        })?;
        // The entries written above reference the grant; insert its row in the same commit.
        self.insert_grant(&record)?;
        Ok(Outcome::Grant(Box::new(record)))
    }

    fn debit(&mut self, new: &NewDebit, now: Instant) -> Result<Outcome> {
        let debit_id = self.ids.next();
        let description = checked_opt_text("description", new.description.as_deref())?;
        let metadata = checked_metadata(&new.metadata)?;
        let record = self.with_wallet(new.wallet_id, now, |info, wallet, changes| {
            let amount = parse_amount("amount", &new.amount, info.scale, Amount::parse_positive)?;
            let allocations = wallet
                .debit(DebitId(debit_id), amount, now, changes)
                .map_err(|r| Error::from_rejection(r, "amount"))?;
            Ok(DebitRecord {
                id: debit_id,
                wallet_id: info.id,
                scale: info.scale,
                amount,
                allocations,
                balance_after: wallet.balance,
                description,
                metadata,
                hold_id: None,
                created_at: now,
            })
        })?;
        self.pending.debits.push(record.clone());
        Ok(Outcome::Debit(record))
    }

    fn place_hold(
        &mut self,
        wallet_id: u128,
        amount: &str,
        expires_in_seconds: Option<i64>,
        now: Instant,
    ) -> Result<Outcome> {
        let seconds = expires_in_seconds.unwrap_or(600);
        if !(1..=credstack_core::wallet::HOLD_SECONDS_MAX).contains(&seconds) {
            return Err(Error::invalid(
                "expires_in_seconds",
                "must be between 1 and 86400",
            ));
        }
        let expires_at = now + chrono::Duration::seconds(seconds);
        let hold_id = self.ids.next();
        let record = self.with_wallet(wallet_id, now, |info, wallet, changes| {
            let amount = parse_amount("amount", amount, info.scale, Amount::parse_positive)?;
            wallet
                .place_hold(HoldId(hold_id), amount, expires_at, now, changes)
                .map_err(|r| Error::from_rejection(r, "amount"))?;
            let hold = wallet.hold(HoldId(hold_id)).expect("placed");
            Ok(HoldRecord {
                id: hold_id,
                wallet_id: info.id,
                scale: info.scale,
                amount,
                reservations: hold.reservations.clone(),
                status: HoldStatus::Active,
                expires_at,
                debit_id: None,
                ended_at: None,
                created_at: now,
            })
        })?;
        self.store()?.insert_hold(&record)?;
        Ok(Outcome::Hold(record))
    }

    fn capture(&mut self, hold_id: u128, amount: &str, now: Instant) -> Result<Outcome> {
        let hold = self
            .store()?
            .hold(hold_id)?
            .ok_or(Error::NotFound { what: "hold" })?;
        let debit_id = self.ids.next();
        let debit = self.with_wallet(hold.wallet_id, now, |info, wallet, changes| {
            let amount = parse_amount("amount", amount, info.scale, Amount::parse_positive)?;
            let allocations = wallet
                .capture(HoldId(hold_id), amount, DebitId(debit_id), now, changes)
                .map_err(|r| Error::from_rejection(r, "amount"))?;
            Ok(DebitRecord {
                id: debit_id,
                wallet_id: info.id,
                scale: info.scale,
                amount,
                allocations,
                balance_after: wallet.balance,
                description: None,
                metadata: Metadata::new(),
                hold_id: Some(hold_id),
                created_at: now,
            })
        })?;
        self.pending.debits.push(debit);
        self.store()?
            .finish_hold(hold_id, HoldStatus::Captured, Some(debit_id), now)?;
        let hold = self.store()?.hold(hold_id)?.expect("hold exists");
        Ok(Outcome::Hold(hold))
    }

    /// Inserts a grant added in this batch. Its row is then as current as
    /// the grants the batch found: `flush` writes it again only if it changes.
    fn insert_grant(&mut self, record: &GrantRecord) -> StoreResult<()> {
        self.write_pending()?;
        match self.journalling() {
            Some(journal) => journal.grant(record),
            None => self.store.insert_grant(record)?,
        }
        if let Some(before) = self.touched.get_mut(&record.wallet_id) {
            before.push(record.grant.clone());
        }
        self.emit(record.wallet_id, crate::events::grant_created(record))
    }

    /// Puts an event in the outbox, in the batch's commit, numbered after
    /// the wallet's last. The wallet is one the batch changed, so it is in
    /// memory and locked, and its version moves with the commit: another
    /// node holding it reloads it, and reads its last event number again.
    fn emit(&mut self, wallet_id: u128, event: crate::events::Emitted) -> StoreResult<()> {
        let known = self
            .wallets
            .get(&wallet_id)
            .and_then(|cached| cached.events);
        let last = match known {
            Some(last) => last,
            None => self.store()?.last_event_sequence(wallet_id)?,
        };
        let cached = self
            .wallets
            .get_mut(&wallet_id)
            .expect("an event's wallet was changed in this batch, so it is cached");
        cached.events = Some(last + 1);
        self.touched
            .entry(wallet_id)
            .or_insert_with(|| cached.wallet.grants.clone());
        let data = crate::events::data_text(&cached.info, event.data);
        self.pending.events.push(EventRecord {
            id: self.ids.next(),
            wallet_id,
            sequence: last + 1,
            kind: event.kind,
            occurred_at: event.at,
            data,
        });
        Ok(())
    }

    /// Voids a grant (rule 14), live or not.
    fn void(&mut self, wallet_id: u128, grant_id: u128, now: Instant) -> Result<()> {
        let live = self.with_wallet(wallet_id, now, |_, wallet, changes| {
            if wallet.grant(GrantId(grant_id)).is_none() {
                return Ok(false);
            }
            wallet
                .void_grant(GrantId(grant_id), now, changes)
                .map_err(|r| Error::from_rejection(r, "amount"))?;
            Ok(true)
        })?;
        if !live {
            self.void_finished_grant(grant_id, now)?;
        }
        Ok(())
    }

    /// Voids a grant that has left the working set (an active grant with
    /// nothing left and nothing to renew): nothing to forfeit, so no entry.
    fn void_finished_grant(&mut self, id: u128, now: Instant) -> Result<()> {
        let mut record = self
            .store()?
            .grant(id)?
            .ok_or(Error::NotFound { what: "grant" })?;
        if record.grant.is_ended() {
            return Err(Error::from_rejection(
                credstack_core::Rejection::GrantAlreadyEnded,
                "amount",
            ));
        }
        record.grant.status = credstack_core::GrantStatus::Voided;
        record.grant.ended_at = Some(now);
        self.store()?.update_grant_state(&record.grant)?;
        self.emit(
            record.wallet_id,
            crate::events::finished_grant_voided(id, now, record.scale),
        )?;
        Ok(())
    }

    fn current_grant(&self, wallet_id: u128, grant_id: GrantId) -> Option<Grant> {
        self.wallets
            .get(&wallet_id)?
            .wallet
            .grant(grant_id)
            .cloned()
    }

    fn wallet_view(&mut self, wallet_id: u128, now: Instant) -> Result<Outcome> {
        self.with_wallet(wallet_id, now, |_, _, _| Ok(()))?;
        let Cached { info, wallet, .. } = &self.wallets[&wallet_id];
        Ok(Outcome::Wallet(Box::new(WalletView {
            info: info.clone(),
            summary: wallet.summary(),
            wallet: wallet.clone(),
            at: now,
        })))
    }

    /// Runs `change` on a wallet brought up to `now`, then writes the
    /// entries and finished objects it produced. Balances and changed
    /// grants are written once per batch by `flush`.
    fn with_wallet<T>(
        &mut self,
        wallet_id: u128,
        now: Instant,
        change: impl FnOnce(&WalletInfo, &mut Wallet, &mut Changes) -> Result<T>,
    ) -> Result<T> {
        // A wallet that exists is locked and in memory after this.
        self.lock(&[wallet_id])?;
        let cached = match self.locked.contains_key(&wallet_id) {
            true => self.wallets.get_mut(&wallet_id),
            false => None,
        };
        let Some(Cached { info, wallet, .. }) = cached else {
            return Err(Error::NotFound { what: "wallet" });
        };
        self.touched
            .entry(wallet_id)
            .or_insert_with(|| wallet.grants.clone());
        let mut changes = Changes::default();
        wallet.materialise(now, &mut changes);
        let result = change(info, wallet, &mut changes);
        let info = info.clone();
        self.persist(&info, changes)?;
        result
    }

    fn persist(&mut self, info: &WalletInfo, changes: Changes) -> Result<()> {
        let cached = self
            .wallets
            .get_mut(&info.id)
            .expect("a changed wallet is cached");
        for entry in &changes.entries {
            let mut record = EntryRecord {
                id: self.ids.next(),
                wallet_id: info.id,
                scale: info.scale,
                sequence: entry.sequence,
                kind: entry.kind,
                amount: entry.amount,
                balance_after: entry.balance_after,
                occurred_at: entry.occurred_at,
                grant_id: entry.grant.map(|g| g.0),
                reference: match entry.reference {
                    Reference::Grant(id) => ids::format(Kind::Grant, id.0),
                    Reference::Debit(id) => ids::format(Kind::Debit, id.0),
                    Reference::Hold(id) => ids::format(Kind::Hold, id.0),
                },
                hash: CHAIN_START,
            };
            record.append_to(&mut cached.chain);
            self.pending.entries.push(record);
        }
        for grant in &changes.finished_grants {
            self.write_grant_state(grant)?;
        }
        for event in crate::events::from_changes(info, &changes) {
            self.emit(info.id, event)?;
        }
        for (hold, end, at) in &changes.finished_holds {
            // Captures record their debit themselves.
            if *end != credstack_core::HoldEnd::Captured {
                self.write_pending()?;
                match self.journalling() {
                    Some(journal) => journal.finish_hold(crate::store::sqlite::finish_hold_values(
                        hold.id.0,
                        (*end).into(),
                        None,
                        *at,
                    )),
                    None => self
                        .store
                        .finish_hold(hold.id.0, (*end).into(), None, *at)?,
                }
            }
        }
        Ok(())
    }
}

/// The response a kept idempotency key answers a replay with: the one kept,
/// or its debit rendered again.
pub fn kept_response(
    store: &mut dyn Store,
    render: Render,
    kept: Kept,
) -> StoreResult<StoredResponse> {
    match kept {
        Kept::Response(response) => Ok(response),
        Kept::Debit(id) => match store.debit(id)? {
            Some(debit) => Ok(render(&Ok(Outcome::Debit(debit)))),
            // Written in the same commit as its key: never missing.
            None => Err(StoreError {
                retryable: false,
                broken: false,
                message: format!("the debit kept for an idempotency key is missing: {id}"),
            }),
        },
    }
}

/// The wallets a request names directly, to lock before the batch runs.
/// Campaign grants and revokes lock theirs as they go, after the campaign
/// row (which serialises them anyway).
fn named_wallets(request: &Request, out: &mut Vec<u128>) {
    match request {
        Request::UpdateWallet { id, .. } => out.push(*id),
        Request::AddGrant(new) => out.push(new.wallet_id),
        Request::Debit(new) => out.push(new.wallet_id),
        Request::DebitBatch(items) => out.extend(items.iter().map(|item| item.debit.wallet_id)),
        Request::PlaceHold { wallet_id, .. } => out.push(*wallet_id),
        Request::Materialise { wallet_ids } => out.extend(wallet_ids),
        _ => {}
    }
}

/// A grant just added, as it stands: usually live, but a grant spent
/// entirely on repaying debt has already left the working set.
fn new_grant_state(wallet: &Wallet, changes: &Changes, id: GrantId) -> Grant {
    wallet
        .grant(id)
        .or_else(|| changes.finished_grants.iter().find(|g| g.id == id))
        .expect("a grant just added is live or finished")
        .clone()
}

// ---- validation helpers -------------------------------------------------------

/// Longest name-like text: names, units, emails, external ids.
const TEXT_SHORT_MAX: usize = 200;
/// Longest description.
const TEXT_LONG_MAX: usize = 1000;
const METADATA_KEYS_MAX: usize = 50;
const METADATA_KEY_MAX: usize = 40;
const METADATA_VALUE_MAX: usize = 500;

fn checked_text(param: &str, text: &str, max: usize) -> Result<String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(Error::invalid(param, "must not be empty"));
    }
    // PostgreSQL text cannot hold NUL; no name or description needs a
    // control character but tab and line breaks.
    if has_control_characters(trimmed) {
        return Err(Error::invalid(param, "must not contain control characters"));
    }
    if trimmed.chars().count() > max {
        return Err(Error::invalid(
            param,
            format!("must be at most {max} characters"),
        ));
    }
    Ok(trimmed.to_string())
}

/// Whether `text` holds a control character other than tab, CR or LF.
pub fn has_control_characters(text: &str) -> bool {
    text.chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
}

fn checked_opt_text(param: &str, text: Option<&str>) -> Result<Option<String>> {
    let max = if param == "description" {
        TEXT_LONG_MAX
    } else {
        TEXT_SHORT_MAX
    };
    text.map(|t| checked_text(param, t, max)).transpose()
}

fn checked_metadata(metadata: &Metadata) -> Result<Metadata> {
    if metadata.len() > METADATA_KEYS_MAX {
        return Err(Error::invalid(
            "metadata",
            format!("must have at most {METADATA_KEYS_MAX} keys"),
        ));
    }
    for (key, value) in metadata {
        if key.is_empty() || key.chars().count() > METADATA_KEY_MAX {
            return Err(Error::invalid(
                "metadata",
                format!("keys must be 1 to {METADATA_KEY_MAX} characters"),
            ));
        }
        if value.chars().count() > METADATA_VALUE_MAX {
            return Err(Error::invalid(
                "metadata",
                format!("values must be at most {METADATA_VALUE_MAX} characters"),
            ));
        }
    }
    Ok(metadata.clone())
}

/// A low-balance threshold: `None` for none, else a non-negative amount.
fn threshold(text: Option<&str>, scale: Scale) -> Result<Option<Amount>> {
    text.map(|text| {
        parse_amount(
            "low_balance_threshold",
            text,
            scale,
            Amount::parse_non_negative,
        )
    })
    .transpose()
}

fn parse_amount(
    param: &str,
    text: &str,
    scale: Scale,
    parse: fn(&str, Scale) -> std::result::Result<Amount, AmountError>,
) -> Result<Amount> {
    parse(text, scale).map_err(|e| Error::invalid(param, format!("{param} {}", e.message(scale))))
}

pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}
