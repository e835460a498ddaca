//! The events credstack publishes (issue 8), and what each one says.
//!
//! Events come from a wallet's changes as the writer applies them, so the
//! writer puts each in the commit of its change (the outbox, `events`):
//! a grant's arrival in the store, a debit's entries, a sweep's expiries.
//! Nothing here does IO: the functions read records and the core's
//! [`Changes`] and return what to publish, dated when it happened.
//!
//! `data` carries ids and the figures of what happened (amounts as decimal
//! strings at the wallet's scale, like the API); the objects themselves
//! are one `GET` away.

use crate::ids::{self, Kind};
use crate::records::{Assignment, EventType, GrantRecord, Source, WalletInfo};
use chrono::SecondsFormat;
use credstack_core::{Amount, Changes, GrantStatus, Happened, HoldEnd, Instant};
use serde_json::{Map, Value, json};

/// An event to publish, not yet numbered.
#[derive(Clone, Debug, PartialEq)]
pub struct Emitted {
    pub at: Instant,
    pub kind: EventType,
    pub data: Map<String, Value>,
}

fn time(at: Instant) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => unreachable!("event data is built as an object"),
    }
}

fn grant_id(id: u128) -> String {
    ids::format(Kind::Grant, id)
}

/// The events a wallet's changes tell, in the order they happened: grant
/// renewals and ends, hold expiries, and the balance falling below the
/// wallet's threshold (`wallet.low_balance`) or to zero (`wallet.depleted`),
/// each once per crossing, read from the balance after each instant's
/// entries.
pub fn from_changes(info: &WalletInfo, changes: &Changes) -> Vec<Emitted> {
    let scale = info.scale;
    let money = |amount: Amount| amount.format(scale);
    let mut emitted = Vec::new();
    for happened in &changes.happened {
        emitted.push(match happened {
            Happened::GrantRenewed {
                grant,
                cycle,
                amount,
                at,
            } => Emitted {
                at: *at,
                kind: EventType::GrantRenewed,
                data: object(json!({
                    "grant_id": grant_id(grant.0),
                    "cycle": cycle,
                    "amount": money(*amount),
                })),
            },
            Happened::GrantEnded {
                grant,
                status,
                forfeited,
                at,
            } => Emitted {
                at: *at,
                kind: match status {
                    GrantStatus::Voided => EventType::GrantVoided,
                    _ => EventType::GrantExpired,
                },
                data: object(json!({
                    "grant_id": grant_id(grant.0),
                    "forfeited": money(*forfeited),
                })),
            },
        });
    }
    for (hold, end, at) in &changes.finished_holds {
        if *end == HoldEnd::Expired {
            emitted.push(Emitted {
                at: *at,
                kind: EventType::HoldExpired,
                data: object(json!({
                    "hold_id": ids::format(Kind::Hold, hold.id.0),
                    "amount": money(hold.amount),
                })),
            });
        }
    }
    // The balance is read between instants, not between entries: one
    // instant's entries can dip and come back (a renewal forfeits the old
    // cycle before it credits the new one; a grant that repays debt is
    // drawn before the debt is credited), and nobody ever saw the dip.
    if let Some(first) = changes.entries.first() {
        let mut balance = first.balance_after.atomic() - first.amount.atomic();
        for group in changes
            .entries
            .chunk_by(|a, b| a.occurred_at == b.occurred_at)
        {
            let last = group.last().expect("a chunk is never empty");
            let after = last.balance_after.atomic();
            if let Some(threshold) = info.low_balance_threshold
                && balance >= threshold.atomic()
                && after < threshold.atomic()
            {
                emitted.push(Emitted {
                    at: last.occurred_at,
                    kind: EventType::WalletLowBalance,
                    data: object(json!({
                        "balance": money(last.balance_after),
                        "low_balance_threshold": money(threshold),
                    })),
                });
            }
            if balance > 0 && after <= 0 {
                emitted.push(Emitted {
                    at: last.occurred_at,
                    kind: EventType::WalletDepleted,
                    data: object(json!({ "balance": money(last.balance_after) })),
                });
            }
            balance = after;
        }
    }
    // Each list is in time order; merged by instant, ties in the order above.
    emitted.sort_by_key(|event| event.at);
    emitted
}

/// `grant.created`, for a grant's row as it is inserted.
pub fn grant_created(record: &GrantRecord) -> Emitted {
    let terms = &record.grant.terms;
    let source = match &record.source {
        Source::Api => json!({ "type": "api" }),
        Source::PromotionalCredit {
            promotional_credit_id,
            assignment_id,
        } => json!({
            "type": "promotional_credit",
            "promotional_credit_id": ids::format(Kind::PromotionalCredit, *promotional_credit_id),
            "assignment_id": ids::format(Kind::Assignment, *assignment_id),
        }),
    };
    Emitted {
        at: record.created_at,
        kind: EventType::GrantCreated,
        data: object(json!({
            "grant_id": grant_id(record.grant.id.0),
            "amount": terms.amount.format(record.scale),
            "purpose": terms.purpose.as_str(),
            "priority": terms.priority,
            "effective_at": time(terms.effective_at),
            "expires_at": terms.expires_at.map(time),
            "source": source,
        })),
    }
}

/// `grant.voided` for a grant that had already left the wallet's working
/// set (spent): nothing is forfeited.
pub fn finished_grant_voided(grant: u128, at: Instant, scale: credstack_core::Scale) -> Emitted {
    Emitted {
        at,
        kind: EventType::GrantVoided,
        data: object(json!({
            "grant_id": grant_id(grant),
            "forfeited": Amount::ZERO.format(scale),
        })),
    }
}

/// `promotional_credit.granted` or `.revoked`, for an assignment.
pub fn promotional_credit(kind: EventType, assignment: &Assignment, at: Instant) -> Emitted {
    Emitted {
        at,
        kind,
        data: object(json!({
            "promotional_credit_id":
                ids::format(Kind::PromotionalCredit, assignment.promotional_credit_id),
            "assignment_id": ids::format(Kind::Assignment, assignment.id),
            "grant_id": grant_id(assignment.grant_id),
        })),
    }
}

/// The event's `data` as published: what it says, with the wallet's
/// customer and credit system.
pub fn data_text(info: &WalletInfo, mut data: Map<String, Value>) -> String {
    data.insert(
        "customer_id".into(),
        Value::String(ids::format(Kind::Customer, info.customer_id)),
    );
    data.insert(
        "credit_system_id".into(),
        Value::String(ids::format(Kind::CreditSystem, info.credit_system_id)),
    );
    Value::Object(data).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use credstack_core::{DebitId, GrantId, GrantTerms, Interval, Period, Purpose, Scale, Wallet};

    fn at(text: &str) -> Instant {
        text.parse().unwrap()
    }

    fn info(threshold: Option<i64>) -> WalletInfo {
        WalletInfo {
            id: 1,
            customer_id: 2,
            credit_system_id: 3,
            scale: Scale::new(0).unwrap(),
            created_at: at("2025-01-01T00:00:00Z"),
            low_balance_threshold: threshold.map(Amount::from_atomic),
        }
    }

    fn terms(amount: i64, recurrence: Option<Period>) -> GrantTerms {
        GrantTerms {
            amount: Amount::from_atomic(amount),
            purpose: Purpose::Paid,
            priority: 50,
            effective_at: at("2025-01-01T00:00:00Z"),
            expires_at: None,
            recurrence,
            rollover_max: Amount::ZERO,
        }
    }

    fn kinds(events: &[Emitted]) -> Vec<(&'static str, Value)> {
        events
            .iter()
            .map(|e| {
                (
                    e.kind.as_str(),
                    e.data.get("balance").cloned().unwrap_or_default(),
                )
            })
            .collect()
    }

    #[test]
    fn a_debit_split_over_grants_reports_the_balance_it_left() {
        let start = at("2025-01-01T00:00:00Z");
        let mut wallet = Wallet::new(Amount::ZERO);
        let mut changes = Changes::default();
        wallet
            .add_grant(GrantId(1), terms(10, None), start, &mut changes)
            .unwrap();
        wallet
            .add_grant(GrantId(2), terms(100, None), start, &mut changes)
            .unwrap();
        let mut changes = Changes::default();
        wallet
            .debit(DebitId(1), Amount::from_atomic(85), start, &mut changes)
            .unwrap();
        assert!(changes.entries.len() >= 2, "one entry per grant drawn");
        assert_eq!(
            kinds(&from_changes(&info(Some(105)), &changes)),
            vec![("wallet.low_balance", json!("25"))]
        );
        let mut changes = Changes::default();
        wallet
            .debit(DebitId(2), Amount::from_atomic(25), start, &mut changes)
            .unwrap();
        assert_eq!(
            kinds(&from_changes(&info(Some(105)), &changes)),
            vec![("wallet.depleted", json!("0"))],
            "already below the threshold: no second low_balance"
        );
    }

    #[test]
    fn a_renewal_that_forfeits_and_refills_tells_no_dip() {
        let start = at("2025-01-01T00:00:00Z");
        let monthly = Some(Period {
            interval: Interval::Month,
            count: 1,
        });
        let mut wallet = Wallet::new(Amount::ZERO);
        let mut changes = Changes::default();
        wallet
            .add_grant(GrantId(1), terms(100, monthly), start, &mut changes)
            .unwrap();
        wallet
            .debit(DebitId(1), Amount::from_atomic(40), start, &mut changes)
            .unwrap();
        let mut changes = Changes::default();
        wallet.materialise(at("2025-02-01T00:00:00Z"), &mut changes);
        assert!(
            changes.entries.len() >= 2,
            "the renewal forfeits 60 and credits 100: {:?}",
            changes.entries
        );
        assert_eq!(
            kinds(&from_changes(&info(Some(30)), &changes)),
            vec![("grant.renewed", Value::Null)]
        );
    }

    #[test]
    fn a_grant_that_repays_debt_tells_no_dip() {
        let start = at("2025-01-01T00:00:00Z");
        let mut wallet = Wallet::new(Amount::from_atomic(50));
        let mut changes = Changes::default();
        wallet
            .add_grant(GrantId(1), terms(20, None), start, &mut changes)
            .unwrap();
        let mut changes = Changes::default();
        wallet
            .debit(DebitId(1), Amount::from_atomic(50), start, &mut changes)
            .unwrap();
        assert_eq!(
            kinds(&from_changes(&info(Some(10)), &changes)),
            vec![
                ("wallet.low_balance", json!("-30")),
                ("wallet.depleted", json!("-30"))
            ]
        );
        // A grant of 50 repays the 30 owed: -30 → 20, whatever the entries
        // pass through on the way.
        let mut changes = Changes::default();
        wallet
            .add_grant(GrantId(2), terms(50, None), start, &mut changes)
            .unwrap();
        assert_eq!(kinds(&from_changes(&info(Some(10)), &changes)), vec![]);
        // 20 → 5 crosses 10 again, after coming back up.
        let mut changes = Changes::default();
        wallet
            .debit(DebitId(2), Amount::from_atomic(15), start, &mut changes)
            .unwrap();
        assert_eq!(
            kinds(&from_changes(&info(Some(10)), &changes)),
            vec![("wallet.low_balance", json!("5"))]
        );
    }
}
