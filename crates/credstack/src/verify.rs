//! `credstack verify`: checks a store against its own ledger. For every
//! wallet, in one read-only snapshot (so it runs beside a serving process):
//!
//! - its entries have gapless sequences 1..=`last_sequence`, each
//!   `balance_after` is the running sum, and each entry's `hash` chains from
//!   the one before ([`EntryRecord::chain`]): an entry edited, deleted or
//!   inserted behind the ledger's back is found;
//! - the stored balance is the sum of the entries, the debt is minus the sum
//!   of the entries without a grant, every grant's remainder is the sum of
//!   its entries, every debit equals its allocations and minus its entries;
//! - SPEC rule 16 and the wallet's own bookkeeping
//!   ([`Wallet::invariant_violations`]).
//!
//! The chain proves the ledger was not changed by anything that does not
//! also recompute SHA-256 over every later entry; someone with write access
//! who does that is caught only by comparing with a chain head recorded
//! elsewhere (the report prints a digest of every wallet's head for that).

use crate::ids::{self, Kind};
use crate::records::{CHAIN_START, ChainHead, EntryRecord};
use crate::store::{Store, StoreResult};
use credstack_core::{EntryKind, Wallet};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// What `verify` read and what it found wrong.
#[derive(Debug, Default)]
pub struct Report {
    pub wallets: u64,
    pub entries: u64,
    pub grants: u64,
    pub debits: u64,
    pub problems: Vec<Problem>,
    /// SHA-256 over every wallet's id and chain head, in wallet id order:
    /// equal digests mean equal ledgers, so recording it elsewhere lets a
    /// later run prove nothing was rewritten since.
    pub digest: [u8; 32],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The wallet's prefixed id.
    pub wallet: String,
    pub what: String,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "checked {} wallets, {} entries, {} grants, {} debits",
            self.wallets, self.entries, self.grants, self.debits
        )?;
        writeln!(f, "ledger digest: {}", hex::encode(self.digest))?;
        if self.problems.is_empty() {
            return writeln!(
                f,
                "OK: every balance, remainder, sequence and hash checks out"
            );
        }
        writeln!(f, "FAILED: {} problems", self.problems.len())?;
        for problem in &self.problems {
            writeln!(f, "  {}: {}", problem.wallet, problem.what)?;
        }
        Ok(())
    }
}

/// Reads the whole store in one snapshot and checks every wallet. An
/// `Err` is a store that could not be read at all (no connection); a row
/// that cannot be decoded is a problem of its wallet, and the walk goes on.
pub fn verify(store: &mut dyn Store) -> StoreResult<Report> {
    verify_with_progress(store, &mut |_, _| {})
}

/// [`verify`], calling `progress(wallets checked, wallets in all)` as it
/// goes (the CLI draws a progress bar with it).
pub fn verify_with_progress(
    store: &mut dyn Store,
    progress: &mut dyn FnMut(u64, u64),
) -> StoreResult<Report> {
    store.begin_snapshot()?;
    let result = walk(store, progress);
    let _ = store.rollback();
    result
}

/// Wallets per page, and entries, grants and debits per page of a wallet.
const PAGE: usize = 100;
const ENTRY_PAGE: usize = 1000;

fn walk(store: &mut dyn Store, progress: &mut dyn FnMut(u64, u64)) -> StoreResult<Report> {
    let total = store.count_wallets(None)?;
    let mut report = Report::default();
    let mut heads: Vec<(u128, [u8; 32])> = Vec::new();
    let mut after = None;
    loop {
        let page = store.list_wallets(None, None, PAGE, after)?;
        for info in &page.items {
            report.wallets += 1;
            let mut wallet = WalletCheck {
                id: info.id,
                problems: Vec::new(),
            };
            match wallet.check(store, &mut report) {
                Ok(head) => heads.push((info.id, head)),
                Err(error) if error.broken => return Err(error),
                Err(error) => wallet.problem(format!("cannot be read: {}", error.message)),
            }
            let name = ids::format(Kind::Wallet, info.id);
            report
                .problems
                .extend(wallet.problems.into_iter().map(|what| Problem {
                    wallet: name.clone(),
                    what,
                }));
            progress(report.wallets, total);
        }
        if !page.has_more {
            break;
        }
        after = page.items.last().map(|w| w.id);
    }
    heads.sort_unstable();
    let mut digest = Sha256::new();
    for (id, head) in &heads {
        digest.update(id.to_be_bytes());
        digest.update(head);
    }
    report.digest = digest.finalize().into();
    Ok(report)
}

struct WalletCheck {
    id: u128,
    problems: Vec<String>,
}

/// Running totals over a wallet's entries.
#[derive(Default)]
struct Totals {
    /// Every entry's amount.
    all: i128,
    /// By grant; `None` is the debt's.
    by_grant: HashMap<Option<u128>, i128>,
    /// Debit entries by the debit they reference.
    by_debit: HashMap<String, i128>,
}

impl WalletCheck {
    fn problem(&mut self, what: String) {
        self.problems.push(what);
    }

    /// Checks the wallet; returns the hash of its last entry.
    fn check(&mut self, store: &mut dyn Store, report: &mut Report) -> StoreResult<[u8; 32]> {
        let Some((_, wallet)) = store.load_wallet(self.id)? else {
            self.problem("listed but its row cannot be loaded".into());
            return Ok(CHAIN_START);
        };
        for violation in wallet.invariant_violations() {
            self.problem(violation);
        }
        let (totals, head) = self.check_entries(store, &wallet, report)?;
        self.check_grants(store, &wallet, &totals, report)?;
        self.check_debits(store, totals.by_debit, report)?;
        Ok(head)
    }

    fn check_entries(
        &mut self,
        store: &mut dyn Store,
        wallet: &Wallet,
        report: &mut Report,
    ) -> StoreResult<(Totals, [u8; 32])> {
        let mut totals = Totals::default();
        let (mut expected, mut head, mut running) = (1u64, ChainHead::START, 0i128);
        let mut after = None;
        loop {
            let page = store.list_entries(self.id, true, ENTRY_PAGE, after)?;
            for entry in &page.items {
                report.entries += 1;
                self.check_entry(entry, expected, &head, running);
                // Re-anchored on what is stored, so one damaged entry is
                // reported once, not again for every entry after it.
                expected = entry.sequence.saturating_add(1);
                head = ChainHead {
                    hash: entry.hash,
                    at: Some(entry.occurred_at),
                };
                running = i128::from(entry.balance_after.atomic());
                let amount = i128::from(entry.amount.atomic());
                totals.all += amount;
                *totals.by_grant.entry(entry.grant_id).or_default() += amount;
                if entry.kind == EntryKind::Debit {
                    *totals.by_debit.entry(entry.reference.clone()).or_default() += amount;
                }
            }
            if !page.has_more {
                break;
            }
            after = page.items.last().map(|e| e.id);
        }
        let last = expected - 1;
        if last != wallet.last_sequence {
            self.problem(format!(
                "the wallet's last sequence is {} but its entries end at {last}: entries were deleted or added",
                wallet.last_sequence
            ));
        }
        let balance = i128::from(wallet.balance.atomic());
        if totals.all != balance {
            self.problem(format!(
                "balance {balance} is not the sum of its entries, {}",
                totals.all
            ));
        }
        let debt_entries = totals.by_grant.get(&None).copied().unwrap_or(0);
        if -debt_entries != i128::from(wallet.debt.atomic()) {
            self.problem(format!(
                "debt {} is not minus the sum of its entries without a grant, {debt_entries}",
                wallet.debt.atomic()
            ));
        }
        Ok((totals, head.hash))
    }

    fn check_entry(
        &mut self,
        entry: &EntryRecord,
        expected: u64,
        previous: &ChainHead,
        running: i128,
    ) {
        let name = ids::format(Kind::Entry, entry.id);
        if entry.wallet_id != self.id {
            self.problem(format!("entry {name} names another wallet"));
        }
        if entry.sequence != expected {
            self.problem(format!(
                "entry {name} has sequence {} where {expected} was expected: entries are missing or were added",
                entry.sequence
            ));
        }
        if entry.chain(&previous.hash) != entry.hash {
            self.problem(format!(
                "entry {name} (sequence {}) does not match its hash: it, or the entry before it, was changed or removed",
                entry.sequence
            ));
        }
        if let Some(before) = previous.at.filter(|before| entry.occurred_at < *before) {
            self.problem(format!(
                "entry {name} (sequence {}) is dated {} but the entry before it {before}: a wallet's entries never go back in time, and history at an instant between them may read the wrong one",
                entry.sequence, entry.occurred_at
            ));
        }
        let after = running + i128::from(entry.amount.atomic());
        if i128::from(entry.balance_after.atomic()) != after {
            self.problem(format!(
                "entry {name} (sequence {}) says balance_after {} where its amount makes it {after}",
                entry.sequence,
                entry.balance_after.atomic()
            ));
        }
    }

    fn check_grants(
        &mut self,
        store: &mut dyn Store,
        wallet: &Wallet,
        totals: &Totals,
        report: &mut Report,
    ) -> StoreResult<()> {
        let mut unseen: HashMap<u128, i128> = totals
            .by_grant
            .iter()
            .filter_map(|(grant, total)| grant.map(|id| (id, *total)))
            .collect();
        let mut after = None;
        loop {
            let page = store.list_grants(self.id, None, PAGE, after)?;
            for record in &page.items {
                report.grants += 1;
                let grant = &record.grant;
                let name = ids::format(Kind::Grant, grant.id.0);
                let entries = unseen.remove(&grant.id.0).unwrap_or(0);
                if entries != i128::from(grant.remaining.atomic()) {
                    self.problem(format!(
                        "grant {name}: remaining {} is not the sum of its entries, {entries}",
                        grant.remaining.atomic()
                    ));
                }
                let live = wallet.grants.iter().any(|g| g.id == grant.id);
                if !live && (grant.remaining.is_negative() || !grant.held.is_zero()) {
                    self.problem(format!(
                        "grant {name}: a finished grant has remaining {} and held {}",
                        grant.remaining.atomic(),
                        grant.held.atomic()
                    ));
                }
            }
            if !page.has_more {
                break;
            }
            after = page.items.last().map(|g| g.grant.id.0);
        }
        for grant in unseen.keys() {
            self.problem(format!(
                "entries name grant {}, which is not one of this wallet's",
                ids::format(Kind::Grant, *grant)
            ));
        }
        Ok(())
    }

    fn check_debits(
        &mut self,
        store: &mut dyn Store,
        mut by_debit: HashMap<String, i128>,
        report: &mut Report,
    ) -> StoreResult<()> {
        let mut after = None;
        loop {
            let page = store.list_debits(self.id, PAGE, after)?;
            for debit in &page.items {
                report.debits += 1;
                let name = ids::format(Kind::Debit, debit.id);
                let amount = i128::from(debit.amount.atomic());
                let allocated: i128 = debit
                    .allocations
                    .iter()
                    .map(|a| i128::from(a.amount.atomic()))
                    .sum();
                if allocated != amount {
                    self.problem(format!(
                        "debit {name}: amount {amount} but allocations sum to {allocated}"
                    ));
                }
                let entries = by_debit.remove(&name).unwrap_or(0);
                if entries != -amount {
                    self.problem(format!(
                        "debit {name}: amount {amount} but its entries sum to {entries}"
                    ));
                }
            }
            if !page.has_more {
                break;
            }
            after = page.items.last().map(|d| d.id);
        }
        for debit in by_debit.keys() {
            self.problem(format!(
                "debit entries reference {debit}, which is not one of this wallet's debits"
            ));
        }
        Ok(())
    }
}
