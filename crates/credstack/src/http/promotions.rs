//! The handlers of `/v1/promotional_credits` (SPEC rules 19–26): parse,
//! call the ledger, render.

use super::extract::{IdempotencyKey, JsonBody, QueryMap, body_id, path_id};
use super::{reply, reply_result};
use crate::engine::{NewPromotion, PROMOTION_CUSTOMERS_MAX, PromotionEdit, PromotionView, Request};
use crate::ids::Kind;
use crate::ledger::{BulkAction, BulkCall};
use crate::ledger::{BulkOutcome, Ledger};
use crate::wire::*;
use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use credstack_core::Interval;
use credstack_core::promotion::Status;
use credstack_core::time::Period;

type Answer = Result<Response, ApiError>;

fn reset_interval(text: &str) -> Result<Option<Interval>, ApiError> {
    match text {
        "never" => Ok(None),
        other => Interval::parse(other).map(Some).ok_or_else(|| {
            ApiError::invalid(
                "reset_interval",
                "reset_interval must be never, day, week, month or year",
            )
        }),
    }
}

fn access_period(period: &AccessPeriod) -> Result<Period, ApiError> {
    let unit = Interval::parse(&period.duration_unit).ok_or_else(|| {
        ApiError::invalid(
            "access_period.duration_unit",
            "duration_unit must be day, week, month or year",
        )
    })?;
    Period::new(unit, period.duration_value).ok_or_else(|| {
        ApiError::invalid(
            "access_period.duration_value",
            format!("duration_value must be from 1 to {}", Period::COUNT_MAX),
        )
    })
}

fn micro_precision(param: &str, at: Option<chrono::DateTime<chrono::Utc>>) -> Result<(), ApiError> {
    if at.is_some_and(|t| t.timestamp_subsec_nanos() % 1000 != 0) {
        return Err(ApiError::invalid(
            param,
            format!("{param} must have at most microsecond precision"),
        ));
    }
    Ok(())
}

#[utoipa::path(post, path = "/v1/promotional_credits", request_body = CreatePromotionalCredit,
    responses((status = 200, body = PromotionalCreditWire), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_promotional_credit(
    State(ledger): State<Ledger>,
    key: IdempotencyKey,
    body: JsonBody<CreatePromotionalCredit>,
) -> Answer {
    let b = &body.value;
    micro_precision("starts_at", b.starts_at)?;
    micro_precision("ends_at", b.ends_at)?;
    let new = NewPromotion {
        name: b.name.clone(),
        description: b.description.clone(),
        credit_system_id: body_id(Kind::CreditSystem, &b.credit_system_id, "credit_system_id")?,
        starts_at: b.starts_at,
        ends_at: b.ends_at,
        quantity: b.quantity.clone(),
        reset_interval: reset_interval(&b.reset_interval)?,
        access_period: b.access_period.as_ref().map(access_period).transpose()?,
        allow_multiple_grants: b.allow_multiple_grants,
    };
    let idempotency = key.for_request("POST", "/v1/promotional_credits", &body.raw);
    Ok(reply(
        ledger
            .submit(Request::CreatePromotion(new), idempotency)
            .await,
    ))
}

#[utoipa::path(get, path = "/v1/promotional_credits",
    params(("status" = Option<String>, Query, pattern = "^(scheduled|active|ended)$", description = "scheduled, active or ended"),
           ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "1 to 100, default 20"), ("starting_after" = Option<String>, Query)),
    responses((status = 200, body = List<PromotionalCreditWire>), (status = 400, body = ErrorBody)))]
pub async fn list_promotional_credits(State(ledger): State<Ledger>, query: QueryMap) -> Answer {
    let paging = query.paging(Kind::PromotionalCredit)?;
    let status = query
        .get("status")
        .map(|s| {
            Status::parse(s).ok_or_else(|| {
                ApiError::invalid("status", "status must be scheduled, active or ended")
            })
        })
        .transpose()?;
    let now = ledger.now();
    let page = ledger
        .read(move |c| {
            crate::history::promotion_views(c, status, now, paging.limit, paging.starting_after)
        })
        .await?;
    let data = page.items.iter().map(PromotionalCreditWire::from).collect();
    Ok(Json(List::new(data, page.has_more)).into_response())
}

async fn promotion_view(ledger: &Ledger, id: u128) -> Result<PromotionView, ApiError> {
    let now = ledger.now();
    ledger
        .read(move |c| crate::history::promotion_view(c, id, now))
        .await?
        .ok_or_else(|| ApiError::not_found("promotional credit"))
}

#[utoipa::path(get, path = "/v1/promotional_credits/{id}",
    responses((status = 200, body = PromotionalCreditWire), (status = 404, body = ErrorBody)))]
pub async fn get_promotional_credit(
    State(ledger): State<Ledger>,
    Path(id): Path<String>,
) -> Answer {
    let id = path_id(Kind::PromotionalCredit, &id, "promotional credit")?;
    let view = promotion_view(&ledger, id).await?;
    Ok(Json(PromotionalCreditWire::from(&view)).into_response())
}

#[utoipa::path(patch, path = "/v1/promotional_credits/{id}", request_body = UpdatePromotionalCredit,
    responses((status = 200, body = PromotionalCreditWire), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn update_promotional_credit(
    State(ledger): State<Ledger>,
    Path(id): Path<String>,
    body: JsonBody<UpdatePromotionalCredit>,
) -> Answer {
    let id = path_id(Kind::PromotionalCredit, &id, "promotional credit")?;
    let b = body.value;
    micro_precision("starts_at", b.starts_at.flatten())?;
    micro_precision("ends_at", b.ends_at.flatten())?;
    let edit = PromotionEdit {
        name: b.name,
        description: b.description,
        ends_at: b.ends_at,
        credit_system_id: b
            .credit_system_id
            .map(|cs| body_id(Kind::CreditSystem, &cs, "credit_system_id"))
            .transpose()?,
        quantity: b.quantity,
        reset_interval: b
            .reset_interval
            .as_deref()
            .map(reset_interval)
            .transpose()?,
        access_period: b
            .access_period
            .map(|period| period.as_ref().map(access_period).transpose())
            .transpose()?,
        allow_multiple_grants: b.allow_multiple_grants,
        starts_at: b.starts_at,
    };
    Ok(reply_result(
        ledger.execute(Request::UpdatePromotion { id, edit }).await,
    ))
}

#[utoipa::path(delete, path = "/v1/promotional_credits/{id}",
    responses((status = 200, body = DeletedWire), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete_promotional_credit(
    State(ledger): State<Ledger>,
    Path(id): Path<String>,
) -> Answer {
    let id = path_id(Kind::PromotionalCredit, &id, "promotional credit")?;
    Ok(reply_result(
        ledger.execute(Request::DeletePromotion { id }).await,
    ))
}

/// The customers a grant or revoke names: up to 1000 ids, or all.
enum Target {
    Customers(Vec<u128>),
    All,
}

fn target(body: &PromotionCustomers) -> Result<Target, ApiError> {
    match (&body.customer_ids, body.all_customers) {
        (Some(ids), None | Some(false)) => {
            if ids.is_empty() || ids.len() > PROMOTION_CUSTOMERS_MAX {
                return Err(ApiError::invalid(
                    "customer_ids",
                    format!("customer_ids must have 1 to {PROMOTION_CUSTOMERS_MAX} ids"),
                ));
            }
            let ids = ids
                .iter()
                .enumerate()
                .map(|(index, id)| body_id(Kind::Customer, id, &format!("customer_ids[{index}]")))
                .collect::<Result<_, _>>()?;
            Ok(Target::Customers(ids))
        }
        (None, Some(true)) => Ok(Target::All),
        _ => Err(ApiError::invalid(
            "customer_ids",
            "send either customer_ids or all_customers: true",
        )),
    }
}

#[utoipa::path(post, path = "/v1/promotional_credits/{id}/grant", request_body = PromotionCustomers,
    responses((status = 200, body = GrantResultWire), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn grant_promotional_credit(
    State(ledger): State<Ledger>,
    Path(id): Path<String>,
    key: IdempotencyKey,
    body: JsonBody<PromotionCustomers>,
) -> Answer {
    let path = format!("/v1/promotional_credits/{id}/grant");
    let id = path_id(Kind::PromotionalCredit, &id, "promotional credit")?;
    match target(&body.value)? {
        Target::Customers(customer_ids) => {
            let idempotency = key.for_request("POST", &path, &body.raw);
            let request = Request::GrantPromotion {
                id,
                customer_ids,
                run: None,
            };
            Ok(reply(ledger.submit(request, idempotency).await))
        }
        Target::All => {
            let idempotency = key.for_request("POST", &path, &body.raw);
            let render = |done: &BulkOutcome| {
                serde_json::to_value(GrantResultWire {
                    object: "promotional_credit_grant",
                    granted: done.done.iter().map(AssignmentWire::from).collect(),
                    skipped: skipped_wire(&done.skipped),
                    granted_count: done.done_count,
                    skipped_count: done.skipped_count,
                })
                .expect("wire types serialize")
            };
            Ok(reply(
                ledger
                    .to_all(
                        BulkCall::new(BulkAction::Grant, id, idempotency),
                        &|_| {},
                        &render,
                    )
                    .await,
            ))
        }
    }
}

#[utoipa::path(post, path = "/v1/promotional_credits/{id}/revoke", request_body = PromotionCustomers,
    responses((status = 200, body = RevokeResultWire), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn revoke_promotional_credit(
    State(ledger): State<Ledger>,
    Path(id): Path<String>,
    key: IdempotencyKey,
    body: JsonBody<PromotionCustomers>,
) -> Answer {
    let path = format!("/v1/promotional_credits/{id}/revoke");
    let id = path_id(Kind::PromotionalCredit, &id, "promotional credit")?;
    match target(&body.value)? {
        Target::Customers(customer_ids) => {
            let idempotency = key.for_request("POST", &path, &body.raw);
            let request = Request::RevokePromotion {
                id,
                customer_ids,
                run: None,
            };
            Ok(reply(ledger.submit(request, idempotency).await))
        }
        Target::All => {
            let idempotency = key.for_request("POST", &path, &body.raw);
            let render = |done: &BulkOutcome| {
                serde_json::to_value(RevokeResultWire {
                    object: "promotional_credit_revoke",
                    revoked: done.done.iter().map(AssignmentWire::from).collect(),
                    skipped: skipped_wire(&done.skipped),
                    revoked_count: done.done_count,
                    skipped_count: done.skipped_count,
                })
                .expect("wire types serialize")
            };
            Ok(reply(
                ledger
                    .to_all(
                        BulkCall::new(BulkAction::Revoke, id, idempotency),
                        &|_| {},
                        &render,
                    )
                    .await,
            ))
        }
    }
}

#[utoipa::path(get, path = "/v1/promotional_credits/{id}/customers",
    params(("status" = Option<String>, Query, pattern = "^(granted|revoked|expired)$", description = "granted, revoked or expired"),
           ("q" = Option<String>, Query, description = "searches name, email and external_id, case-insensitive"),
           ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "1 to 100, default 20"), ("starting_after" = Option<String>, Query, description = "a customer id")),
    responses((status = 200, body = List<PromotionCustomerWire>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_promotion_customers(
    State(ledger): State<Ledger>,
    Path(id): Path<String>,
    query: QueryMap,
) -> Answer {
    let id = path_id(Kind::PromotionalCredit, &id, "promotional credit")?;
    let paging = query.paging(Kind::Customer)?;
    let status = query.get("status").map(str::to_string);
    if let Some(status) = &status
        && !["granted", "revoked", "expired"].contains(&status.as_str())
    {
        return Err(ApiError::invalid(
            "status",
            "status must be granted, revoked or expired",
        ));
    }
    let q = query.search("q")?;
    let now = ledger.now();
    let page = ledger
        .read(move |c| {
            if c.promotion(id)?.is_none() {
                return Ok(None);
            }
            let page = c.promotion_customers(
                id,
                status.as_deref(),
                q.as_deref(),
                now,
                paging.limit,
                paging.starting_after,
            )?;
            Ok(Some(page))
        })
        .await?
        .ok_or_else(|| ApiError::not_found("promotional credit"))?;
    let data = page.items.iter().map(PromotionCustomerWire::from).collect();
    Ok(Json(List::new(data, page.has_more)).into_response())
}
