//! Long operations started from the console (a campaign granted to all
//! customers), run in the background with their progress kept in memory so
//! the page can show it. A job belongs to the process that runs it; its
//! effects are in the store, committed chunk by chunk, and a job cut short by
//! a restart is finished by starting it again.

use crate::ledger::BulkOutcome;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

/// Jobs kept for the console to show; older ones are forgotten.
const JOBS_KEPT: usize = 100;

#[derive(Clone, Debug, Default)]
pub struct JobState {
    pub id: u128,
    pub promotion_id: u128,
    /// `grant` or `revoke`.
    pub action: &'static str,
    /// Customers the job expects to consider.
    pub total: u64,
    pub done: u64,
    pub skipped: u64,
    pub skipped_by_reason: BTreeMap<String, u64>,
    pub finished: bool,
    pub error: Option<String>,
}

impl JobState {
    pub fn percent(&self) -> u64 {
        if self.finished || self.total == 0 {
            return 100;
        }
        ((self.done + self.skipped) * 100 / self.total).min(99)
    }

    fn update(&mut self, outcome: &BulkOutcome) {
        self.done = outcome.done_count;
        self.skipped = outcome.skipped_count;
        self.skipped_by_reason = outcome.skipped_by_reason.clone();
    }
}

#[derive(Default)]
pub struct Jobs {
    jobs: Mutex<VecDeque<JobState>>,
}

impl Jobs {
    pub fn start(&self, state: JobState) {
        let mut jobs = self.jobs.lock().expect("jobs lock");
        if jobs.len() >= JOBS_KEPT {
            jobs.pop_front();
        }
        jobs.push_back(state);
    }

    pub fn progress(&self, id: u128, outcome: &BulkOutcome) {
        self.with(id, |job| job.update(outcome));
    }

    /// Marks the job finished; its counts are those of its last progress.
    pub fn finish(&self, id: u128, result: Result<(), String>) {
        self.with(id, |job| {
            job.error = result.err();
            job.finished = true;
        });
    }

    pub fn get(&self, id: u128) -> Option<JobState> {
        let jobs = self.jobs.lock().expect("jobs lock");
        jobs.iter().find(|j| j.id == id).cloned()
    }

    fn with(&self, id: u128, change: impl FnOnce(&mut JobState)) {
        let mut jobs = self.jobs.lock().expect("jobs lock");
        if let Some(job) = jobs.iter_mut().find(|j| j.id == id) {
            change(job);
        }
    }
}
