//! The operator console (SPEC §5): server-rendered HTML pages, served by the
//! same binary at `/`, on top of the ledger service — the same calls the API
//! makes, never a second path to the store's writes.
//!
//! Security: sign-in takes an admin API key and sets a session cookie
//! (HttpOnly, SameSite=Strict, expiring); only the token's SHA-256 is
//! stored. Every form carries the session's synchronizer token (`csrf`), and
//! every POST is refused without it. Templates are compiled (askama), so a
//! template that names a missing field does not build; askama escapes HTML.

mod assets;
mod chart;
mod credit_systems;
mod customers;
mod promotions;
mod session;
mod webhooks;

use crate::ledger::Ledger;
use askama::Template;
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};

pub use session::Operator;

/// The console's routes, merged into the application next to `/v1`.
pub fn router() -> Router<Ledger> {
    Router::new()
        .route("/", get(home))
        .route("/login", get(session::login_page).post(session::login))
        .route("/logout", post(session::logout))
        .route("/assets/{name}", get(assets::asset))
        .route(
            "/credit-systems",
            get(credit_systems::list).post(credit_systems::create),
        )
        .route(
            "/credit-systems/{id}/status",
            post(credit_systems::set_status),
        )
        .route("/customers", get(customers::list).post(customers::create))
        .route("/customers/{id}", get(customers::show))
        .route("/customers/{id}/wallets", post(customers::create_wallet))
        .route("/wallets/{id}/grants", post(customers::add_grant))
        .route("/wallets/{id}/debits", post(customers::test_debit))
        .route("/grants/{id}/void", post(customers::void_grant))
        .route(
            "/offers/promotions/credit",
            get(promotions::list).post(promotions::create),
        )
        .route(
            "/offers/promotions/credit/{id}",
            get(promotions::show).post(promotions::edit),
        )
        .route(
            "/offers/promotions/credit/{id}/delete",
            post(promotions::delete),
        )
        .route(
            "/offers/promotions/credit/{id}/grant",
            post(promotions::grant),
        )
        .route(
            "/offers/promotions/credit/{id}/revoke",
            post(promotions::revoke),
        )
        .route(
            "/offers/promotions/credit/{id}/customer-search",
            get(promotions::customer_search),
        )
        .route(
            "/offers/promotions/credit/{id}/jobs/{job}",
            get(promotions::job_progress),
        )
        .route("/webhooks", get(webhooks::list).post(webhooks::create))
        .route("/webhooks/{id}", get(webhooks::show))
        .route("/webhooks/{id}/enabled", post(webhooks::set_enabled))
        .route("/webhooks/{id}/delete", post(webhooks::delete))
        .route(
            "/webhook-deliveries/{id}/redeliver",
            post(webhooks::redeliver),
        )
}

async fn home(_operator: Operator) -> Redirect {
    Redirect::to("/customers")
}

/// Renders a page, or a plain 500 if the template fails (it cannot, for
/// compiled templates over plain data, but the console must never panic).
pub fn render(template: &impl Template) -> Response {
    render_with(StatusCode::OK, template)
}

pub fn render_with(status: StatusCode, template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => (status, [(header::CACHE_CONTROL, "no-store")], Html(html)).into_response(),
        Err(error) => {
            tracing::error!(%error, "console template failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered",
            )
                .into_response()
        }
    }
}

/// What every page's layout needs: the section for the navigation, the
/// form token, and a notice to show once.
pub struct Layout {
    pub section: &'static str,
    pub csrf: String,
    pub notice: Option<String>,
}

impl Layout {
    pub fn new(section: &'static str, operator: &Operator, notice: Option<String>) -> Layout {
        Layout {
            section,
            csrf: operator.csrf.clone(),
            notice,
        }
    }
}

/// Field-level errors of a form, keyed by the API's `param`.
#[derive(Default, Debug)]
pub struct FieldErrors {
    pub fields: Vec<(String, String)>,
    /// An error that names no field.
    pub form: Option<String>,
}

impl FieldErrors {
    pub fn get(&self, field: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(name, _)| name == field || name.starts_with(&format!("{field}.")))
            .map(|(_, message)| message.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty() && self.form.is_none()
    }

    pub fn field(field: &str, message: impl Into<String>) -> FieldErrors {
        FieldErrors {
            fields: vec![(field.to_string(), message.into())],
            form: None,
        }
    }

    /// Maps a ledger error onto the form: a `param` becomes a field error.
    pub fn from_error(error: crate::error::Error) -> FieldErrors {
        let api = crate::wire::ApiError::from(error);
        match api.param {
            Some(param) => FieldErrors::field(&param, api.message),
            None => FieldErrors {
                fields: Vec::new(),
                form: Some(api.message),
            },
        }
    }
}

/// Redirects after a successful form (POST → redirect → GET), with a notice.
pub fn done(to: &str, notice: &str) -> Response {
    let separator = if to.contains('?') { '&' } else { '?' };
    let encoded = form_urlencoded(notice);
    Redirect::to(&format!("{to}{separator}notice={encoded}")).into_response()
}

fn form_urlencoded(text: &str) -> String {
    serde_urlencoded::to_string([("", text)])
        .map(|s| s.trim_start_matches('=').to_string())
        .unwrap_or_default()
}

/// The page for a store failure: nothing changed.
pub fn unavailable(error: crate::error::Error) -> Response {
    let message = crate::wire::ApiError::from(error).message;
    (StatusCode::SERVICE_UNAVAILABLE, message).into_response()
}

#[derive(Template)]
#[template(path = "console/not_found.html")]
struct NotFoundPage {
    layout: Layout,
}

/// The console's 404 page.
pub fn not_found(operator: &Operator) -> Response {
    render_with(
        StatusCode::NOT_FOUND,
        &NotFoundPage {
            layout: Layout::new("", operator, None),
        },
    )
}
