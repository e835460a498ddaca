//! The writer's side of the embedded store's journal (`store::journal`):
//! which batches go to it, what they write there, and the tail the writer
//! keeps of batches not merged yet.

use super::Request;
use crate::records::{
    Assignment, BulkRun, DebitRecord, GrantRecord, Kept, NewRows, PromotionalCredit,
};
use crate::store::journal::{Body, Journal, Progress};
use crate::store::sqlite::{self, Write};
use credstack_core::{Grant, Instant, Wallet};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

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
/// debit batch ~5 per debit, so ~200,000 debits. This bounds how long a read
/// waits for the merger (at most this much merging: 1.5-1.7 s measured on
/// the 2-core machine at the end of a saturated run, and only while debits
/// arrive faster than it merges), the tail the writer keeps in memory (the
/// keys and debits of those debits) and the merging a start after a crash
/// does before it serves.
pub const LAG_STATEMENTS_MAX: usize = 1_048_576;

/// Debits are journalled, bringing wallets up to date (`Materialise`,
/// before a balance is read and from the sweep), and campaign grants (one
/// call's customers, or a chunk of a call to all): they are the hot paths,
/// and what they write (entries, debits, keys, wallet and grant states,
/// holds that expired; new grants, assignments, the campaign's row and its
/// run's progress) is a closed list. Anything else waits for the journal
/// to be merged and writes directly.
pub fn journals(request: &Request) -> bool {
    matches!(
        request,
        Request::Debit(_)
            | Request::DebitBatch(_)
            | Request::Materialise { .. }
            | Request::GrantPromotion { .. }
    )
}

/// What one batch added to the tail, so it leaves once merged.
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

pub struct Journaled {
    /// The data directory's lock, held while the writer runs.
    _lock: std::fs::File,
    journal: Journal,
    pub progress: Arc<Progress>,
    body: Body,
    /// Whether the batch in flight is journalled.
    pub active: bool,
    /// The number the batch in flight gets in the journal.
    in_flight: u64,
    /// After a failed batch the store may be behind the journal (the
    /// commit may have reached the disk): merge everything before the
    /// store is read again.
    pub drain_first: bool,
    /// What unmerged batches wrote that the writer reads back: keys and
    /// debits (replays), assignments (who holds a campaign already) and
    /// runs (a call to all customers' progress), each with its batch.
    keys: HashMap<String, ([u8; 32], Kept)>,
    debits: HashMap<u128, DebitRecord>,
    assignments: HashMap<(u128, u128), Vec<(u64, Assignment)>>,
    runs: HashMap<u128, (u64, BulkRun)>,
    /// What each unmerged batch added, oldest first.
    batches: VecDeque<Added>,
}

impl Journaled {
    pub fn new(journal: Journal, progress: Arc<Progress>, lock: std::fs::File) -> Journaled {
        Journaled {
            _lock: lock,
            journal,
            progress,
            body: Body::default(),
            active: false,
            in_flight: 0,
            drain_first: false,
            keys: HashMap::new(),
            debits: HashMap::new(),
            assignments: HashMap::new(),
            runs: HashMap::new(),
            batches: VecDeque::new(),
        }
    }

    /// Before a batch: brings the store up to the journal if the batch is
    /// not journalled (or a failure left it unsure), and forgets the tail
    /// the merger has written. False when the merger does not catch up.
    pub fn prepare(&mut self, journalled: bool) -> bool {
        let caught_up = if self.drain_first {
            self.progress.drain_all()
        } else if !journalled {
            self.progress.drain()
        } else {
            true
        };
        if !caught_up {
            return false;
        }
        self.drain_first = false;
        self.active = journalled;
        self.in_flight = self.journal.next();
        let merged = self.progress.merged();
        while self
            .batches
            .front()
            .is_some_and(|added| added.batch <= merged)
        {
            let added = self.batches.pop_front().expect("front exists");
            self.drop_added(added, |batch| batch <= merged);
        }
        true
    }

    /// Takes out of the tail what `added` put there, where `gone` says
    /// its batch is (an assignment or run a later batch wrote stays).
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

    fn current(&mut self) -> &mut Added {
        let batch = self.in_flight;
        if self.batches.back().is_none_or(|added| added.batch != batch) {
            self.batches.push_back(Added {
                batch,
                ..Added::default()
            });
        }
        self.batches.back_mut().expect("just pushed")
    }

    /// Journals rows, and keeps their keys and debits in the tail (taking
    /// them: the batch's pending rows are done with once journalled).
    pub fn record(&mut self, rows: NewRows) {
        for entry in &rows.entries {
            self.body.push(Write::Entry, &sqlite::entry_values(entry));
        }
        for debit in rows.debits {
            self.body.push(Write::Debit, &sqlite::debit_values(&debit));
            self.current().debits.push(debit.id);
            self.debits.insert(debit.id, debit);
        }
        for kept in rows.responses {
            self.body.push(Write::Key, &sqlite::key_values(&kept));
            self.current().keys.push(kept.key.clone());
            self.keys.insert(kept.key, (kept.fingerprint, kept.kept));
        }
        for event in &rows.events {
            self.body.push(Write::Event, &sqlite::event_values(event));
        }
    }

    pub fn grant(&mut self, record: &GrantRecord) {
        self.body.push(Write::Grant, &sqlite::grant_values(record));
    }

    pub fn assignment(&mut self, assignment: &Assignment) {
        self.body
            .push(Write::Assignment, &sqlite::assignment_values(assignment));
        let pair = (assignment.promotional_credit_id, assignment.customer_id);
        let batch = self.in_flight;
        self.current().assignments.push(pair);
        self.assignments
            .entry(pair)
            .or_default()
            .push((batch, assignment.clone()));
    }

    /// A campaign's row. Not kept in the tail: a journalled batch changes
    /// only its `applied` mark, from false to true, and anything else that
    /// changes it waits for the merge.
    pub fn promotion(&mut self, promotion: &PromotionalCredit) {
        self.body
            .push(Write::Promotion, &sqlite::promotion_values(promotion));
    }

    pub fn bulk_run(&mut self, run: &BulkRun) {
        self.body
            .push(Write::BulkRun, &sqlite::bulk_run_values(run));
        let batch = self.in_flight;
        self.current().runs.push(run.promotional_credit_id);
        self.runs
            .insert(run.promotional_credit_id, (batch, run.clone()));
    }

    /// Assignments of unmerged batches of this campaign and customer
    /// active at `now`.
    pub fn active_assignments(
        &self,
        campaign: u128,
        customer: u128,
        now: Instant,
    ) -> impl Iterator<Item = &Assignment> {
        self.assignments
            .get(&(campaign, customer))
            .into_iter()
            .flatten()
            .map(|(_, assignment)| assignment)
            .filter(move |assignment| assignment.is_active(now))
    }

    /// The campaign's run as an unmerged batch left it.
    pub fn run(&self, campaign: u128) -> Option<&BulkRun> {
        self.runs.get(&campaign).map(|(_, run)| run)
    }

    pub fn wallet_state(&mut self, id: u128, wallet: &Wallet) {
        self.body.push(
            Write::WalletState,
            &sqlite::wallet_state_values(id, wallet, 1),
        );
    }

    pub fn grant_state(&mut self, grant: &Grant) {
        self.body
            .push(Write::GrantState, &sqlite::grant_state_values(grant));
    }

    pub fn finish_hold(&mut self, values: Vec<rusqlite::types::Value>) {
        self.body.push(Write::FinishHold, &values);
    }

    /// A key of an unmerged batch.
    pub fn key(&self, key: &str) -> Option<([u8; 32], Kept)> {
        self.keys.get(key).cloned()
    }

    /// A debit of an unmerged batch.
    pub fn debit(&self, id: u128) -> Option<&DebitRecord> {
        self.debits.get(&id)
    }

    /// Appends the batch and commits it; waits first if the merger is
    /// [`LAG_MAX`] batches behind.
    pub fn commit(&mut self) -> Result<(), String> {
        let batch = self.journal.next();
        let statements = self.body.statements();
        self.current().statements = statements;
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
        self.progress.committed(batch);
        Ok(())
    }

    /// The batch the merger must reach before `batch` (holding
    /// `statements`) commits: [`LAG_MAX`] batches and
    /// [`LAG_STATEMENTS_MAX`] statements may wait unmerged.
    fn wait_for(&self, batch: u64, statements: usize) -> Option<u64> {
        let merged = self.progress.merged();
        let mut through = batch.saturating_sub(LAG_MAX);
        let waiting = self
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

    /// Drops what the failed batch in flight recorded.
    pub fn forget_batch(&mut self) {
        self.body.clear();
        let in_flight = self.in_flight;
        while self
            .batches
            .back()
            .is_some_and(|added| added.batch >= in_flight)
        {
            let added = self.batches.pop_back().expect("back exists");
            self.drop_added(added, |batch| batch >= in_flight);
        }
        self.drain_first = true;
        self.active = false;
    }
}
