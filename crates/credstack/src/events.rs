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
/// each once per crossing, read from the entries' running balance.
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
    if let Some(first) = changes.entries.first() {
        let mut balance = first.balance_after.atomic() - first.amount.atomic();
        for entry in &changes.entries {
            let after = entry.balance_after.atomic();
            if let Some(threshold) = info.low_balance_threshold
                && balance >= threshold.atomic()
                && after < threshold.atomic()
            {
                emitted.push(Emitted {
                    at: entry.occurred_at,
                    kind: EventType::WalletLowBalance,
                    data: object(json!({
                        "balance": money(entry.balance_after),
                        "low_balance_threshold": money(threshold),
                    })),
                });
            }
            if balance > 0 && after <= 0 {
                emitted.push(Emitted {
                    at: entry.occurred_at,
                    kind: EventType::WalletDepleted,
                    data: object(json!({ "balance": money(entry.balance_after) })),
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
