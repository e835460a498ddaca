//! The engine: every write goes through it. Callers send a [`Request`]
//! through an [`Engine`] handle to the one writer thread (`writer.rs`),
//! which batches requests, applies them to its in-memory wallet states and
//! hands what they write to a [`Sink`](sink::Sink): the store's own
//! transaction ([`sink::Direct`]) or the embedded store's journal
//! ([`journaled::Journalled`]). Only once the batch is durable does a
//! caller hear back.
//!
//! The files, each opening with what it owns and may not do:
//! `request.rs` commands and replies; `writer.rs` the writer loop, batching,
//! idempotency and the wallet cache; `wallets.rs` wallet operations;
//! `admin.rs` administrative operations; `promotions.rs` campaigns;
//! `outbox.rs` events and deliveries; `validate.rs` what callers send;
//! `sink.rs` and `journaled.rs` where a batch's writes go.
//!
//! May not: know HTTP or JSON (responses are rendered by [`Render`], which
//! `wire::render` supplies), read the clock but through [`Clock`], or
//! import from a module that imports it.

mod admin;
pub mod journaled;
mod outbox;
mod promotions;
mod request;
pub mod sink;
pub mod validate;
mod wallets;
mod writer;

use crate::clock::Clock;
use crate::error::Error;
use crate::ids::Generator;
use crate::metrics::Metrics;
use sink::Sink;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use writer::Writer;

pub use request::{
    BatchItem, Idempotency, NewDebit, NewGrant, Outcome, Render, Reply, Request, WalletView,
};
pub use validate::{has_control_characters, hash_secret};
pub use writer::kept_response;

/// Most requests committed together.
pub const BATCH_MAX: usize = 4096;
/// Most requests waiting for the writer; senders wait when it is full.
pub const QUEUE_MAX: usize = 65_536;
/// Most items in one batch debit request.
pub const DEBIT_BATCH_MAX: usize = 1000;
/// Idempotency keys are kept at least this long (SPEC rule 18 asks 24 hours).
pub const IDEMPOTENCY_KEEP_HOURS: i64 = 48;
/// Most wallet states the writer keeps in memory. Past it, a tenth of them
/// is dropped after a commit; they reload from disk when next touched.
pub const WALLET_CACHE_MAX: usize = 1_000_000;

pub use promotions::{
    BulkClaim, BulkClaimRequest, NewPromotion, PROMOTION_CUSTOMERS_MAX, PromotionEdit,
    PromotionGrant, PromotionRevoke, PromotionView, RunEnd, RunStep,
};

struct Envelope {
    request: Request,
    idempotency: Option<Idempotency>,
    reply: oneshot::Sender<Reply>,
}

/// The handle callers use to submit writes.
#[derive(Clone)]
pub struct Engine {
    sender: mpsc::Sender<Envelope>,
}

impl Engine {
    /// Starts the writer thread, writing every batch to `sink`.
    pub fn start(
        sink: Box<dyn Sink>,
        clock: Arc<Clock>,
        ids: Arc<Generator>,
        render: Render,
        metrics: Arc<Metrics>,
    ) -> (Engine, std::thread::JoinHandle<()>) {
        let (sender, receiver) = mpsc::channel(QUEUE_MAX);
        let writer = Writer {
            sink,
            clock,
            ids,
            render,
            metrics,
            wallets: HashMap::new(),
            locked: HashMap::new(),
            touched: HashMap::new(),
            known: HashMap::new(),
        };
        let handle = std::thread::Builder::new()
            .name("credstack-writer".into())
            .spawn(move || {
                // A panic here is a broken invariant: the batch in flight was
                // not committed, and carrying on could write a corrupt
                // balance. Stop the whole process loudly; a restart resumes
                // from what is durable.
                let run = std::panic::AssertUnwindSafe(move || writer.run(receiver));
                if std::panic::catch_unwind(run).is_err() {
                    tracing::error!(
                        "the writer panicked: aborting so nothing corrupt is committed"
                    );
                    std::process::abort();
                }
            })
            .expect("spawn writer thread");
        (Engine { sender }, handle)
    }

    pub async fn submit(&self, request: Request, idempotency: Option<Idempotency>) -> Reply {
        let (reply, answer) = oneshot::channel();
        let envelope = Envelope {
            request,
            idempotency,
            reply,
        };
        if self.sender.send(envelope).await.is_err() {
            return Reply::Fresh(Err(Error::Unavailable));
        }
        answer
            .await
            .unwrap_or(Reply::Fresh(Err(Error::Unavailable)))
    }
}

pub use sink::Connect;
