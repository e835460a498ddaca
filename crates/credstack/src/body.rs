//! Request bodies: a deadline on each, and reading one whole.
//!
//! Shared by the two edges that read request bodies, the API (`http/`) and
//! the console (`console/`), so it sits below both and imports nothing from
//! the crate. `http/limits.rs` gives every request's body its deadline
//! ([`with_deadline`], in the middleware on every route, console included);
//! [`read_body`] reads a body whole and tells one over its size from one
//! past its deadline. What each edge answers for either (the API's 413 and
//! 408 error objects, the console's plain pages) stays with the edge.

use axum::body::{Body, Bytes};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// `body`, failing with [`BodyError::TimedOut`] (through [`read_body`])
/// unless it has arrived whole within `time_max` from now.
pub fn with_deadline(body: Body, time_max: Duration) -> Body {
    Body::new(DeadlineBody {
        inner: body,
        deadline: Box::pin(tokio::time::sleep(time_max)),
    })
}

/// A request body that fails once its deadline has passed.
struct DeadlineBody {
    inner: Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

/// The error a [`DeadlineBody`] fails with.
#[derive(Debug)]
struct DeadlinePassed;

impl std::fmt::Display for DeadlinePassed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request body did not arrive in time")
    }
}

impl std::error::Error for DeadlinePassed {}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(axum::Error::new(DeadlinePassed)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Why a body could not be read whole.
pub enum BodyError {
    TooLarge,
    TimedOut,
}

/// Reads a whole body of at most `bytes_max` bytes, before its deadline.
pub async fn read_body(body: Body, bytes_max: usize) -> Result<Bytes, BodyError> {
    axum::body::to_bytes(body, bytes_max)
        .await
        .map_err(|error| {
            let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&error);
            while let Some(current) = cause {
                if current.is::<DeadlinePassed>() {
                    return BodyError::TimedOut;
                }
                cause = current.source();
            }
            BodyError::TooLarge
        })
}
