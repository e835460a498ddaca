//! The handlers of `/v1`: parse, call the ledger service, render. No ledger
//! logic lives here.
//!
//! Why this file is past ~800 lines: one short handler per `/v1` route, each
//! with its OpenAPI annotation beside it; the promotional and webhook
//! routes already live in `promotions.rs` and `webhooks.rs`.

use super::extract::{IdempotencyKey, JsonBody, QueryMap, body_id, path_id};
use super::{reply, reply_result};
use crate::engine::{BatchItem, DEBIT_BATCH_MAX, NewDebit, NewGrant, Request};
use crate::history;
use crate::ids::Kind;
use crate::ledger::{Ledger, new_secret};
use crate::records::Scope;
use crate::wire::*;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use credstack_core::{Interval, Period, Purpose};

type Answer = Result<Response, ApiError>;

fn json<T: serde::Serialize>(value: T) -> Answer {
    Ok(Json(value).into_response())
}

// ---- health, openapi, test clock ----------------------------------------------

#[utoipa::path(get, path = "/healthz", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// The Prometheus (OpenMetrics) content type of `/v1/metrics`.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the service has done since it started: debits by outcome, HTTP
/// requests and latency by route, writer commits. Any key may read it.
#[utoipa::path(get, path = "/v1/metrics", responses((status = 200,
    description = "Every metric in the OpenMetrics text format, for a Prometheus scrape with a bearer key",
    content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String)))]
pub async fn metrics(State(ledger): State<Ledger>) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        ledger.render_metrics(),
    )
        .into_response()
}

/// Every request, in a span carrying its request id: the caller's
/// `X-Request-Id` when it is a plain token (1–64 of `A-Za-z0-9._-`), else a
/// new `req_<ULID>`; sent back as `X-Request-Id`. Counts the request by
/// method, matched route and status, with its latency (`/v1/metrics`), and
/// logs it at debug level: method, route pattern, status and time — never
/// the query string or a header, which may carry customer data or a key.
pub async fn observe(
    State(ledger): State<Ledger>,
    route: Option<axum::extract::MatchedPath>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use tracing::Instrument;
    let started = std::time::Instant::now();
    let given = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|id| {
            (1..=64).contains(&id.len())
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        })
        .map(str::to_string);
    let request_id = given.unwrap_or_else(|| format!("req_{}", ulid::Ulid::generate()));
    let header_value =
        axum::http::HeaderValue::from_str(&request_id).expect("a plain token is a header value");
    request
        .headers_mut()
        .insert(REQUEST_ID, header_value.clone());
    let method = request.method().to_string();
    let route = route.map_or_else(|| "unmatched".to_string(), |r| r.as_str().to_string());
    let span =
        tracing::info_span!("request", request_id = %request_id, method = %method, route = %route);
    let mut response = next.run(request).instrument(span.clone()).await;
    let took = started.elapsed();
    let status = response.status().as_u16();
    ledger.metrics().request(&method, &route, status, took);
    span.in_scope(|| tracing::debug!(status, micros = took.as_micros() as u64, "answered"));
    response.headers_mut().insert(REQUEST_ID, header_value);
    response
}

/// The header that carries a request's id, both ways.
pub const REQUEST_ID: &str = "x-request-id";

#[utoipa::path(get, path = "/v1/test_clock", responses((status = 200, body = TestClockWire), (status = 404, body = ErrorBody)))]
pub async fn test_clock(State(ledger): State<Ledger>) -> Answer {
    if !ledger.clock().is_simulated() {
        return Err(ApiError::not_found(
            "test clock: the server runs on the system clock",
        ));
    }
    json(TestClockWire {
        object: "test_clock",
        now: time(ledger.now()),
    })
}

#[utoipa::path(post, path = "/v1/test_clock/advance", request_body = AdvanceClock,
    responses((status = 200, body = TestClockWire), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn advance_test_clock(
    State(ledger): State<Ledger>,
    body: JsonBody<AdvanceClock>,
) -> Answer {
    use crate::clock::AdvanceError;
    match ledger.advance_clock(body.value.to).await {
        Ok(now) => json(TestClockWire {
            object: "test_clock",
            now: time(now),
        }),
        Err(AdvanceError::NotSimulated) => Err(ApiError::not_found(
            "test clock: the server runs on the system clock",
        )),
        Err(AdvanceError::Backwards) => {
            Err(ApiError::invalid("to", "the test clock only moves forward"))
        }
    }
}

// ---- credit systems -----------------------------------------------------------

#[utoipa::path(post, path = "/v1/credit_systems", request_body = CreateCreditSystem,
    responses((status = 200, body = CreditSystemWire), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_credit_system(
    State(ledger): State<Ledger>,
    key: IdempotencyKey,
    body: JsonBody<CreateCreditSystem>,
) -> Answer {
    let b = body.value;
    let request = Request::CreateCreditSystem {
        key: b.key,
        name: b.name,
        unit: b.unit,
        scale: b.scale,
    };
    Ok(reply(
        ledger
            .submit(
                request,
                key.for_request("POST", "/v1/credit_systems", &body.raw),
            )
            .await,
    ))
}

#[utoipa::path(get, path = "/v1/credit_systems", params(("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "1 to 100, default 20"), ("starting_after" = Option<String>, Query)),
    responses((status = 200, body = List<CreditSystemWire>)))]
pub async fn list_credit_systems(State(ledger): State<Ledger>, query: QueryMap) -> Answer {
    let paging = query.paging(Kind::CreditSystem)?;
    let page = ledger
        .read(move |c| c.list_credit_systems(paging.limit, paging.starting_after))
        .await?;
    json(List::new(
        page.items.iter().map(CreditSystemWire::from).collect(),
        page.has_more,
    ))
}

#[utoipa::path(get, path = "/v1/credit_systems/{id}", responses((status = 200, body = CreditSystemWire), (status = 404, body = ErrorBody)))]
pub async fn get_credit_system(State(ledger): State<Ledger>, Path(id): Path<String>) -> Answer {
    let id = path_id(Kind::CreditSystem, &id, "credit system")?;
    let cs = ledger
        .read(move |c| c.credit_system(id))
        .await?
        .ok_or_else(|| ApiError::not_found("credit system"))?;
    json(CreditSystemWire::from(&cs))
}

#[utoipa::path(patch, path = "/v1/credit_systems/{id}", request_body = UpdateCreditSystem,
    responses((status = 200, body = CreditSystemWire), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn update_credit_system(
    State(ledger): State<Ledger>,
    Path(id): Path<String>,
    body: JsonBody<UpdateCreditSystem>,
) -> Answer {
    let id = path_id(Kind::CreditSystem, &id, "credit system")?;
    let active = match body.value.status.as_deref() {
        None => None,
        Some("active") => Some(true),
        Some("inactive") => Some(false),
        Some(_) => {
            return Err(ApiError::invalid(
                "status",
                "status must be active or inactive",
            ));
        }
    };
    let request = Request::UpdateCreditSystem {
        id,
        name: body.value.name,
        active,
    };
    Ok(reply_result(ledger.execute(request).await))
}

// ---- customers ----------------------------------------------------------------

#[utoipa::path(post, path = "/v1/customers", request_body = CreateCustomer,
    responses((status = 200, body = CustomerWire), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_customer(
    State(ledger): State<Ledger>,
    key: IdempotencyKey,
    body: JsonBody<CreateCustomer>,
) -> Answer {
    let b = body.value;
    let request = Request::CreateCustomer {
        name: b.name,
        email: b.email,
        external_id: b.external_id,
        metadata: b.metadata,
    };
    Ok(reply(
        ledger
            .submit(request, key.for_request("POST", "/v1/customers", &body.raw))
            .await,
    ))
}

#[utoipa::path(get, path = "/v1/customers",
    params(("q" = Option<String>, Query, description = "searches name, email and external_id, case-insensitive"),
           ("external_id" = Option<String>, Query), ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "1 to 100, default 20"), ("starting_after" = Option<String>, Query)),
    responses((status = 200, body = List<CustomerWire>)))]
pub async fn list_customers(State(ledger): State<Ledger>, query: QueryMap) -> Answer {
    let paging = query.paging(Kind::Customer)?;
    if let Some(external_id) = query.get("external_id").map(str::to_string) {
        let found = ledger
            .read(move |c| c.customer_by_external_id(&external_id))
            .await?;
        return json(List::new(
            found.iter().map(CustomerWire::from).collect(),
            false,
        ));
    }
    let q = query.search("q")?;
    let page = ledger
        .read(move |c| c.list_customers(q.as_deref(), paging.limit, paging.starting_after))
        .await?;
    json(List::new(
        page.items.iter().map(CustomerWire::from).collect(),
        page.has_more,
    ))
}

#[utoipa::path(get, path = "/v1/customers/{id}", responses((status = 200, body = CustomerWire), (status = 404, body = ErrorBody)))]
pub async fn get_customer(State(ledger): State<Ledger>, Path(id): Path<String>) -> Answer {
    let id = path_id(Kind::Customer, &id, "customer")?;
    let customer = ledger
        .read(move |c| c.customer(id))
        .await?
        .ok_or_else(|| ApiError::not_found("customer"))?;
    json(CustomerWire::from(&customer))
}

#[utoipa::path(patch, path = "/v1/customers/{id}", request_body = UpdateCustomer,
    responses((status = 200, body = CustomerWire), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn update_customer(
    State(ledger): State<Ledger>,
    Path(id): Path<String>,
    body: JsonBody<UpdateCustomer>,
) -> Answer {
    let id = path_id(Kind::Customer, &id, "customer")?;
    let b = body.value;
    let request = Request::UpdateCustomer {
        id,
        name: b.name,
        email: b.email,
        external_id: b.external_id,
        metadata: b.metadata,
    };
    Ok(reply_result(ledger.execute(request).await))
}

// ---- wallets ------------------------------------------------------------------

#[utoipa::path(post, path = "/v1/wallets", request_body = CreateWallet,
    responses((status = 200, body = WalletWire), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_wallet(
    State(ledger): State<Ledger>,
    key: IdempotencyKey,
    body: JsonBody<CreateWallet>,
) -> Answer {
    let b = &body.value;
    let request = Request::CreateWallet {
        customer_id: body_id(Kind::Customer, &b.customer_id, "customer_id")?,
        credit_system_id: body_id(Kind::CreditSystem, &b.credit_system_id, "credit_system_id")?,
        overdraft_limit: b.overdraft_limit.clone(),
        low_balance_threshold: b.low_balance_threshold.clone(),
    };
    Ok(reply(
        ledger
            .submit(request, key.for_request("POST", "/v1/wallets", &body.raw))
            .await,
    ))
}

#[utoipa::path(get, path = "/v1/wallets",
    params(("customer_id" = Option<String>, Query), ("credit_system_id" = Option<String>, Query),
           ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "1 to 100, default 20"), ("starting_after" = Option<String>, Query)),
    responses((status = 200, body = List<WalletWire>), (status = 400, body = ErrorBody)))]
pub async fn list_wallets(State(ledger): State<Ledger>, query: QueryMap) -> Answer {
    let paging = query.paging(Kind::Wallet)?;
    let customer = query.id("customer_id", Kind::Customer)?;
    let credit_system = query.id("credit_system_id", Kind::CreditSystem)?;
    let page = ledger
        .read(move |c| c.list_wallets(customer, credit_system, paging.limit, paging.starting_after))
        .await?;
    let mut data = Vec::with_capacity(page.items.len());
    for info in &page.items {
        data.push(WalletWire::from(&history::current(&ledger, info.id).await?));
    }
    json(List::new(data, page.has_more))
}

#[utoipa::path(get, path = "/v1/wallets/{id}", responses((status = 200, body = WalletWire), (status = 404, body = ErrorBody)))]
pub async fn get_wallet(State(ledger): State<Ledger>, Path(id): Path<String>) -> Answer {
    let id = path_id(Kind::Wallet, &id, "wallet")?;
    json(WalletWire::from(&history::current(&ledger, id).await?))
}

#[utoipa::path(patch, path = "/v1/wallets/{id}", request_body = UpdateWallet,
    responses((status = 200, body = WalletWire), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn update_wallet(
    State(ledger): State<Ledger>,
    Path(id): Path<String>,
    body: JsonBody<UpdateWallet>,
) -> Answer {
    let id = path_id(Kind::Wallet, &id, "wallet")?;
    let overdraft_limit = match body.value.overdraft_limit {
        Some(None) => {
            return Err(ApiError::invalid(
                "overdraft_limit",
                "overdraft_limit must be an amount, not null; \"0\" allows no overdraft",
            ));
        }
        limit => limit.flatten(),
    };
    Ok(reply_result(
        ledger
            .execute(Request::UpdateWallet {
                id,
                overdraft_limit,
                low_balance_threshold: body.value.low_balance_threshold,
            })
            .await,
    ))
}

#[utoipa::path(get, path = "/v1/wallets/{id}/balance",
    params(("at" = Option<String>, Query, description = "an RFC 3339 instant, not in the future: the balance then, from the ledger")),
    responses((status = 200, body = BalanceWire), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_balance(
    State(ledger): State<Ledger>,
    Path(id): Path<String>,
    query: QueryMap,
) -> Answer {
    let id = path_id(Kind::Wallet, &id, "wallet")?;
    let view = match query.get("at") {
        None => history::current(&ledger, id).await?,
        Some(text) => {
            let at = chrono::DateTime::parse_from_rfc3339(text)
                .map_err(|_| ApiError::invalid("at", "at must be an RFC 3339 instant"))?
                .with_timezone(&chrono::Utc);
            if at > ledger.now() {
                return Err(ApiError::invalid("at", "at must not be in the future"));
            }
            history::at(&ledger, id, at).await?
        }
    };
    json(BalanceWire::from(&view))
}

// ---- grants -------------------------------------------------------------------

fn parse_grant(wallet_id: u128, b: CreateGrant) -> Result<NewGrant, ApiError> {
    let purpose = Purpose::parse(&b.purpose).ok_or_else(|| {
        ApiError::invalid("purpose", "purpose must be promotional, bundled or paid")
    })?;
    let recurrence = b
        .recurrence
        .map(|r| {
            let interval = Interval::parse(&r.interval).ok_or_else(|| {
                ApiError::invalid(
                    "recurrence.interval",
                    "interval must be day, week, month or year",
                )
            })?;
            Period::new(interval, r.interval_count).ok_or_else(|| {
                ApiError::invalid(
                    "recurrence.interval_count",
                    format!("interval_count must be from 1 to {}", Period::COUNT_MAX),
                )
            })
        })
        .transpose()?;
    if let Some(priority) = b.priority
        && priority > 100
    {
        return Err(ApiError::invalid(
            "priority",
            "priority must be from 0 to 100",
        ));
    }
    for (param, at) in [
        ("effective_at", b.effective_at),
        ("expires_at", b.expires_at),
    ] {
        if at.is_some_and(|t| t.timestamp_subsec_nanos() % 1000 != 0) {
            return Err(ApiError::invalid(
                param,
                format!("{param} must have at most microsecond precision"),
            ));
        }
    }
    Ok(NewGrant {
        wallet_id,
        amount: b.amount,
        purpose,
        priority: b.priority,
        effective_at: b.effective_at,
        expires_at: b.expires_at,
        recurrence,
        rollover_max: b.rollover_max,
        description: b.description,
        metadata: b.metadata,
    })
}

#[utoipa::path(post, path = "/v1/wallets/{id}/grants", request_body = CreateGrant,
    responses((status = 200, body = GrantWire), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_grant(
    State(ledger): State<Ledger>,
    Path(id): Path<String>,
    key: IdempotencyKey,
    body: JsonBody<CreateGrant>,
) -> Answer {
    let path = format!("/v1/wallets/{id}/grants");
    let wallet_id = path_id(Kind::Wallet, &id, "wallet")?;
    let new = parse_grant(wallet_id, body.value)?;
    Ok(reply(
        ledger
            .submit(
                Request::AddGrant(new),
                key.for_request("POST", &path, &body.raw),
            )
            .await,
    ))
}

#[utoipa::path(get, path = "/v1/wallets/{id}/grants",
    params(("status" = Option<String>, Query, pattern = "^(scheduled|active|depleted|expired|voided)$", description = "scheduled, active, depleted, expired or voided"),
           ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "1 to 100, default 20"), ("starting_after" = Option<String>, Query)),
    responses((status = 200, body = List<GrantWire>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_grants(
    State(ledger): State<Ledger>,
    Path(id): Path<String>,
    query: QueryMap,
) -> Answer {
    let wallet_id = path_id(Kind::Wallet, &id, "wallet")?;
    let paging = query.paging(Kind::Grant)?;
    let status = query.get("status").map(str::to_string);
    if let Some(status) = &status
        && !["scheduled", "active", "depleted", "expired", "voided"].contains(&status.as_str())
    {
        return Err(ApiError::invalid(
            "status",
            "status must be scheduled, active, depleted, expired or voided",
        ));
    }
    history::require_wallet(&ledger, wallet_id).await?;
    let page = ledger
        .read(move |c| {
            c.list_grants(
                wallet_id,
                status.as_deref(),
                paging.limit,
                paging.starting_after,
            )
        })
        .await?;
    json(List::new(
        page.items.iter().map(GrantWire::from).collect(),
        page.has_more,
    ))
}

#[utoipa::path(get, path = "/v1/grants/{id}", responses((status = 200, body = GrantWire), (status = 404, body = ErrorBody)))]
pub async fn get_grant(State(ledger): State<Ledger>, Path(id): Path<String>) -> Answer {
    let id = path_id(Kind::Grant, &id, "grant")?;
    let record = history::grant(&ledger, id).await?;
    json(GrantWire::from(&record))
}

#[utoipa::path(post, path = "/v1/grants/{id}/void",
    responses((status = 200, body = GrantWire), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn void_grant(
    State(ledger): State<Ledger>,
    Path(id): Path<String>,
    key: IdempotencyKey,
    body: JsonBody<Empty>,
) -> Answer {
    let path = format!("/v1/grants/{id}/void");
    let id = path_id(Kind::Grant, &id, "grant")?;
    Ok(reply(
        ledger
            .submit(
                Request::VoidGrant { id },
                key.for_request("POST", &path, &body.raw),
            )
            .await,
    ))
}

// ---- debits -------------------------------------------------------------------

#[utoipa::path(post, path = "/v1/wallets/{id}/debits", request_body = CreateDebit,
    responses((status = 200, body = DebitWire), (status = 400, body = ErrorBody), (status = 402, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_debit(
    State(ledger): State<Ledger>,
    Path(id): Path<String>,
    key: IdempotencyKey,
    body: JsonBody<CreateDebit>,
) -> Answer {
    let wallet_id = path_id(Kind::Wallet, &id, "wallet")?;
    let b = body.value;
    let debit = NewDebit {
        wallet_id,
        amount: b.amount,
        description: b.description,
        metadata: b.metadata,
    };
    let idempotency = key.0.map(|k| debit_idempotency(k, &debit));
    Ok(reply(
        ledger.submit(Request::Debit(debit), idempotency).await,
    ))
}

#[utoipa::path(get, path = "/v1/wallets/{id}/debits",
    params(("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "1 to 100, default 20"), ("starting_after" = Option<String>, Query)),
    responses((status = 200, body = List<DebitWire>), (status = 404, body = ErrorBody)))]
pub async fn list_debits(
    State(ledger): State<Ledger>,
    Path(id): Path<String>,
    query: QueryMap,
) -> Answer {
    let wallet_id = path_id(Kind::Wallet, &id, "wallet")?;
    let paging = query.paging(Kind::Debit)?;
    history::require_wallet(&ledger, wallet_id).await?;
    let page = ledger
        .read(move |c| c.list_debits(wallet_id, paging.limit, paging.starting_after))
        .await?;
    json(List::new(
        page.items.iter().map(DebitWire::from).collect(),
        page.has_more,
    ))
}

#[utoipa::path(get, path = "/v1/debits/{id}", responses((status = 200, body = DebitWire), (status = 404, body = ErrorBody)))]
pub async fn get_debit(State(ledger): State<Ledger>, Path(id): Path<String>) -> Answer {
    let id = path_id(Kind::Debit, &id, "debit")?;
    let debit = ledger
        .read(move |c| c.debit(id))
        .await?
        .ok_or_else(|| ApiError::not_found("debit"))?;
    json(DebitWire::from(&debit))
}

#[utoipa::path(post, path = "/v1/debits/batch", request_body = BatchDebits,
    responses((status = 200, body = BatchResults), (status = 400, body = ErrorBody)))]
pub async fn batch_debits(
    State(ledger): State<Ledger>,
    key: IdempotencyKey,
    body: JsonBody<BatchDebits>,
) -> Answer {
    let count = body.value.debits.len();
    if count == 0 || count > DEBIT_BATCH_MAX {
        return Err(ApiError::invalid(
            "debits",
            format!("debits must have 1 to {DEBIT_BATCH_MAX} items"),
        ));
    }
    let mut items = Vec::with_capacity(count);
    for (index, item) in body.value.debits.iter().enumerate() {
        let wallet_id = body_id(
            Kind::Wallet,
            &item.wallet_id,
            &format!("debits[{index}].wallet_id"),
        )?;
        if !valid_idempotency_key(&item.idempotency_key) {
            return Err(ApiError::invalid(
                format!("debits[{index}].idempotency_key"),
                "idempotency_key must be 1 to 255 visible ASCII characters",
            ));
        }
        let debit = NewDebit {
            wallet_id,
            amount: item.amount.clone(),
            description: item.description.clone(),
            metadata: Default::default(),
        };
        if key.0.as_deref() == Some(item.idempotency_key.as_str()) {
            return Err(ApiError::invalid(
                format!("debits[{index}].idempotency_key"),
                "an item's idempotency_key must differ from the request's Idempotency-Key",
            ));
        }
        let idempotency = debit_idempotency(item.idempotency_key.clone(), &debit);
        items.push(BatchItem { debit, idempotency });
    }
    Ok(reply(
        ledger
            .submit(
                Request::DebitBatch(items),
                key.for_request("POST", "/v1/debits/batch", &body.raw),
            )
            .await,
    ))
}

// ---- holds --------------------------------------------------------------------

#[utoipa::path(post, path = "/v1/wallets/{id}/holds", request_body = CreateHold,
    responses((status = 200, body = HoldWire), (status = 400, body = ErrorBody), (status = 402, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn create_hold(
    State(ledger): State<Ledger>,
    Path(id): Path<String>,
    key: IdempotencyKey,
    body: JsonBody<CreateHold>,
) -> Answer {
    let path = format!("/v1/wallets/{id}/holds");
    let wallet_id = path_id(Kind::Wallet, &id, "wallet")?;
    let request = Request::PlaceHold {
        wallet_id,
        amount: body.value.amount,
        expires_in_seconds: body.value.expires_in_seconds,
    };
    Ok(reply(
        ledger
            .submit(request, key.for_request("POST", &path, &body.raw))
            .await,
    ))
}

#[utoipa::path(get, path = "/v1/holds/{id}", responses((status = 200, body = HoldWire), (status = 404, body = ErrorBody)))]
pub async fn get_hold(State(ledger): State<Ledger>, Path(id): Path<String>) -> Answer {
    let id = path_id(Kind::Hold, &id, "hold")?;
    let hold = ledger
        .read(move |c| c.hold(id))
        .await?
        .ok_or_else(|| ApiError::not_found("hold"))?;
    if hold.expires_at <= ledger.now() && hold.status == crate::records::HoldStatus::Active {
        ledger.ensure_current(hold.wallet_id).await?;
    }
    let hold = ledger
        .read(move |c| c.hold(id))
        .await?
        .ok_or_else(|| ApiError::not_found("hold"))?;
    json(HoldWire::from(&hold))
}

#[utoipa::path(post, path = "/v1/holds/{id}/capture", request_body = CaptureHold,
    responses((status = 200, body = HoldWire), (status = 400, body = ErrorBody), (status = 402, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn capture_hold(
    State(ledger): State<Ledger>,
    Path(id): Path<String>,
    key: IdempotencyKey,
    body: JsonBody<CaptureHold>,
) -> Answer {
    let path = format!("/v1/holds/{id}/capture");
    let id = path_id(Kind::Hold, &id, "hold")?;
    let request = Request::CaptureHold {
        id,
        amount: body.value.amount,
    };
    Ok(reply(
        ledger
            .submit(request, key.for_request("POST", &path, &body.raw))
            .await,
    ))
}

#[utoipa::path(post, path = "/v1/holds/{id}/release",
    responses((status = 200, body = HoldWire), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn release_hold(
    State(ledger): State<Ledger>,
    Path(id): Path<String>,
    key: IdempotencyKey,
    body: JsonBody<Empty>,
) -> Answer {
    let path = format!("/v1/holds/{id}/release");
    let id = path_id(Kind::Hold, &id, "hold")?;
    Ok(reply(
        ledger
            .submit(
                Request::ReleaseHold { id },
                key.for_request("POST", &path, &body.raw),
            )
            .await,
    ))
}

// ---- entries ------------------------------------------------------------------

#[utoipa::path(get, path = "/v1/wallets/{id}/entries",
    params(("order" = Option<String>, Query, pattern = "^(asc|desc)$", description = "asc or desc (default)"),
           ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "1 to 100, default 20"), ("starting_after" = Option<String>, Query)),
    responses((status = 200, body = List<EntryWire>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_entries(
    State(ledger): State<Ledger>,
    Path(id): Path<String>,
    query: QueryMap,
) -> Answer {
    let wallet_id = path_id(Kind::Wallet, &id, "wallet")?;
    let paging = query.paging(Kind::Entry)?;
    let ascending = match query.get("order") {
        None | Some("desc") => false,
        Some("asc") => true,
        Some(_) => return Err(ApiError::invalid("order", "order must be asc or desc")),
    };
    history::require_wallet(&ledger, wallet_id).await?;
    let cursor = paging.starting_after;
    let page = ledger
        .read(move |c| {
            if let Some(entry) = cursor
                && !c.entry_in_wallet(wallet_id, entry)?
            {
                return Ok(None);
            }
            c.list_entries(wallet_id, ascending, paging.limit, cursor)
                .map(Some)
        })
        .await?
        .ok_or_else(|| {
            ApiError::invalid(
                "starting_after",
                "starting_after is not an entry of this wallet",
            )
        })?;
    json(List::new(
        page.items.iter().map(EntryWire::from).collect(),
        page.has_more,
    ))
}

// ---- api keys -----------------------------------------------------------------

#[utoipa::path(post, path = "/v1/api_keys", request_body = CreateApiKey,
    responses((status = 200, body = ApiKeyWire), (status = 400, body = ErrorBody)))]
pub async fn create_api_key(
    State(ledger): State<Ledger>,
    key: IdempotencyKey,
    body: JsonBody<CreateApiKey>,
) -> Answer {
    let scope = Scope::parse(&body.value.scope)
        .ok_or_else(|| ApiError::invalid("scope", "scope must be admin, usage or read"))?;
    let request = Request::CreateApiKey {
        name: body.value.name,
        scope,
        secret: new_secret(),
    };
    Ok(reply(
        ledger
            .submit(request, key.for_request("POST", "/v1/api_keys", &body.raw))
            .await,
    ))
}

#[utoipa::path(get, path = "/v1/api_keys", params(("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "1 to 100, default 20"), ("starting_after" = Option<String>, Query)), responses((status = 200, body = List<ApiKeyWire>)))]
pub async fn list_api_keys(State(ledger): State<Ledger>, query: QueryMap) -> Answer {
    let paging = query.paging(Kind::ApiKey)?;
    let page = ledger
        .read(move |c| c.list_api_keys(paging.limit, paging.starting_after))
        .await?;
    json(List::new(
        page.items
            .iter()
            .map(|k| ApiKeyWire::new(k, None))
            .collect(),
        page.has_more,
    ))
}

#[utoipa::path(delete, path = "/v1/api_keys/{id}", responses((status = 200, body = DeletedWire), (status = 404, body = ErrorBody)))]
pub async fn delete_api_key(State(ledger): State<Ledger>, Path(id): Path<String>) -> Answer {
    let id = path_id(Kind::ApiKey, &id, "API key")?;
    Ok(reply_result(
        ledger.execute(Request::DeleteApiKey { id }).await,
    ))
}

/// Unknown routes answer in the API's error shape.
pub async fn not_found() -> Response {
    ApiError::new(StatusCode::NOT_FOUND, "route_not_found", "no such route").into_response()
}
