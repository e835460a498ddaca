//! Limits on what one request, or one API key, may take: requests per
//! second per key (429 with `Retry-After`), the size of a request's headers
//! (431) and the time to receive a request (408). Each refusal is decided
//! before any handler runs, so a refused request changes nothing.
//!
//! The body size limit (413) is [`super::extract::BODY_BYTES_MAX`]; the
//! limits the connection itself enforces (header bytes the parser accepts,
//! the time to send headers) are set in `server.rs` from the same figures.
//! The body's deadline and the reading of a body whole are `crate::body`'s,
//! shared with the console's forms; the API's 413 and 408 are
//! [`body_refused`]'s.

use crate::body::BodyError;
use crate::wire::ApiError;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use std::num::NonZeroU32;
use std::time::Duration;

/// Largest header section answered with a SPEC-shaped 431: the sum over
/// headers of name, value and the 4 bytes of `: ` and CRLF.
pub const HEADER_BYTES_MAX: usize = 16 * 1024;
/// Largest header section the HTTP parser reads at all; beyond it the
/// connection answers a bare 431 and closes, before any routing.
pub const HEADER_BYTES_PARSE_MAX: usize = 64 * 1024;

/// What `serve` allows per key and per request (README, Configuration).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Requests per second each API key may make, on average; 0 turns
    /// rate limiting off.
    pub rate_limit_per_key: u32,
    /// Requests a key may make at once before the average applies (at
    /// least 1).
    pub rate_limit_burst: u32,
    /// Time a client has to send a request's headers (else the connection
    /// is closed), and then its body (else 408).
    pub request_time_max: Duration,
}

/// Generous enough that one key driving the HTTP benchmarks (about 15,000
/// requests a second over 64 connections) is never throttled; operators
/// lower it to what their integrations need.
pub const RATE_LIMIT_PER_KEY_DEFAULT: u32 = 50_000;
pub const REQUEST_TIME_MAX_DEFAULT: Duration = Duration::from_secs(30);

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            rate_limit_per_key: RATE_LIMIT_PER_KEY_DEFAULT,
            rate_limit_burst: RATE_LIMIT_PER_KEY_DEFAULT,
            request_time_max: REQUEST_TIME_MAX_DEFAULT,
        }
    }
}

/// One token bucket (GCRA) per API key id, in this process's memory. Keys
/// exist only once authenticated, so the map holds at most one state per
/// stored key.
pub struct RateLimiter {
    limiter: Option<governor::DefaultKeyedRateLimiter<u128>>,
}

impl RateLimiter {
    pub fn new(limits: &Limits) -> RateLimiter {
        let limiter = NonZeroU32::new(limits.rate_limit_per_key).map(|rate| {
            let burst = NonZeroU32::new(limits.rate_limit_burst).unwrap_or(NonZeroU32::MIN);
            governor::RateLimiter::dashmap(governor::Quota::per_second(rate).allow_burst(burst))
        });
        RateLimiter { limiter }
    }

    /// `Ok` if the key may make a request now (and counts it), else how
    /// long until it may.
    pub fn admit(&self, key_id: u128) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter
            .check_key(&key_id)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

/// `Retry-After` in whole seconds, rounded up, at least 1.
pub fn retry_after_seconds(wait: Duration) -> u64 {
    let whole = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    whole.max(1)
}

/// 429 `rate_limited` with `Retry-After`.
pub fn rate_limited(wait: Duration) -> Response {
    let seconds = retry_after_seconds(wait);
    let mut response = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("this API key has made too many requests; retry after {seconds} s"),
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

/// Middleware on every route: refuses a header section over
/// [`HEADER_BYTES_MAX`] with 431, and gives the body a deadline of
/// `request_time_max` from now.
pub async fn limit_request(
    State(time_max): State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    let header_bytes: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if header_bytes > HEADER_BYTES_MAX {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!("request headers are limited to {HEADER_BYTES_MAX} bytes"),
        )
        .into_response();
    }
    let request = request.map(|body| crate::body::with_deadline(body, time_max));
    next.run(request).await
}

/// The API's answer to a body it could not read whole (413 or 408).
pub fn body_refused(error: &BodyError, bytes_max: usize) -> ApiError {
    match error {
        BodyError::TooLarge => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request bodies are limited to {bytes_max} bytes"),
        ),
        BodyError::TimedOut => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "the request was not received in time; nothing was changed",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds_and_is_never_zero() {
        for (wait_ms, seconds) in [(0, 1), (1, 1), (999, 1), (1000, 1), (1001, 2), (2500, 3)] {
            assert_eq!(
                retry_after_seconds(Duration::from_millis(wait_ms)),
                seconds,
                "{wait_ms} ms"
            );
        }
    }

    #[test]
    fn the_limiter_counts_each_key_apart() {
        let limiter = RateLimiter::new(&Limits {
            rate_limit_per_key: 1,
            rate_limit_burst: 2,
            request_time_max: REQUEST_TIME_MAX_DEFAULT,
        });
        assert!(limiter.admit(1).is_ok());
        assert!(limiter.admit(1).is_ok());
        let wait = limiter.admit(1).expect_err("over the burst");
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1));
        assert!(limiter.admit(2).is_ok(), "another key has its own budget");
    }
}
