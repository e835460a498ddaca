//! Console: webhook endpoints (issue 8) — list, create (the signing secret
//! shown once), enable, disable, delete, and each endpoint's delivery log
//! with redelivery by hand.

use super::session::Submitted;
use super::{FieldErrors, Layout, Operator, done, render, render_with};
use crate::engine::{Outcome, Request};
use crate::ids::{self, Kind};
use crate::ledger::Ledger;
use crate::records::{Attempt, Delivery, DeliveryStatus, EventType, WebhookEndpoint};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

/// Deliveries the endpoint page lists.
const DELIVERIES_SHOWN: usize = 100;

fn time(at: credstack_core::Instant) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

pub struct EndpointRow {
    pub id: String,
    pub url: String,
    pub description: String,
    pub event_types: String,
    pub enabled: bool,
}

impl From<&WebhookEndpoint> for EndpointRow {
    fn from(endpoint: &WebhookEndpoint) -> EndpointRow {
        EndpointRow {
            id: ids::format(Kind::WebhookEndpoint, endpoint.id),
            url: endpoint.url.clone(),
            description: endpoint.description.clone().unwrap_or_default(),
            event_types: endpoint.event_types.join(", "),
            enabled: endpoint.enabled,
        }
    }
}

pub struct DeliveryRow {
    pub id: String,
    pub event_id: String,
    pub event_type: &'static str,
    pub wallet_id: String,
    pub sequence: u64,
    pub status: &'static str,
    pub attempts: u32,
    pub last: String,
    pub next: String,
    pub log: Vec<AttemptRow>,
}

pub struct AttemptRow {
    pub number: u32,
    pub at: String,
    pub outcome: String,
    pub duration_ms: u32,
}

fn delivery_row(delivery: &Delivery, attempts: &[Attempt]) -> DeliveryRow {
    let last = match (&delivery.last_status_code, &delivery.last_error) {
        (_, Some(error)) => error.clone(),
        (Some(code), None) => format!("HTTP {code}"),
        (None, None) => String::new(),
    };
    DeliveryRow {
        id: ids::format(Kind::WebhookDelivery, delivery.id),
        event_id: ids::format(Kind::Event, delivery.event_id),
        event_type: delivery.event_type.as_str(),
        wallet_id: ids::format(Kind::Wallet, delivery.wallet_id),
        sequence: delivery.sequence,
        status: delivery.status.as_str(),
        attempts: delivery.attempts,
        last,
        next: match (delivery.status, delivery.next_attempt_at) {
            (DeliveryStatus::Pending, Some(at)) => time(at),
            _ => String::new(),
        },
        log: attempts
            .iter()
            .map(|a| AttemptRow {
                number: a.number,
                at: time(a.at),
                outcome: match (&a.error, a.status_code) {
                    (Some(error), _) => error.clone(),
                    (None, Some(code)) => format!("HTTP {code}"),
                    (None, None) => String::new(),
                },
                duration_ms: a.duration_ms,
            })
            .collect(),
    }
}

#[derive(Deserialize, Default)]
pub struct CreateForm {
    #[serde(default)]
    url: String,
    #[serde(default)]
    description: String,
    /// Checked event types; none checked means all.
    #[serde(default)]
    event_types: Vec<String>,
}

#[derive(Template)]
#[template(path = "console/webhooks.html")]
struct ListPage {
    layout: Layout,
    rows: Vec<EndpointRow>,
    types: Vec<&'static str>,
    form: CreateForm,
    errors: FieldErrors,
    /// The endpoint just created and its secret, shown this once.
    created: Option<(String, String)>,
}

#[derive(Deserialize)]
pub struct Notice {
    notice: Option<String>,
    status: Option<String>,
}

async fn list_page(
    ledger: &Ledger,
    operator: &Operator,
    notice: Option<String>,
    form: CreateForm,
    errors: FieldErrors,
    created: Option<(String, String)>,
) -> Response {
    let endpoints = match ledger.read(|c| c.list_webhook_endpoints(100, None)).await {
        Ok(page) => page.items,
        Err(error) => return super::unavailable(error),
    };
    let page = ListPage {
        layout: Layout::new("webhooks", operator, notice),
        rows: endpoints.iter().map(EndpointRow::from).collect(),
        types: EventType::ALL.iter().map(|t| t.as_str()).collect(),
        form,
        errors,
        created,
    };
    let status = if page.errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    render_with(status, &page)
}

pub async fn list(
    State(ledger): State<Ledger>,
    operator: Operator,
    Query(q): Query<Notice>,
) -> Response {
    list_page(
        &ledger,
        &operator,
        q.notice,
        CreateForm::default(),
        FieldErrors::default(),
        None,
    )
    .await
}

pub async fn create(State(ledger): State<Ledger>, submitted: Submitted<CreateForm>) -> Response {
    let form = submitted.form;
    let event_types = if form.event_types.is_empty() {
        vec!["*".to_string()]
    } else {
        form.event_types.clone()
    };
    let description = Some(form.description.trim().to_string()).filter(|d| !d.is_empty());
    let request = Request::CreateWebhookEndpoint {
        url: form.url.trim().to_string(),
        description,
        event_types,
        secret: crate::webhooks::new_secret(),
    };
    match ledger.execute(request).await {
        Ok(Outcome::WebhookEndpoint {
            endpoint,
            secret: Some(secret),
        }) => {
            let id = ids::format(Kind::WebhookEndpoint, endpoint.id);
            list_page(
                &ledger,
                &submitted.operator,
                Some("Webhook endpoint created.".into()),
                CreateForm::default(),
                FieldErrors::default(),
                Some((id, secret)),
            )
            .await
        }
        Ok(_) => super::unavailable(crate::error::Error::Unavailable),
        Err(error) => {
            list_page(
                &ledger,
                &submitted.operator,
                None,
                form,
                FieldErrors::from_error(error),
                None,
            )
            .await
        }
    }
}

#[derive(Template)]
#[template(path = "console/webhook.html")]
struct EndpointPage {
    layout: Layout,
    endpoint: EndpointRow,
    status: String,
    deliveries: Vec<DeliveryRow>,
}

pub async fn show(
    State(ledger): State<Ledger>,
    operator: Operator,
    Path(id): Path<String>,
    Query(q): Query<Notice>,
) -> Response {
    let Some(id) = ids::parse(Kind::WebhookEndpoint, &id) else {
        return super::not_found(&operator);
    };
    let status = q.status.as_deref().and_then(DeliveryStatus::parse);
    let read = ledger
        .read(move |c| {
            let Some(endpoint) = c.webhook_endpoint(id)? else {
                return Ok(None);
            };
            let page = c.list_deliveries(id, status, DELIVERIES_SHOWN, None)?;
            let mut rows = Vec::with_capacity(page.items.len());
            for delivery in &page.items {
                rows.push(delivery_row(delivery, &c.delivery_attempts(delivery.id)?));
            }
            Ok(Some((endpoint, rows)))
        })
        .await;
    match read {
        Ok(Some((endpoint, deliveries))) => render(&EndpointPage {
            layout: Layout::new("webhooks", &operator, q.notice),
            endpoint: EndpointRow::from(&endpoint),
            status: status.map(|s| s.as_str().to_string()).unwrap_or_default(),
            deliveries,
        }),
        Ok(None) => super::not_found(&operator),
        Err(error) => super::unavailable(error),
    }
}

#[derive(Deserialize)]
pub struct EnabledForm {
    enabled: String,
}

pub async fn set_enabled(
    State(ledger): State<Ledger>,
    Path(id): Path<String>,
    submitted: Submitted<EnabledForm>,
) -> Response {
    let Some(parsed) = ids::parse(Kind::WebhookEndpoint, &id) else {
        return super::not_found(&submitted.operator);
    };
    let enabled = submitted.form.enabled == "true";
    let request = Request::UpdateWebhookEndpoint {
        id: parsed,
        url: None,
        description: None,
        event_types: None,
        enabled: Some(enabled),
    };
    match ledger.execute(request).await {
        Ok(_) => done(
            &format!("/webhooks/{id}"),
            if enabled {
                "Endpoint enabled."
            } else {
                "Endpoint disabled: no new deliveries, none sent."
            },
        ),
        Err(error) => super::unavailable(error),
    }
}

#[derive(Deserialize)]
pub struct Empty {}

pub async fn delete(
    State(ledger): State<Ledger>,
    Path(id): Path<String>,
    submitted: Submitted<Empty>,
) -> Response {
    let Some(id) = ids::parse(Kind::WebhookEndpoint, &id) else {
        return super::not_found(&submitted.operator);
    };
    match ledger.execute(Request::DeleteWebhookEndpoint { id }).await {
        Ok(_) => done("/webhooks", "Endpoint deleted, with its delivery log."),
        Err(error) => super::unavailable(error),
    }
}

#[derive(Deserialize)]
pub struct RedeliverForm {
    endpoint_id: String,
}

pub async fn redeliver(
    State(ledger): State<Ledger>,
    Path(id): Path<String>,
    submitted: Submitted<RedeliverForm>,
) -> Response {
    let Some(parsed) = ids::parse(Kind::WebhookDelivery, &id) else {
        return super::not_found(&submitted.operator);
    };
    let back = format!(
        "/webhooks/{}",
        ids::parse(Kind::WebhookEndpoint, &submitted.form.endpoint_id)
            .map(|e| ids::format(Kind::WebhookEndpoint, e))
            .unwrap_or_default()
    );
    match ledger.execute(Request::Redeliver { id: parsed }).await {
        Ok(_) => done(&back, &format!("Delivery {id} will be sent again.")),
        Err(crate::error::Error::Conflict { message, .. }) => done(&back, &message),
        Err(error) => super::unavailable(error),
    }
}
