//! The HTTP layer: the router, ledger results answered as HTTP responses,
//! and the OpenAPI document generated from the handlers' annotations. The
//! only layer that knows about HTTP; the JSON it speaks (shapes, the error
//! object, rendered results, the debit fingerprint) is `crate::wire`'s,
//! shared with the edges that speak the API without HTTP. Only the command
//! line and the server import this module.

pub mod error;
pub mod extract;
pub mod limits;
pub mod openapi;
pub mod promotions;
pub mod routes;
pub mod webhooks;

use crate::engine::{Outcome, Reply};
use crate::error::Result;
use crate::ledger::Ledger;
use crate::records::StoredResponse;
use crate::wire::{ApiError, render};
use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use openapi::CommonResponses;
use promotions::*;
use routes::*;
use utoipa::OpenApi;

/// The whole application: `/healthz`, `/v1`, the OpenAPI document and the
/// console, within `limits`.
pub fn app(ledger: Ledger, limits: &limits::Limits) -> Router {
    let v1 = Router::new()
        .route("/v1/openapi.json", get(openapi_json))
        .route("/v1/metrics", get(metrics))
        .route(
            "/v1/credit_systems",
            post(create_credit_system).get(list_credit_systems),
        )
        .route(
            "/v1/credit_systems/{id}",
            get(get_credit_system).patch(update_credit_system),
        )
        .route("/v1/customers", post(create_customer).get(list_customers))
        .route(
            "/v1/customers/{id}",
            get(get_customer).patch(update_customer),
        )
        .route("/v1/wallets", post(create_wallet).get(list_wallets))
        .route("/v1/wallets/{id}", get(get_wallet).patch(update_wallet))
        .route("/v1/wallets/{id}/balance", get(get_balance))
        .route(
            "/v1/wallets/{id}/grants",
            post(create_grant).get(list_grants),
        )
        .route("/v1/grants/{id}", get(get_grant))
        .route("/v1/grants/{id}/void", post(void_grant))
        .route(
            "/v1/wallets/{id}/debits",
            post(create_debit).get(list_debits),
        )
        .route("/v1/debits/batch", post(batch_debits))
        .route("/v1/debits/{id}", get(get_debit))
        .route("/v1/wallets/{id}/holds", post(create_hold))
        .route("/v1/holds/{id}", get(get_hold))
        .route("/v1/holds/{id}/capture", post(capture_hold))
        .route("/v1/holds/{id}/release", post(release_hold))
        .route("/v1/wallets/{id}/entries", get(list_entries))
        .route(
            "/v1/promotional_credits",
            post(create_promotional_credit).get(list_promotional_credits),
        )
        .route(
            "/v1/promotional_credits/{id}",
            get(get_promotional_credit)
                .patch(update_promotional_credit)
                .delete(delete_promotional_credit),
        )
        .route(
            "/v1/promotional_credits/{id}/grant",
            post(grant_promotional_credit),
        )
        .route(
            "/v1/promotional_credits/{id}/revoke",
            post(revoke_promotional_credit),
        )
        .route(
            "/v1/promotional_credits/{id}/customers",
            get(list_promotion_customers),
        )
        .route("/v1/api_keys", post(create_api_key).get(list_api_keys))
        .route("/v1/api_keys/{id}", axum::routing::delete(delete_api_key))
        .route("/v1/events", get(webhooks::list_events))
        .route("/v1/events/{id}", get(webhooks::get_event))
        .route(
            "/v1/webhook_endpoints",
            post(webhooks::create_webhook_endpoint).get(webhooks::list_webhook_endpoints),
        )
        .route(
            "/v1/webhook_endpoints/{id}",
            get(webhooks::get_webhook_endpoint)
                .patch(webhooks::update_webhook_endpoint)
                .delete(webhooks::delete_webhook_endpoint),
        )
        .route(
            "/v1/webhook_endpoints/{id}/deliveries",
            get(webhooks::list_webhook_deliveries),
        )
        .route(
            "/v1/webhook_deliveries/{id}",
            get(webhooks::get_webhook_delivery),
        )
        .route(
            "/v1/webhook_deliveries/{id}/redeliver",
            post(webhooks::redeliver_webhook_delivery),
        )
        .route("/v1/test_clock", get(test_clock))
        .route("/v1/test_clock/advance", post(advance_test_clock))
        .route_layer(axum::middleware::from_fn_with_state(
            extract::Guard {
                ledger: ledger.clone(),
                rate_limiter: std::sync::Arc::new(limits::RateLimiter::new(limits)),
            },
            extract::authorize,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .merge(v1)
        .merge(crate::console::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(ledger.clone())
        .layer(axum::middleware::from_fn_with_state(
            limits.request_time_max,
            limits::limit_request,
        ))
        .layer(axum::middleware::from_fn_with_state(ledger, observe))
}

async fn method_not_allowed() -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
    .into_response()
}

#[derive(OpenApi)]
#[openapi(
    info(title = "credstack", description = "A credit ledger for usage-based products: stacked grants, real-time drawdown, holds and promotional credits."),
    paths(
        healthz, create_credit_system, list_credit_systems, get_credit_system, update_credit_system,
        create_customer, list_customers, get_customer, update_customer,
        create_wallet, list_wallets, get_wallet, update_wallet, get_balance,
        create_grant, list_grants, get_grant, void_grant,
        create_debit, list_debits, get_debit, batch_debits,
        create_hold, get_hold, capture_hold, release_hold,
        list_entries, create_promotional_credit, list_promotional_credits, get_promotional_credit,
        update_promotional_credit, delete_promotional_credit, grant_promotional_credit,
        revoke_promotional_credit, list_promotion_customers,
        create_api_key, list_api_keys, delete_api_key,
        webhooks::list_events, webhooks::get_event,
        webhooks::create_webhook_endpoint, webhooks::list_webhook_endpoints,
        webhooks::get_webhook_endpoint, webhooks::update_webhook_endpoint,
        webhooks::delete_webhook_endpoint, webhooks::list_webhook_deliveries,
        webhooks::get_webhook_delivery, webhooks::redeliver_webhook_delivery,
        test_clock, advance_test_clock, metrics,
    ),
    modifiers(&Security, &CommonResponses)
)]
pub struct ApiDoc;

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        openapi.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
            "api_key",
            Vec::<String>::new(),
        )]);
    }
}

async fn openapi_json() -> Response {
    axum::Json(ApiDoc::openapi()).into_response()
}

fn stored_response(stored: StoredResponse, replayed: bool) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        stored.body,
    )
        .into_response();
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

pub fn reply(reply: Reply) -> Response {
    match reply {
        Reply::Fresh(result) => stored_response(render(&result), false),
        Reply::Replayed(stored) => stored_response(stored, true),
    }
}

pub fn reply_result(result: Result<Outcome>) -> Response {
    stored_response(render(&result), false)
}
