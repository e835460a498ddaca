//! The API's error object. Every failure leaves as
//! `{"error": {"type", "code", "message", "param"?}}` with a fitting status;
//! internal causes are logged where they happen and never sent. A ledger
//! [`Error`] maps onto it here, once, for every edge: an HTTP answer (sent by
//! `http/error.rs`), a stored answer replayed by its idempotency key, a NATS
//! dead letter, the console's form errors.

use super::shapes::{ErrorBody, ErrorDetail};
use crate::error::Error;
use axum::http::StatusCode;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub param: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            param: None,
        }
    }

    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError {
            param: Some(param.into()),
            ..ApiError::new(StatusCode::BAD_REQUEST, "parameter_invalid", message)
        }
    }

    pub fn not_found(what: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "resource_not_found",
            format!("no such {what}"),
        )
    }

    fn kind(&self) -> &'static str {
        match self.status {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::FORBIDDEN => "permission_error",
            StatusCode::PAYMENT_REQUIRED => "balance_error",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            s if s.is_server_error() => "api_error",
            _ => "invalid_request_error",
        }
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                kind: self.kind().to_string(),
                code: self.code.to_string(),
                message: self.message.clone(),
                param: self.param.clone(),
            },
        }
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> ApiError {
        match error {
            Error::Invalid { param, message } => ApiError::invalid(param, message),
            Error::NotFound { what } => ApiError::not_found(what),
            Error::InsufficientBalance { message } => ApiError::new(
                StatusCode::PAYMENT_REQUIRED,
                "insufficient_balance",
                message,
            ),
            Error::Conflict {
                code,
                message,
                param,
            } => ApiError {
                param,
                ..ApiError::new(StatusCode::CONFLICT, code, message)
            },
            Error::Unavailable | Error::Contended => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                "the ledger store is unavailable; nothing was changed, retry with the same Idempotency-Key",
            ),
        }
    }
}
