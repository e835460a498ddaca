//! Model-based property test of the wallet state machine.
//!
//! `Model` below is a deliberately simple, independent re-statement of SPEC
//! section 2 (rules 4-16): plain vectors of grants and holds, the drawdown
//! order recomputed by sorting on (priority, cycle end with "never" last,
//! effective_at, id) every time it is needed, renewals computed as
//! `anchor + k·period` with `Period::nth_after`, and every scheduled event up
//! to `now` processed in the documented same-instant order (grant expiries,
//! hold expiries, renewals, arrivals, then debt repayment).
//!
//! Random command sequences run against both; after every step they must
//! agree on every decision, balance, debt, grant, hold, allocation and ledger
//! entry, and the ledger must satisfy rule 15 and rule 16.
//!
//! Documented choices of wallet.rs the model follows (where SPEC is silent):
//! - a renewal carries `min(unheld, rollover_max)`: the held part stays
//!   reserved (rule 13 lets it be captured) and is not forfeited at renewal;
//!   what a hold reserved in an earlier cycle is forfeited when released or
//!   expired, like a reservation of a grant that ended (rules 10 and 13);
//! - a hold release or expiry that returns balance repays debt (rule 6);
//! - a capture takes the reserved part in reservation order, then the excess
//!   in drawdown order, and merges allocations to the same grant;
//! - a non-recurring grant without expiry that is fully spent is final and
//!   leaves the wallet's working set (voiding it is refused).

use chrono::Duration;
use credstack_core::{
    Allocation, Amount, Changes, DebitId, Entry, EntryKind, Grant, GrantId, GrantStatus,
    GrantTerms, Happened, HoldId, Instant, Interval, Period, Purpose, Reference, Rejection, Wallet,
};
use proptest::prelude::*;
use std::collections::HashMap;

// ---- the reference model -----------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MState {
    Scheduled,
    Active,
    Expired,
    Voided,
}

#[derive(Clone, Debug)]
struct MGrant {
    id: u128,
    amount: i64,
    purpose: Purpose,
    priority: u8,
    effective_at: Instant,
    expires_at: Option<Instant>,
    period: Option<Period>,
    rollover_max: i64,
    state: MState,
    cycle: u64,
    remaining: i64,
    held: i64,
}

impl MGrant {
    fn unheld(&self) -> i64 {
        self.remaining - self.held
    }

    /// Renewal k (k >= 1) at `effective_at + k·period`, unless at or after expiry.
    fn renewal(&self, k: u64) -> Option<Instant> {
        let at = self.period?.nth_after(self.effective_at, k)?;
        match self.expires_at {
            Some(expires_at) if at >= expires_at => None,
            _ => Some(at),
        }
    }

    fn next_renewal(&self) -> Option<Instant> {
        if self.state == MState::Active {
            self.renewal(self.cycle)
        } else {
            None
        }
    }

    fn cycle_end(&self) -> Option<Instant> {
        self.next_renewal().or(self.expires_at)
    }

    /// A spent, non-recurring grant without expiry can never change again.
    fn is_final(&self) -> bool {
        match self.state {
            MState::Scheduled => false,
            MState::Active => {
                self.period.is_none() && self.expires_at.is_none() && self.remaining == 0
            }
            MState::Expired | MState::Voided => self.held == 0,
        }
    }
}

#[derive(Clone, Debug)]
struct MPart {
    grant: Option<u128>,
    amount: i64,
    /// The grant's cycle when reserved.
    cycle: u64,
}

#[derive(Clone, Debug)]
struct MHold {
    id: u128,
    expires_at: Instant,
    parts: Vec<MPart>,
}

impl MHold {
    fn total(&self) -> i64 {
        self.parts.iter().map(|p| p.amount).sum()
    }
}

/// (occurred_at, kind, grant, amount, reference). The reference of the debt
/// side of a repayment is left out (`None`): it names whatever caused it.
type MEntry = (Instant, EntryKind, Option<u128>, i64, Option<Reference>);

#[derive(Debug, PartialEq, Eq)]
enum MError {
    Insufficient {
        requested: i64,
        spendable: i64,
    },
    HoldNotFound,
    /// Voiding a grant that ended or is final; the wallet answers
    /// `GrantAlreadyEnded` or `GrantNotFound`.
    GrantEnded,
    OverdraftBelowDebt,
    Invalid(&'static str),
}

#[derive(Clone, Debug, Default)]
struct Model {
    grants: Vec<MGrant>,
    holds: Vec<MHold>,
    debt: i64,
    limit: i64,
    entries: Vec<MEntry>,
}

impl Model {
    fn balance(&self) -> i64 {
        self.grants.iter().map(|g| g.remaining).sum::<i64>() - self.debt
    }

    fn grant_mut(&mut self, id: u128) -> &mut MGrant {
        self.grants.iter_mut().find(|g| g.id == id).unwrap()
    }

    fn entry(&mut self, at: Instant, kind: EntryKind, grant: Option<u128>, amount: i64) {
        if amount != 0 {
            let reference = grant.map(|g| Reference::Grant(GrantId(g)));
            self.entries.push((at, kind, grant, amount, reference));
        }
    }

    /// Active grants in drawdown order (rule 4).
    fn order(&self) -> Vec<u128> {
        let mut active: Vec<&MGrant> = self
            .grants
            .iter()
            .filter(|g| g.state == MState::Active)
            .collect();
        active.sort_by_key(|g| {
            let end = g.cycle_end();
            (g.priority, end.is_none(), end, g.effective_at, g.id)
        });
        active.iter().map(|g| g.id).collect()
    }

    fn overdraft_held(&self) -> i64 {
        self.holds
            .iter()
            .flat_map(|h| &h.parts)
            .filter(|p| p.grant.is_none())
            .map(|p| p.amount)
            .sum()
    }

    fn spendable(&self) -> i64 {
        let unheld: i64 = self
            .grants
            .iter()
            .filter(|g| g.state == MState::Active)
            .map(MGrant::unheld)
            .sum();
        unheld + self.limit - self.debt - self.overdraft_held()
    }

    fn held(&self) -> i64 {
        self.holds.iter().map(MHold::total).sum()
    }

    fn next_event(&self) -> Option<Instant> {
        let mut times = Vec::new();
        for g in &self.grants {
            match g.state {
                MState::Scheduled => times.push(g.effective_at),
                MState::Active => {
                    times.extend(g.next_renewal());
                    times.extend(g.expires_at);
                }
                _ => {}
            }
        }
        times.extend(self.holds.iter().map(|h| h.expires_at));
        times.into_iter().min()
    }

    /// Rule 11: every event up to `now`, dated at its own instant.
    fn advance(&mut self, now: Instant) {
        while let Some(t) = self.next_event().filter(|t| *t <= now) {
            // 1. grant expiries (rule 8)
            for i in 0..self.grants.len() {
                let g = &self.grants[i];
                if g.state == MState::Active && g.expires_at == Some(t) {
                    let (id, unheld) = (g.id, g.unheld());
                    self.grants[i].remaining -= unheld;
                    self.grants[i].state = MState::Expired;
                    self.entry(t, EntryKind::Expiry, Some(id), -unheld);
                }
            }
            // 2. hold expiries (rule 13)
            let expiring: Vec<MHold> = self
                .holds
                .iter()
                .filter(|h| h.expires_at == t)
                .cloned()
                .collect();
            self.holds.retain(|h| h.expires_at != t);
            for hold in expiring {
                self.return_parts(&hold.parts, t);
            }
            // 3. renewals (rules 9, 10)
            for i in 0..self.grants.len() {
                if self.grants[i].next_renewal() == Some(t) {
                    let g = &self.grants[i];
                    let carried = g.unheld().min(g.rollover_max);
                    let forfeited = g.unheld() - carried;
                    let (id, amount) = (g.id, g.amount);
                    let g = &mut self.grants[i];
                    g.remaining = g.remaining - forfeited + amount;
                    g.cycle += 1;
                    self.entry(t, EntryKind::Expiry, Some(id), -forfeited);
                    self.entry(t, EntryKind::Renewal, Some(id), amount);
                }
            }
            // 4. arrivals
            for i in 0..self.grants.len() {
                let g = &mut self.grants[i];
                if g.state == MState::Scheduled && g.effective_at == t {
                    g.state = MState::Active;
                    g.cycle = 1;
                    g.remaining = g.amount;
                    let (id, amount) = (g.id, g.amount);
                    self.entry(t, EntryKind::Grant, Some(id), amount);
                }
            }
            // 5. repayment (rule 6)
            self.repay(t);
        }
    }

    /// Returns reservations to their grants; what was reserved from a grant
    /// that ended, or from an earlier cycle, is forfeited.
    fn return_parts(&mut self, parts: &[MPart], at: Instant) {
        for part in parts {
            let Some(id) = part.grant else { continue };
            if part.amount == 0 {
                continue;
            }
            let g = self.grant_mut(id);
            g.held -= part.amount;
            let kind = match g.state {
                MState::Voided => Some(EntryKind::Void),
                MState::Expired => Some(EntryKind::Expiry),
                _ if part.cycle < g.cycle => Some(EntryKind::Expiry),
                _ => None,
            };
            if let Some(kind) = kind {
                g.remaining -= part.amount;
                self.entry(at, kind, Some(id), -part.amount);
            }
        }
    }

    fn repay(&mut self, at: Instant) {
        if self.debt == 0 {
            return;
        }
        let mut repaid = 0;
        for id in self.order() {
            let owed = self.debt - repaid;
            let g = self.grant_mut(id);
            let take = g.unheld().min(owed);
            if take > 0 {
                g.remaining -= take;
                repaid += take;
                self.entry(at, EntryKind::Repayment, Some(id), -take);
            }
        }
        if repaid > 0 {
            self.debt -= repaid;
            self.entries
                .push((at, EntryKind::Repayment, None, repaid, None));
        }
    }

    /// Plans `amount` in drawdown order, the rest from overdraft.
    fn plan(&self, amount: i64) -> Vec<(Option<u128>, i64)> {
        let mut needed = amount;
        let mut plan = Vec::new();
        for id in self.order() {
            let g = self.grants.iter().find(|g| g.id == id).unwrap();
            let take = g.unheld().min(needed);
            if take > 0 {
                plan.push((Some(id), take));
                needed -= take;
            }
        }
        if needed > 0 {
            plan.push((None, needed));
        }
        plan
    }

    fn spend(&mut self, plan: &[(Option<u128>, i64)]) {
        for &(grant, amount) in plan {
            match grant {
                Some(id) => self.grant_mut(id).remaining -= amount,
                None => self.debt += amount,
            }
        }
    }

    fn debit_entries(&mut self, plan: &[(Option<u128>, i64)], debit: u128, at: Instant) {
        for &(grant, amount) in plan {
            self.entries.push((
                at,
                EntryKind::Debit,
                grant,
                -amount,
                Some(Reference::Debit(DebitId(debit))),
            ));
        }
    }

    fn insufficient(&self, requested: i64) -> Option<MError> {
        let spendable = self.spendable();
        (requested > spendable).then_some(MError::Insufficient {
            requested,
            spendable,
        })
    }

    // ---- commands ----

    fn add_grant(&mut self, grant: MGrant, now: Instant) -> Result<(), MError> {
        self.advance(now);
        if grant.effective_at < now {
            return Err(MError::Invalid("effective_at"));
        }
        if grant.expires_at.is_some_and(|e| e <= grant.effective_at) {
            return Err(MError::Invalid("expires_at"));
        }
        if grant.period.is_none() && grant.rollover_max > 0 {
            return Err(MError::Invalid("rollover_max"));
        }
        self.grants.push(grant);
        self.advance(now);
        Ok(())
    }

    fn debit(
        &mut self,
        id: u128,
        amount: i64,
        now: Instant,
    ) -> Result<Vec<(Option<u128>, i64)>, MError> {
        self.advance(now);
        if let Some(e) = self.insufficient(amount) {
            return Err(e);
        }
        let plan = self.plan(amount);
        self.spend(&plan);
        self.debit_entries(&plan, id, now);
        Ok(plan)
    }

    fn place_hold(
        &mut self,
        id: u128,
        amount: i64,
        seconds: i64,
        now: Instant,
    ) -> Result<(), MError> {
        self.advance(now);
        if !(1..=24 * 3600).contains(&seconds) {
            return Err(MError::Invalid("expires_in_seconds"));
        }
        if let Some(e) = self.insufficient(amount) {
            return Err(e);
        }
        let plan = self.plan(amount);
        let mut parts = Vec::new();
        for (grant, amount) in plan {
            let mut cycle = 0;
            if let Some(gid) = grant {
                let g = self.grant_mut(gid);
                g.held += amount;
                cycle = g.cycle;
            }
            parts.push(MPart {
                grant,
                amount,
                cycle,
            });
        }
        self.holds.push(MHold {
            id,
            expires_at: now + Duration::seconds(seconds),
            parts,
        });
        Ok(())
    }

    fn capture(
        &mut self,
        hold: u128,
        amount: i64,
        debit: u128,
        now: Instant,
    ) -> Result<Vec<(Option<u128>, i64)>, MError> {
        self.advance(now);
        let index = self
            .holds
            .iter()
            .position(|h| h.id == hold)
            .ok_or(MError::HoldNotFound)?;
        let total = self.holds[index].total();
        let excess = (amount - total).max(0);
        if excess > 0
            && let Some(e) = self.insufficient(excess)
        {
            return Err(e);
        }
        let mut hold = self.holds.remove(index);
        let mut to_capture = amount.min(total);
        let mut plan: Vec<(Option<u128>, i64)> = Vec::new();
        for part in &mut hold.parts {
            let take = part.amount.min(to_capture);
            if take == 0 {
                continue;
            }
            part.amount -= take;
            to_capture -= take;
            if let Some(id) = part.grant {
                self.grant_mut(id).held -= take;
            }
            plan.push((part.grant, take));
        }
        self.spend(&plan);
        if excess > 0 {
            let more = self.plan(excess);
            self.spend(&more);
            for (grant, amount) in more {
                match plan.iter_mut().find(|(g, _)| *g == grant) {
                    Some(existing) => existing.1 += amount,
                    None => plan.push((grant, amount)),
                }
            }
        }
        self.debit_entries(&plan, debit, now);
        self.return_parts(&hold.parts, now);
        self.repay(now);
        Ok(plan)
    }

    fn release(&mut self, hold: u128, now: Instant) -> Result<(), MError> {
        self.advance(now);
        let index = self
            .holds
            .iter()
            .position(|h| h.id == hold)
            .ok_or(MError::HoldNotFound)?;
        let hold = self.holds.remove(index);
        self.return_parts(&hold.parts, now);
        self.repay(now);
        Ok(())
    }

    fn void(&mut self, id: u128, now: Instant) -> Result<(), MError> {
        self.advance(now);
        let g = self.grant_mut(id);
        if matches!(g.state, MState::Expired | MState::Voided) || g.is_final() {
            return Err(MError::GrantEnded);
        }
        let unheld = g.unheld();
        g.remaining -= unheld;
        g.state = MState::Voided;
        self.entry(now, EntryKind::Void, Some(id), -unheld);
        Ok(())
    }

    fn set_limit(&mut self, limit: i64, now: Instant) -> Result<(), MError> {
        self.advance(now);
        if limit < self.debt + self.overdraft_held() {
            return Err(MError::OverdraftBelowDebt);
        }
        self.limit = limit;
        Ok(())
    }
}

// ---- commands and their generation --------------------------------------------

#[derive(Clone, Debug)]
enum Recur {
    None,
    Every(Interval, u32, i64),
}

#[derive(Clone, Debug)]
enum Op {
    AddGrant {
        purpose: usize,
        priority: Option<u8>,
        amount: i64,
        /// Seconds after now; 0 means now.
        starts_in: i64,
        /// Seconds after effective_at; 0 is invalid and must be refused.
        expires_after: Option<i64>,
        recur: Recur,
    },
    Debit(i64),
    Hold {
        amount: i64,
        seconds: i64,
    },
    /// Capture hold number `pick` (of all holds ever placed): `delta` less,
    /// the same, or `delta` more than it holds.
    Capture {
        pick: usize,
        mode: u8,
        delta: i64,
    },
    Release(usize),
    Void(usize),
    SetLimit(i64),
    Wait(i64),
    /// Move the clock exactly to the next scheduled event, or to just before it.
    ToNextEvent {
        just_before: bool,
    },
}

const DAY: i64 = 86_400;

fn op() -> impl Strategy<Value = Op> {
    let amount = prop_oneof![1i64..=100, (1i64..=50).prop_map(|u| u * 100)];
    let recur = prop_oneof![
        2 => Just(Recur::None),
        1 => (prop_oneof![Just(Interval::Day), Just(Interval::Week), Just(Interval::Month)],
              1u32..=2,
              prop_oneof![Just(0i64), 1i64..=3000])
            .prop_map(|(i, n, r)| Recur::Every(i, n, r)),
    ];
    let add = (
        0usize..3,
        prop_oneof![3 => Just(None), 1 => (0u8..=40).prop_map(Some)],
        (1i64..=60).prop_map(|u| u * 100),
        prop_oneof![3 => Just(0i64), 1 => 1i64..=20 * DAY],
        prop_oneof![2 => Just(None), 1 => Just(Some(0)), 2 => (1i64..=90 * DAY).prop_map(Some)],
        recur,
    )
        .prop_map(
            |(purpose, priority, amount, starts_in, expires_after, recur)| Op::AddGrant {
                purpose,
                priority,
                amount,
                starts_in,
                expires_after,
                recur,
            },
        );
    prop_oneof![
        4 => add,
        4 => amount.clone().prop_map(Op::Debit),
        4 => (amount, prop_oneof![1 => Just(0i64), 6 => 1i64..=DAY, 1 => Just(DAY), 1 => Just(DAY + 1)])
            .prop_map(|(amount, seconds)| Op::Hold { amount, seconds }),
        4 => (0usize..8, 0u8..3, 1i64..=1500).prop_map(|(pick, mode, delta)| Op::Capture { pick, mode, delta }),
        2 => (0usize..8).prop_map(Op::Release),
        1 => (0usize..10).prop_map(Op::Void),
        2 => prop_oneof![Just(0i64), 1i64..=2000].prop_map(Op::SetLimit),
        3 => prop_oneof![2 => 1i64..=60, 2 => 60i64..=DAY, 1 => DAY..=45 * DAY].prop_map(Op::Wait),
        2 => any::<bool>().prop_map(|just_before| Op::ToNextEvent { just_before }),
    ]
}

// ---- the harness ---------------------------------------------------------------

fn start() -> Instant {
    "2025-01-31T10:00:00Z".parse().unwrap()
}

struct Harness {
    now: Instant,
    wallet: Wallet,
    model: Model,
    /// Every entry the wallet ever emitted.
    ledger: Vec<Entry>,
    /// Final state of grants that left the wallet's working set.
    finished: HashMap<GrantId, Grant>,
    /// The grants the wallet said ended, with how and when.
    ended: HashMap<GrantId, (GrantStatus, Instant)>,
    hold_ids: Vec<u128>,
    next_id: u128,
}

fn amt(atomic: i64) -> Amount {
    Amount::from_atomic(atomic)
}

fn alloc_pairs(allocations: &[Allocation]) -> Vec<(Option<u128>, i64)> {
    allocations
        .iter()
        .map(|a| (a.grant.map(|g| g.0), a.amount.atomic()))
        .collect()
}

fn same_error(wallet: &Rejection, model: &MError) -> bool {
    match (wallet, model) {
        (
            Rejection::InsufficientBalance {
                requested,
                spendable,
            },
            MError::Insufficient {
                requested: r,
                spendable: s,
            },
        ) => requested.atomic() == *r && spendable.atomic() == *s,
        (Rejection::HoldNotFound, MError::HoldNotFound) => true,
        (Rejection::GrantAlreadyEnded | Rejection::GrantNotFound, MError::GrantEnded) => true,
        (Rejection::OverdraftBelowDebt, MError::OverdraftBelowDebt) => true,
        (Rejection::Invalid { field, .. }, MError::Invalid(f)) => field == f,
        _ => false,
    }
}

fn check_result<T: std::fmt::Debug, U: std::fmt::Debug>(
    wallet: &Result<T, Rejection>,
    model: &Result<U, MError>,
) -> Result<(), TestCaseError> {
    let agree = match (wallet, model) {
        (Ok(_), Ok(_)) => true,
        (Err(w), Err(m)) => same_error(w, m),
        _ => false,
    };
    prop_assert!(
        agree,
        "decision differs: wallet {:?}, model {:?}",
        wallet,
        model
    );
    Ok(())
}

impl Harness {
    fn new() -> Harness {
        Harness {
            now: start(),
            wallet: Wallet::new(Amount::ZERO),
            model: Model::default(),
            ledger: Vec::new(),
            finished: HashMap::new(),
            ended: HashMap::new(),
            hold_ids: Vec::new(),
            next_id: 1,
        }
    }

    /// Hold `pick`: mostly one of the active holds, sometimes any hold ever
    /// placed (finished ones must be refused).
    fn pick_hold(&self, pick: usize) -> Option<u128> {
        if pick < 6 && !self.model.holds.is_empty() {
            return Some(self.model.holds[pick % self.model.holds.len()].id);
        }
        self.hold_ids
            .get(pick % self.hold_ids.len().max(1))
            .copied()
    }

    fn id(&mut self) -> u128 {
        self.next_id += 1;
        self.next_id
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let mut changes = Changes::default();
        let entries_before = self.model.entries.len();
        let now = self.now;
        match op.clone() {
            Op::AddGrant {
                purpose,
                priority,
                amount,
                starts_in,
                expires_after,
                recur,
            } => {
                let purpose = Purpose::ALL[purpose];
                let priority = priority.unwrap_or(purpose.default_priority());
                let effective_at = now + Duration::seconds(starts_in);
                let expires_at = expires_after.map(|s| effective_at + Duration::seconds(s));
                let (period, rollover_max) = match recur {
                    Recur::None => (None, 0),
                    Recur::Every(i, n, r) => (Period::new(i, n), r),
                };
                let id = self.id();
                let terms = GrantTerms {
                    amount: amt(amount),
                    purpose,
                    priority,
                    effective_at,
                    expires_at,
                    recurrence: period,
                    rollover_max: amt(rollover_max),
                };
                let w = self.wallet.add_grant(GrantId(id), terms, now, &mut changes);
                let m = self.model.add_grant(
                    MGrant {
                        id,
                        amount,
                        purpose,
                        priority,
                        effective_at,
                        expires_at,
                        period,
                        rollover_max,
                        state: MState::Scheduled,
                        cycle: 0,
                        remaining: 0,
                        held: 0,
                    },
                    now,
                );
                check_result(&w, &m)?;
            }
            Op::Debit(amount) => {
                let id = self.id();
                let w = self
                    .wallet
                    .debit(DebitId(id), amt(amount), now, &mut changes);
                let m = self.model.debit(id, amount, now);
                check_result(&w, &m)?;
                if let (Ok(w), Ok(m)) = (&w, &m) {
                    prop_assert_eq!(&alloc_pairs(w), m, "debit allocations");
                    prop_assert_eq!(w.iter().map(|a| a.amount.atomic()).sum::<i64>(), amount);
                }
            }
            Op::Hold { amount, seconds } => {
                let id = self.id();
                let expires_at = now + Duration::seconds(seconds);
                let w =
                    self.wallet
                        .place_hold(HoldId(id), amt(amount), expires_at, now, &mut changes);
                let m = self.model.place_hold(id, amount, seconds, now);
                check_result(&w, &m)?;
                if w.is_ok() {
                    self.hold_ids.push(id);
                }
            }
            Op::Capture { pick, mode, delta } => {
                let Some(hold) = self.pick_hold(pick) else {
                    return self.check(changes, entries_before);
                };
                // The held amount as the model sees it after materialising.
                self.model.advance(now);
                let held = self
                    .model
                    .holds
                    .iter()
                    .find(|h| h.id == hold)
                    .map_or(delta, MHold::total);
                let amount = match mode {
                    0 => (held - delta).max(1),
                    1 => held,
                    _ => held + delta,
                };
                let id = self.id();
                let w =
                    self.wallet
                        .capture(HoldId(hold), amt(amount), DebitId(id), now, &mut changes);
                let m = self.model.capture(hold, amount, id, now);
                check_result(&w, &m)?;
                if let (Ok(w), Ok(m)) = (&w, &m) {
                    prop_assert_eq!(&alloc_pairs(w), m, "capture allocations");
                    prop_assert_eq!(w.iter().map(|a| a.amount.atomic()).sum::<i64>(), amount);
                }
            }
            Op::Release(pick) => {
                let Some(hold) = self.pick_hold(pick) else {
                    return self.check(changes, entries_before);
                };
                let w = self.wallet.release(HoldId(hold), now, &mut changes);
                let m = self.model.release(hold, now);
                check_result(&w, &m)?;
            }
            Op::Void(pick) => {
                let count = self.model.grants.len();
                if count == 0 {
                    return self.check(changes, entries_before);
                }
                let id = self.model.grants[pick % count].id;
                let w = self.wallet.void_grant(GrantId(id), now, &mut changes);
                let m = self.model.void(id, now);
                check_result(&w, &m)?;
            }
            Op::SetLimit(limit) => {
                let w = self
                    .wallet
                    .set_overdraft_limit(amt(limit), now, &mut changes);
                let m = self.model.set_limit(limit, now);
                check_result(&w, &m)?;
            }
            Op::Wait(seconds) => {
                self.now = now + Duration::seconds(seconds);
                self.wallet.materialise(self.now, &mut changes);
                self.model.advance(self.now);
            }
            Op::ToNextEvent { just_before } => {
                if let Some(at) = self.model.next_event() {
                    let to = if just_before {
                        at - Duration::seconds(1)
                    } else {
                        at
                    };
                    self.now = to.max(now);
                }
                self.wallet.materialise(self.now, &mut changes);
                self.model.advance(self.now);
            }
        }
        self.check(changes, entries_before)
    }

    /// Everything the wallet and the model must agree on after a step, and
    /// the ledger properties of rules 15 and 16.
    fn check(&mut self, changes: Changes, entries_before: usize) -> Result<(), TestCaseError> {
        let Changes {
            entries,
            finished_grants,
            finished_holds,
            happened,
        } = changes;
        // A grant ends once, and one that leaves the working set having
        // ended (rather than run out) left as the wallet said it ended.
        for h in &happened {
            if let Happened::GrantEnded {
                grant, status, at, ..
            } = h
            {
                prop_assert!(
                    self.ended.insert(*grant, (*status, *at)).is_none(),
                    "a grant ended twice"
                );
            }
        }
        for grant in &finished_grants {
            if let Some(at) = grant.ended_at {
                prop_assert_eq!(self.ended.get(&grant.id), Some(&(grant.status, at)));
            }
        }
        let mut renewed: Vec<(u128, i64, Instant)> = happened
            .iter()
            .filter_map(|h| match h {
                Happened::GrantRenewed {
                    grant, amount, at, ..
                } => Some((grant.0, amount.atomic(), *at)),
                Happened::GrantEnded { .. } => None,
            })
            .collect();
        let mut renewal_entries: Vec<(u128, i64, Instant)> = entries
            .iter()
            .filter(|e| e.kind == EntryKind::Renewal)
            .map(|e| {
                (
                    e.grant.expect("a renewal names its grant").0,
                    e.amount.atomic(),
                    e.occurred_at,
                )
            })
            .collect();
        renewed.sort();
        renewal_entries.sort();
        prop_assert_eq!(renewed, renewal_entries, "renewals");
        // The step's entries, as a multiset: same instants, kinds, grants, amounts.
        let key = |e: &MEntry| (e.0, e.1.as_str(), e.2, e.3, format!("{:?}", e.4));
        let mut got: Vec<MEntry> = entries
            .iter()
            .map(|e| {
                let reference = match (e.kind, e.grant) {
                    (EntryKind::Repayment, None) => None,
                    _ => Some(e.reference),
                };
                (
                    e.occurred_at,
                    e.kind,
                    e.grant.map(|g| g.0),
                    e.amount.atomic(),
                    reference,
                )
            })
            .collect();
        let mut want: Vec<MEntry> = self.model.entries[entries_before..].to_vec();
        got.sort_by_key(key);
        want.sort_by_key(key);
        prop_assert_eq!(got, want, "entries of the step");

        for grant in finished_grants {
            prop_assert!(
                self.finished.insert(grant.id, grant).is_none(),
                "a grant finished twice"
            );
        }
        for (hold, _, at) in &finished_holds {
            prop_assert!(*at <= self.now);
            prop_assert!(self.wallet.hold(hold.id).is_none());
        }
        self.ledger.extend(entries);

        let wallet = &self.wallet;
        let model = &self.model;
        wallet.assert_invariants();

        // Agreement with the model.
        prop_assert_eq!(wallet.balance.atomic(), model.balance(), "balance");
        prop_assert_eq!(wallet.debt.atomic(), model.debt, "debt");
        prop_assert_eq!(wallet.overdraft_limit.atomic(), model.limit, "limit");
        for m in &model.grants {
            let id = GrantId(m.id);
            let g = match (wallet.grant(id), self.finished.get(&id)) {
                (Some(g), None) => g,
                (None, Some(g)) => {
                    prop_assert!(m.is_final(), "grant {} finished early: {:?}", m.id, m);
                    g
                }
                (live, finished) => {
                    return Err(TestCaseError::fail(format!(
                        "grant {} live {:?} finished {:?}",
                        m.id,
                        live.is_some(),
                        finished.is_some()
                    )));
                }
            };
            let status = match m.state {
                MState::Scheduled => GrantStatus::Scheduled,
                MState::Active => GrantStatus::Active,
                MState::Expired => GrantStatus::Expired,
                MState::Voided => GrantStatus::Voided,
            };
            prop_assert_eq!(g.status, status, "status of grant {}", m.id);
            prop_assert_eq!(
                g.remaining.atomic(),
                m.remaining,
                "remaining of grant {}",
                m.id
            );
            prop_assert_eq!(g.held.atomic(), m.held, "held of grant {}", m.id);
            prop_assert_eq!(g.cycle, m.cycle, "cycle of grant {}", m.id);
            if m.state == MState::Active {
                prop_assert_eq!(g.cycle_end(), m.cycle_end(), "cycle end of grant {}", m.id);
            }
        }
        prop_assert_eq!(wallet.holds.len(), model.holds.len(), "active holds");
        for m in &model.holds {
            let h = wallet.hold(HoldId(m.id));
            prop_assert!(h.is_some(), "hold {} should be active", m.id);
            let h = h.unwrap();
            prop_assert_eq!(h.amount.atomic(), m.total());
            prop_assert_eq!(h.expires_at, m.expires_at);
        }
        // Drawdown order of the live, spendable grants.
        let order: Vec<u128> = wallet
            .grants_in_drawdown_order()
            .into_iter()
            .filter(|g| g.is_spendable())
            .map(|g| g.id.0)
            .collect();
        let model_order: Vec<u128> = model
            .order()
            .into_iter()
            .filter(|id| !model.grants.iter().any(|g| g.id == *id && g.is_final()))
            .collect();
        prop_assert_eq!(order, model_order, "drawdown order");
        let summary = wallet.summary();
        prop_assert_eq!(summary.balance.atomic(), model.balance());
        prop_assert_eq!(summary.held.atomic(), model.held());
        let by_purpose = |purpose: Purpose| -> i64 {
            model
                .grants
                .iter()
                .filter(|g| g.purpose == purpose)
                .map(|g| g.remaining)
                .sum()
        };
        prop_assert_eq!(
            summary.promotional.atomic(),
            by_purpose(Purpose::Promotional)
        );
        prop_assert_eq!(summary.bundled.atomic(), by_purpose(Purpose::Bundled));
        prop_assert_eq!(summary.paid.atomic(), by_purpose(Purpose::Paid));
        prop_assert_eq!(summary.available.atomic(), model.balance() - model.held());
        prop_assert_eq!(summary.spendable.atomic(), model.spendable(), "spendable");
        prop_assert_eq!(wallet.spendable().atomic(), model.spendable(), "spendable");
        prop_assert_eq!(wallet.next_event_at(), model.next_event(), "next event");

        // Rule 15: gapless sequences from 1, time never goes back, balance_after chains.
        let mut balance = 0;
        let mut previous: Option<Instant> = None;
        for (index, entry) in self.ledger.iter().enumerate() {
            prop_assert_eq!(entry.sequence, index as u64 + 1, "gapless sequence");
            prop_assert!(!entry.amount.is_zero(), "no empty entries");
            balance += entry.amount.atomic();
            prop_assert_eq!(entry.balance_after.atomic(), balance, "balance_after");
            prop_assert!(
                previous.is_none_or(|p| p <= entry.occurred_at),
                "occurred_at"
            );
            prop_assert!(entry.occurred_at <= self.now);
            previous = Some(entry.occurred_at);
        }
        prop_assert_eq!(wallet.last_sequence, self.ledger.len() as u64);

        // Rule 16: balance = Σ entries = Σ remainders (live and finished) − debt.
        prop_assert_eq!(balance, wallet.balance.atomic(), "balance = sum of entries");
        let remainders: i64 = wallet
            .grants
            .iter()
            .chain(self.finished.values())
            .map(|g| g.remaining.atomic())
            .sum();
        prop_assert_eq!(remainders - wallet.debt.atomic(), wallet.balance.atomic());
        prop_assert!(!wallet.debt.is_negative());
        prop_assert!(
            wallet.debt <= wallet.overdraft_limit,
            "debt within overdraft"
        );
        for g in wallet.grants.iter().chain(self.finished.values()) {
            prop_assert!(!g.remaining.is_negative(), "negative remainder");
            let sum: i64 = self
                .ledger
                .iter()
                .filter(|e| e.grant == Some(g.id))
                .map(|e| e.amount.atomic())
                .sum();
            prop_assert_eq!(sum, g.remaining.atomic(), "entries of grant {:?}", g.id);
        }
        let debt_entries: i64 = self
            .ledger
            .iter()
            .filter(|e| e.grant.is_none())
            .map(|e| e.amount.atomic())
            .sum();
        prop_assert_eq!(debt_entries, -wallet.debt.atomic(), "entries of debt");
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1024,
        max_shrink_iters: 4096,
        ..ProptestConfig::default()
    })]

    #[test]
    fn wallet_agrees_with_reference_model(ops in proptest::collection::vec(op(), 1..=40)) {
        let mut harness = Harness::new();
        for (index, op) in ops.iter().enumerate() {
            harness.step(op).map_err(|e| {
                TestCaseError::fail(format!("step {index} {op:?} at {}: {e}", harness.now))
            })?;
        }
    }
}
