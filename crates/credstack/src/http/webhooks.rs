//! The handlers of `/v1/events`, `/v1/webhook_endpoints` and
//! `/v1/webhook_deliveries` (issue 8): parse, call the ledger, render.

use super::extract::{IdempotencyKey, JsonBody, QueryMap, path_id};
use super::{reply, reply_result};
use crate::engine::Request;
use crate::ids::Kind;
use crate::ledger::Ledger;
use crate::records::DeliveryStatus;
use crate::wire::*;
use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};

type Answer = Result<Response, ApiError>;

fn json<T: serde::Serialize>(value: T) -> Answer {
    Ok(Json(value).into_response())
}

#[utoipa::path(get, path = "/v1/events",
    params(("wallet_id" = Option<String>, Query, description = "only this wallet's events"),
           ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "1 to 100, default 20"), ("starting_after" = Option<String>, Query)),
    responses((status = 200, body = List<EventWire>), (status = 400, body = ErrorBody)))]
pub async fn list_events(State(ledger): State<Ledger>, query: QueryMap) -> Answer {
    let paging = query.paging(Kind::Event)?;
    let wallet = query.id("wallet_id", Kind::Wallet)?;
    let page = ledger
        .read(move |c| c.list_events(wallet, paging.limit, paging.starting_after))
        .await?;
    json(List::new(
        page.items.iter().map(EventWire::from).collect(),
        page.has_more,
    ))
}

#[utoipa::path(get, path = "/v1/events/{id}", responses((status = 200, body = EventWire), (status = 404, body = ErrorBody)))]
pub async fn get_event(State(ledger): State<Ledger>, Path(id): Path<String>) -> Answer {
    let id = path_id(Kind::Event, &id, "event")?;
    let event = ledger
        .read(move |c| c.event(id))
        .await?
        .ok_or_else(|| ApiError::not_found("event"))?;
    json(EventWire::from(&event))
}

#[utoipa::path(post, path = "/v1/webhook_endpoints", request_body = CreateWebhookEndpoint,
    responses((status = 200, body = WebhookEndpointWire), (status = 400, body = ErrorBody)))]
pub async fn create_webhook_endpoint(
    State(ledger): State<Ledger>,
    key: IdempotencyKey,
    body: JsonBody<CreateWebhookEndpoint>,
) -> Answer {
    let request = Request::CreateWebhookEndpoint {
        url: body.value.url,
        description: body.value.description,
        event_types: body.value.event_types,
        secret: crate::webhooks::new_secret(),
    };
    Ok(reply(
        ledger
            .submit(
                request,
                key.for_request("POST", "/v1/webhook_endpoints", &body.raw),
            )
            .await,
    ))
}

#[utoipa::path(get, path = "/v1/webhook_endpoints", params(("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "1 to 100, default 20"), ("starting_after" = Option<String>, Query)),
    responses((status = 200, body = List<WebhookEndpointWire>), (status = 400, body = ErrorBody)))]
pub async fn list_webhook_endpoints(State(ledger): State<Ledger>, query: QueryMap) -> Answer {
    let paging = query.paging(Kind::WebhookEndpoint)?;
    let page = ledger
        .read(move |c| c.list_webhook_endpoints(paging.limit, paging.starting_after))
        .await?;
    json(List::new(
        page.items
            .iter()
            .map(|e| WebhookEndpointWire::new(e, None))
            .collect(),
        page.has_more,
    ))
}

#[utoipa::path(get, path = "/v1/webhook_endpoints/{id}", responses((status = 200, body = WebhookEndpointWire), (status = 404, body = ErrorBody)))]
pub async fn get_webhook_endpoint(State(ledger): State<Ledger>, Path(id): Path<String>) -> Answer {
    let id = path_id(Kind::WebhookEndpoint, &id, "webhook endpoint")?;
    let endpoint = ledger
        .read(move |c| c.webhook_endpoint(id))
        .await?
        .ok_or_else(|| ApiError::not_found("webhook endpoint"))?;
    json(WebhookEndpointWire::new(&endpoint, None))
}

#[utoipa::path(patch, path = "/v1/webhook_endpoints/{id}", request_body = UpdateWebhookEndpoint,
    responses((status = 200, body = WebhookEndpointWire), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn update_webhook_endpoint(
    State(ledger): State<Ledger>,
    Path(id): Path<String>,
    body: JsonBody<UpdateWebhookEndpoint>,
) -> Answer {
    let id = path_id(Kind::WebhookEndpoint, &id, "webhook endpoint")?;
    let b = body.value;
    Ok(reply_result(
        ledger
            .execute(Request::UpdateWebhookEndpoint {
                id,
                url: b.url,
                description: b.description,
                event_types: b.event_types,
                enabled: b.enabled,
            })
            .await,
    ))
}

#[utoipa::path(delete, path = "/v1/webhook_endpoints/{id}", responses((status = 200, body = DeletedWire), (status = 404, body = ErrorBody)))]
pub async fn delete_webhook_endpoint(
    State(ledger): State<Ledger>,
    Path(id): Path<String>,
) -> Answer {
    let id = path_id(Kind::WebhookEndpoint, &id, "webhook endpoint")?;
    Ok(reply_result(
        ledger.execute(Request::DeleteWebhookEndpoint { id }).await,
    ))
}

#[utoipa::path(get, path = "/v1/webhook_endpoints/{id}/deliveries",
    params(("status" = Option<String>, Query, pattern = "^(pending|succeeded|failed)$", description = "pending, succeeded or failed"),
           ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "1 to 100, default 20"), ("starting_after" = Option<String>, Query)),
    responses((status = 200, body = List<WebhookDeliveryWire>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_webhook_deliveries(
    State(ledger): State<Ledger>,
    Path(id): Path<String>,
    query: QueryMap,
) -> Answer {
    let id = path_id(Kind::WebhookEndpoint, &id, "webhook endpoint")?;
    let paging = query.paging(Kind::WebhookDelivery)?;
    let status = query
        .get("status")
        .map(|text| {
            DeliveryStatus::parse(text).ok_or_else(|| {
                ApiError::invalid("status", "status must be pending, succeeded or failed")
            })
        })
        .transpose()?;
    let page = ledger
        .read(move |c| {
            Ok(match c.webhook_endpoint(id)? {
                None => None,
                Some(_) => {
                    Some(c.list_deliveries(id, status, paging.limit, paging.starting_after)?)
                }
            })
        })
        .await?
        .ok_or_else(|| ApiError::not_found("webhook endpoint"))?;
    json(List::new(
        page.items
            .iter()
            .map(|d| WebhookDeliveryWire::new(d, None))
            .collect(),
        page.has_more,
    ))
}

#[utoipa::path(get, path = "/v1/webhook_deliveries/{id}", responses((status = 200, body = WebhookDeliveryWire), (status = 404, body = ErrorBody)))]
pub async fn get_webhook_delivery(State(ledger): State<Ledger>, Path(id): Path<String>) -> Answer {
    let id = path_id(Kind::WebhookDelivery, &id, "webhook delivery")?;
    let (delivery, attempts) = ledger
        .read(move |c| {
            Ok(match c.delivery(id)? {
                None => None,
                Some(delivery) => Some((delivery, c.delivery_attempts(id)?)),
            })
        })
        .await?
        .ok_or_else(|| ApiError::not_found("webhook delivery"))?;
    json(WebhookDeliveryWire::new(&delivery, Some(&attempts)))
}

#[utoipa::path(post, path = "/v1/webhook_deliveries/{id}/redeliver",
    responses((status = 200, body = WebhookDeliveryWire), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn redeliver_webhook_delivery(
    State(ledger): State<Ledger>,
    Path(id): Path<String>,
) -> Answer {
    let id = path_id(Kind::WebhookDelivery, &id, "webhook delivery")?;
    Ok(reply_result(
        ledger.execute(Request::Redeliver { id }).await,
    ))
}
