//! The writer's side of the embedded store's journal (`store::journal`):
//! which batches go to it, what they write there, and the tail the writer
//! keeps of batches not merged yet.

use super::Request;
use crate::records::{DebitRecord, Kept, NewRows};
use crate::store::journal::{Body, Journal, Progress};
use crate::store::sqlite::{self, Write};
use credstack_core::{Grant, Wallet};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// How many committed batches may wait for the merger before the writer
/// waits for it: what bounds the tail in memory and the work at restart.
pub const LAG_MAX: u64 = 256;

/// Debits are journalled, and bringing wallets up to date (`Materialise`,
/// before a balance is read and from the sweep): they are the hot path, and
/// what they write (entries, debits, keys, wallet and grant states, holds
/// that expired) is a closed list. Anything else waits for the journal to
/// be merged and writes directly.
pub fn journals(request: &Request) -> bool {
    matches!(
        request,
        Request::Debit(_) | Request::DebitBatch(_) | Request::Materialise { .. }
    )
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
    /// Keys and debits of journalled batches not merged yet.
    keys: HashMap<String, ([u8; 32], Kept)>,
    debits: HashMap<u128, DebitRecord>,
    /// What each unmerged batch added to `keys` and `debits`, oldest first.
    batches: VecDeque<(u64, Vec<String>, Vec<u128>)>,
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
        while let Some((batch, _, _)) = self.batches.front()
            && *batch <= merged
        {
            let (_, keys, debits) = self.batches.pop_front().expect("front exists");
            keys.iter().for_each(|key| {
                self.keys.remove(key);
            });
            debits.iter().for_each(|id| {
                self.debits.remove(id);
            });
        }
        true
    }

    fn current(&mut self) -> &mut (u64, Vec<String>, Vec<u128>) {
        let batch = self.in_flight;
        if self.batches.back().is_none_or(|(b, _, _)| *b != batch) {
            self.batches.push_back((batch, Vec::new(), Vec::new()));
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
            self.current().2.push(debit.id);
            self.debits.insert(debit.id, debit);
        }
        for kept in rows.responses {
            self.body.push(Write::Key, &sqlite::key_values(&kept));
            self.current().1.push(kept.key.clone());
            self.keys.insert(kept.key, (kept.fingerprint, kept.kept));
        }
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
        if batch > LAG_MAX && !self.progress.wait_merged(batch - LAG_MAX) {
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

    /// Drops what the failed batch in flight recorded.
    pub fn forget_batch(&mut self) {
        self.body.clear();
        while let Some((batch, _, _)) = self.batches.back()
            && *batch >= self.in_flight
        {
            let (_, keys, debits) = self.batches.pop_back().expect("back exists");
            keys.iter().for_each(|key| {
                self.keys.remove(key);
            });
            debits.iter().for_each(|id| {
                self.debits.remove(id);
            });
        }
        self.drain_first = true;
        self.active = false;
    }
}
