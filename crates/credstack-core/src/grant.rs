//! A grant: balance that arrived in a wallet, with its own purpose, priority,
//! validity window, recurrence and rollover. This module owns the grant's
//! cycle arithmetic and its drawdown key; the wallet owns every balance change.

use crate::amount::Amount;
use crate::time::{Instant, Period};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GrantId(pub u128);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Purpose {
    Promotional,
    Bundled,
    Paid,
}

impl Purpose {
    pub const ALL: [Purpose; 3] = [Purpose::Promotional, Purpose::Bundled, Purpose::Paid];

    /// Unconfigured wallets burn promotional, then bundled, then paid credit.
    pub fn default_priority(self) -> u8 {
        match self {
            Purpose::Promotional => 10,
            Purpose::Bundled => 20,
            Purpose::Paid => 30,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Promotional => "promotional",
            Purpose::Bundled => "bundled",
            Purpose::Paid => "paid",
        }
    }

    pub fn parse(text: &str) -> Option<Purpose> {
        Purpose::ALL.into_iter().find(|p| p.as_str() == text)
    }
}

/// What a grant was created with. Immutable after creation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantTerms {
    pub amount: Amount,
    pub purpose: Purpose,
    /// 0..=100; lower is drawn first.
    pub priority: u8,
    pub effective_at: Instant,
    pub expires_at: Option<Instant>,
    pub recurrence: Option<Period>,
    /// Most that carries into the next cycle; zero without recurrence.
    pub rollover_max: Amount,
}

impl GrantTerms {
    pub const PRIORITY_MAX: u8 = 100;

    /// The most this grant can ever hold. Summed over a wallet's grants it
    /// bounds every balance, which is how the wallet proves its arithmetic
    /// cannot overflow.
    ///
    /// Fix: this used to be `amount + rollover_max`, but what active holds
    /// reserved stays in `remaining` across a renewal (until captured or
    /// forfeited), on top of `amount + carried`. Holds last at most 24 hours
    /// and cycles at least a day, so a hold spans at most one renewal and the
    /// held part is at most the previous cycle's `amount + rollover_max`:
    /// a recurring grant can hold up to `2·amount + rollover_max`.
    pub fn capacity(&self) -> Option<Amount> {
        let cycle = self.amount.checked_add(self.rollover_max)?;
        match self.recurrence {
            Some(_) => cycle.checked_add(self.amount),
            None => Some(cycle),
        }
    }

    /// Start of cycle `cycle` (1-based).
    pub fn cycle_start(&self, cycle: u64) -> Option<Instant> {
        match self.recurrence {
            Some(period) => period.nth_after(self.effective_at, cycle.saturating_sub(1)),
            None => Some(self.effective_at),
        }
    }

    /// The renewal that ends cycle `cycle`, if it happens before `expires_at`.
    pub fn renewal_after(&self, cycle: u64) -> Option<Instant> {
        let renewal = self.recurrence?.nth_after(self.effective_at, cycle)?;
        match self.expires_at {
            Some(expires_at) if renewal >= expires_at => None,
            _ => Some(renewal),
        }
    }

    /// End of cycle `cycle`: the next renewal, or `expires_at`, or never.
    pub fn cycle_end(&self, cycle: u64) -> Option<Instant> {
        self.renewal_after(cycle).or(self.expires_at)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GrantStatus {
    /// Created with a future `effective_at`; holds nothing yet.
    Scheduled,
    /// Arrived and not ended. Wire status `depleted` when nothing remains.
    Active,
    Expired,
    Voided,
}

impl GrantStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            GrantStatus::Scheduled => "scheduled",
            GrantStatus::Active => "active",
            GrantStatus::Expired => "expired",
            GrantStatus::Voided => "voided",
        }
    }

    pub fn parse(text: &str) -> Option<GrantStatus> {
        match text {
            "scheduled" => Some(GrantStatus::Scheduled),
            "active" => Some(GrantStatus::Active),
            "expired" => Some(GrantStatus::Expired),
            "voided" => Some(GrantStatus::Voided),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub id: GrantId,
    pub terms: GrantTerms,
    /// What is left in the current cycle, held part included. Never negative.
    pub remaining: Amount,
    /// The part of `remaining` reserved by active holds. `held <= remaining`.
    pub held: Amount,
    /// Current cycle, 1-based; 0 while scheduled.
    pub cycle: u64,
    pub status: GrantStatus,
    /// When the grant expired or was voided.
    pub ended_at: Option<Instant>,
}

impl Grant {
    pub fn new(id: GrantId, terms: GrantTerms) -> Grant {
        Grant {
            id,
            terms,
            remaining: Amount::ZERO,
            held: Amount::ZERO,
            cycle: 0,
            status: GrantStatus::Scheduled,
            ended_at: None,
        }
    }

    pub fn unheld(&self) -> Amount {
        Amount::from_atomic(self.remaining.atomic() - self.held.atomic())
    }

    pub fn is_spendable(&self) -> bool {
        self.status == GrantStatus::Active
    }

    pub fn is_ended(&self) -> bool {
        matches!(self.status, GrantStatus::Expired | GrantStatus::Voided)
    }

    /// The status as the API shows it: `depleted` is an active grant with
    /// nothing left.
    pub fn display_status(&self) -> &'static str {
        if self.status == GrantStatus::Active && self.remaining.is_zero() {
            "depleted"
        } else {
            self.status.as_str()
        }
    }

    pub fn cycle_end(&self) -> Option<Instant> {
        self.terms.cycle_end(self.cycle.max(1))
    }

    pub fn next_renewal_at(&self) -> Option<Instant> {
        match self.status {
            GrantStatus::Active => self.terms.renewal_after(self.cycle),
            GrantStatus::Scheduled => self.terms.renewal_after(1),
            _ => None,
        }
    }

    /// Whether the grant can still change: live grants stay in the wallet's
    /// working set; the rest are final.
    pub fn is_live(&self) -> bool {
        match self.status {
            GrantStatus::Scheduled => true,
            GrantStatus::Active => {
                self.terms.recurrence.is_some()
                    || self.terms.expires_at.is_some()
                    || !self.remaining.is_zero()
            }
            GrantStatus::Expired | GrantStatus::Voided => self.held.is_positive(),
        }
    }
}

/// Compares two grants in drawdown order.
pub fn drawdown_order(a: &Grant, b: &Grant) -> std::cmp::Ordering {
    let end = |g: &Grant| g.cycle_end();
    a.terms
        .priority
        .cmp(&b.terms.priority)
        .then_with(|| match (end(a), end(b)) {
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        })
        .then_with(|| a.terms.effective_at.cmp(&b.terms.effective_at))
        .then_with(|| a.id.cmp(&b.id))
}
