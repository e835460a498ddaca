//! The service's error: every way a request can fail, with a stable
//! snake_case code. The HTTP layer maps each to a status; internal causes
//! are logged where they happen and never carried to the client.

use credstack_core::Rejection;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// 400: a parameter is wrong; `param` names it.
    Invalid { param: String, message: String },
    /// 404: no such object.
    NotFound { what: &'static str },
    /// 402: the wallet cannot cover the amount.
    InsufficientBalance { message: String },
    /// 409: the request conflicts with the current state.
    Conflict {
        code: &'static str,
        message: String,
        param: Option<String>,
    },
    /// 503: the store cannot be reached or failed to commit; nothing changed.
    Unavailable,
    /// A store conflict with another process's transaction (a deadlock, a
    /// unique key taken at the same moment). The writer rolls back and runs
    /// the batch again; a caller sees it (as a 503) only when the retries
    /// run out.
    Contended,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Error {
        Error::Invalid {
            param: param.into(),
            message: message.into(),
        }
    }

    pub fn idempotency_key_reused() -> Error {
        Error::conflict(
            "idempotency_key_reused",
            "this Idempotency-Key was used with a different request",
        )
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Error {
        Error::Conflict {
            code,
            message: message.into(),
            param: None,
        }
    }

    /// Maps a core rejection; `amount_param` names the amount field in this request.
    pub fn from_rejection(rejection: Rejection, amount_param: &str) -> Error {
        match rejection {
            Rejection::InsufficientBalance { .. } => Error::InsufficientBalance {
                message: "the wallet's spendable balance does not cover this amount".into(),
            },
            Rejection::GrantNotFound => Error::NotFound { what: "grant" },
            Rejection::GrantAlreadyEnded => Error::conflict(
                "grant_already_ended",
                "the grant has already expired or been voided",
            ),
            Rejection::HoldNotFound => {
                Error::conflict("hold_not_active", "the hold is no longer active")
            }
            Rejection::CapacityExceeded => Error::Conflict {
                code: "wallet_capacity_exceeded",
                message:
                    "the wallet's grants together would exceed the largest balance credstack keeps"
                        .into(),
                param: Some(amount_param.to_string()),
            },
            Rejection::OverdraftBelowDebt => Error::Conflict {
                code: "overdraft_below_debt",
                message: "the overdraft limit cannot be lower than the debt and overdraft holds"
                    .into(),
                param: Some("overdraft_limit".into()),
            },
            Rejection::Invalid { field, message } => Error::invalid(field, message),
        }
    }
}

impl From<crate::store::StoreError> for Error {
    fn from(error: crate::store::StoreError) -> Error {
        if error.retryable {
            tracing::debug!(%error, "store conflict");
            Error::Contended
        } else {
            tracing::error!(%error, "store error");
            Error::Unavailable
        }
    }
}
