//! Ledger results as the API answers them: the status and JSON body of an
//! outcome or an error ([`render`]), which the writer keeps under an
//! idempotency key so that a replay answers the same bytes whichever edge
//! asks again (HTTP, or a NATS message redelivered), and one batch item's
//! `{status, debit | error}` ([`batch_result`]).

use super::error::ApiError;
use super::shapes::*;
use crate::engine::{Outcome, Reply};
use crate::error::Result;
use crate::ids::Kind;
use crate::records::StoredResponse;

/// Renders a ledger result: 200 with the object, or the error's status.
pub fn render(result: &Result<Outcome>) -> StoredResponse {
    match result {
        Ok(Outcome::Rendered(stored)) => stored.clone(),
        Ok(outcome) => StoredResponse {
            status: 200,
            body: outcome_json(outcome).to_string(),
        },
        Err(error) => {
            let error = ApiError::from(error.clone());
            StoredResponse {
                status: error.status.as_u16(),
                body: serde_json::to_string(&error.body()).expect("errors serialize"),
            }
        }
    }
}

/// One item of a batch debit: `{status, debit}` or `{status, error}`.
pub fn batch_result(reply: &Reply) -> BatchResult {
    let stored = match reply {
        Reply::Fresh(result) => render(result),
        Reply::Replayed(stored) => stored.clone(),
    };
    let body: serde_json::Value =
        serde_json::from_str(&stored.body).expect("stored bodies are JSON");
    let ok = stored.status == 200;
    BatchResult {
        status: stored.status,
        error: if ok { None } else { body.get("error").cloned() },
        debit: if ok { Some(body) } else { None },
    }
}

/// Renders a ledger outcome as the JSON the API returns.
pub fn outcome_json(outcome: &Outcome) -> serde_json::Value {
    let value = match outcome {
        Outcome::CreditSystem(cs) => serde_json::to_value(CreditSystemWire::from(cs)),
        Outcome::Customer(c) => serde_json::to_value(CustomerWire::from(c)),
        Outcome::Wallet(view) => serde_json::to_value(WalletWire::from(view.as_ref())),
        Outcome::Grant(record) => serde_json::to_value(GrantWire::from(record.as_ref())),
        Outcome::Debit(d) => serde_json::to_value(DebitWire::from(d)),
        Outcome::Hold(h) => serde_json::to_value(HoldWire::from(h)),
        Outcome::ApiKey { key, secret } => {
            serde_json::to_value(ApiKeyWire::new(key, secret.clone()))
        }
        Outcome::Deleted { kind, id } => serde_json::to_value(DeletedWire {
            id: crate::ids::format(*kind, *id),
            object: match kind {
                Kind::PromotionalCredit => "promotional_credit",
                Kind::WebhookEndpoint => "webhook_endpoint",
                _ => "api_key",
            },
            deleted: true,
        }),
        Outcome::Promotion(view) => {
            serde_json::to_value(PromotionalCreditWire::from(view.as_ref()))
        }
        Outcome::PromotionGrant(grant) => serde_json::to_value(GrantResultWire {
            object: "promotional_credit_grant",
            granted: grant.granted.iter().map(AssignmentWire::from).collect(),
            skipped: skipped_wire(&grant.skipped),
            granted_count: grant.granted.len() as u64,
            skipped_count: grant.skipped.len() as u64,
        }),
        Outcome::PromotionRevoke(revoke) => serde_json::to_value(RevokeResultWire {
            object: "promotional_credit_revoke",
            revoked: revoke.revoked.iter().map(AssignmentWire::from).collect(),
            skipped: skipped_wire(&revoke.skipped),
            revoked_count: revoke.revoked.len() as u64,
            skipped_count: revoke.skipped.len() as u64,
        }),
        Outcome::Rendered(stored) => serde_json::from_str(&stored.body),
        Outcome::DebitBatch(replies) => {
            let data = replies.iter().map(batch_result).collect();
            serde_json::to_value(BatchResults { data })
        }
        Outcome::WebhookEndpoint { endpoint, secret } => {
            serde_json::to_value(WebhookEndpointWire::new(endpoint, secret.clone()))
        }
        Outcome::Delivery(delivery) => {
            serde_json::to_value(WebhookDeliveryWire::new(delivery, None))
        }
        // Internal steps (of a call to all customers, of webhook
        // delivery); never an API answer.
        Outcome::Done | Outcome::BulkClaim(_) | Outcome::Dispatched(_) | Outcome::Claimed(_) => {
            Ok(serde_json::json!({}))
        }
    };
    value.expect("wire types serialize")
}

pub fn skipped_wire(skipped: &[(u128, credstack_core::promotion::Skip)]) -> Vec<SkippedWire> {
    skipped
        .iter()
        .map(|(customer_id, reason)| SkippedWire {
            customer_id: crate::ids::format(Kind::Customer, *customer_id),
            reason: reason.as_str(),
        })
        .collect()
}
