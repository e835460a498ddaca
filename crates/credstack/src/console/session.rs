//! Console sign-in, sessions and CSRF.
//!
//! - Sign-in takes an admin API key. The login form itself is protected by a
//!   double-submit token (a short-lived cookie and a hidden field that must
//!   match), so another site cannot sign a browser into someone else's session.
//! - A session is a random 32-byte token in a cookie (`HttpOnly`,
//!   `SameSite=Strict`, `Path=/`, 12 hours); the store keeps its SHA-256 and
//!   the session's synchronizer token. Deleting the API key ends its sessions.
//! - Every console POST goes through [`Submitted`], which refuses a request
//!   whose `csrf` field does not match the session's token.

use super::{FieldErrors, render_with};
use crate::body::{BodyError, read_body};
use crate::engine::{Request, hash_secret};
use crate::ledger::Ledger;
use crate::records::{ConsoleSession, Scope};
use askama::Template;
use axum::extract::{FromRequest, FromRequestParts, OriginalUri, Query};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::CookieJar;
use axum_extra::extract::cookie::{Cookie, SameSite};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;

pub const SESSION_COOKIE: &str = "credstack_session";
const LOGIN_COOKIE: &str = "credstack_login";
const SESSION_HOURS: i64 = 12;
/// Largest console form body.
const FORM_BYTES_MAX: usize = 256 * 1024;

/// A signed-in operator, with the session's form token.
pub struct Operator {
    pub csrf: String,
    pub token_hash: [u8; 32],
}

fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

fn to_login(parts: &Parts) -> Response {
    let next = parts
        .extensions
        .get::<OriginalUri>()
        .map(|uri| uri.0.to_string())
        .unwrap_or_else(|| parts.uri.to_string());
    let next = if parts.method == Method::GET {
        next
    } else {
        "/".to_string()
    };
    let query = serde_urlencoded::to_string([("next", next)]).unwrap_or_default();
    Redirect::to(&format!("/login?{query}")).into_response()
}

impl FromRequestParts<Ledger> for Operator {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, ledger: &Ledger) -> Result<Self, Response> {
        let jar = CookieJar::from_headers(&parts.headers);
        let Some(token) = jar.get(SESSION_COOKIE).map(|c| c.value().to_string()) else {
            return Err(to_login(parts));
        };
        let token_hash = hash_secret(&token);
        let now = chrono::Utc::now();
        let session = ledger
            .read(move |c| c.session(&token_hash, now))
            .await
            .map_err(|_| {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the ledger store is unavailable",
                )
                    .into_response()
            })?;
        let Some(session) = session else {
            return Err(to_login(parts));
        };
        if ledger.api_key_scope(session.api_key_id) != Some(Scope::Admin) {
            return Err(to_login(parts));
        }
        Ok(Operator {
            csrf: session.csrf_token,
            token_hash,
        })
    }
}

/// A console form submission from a signed-in operator whose `csrf` field
/// matches the session. The body is decoded into `T` (repeated fields such
/// as several `customer_ids` become a list).
pub struct Submitted<T> {
    pub operator: Operator,
    pub form: T,
}

#[derive(Deserialize)]
struct CsrfField {
    #[serde(default)]
    csrf: String,
}

impl<T: DeserializeOwned> FromRequest<Ledger> for Submitted<T> {
    type Rejection = Response;

    async fn from_request(
        request: axum::extract::Request,
        ledger: &Ledger,
    ) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let operator = Operator::from_request_parts(&mut parts, ledger).await?;
        let bytes = read_body(body, FORM_BYTES_MAX)
            .await
            .map_err(|error| match error {
                BodyError::TooLarge => {
                    (StatusCode::PAYLOAD_TOO_LARGE, "the form is too large").into_response()
                }
                BodyError::TimedOut => (
                    StatusCode::REQUEST_TIMEOUT,
                    "the form was not received in time; nothing was changed",
                )
                    .into_response(),
            })?;
        let token: CsrfField = serde_html_form::from_bytes(&bytes)
            .map_err(|_| (StatusCode::BAD_REQUEST, "the form is malformed").into_response())?;
        if !bool::from(token.csrf.as_bytes().ct_eq(operator.csrf.as_bytes())) {
            return Err((
                StatusCode::FORBIDDEN,
                "this form has expired or did not come from the console; reload the page and try again",
            )
                .into_response());
        }
        let form = serde_html_form::from_bytes(&bytes).map_err(|error| {
            (
                StatusCode::BAD_REQUEST,
                format!("the form is malformed: {error}"),
            )
                .into_response()
        })?;
        Ok(Submitted { operator, form })
    }
}

#[derive(Template)]
#[template(path = "console/login.html")]
struct LoginPage {
    login_token: String,
    next: String,
    errors: FieldErrors,
}

#[derive(Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

/// Only same-site paths are followed after sign-in.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && path.bytes().all(|b| b.is_ascii_graphic() && b != b'\\') =>
        {
            path.to_string()
        }
        _ => "/".to_string(),
    }
}

fn login_form(status: StatusCode, next: String, errors: FieldErrors) -> Response {
    let login_token = random_token();
    let cookie = Cookie::build((LOGIN_COOKIE, login_token.clone()))
        .http_only(true)
        .same_site(SameSite::Strict)
        .path("/login")
        .max_age(time::Duration::minutes(30))
        .build();
    let page = render_with(
        status,
        &LoginPage {
            login_token,
            next,
            errors,
        },
    );
    (CookieJar::new().add(cookie), page).into_response()
}

pub async fn login_page(Query(query): Query<NextQuery>) -> Response {
    login_form(
        StatusCode::OK,
        safe_next(query.next.as_deref()),
        FieldErrors::default(),
    )
}

#[derive(Deserialize)]
pub struct LoginForm {
    api_key: String,
    login_token: String,
    next: Option<String>,
}

pub async fn login(
    axum::extract::State(ledger): axum::extract::State<Ledger>,
    jar: CookieJar,
    axum::extract::Form(form): axum::extract::Form<LoginForm>,
) -> Response {
    let next = safe_next(form.next.as_deref());
    let expected = jar
        .get(LOGIN_COOKIE)
        .map(|c| c.value().to_string())
        .unwrap_or_default();
    if expected.is_empty() || !bool::from(expected.as_bytes().ct_eq(form.login_token.as_bytes())) {
        let errors = FieldErrors {
            fields: Vec::new(),
            form: Some("The sign-in form expired. Please try again.".into()),
        };
        return login_form(StatusCode::FORBIDDEN, next, errors);
    }
    let key = ledger.authenticate(form.api_key.trim()).await;
    let Some(key) = key.filter(|k| k.scope == Scope::Admin) else {
        let errors = FieldErrors::field("api_key", "That is not an admin API key.");
        return login_form(StatusCode::UNAUTHORIZED, next, errors);
    };
    let token = random_token();
    let now = chrono::Utc::now();
    let session = ConsoleSession {
        token_hash: hash_secret(&token),
        csrf_token: random_token(),
        api_key_id: key.id,
        created_at: now,
        expires_at: now + chrono::Duration::hours(SESSION_HOURS),
    };
    if let Err(error) = ledger.execute(Request::CreateSession(session)).await {
        return login_form(
            StatusCode::SERVICE_UNAVAILABLE,
            next,
            FieldErrors::from_error(error),
        );
    }
    let cookie = Cookie::build((SESSION_COOKIE, token))
        .http_only(true)
        .same_site(SameSite::Strict)
        .path("/")
        .max_age(time::Duration::hours(SESSION_HOURS))
        .build();
    let jar = jar
        .remove(Cookie::build(LOGIN_COOKIE).path("/login"))
        .add(cookie);
    (jar, Redirect::to(&next)).into_response()
}

#[derive(Deserialize)]
pub struct Empty {}

pub async fn logout(
    axum::extract::State(ledger): axum::extract::State<Ledger>,
    jar: CookieJar,
    submitted: Submitted<Empty>,
) -> Response {
    let token_hash = submitted.operator.token_hash;
    let _ = ledger.execute(Request::DeleteSession { token_hash }).await;
    let jar = jar.remove(Cookie::build(SESSION_COOKIE).path("/"));
    (jar, Redirect::to("/login")).into_response()
}
