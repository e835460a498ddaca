//! [`Journalled`], the embedded store's [`Sink`]: a batch of ledger changes
//! only (debits, bringing wallets up to date, campaign grants) is one row
//! of the journal (`store::journal`), committed durably and published to
//! readers (`store::tail`) before its callers hear back, and merged into
//! `credstack.db` behind by the merger thread. Any other batch first waits
//! until the journal is merged, then runs on `credstack.db` directly
//! ([`Direct`]).
//!
//! Who writes `credstack.db`: the merger, for journalled batches; this
//! sink's [`Direct`], for the others, only once the merger has caught up
//! and while the writer waits for nothing else, so the two never write at
//! the same time and never out of order (a direct batch always follows
//! every journalled batch before it). One process serves a data directory
//! (`credstack.lock`): nothing else writes it.
//!
//! Owns: the batch's journal row and published tail, and the writer's index
//! of unmerged batches ([`View`]: keys, debits, assignments, runs, what a
//! later batch reads back before the merger has written it).
//! May not: know requests; read the clock.

use super::sink::{Change, Direct, Sink, StoreFailure};
use crate::records::{Assignment, BulkRun, DebitRecord, Kept, KeptResponse};
use crate::store::journal::{Body, Journal, Progress};
use crate::store::tail::{Batch, Tail};
use crate::store::{Overlay, Store, StoreResult};
use credstack_core::Instant;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

/// How many committed batches may wait for the merger before the writer
/// waits for it: what bounds the tail in memory and the work at restart.
///
/// Both bounds are set for throughput under saturation (BENCHMARKS.md,
/// section 7, step 17): the merger's cost per debit falls as its
/// transactions grow (a page a merge dirties carries more debits), and a
/// backlog is what lets them grow. With 256 batches and 262,144 statements
/// the writer waited on nearly every merge and the merger took small ones:
/// ~49,000 debits/s and a p99 of ~190 ms, against ~70,000/s and ~5 ms here.
pub const LAG_MAX: u64 = 1024;

/// How many statements committed batches may hold unmerged before the
/// writer waits: a campaign's batch of 1,000 customers holds ~4,000, a
/// debit batch ~5 per debit, so ~200,000 debits. This bounds the tail kept
/// in memory (the writer's index and the readers' published batches) and
/// the merging a start after a crash does before it serves. Reads never
/// wait for it (`store::tail`).
pub const LAG_STATEMENTS_MAX: usize = 1_048_576;

/// What one batch added to the writer's index, so it leaves once merged.
#[derive(Default)]
struct Added {
    batch: u64,
    statements: usize,
    keys: Vec<String>,
    debits: Vec<u128>,
    /// (campaign, customer) of each assignment.
    assignments: Vec<(u128, u128)>,
    /// Campaigns whose run moved.
    runs: Vec<u128>,
}

/// What unmerged batches wrote that a later batch reads back, each with
/// its batch: keys and debits (replays), assignments (who holds a
/// campaign already) and runs (a call to all customers' progress).
#[derive(Default)]
struct Index {
    keys: HashMap<String, ([u8; 32], Kept)>,
    debits: HashMap<u128, Arc<DebitRecord>>,
    assignments: HashMap<(u128, u128), Vec<(u64, Assignment)>>,
    runs: HashMap<u128, (u64, BulkRun)>,
    /// What each unmerged batch added, oldest first.
    batches: VecDeque<Added>,
}

impl Index {
    fn current(&mut self, batch: u64) -> &mut Added {
        if self.batches.back().is_none_or(|added| added.batch != batch) {
            self.batches.push_back(Added {
                batch,
                ..Added::default()
            });
        }
        self.batches.back_mut().expect("just pushed")
    }

    /// Takes out what `added` put in, where `gone` says its batch is (an
    /// assignment or run a later batch wrote stays).
    fn drop_added(&mut self, added: Added, gone: impl Fn(u64) -> bool) {
        for key in &added.keys {
            self.keys.remove(key);
        }
        for id in &added.debits {
            self.debits.remove(id);
        }
        for pair in &added.assignments {
            if let Some(kept) = self.assignments.get_mut(pair) {
                kept.retain(|(batch, _)| !gone(*batch));
                if kept.is_empty() {
                    self.assignments.remove(pair);
                }
            }
        }
        for campaign in &added.runs {
            if self
                .runs
                .get(campaign)
                .is_some_and(|(batch, _)| gone(*batch))
            {
                self.runs.remove(campaign);
            }
        }
    }
}

/// The writer's connection to `credstack.db` with the index of unmerged
/// batches laid over it: what every batch reads through.
struct View {
    under: Box<dyn Store>,
    index: Arc<Mutex<Index>>,
}

fn lock(index: &Mutex<Index>) -> MutexGuard<'_, Index> {
    index.lock().unwrap_or_else(|e| e.into_inner())
}

impl Overlay for View {
    fn under(&mut self) -> &mut dyn Store {
        &mut *self.under
    }

    fn idempotency(&mut self, key: &str) -> StoreResult<Option<([u8; 32], Kept)>> {
        if let Some(kept) = lock(&self.index).keys.get(key).cloned() {
            return Ok(Some(kept));
        }
        self.under.idempotency(key)
    }

    fn idempotency_many(&mut self, keys: &[&str]) -> StoreResult<Vec<KeptResponse>> {
        let mut found = Vec::new();
        let mut rest = Vec::new();
        {
            let index = lock(&self.index);
            for key in keys {
                match index.keys.get(*key) {
                    Some((fingerprint, kept)) => found.push(KeptResponse {
                        key: key.to_string(),
                        fingerprint: *fingerprint,
                        kept: kept.clone(),
                        // Not read by the writer: the purge reads the store.
                        at: Instant::MIN_UTC,
                    }),
                    None => rest.push(*key),
                }
            }
        }
        if !rest.is_empty() {
            found.extend(self.under.idempotency_many(&rest)?);
        }
        Ok(found)
    }

    fn debit(&mut self, id: u128) -> StoreResult<Option<DebitRecord>> {
        if let Some(debit) = lock(&self.index).debits.get(&id) {
            return Ok(Some(DebitRecord::clone(debit)));
        }
        self.under.debit(id)
    }

    fn active_assignments(
        &mut self,
        promotion_id: u128,
        customer_id: u128,
        now: Instant,
    ) -> StoreResult<Vec<Assignment>> {
        let mut active = self
            .under
            .active_assignments(promotion_id, customer_id, now)?;
        let index = lock(&self.index);
        let unmerged = index
            .assignments
            .get(&(promotion_id, customer_id))
            .into_iter()
            .flatten()
            .map(|(_, assignment)| assignment)
            .filter(|assignment| assignment.is_active(now));
        for assignment in unmerged {
            // A merged batch may still be indexed: count it once.
            if !active.iter().any(|a| a.id == assignment.id) {
                active.push(assignment.clone());
            }
        }
        Ok(active)
    }

    fn bulk_run(&mut self, promotion_id: u128) -> StoreResult<Option<BulkRun>> {
        if let Some((_, run)) = lock(&self.index).runs.get(&promotion_id) {
            return Ok(Some(run.clone()));
        }
        self.under.bulk_run(promotion_id)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The batch in flight is journalled.
    Journal,
    /// The batch in flight runs on `credstack.db` directly.
    Direct,
}

pub struct Journalled {
    /// The data directory's lock, held while the writer runs.
    _lock: std::fs::File,
    journal: Journal,
    progress: Arc<Progress>,
    /// Where committed batches are published for readers until merged.
    tail: Arc<Tail>,
    /// Batches that are not journalled; its store is the [`View`].
    direct: Direct,
    index: Arc<Mutex<Index>>,
    mode: Mode,
    body: Body,
    /// What the batch in flight publishes once committed.
    staged: Batch,
    /// The number the batch in flight gets in the journal.
    in_flight: u64,
    /// After a failed batch the store may be behind the journal (the
    /// commit may have reached the disk): merge everything before the
    /// store is read again.
    drain_first: bool,
}

impl Journalled {
    pub fn new(
        store: Box<dyn Store>,
        connect: super::sink::Connect,
        journal: Journal,
        progress: Arc<Progress>,
        tail: Arc<Tail>,
        lock: std::fs::File,
    ) -> Journalled {
        let index = Arc::new(Mutex::new(Index::default()));
        let view = |under: Box<dyn Store>, index: &Arc<Mutex<Index>>| -> Box<dyn Store> {
            Box::new(View {
                under,
                index: index.clone(),
            })
        };
        let reconnect_index = index.clone();
        let connect: super::sink::Connect =
            Box::new(move || Ok(view(connect()?, &reconnect_index)));
        Journalled {
            _lock: lock,
            journal,
            progress,
            tail,
            direct: Direct::new(view(store, &index), connect, false),
            index,
            mode: Mode::Direct,
            body: Body::default(),
            staged: Batch::default(),
            in_flight: 0,
            drain_first: false,
        }
    }

    /// Journals one change, indexes what later batches read back of it,
    /// and stages what readers will see once it commits.
    fn journal(&mut self, change: Change) {
        self.body.push_change(&change);
        let batch = self.in_flight;
        let mut index = lock(&self.index);
        let staged = &mut self.staged;
        match change {
            Change::Entry(entry) => staged.entries.push(entry),
            Change::Debit(debit) => {
                let debit = Arc::new(debit);
                index.current(batch).debits.push(debit.id);
                index.debits.insert(debit.id, debit.clone());
                staged.debits.push(debit);
            }
            Change::Key(kept) => {
                index.current(batch).keys.push(kept.key.clone());
                let value = (kept.fingerprint, kept.kept);
                index.keys.insert(kept.key.clone(), value.clone());
                staged.keys.insert(kept.key, value);
            }
            Change::Event(event) => staged.events.push(event),
            Change::WalletState(info, wallet, grants) => {
                for grant in grants {
                    staged.grant_states.insert(grant.id.0, grant);
                }
                staged.wallets.insert(info.id, (info, wallet));
            }
            Change::GrantState(grant) => {
                staged.grant_states.insert(grant.id.0, grant);
            }
            Change::HoldFinished {
                id,
                status,
                debit_id,
                at,
            } => {
                staged.holds.insert(id, (status, debit_id, at));
            }
            Change::Grant(record) => staged.grants.push(record),
            Change::Assignment(assignment) => {
                let pair = (assignment.promotional_credit_id, assignment.customer_id);
                index.current(batch).assignments.push(pair);
                index
                    .assignments
                    .entry(pair)
                    .or_default()
                    .push((batch, assignment.clone()));
                staged.assignments.push(assignment);
            }
            // A journalled batch changes only a campaign's `applied` mark,
            // from false to true; anything else that changes the row waits
            // for the merge, so it need not be indexed.
            Change::Promotion(promotion) => {
                staged.promotions.insert(promotion.id, promotion);
            }
            Change::BulkRun(run) => {
                let campaign = run.promotional_credit_id;
                index.current(batch).runs.push(campaign);
                index.runs.insert(campaign, (batch, run.clone()));
                staged.runs.insert(campaign, run);
            }
        }
    }

    /// Forgets what the merger has written, from the index and from the
    /// tail: here, on the writer's thread, which has time to spare, rather
    /// than on the merger's, the bottleneck under load (a merged batch's
    /// records are freed as it leaves). A read filters by its snapshot's
    /// mark, so a merged batch left in the tail a little longer is harmless.
    fn forget_merged(&mut self) {
        let merged = self.progress.merged();
        self.tail.merged(merged);
        let mut index = lock(&self.index);
        while index
            .batches
            .front()
            .is_some_and(|added| added.batch <= merged)
        {
            let added = index.batches.pop_front().expect("front exists");
            index.drop_added(added, |batch| batch <= merged);
        }
    }

    /// The batch the merger must reach before `batch` (holding
    /// `statements`) commits: [`LAG_MAX`] batches and
    /// [`LAG_STATEMENTS_MAX`] statements may wait unmerged.
    fn wait_for(&self, batch: u64, statements: usize) -> Option<u64> {
        let merged = self.progress.merged();
        let index = lock(&self.index);
        let mut through = batch.saturating_sub(LAG_MAX);
        let waiting = index
            .batches
            .iter()
            .filter(|added| added.batch > merged && added.batch < batch);
        let mut unmerged = statements + waiting.clone().map(|a| a.statements).sum::<usize>();
        for added in waiting {
            if unmerged <= LAG_STATEMENTS_MAX {
                break;
            }
            unmerged -= added.statements;
            through = through.max(added.batch);
        }
        (through > merged).then_some(through)
    }

    /// Appends the batch and commits it; waits first if the merger is
    /// [`LAG_MAX`] batches behind. Then publishes it to readers.
    fn commit_journalled(&mut self) -> Result<(), String> {
        let batch = self.journal.next();
        let statements = self.body.statements();
        lock(&self.index).current(batch).statements = statements;
        if let Some(through) = self.wait_for(batch, statements)
            && !self.progress.wait_merged(through)
        {
            return Err("the journal's merger fell behind and does not catch up".into());
        }
        let merged = self.progress.merged();
        self.journal
            .append(&self.body, merged)
            .map_err(|e| format!("appending to the journal: {e}"))?;
        self.body.clear();
        // Durable: readers see it from now on, before its callers hear back.
        let mut staged = std::mem::take(&mut self.staged);
        staged.number = batch;
        self.tail.publish(staged);
        self.progress.committed(batch);
        Ok(())
    }
}

impl Sink for Journalled {
    /// A batch of ledger changes only is journalled; any other first
    /// waits until the store holds the whole journal (and after a failure,
    /// whatever the journal holds, committed as far as the writer knows or
    /// not). False when the merger does not catch up.
    fn begin(&mut self, ledger_only: bool) -> Result<(), StoreFailure> {
        let caught_up = if self.drain_first {
            self.progress.drain_all()
        } else if !ledger_only {
            self.progress.drain()
        } else {
            true
        };
        if !caught_up {
            tracing::error!(
                "the journal is not being merged into the store; see the merger's errors"
            );
            return Err(StoreFailure { retryable: false });
        }
        self.drain_first = false;
        self.in_flight = self.journal.next();
        self.forget_merged();
        if ledger_only {
            self.mode = Mode::Journal;
        } else {
            self.mode = Mode::Direct;
            self.direct.begin(false)?;
        }
        Ok(())
    }

    fn store(&mut self) -> StoreResult<&mut dyn Store> {
        // A journalled batch begins nothing on the store: its reads see
        // what is committed, through the index of what is not merged.
        self.direct.store()
    }

    fn write(&mut self, change: Change) -> StoreResult<()> {
        match self.mode {
            Mode::Journal => {
                self.journal(change);
                Ok(())
            }
            Mode::Direct => self.direct.write(change),
        }
    }

    fn lock_wallets(&mut self, _ids: &[u128]) -> StoreResult<Option<Vec<(u128, i64)>>> {
        // One process serves a data directory: the cached wallets are current.
        Ok(None)
    }

    fn commit(&mut self) -> Result<(), StoreFailure> {
        match self.mode {
            Mode::Journal => self.commit_journalled().map_err(|error| {
                tracing::error!(%error, "the batch was not journalled");
                StoreFailure { retryable: false }
            }),
            Mode::Direct => self.direct.commit(),
        }
    }

    fn rollback(&mut self) {
        match self.mode {
            Mode::Journal => {
                self.body.clear();
                self.staged = Batch::default();
                let in_flight = self.in_flight;
                let mut index = lock(&self.index);
                while index
                    .batches
                    .back()
                    .is_some_and(|added| added.batch >= in_flight)
                {
                    let added = index.batches.pop_back().expect("back exists");
                    index.drop_added(added, |batch| batch >= in_flight);
                }
            }
            Mode::Direct => self.direct.rollback(),
        }
        self.drain_first = true;
    }

    /// A wallet of an unmerged batch is newer in memory than in the store.
    fn settled(&mut self) -> bool {
        self.progress.wait_caught_up()
    }

    fn stop(&mut self) {
        self.progress.stop();
    }
}
