//! Usage from NATS JetStream (`serve --nats-url`, issue 8): a durable pull
//! consumer on a stream of usage messages, each debited exactly once.
//!
//! A message is JSON: `{"wallet_id": "wal_…"}` or `{"customer_external_id",
//! "credit_system_key"}` naming the wallet, with `amount` (a decimal
//! string), `idempotency_key` (1-255 visible ASCII) and an optional
//! `description`. Its debit goes through the ledger like an HTTP debit,
//! with the same idempotency fingerprint, so a redelivered message (or the
//! same usage sent over HTTP) replays instead of debiting twice.
//!
//! What happens to a message:
//! - debited, or replayed: acknowledged once the ledger has answered,
//!   which it does only after the debit is durable;
//! - refused (insufficient balance, unknown wallet, invalid, a key reused
//!   for other usage): published to the dead-letter subject with the
//!   reason, deduplicated by JetStream on the message's stream sequence,
//!   then acknowledged;
//! - the store unavailable: not acknowledged (`Nak` with a delay), so
//!   JetStream delivers it again.
//!
//! Nothing is acknowledged before its outcome is durable, so a crash at any
//! moment leaves each message either done or delivered again, and a
//! redelivery is harmless.

use crate::engine::{NewDebit, Reply, Request};
use crate::ids::{self, Kind};
use crate::ledger::Ledger;
use crate::wire::{batch_result, debit_idempotency, valid_idempotency_key};
use async_nats::jetstream::{self, AckKind, consumer, stream};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;
use std::time::Duration;

/// Where usage comes from and refusals go.
#[derive(Clone, Debug)]
pub struct UsageConfig {
    pub url: String,
    /// The stream, created with `subject` when missing.
    pub stream: String,
    pub subject: String,
    /// The durable consumer's name: the stream remembers its progress.
    pub consumer: String,
    /// Refused messages go here, into `dead_letter_stream` (created when
    /// missing) so they are kept.
    pub dead_letter_subject: String,
    pub dead_letter_stream: String,
}

/// Messages being debited at once: enough for the writer to commit many
/// in one batch.
const IN_FLIGHT_MAX: usize = 256;

/// How long JetStream waits for an acknowledgement before it delivers a
/// message again.
const ACK_WAIT: Duration = Duration::from_secs(10);

/// How often the consumer's lag is read for the metrics.
const LAG_REFRESH: Duration = Duration::from_secs(5);

/// How long a message the store could not take waits before it is
/// delivered again.
const RETRY_DELAY: Duration = Duration::from_secs(2);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsageMessage {
    wallet_id: Option<String>,
    customer_external_id: Option<String>,
    credit_system_key: Option<String>,
    amount: String,
    idempotency_key: String,
    description: Option<String>,
}

/// Connects, makes the streams and the consumer if missing, and returns the
/// consumer loop to run.
pub async fn start(
    config: UsageConfig,
    ledger: Ledger,
) -> Result<impl std::future::Future<Output = ()>, String> {
    let client = async_nats::connect(&config.url)
        .await
        .map_err(|e| format!("cannot connect to NATS at {}: {e}", config.url))?;
    let context = jetstream::new(client);
    let failed = |what: &str, e: &dyn std::fmt::Display| format!("NATS {what}: {e}");
    let stream = |name: &str, subject: &str| {
        context.get_or_create_stream(stream::Config {
            name: name.to_string(),
            subjects: vec![subject.to_string()],
            ..Default::default()
        })
    };
    let usage = stream(&config.stream, &config.subject)
        .await
        .map_err(|e| failed("usage stream", &e))?;
    stream(&config.dead_letter_stream, &config.dead_letter_subject)
        .await
        .map_err(|e| failed("dead-letter stream", &e))?;
    let consumer: consumer::PullConsumer = usage
        .get_or_create_consumer(
            &config.consumer,
            consumer::pull::Config {
                durable_name: Some(config.consumer.clone()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: ACK_WAIT,
                max_ack_pending: IN_FLIGHT_MAX as i64 * 4,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| failed("consumer", &e))?;
    tracing::info!(
        url = %config.url,
        stream = %config.stream,
        subject = %config.subject,
        dead_letters = %config.dead_letter_subject,
        "consuming usage from NATS JetStream"
    );
    // One future: whoever drops it stops the lag reads too.
    let lag = watch_lag(consumer.clone(), ledger.clone());
    Ok(async move {
        tokio::join!(consume(consumer, context, config, ledger), lag);
    })
}

/// Keeps the consumer's lag in the metrics (`usage_pending_messages`).
async fn watch_lag(mut consumer: consumer::PullConsumer, ledger: Ledger) {
    loop {
        match consumer.info().await {
            Ok(info) => ledger
                .metrics()
                .usage_pending(info.num_pending + info.num_ack_pending as u64),
            Err(error) => tracing::debug!(%error, "NATS usage consumer: no consumer info"),
        }
        tokio::time::sleep(LAG_REFRESH).await;
    }
}

async fn consume(
    consumer: consumer::PullConsumer,
    context: jetstream::Context,
    config: UsageConfig,
    ledger: Ledger,
) {
    loop {
        let messages = match consumer.messages().await {
            Ok(messages) => messages,
            Err(error) => {
                tracing::warn!(%error, "NATS usage consumer: cannot pull; trying again");
                tokio::time::sleep(RETRY_DELAY).await;
                continue;
            }
        };
        messages
            .for_each_concurrent(IN_FLIGHT_MAX, |message| {
                let (context, config, ledger) = (&context, &config, &ledger);
                async move {
                    match message {
                        Ok(message) => handle(message, context, config, ledger).await,
                        Err(error) => {
                            tracing::warn!(%error, "NATS usage consumer: a pull failed");
                        }
                    }
                }
            })
            .await;
        tokio::time::sleep(RETRY_DELAY).await;
    }
}

/// What became of one message.
enum Outcome {
    Done,
    Refused {
        status: u16,
        error: serde_json::Value,
    },
    Retry,
}

async fn handle(
    message: jetstream::Message,
    context: &jetstream::Context,
    config: &UsageConfig,
    ledger: &Ledger,
) {
    let outcome = debit(&message.payload, ledger).await;
    let metrics = ledger.metrics();
    let retry = || {
        metrics.usage_message("retried");
        message.ack_with(AckKind::Nak(Some(RETRY_DELAY)))
    };
    let acked = match outcome {
        Outcome::Done => {
            metrics.usage_message("debited");
            message.double_ack().await
        }
        Outcome::Retry => retry().await,
        Outcome::Refused { status, error } => {
            match dead_letter(&message, status, error, context, config).await {
                Ok(()) => {
                    metrics.usage_message("dead_lettered");
                    message.double_ack().await
                }
                Err(error) => {
                    tracing::warn!(%error, "NATS usage consumer: cannot publish a dead letter");
                    retry().await
                }
            }
        }
    };
    if let Err(error) = acked {
        // Delivered again after the ack wait; the debit replays.
        tracing::warn!(%error, "NATS usage consumer: an acknowledgement failed");
    }
}

/// Debits one message's usage.
async fn debit(payload: &[u8], ledger: &Ledger) -> Outcome {
    let invalid = |param: &str, message: String| Outcome::Refused {
        status: 400,
        error: json!({"type": "invalid_request_error", "code": "invalid", "message": message, "param": param}),
    };
    let usage: UsageMessage = match serde_json::from_slice(payload) {
        Ok(usage) => usage,
        Err(e) => return invalid("body", format!("not a usage message: {e}")),
    };
    if !valid_idempotency_key(&usage.idempotency_key) {
        return invalid(
            "idempotency_key",
            "idempotency_key must be 1 to 255 visible ASCII characters".into(),
        );
    }
    let wallet_id = match wallet(&usage, ledger).await {
        Ok(id) => id,
        Err(outcome) => return outcome,
    };
    let debit = NewDebit {
        wallet_id,
        amount: usage.amount,
        description: usage.description,
        metadata: Default::default(),
    };
    let idempotency = debit_idempotency(usage.idempotency_key, &debit);
    let reply = ledger
        .submit(Request::Debit(debit), Some(idempotency))
        .await;
    outcome_of(&reply)
}

fn outcome_of(reply: &Reply) -> Outcome {
    // The common case needs no rendering: only refusals carry their error.
    if matches!(reply, Reply::Fresh(Ok(_))) {
        return Outcome::Done;
    }
    let result = batch_result(reply);
    match result.status {
        200 => Outcome::Done,
        503 => Outcome::Retry,
        status => Outcome::Refused {
            status,
            error: result.error.unwrap_or(serde_json::Value::Null),
        },
    }
}

/// The wallet a message names: by id, or by its customer's external id and
/// its credit system's key.
async fn wallet(usage: &UsageMessage, ledger: &Ledger) -> Result<u128, Outcome> {
    let not_found = |message: &str| Outcome::Refused {
        status: 404,
        error: json!({"type": "invalid_request_error", "code": "not_found", "message": message}),
    };
    let invalid = |message: &str| Outcome::Refused {
        status: 400,
        error: json!({"type": "invalid_request_error", "code": "invalid", "message": message, "param": "wallet_id"}),
    };
    match (
        &usage.wallet_id,
        &usage.customer_external_id,
        &usage.credit_system_key,
    ) {
        (Some(id), None, None) => {
            ids::parse(Kind::Wallet, id).ok_or_else(|| invalid("wallet_id is not a wallet id"))
        }
        (None, Some(customer), Some(system)) => {
            let (customer, system) = (customer.clone(), system.clone());
            let found = ledger
                .read(move |c| {
                    let Some(customer) = c.customer_by_external_id(&customer)? else {
                        return Ok(None);
                    };
                    let Some(system) = c.credit_system_by_key(&system)? else {
                        return Ok(None);
                    };
                    c.wallet_by_owner(customer.id, system.id)
                })
                .await;
            match found {
                Ok(Some(wallet)) => Ok(wallet.id),
                Ok(None) => Err(not_found(
                    "no wallet for this customer_external_id and credit_system_key",
                )),
                Err(_) => Err(Outcome::Retry),
            }
        }
        _ => Err(invalid(
            "name the wallet by wallet_id, or by customer_external_id and credit_system_key",
        )),
    }
}

/// Publishes a refused message, with why, to the dead-letter subject and
/// waits for JetStream to have stored it. JetStream drops a second copy
/// (the message delivered again after a crash) by its id.
async fn dead_letter(
    message: &jetstream::Message,
    status: u16,
    error: serde_json::Value,
    context: &jetstream::Context,
    config: &UsageConfig,
) -> Result<(), String> {
    let sequence = message
        .info()
        .map(|info| info.stream_sequence)
        .map_err(|e| e.to_string())?;
    let body = json!({
        "status": status,
        "error": error,
        "stream": config.stream,
        "stream_sequence": sequence,
        "message": String::from_utf8_lossy(&message.payload),
    });
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(
        "Nats-Msg-Id",
        format!("{}-{sequence}", config.stream).as_str(),
    );
    context
        .publish_with_headers(
            config.dead_letter_subject.clone(),
            headers,
            body.to_string().into(),
        )
        .await
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}
