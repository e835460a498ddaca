//! The wallet state machine: every balance change of one wallet happens here,
//! as entries, with the invariants of SPEC rule 16 checked after each change.
//!
//! Shape: each command first materialises every scheduled event up to `now`
//! (arrivals, renewals, expiries, hold expiries), then decides. A rejected
//! command changes nothing but the materialisation, which is always valid.
//! This module does no IO and reads no clock.

use crate::amount::Amount;
use crate::grant::{Grant, GrantId, GrantStatus, GrantTerms, Purpose, drawdown_order};
use crate::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HoldId(pub u128);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DebitId(pub u128);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    Grant,
    Renewal,
    Debit,
    Expiry,
    Void,
    Repayment,
    Adjustment,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Grant => "grant",
            EntryKind::Renewal => "renewal",
            EntryKind::Debit => "debit",
            EntryKind::Expiry => "expiry",
            EntryKind::Void => "void",
            EntryKind::Repayment => "repayment",
            EntryKind::Adjustment => "adjustment",
        }
    }

    pub fn parse(text: &str) -> Option<EntryKind> {
        [
            EntryKind::Grant,
            EntryKind::Renewal,
            EntryKind::Debit,
            EntryKind::Expiry,
            EntryKind::Void,
            EntryKind::Repayment,
            EntryKind::Adjustment,
        ]
        .into_iter()
        .find(|k| k.as_str() == text)
    }
}

/// What caused an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reference {
    Grant(GrantId),
    Debit(DebitId),
    Hold(HoldId),
}

/// One immutable line of the wallet's ledger. `amount` is the change to the
/// grant's remainder, or to minus the debt when `grant` is `None`, so the
/// entries of a grant sum to its remainder and all entries sum to the balance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub sequence: u64,
    pub kind: EntryKind,
    pub amount: Amount,
    pub balance_after: Amount,
    pub occurred_at: Instant,
    pub grant: Option<GrantId>,
    pub reference: Reference,
}

/// Part of a hold: from a grant, or from overdraft headroom when `grant` is None.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reservation {
    pub grant: Option<GrantId>,
    pub amount: Amount,
    /// The grant's cycle when the reservation was taken (0 for overdraft).
    /// A reservation that outlives its cycle's renewal stays capturable, but
    /// on release or expiry it is forfeited, not returned to the new cycle:
    /// otherwise held balance would escape the renewal's forfeit (SPEC rule 10).
    pub cycle: u64,
}

/// Part of a debit: from a grant, or into debt when `grant` is None.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allocation {
    pub grant: Option<GrantId>,
    pub amount: Amount,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hold {
    pub id: HoldId,
    pub amount: Amount,
    pub expires_at: Instant,
    /// In drawdown order at the moment the hold was placed.
    pub reservations: Vec<Reservation>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldEnd {
    Captured,
    Released,
    Expired,
}

/// Holds are bounded to 24 hours (SPEC rule 12).
pub const HOLD_SECONDS_MAX: i64 = 24 * 60 * 60;

/// Why a command was refused. Each has a stable wire code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    InsufficientBalance {
        requested: Amount,
        spendable: Amount,
    },
    GrantNotFound,
    GrantAlreadyEnded,
    HoldNotFound,
    /// The wallet's total capacity would exceed what an i64 can hold.
    CapacityExceeded,
    OverdraftBelowDebt,
    Invalid {
        field: &'static str,
        message: String,
    },
}

impl Rejection {
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::InsufficientBalance { .. } => "insufficient_balance",
            Rejection::GrantNotFound => "resource_not_found",
            Rejection::GrantAlreadyEnded => "grant_already_ended",
            Rejection::HoldNotFound => "hold_not_active",
            Rejection::CapacityExceeded => "wallet_capacity_exceeded",
            Rejection::OverdraftBelowDebt => "overdraft_below_debt",
            Rejection::Invalid { .. } => "parameter_invalid",
        }
    }

    fn invalid(field: &'static str, message: impl Into<String>) -> Rejection {
        Rejection::Invalid {
            field,
            message: message.into(),
        }
    }
}

/// What a command changed beyond the live state: new ledger entries, the
/// final state of grants and holds that left the working set, and the
/// grants' ends and renewals in the order they happened.
#[derive(Debug, Default)]
pub struct Changes {
    pub entries: Vec<Entry>,
    pub finished_grants: Vec<Grant>,
    pub finished_holds: Vec<(Hold, HoldEnd, Instant)>,
    pub happened: Vec<Happened>,
}

/// A change to a grant's life that no entry tells on its own: a grant can
/// end with nothing left to forfeit, and a renewal's entries do not say
/// which cycle began.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Happened {
    /// The grant expired or was voided; `forfeited` is the unheld
    /// remainder it took with it.
    GrantEnded {
        grant: GrantId,
        status: GrantStatus,
        forfeited: Amount,
        at: Instant,
    },
    /// The grant began cycle `cycle` with `amount` more.
    GrantRenewed {
        grant: GrantId,
        cycle: u64,
        amount: Amount,
        at: Instant,
    },
}

/// The live state of one wallet: every grant that can still change and every
/// active hold. Finished grants and holds leave it through [`Changes`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wallet {
    pub overdraft_limit: Amount,
    pub debt: Amount,
    pub balance: Amount,
    /// Sequence of the last entry; the next entry gets `last_sequence + 1`.
    pub last_sequence: u64,
    pub grants: Vec<Grant>,
    pub holds: Vec<Hold>,
}

/// Balance summary at an instant (`GET /v1/wallets/{id}/balance`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub balance: Amount,
    /// `balance - held`: what is neither held nor owed.
    pub available: Amount,
    pub held: Amount,
    pub debt: Amount,
    pub overdraft_limit: Amount,
    /// The largest debit that would succeed now: `available + overdraft_limit`.
    pub spendable: Amount,
    pub promotional: Amount,
    pub bundled: Amount,
    pub paid: Amount,
    pub next_expiry: Option<(Instant, Amount)>,
}

impl Wallet {
    pub fn new(overdraft_limit: Amount) -> Wallet {
        Wallet {
            overdraft_limit,
            debt: Amount::ZERO,
            balance: Amount::ZERO,
            last_sequence: 0,
            grants: Vec::new(),
            holds: Vec::new(),
        }
    }

    // ---- queries -----------------------------------------------------------

    pub fn grant(&self, id: GrantId) -> Option<&Grant> {
        self.grants.iter().find(|g| g.id == id)
    }

    pub fn hold(&self, id: HoldId) -> Option<&Hold> {
        self.holds.iter().find(|h| h.id == id)
    }

    /// Live grants in drawdown order.
    pub fn grants_in_drawdown_order(&self) -> Vec<&Grant> {
        let mut grants: Vec<&Grant> = self.grants.iter().collect();
        grants.sort_by(|a, b| drawdown_order(a, b));
        grants
    }

    pub fn held(&self) -> Amount {
        sum(self.holds.iter().map(|h| h.amount))
    }

    fn overdraft_held(&self) -> Amount {
        sum(self
            .holds
            .iter()
            .flat_map(|h| &h.reservations)
            .filter(|r| r.grant.is_none())
            .map(|r| r.amount))
    }

    fn unheld_spendable(&self) -> Amount {
        sum(self
            .grants
            .iter()
            .filter(|g| g.is_spendable())
            .map(|g| g.unheld()))
    }

    /// Overdraft not yet used by debt or reserved by holds.
    fn overdraft_headroom(&self) -> Amount {
        let used = self.debt.atomic() + self.overdraft_held().atomic();
        Amount::from_atomic(self.overdraft_limit.atomic() - used)
    }

    /// The largest amount a debit or hold could take now.
    pub fn spendable(&self) -> Amount {
        Amount::from_atomic(self.unheld_spendable().atomic() + self.overdraft_headroom().atomic())
    }

    pub fn summary(&self) -> Summary {
        let by_purpose = |purpose: Purpose| {
            sum(self
                .grants
                .iter()
                .filter(|g| g.terms.purpose == purpose)
                .map(|g| g.remaining))
        };
        let held = self.held();
        let available = Amount::from_atomic(self.balance.atomic() - held.atomic());
        Summary {
            balance: self.balance,
            available,
            held,
            debt: self.debt,
            overdraft_limit: self.overdraft_limit,
            spendable: Amount::from_atomic(available.atomic() + self.overdraft_limit.atomic()),
            promotional: by_purpose(Purpose::Promotional),
            bundled: by_purpose(Purpose::Bundled),
            paid: by_purpose(Purpose::Paid),
            next_expiry: self.next_expiry(),
        }
    }

    /// The soonest instant at which balance will be forfeited, and how much
    /// (expiries, and what a renewal will not carry over), at current usage.
    pub fn next_expiry(&self) -> Option<(Instant, Amount)> {
        let mut soonest: Option<(Instant, Amount)> = None;
        for grant in self.grants.iter().filter(|g| g.is_spendable()) {
            let unheld = grant.unheld();
            let forfeit = match (grant.next_renewal_at(), grant.terms.expires_at) {
                (Some(at), _) => (at, unheld.checked_sub(grant.terms.rollover_max)),
                (None, Some(at)) => (at, Some(unheld)),
                (None, None) => continue,
            };
            let (at, Some(amount)) = forfeit else {
                continue;
            };
            if !amount.is_positive() {
                continue;
            }
            soonest = match soonest {
                Some((t, total)) if t == at => {
                    Some((t, Amount::from_atomic(total.atomic() + amount.atomic())))
                }
                Some((t, total)) if t < at => Some((t, total)),
                _ => Some((at, amount)),
            };
        }
        soonest
    }

    /// The next instant at which something happens to this wallet by itself.
    pub fn next_event_at(&self) -> Option<Instant> {
        let grant_events = self.grants.iter().filter_map(|g| match g.status {
            GrantStatus::Scheduled => Some(g.terms.effective_at),
            GrantStatus::Active => match (g.next_renewal_at(), g.terms.expires_at) {
                (Some(renewal), _) => Some(renewal),
                (None, expiry) => expiry,
            },
            GrantStatus::Expired | GrantStatus::Voided => None,
        });
        let hold_events = self.holds.iter().map(|h| h.expires_at);
        grant_events.chain(hold_events).min()
    }

    /// Checks SPEC rule 16 and the wallet's own bookkeeping. A failure is a
    /// bug: it panics loudly rather than let a corrupt balance be written.
    pub fn assert_invariants(&self) {
        if let Some(violation) = self.invariant_violations().first() {
            panic!("{violation}");
        }
    }

    /// What [`Wallet::assert_invariants`] checks, as a list of what is
    /// wrong (empty when nothing is): `credstack verify` reports these for
    /// a wallet read back from the store.
    pub fn invariant_violations(&self) -> Vec<String> {
        // Sums in i128: a wallet read back from a damaged store may hold
        // values whose i64 sum overflows, and the check must still report.
        fn total(amounts: impl Iterator<Item = Amount>) -> i128 {
            amounts.map(|a| i128::from(a.atomic())).sum()
        }
        let mut found = Vec::new();
        // The message is only written for a check that fails: this runs
        // after every change on the writer's hot path.
        let mut check = |ok: bool, what: &dyn Fn() -> String| {
            if !ok {
                found.push(what());
            }
        };
        let remaining = total(self.grants.iter().map(|g| g.remaining));
        let debt = i128::from(self.debt.atomic());
        let balance = i128::from(self.balance.atomic());
        check(balance == remaining - debt, &|| {
            format!(
                "balance must equal grant remainders minus debt: balance {balance}, remainders {remaining}, debt {debt}"
            )
        });
        check(debt >= 0, &|| format!("debt must not be negative: {debt}"));
        let overdraft_held = total(
            self.holds
                .iter()
                .flat_map(|h| &h.reservations)
                .filter(|r| r.grant.is_none())
                .map(|r| r.amount),
        );
        check(
            debt + overdraft_held <= i128::from(self.overdraft_limit.atomic()),
            &|| {
                format!(
                    "debt and overdraft holds must stay within the overdraft limit: debt {debt}, held {overdraft_held}, limit {}",
                    self.overdraft_limit.atomic()
                )
            },
        );
        for grant in &self.grants {
            let id = grant.id.0;
            let (remaining, held) = (grant.remaining.atomic(), grant.held.atomic());
            check(remaining >= 0, &|| {
                format!("grant {id:032x}: remaining must not be negative: {remaining}")
            });
            check(held >= 0, &|| {
                format!("grant {id:032x}: held must not be negative: {held}")
            });
            check(held <= remaining, &|| {
                format!("grant {id:032x}: held {held} must not exceed remaining {remaining}")
            });
            let reserved = total(
                self.holds
                    .iter()
                    .flat_map(|h| &h.reservations)
                    .filter(|r| r.grant == Some(grant.id))
                    .map(|r| r.amount),
            );
            check(reserved == i128::from(held), &|| {
                format!("grant {id:032x}: held {held} must match hold reservations {reserved}")
            });
        }
        for hold in &self.holds {
            check(
                i128::from(hold.amount.atomic())
                    == total(hold.reservations.iter().map(|r| r.amount)),
                &|| {
                    format!(
                        "hold {:032x}: amount must equal its reservations",
                        hold.id.0
                    )
                },
            );
        }
        if debt > 0 {
            let unheld = self
                .grants
                .iter()
                .filter(|g| g.is_spendable())
                .map(|g| i128::from(g.remaining.atomic()) - i128::from(g.held.atomic()))
                .sum::<i128>();
            check(unheld == 0, &|| {
                format!(
                    "debt must be repaid from any unheld spendable balance: debt {debt}, unheld {unheld}"
                )
            });
        }
        found
    }

    // ---- commands ----------------------------------------------------------

    /// Processes every scheduled event at or before `now`, each dated at its
    /// own instant (SPEC rule 11). Events at one instant run in a fixed order:
    /// grant expiries, hold expiries, renewals, arrivals, then debt repayment.
    pub fn materialise(&mut self, now: Instant, changes: &mut Changes) {
        while let Some(at) = self.next_event_at().filter(|at| *at <= now) {
            for index in 0..self.grants.len() {
                let grant = &self.grants[index];
                let expires_now =
                    grant.status == GrantStatus::Active && grant.terms.expires_at == Some(at);
                if expires_now {
                    self.end_grant(index, GrantStatus::Expired, at, changes);
                }
            }
            let expired_holds: Vec<HoldId> = self
                .holds
                .iter()
                .filter(|h| h.expires_at == at)
                .map(|h| h.id)
                .collect();
            for id in expired_holds {
                self.finish_hold(id, HoldEnd::Expired, at, changes);
            }
            for index in 0..self.grants.len() {
                let grant = &self.grants[index];
                if grant.status == GrantStatus::Active && grant.next_renewal_at() == Some(at) {
                    self.renew(index, at, changes);
                }
            }
            for index in 0..self.grants.len() {
                let grant = &self.grants[index];
                if grant.status == GrantStatus::Scheduled && grant.terms.effective_at == at {
                    self.arrive(index, at, changes);
                }
            }
            self.repay_debt(at, changes);
            self.retire_finished_grants(changes);
        }
    }

    /// Adds a grant (SPEC rules 3, 4, 6). It arrives at once when
    /// `effective_at <= now`, otherwise it is scheduled.
    pub fn add_grant(
        &mut self,
        id: GrantId,
        terms: GrantTerms,
        now: Instant,
        changes: &mut Changes,
    ) -> Result<(), Rejection> {
        self.materialise(now, changes);
        validate_terms(&terms, now)?;
        // Every remainder is bounded by its grant's capacity, so a wallet
        // whose capacities sum inside i64 can never overflow a balance.
        if self
            .capacity_with(terms.capacity(), self.overdraft_limit)
            .is_none()
        {
            return Err(Rejection::CapacityExceeded);
        }
        self.grants.push(Grant::new(id, terms));
        self.materialise(now, changes);
        self.assert_invariants();
        Ok(())
    }

    /// Debits `amount` in drawdown order, all or nothing (SPEC rules 4, 5, 7).
    pub fn debit(
        &mut self,
        id: DebitId,
        amount: Amount,
        now: Instant,
        changes: &mut Changes,
    ) -> Result<Vec<Allocation>, Rejection> {
        self.materialise(now, changes);
        assert!(amount.is_positive(), "debit amounts are validated positive");
        let spendable = self.spendable();
        if amount > spendable {
            return Err(Rejection::InsufficientBalance {
                requested: amount,
                spendable,
            });
        }
        let allocations = self.take(amount);
        self.apply_allocations(&allocations);
        self.record_debit(&allocations, Reference::Debit(id), now, changes);
        self.assert_invariants();
        Ok(allocations)
    }

    /// Reserves `amount` until `expires_at` (SPEC rule 12).
    pub fn place_hold(
        &mut self,
        id: HoldId,
        amount: Amount,
        expires_at: Instant,
        now: Instant,
        changes: &mut Changes,
    ) -> Result<(), Rejection> {
        self.materialise(now, changes);
        assert!(amount.is_positive(), "hold amounts are validated positive");
        // Fix: compared whole seconds (`num_seconds()` truncates), which let a
        // hold last up to 24 hours + 999,999µs; rule 12 says at most 24 hours.
        let longest = chrono::Duration::seconds(HOLD_SECONDS_MAX);
        if expires_at <= now || expires_at - now > longest {
            return Err(Rejection::invalid(
                "expires_in_seconds",
                format!("must be between 1 and {HOLD_SECONDS_MAX} seconds"),
            ));
        }
        let spendable = self.spendable();
        if amount > spendable {
            return Err(Rejection::InsufficientBalance {
                requested: amount,
                spendable,
            });
        }
        let reservations: Vec<Reservation> = self
            .take(amount)
            .into_iter()
            .map(|a| Reservation {
                grant: a.grant,
                amount: a.amount,
                cycle: a.grant.and_then(|id| self.grant(id)).map_or(0, |g| g.cycle),
            })
            .collect();
        for reservation in &reservations {
            if let Some(grant_id) = reservation.grant {
                let grant = self.grant_mut(grant_id);
                grant.held = grant
                    .held
                    .checked_add(reservation.amount)
                    .expect("held fits");
            }
        }
        self.holds.push(Hold {
            id,
            amount,
            expires_at,
            reservations,
        });
        self.assert_invariants();
        Ok(())
    }

    /// Captures `amount` of an active hold (SPEC rule 13): up to the held
    /// amount always succeeds, from exactly what was reserved; any excess is
    /// debited like a debit, all or nothing. The rest of the hold is released.
    pub fn capture(
        &mut self,
        hold_id: HoldId,
        amount: Amount,
        debit_id: DebitId,
        now: Instant,
        changes: &mut Changes,
    ) -> Result<Vec<Allocation>, Rejection> {
        self.materialise(now, changes);
        assert!(
            amount.is_positive(),
            "capture amounts are validated positive"
        );
        let hold = self.hold(hold_id).ok_or(Rejection::HoldNotFound)?.clone();
        let excess = Amount::from_atomic((amount.atomic() - hold.amount.atomic()).max(0));
        if excess.is_positive() {
            let spendable = self.spendable();
            if excess > spendable {
                return Err(Rejection::InsufficientBalance {
                    requested: excess,
                    spendable,
                });
            }
        }
        // Take the reserved part first, in the order it was reserved.
        let mut allocations = Vec::new();
        let mut to_capture = amount.min(hold.amount);
        let hold_index = self
            .holds
            .iter()
            .position(|h| h.id == hold_id)
            .expect("found above");
        for reservation in &mut self.holds[hold_index].reservations {
            let take = reservation.amount.min(to_capture);
            if take.is_zero() {
                continue;
            }
            reservation.amount = Amount::from_atomic(reservation.amount.atomic() - take.atomic());
            to_capture = Amount::from_atomic(to_capture.atomic() - take.atomic());
            allocations.push(Allocation {
                grant: reservation.grant,
                amount: take,
            });
        }
        self.holds[hold_index].amount =
            sum(self.holds[hold_index].reservations.iter().map(|r| r.amount));
        for allocation in &allocations {
            if let Some(grant_id) = allocation.grant {
                let grant = self.grant_mut(grant_id);
                grant.held = Amount::from_atomic(grant.held.atomic() - allocation.amount.atomic());
            }
        }
        // Apply the reserved part before planning the excess, so the excess
        // is planned against what is really left.
        self.apply_allocations(&allocations);
        if excess.is_positive() {
            let excess_allocations = self.take(excess);
            self.apply_allocations(&excess_allocations);
            allocations.extend(excess_allocations);
        }
        let allocations = merge_allocations(allocations);
        self.record_debit(&allocations, Reference::Debit(debit_id), now, changes);
        self.finish_hold(hold_id, HoldEnd::Captured, now, changes);
        self.repay_debt(now, changes);
        self.retire_finished_grants(changes);
        self.assert_invariants();
        Ok(allocations)
    }

    /// Releases an active hold: its reservations return to their grants, and
    /// whatever was reserved from a grant that ended meanwhile is forfeited.
    pub fn release(
        &mut self,
        hold_id: HoldId,
        now: Instant,
        changes: &mut Changes,
    ) -> Result<(), Rejection> {
        self.materialise(now, changes);
        self.hold(hold_id).ok_or(Rejection::HoldNotFound)?;
        self.finish_hold(hold_id, HoldEnd::Released, now, changes);
        self.repay_debt(now, changes);
        self.retire_finished_grants(changes);
        self.assert_invariants();
        Ok(())
    }

    /// Voids a live grant (SPEC rule 14): forfeits its unheld remainder and
    /// ends its recurrence. What holds reserved from it stays capturable.
    pub fn void_grant(
        &mut self,
        grant_id: GrantId,
        now: Instant,
        changes: &mut Changes,
    ) -> Result<(), Rejection> {
        self.materialise(now, changes);
        let index = self
            .grants
            .iter()
            .position(|g| g.id == grant_id)
            .ok_or(Rejection::GrantNotFound)?;
        if self.grants[index].is_ended() {
            return Err(Rejection::GrantAlreadyEnded);
        }
        self.end_grant(index, GrantStatus::Voided, now, changes);
        self.retire_finished_grants(changes);
        self.assert_invariants();
        Ok(())
    }

    /// Sets the overdraft limit; refused below what debt and holds already use.
    pub fn set_overdraft_limit(
        &mut self,
        limit: Amount,
        now: Instant,
        changes: &mut Changes,
    ) -> Result<(), Rejection> {
        self.materialise(now, changes);
        if limit.atomic() < self.debt.atomic() + self.overdraft_held().atomic() {
            return Err(Rejection::OverdraftBelowDebt);
        }
        if self.capacity_with(Some(Amount::ZERO), limit).is_none() {
            return Err(Rejection::CapacityExceeded);
        }
        self.overdraft_limit = limit;
        self.assert_invariants();
        Ok(())
    }

    // ---- steps -------------------------------------------------------------

    /// The capacity of every live grant plus `extra` plus the overdraft
    /// `limit`, or `None` past i64. Fix: the overdraft limit used to be left
    /// out, but held amounts and the spendable sum add it to what grants hold
    /// (`held()`, `spendable()`, `summary()`), so an oversized limit could
    /// overflow them (SPEC rule 1: no arithmetic may wrap or panic).
    fn capacity_with(&self, extra: Option<Amount>, limit: Amount) -> Option<Amount> {
        let mut total = extra?.checked_add(limit)?;
        for grant in &self.grants {
            total = total.checked_add(grant.terms.capacity()?)?;
        }
        Some(total)
    }

    fn grant_mut(&mut self, id: GrantId) -> &mut Grant {
        self.grants
            .iter_mut()
            .find(|g| g.id == id)
            .expect("grant referenced by the wallet is live")
    }

    /// Plans taking `amount` from unheld spendable balance in drawdown order,
    /// then from overdraft headroom. The caller checked that it fits.
    fn take(&self, amount: Amount) -> Vec<Allocation> {
        let mut needed = amount;
        let mut allocations = Vec::new();
        for grant in self.grants_in_drawdown_order() {
            if needed.is_zero() {
                break;
            }
            if !grant.is_spendable() {
                continue;
            }
            let take = grant.unheld().min(needed);
            if take.is_positive() {
                allocations.push(Allocation {
                    grant: Some(grant.id),
                    amount: take,
                });
                needed = Amount::from_atomic(needed.atomic() - take.atomic());
            }
        }
        if needed.is_positive() {
            assert!(
                needed <= self.overdraft_headroom(),
                "caller checked spendable"
            );
            allocations.push(Allocation {
                grant: None,
                amount: needed,
            });
        }
        allocations
    }

    /// Takes planned allocations out of grant remainders and into debt. The
    /// entries are recorded separately, once per grant, by `record_debit`.
    fn apply_allocations(&mut self, allocations: &[Allocation]) {
        for allocation in allocations {
            match allocation.grant {
                Some(grant_id) => {
                    let grant = self.grant_mut(grant_id);
                    grant.remaining =
                        Amount::from_atomic(grant.remaining.atomic() - allocation.amount.atomic());
                    assert!(
                        !grant.remaining.is_negative(),
                        "remaining must not go negative"
                    );
                }
                None => {
                    self.debt = self.debt.checked_add(allocation.amount).expect("debt fits");
                }
            }
        }
    }

    fn record_debit(
        &mut self,
        allocations: &[Allocation],
        reference: Reference,
        at: Instant,
        changes: &mut Changes,
    ) {
        for allocation in allocations {
            let negative = Amount::from_atomic(-allocation.amount.atomic());
            self.record(
                EntryKind::Debit,
                negative,
                allocation.grant,
                reference,
                at,
                changes,
            );
        }
        self.retire_finished_grants(changes);
    }

    fn record(
        &mut self,
        kind: EntryKind,
        amount: Amount,
        grant: Option<GrantId>,
        reference: Reference,
        at: Instant,
        changes: &mut Changes,
    ) {
        if amount.is_zero() {
            return;
        }
        self.balance = self
            .balance
            .checked_add(amount)
            .expect("balance is bounded by capacity");
        self.last_sequence += 1;
        changes.entries.push(Entry {
            sequence: self.last_sequence,
            kind,
            amount,
            balance_after: self.balance,
            occurred_at: at,
            grant,
            reference,
        });
    }

    /// Forfeits `amount` of a grant's remainder as an entry of `kind`.
    fn forfeit(
        &mut self,
        index: usize,
        amount: Amount,
        kind: EntryKind,
        at: Instant,
        changes: &mut Changes,
    ) {
        let grant = &mut self.grants[index];
        grant.remaining = Amount::from_atomic(grant.remaining.atomic() - amount.atomic());
        assert!(!grant.remaining.is_negative());
        let id = grant.id;
        self.record(
            kind,
            Amount::from_atomic(-amount.atomic()),
            Some(id),
            Reference::Grant(id),
            at,
            changes,
        );
    }

    fn arrive(&mut self, index: usize, at: Instant, changes: &mut Changes) {
        let grant = &mut self.grants[index];
        grant.status = GrantStatus::Active;
        grant.cycle = 1;
        grant.remaining = grant.terms.amount;
        let (id, amount) = (grant.id, grant.terms.amount);
        self.record(
            EntryKind::Grant,
            amount,
            Some(id),
            Reference::Grant(id),
            at,
            changes,
        );
    }

    /// SPEC rule 10: carry `min(unheld, rollover_max)`, forfeit the rest of
    /// the unheld remainder, start the new cycle with `amount + carried`.
    /// What active holds reserved stays in `remaining` (still capturable) and
    /// is forfeited when the hold is released or expires (`finish_hold`).
    fn renew(&mut self, index: usize, at: Instant, changes: &mut Changes) {
        let grant = &self.grants[index];
        let unheld = grant.unheld();
        let carried = unheld.min(grant.terms.rollover_max);
        let forfeited = Amount::from_atomic(unheld.atomic() - carried.atomic());
        self.forfeit(index, forfeited, EntryKind::Expiry, at, changes);
        let grant = &mut self.grants[index];
        grant.cycle += 1;
        grant.remaining = grant
            .remaining
            .checked_add(grant.terms.amount)
            .expect("remaining is bounded by capacity");
        let (id, amount, cycle) = (grant.id, grant.terms.amount, grant.cycle);
        self.record(
            EntryKind::Renewal,
            amount,
            Some(id),
            Reference::Grant(id),
            at,
            changes,
        );
        changes.happened.push(Happened::GrantRenewed {
            grant: id,
            cycle,
            amount,
            at,
        });
    }

    fn end_grant(&mut self, index: usize, status: GrantStatus, at: Instant, changes: &mut Changes) {
        let unheld = self.grants[index].unheld();
        let kind = match status {
            GrantStatus::Voided => EntryKind::Void,
            _ => EntryKind::Expiry,
        };
        self.forfeit(index, unheld, kind, at, changes);
        let grant = &mut self.grants[index];
        grant.status = status;
        grant.ended_at = Some(at);
        changes.happened.push(Happened::GrantEnded {
            grant: grant.id,
            status,
            forfeited: unheld,
            at,
        });
    }

    /// Ends a hold: what was reserved and not captured returns to its grant,
    /// or is forfeited when that grant has ended or has renewed since the
    /// reservation was taken (the reserved cycle is over, SPEC rules 10, 13).
    fn finish_hold(&mut self, hold_id: HoldId, end: HoldEnd, at: Instant, changes: &mut Changes) {
        let index = self
            .holds
            .iter()
            .position(|h| h.id == hold_id)
            .expect("hold is active");
        let hold = self.holds.remove(index);
        for reservation in &hold.reservations {
            let Some(grant_id) = reservation.grant else {
                continue;
            };
            if reservation.amount.is_zero() {
                continue;
            }
            let grant_index = self
                .grants
                .iter()
                .position(|g| g.id == grant_id)
                .expect("live");
            let grant = &mut self.grants[grant_index];
            grant.held = Amount::from_atomic(grant.held.atomic() - reservation.amount.atomic());
            // Fix: a reservation from an earlier cycle used to flow back into
            // the current cycle, so a hold spanning a renewal carried its amount
            // past `rollover_max` (and a grant could grow every cycle).
            if grant.is_ended() || reservation.cycle < grant.cycle {
                let kind = if grant.status == GrantStatus::Voided {
                    EntryKind::Void
                } else {
                    EntryKind::Expiry
                };
                self.forfeit(grant_index, reservation.amount, kind, at, changes);
            }
        }
        changes.finished_holds.push((hold, end, at));
    }

    /// SPEC rule 6: unheld spendable balance first repays debt.
    fn repay_debt(&mut self, at: Instant, changes: &mut Changes) {
        if !self.debt.is_positive() {
            return;
        }
        let mut repaid = Amount::ZERO;
        let order: Vec<GrantId> = self
            .grants_in_drawdown_order()
            .iter()
            .map(|g| g.id)
            .collect();
        for grant_id in order {
            let owed = Amount::from_atomic(self.debt.atomic() - repaid.atomic());
            if owed.is_zero() {
                break;
            }
            let index = self
                .grants
                .iter()
                .position(|g| g.id == grant_id)
                .expect("live");
            if !self.grants[index].is_spendable() {
                continue;
            }
            let take = self.grants[index].unheld().min(owed);
            if take.is_positive() {
                self.forfeit(index, take, EntryKind::Repayment, at, changes);
                repaid = Amount::from_atomic(repaid.atomic() + take.atomic());
            }
        }
        if repaid.is_positive() {
            self.debt = Amount::from_atomic(self.debt.atomic() - repaid.atomic());
            let reference = changes.entries.last().expect("recorded").reference;
            self.record(EntryKind::Repayment, repaid, None, reference, at, changes);
        }
    }

    fn retire_finished_grants(&mut self, changes: &mut Changes) {
        let mut index = 0;
        while index < self.grants.len() {
            if self.grants[index].is_live() {
                index += 1;
            } else {
                changes.finished_grants.push(self.grants.swap_remove(index));
            }
        }
    }
}

fn validate_terms(terms: &GrantTerms, now: Instant) -> Result<(), Rejection> {
    if !terms.amount.is_positive() {
        return Err(Rejection::invalid("amount", "must be greater than zero"));
    }
    if terms.priority > GrantTerms::PRIORITY_MAX {
        return Err(Rejection::invalid("priority", "must be between 0 and 100"));
    }
    if terms.effective_at < now {
        return Err(Rejection::invalid(
            "effective_at",
            "must not be in the past",
        ));
    }
    if let Some(expires_at) = terms.expires_at
        && expires_at <= terms.effective_at.max(now)
    {
        return Err(Rejection::invalid(
            "expires_at",
            "must be after effective_at and now",
        ));
    }
    if terms.rollover_max.is_negative() {
        return Err(Rejection::invalid("rollover_max", "must not be negative"));
    }
    if terms.recurrence.is_none() && terms.rollover_max.is_positive() {
        return Err(Rejection::invalid(
            "rollover_max",
            "applies only to a grant with recurrence",
        ));
    }
    Ok(())
}

/// Merges allocations to the same grant (a capture can reserve and then take
/// the excess from one grant), keeping first-seen order.
fn merge_allocations(allocations: Vec<Allocation>) -> Vec<Allocation> {
    let mut merged: Vec<Allocation> = Vec::with_capacity(allocations.len());
    for allocation in allocations {
        match merged.iter_mut().find(|m| m.grant == allocation.grant) {
            Some(existing) => {
                existing.amount =
                    Amount::from_atomic(existing.amount.atomic() + allocation.amount.atomic())
            }
            None => merged.push(allocation),
        }
    }
    merged
}

/// Sums amounts that the wallet's capacity bound keeps inside i64.
fn sum(amounts: impl Iterator<Item = Amount>) -> Amount {
    amounts.fold(Amount::ZERO, |total, a| {
        total
            .checked_add(a)
            .expect("sums are bounded by wallet capacity")
    })
}
