//! Webhooks (issue 8): the delivery loop that sends the outbox's events to
//! the endpoints that want them, signed, in order per wallet, retried with
//! exponential backoff for a day.
//!
//! The loop runs in every `serve` process and does its writes through the
//! writer like any other request:
//! 1. **Fan out.** Events the writer put in the outbox (in the commit of
//!    their change) get one pending delivery per enabled endpoint that
//!    wants their type, in the commit that marks them dispatched.
//! 2. **Claim.** Up to [`CLAIM_MAX`] due deliveries are claimed for a lease
//!    (the attempt's timeout and a margin), each the first pending delivery
//!    of its wallet for its endpoint: a wallet's later events wait until the
//!    earlier one is delivered or given up.
//! 3. **Send** them at once, each a `POST` of the event with a
//!    `Credstack-Signature` header, and **record** each attempt's end in
//!    one write: delivered on a 2xx; otherwise tried again after
//!    `base · 2^(attempt-1)` (at most an hour, ±10%) until the retry window
//!    (a day by default) has passed since the delivery began.
//!
//! A process killed between sending and recording leaves the delivery
//! claimed; its lease runs out and it is sent again (at least once: a
//! receiver deduplicates by the event's id). Delivery instants are
//! wall-clock, so a simulated ledger clock does not hold retries back.

use crate::engine::{Outcome, Request};
use crate::error::Result;
use crate::ids::{self, Kind};
use crate::ledger::Ledger;
use crate::records::{Attempt, AttemptEnd, Delivery, DeliveryJob, EventRecord};
use futures_util::StreamExt;
use hmac::{KeyInit, Mac};
use rand::RngExt;
use sha2::Sha256;
use std::time::Duration;

/// Deliveries claimed (and sent at once) per round.
pub const CLAIM_MAX: usize = 64;
/// Events fanned out per write.
pub const DISPATCH_MAX: usize = 500;
/// The longest wait between two attempts.
pub const RETRY_DELAY_MAX: Duration = Duration::from_secs(3600);
/// How long the loop waits when it found nothing to do.
const IDLE: Duration = Duration::from_millis(200);

/// How often the loop lets go deliveries left waiting with nothing ahead
/// of them: on PostgreSQL a fan-out on one node can race the end of the
/// delivery ahead on another, which then found nothing to let go.
const RELEASE_EVERY: Duration = Duration::from_secs(60);

/// How deliveries are attempted (`serve --webhook-*`).
#[derive(Clone, Debug)]
pub struct Settings {
    /// How long an attempt may take, answer included.
    pub timeout: Duration,
    /// The wait after the first failed attempt; it doubles after each.
    pub retry_base: Duration,
    /// How long a delivery is retried, from when it was made (its event's
    /// fan-out) or redelivered by hand. A delivery that waited behind an
    /// earlier one of its wallet spent its wait in this window: after a
    /// receiver's outage longer than this, those behind are each tried
    /// once, and given up if the receiver still fails (redeliverable).
    pub retry_window: Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            timeout: Duration::from_secs(10),
            retry_base: Duration::from_secs(10),
            retry_window: Duration::from_secs(24 * 3600),
        }
    }
}

impl Settings {
    /// How long a claimed delivery is kept from others: past its timeout, so
    /// only a process that died mid-attempt lets it go.
    fn lease(&self) -> Duration {
        self.timeout + Duration::from_secs(5)
    }
}

/// A new signing secret: `whsec_` and 32 random bytes in hex.
pub fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("whsec_{}", hex::encode(bytes))
}

/// The `Credstack-Signature` header: `t=<unix seconds>,v1=<hex>`, where
/// `v1` is HMAC-SHA256 under the endpoint's secret of `<t>.<body>`. A
/// receiver recomputes it and refuses a `t` far from its own clock.
pub fn signature(secret: &str, timestamp: i64, body: &str) -> String {
    let mut mac =
        hmac::Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// The body delivered for an event: the event as `GET /v1/events/{id}`
/// shows it.
pub fn body(event: &EventRecord) -> String {
    serde_json::to_string(&crate::wire::EventWire::from(event)).expect("events serialize")
}

/// What follows a failed attempt: another after the backoff, or none once
/// the retry window has passed. `jitter` in -100..=100 moves the wait by
/// up to ±10%, so deliveries that failed together do not retry together.
pub fn after_failure(
    delivery: &Delivery,
    now: credstack_core::Instant,
    settings: &Settings,
    jitter: i64,
) -> AttemptEnd {
    let window = chrono::Duration::from_std(settings.retry_window).unwrap_or(chrono::Duration::MAX);
    if now.signed_duration_since(delivery.retry_from) >= window {
        return AttemptEnd::GiveUp;
    }
    // Attempts since its retries began: a redelivery starts again at the base.
    let doublings = delivery
        .attempts
        .saturating_sub(delivery.attempts_before_retry)
        .saturating_sub(1)
        .min(30);
    let base = u64::try_from(settings.retry_base.as_millis()).unwrap_or(u64::MAX);
    let max = u64::try_from(RETRY_DELAY_MAX.as_millis()).expect("an hour in ms");
    let wait = base.saturating_mul(1 << doublings).min(max);
    let wait = i64::try_from(wait).expect("at most an hour");
    let wait = wait + wait * jitter.clamp(-100, 100) / 1000;
    AttemptEnd::Retry(now + chrono::Duration::milliseconds(wait.max(1)))
}

/// Starts the delivery loop on the current runtime.
pub fn spawn(ledger: Ledger, settings: Settings) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(settings.timeout)
        .user_agent(concat!("credstack-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the webhook client builds");
    tokio::spawn(async move {
        let mut released_at = std::time::Instant::now();
        loop {
            if released_at.elapsed() >= RELEASE_EVERY {
                released_at = std::time::Instant::now();
                if let Err(error) = ledger.execute(Request::ReleaseWaitingDeliveries).await {
                    tracing::warn!(?error, "releasing waiting webhook deliveries failed");
                }
            }
            let worked = match round(&ledger, &client, &settings).await {
                Ok(worked) => worked,
                Err(error) => {
                    tracing::warn!(?error, "webhook delivery round failed; trying again");
                    false
                }
            };
            if !worked {
                tokio::time::sleep(IDLE).await;
            }
        }
    });
}

/// One round: fan out, claim, send, record. True if it did anything.
async fn round(ledger: &Ledger, client: &reqwest::Client, settings: &Settings) -> Result<bool> {
    let (events, deliveries) = ledger.read(|store| store.outbox_backlog()).await?;
    ledger.metrics().outbox(events, deliveries);
    let mut worked = false;
    if events > 0
        && let Outcome::Dispatched(count) = ledger
            .execute(Request::DispatchEvents {
                limit: DISPATCH_MAX,
            })
            .await?
    {
        worked |= count > 0;
    }
    // Claims go through the writer: ask a reader first whether one would
    // find anything (deliveries waiting on a retry, or behind one, are not due).
    if deliveries == 0 && !worked {
        return Ok(false);
    }
    let now = chrono::Utc::now();
    if !ledger.read(move |store| store.deliveries_due(now)).await? {
        return Ok(worked);
    }
    let lease = chrono::Duration::from_std(settings.lease()).expect("a lease fits");
    let Outcome::Claimed(jobs) = ledger
        .execute(Request::ClaimDeliveries {
            limit: CLAIM_MAX,
            lease,
        })
        .await?
    else {
        return Ok(worked);
    };
    if jobs.is_empty() {
        return Ok(worked);
    }
    let ends: Vec<(Attempt, AttemptEnd)> = futures_util::stream::iter(jobs)
        .map(|job| attempt(ledger, client, settings, job))
        .buffer_unordered(CLAIM_MAX)
        .collect()
        .await;
    ledger.execute(Request::FinishAttempts(ends)).await?;
    Ok(true)
}

/// Sends one claimed delivery and says how it ended.
async fn attempt(
    ledger: &Ledger,
    client: &reqwest::Client,
    settings: &Settings,
    job: DeliveryJob,
) -> (Attempt, AttemptEnd) {
    let body = body(&job.event);
    let started_at = chrono::Utc::now();
    let started = std::time::Instant::now();
    let sent = client
        .post(&job.url)
        .header("content-type", "application/json")
        .header(
            "credstack-signature",
            signature(&job.secret, started_at.timestamp(), &body),
        )
        .header("credstack-event-id", ids::format(Kind::Event, job.event.id))
        .header("credstack-event-type", job.event.kind.as_str())
        .header(
            "credstack-delivery-id",
            ids::format(Kind::WebhookDelivery, job.delivery.id),
        )
        .body(body)
        .send()
        .await;
    let took = started.elapsed();
    let (status_code, error) = match sent {
        Ok(response) if response.status().is_success() => (Some(response.status().as_u16()), None),
        Ok(response) => (
            Some(response.status().as_u16()),
            Some(format!("the endpoint answered {}", response.status())),
        ),
        Err(error) if error.is_timeout() => (
            None,
            Some(format!(
                "no answer within {} ms",
                settings.timeout.as_millis()
            )),
        ),
        Err(error) => (None, Some(describe(&error))),
    };
    let end = match error {
        None => AttemptEnd::Succeeded,
        Some(_) => {
            let jitter = rand::rng().random_range(-100..=100);
            after_failure(&job.delivery, chrono::Utc::now(), settings, jitter)
        }
    };
    let outcome = match end {
        AttemptEnd::Succeeded => "succeeded",
        AttemptEnd::Retry(_) => "failed",
        AttemptEnd::GiveUp => "given_up",
    };
    ledger.metrics().webhook_attempt(outcome, took);
    if let AttemptEnd::Succeeded = end {
        let lag = chrono::Utc::now().signed_duration_since(job.delivery.created_at);
        ledger
            .metrics()
            .webhook_delivered(lag.to_std().unwrap_or_default());
    }
    if let Some(error) = &error {
        tracing::info!(
            delivery = %ids::format(Kind::WebhookDelivery, job.delivery.id),
            attempt = job.delivery.attempts,
            outcome,
            error = %error,
            "webhook attempt failed"
        );
    }
    let attempt = Attempt {
        delivery_id: job.delivery.id,
        number: job.delivery.attempts,
        at: started_at,
        status_code,
        error,
        duration_ms: u32::try_from(took.as_millis()).unwrap_or(u32::MAX),
    };
    (attempt, end)
}

/// A failed request, with its causes (reqwest's own message is generic).
fn describe(error: &reqwest::Error) -> String {
    let mut text = String::from("request failed");
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{DeliveryStatus, EventType};
    use chrono::{DateTime, Utc};

    fn at(seconds: i64) -> credstack_core::Instant {
        DateTime::<Utc>::from_timestamp(seconds, 0).expect("in range")
    }

    fn delivery(attempts: u32) -> Delivery {
        Delivery {
            id: 1,
            endpoint_id: 2,
            event_id: 3,
            event_type: EventType::GrantCreated,
            wallet_id: 4,
            sequence: 1,
            status: DeliveryStatus::Pending,
            attempts,
            next_attempt_at: None,
            retry_from: at(0),
            attempts_before_retry: 0,
            created_at: at(0),
            last_attempt_at: None,
            last_status_code: None,
            last_error: None,
        }
    }

    #[test]
    fn retries_back_off_exponentially_for_at_least_a_day() {
        let settings = Settings::default();
        // Attempt k waits 10 s · 2^(k-1), at most an hour.
        assert_eq!(
            after_failure(&delivery(1), at(5), &settings, 0),
            AttemptEnd::Retry(at(15))
        );
        assert_eq!(
            after_failure(&delivery(3), at(100), &settings, 0),
            AttemptEnd::Retry(at(140))
        );
        assert_eq!(
            after_failure(&delivery(20), at(100), &settings, 0),
            AttemptEnd::Retry(at(3700))
        );
        // Redelivered by hand after 30 attempts: its backoff starts again.
        let redelivered = Delivery {
            attempts: 31,
            attempts_before_retry: 30,
            retry_from: at(100_000),
            ..delivery(31)
        };
        assert_eq!(
            after_failure(&redelivered, at(100_005), &settings, 0),
            AttemptEnd::Retry(at(100_015))
        );
        // Jitter moves a wait by at most a tenth.
        assert_eq!(
            after_failure(&delivery(1), at(5), &settings, 100),
            AttemptEnd::Retry(at(16))
        );
        // Simulate a receiver that never recovers: attempts go on until a
        // day has passed since the first, then stop.
        let mut failing = delivery(1);
        let mut now = at(0);
        loop {
            match after_failure(&failing, now, &settings, -100) {
                AttemptEnd::Retry(next) => {
                    assert!(next > now);
                    now = next;
                    failing.attempts += 1;
                }
                AttemptEnd::GiveUp => break,
                AttemptEnd::Succeeded => unreachable!(),
            }
        }
        assert!(now >= at(24 * 3600), "gave up at {now}");
        assert!(now < at(25 * 3600), "gave up at {now}");
        assert!(
            failing.attempts > 20 && failing.attempts < 40,
            "{} attempts",
            failing.attempts
        );
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_and_body() {
        // Computed independently:
        // `printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac whsec_test`.
        assert_eq!(
            signature("whsec_test", 1_700_000_000, r#"{"a":1}"#),
            "t=1700000000,v1=38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789"
        );
    }
}
