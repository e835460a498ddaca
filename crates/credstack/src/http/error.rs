//! How the API's error object ([`ApiError`], defined with the other wire
//! shapes in `crate::wire`) leaves as an HTTP response: its status, and its
//! body as JSON.

use crate::wire::ApiError;
use axum::response::{IntoResponse, Response};

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}
