//! Request extraction: JSON bodies, query strings, path ids, idempotency
//! keys and API key authorization, each failing with a SPEC-shaped 4xx.

use super::limits::RateLimiter;
use crate::engine::Idempotency;
use crate::ids::{self, Kind};
use crate::ledger::Ledger;
use crate::records::Scope;
use crate::wire::{ApiError, IDEMPOTENCY_KEY_MAX, valid_idempotency_key};
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, MatchedPath, Request, State};
use axum::http::{Method, StatusCode, request::Parts};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Largest request body accepted; larger bodies get 413. A batch of 1000
/// debits with descriptions fits comfortably.
pub const BODY_BYTES_MAX: usize = 1024 * 1024;

/// A JSON body decoded into `T`; the raw bytes are kept for fingerprinting.
pub struct JsonBody<T> {
    pub value: T,
    pub raw: Bytes,
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, ApiError> {
        let content_type = request
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let raw = crate::body::read_body(request.into_body(), BODY_BYTES_MAX)
            .await
            .map_err(|error| super::limits::body_refused(&error, BODY_BYTES_MAX))?;
        // An empty body stands for `{}` on calls that take no fields.
        let text: &[u8] = if raw.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &raw
        };
        if !raw.is_empty() && !content_type.starts_with("application/json") {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "content_type_invalid",
                "send the body as JSON with Content-Type: application/json",
            ));
        }
        let mut deserializer = serde_json::Deserializer::from_slice(text);
        let value = serde_path_to_error::deserialize(&mut deserializer).map_err(json_error)?;
        // Fix: anything after the JSON value (`{"amount": "1"} trailing`) used
        // to be ignored, so a malformed body was applied as if it were valid.
        deserializer.end().map_err(|error| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("the body is not valid JSON: {error}"),
            )
        })?;
        if let Some(param) = positional_struct(text) {
            return Err(ApiError::invalid(
                param.clone(),
                format!("{param} must be a JSON object, not an array"),
            ));
        }
        Ok(JsonBody { value, raw })
    }
}

/// The fields whose value is a JSON array in some request type.
const LIST_FIELDS: [&str; 3] = ["debits", "customer_ids", "event_types"];

/// Fix: serde reads a struct from a JSON array too, by field order, so
/// `PATCH /v1/credit_systems/{id}` with `["x", "inactive"]` renamed and
/// deactivated the system, and `[null, null]` answered 200. A decoded body
/// is checked for an array anywhere but under a list field; the path of the
/// first one is returned (`body` for the body itself).
fn positional_struct(text: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(text).ok()?;
    array_outside_lists(&value, "", false).map(|path| {
        if path.is_empty() {
            "body".to_string()
        } else {
            path
        }
    })
}

fn array_outside_lists(value: &serde_json::Value, path: &str, list: bool) -> Option<String> {
    match value {
        serde_json::Value::Array(items) if list => {
            items.iter().enumerate().find_map(|(index, item)| {
                array_outside_lists(item, &format!("{path}[{index}]"), false)
            })
        }
        serde_json::Value::Array(_) => Some(path.to_string()),
        serde_json::Value::Object(fields) => fields.iter().find_map(|(name, field)| {
            let path = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            array_outside_lists(field, &path, LIST_FIELDS.contains(&name.as_str()))
        }),
        _ => None,
    }
}

fn json_error(error: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = error.path().to_string();
    let inner = error.into_inner();
    let message = inner.to_string();
    if inner.is_syntax() || inner.is_eof() {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the body is not valid JSON: {message}"),
        );
    }
    // Name the field: an unknown field is named in the message in backticks.
    let unknown = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split('`').next());
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next());
    let join = |field: &str| {
        if path == "." {
            field.to_string()
        } else {
            format!("{path}.{field}")
        }
    };
    match (unknown, missing) {
        // The path already ends in the unknown field's name.
        (Some(_), _) => ApiError {
            code: "parameter_unknown",
            ..ApiError::invalid(path.clone(), format!("unknown parameter: {path}"))
        },
        (_, Some(field)) => ApiError {
            code: "parameter_missing",
            ..ApiError::invalid(
                join(field),
                format!("missing required parameter: {}", join(field)),
            )
        },
        _ => ApiError::invalid(
            if path == "." {
                "body".to_string()
            } else {
                path
            },
            format!("invalid value: {message}"),
        ),
    }
}

/// The query string as a map; each handler reads the names it knows.
pub struct QueryMap(pub BTreeMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for QueryMap {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                "the query string is malformed",
            )
        })?;
        Ok(QueryMap(pairs.into_iter().collect()))
    }
}

/// List paging (SPEC §3): `limit` 1–100, default 20, and `starting_after`.
pub struct Paging {
    pub limit: usize,
    pub starting_after: Option<u128>,
}

impl QueryMap {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// A search text (`q`): absent when empty; a 400 if it holds control
    /// characters (nothing stored does, and PostgreSQL refuses NUL).
    pub fn search(&self, name: &str) -> Result<Option<String>, ApiError> {
        match self.get(name).filter(|q| !q.is_empty()) {
            Some(q) if crate::engine::has_control_characters(q) => Err(ApiError::invalid(
                name,
                format!("{name} must not contain control characters"),
            )),
            other => Ok(other.map(str::to_string)),
        }
    }

    pub fn paging(&self, kind: Kind) -> Result<Paging, ApiError> {
        let limit = match self.get("limit") {
            None => 20,
            Some(text) => text
                .parse::<usize>()
                .ok()
                .filter(|l| (1..=100).contains(l))
                .ok_or_else(|| {
                    ApiError::invalid("limit", "limit must be an integer from 1 to 100")
                })?,
        };
        let starting_after = self
            .get("starting_after")
            .map(|text| {
                ids::parse(kind, text).ok_or_else(|| {
                    ApiError::invalid(
                        "starting_after",
                        format!("starting_after must be a {}_ id", kind.prefix()),
                    )
                })
            })
            .transpose()?;
        Ok(Paging {
            limit,
            starting_after,
        })
    }

    /// An optional id filter such as `customer_id=`.
    pub fn id(&self, name: &str, kind: Kind) -> Result<Option<u128>, ApiError> {
        self.get(name)
            .map(|text| {
                ids::parse(kind, text).ok_or_else(|| {
                    ApiError::invalid(name, format!("{name} must be a {}_ id", kind.prefix()))
                })
            })
            .transpose()
    }
}

/// Parses an id in the path; a malformed or foreign id is simply unknown.
pub fn path_id(kind: Kind, text: &str, what: &str) -> Result<u128, ApiError> {
    ids::parse(kind, text).ok_or_else(|| ApiError::not_found(what))
}

/// Parses an id in a body field; malformed is a 400 naming the field.
pub fn body_id(kind: Kind, text: &str, param: &str) -> Result<u128, ApiError> {
    ids::parse(kind, text)
        .ok_or_else(|| ApiError::invalid(param, format!("{param} must be a {}_ id", kind.prefix())))
}

/// The `Idempotency-Key` header, if sent.
pub struct IdempotencyKey(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get("idempotency-key") else {
            return Ok(IdempotencyKey(None));
        };
        let key = value
            .to_str()
            .ok()
            .filter(|k| valid_idempotency_key(k))
            .ok_or_else(|| {
                ApiError::invalid(
                    "Idempotency-Key",
                    format!("Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX} visible ASCII characters"),
                )
            })?;
        Ok(IdempotencyKey(Some(key.to_string())))
    }
}

impl IdempotencyKey {
    /// Binds the key to this exact request: method, path and body.
    pub fn for_request(&self, method: &str, path: &str, body: &[u8]) -> Option<Idempotency> {
        self.0
            .clone()
            .map(|key| Idempotency::new(key, &[method.as_bytes(), path.as_bytes(), body]))
    }
}

/// The scope a route needs: GETs need `read`; recording usage needs `usage`;
/// everything else, and every API key and webhook route (their URLs and
/// delivery logs), needs `admin`.
pub fn required_scope(method: &Method, path: &str) -> Scope {
    const USAGE_ROUTES: [&str; 5] = [
        "/v1/wallets/{id}/debits",
        "/v1/debits/batch",
        "/v1/wallets/{id}/holds",
        "/v1/holds/{id}/capture",
        "/v1/holds/{id}/release",
    ];
    if path.starts_with("/v1/api_keys") || path.starts_with("/v1/webhook_") {
        Scope::Admin
    } else if method == Method::GET {
        Scope::Read
    } else if USAGE_ROUTES.contains(&path) {
        Scope::Usage
    } else {
        Scope::Admin
    }
}

/// What [`authorize`] needs: the ledger's keys and the per-key rate limiter.
#[derive(Clone)]
pub struct Guard {
    pub ledger: Ledger,
    pub rate_limiter: Arc<RateLimiter>,
}

/// Middleware on every `/v1` route: 401 without a valid key, 429 when the
/// key is over its rate, 403 without the scope.
pub async fn authorize(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    let Guard {
        ledger,
        rate_limiter,
    } = guard;
    let path = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| request.uri().path().to_string());
    let secret = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(secret) = secret else {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing_api_key",
            "send an API key as Authorization: Bearer <key>",
        )
        .into_response();
    };
    let Some(key) = ledger.authenticate(secret).await else {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
            "the API key is not valid",
        )
        .into_response();
    };
    if let Err(wait) = rate_limiter.admit(key.id) {
        return super::limits::rate_limited(wait);
    }
    let needed = required_scope(request.method(), &path);
    if key.scope < needed {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            format!("this route needs a key with scope {}", needed.as_str()),
        )
        .into_response();
    }
    next.run(request).await
}
