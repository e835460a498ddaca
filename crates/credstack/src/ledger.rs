//! The ledger service: the Rust API that the HTTP layer, the CLI and the
//! benchmarks call. Writes go to the single writer ([`Engine`]); reads run on
//! a pool of read connections and see every write acknowledged before them
//! (on the embedded store, the journal's unmerged tail laid over the store:
//! `store::tail`), never waiting for the merger. Before a
//! wallet-scoped read, a wallet with an event due is brought up to date
//! through the writer, so reads never show stale state (SPEC rule 11); a
//! background sweep does the same for wallets nobody reads.
//!
//! Why this file is past ~800 lines: it holds three things a caller meets
//! through `Ledger` alone — the read and write API, a campaign's call to all
//! customers (`to_all`: a sequence of writer requests under a lease), and
//! opening each store (lock, journal, pools). The next cut is `ledger/` with
//! `open.rs` and `bulk.rs`, each behind the same `Ledger`.

use crate::clock::{AdvanceError, Clock};
use crate::engine::journaled::Journalled;
use crate::engine::sink::{Direct, Sink};
use crate::engine::{BulkClaim, Engine, Idempotency, Outcome, Render, Reply, Request, RunStep};
use crate::error::{Error, Result};
use crate::ids::Generator;
use crate::metrics::Metrics;
use crate::records::{ApiKey, Scope};
use crate::store::journal::Progress as JournalProgress;
use crate::store::tail::{Overlaid, Tail};
use crate::store::{self, Store, StoreResult};
use credstack_core::Instant;
use r2d2_sqlite::SqliteConnectionManager;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Wallets brought up to date per sweep request.
const SWEEP_CHUNK: usize = 1000;
/// Least time between two reloads of the key cache caused by unknown keys.
const KEY_RELOAD_MIN: Duration = Duration::from_secs(1);
/// Read connections kept open.
const READERS_MAX: u32 = 16;

#[derive(Clone)]
pub struct Ledger {
    inner: Arc<Inner>,
}

/// The pool reads run on.
#[derive(Clone)]
enum Readers {
    /// With the journal's tail, laid over each read's snapshot.
    Embedded(r2d2::Pool<SqliteConnectionManager>, Arc<Unmerged>),
    Postgres(store::postgres::Pool),
}

/// The embedded store's journal, as readers see it.
struct Unmerged {
    tail: Arc<Tail>,
    progress: Arc<JournalProgress>,
}

struct Inner {
    engine: Engine,
    /// Always `Some` until `Inner` is dropped (see its `Drop`).
    readers: Option<Readers>,
    clock: Arc<Clock>,
    api_keys: RwLock<Vec<ApiKey>>,
    /// When a missed key last reloaded `api_keys`.
    keys_reloaded: std::sync::Mutex<Option<std::time::Instant>>,
    render: Render,
    metrics: Arc<Metrics>,
    /// The embedded store's journal: how far it is merged.
    journal: Option<Arc<JournalProgress>>,
}

impl Drop for Inner {
    /// The synchronous PostgreSQL client closes its connection with a
    /// blocking call, which panics on an async runtime's thread, where the
    /// last handle to a ledger is usually dropped: close the read pool on a
    /// thread of its own.
    fn drop(&mut self) {
        if let Some(readers @ Readers::Postgres(_)) = self.readers.take() {
            let closing = std::thread::spawn(move || drop(readers));
            if tokio::runtime::Handle::try_current().is_err() {
                let _ = closing.join();
            }
        }
    }
}

/// Where the ledger keeps its data.
#[derive(Clone, Debug)]
pub enum Backend {
    /// The embedded store: one SQLite file in this directory.
    Embedded { data_dir: PathBuf },
    /// A PostgreSQL database, shared with any other credstack process
    /// pointed at it. `readers` is the size of the read pool; the writer
    /// holds one more connection.
    Postgres { url: String, readers: u32 },
}

pub struct Config {
    pub backend: Backend,
    pub clock: Clock,
    pub render: Render,
}

impl Ledger {
    /// Opens (creating and migrating) the store and starts the writer.
    pub fn open(config: Config) -> std::result::Result<Ledger, String> {
        // The synchronous PostgreSQL client cannot run on an async
        // runtime's thread, and callers may be on one: open on a thread of
        // our own.
        let backend = &config.backend;
        let (sink, readers, api_keys, progress) = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let (mut store, connect, readers, progress) = match backend {
                        Backend::Embedded { data_dir } => {
                            let lock = lock_data_dir(data_dir)?;
                            // The journal first: what it holds is merged at
                            // the schema it was written against, then the
                            // store is migrated.
                            let (journal, unmerged) = open_journal(data_dir)?;
                            let (store, connect, pool) = open_embedded(data_dir)?;
                            let progress = unmerged.progress.clone();
                            let readers = Readers::Embedded(pool, Arc::new(unmerged));
                            (store, connect, readers, Some((journal, progress, lock)))
                        }
                        Backend::Postgres { url, readers } => {
                            let (store, connect, readers) = open_postgres(url, *readers)?;
                            (store, connect, readers, None)
                        }
                    };
                    let api_keys = store.api_keys().map_err(|e| e.to_string())?;
                    // The embedded store journals; PostgreSQL, shared with
                    // other processes, is written directly.
                    let (sink, progress): (Box<dyn Sink>, _) = match (progress, &readers) {
                        (Some((journal, progress, lock)), Readers::Embedded(_, unmerged)) => (
                            Box::new(Journalled::new(
                                store,
                                connect,
                                journal,
                                progress.clone(),
                                unmerged.tail.clone(),
                                lock,
                            )),
                            Some(progress),
                        ),
                        _ => (Box::new(Direct::new(store, connect, true)), None),
                    };
                    Ok::<_, String>((sink, readers, api_keys, progress))
                })
                .join()
                .map_err(|_| "opening the store panicked".to_string())?
        })?;
        let clock = Arc::new(config.clock);
        let metrics = Arc::new(Metrics::default());
        let (engine, _writer) = Engine::start(
            sink,
            clock.clone(),
            Arc::new(Generator::default()),
            config.render,
            metrics.clone(),
        );
        Ok(Ledger {
            inner: Arc::new(Inner {
                engine,
                readers: Some(readers),
                clock,
                api_keys: RwLock::new(api_keys),
                keys_reloaded: std::sync::Mutex::new(None),
                render: config.render,
                metrics,
                journal: progress,
            }),
        })
    }

    /// Every metric as `/v1/metrics` serves it, the journal's lag read now.
    pub fn render_metrics(&self) -> String {
        if let Some(journal) = &self.inner.journal {
            self.inner.metrics.journal_unmerged(journal.lag());
        }
        self.inner.metrics.render()
    }

    /// The ledger's metrics, to count into.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    pub fn now(&self) -> Instant {
        self.inner.clock.now()
    }

    /// Submits a write and waits until it is durable.
    pub async fn submit(&self, request: Request, idempotency: Option<Idempotency>) -> Reply {
        let is_key_change = matches!(
            request,
            Request::CreateApiKey { .. } | Request::DeleteApiKey { .. }
        );
        let reply = self.inner.engine.submit(request, idempotency).await;
        if is_key_change && matches!(reply, Reply::Fresh(Ok(_))) {
            self.reload_api_keys().await;
        }
        reply
    }

    /// Submits a write that carries no idempotency key.
    pub async fn execute(&self, request: Request) -> Result<Outcome> {
        match self.submit(request, None).await {
            Reply::Fresh(result) => result,
            Reply::Replayed(_) => unreachable!("no idempotency key was given"),
        }
    }

    /// Runs a read on a pooled read connection, off the async runtime. It
    /// sees every write acknowledged before it began, and one snapshot
    /// throughout; on the embedded store it never waits for the journal's
    /// merger but for a campaign's customer counts and list right after
    /// that campaign's grants (`store::tail`).
    pub async fn read<T, F>(&self, query: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn Store) -> StoreResult<T> + Send + 'static,
    {
        let readers = self
            .inner
            .readers
            .clone()
            .expect("readers live as long as the ledger");
        let outcome = tokio::task::spawn_blocking(move || {
            let result = match readers {
                Readers::Embedded(pool, unmerged) => {
                    pool.get().map_err(Into::into).and_then(|mut c| {
                        let mut overlaid =
                            Overlaid::open(&mut c, &unmerged.tail, &unmerged.progress)?;
                        let result = query(&mut overlaid);
                        let ended = overlaid.end();
                        let value = result?;
                        ended.map(|()| value)
                    })
                }
                Readers::Postgres(pool) => pool
                    .get()
                    .map_err(Into::into)
                    .and_then(|mut c| query(&mut *c)),
            };
            result.map_err(Error::from)
        })
        .await;
        outcome.unwrap_or(Err(Error::Unavailable))
    }

    /// Brings a wallet up to date before a read if an event is due.
    pub async fn ensure_current(&self, wallet_id: u128) -> Result<()> {
        let next = self
            .read(move |c| c.wallet_next_event_at(wallet_id))
            .await?;
        if next.is_some_and(|at| at <= self.now()) {
            self.execute(Request::Materialise {
                wallet_ids: vec![wallet_id],
            })
            .await?;
        }
        Ok(())
    }

    /// Brings every wallet with an event due up to date. Returns how many
    /// wallets it touched.
    pub async fn sweep(&self) -> Result<usize> {
        let mut total = 0;
        loop {
            let now = self.now();
            let due = self.read(move |c| c.due_wallets(now, SWEEP_CHUNK)).await?;
            if due.is_empty() {
                return Ok(total);
            }
            total += due.len();
            self.execute(Request::Materialise { wallet_ids: due })
                .await?;
        }
    }

    /// Moves the simulated clock and materialises everything due by then.
    pub async fn advance_clock(&self, to: Instant) -> std::result::Result<Instant, AdvanceError> {
        let at = self.inner.clock.advance(to)?;
        if let Err(error) = self.sweep().await {
            tracing::warn!(
                ?error,
                "sweep after clock advance failed; reads will catch up"
            );
        }
        Ok(at)
    }

    /// Waits until the embedded store's journal is merged into the store,
    /// so the next start has nothing to merge: a server stopping calls it
    /// once its last request is answered. Nothing depends on it for
    /// durability (the journal is durable), only the next start's time.
    pub async fn settle(&self) {
        if let Some(journal) = self.inner.journal.clone() {
            let merged = tokio::task::spawn_blocking(move || journal.drain_all()).await;
            if !matches!(merged, Ok(true)) {
                tracing::warn!(
                    "the journal was not merged before stopping; the next start merges it"
                );
            }
        }
    }

    /// Runs the background sweep and idempotency purge until the process ends.
    pub fn spawn_background(&self) {
        let ledger = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            let mut ticks: u64 = 0;
            loop {
                tick.tick().await;
                ticks += 1;
                if let Err(error) = ledger.sweep().await {
                    tracing::warn!(?error, "background sweep failed");
                }
                // Keys created or deleted by other nodes.
                if ticks.is_multiple_of(2) {
                    ledger.reload_api_keys().await;
                }
                if ticks % 7200 == 1 {
                    let _ = ledger.execute(Request::PurgeExpired).await;
                }
            }
        });
    }

    /// The key whose secret this is, compared by SHA-256 in constant time.
    /// Keys are cached in memory; on a miss the cache is reloaded from the
    /// store (at most once per [`KEY_RELOAD_MIN`], so wrong keys cannot
    /// load the database), so a key created on another node works here at
    /// once. The background task reloads the cache too, so a key deleted
    /// on another node stops working here within a second.
    pub async fn authenticate(&self, secret: &str) -> Option<ApiKey> {
        let hash = crate::engine::hash_secret(secret);
        if let Some(key) = self.cached_key(&hash) {
            return Some(key);
        }
        let due = {
            let mut last = self.inner.keys_reloaded.lock().expect("key reload lock");
            let due = last.is_none_or(|at| at.elapsed() >= KEY_RELOAD_MIN);
            if due {
                *last = Some(std::time::Instant::now());
            }
            due
        };
        if due {
            self.reload_api_keys().await;
            return self.cached_key(&hash);
        }
        None
    }

    fn cached_key(&self, hash: &[u8; 32]) -> Option<ApiKey> {
        use subtle::ConstantTimeEq;
        let keys = self.inner.api_keys.read().expect("key cache lock");
        keys.iter()
            .find(|k| bool::from(k.secret_hash.ct_eq(hash)))
            .cloned()
    }

    /// The scope of the key with this id, if the key still exists.
    pub fn api_key_scope(&self, id: u128) -> Option<Scope> {
        let keys = self.inner.api_keys.read().expect("key cache lock");
        keys.iter().find(|k| k.id == id).map(|k| k.scope)
    }

    pub fn has_api_keys(&self) -> bool {
        !self
            .inner
            .api_keys
            .read()
            .expect("key cache lock")
            .is_empty()
    }

    async fn reload_api_keys(&self) {
        match self.read(|c| c.api_keys()).await {
            Ok(keys) => *self.inner.api_keys.write().expect("key cache lock") = keys,
            Err(error) => tracing::error!(?error, "cannot reload API keys"),
        }
    }

    /// Makes sure an admin key with this secret exists (the bootstrap key).
    pub async fn ensure_admin_key(&self, secret: &str) -> Result<()> {
        if self
            .authenticate(secret)
            .await
            .is_some_and(|k| k.scope == Scope::Admin)
        {
            return Ok(());
        }
        let created = self
            .execute(Request::CreateApiKey {
                name: "bootstrap".into(),
                scope: Scope::Admin,
                secret: secret.to_string(),
            })
            .await;
        match created {
            Ok(_) => Ok(()),
            // Another node starting with the same key stored it first.
            Err(Error::Conflict {
                code: "api_key_exists",
                ..
            }) => {
                self.reload_api_keys().await;
                match self.cached_key(&crate::engine::hash_secret(secret)) {
                    Some(key) if key.scope == Scope::Admin => Ok(()),
                    _ => Err(Error::Unavailable),
                }
            }
            Err(error) => Err(error),
        }
    }
}

/// Customers handled per commit when a campaign goes to all customers.
pub const BULK_CHUNK: usize = 1000;
/// How many granted, revoked and skipped items a bulk call lists; the
/// counts stay whole.
pub const BULK_LIST_MAX: usize = 100;

/// Called after each commit of a call to all customers.
pub type Progress<'a> = dyn Fn(&BulkOutcome) + Send + Sync + 'a;

/// What a grant or revoke to all customers did: the first
/// [`BULK_LIST_MAX`] items of each list and the whole counts.
#[derive(Clone, Debug, Default)]
pub struct BulkOutcome {
    pub done: Vec<crate::records::Assignment>,
    pub skipped: Vec<(u128, credstack_core::promotion::Skip)>,
    pub done_count: u64,
    pub skipped_count: u64,
    /// Whole counts of skipped customers by reason.
    pub skipped_by_reason: std::collections::BTreeMap<String, u64>,
}

impl BulkOutcome {
    fn add(
        &mut self,
        done: Vec<crate::records::Assignment>,
        skipped: Vec<(u128, credstack_core::promotion::Skip)>,
    ) {
        self.done_count += done.len() as u64;
        self.skipped_count += skipped.len() as u64;
        for (_, reason) in &skipped {
            *self
                .skipped_by_reason
                .entry(reason.as_str().to_string())
                .or_default() += 1;
        }
        let room = BULK_LIST_MAX.saturating_sub(self.done.len());
        self.done.extend(done.into_iter().take(room));
        let room = BULK_LIST_MAX.saturating_sub(self.skipped.len());
        self.skipped.extend(skipped.into_iter().take(room));
    }
}

/// How long a call to all customers keeps its campaign without finishing
/// a chunk (wall clock). Chunks take well under a second; past this, the
/// call is taken to have died with its process and another may take over.
/// Only liveness hangs on it: a call that was merely slow and got taken
/// over finds out at its next chunk (`bulk_run_taken_over`) before it
/// changes anything.
pub const BULK_LEASE_SECONDS: i64 = 10;
/// How often a repeat of a call to all customers that is still running
/// (same key, same request) checks whether it has finished.
const BULK_POLL: Duration = Duration::from_millis(200);

/// What a call to all customers does to each customer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BulkAction {
    Grant,
    Revoke,
}

/// A call to all customers of a campaign.
#[derive(Clone, Debug)]
pub struct BulkCall {
    pub action: BulkAction,
    pub promotion_id: u128,
    pub idempotency: Option<Idempotency>,
    /// The run's id; the console shows it as the job's id.
    pub run_id: u128,
    /// Customers the caller expects the call to consider, for progress.
    pub total: Option<u64>,
}

impl BulkCall {
    pub fn new(
        action: BulkAction,
        promotion_id: u128,
        idempotency: Option<Idempotency>,
    ) -> BulkCall {
        BulkCall {
            action,
            promotion_id,
            idempotency,
            run_id: ulid::Ulid::generate().0,
            total: None,
        }
    }
}

/// How a call to all customers starts.
#[derive(Clone, Debug)]
pub enum Claimed {
    /// The same keyed call finished before: its answer.
    Replayed(crate::records::StoredResponse),
    /// The campaign is this call's; it starts after `cursor`.
    Started {
        cursor: Option<u128>,
        counts: crate::records::BulkCounts,
    },
}

impl BulkAction {
    pub fn as_str(self) -> &'static str {
        match self {
            BulkAction::Grant => "grant",
            BulkAction::Revoke => "revoke",
        }
    }
}

impl Ledger {
    /// Grants a campaign to every customer with a wallet in its credit
    /// system (SPEC rule 22), or revokes it from every customer holding an
    /// assignment that is not revoked (rule 24), [`BULK_CHUNK`] customers
    /// per commit, in customer id order. Each chunk commits atomically, so
    /// a call cut short leaves every customer either fully done or
    /// untouched.
    ///
    /// One call runs per campaign at a time, whichever node it reaches: a
    /// second gets `409 bulk_run_in_progress`; a repeat of the running
    /// call (same idempotency key, same request) waits for it and replays
    /// its response. A call whose process died is taken over once its
    /// lease ([`BULK_LEASE_SECONDS`]) passes; a retry with its key resumes
    /// after the last chunk it committed, so nobody is granted twice even
    /// when the campaign allows multiple grants.
    ///
    /// `render` makes the response body kept under the key; `progress`
    /// sees the outcome so far after each commit.
    pub async fn to_all(
        &self,
        call: BulkCall,
        progress: &Progress<'_>,
        render: &(dyn Fn(&BulkOutcome) -> serde_json::Value + Send + Sync),
    ) -> Reply {
        match self.claim_to_all(&call).await {
            Ok(Claimed::Replayed(stored)) => Reply::Replayed(stored),
            Ok(Claimed::Started { cursor, counts }) => {
                self.run_to_all(&call, cursor, counts, progress, render)
                    .await
            }
            Err(error) => Reply::Fresh(Err(error)),
        }
    }

    /// The first half of [`Ledger::to_all`]: replays a finished keyed
    /// call, waits for a running repeat of this call, refuses while another
    /// call runs, or claims the campaign for this one.
    pub async fn claim_to_all(&self, call: &BulkCall) -> Result<Claimed> {
        loop {
            if let Some(idempotency) = &call.idempotency
                && let Some(stored) = self.stored_response(idempotency).await?
            {
                return Ok(Claimed::Replayed(stored));
            }
            let wall_now = chrono::Utc::now();
            let claim = crate::engine::BulkClaimRequest {
                promotion_id: call.promotion_id,
                run_id: call.run_id,
                action: call.action.as_str().to_string(),
                idempotency: call.idempotency.clone(),
                wall_now,
                lease_until: wall_now + chrono::Duration::seconds(BULK_LEASE_SECONDS),
                total: call.total,
            };
            match self.execute(Request::ClaimBulkRun(claim)).await? {
                Outcome::BulkClaim(BulkClaim::Started { cursor, counts }) => {
                    return Ok(Claimed::Started { cursor, counts });
                }
                Outcome::BulkClaim(BulkClaim::Replayed(stored)) => {
                    return Ok(Claimed::Replayed(stored));
                }
                Outcome::BulkClaim(BulkClaim::Busy {
                    same_call: true, ..
                }) => tokio::time::sleep(BULK_POLL).await,
                Outcome::BulkClaim(BulkClaim::Busy { action, .. }) => {
                    return Err(Error::conflict(
                        "bulk_run_in_progress",
                        format!(
                            "a {action} to all customers of this promotional credit is already running; wait for it to finish"
                        ),
                    ));
                }
                other => unreachable!("a claim answers a claim: {other:?}"),
            }
        }
    }

    /// The second half of [`Ledger::to_all`]: runs a claimed call from
    /// `cursor` and ends it, keeping its answer under its key.
    pub async fn run_to_all(
        &self,
        call: &BulkCall,
        cursor: Option<u128>,
        counts: crate::records::BulkCounts,
        progress: &Progress<'_>,
        render: &(dyn Fn(&BulkOutcome) -> serde_json::Value + Send + Sync),
    ) -> Reply {
        let (promotion_id, run_id) = (call.promotion_id, call.run_id);
        let result = self
            .run_chunks(call.action, promotion_id, run_id, cursor, counts, progress)
            .await;
        let (response, error) = match result {
            Ok(outcome) => {
                let response = crate::records::StoredResponse {
                    status: 200,
                    body: render(&outcome).to_string(),
                };
                (response, None)
            }
            Err(error @ (Error::Unavailable | Error::Contended)) => {
                // Nothing to keep: let a retry start (or, with the key,
                // resume) at once rather than after the lease.
                let release = Request::ReleaseBulkRun {
                    promotion_id,
                    run_id,
                };
                if let Err(release_error) = self.execute(release).await {
                    tracing::warn!(
                        ?release_error,
                        "cannot release a failed call to all customers; its lease will pass"
                    );
                }
                return Reply::Fresh(Err(error));
            }
            // Another call (perhaps this one's retry) owns the run now and
            // will keep the answer; keep nothing under the key here.
            Err(
                error @ Error::Conflict {
                    code: "bulk_run_taken_over",
                    ..
                },
            ) => return Reply::Fresh(Err(error)),
            Err(error) => {
                let response = (self.inner.render)(&Err(error));
                let body: serde_json::Value =
                    serde_json::from_str(&response.body).unwrap_or_default();
                let message = body["error"]["message"]
                    .as_str()
                    .unwrap_or("the call to all customers failed")
                    .to_string();
                (response, Some(message))
            }
        };
        let finish = Request::FinishBulkRun {
            promotion_id,
            run_id,
            response,
            error,
        };
        self.submit(finish, call.idempotency.clone()).await
    }

    async fn run_chunks(
        &self,
        action: BulkAction,
        promotion_id: u128,
        run_id: u128,
        mut cursor: Option<u128>,
        counts: crate::records::BulkCounts,
        progress: &Progress<'_>,
    ) -> Result<BulkOutcome> {
        let promotion =
            self.read(move |c| c.promotion(promotion_id))
                .await?
                .ok_or(Error::NotFound {
                    what: "promotional credit",
                })?;
        let credit_system_id = promotion.credit_system_id;
        let mut outcome = BulkOutcome {
            done_count: counts.done,
            skipped_count: counts.skipped,
            skipped_by_reason: counts.skipped_by_reason,
            ..BulkOutcome::default()
        };
        loop {
            let after = cursor;
            let chunk = match action {
                // Wallets are created outside the journal: the chunk after
                // need not wait for the previous one's merge.
                BulkAction::Grant => {
                    self.read(move |c| {
                        c.customers_with_wallets(credit_system_id, after, BULK_CHUNK)
                    })
                    .await?
                }
                BulkAction::Revoke => {
                    self.read(move |c| {
                        c.customers_with_open_assignments(promotion_id, after, BULK_CHUNK)
                    })
                    .await?
                }
            };
            let Some(&last) = chunk.last() else {
                return Ok(outcome);
            };
            let run = Some(RunStep {
                run_id,
                cursor: last,
                lease_until: chrono::Utc::now() + chrono::Duration::seconds(BULK_LEASE_SECONDS),
            });
            let request = match action {
                BulkAction::Grant => Request::GrantPromotion {
                    id: promotion_id,
                    customer_ids: chunk,
                    run,
                },
                BulkAction::Revoke => Request::RevokePromotion {
                    id: promotion_id,
                    customer_ids: chunk,
                    run,
                },
            };
            match self.execute(request).await? {
                Outcome::PromotionGrant(grant) => outcome.add(grant.granted, grant.skipped),
                Outcome::PromotionRevoke(revoke) => outcome.add(revoke.revoked, revoke.skipped),
                other => unreachable!("a chunk answers a grant or revoke: {other:?}"),
            }
            cursor = Some(last);
            progress(&outcome);
        }
    }

    /// The response kept under an idempotency key, if the key was used
    /// with this same request; a 409 if it was used with another.
    pub async fn stored_response(
        &self,
        idempotency: &Idempotency,
    ) -> Result<Option<crate::records::StoredResponse>> {
        let key = idempotency.key.clone();
        let fingerprint = idempotency.fingerprint;
        let render = self.inner.render;
        let found = self
            .read(move |c| match c.idempotency(&key)? {
                Some((kept_fingerprint, kept)) if kept_fingerprint == fingerprint => {
                    Ok(Some(Ok(crate::engine::kept_response(c, render, kept)?)))
                }
                Some(_) => Ok(Some(Err(()))),
                None => Ok(None),
            })
            .await?;
        match found {
            None => Ok(None),
            Some(Ok(stored)) => Ok(Some(stored)),
            Some(Err(())) => Err(Error::idempotency_key_reused()),
        }
    }
}

/// How long opening an embedded store waits for the process that served
/// it last (a ledger being dropped, a server stopping) to let it go.
const DATA_DIR_LOCK_WAIT: Duration = Duration::from_secs(10);

/// Takes the data directory's lock (`credstack.lock`, an OS file lock the
/// kernel releases when the process ends, killed or not): one process
/// serves an embedded store, so its writer can trust the wallet states it
/// keeps in memory without asking the store whether another process moved
/// them.
/// [`lock_data_dir`] without waiting: `Err` when a process holds it.
fn try_lock_data_dir(data_dir: &Path) -> std::result::Result<std::fs::File, String> {
    let file = lock_file(data_dir)?;
    file.try_lock().map_err(|e| e.to_string())?;
    Ok(file)
}

fn lock_file(data_dir: &Path) -> std::result::Result<std::fs::File, String> {
    let path = data_dir.join("credstack.lock");
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))
}

fn lock_data_dir(data_dir: &Path) -> std::result::Result<std::fs::File, String> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| format!("cannot create data directory {}: {e}", data_dir.display()))?;
    let file = lock_file(data_dir)?;
    let started = std::time::Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if started.elapsed() < DATA_DIR_LOCK_WAIT => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(format!(
                    "another credstack process is serving {}: an embedded store has one server",
                    data_dir.display()
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(format!("cannot lock {}: {e}", data_dir.display()));
            }
        }
    }
}

/// The merger's page cache (`PRAGMA cache_size`), in KiB.
const MERGER_CACHE_KIB: i64 = 256 * 1024;

/// Opens the embedded store's journal: merges whatever a stopped or killed
/// process left in it, then starts the merger (`store::journal`).
fn open_journal(
    data_dir: &Path,
) -> std::result::Result<(store::journal::Journal, Unmerged), String> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| format!("cannot create data directory {}: {e}", data_dir.display()))?;
    let path = database_path(data_dir);
    let cannot = |e: rusqlite::Error| format!("cannot open {}: {e}", path.display());
    let main = store::sqlite::open_unmigrated(&path).map_err(cannot)?;
    let journal_path = store::journal::path(data_dir);
    let journal = store::journal::open(&journal_path)?;
    // A merge dirties many pages once each: with SQLite's default 2 MiB
    // cache they spill to the WAL mid-transaction and are read back.
    main.pragma_update(None, "cache_size", -MERGER_CACHE_KIB)
        .map_err(|e| format!("cannot configure {}: {e}", path.display()))?;
    // The merger writes rows the writer built from wallets it had loaded:
    // their references hold, and checking each again is a lookup per row.
    main.pragma_update(None, "foreign_keys", false)
        .map_err(|e| format!("cannot configure {}: {e}", path.display()))?;
    // A journal with batches was written by a process that had the store at
    // its schema; an empty one (a new store, say) has nothing to merge.
    if store::journal::holds_batches(&journal).map_err(cannot)? {
        merge_left_over(&main, &journal)?;
    }
    store::sqlite::migrate(&main).map_err(cannot)?;
    let merged = store::journal::merged_mark(&main).map_err(cannot)?;
    let progress = Arc::new(JournalProgress::starting_at(merged));
    let tail = Arc::new(Tail::default());
    store::journal::spawn_merger(main, journal, progress.clone());
    let journal = store::journal::Journal::open(&journal_path, merged)?;
    Ok((journal, Unmerged { tail, progress }))
}

/// Merges the batches a journal holds beyond the store's mark, returning the mark.
fn merge_left_over(
    main: &rusqlite::Connection,
    journal: &rusqlite::Connection,
) -> std::result::Result<u64, String> {
    let started = std::time::Instant::now();
    let mut first = None;
    let merged = store::journal::merge_all(main, journal, |batch| {
        first.get_or_insert(batch);
    })
    .map_err(|e| format!("cannot merge the journal: {e}"))?;
    if first.is_some() {
        tracing::info!(
            merged_through = merged,
            seconds = started.elapsed().as_secs_f64(),
            "merged the journal left by the last run"
        );
    }
    Ok(merged)
}

/// The embedded store's connections: the writer's, how to open it again,
/// and the readers' pool.
type Embedded = (
    Box<dyn Store>,
    crate::engine::Connect,
    r2d2::Pool<SqliteConnectionManager>,
);

fn open_embedded(data_dir: &Path) -> std::result::Result<Embedded, String> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| format!("cannot create data directory {}: {e}", data_dir.display()))?;
    let path = database_path(data_dir);
    let connection =
        open_writer(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let manager = SqliteConnectionManager::file(&path).with_init(|c| {
        c.busy_timeout(Duration::from_secs(5))?;
        c.pragma_update(None, "query_only", true)
    });
    let readers = r2d2::Pool::builder()
        .max_size(READERS_MAX)
        .min_idle(Some(1))
        .build(manager)
        .map_err(|e| e.to_string())?;
    let connect: crate::engine::Connect = Box::new(move || {
        let connection = open_writer(&path)?;
        Ok(Box::new(connection) as Box<dyn Store>)
    });
    Ok((Box::new(connection), connect, readers))
}

/// How much of `credstack.db` the writer's connection maps into memory.
const WRITER_MMAP_BYTES: i64 = 1 << 31;

/// The writer's connection. It reads the store while the merger writes it,
/// and each merge resets its page cache: mapped, a page read again is a
/// memory read rather than a `pread` (five per campaign customer before).
fn open_writer(path: &Path) -> rusqlite::Result<rusqlite::Connection> {
    let connection = store::sqlite::open(path)?;
    connection.pragma_update(None, "mmap_size", WRITER_MMAP_BYTES)?;
    Ok(connection)
}

fn open_postgres(
    url: &str,
    readers: u32,
) -> std::result::Result<(Box<dyn Store>, crate::engine::Connect, Readers), String> {
    let cannot = |e: &dyn std::fmt::Display| format!("cannot open the PostgreSQL database: {e}");
    let config = store::postgres::parse_url(url).map_err(|e| cannot(&e))?;
    let created = store::postgres::create_database_if_missing(&config)
        .map_err(|e| cannot(&store::postgres::describe(&e)))?;
    if created {
        tracing::info!(database = ?config.get_dbname(), "created the PostgreSQL database");
    }
    let pool = store::postgres::open_pool(url, readers).map_err(|e| cannot(&e))?;
    let client =
        store::postgres::connect(&config).map_err(|e| cannot(&store::postgres::describe(&e)))?;
    let connect: crate::engine::Connect = Box::new(move || {
        let client = store::postgres::connect(&config)?;
        Ok(Box::new(client) as Box<dyn Store>)
    });
    Ok((Box::new(client), connect, Readers::Postgres(pool)))
}

/// One connection to an existing store, migrated, for the commands that
/// work on a store without serving it (`verify`). Unlike `serve`, it
/// creates nothing: a missing embedded store is an error.
pub fn open_store(backend: &Backend) -> std::result::Result<Box<dyn Store>, String> {
    match backend {
        Backend::Embedded { data_dir } => {
            let path = database_path(data_dir);
            if !path.is_file() {
                return Err(format!("no credstack store at {}", path.display()));
            }
            let cannot = |e: rusqlite::Error| format!("cannot open {}: {e}", path.display());
            let connection = store::sqlite::open_unmigrated(&path).map_err(cannot)?;
            // A store no process serves may hold journalled batches its last
            // server did not merge (it was killed): merge them (at the schema
            // they were written against, before migrating), so what is read
            // here is everything acknowledged. A serving process merges its
            // own; reading beside it sees a consistent earlier state.
            let journal_path = store::journal::path(data_dir);
            if journal_path.is_file()
                && let Ok(lock) = try_lock_data_dir(data_dir)
            {
                let journal = store::journal::open(&journal_path)?;
                if store::journal::holds_batches(&journal).map_err(cannot)? {
                    merge_left_over(&connection, &journal)?;
                }
                drop(lock);
            }
            store::sqlite::migrate(&connection).map_err(cannot)?;
            Ok(Box::new(connection))
        }
        Backend::Postgres { url, .. } => {
            let cannot = |e: String| format!("cannot open the PostgreSQL database: {e}");
            let config = store::postgres::parse_url(url).map_err(|e| cannot(e.to_string()))?;
            let mut client = store::postgres::connect(&config)
                .map_err(|e| cannot(store::postgres::describe(&e)))?;
            store::postgres::migrate(&mut client)
                .map_err(|e| cannot(store::postgres::describe(&e)))?;
            Ok(Box::new(client))
        }
    }
}

pub fn database_path(data_dir: &Path) -> PathBuf {
    data_dir.join("credstack.db")
}

/// A new API key secret: `csk_` and 32 random bytes in hex.
pub fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("csk_{}", hex::encode(bytes))
}
