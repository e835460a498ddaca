//! What `/v1/metrics` reports, in the Prometheus text format: debits by
//! outcome, HTTP requests and their latency by route, the writer's commits
//! (requests per commit, time per commit), the embedded journal's lag and the NATS usage
//! consumer's messages and lag. One registry per
//! `Ledger`, so servers in one process (the tests) count apart.
//!
//! Imports nothing from the crate: whoever counts says what happened in
//! this module's terms (a [`DebitOutcome`], a status, a duration), so the
//! writer, the HTTP layer and the usage consumer all import metrics and
//! metrics none of them.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `applied`, `replayed` (an idempotency key answered it), `refused`
    /// (402), `invalid` (another 4xx) or `failed` (503).
    pub outcome: &'static str,
}

/// What became of one debit (a single debit, a batch item or a hold
/// capture), as `credstack_debits` counts it. The writer works it out from
/// its reply (`From<&engine::Reply>`, in `engine/request.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DebitOutcome {
    /// Applied now.
    Applied,
    /// Answered from its idempotency key.
    Replayed,
    /// Refused for want of balance (402).
    Refused,
    /// Refused otherwise (another 4xx).
    Invalid,
    /// Not written: the store failed or stayed contended (503).
    Failed,
}

impl DebitOutcome {
    /// The `outcome` label.
    pub fn as_str(self) -> &'static str {
        match self {
            DebitOutcome::Applied => "applied",
            DebitOutcome::Replayed => "replayed",
            DebitOutcome::Refused => "refused",
            DebitOutcome::Invalid => "invalid",
            DebitOutcome::Failed => "failed",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    /// The matched route (`/v1/wallets/{id}/debits`), never the raw path,
    /// so ids do not multiply the series.
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    pub route: String,
}

fn latency_histogram() -> Histogram {
    // 100 µs to ~6.5 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

pub struct Metrics {
    registry: Registry,
    debits: Family<OutcomeLabels, Counter>,
    commit_requests: Histogram,
    commit_seconds: Histogram,
    http_requests: Family<RequestLabels, Counter>,
    http_seconds: Family<RouteLabels, Histogram, fn() -> Histogram>,
    journal_unmerged: Gauge,
    usage_messages: Family<OutcomeLabels, Counter>,
    usage_pending: Gauge,
    outbox_pending: Gauge,
    webhook_pending: Gauge,
    webhook_attempts: Family<OutcomeLabels, Counter>,
    webhook_seconds: Histogram,
    webhook_lag: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("credstack");
        let debits = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "debits",
            "Debits (single, batch items and hold captures) by outcome",
            debits.clone(),
        );
        let commit_requests = Histogram::new(exponential_buckets(1.0, 2.0, 13));
        registry.register(
            "commit_requests",
            "Requests applied per writer commit (one durable write each)",
            commit_requests.clone(),
        );
        let commit_seconds = latency_histogram();
        registry.register(
            "commit_duration_seconds",
            "Time from a writer batch's start to its durable commit",
            commit_seconds.clone(),
        );
        let http_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by method, route and status",
            http_requests.clone(),
        );
        let http_seconds =
            Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by method and route, until the response is ready",
            http_seconds.clone(),
        );
        let journal_unmerged = Gauge::default();
        registry.register(
            "journal_unmerged_batches",
            "Debit batches committed to the embedded store's journal and not yet merged \
             into its tables (0 on PostgreSQL)",
            journal_unmerged.clone(),
        );
        let usage_messages = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "usage_messages",
            "NATS usage messages handled, by outcome: debited (or replayed), \
             dead_lettered (refused, published with the reason) or retried (the store \
             could not take it; delivered again)",
            usage_messages.clone(),
        );
        let usage_pending = Gauge::default();
        registry.register(
            "usage_pending_messages",
            "NATS usage messages in the stream not yet acknowledged by this consumer \
             (its lag; refreshed every 5 s, 0 without --nats-url)",
            usage_pending.clone(),
        );
        let outbox_pending = Gauge::default();
        registry.register(
            "outbox_pending_events",
            "Events committed to the outbox and not yet given their webhook deliveries \
             (the outbox's lag; refreshed by the delivery loop)",
            outbox_pending.clone(),
        );
        let webhook_pending = Gauge::default();
        registry.register(
            "webhook_pending_deliveries",
            "Webhook deliveries not yet delivered or given up",
            webhook_pending.clone(),
        );
        let webhook_attempts = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "webhook_attempts",
            "Webhook delivery attempts by outcome: succeeded (a 2xx), failed (tried \
             again later) or given_up (failed at the end of its retry window)",
            webhook_attempts.clone(),
        );
        let webhook_seconds = latency_histogram();
        registry.register(
            "webhook_attempt_duration_seconds",
            "Time from sending a webhook to its answer (or its failure)",
            webhook_seconds.clone(),
        );
        // 10 ms to ~11.6 h: a delivery may wait out a day of retries.
        let webhook_lag = Histogram::new(exponential_buckets(0.01, 4.0, 12));
        registry.register(
            "webhook_delivery_lag_seconds",
            "Time from a webhook delivery's making (its event fanned out, within \
             moments of its commit) to its successful attempt, retries and waiting \
             behind its wallet's earlier events included",
            webhook_lag.clone(),
        );
        Metrics {
            registry,
            outbox_pending,
            webhook_pending,
            webhook_attempts,
            webhook_seconds,
            webhook_lag,
            journal_unmerged,
            usage_messages,
            usage_pending,
            debits,
            commit_requests,
            commit_seconds,
            http_requests,
            http_seconds,
        }
    }
}

impl Metrics {
    /// Every metric in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }

    /// How many journalled batches wait for the merger, read as the
    /// metrics are rendered.
    pub fn journal_unmerged(&self, batches: u64) {
        self.journal_unmerged
            .set(i64::try_from(batches).unwrap_or(i64::MAX));
    }

    /// One NATS usage message handled: `debited`, `dead_lettered` or `retried`.
    pub fn usage_message(&self, outcome: &'static str) {
        self.usage_messages
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// The NATS usage consumer's lag, in messages.
    pub fn usage_pending(&self, messages: u64) {
        self.usage_pending
            .set(i64::try_from(messages).unwrap_or(i64::MAX));
    }

    /// Events waiting for their deliveries, and deliveries pending.
    pub fn outbox(&self, events: u64, deliveries: u64) {
        self.outbox_pending
            .set(i64::try_from(events).unwrap_or(i64::MAX));
        self.webhook_pending
            .set(i64::try_from(deliveries).unwrap_or(i64::MAX));
    }

    pub fn webhook_attempt(&self, outcome: &'static str, took: Duration) {
        self.webhook_attempts
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
        self.webhook_seconds.observe(took.as_secs_f64());
    }

    /// A delivery that succeeded `lag` after it was made.
    pub fn webhook_delivered(&self, lag: Duration) {
        self.webhook_lag.observe(lag.as_secs_f64());
    }

    /// One writer commit of `requests` requests that took `took`.
    pub fn commit(&self, requests: usize, took: Duration) {
        self.commit_requests.observe(requests as f64);
        self.commit_seconds.observe(took.as_secs_f64());
    }

    /// A debit's answer, counted by outcome (the writer passes its reply,
    /// which converts).
    pub fn debit(&self, outcome: impl Into<DebitOutcome>) {
        let outcome = outcome.into().as_str();
        self.debits.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// One HTTP request answered with `status` after `took`.
    pub fn request(&self, method: &str, route: &str, status: u16, took: Duration) {
        let (method, route) = (method.to_string(), route.to_string());
        self.http_requests
            .get_or_create(&RequestLabels {
                method: method.clone(),
                route: route.clone(),
                status,
            })
            .inc();
        self.http_seconds
            .get_or_create(&RouteLabels { method, route })
            .observe(took.as_secs_f64());
    }
}
