//! The journal's tail: what committed batches wrote that the merger has not
//! written into `credstack.db` yet (`store::journal`), published by the
//! writer after each durable commit, and [`Overlaid`], a [`Store`] that
//! lays it over a read snapshot of `credstack.db`, so a read answers from
//! everything acknowledged before it without waiting for the merger.
//!
//! Owns: [`Batch`] (one committed batch's records, never changed once
//! published), [`Tail`] (the unmerged batches, oldest first, shared by the
//! writer, which publishes them and drops those the merger has merged, and
//! the readers) and [`Overlaid`].
//! May not: write a store, read a clock, or know requests or wire formats.
//!
//! *Why a read sees every acknowledged write.* A reader takes the tail
//! first, then opens a read transaction on `credstack.db` and reads the
//! mark merged through there (`journal_merged`); it keeps the batches past
//! the mark. A batch leaves the tail only after its merge committed, and
//! the mark only moves on, so the tail it took holds every batch its
//! snapshot lacks, and a caller hears back only after the batch is in the
//! tail.
//!
//! *Invariant*: everything in the tail is newer than everything in the
//! store: the writer writes `credstack.db` directly only once the journal
//! is merged (`engine`), so a tail debit, entry, event or grant has a larger
//! id (and an entry a larger sequence) than any of its wallet's in the
//! store, and a list merges by putting the tail before (newest first) or
//! after (oldest first) the store's page.

use super::journal::Progress;
use super::{PurposeLedger, Store, StoreError, StoreResult};
use crate::records::*;
use credstack_core::{Amount, Grant, Instant, Purpose, Wallet};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What one committed batch wrote that a read may ask for.
#[derive(Default)]
pub struct Batch {
    pub number: u64,
    /// Each wallet's state after the batch.
    pub wallets: HashMap<u128, (WalletInfo, Wallet)>,
    pub entries: Vec<EntryRecord>,
    /// Shared with the writer's index of unmerged debits (replays).
    pub debits: Vec<Arc<DebitRecord>>,
    pub keys: HashMap<String, ([u8; 32], Kept)>,
    pub events: Vec<EventRecord>,
    /// Grants the batch created (a campaign's).
    pub grants: Vec<GrantRecord>,
    /// Grant states after the batch, live or finished.
    pub grant_states: HashMap<u128, Grant>,
    /// Holds the batch finished (expired): status, debit, when.
    pub holds: HashMap<u128, (HoldStatus, Option<u128>, Instant)>,
    pub assignments: Vec<Assignment>,
    pub promotions: HashMap<u128, PromotionalCredit>,
    pub runs: HashMap<u128, BulkRun>,
}

/// The committed batches not merged yet, oldest first.
#[derive(Default)]
pub struct Tail {
    batches: Mutex<Arc<[Arc<Batch>]>>,
}

impl Tail {
    fn lock(&self) -> std::sync::MutexGuard<'_, Arc<[Arc<Batch>]>> {
        self.batches.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a batch once it is durable, before its callers hear back.
    pub fn publish(&self, batch: Batch) {
        let mut batches = self.lock();
        let mut next: Vec<Arc<Batch>> = batches.iter().cloned().collect();
        next.push(Arc::new(batch));
        *batches = next.into();
    }

    /// Drops the batches merged through `through`, once that merge committed.
    pub fn merged(&self, through: u64) {
        let mut batches = self.lock();
        if batches.first().is_some_and(|b| b.number <= through) {
            let left: Vec<Arc<Batch>> = batches
                .iter()
                .filter(|b| b.number > through)
                .cloned()
                .collect();
            *batches = left.into();
        }
    }

    /// The batches not merged now, to take before a read snapshot.
    pub fn snapshot(&self) -> Arc<[Arc<Batch>]> {
        self.lock().clone()
    }
}

/// A read-only store: a connection to `credstack.db` in a read
/// transaction merged through some mark, with the tail's batches past that
/// mark laid over it.
pub struct Overlaid<'a> {
    under: &'a mut rusqlite::Connection,
    /// The tail as taken before the snapshot.
    tail: Arc<[Arc<Batch>]>,
    /// Its batches past the snapshot's mark, oldest first.
    batches: Vec<Arc<Batch>>,
    progress: &'a Progress,
}

impl<'a> Overlaid<'a> {
    /// Takes the tail, then begins a read snapshot on `under` (a connection
    /// in no transaction) and lays the batches it lacks over it. End it
    /// with [`Overlaid::end`].
    pub fn open(
        under: &'a mut rusqlite::Connection,
        tail: &Tail,
        progress: &'a Progress,
    ) -> StoreResult<Overlaid<'a>> {
        let tail = tail.snapshot();
        let mut overlaid = Overlaid {
            under,
            tail,
            batches: Vec::new(),
            progress,
        };
        overlaid.begin()?;
        Ok(overlaid)
    }

    fn begin(&mut self) -> StoreResult<()> {
        self.under.execute_batch("BEGIN DEFERRED")?;
        // The snapshot's first read: the batch it is merged through.
        let merged: i64 = self
            .under
            .query_row("SELECT batch FROM journal_merged", [], |r| r.get(0))?;
        self.batches = self
            .tail
            .iter()
            .filter(|batch| batch.number > merged as u64)
            .cloned()
            .collect();
        Ok(())
    }

    /// Ends the read snapshot.
    pub fn end(self) -> StoreResult<()> {
        Ok(super::sqlite::rollback(self.under)?)
    }

    /// For what the tail cannot answer: waits until the merger has written
    /// batch `number`, then reads on a new snapshot (which holds it).
    fn catch_up(&mut self, number: u64) -> StoreResult<()> {
        super::sqlite::rollback(self.under)?;
        if !self.progress.wait_merged(number) {
            return Err(StoreError {
                retryable: false,
                broken: false,
                message: "a read waited too long for the journal's merger".into(),
            });
        }
        self.begin()
    }

    /// The newest batch holding an assignment of this campaign.
    fn last_assigning(&self, promotion_id: u128) -> Option<u64> {
        self.newest()
            .find(|batch| {
                batch
                    .assignments
                    .iter()
                    .any(|a| a.promotional_credit_id == promotion_id)
            })
            .map(|batch| batch.number)
    }

    /// Newest first.
    fn newest(&self) -> impl Iterator<Item = &Batch> {
        self.batches.iter().rev().map(|b| &**b)
    }

    fn state(&self, wallet_id: u128) -> Option<&(WalletInfo, Wallet)> {
        self.newest()
            .find_map(|batch| batch.wallets.get(&wallet_id))
    }

    fn grant_state(&self, grant_id: u128) -> Option<&Grant> {
        self.newest()
            .find_map(|batch| batch.grant_states.get(&grant_id))
    }

    fn new_grant(&self, grant_id: u128) -> Option<&GrantRecord> {
        self.newest()
            .find_map(|batch| batch.grants.iter().find(|g| g.grant.id.0 == grant_id))
    }

    /// A stored grant as the tail left it.
    fn patched_grant(&self, mut record: GrantRecord) -> GrantRecord {
        if let Some(state) = self.grant_state(record.grant.id.0) {
            record.grant = state.clone();
        }
        record
    }

    /// The wallet's entries in the tail, oldest first.
    fn entries(&self, wallet_id: u128) -> Vec<&EntryRecord> {
        self.batches
            .iter()
            .flat_map(|batch| batch.entries.iter())
            .filter(|entry| entry.wallet_id == wallet_id)
            .collect()
    }

    fn assignments(&self, promotion_id: u128) -> impl Iterator<Item = &Assignment> {
        self.batches
            .iter()
            .flat_map(|batch| batch.assignments.iter())
            .filter(move |a| a.promotional_credit_id == promotion_id)
    }

    /// The stored response of a key in the tail, its debit rendered from the tail.
    fn key(&self, key: &str) -> Option<([u8; 32], Kept)> {
        self.newest().find_map(|batch| batch.keys.get(key)).cloned()
    }
}

/// A grant's status as the grant list filters it, as the stores' queries
/// do: `depleted` is an active grant with nothing left.
fn listed_status(grant: &Grant) -> &'static str {
    match grant.status.as_str() {
        "active" if grant.remaining.atomic() == 0 => "depleted",
        status => status,
    }
}

/// The first `limit + 1` of the tail's items (newest first) below the
/// cursor: what a page newest first takes from the tail before the store's.
fn below<'t, T: Clone + 't>(
    tail_newest_first: impl Iterator<Item = &'t T>,
    id: impl Fn(&T) -> u128,
    limit: usize,
    starting_after: Option<u128>,
) -> Vec<T> {
    tail_newest_first
        .filter(|item| starting_after.is_none_or(|cursor| id(item) < cursor))
        .take(limit + 1)
        .cloned()
        .collect()
}

/// A page newest first (by id): the tail's items below the cursor, then
/// the store's, which are all older.
fn newest_first<T>(
    mut items: Vec<T>,
    limit: usize,
    store: impl FnOnce(usize) -> StoreResult<Page<T>>,
) -> StoreResult<Page<T>> {
    if items.len() > limit {
        items.truncate(limit);
        return Ok(Page {
            items,
            has_more: true,
        });
    }
    let page = store(limit - items.len())?;
    items.extend(page.items);
    Ok(Page {
        items,
        has_more: page.has_more,
    })
}

impl super::Overlay for Overlaid<'_> {
    fn under(&mut self) -> &mut dyn Store {
        &mut *self.under
    }

    fn load_wallet(&mut self, id: u128) -> StoreResult<Option<(WalletInfo, Wallet)>> {
        match self.state(id) {
            Some(state) => Ok(Some(state.clone())),
            None => self.under.load_wallet(id),
        }
    }

    fn load_wallets(&mut self, ids: &[u128]) -> StoreResult<Vec<(WalletInfo, Wallet, ChainHead)>> {
        let mut loaded = self.under.load_wallets(ids)?;
        for (info, wallet, chain) in &mut loaded {
            if let Some((tail_info, tail_wallet)) = self.state(info.id) {
                *info = tail_info.clone();
                *wallet = tail_wallet.clone();
                if let Some(last) = self.entries(info.id).last() {
                    *chain = ChainHead {
                        hash: last.hash,
                        at: Some(last.occurred_at),
                    };
                }
            }
        }
        Ok(loaded)
    }

    fn wallet_next_event_at(&mut self, id: u128) -> StoreResult<Option<Instant>> {
        match self.state(id) {
            Some((_, wallet)) => Ok(wallet.next_event_at()),
            None => self.under.wallet_next_event_at(id),
        }
    }

    fn due_wallets(&mut self, now: Instant, limit: usize) -> StoreResult<Vec<u128>> {
        let mut latest: HashMap<u128, Option<Instant>> = HashMap::new();
        for batch in &self.batches {
            for (id, (_, wallet)) in &batch.wallets {
                latest.insert(*id, wallet.next_event_at());
            }
        }
        let mut due: Vec<u128> = self
            .under
            .due_wallets(now, limit + latest.len())?
            .into_iter()
            .filter(|id| !latest.contains_key(id))
            .collect();
        due.extend(
            latest
                .iter()
                .filter(|(_, at)| at.is_some_and(|at| at <= now))
                .map(|(id, _)| *id),
        );
        due.truncate(limit);
        Ok(due)
    }

    fn grant(&mut self, id: u128) -> StoreResult<Option<GrantRecord>> {
        if let Some(record) = self.new_grant(id) {
            return Ok(Some(self.patched_grant(record.clone())));
        }
        Ok(self.under.grant(id)?.map(|r| self.patched_grant(r)))
    }

    fn list_grants(
        &mut self,
        wallet_id: u128,
        status: Option<&str>,
        limit: usize,
        starting_after: Option<u128>,
    ) -> StoreResult<Page<GrantRecord>> {
        if self.state(wallet_id).is_none() {
            return self
                .under
                .list_grants(wallet_id, status, limit, starting_after);
        }
        // States may have moved in the tail: filter by status here, on
        // each grant as the tail left it, reading the store page by page.
        let wanted =
            |record: &GrantRecord| status.is_none_or(|s| listed_status(&record.grant) == s);
        let mut items: Vec<GrantRecord> = self
            .newest()
            .flat_map(|batch| batch.grants.iter().rev())
            .filter(|record| record.wallet_id == wallet_id)
            .filter(|record| starting_after.is_none_or(|cursor| record.grant.id.0 < cursor))
            .cloned()
            .collect::<Vec<_>>()
            .into_iter()
            .map(|record| self.patched_grant(record))
            .filter(wanted)
            .collect();
        let mut cursor = starting_after;
        let mut store_more = true;
        while items.len() <= limit && store_more {
            let page = self.under.list_grants(wallet_id, None, limit + 1, cursor)?;
            store_more = page.has_more;
            cursor = page.items.last().map(|r| r.grant.id.0);
            items.extend(
                page.items
                    .into_iter()
                    .map(|r| self.patched_grant(r))
                    .filter(wanted),
            );
        }
        let has_more = items.len() > limit;
        items.truncate(limit);
        Ok(Page { items, has_more })
    }

    fn hold(&mut self, id: u128) -> StoreResult<Option<HoldRecord>> {
        let mut hold = self.under.hold(id)?;
        if let Some(hold) = &mut hold
            && let Some((status, debit_id, at)) =
                self.newest().find_map(|batch| batch.holds.get(&id))
        {
            hold.status = *status;
            hold.debit_id = *debit_id;
            hold.ended_at = Some(*at);
        }
        Ok(hold)
    }

    fn debit(&mut self, id: u128) -> StoreResult<Option<DebitRecord>> {
        let unmerged = self
            .newest()
            .find_map(|batch| batch.debits.iter().find(|d| d.id == id));
        match unmerged {
            Some(debit) => Ok(Some(DebitRecord::clone(debit))),
            None => self.under.debit(id),
        }
    }

    fn list_debits(
        &mut self,
        wallet_id: u128,
        limit: usize,
        starting_after: Option<u128>,
    ) -> StoreResult<Page<DebitRecord>> {
        let tail = below(
            self.newest()
                .flat_map(|batch| batch.debits.iter().rev().map(|d| &**d))
                .filter(|d| d.wallet_id == wallet_id),
            |d| d.id,
            limit,
            starting_after,
        );
        newest_first(tail, limit, |left| {
            self.under.list_debits(wallet_id, left, starting_after)
        })
    }

    fn list_entries(
        &mut self,
        wallet_id: u128,
        ascending: bool,
        limit: usize,
        starting_after: Option<u128>,
    ) -> StoreResult<Page<EntryRecord>> {
        let tail: Vec<EntryRecord> = self.entries(wallet_id).into_iter().cloned().collect();
        if tail.is_empty() {
            return self
                .under
                .list_entries(wallet_id, ascending, limit, starting_after);
        }
        // A cursor in the tail: the store's entries are all before it.
        let in_tail = starting_after.and_then(|id| tail.iter().position(|e| e.id == id));
        let mut items: Vec<EntryRecord>;
        let has_more;
        if ascending {
            let tail_after = match in_tail {
                Some(at) => &tail[at + 1..],
                None => {
                    let page = self
                        .under
                        .list_entries(wallet_id, true, limit, starting_after)?;
                    if page.has_more || (page.items.is_empty() && starting_after.is_some()) {
                        // A full page, or a cursor that is no entry of this wallet.
                        return Ok(page);
                    }
                    items = page.items;
                    let left = limit - items.len();
                    items.extend(tail.iter().take(left).cloned());
                    return Ok(Page {
                        has_more: tail.len() > left,
                        items,
                    });
                }
            };
            items = tail_after.iter().take(limit).cloned().collect();
            has_more = tail_after.len() > limit;
            return Ok(Page { items, has_more });
        }
        let before: &[EntryRecord] = match (starting_after, in_tail) {
            (None, _) => &tail,
            (Some(_), Some(at)) => &tail[..at],
            (Some(_), None) => {
                return self
                    .under
                    .list_entries(wallet_id, false, limit, starting_after);
            }
        };
        items = before.iter().rev().take(limit + 1).cloned().collect();
        if items.len() > limit {
            items.truncate(limit);
            return Ok(Page {
                items,
                has_more: true,
            });
        }
        let page = self
            .under
            .list_entries(wallet_id, false, limit - items.len(), None)?;
        items.extend(page.items);
        Ok(Page {
            items,
            has_more: page.has_more,
        })
    }

    fn last_sequence_at(&mut self, wallet_id: u128, at: Instant) -> StoreResult<u64> {
        // The tail's entries come after the store's, in time order too.
        let in_tail = self
            .entries(wallet_id)
            .into_iter()
            .rev()
            .find(|entry| entry.occurred_at <= at)
            .map(|entry| entry.sequence);
        match in_tail {
            Some(sequence) => Ok(sequence),
            None => self.under.last_sequence_at(wallet_id, at),
        }
    }

    fn balance_after(&mut self, wallet_id: u128, sequence: u64) -> StoreResult<Amount> {
        let in_tail = self
            .entries(wallet_id)
            .into_iter()
            .find(|entry| entry.sequence == sequence)
            .map(|entry| entry.balance_after);
        match in_tail {
            Some(balance) => Ok(balance),
            None => self.under.balance_after(wallet_id, sequence),
        }
    }

    fn grant_remainders_through(
        &mut self,
        wallet_id: u128,
        sequence: u64,
    ) -> StoreResult<Vec<(u128, Amount)>> {
        let mut remainders = self.under.grant_remainders_through(wallet_id, sequence)?;
        for entry in self.entries(wallet_id) {
            let Some(grant_id) = entry.grant_id.filter(|_| entry.sequence <= sequence) else {
                continue;
            };
            match remainders.iter_mut().find(|(id, _)| *id == grant_id) {
                Some((_, remaining)) => {
                    *remaining = Amount::from_atomic(remaining.atomic() + entry.amount.atomic());
                }
                None => remainders.push((grant_id, entry.amount)),
            }
        }
        Ok(remainders)
    }

    fn idempotency(&mut self, key: &str) -> StoreResult<Option<([u8; 32], Kept)>> {
        match self.key(key) {
            Some(kept) => Ok(Some(kept)),
            None => self.under.idempotency(key),
        }
    }

    fn idempotency_many(&mut self, keys: &[&str]) -> StoreResult<Vec<KeptResponse>> {
        let mut found = Vec::new();
        let mut rest = Vec::new();
        for key in keys {
            match self.key(key) {
                Some((fingerprint, kept)) => found.push(KeptResponse {
                    key: key.to_string(),
                    fingerprint,
                    kept,
                    // Not read by callers of this method: the purge reads the store.
                    at: Instant::MIN_UTC,
                }),
                None => rest.push(*key),
            }
        }
        if !rest.is_empty() {
            found.extend(self.under.idempotency_many(&rest)?);
        }
        Ok(found)
    }

    fn entries_with_purpose(
        &mut self,
        wallet_id: u128,
        limit: usize,
    ) -> StoreResult<Option<PurposeLedger>> {
        let Some(mut ledger) = self.under.entries_with_purpose(wallet_id, limit)? else {
            return Ok(None);
        };
        let Some((_, wallet)) = self.state(wallet_id).cloned() else {
            return Ok(Some(ledger));
        };
        let entries: Vec<EntryRecord> = self.entries(wallet_id).into_iter().cloned().collect();
        for entry in entries {
            let purpose = match entry.grant_id {
                None => None,
                Some(grant_id) => self.grant_purpose(&wallet, grant_id)?,
            };
            ledger.entries.push((entry, purpose));
        }
        let keep = limit.min(super::CHART_ENTRIES_MAX);
        let extra = ledger.entries.len().saturating_sub(keep);
        ledger.entries.drain(..extra);
        let summary = wallet.summary();
        ledger.promotional = summary.promotional;
        ledger.bundled = summary.bundled;
        ledger.paid = summary.paid;
        ledger.debt = summary.debt;
        Ok(Some(ledger))
    }

    fn entry_in_wallet(&mut self, wallet_id: u128, entry_id: u128) -> StoreResult<bool> {
        if self.entries(wallet_id).iter().any(|e| e.id == entry_id) {
            return Ok(true);
        }
        self.under.entry_in_wallet(wallet_id, entry_id)
    }

    fn last_event_sequence(&mut self, wallet_id: u128) -> StoreResult<u64> {
        let in_tail = self
            .newest()
            .flat_map(|batch| batch.events.iter().rev())
            .find(|event| event.wallet_id == wallet_id)
            .map(|event| event.sequence);
        match in_tail {
            Some(sequence) => Ok(sequence),
            None => self.under.last_event_sequence(wallet_id),
        }
    }

    fn event(&mut self, id: u128) -> StoreResult<Option<EventRecord>> {
        let unmerged = self
            .newest()
            .find_map(|batch| batch.events.iter().find(|e| e.id == id));
        match unmerged {
            Some(event) => Ok(Some(event.clone())),
            None => self.under.event(id),
        }
    }

    fn list_events(
        &mut self,
        wallet_id: Option<u128>,
        limit: usize,
        starting_after: Option<u128>,
    ) -> StoreResult<Page<EventRecord>> {
        let tail = below(
            self.newest()
                .flat_map(|batch| batch.events.iter().rev())
                .filter(|e| wallet_id.is_none_or(|w| e.wallet_id == w)),
            |e| e.id,
            limit,
            starting_after,
        );
        newest_first(tail, limit, |left| {
            self.under.list_events(wallet_id, left, starting_after)
        })
    }

    fn promotion(&mut self, id: u128) -> StoreResult<Option<PromotionalCredit>> {
        let unmerged = self.newest().find_map(|batch| batch.promotions.get(&id));
        match unmerged {
            Some(promotion) => Ok(Some(promotion.clone())),
            None => self.under.promotion(id),
        }
    }

    fn list_promotions(
        &mut self,
        status: Option<credstack_core::promotion::Status>,
        now: Instant,
        limit: usize,
        starting_after: Option<u128>,
    ) -> StoreResult<Page<PromotionalCredit>> {
        // A journalled batch moves only a campaign's `applied` mark, which
        // no status depends on.
        let mut page = self
            .under
            .list_promotions(status, now, limit, starting_after)?;
        for promotion in &mut page.items {
            if let Some(newer) = self
                .newest()
                .find_map(|batch| batch.promotions.get(&promotion.id))
            {
                *promotion = newer.clone();
            }
        }
        Ok(page)
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
        active.extend(
            self.assignments(promotion_id)
                .filter(|a| a.customer_id == customer_id && a.is_active(now))
                .cloned(),
        );
        Ok(active)
    }

    fn customers_with_open_assignments(
        &mut self,
        promotion_id: u128,
        after: Option<u128>,
        limit: usize,
    ) -> StoreResult<Vec<u128>> {
        let mut customers =
            self.under
                .customers_with_open_assignments(promotion_id, after, limit)?;
        customers.extend(
            self.assignments(promotion_id)
                .filter(|a| a.revoked_at.is_none())
                .map(|a| a.customer_id)
                .filter(|c| after.is_none_or(|after| *c > after)),
        );
        customers.sort_unstable();
        customers.dedup();
        customers.truncate(limit);
        Ok(customers)
    }

    fn promotion_has_customers(&mut self, promotion_id: u128) -> StoreResult<bool> {
        if self.assignments(promotion_id).next().is_some() {
            return Ok(true);
        }
        self.under.promotion_has_customers(promotion_id)
    }

    /// Counting customers needs each one's assignments in the store: the one
    /// read that waits, and only for this campaign's unmerged grants.
    fn promotion_counts(&mut self, promotion_id: u128, now: Instant) -> StoreResult<(u64, u64)> {
        if let Some(number) = self.last_assigning(promotion_id) {
            self.catch_up(number)?;
        }
        self.under.promotion_counts(promotion_id, now)
    }

    /// As [`Overlay::promotion_counts`]: waits for this campaign's unmerged grants.
    fn promotion_customers(
        &mut self,
        promotion_id: u128,
        status: Option<&str>,
        query: Option<&str>,
        now: Instant,
        limit: usize,
        starting_after: Option<u128>,
    ) -> StoreResult<Page<PromotionCustomer>> {
        if let Some(number) = self.last_assigning(promotion_id) {
            self.catch_up(number)?;
        }
        self.under
            .promotion_customers(promotion_id, status, query, now, limit, starting_after)
    }

    fn bulk_run(&mut self, promotion_id: u128) -> StoreResult<Option<BulkRun>> {
        let unmerged = self
            .newest()
            .find_map(|batch| batch.runs.get(&promotion_id));
        match unmerged {
            Some(run) => Ok(Some(run.clone())),
            None => self.under.bulk_run(promotion_id),
        }
    }
}

impl Overlaid<'_> {
    /// The purpose of a wallet's grant: from its live state, a grant the
    /// tail created, or the store.
    fn grant_purpose(&mut self, wallet: &Wallet, grant_id: u128) -> StoreResult<Option<Purpose>> {
        let id = credstack_core::GrantId(grant_id);
        if let Some(grant) = wallet.grant(id) {
            return Ok(Some(grant.terms.purpose));
        }
        if let Some(record) = self.new_grant(grant_id) {
            return Ok(Some(record.grant.terms.purpose));
        }
        Ok(self
            .under
            .grant(grant_id)?
            .map(|record| record.grant.terms.purpose))
    }
}
