//! Promotional credits (seed 000, SPEC rules 19–26): the campaign policy,
//! its window, what a grant to one customer looks like, who is skipped and
//! why, and which edits the lock refuses. No IO: the caller supplies the
//! facts (does the customer have a wallet, how many active assignments).

use crate::amount::Amount;
use crate::grant::{GrantTerms, Purpose};
use crate::time::{Instant, Interval, Period};

/// The economics of a campaign: what each grant gives and for how long.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Credits per reset cycle; positive.
    pub quantity: Amount,
    /// How often the quantity renews; `None` never.
    pub reset_interval: Option<Interval>,
    /// How long a customer keeps each grant; `None` forever.
    pub access_period: Option<Period>,
    pub allow_multiple_grants: bool,
}

/// The window in which the campaign can be granted (rule 20).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub starts_at: Instant,
    pub ends_at: Option<Instant>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Scheduled,
    Active,
    Ended,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Scheduled => "scheduled",
            Status::Active => "active",
            Status::Ended => "ended",
        }
    }

    pub fn parse(text: &str) -> Option<Status> {
        [Status::Scheduled, Status::Active, Status::Ended]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

impl Window {
    /// `scheduled` before `starts_at`, `ended` from `ends_at`, else `active`.
    pub fn status(&self, now: Instant) -> Status {
        if now < self.starts_at {
            Status::Scheduled
        } else if self.ends_at.is_some_and(|end| now >= end) {
            Status::Ended
        } else {
            Status::Active
        }
    }
}

/// Why a customer was passed over (rule 25).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    NoWallet,
    AlreadyGranted,
    NotGranted,
    CustomerNotFound,
    /// The customer's wallet cannot take another grant without overflowing.
    WalletCapacityExceeded,
}

impl Skip {
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::NoWallet => "no_wallet",
            Skip::AlreadyGranted => "already_granted",
            Skip::NotGranted => "not_granted",
            Skip::CustomerNotFound => "customer_not_found",
            Skip::WalletCapacityExceeded => "wallet_capacity_exceeded",
        }
    }
}

impl Policy {
    /// Whether a customer may be granted (rules 22, 23): they need a wallet
    /// in the credit system, and without multiple grants no active assignment.
    pub fn may_grant(&self, has_wallet: bool, active_assignments: usize) -> Result<(), Skip> {
        if !has_wallet {
            return Err(Skip::NoWallet);
        }
        if !self.allow_multiple_grants && active_assignments > 0 {
            return Err(Skip::AlreadyGranted);
        }
        Ok(())
    }

    /// The grant one assignment puts in the customer's wallet (rule 21):
    /// `quantity`, promotional, renewing every `reset_interval` from the
    /// grant time, expiring `access_period` after it.
    pub fn grant_terms(&self, granted_at: Instant) -> GrantTerms {
        let purpose = Purpose::Promotional;
        GrantTerms {
            amount: self.quantity,
            purpose,
            priority: purpose.default_priority(),
            effective_at: granted_at,
            expires_at: self.expires_at(granted_at),
            recurrence: self
                .reset_interval
                .map(|interval| Period { interval, count: 1 }),
            rollover_max: Amount::ZERO,
        }
    }

    /// When an assignment made at `granted_at` ends by itself.
    pub fn expires_at(&self, granted_at: Instant) -> Option<Instant> {
        self.access_period
            .and_then(|period| period.nth_after(granted_at, 1))
    }
}

/// A requested change to a campaign; `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Edit {
    pub credit_system_id: Option<u128>,
    pub quantity: Option<Amount>,
    pub reset_interval: Option<Option<Interval>>,
    pub access_period: Option<Option<Period>>,
    pub allow_multiple_grants: Option<bool>,
    pub starts_at: Option<Option<Instant>>,
}

/// The first economic field this edit would change on an applied campaign
/// (rule 26), or `None` when the edit is allowed. Sending a field's current
/// value is not a change.
pub fn locked_field(
    edit: &Edit,
    credit_system_id: u128,
    policy: &Policy,
    starts_at: Option<Instant>,
) -> Option<&'static str> {
    let changes = [
        (
            "credit_system_id",
            edit.credit_system_id.is_some_and(|v| v != credit_system_id),
        ),
        (
            "quantity",
            edit.quantity.is_some_and(|v| v != policy.quantity),
        ),
        (
            "reset_interval",
            edit.reset_interval
                .is_some_and(|v| v != policy.reset_interval),
        ),
        (
            "access_period",
            edit.access_period
                .is_some_and(|v| v != policy.access_period),
        ),
        (
            "allow_multiple_grants",
            edit.allow_multiple_grants
                .is_some_and(|v| v != policy.allow_multiple_grants),
        ),
        ("starts_at", edit.starts_at.is_some_and(|v| v != starts_at)),
    ];
    changes
        .into_iter()
        .find(|(_, changed)| *changed)
        .map(|(field, _)| field)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Instant {
        text.parse().unwrap()
    }

    fn policy() -> Policy {
        Policy {
            quantity: Amount::from_atomic(500),
            reset_interval: Some(Interval::Month),
            access_period: Period::new(Interval::Month, 3),
            allow_multiple_grants: false,
        }
    }

    #[test]
    fn rule_19_status_derives_from_the_window() {
        let window = Window {
            starts_at: at("2025-02-01T00:00:00Z"),
            ends_at: Some(at("2025-03-01T00:00:00Z")),
        };
        assert_eq!(window.status(at("2025-01-31T23:59:59Z")), Status::Scheduled);
        assert_eq!(window.status(at("2025-02-01T00:00:00Z")), Status::Active);
        assert_eq!(window.status(at("2025-03-01T00:00:00Z")), Status::Ended);
        let forever = Window {
            ends_at: None,
            ..window
        };
        assert_eq!(forever.status(at("2099-01-01T00:00:00Z")), Status::Active);
    }

    #[test]
    fn rule_21_grant_terms() {
        let terms = policy().grant_terms(at("2025-01-31T10:00:00Z"));
        assert_eq!(terms.amount, Amount::from_atomic(500));
        assert_eq!(terms.purpose, Purpose::Promotional);
        assert_eq!(terms.expires_at, Some(at("2025-04-30T10:00:00Z")));
        assert_eq!(terms.recurrence, Period::new(Interval::Month, 1));
        let forever = Policy {
            access_period: None,
            reset_interval: None,
            ..policy()
        };
        let terms = forever.grant_terms(at("2025-01-31T10:00:00Z"));
        assert_eq!((terms.expires_at, terms.recurrence), (None, None));
    }

    #[test]
    fn rules_22_23_who_may_be_granted() {
        let single = policy();
        assert_eq!(single.may_grant(false, 0), Err(Skip::NoWallet));
        assert_eq!(single.may_grant(true, 1), Err(Skip::AlreadyGranted));
        assert_eq!(single.may_grant(true, 0), Ok(()));
        let multiple = Policy {
            allow_multiple_grants: true,
            ..policy()
        };
        assert_eq!(multiple.may_grant(true, 3), Ok(()));
    }

    #[test]
    fn rule_26_locked_fields() {
        let p = policy();
        let none = Edit::default();
        assert_eq!(locked_field(&none, 1, &p, None), None);
        let same = Edit {
            quantity: Some(p.quantity),
            ..Edit::default()
        };
        assert_eq!(locked_field(&same, 1, &p, None), None);
        let cases = [
            (
                Edit {
                    credit_system_id: Some(2),
                    ..Edit::default()
                },
                "credit_system_id",
            ),
            (
                Edit {
                    quantity: Some(Amount::from_atomic(1)),
                    ..Edit::default()
                },
                "quantity",
            ),
            (
                Edit {
                    reset_interval: Some(None),
                    ..Edit::default()
                },
                "reset_interval",
            ),
            (
                Edit {
                    access_period: Some(None),
                    ..Edit::default()
                },
                "access_period",
            ),
            (
                Edit {
                    allow_multiple_grants: Some(true),
                    ..Edit::default()
                },
                "allow_multiple_grants",
            ),
            (
                Edit {
                    starts_at: Some(Some(at("2025-01-01T00:00:00Z"))),
                    ..Edit::default()
                },
                "starts_at",
            ),
        ];
        for (edit, field) in cases {
            assert_eq!(locked_field(&edit, 1, &p, None), Some(field));
        }
    }
}
