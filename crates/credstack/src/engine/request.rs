//! Commands and replies: what callers send the writer ([`Request`]) and what
//! it answers ([`Reply`], [`Outcome`]), with the idempotency key a request
//! may carry.
//!
//! Owns: the shapes of writes and of their results, and which requests
//! write ledger changes only ([`Request::ledger_only`]).
//! May not: touch a store, read a clock, or know a wire format (the API's
//! wire renders outcomes: [`Render`]).

use super::promotions::{
    BulkClaim, BulkClaimRequest, NewPromotion, PromotionEdit, PromotionGrant, PromotionRevoke,
    PromotionView, RunStep,
};
use crate::error::{Error, Result};
use crate::ids::Kind;
use crate::metrics::DebitOutcome;
use crate::records::*;
use credstack_core::{Instant, Period, Purpose, Summary, Wallet};
use sha2::{Digest, Sha256};

#[derive(Clone, Debug)]
pub struct NewGrant {
    pub wallet_id: u128,
    pub amount: String,
    pub purpose: Purpose,
    pub priority: Option<u8>,
    pub effective_at: Option<Instant>,
    pub expires_at: Option<Instant>,
    pub recurrence: Option<Period>,
    pub rollover_max: Option<String>,
    pub description: Option<String>,
    pub metadata: Metadata,
}

#[derive(Clone, Debug)]
pub struct NewDebit {
    pub wallet_id: u128,
    pub amount: String,
    pub description: Option<String>,
    pub metadata: Metadata,
}

/// An idempotency key and the fingerprint of the request it came with.
#[derive(Clone, Debug)]
pub struct Idempotency {
    pub key: String,
    pub fingerprint: [u8; 32],
}

impl Idempotency {
    pub fn new(key: String, request_parts: &[&[u8]]) -> Idempotency {
        let mut hasher = Sha256::new();
        for part in request_parts {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part);
        }
        Idempotency {
            key,
            fingerprint: hasher.finalize().into(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct BatchItem {
    pub debit: NewDebit,
    pub idempotency: Idempotency,
}

#[derive(Clone, Debug)]
pub enum Request {
    CreateCreditSystem {
        key: String,
        name: String,
        unit: String,
        scale: u8,
    },
    UpdateCreditSystem {
        id: u128,
        name: Option<String>,
        active: Option<bool>,
    },
    CreateCustomer {
        name: String,
        email: Option<String>,
        external_id: Option<String>,
        metadata: Metadata,
    },
    UpdateCustomer {
        id: u128,
        name: Option<String>,
        email: Option<Option<String>>,
        external_id: Option<Option<String>>,
        metadata: Option<Metadata>,
    },
    CreateWallet {
        customer_id: u128,
        credit_system_id: u128,
        overdraft_limit: Option<String>,
        low_balance_threshold: Option<String>,
    },
    /// Changes what is given; `Some(None)` clears the threshold.
    UpdateWallet {
        id: u128,
        overdraft_limit: Option<String>,
        low_balance_threshold: Option<Option<String>>,
    },
    AddGrant(NewGrant),
    VoidGrant {
        id: u128,
    },
    Debit(NewDebit),
    DebitBatch(Vec<BatchItem>),
    PlaceHold {
        wallet_id: u128,
        amount: String,
        expires_in_seconds: Option<i64>,
    },
    CaptureHold {
        id: u128,
        amount: String,
    },
    ReleaseHold {
        id: u128,
    },
    /// Brings wallets up to date with every event due by now (SPEC rule 11).
    Materialise {
        wallet_ids: Vec<u128>,
    },
    CreatePromotion(NewPromotion),
    UpdatePromotion {
        id: u128,
        edit: PromotionEdit,
    },
    DeletePromotion {
        id: u128,
    },
    GrantPromotion {
        id: u128,
        customer_ids: Vec<u128>,
        /// Set when the chunk is part of a call to all customers.
        run: Option<RunStep>,
    },
    RevokePromotion {
        id: u128,
        customer_ids: Vec<u128>,
        run: Option<RunStep>,
    },
    /// Starts a call to all customers of a campaign, unless one is running.
    ClaimBulkRun(BulkClaimRequest),
    /// Ends a call to all customers, keeping its response under the
    /// request's idempotency key in the same commit.
    FinishBulkRun {
        promotion_id: u128,
        run_id: u128,
        response: StoredResponse,
        /// The message of the error the call ended with, if any.
        error: Option<String>,
    },
    /// Lets another call take over a call to all customers that failed.
    ReleaseBulkRun {
        promotion_id: u128,
        run_id: u128,
    },
    CreateApiKey {
        name: String,
        scope: Scope,
        secret: String,
    },
    DeleteApiKey {
        id: u128,
    },
    /// Drops idempotency keys past their keeping time and expired console sessions.
    PurgeExpired,
    CreateSession(ConsoleSession),
    DeleteSession {
        token_hash: [u8; 32],
    },
    CreateWebhookEndpoint {
        url: String,
        description: Option<String>,
        event_types: Vec<String>,
        secret: String,
    },
    UpdateWebhookEndpoint {
        id: u128,
        url: Option<String>,
        description: Option<Option<String>>,
        event_types: Option<Vec<String>>,
        enabled: Option<bool>,
    },
    DeleteWebhookEndpoint {
        id: u128,
    },
    /// Gives up to `limit` events of the outbox a delivery for each enabled
    /// endpoint that wants them, and marks them dispatched.
    DispatchEvents {
        limit: usize,
    },
    /// Claims deliveries due now, for `lease` (see `Store::claim_deliveries`).
    ClaimDeliveries {
        limit: usize,
        lease: chrono::Duration,
    },
    /// Records how attempts ended.
    FinishAttempts(Vec<(Attempt, AttemptEnd)>),
    /// Sends a finished delivery again.
    Redeliver {
        id: u128,
    },
    /// Lets go deliveries left waiting with nothing ahead of them.
    ReleaseWaitingDeliveries,
}

impl Request {
    /// Whether the request writes only ledger changes ([`Change`]: entries,
    /// debits, keys, events, wallet and grant states, finished holds, a
    /// campaign's grants, assignments, mark and run): debits, bringing
    /// wallets up to date, and campaign grants, the hot paths. A batch of
    /// such requests may be journalled (`journaled.rs`); what they read back
    /// of earlier batches is in the sink's store.
    pub fn ledger_only(&self) -> bool {
        matches!(
            self,
            Request::Debit(_)
                | Request::DebitBatch(_)
                | Request::Materialise { .. }
                | Request::GrantPromotion { .. }
        )
    }
}

/// A wallet with its live state and summary, as of the request that returned it.
#[derive(Clone, Debug)]
pub struct WalletView {
    pub info: WalletInfo,
    pub wallet: Wallet,
    pub summary: Summary,
    pub at: Instant,
}

#[derive(Clone, Debug)]
pub enum Outcome {
    CreditSystem(CreditSystem),
    Customer(Customer),
    Wallet(Box<WalletView>),
    Grant(Box<GrantRecord>),
    Debit(DebitRecord),
    DebitBatch(Vec<Reply>),
    Hold(HoldRecord),
    ApiKey {
        key: ApiKey,
        secret: Option<String>,
    },
    Deleted {
        kind: Kind,
        id: u128,
    },
    Promotion(Box<PromotionView>),
    PromotionGrant(PromotionGrant),
    PromotionRevoke(PromotionRevoke),
    BulkClaim(BulkClaim),
    /// A response already rendered: what a long call that ran in several
    /// commits keeps under its idempotency key when it finishes.
    Rendered(StoredResponse),
    /// The signing secret is shown once, when the endpoint is created.
    WebhookEndpoint {
        endpoint: Box<WebhookEndpoint>,
        secret: Option<String>,
    },
    /// How many events were fanned out (or waiting deliveries let go).
    Dispatched(usize),
    Claimed(Vec<DeliveryJob>),
    Delivery(Box<Delivery>),
    Done,
}

/// What a request gets back: a fresh result, or the stored response of an
/// earlier request with the same idempotency key.
#[derive(Clone, Debug)]
pub enum Reply {
    Fresh(Result<Outcome>),
    Replayed(StoredResponse),
}

/// How `credstack_debits` counts a debit's reply (metrics knows no
/// replies).
impl From<&Reply> for DebitOutcome {
    fn from(reply: &Reply) -> DebitOutcome {
        match reply {
            Reply::Replayed(_) => DebitOutcome::Replayed,
            Reply::Fresh(Ok(_)) => DebitOutcome::Applied,
            Reply::Fresh(Err(Error::InsufficientBalance { .. })) => DebitOutcome::Refused,
            Reply::Fresh(Err(Error::Unavailable | Error::Contended)) => DebitOutcome::Failed,
            Reply::Fresh(Err(_)) => DebitOutcome::Invalid,
        }
    }
}

/// Renders a result the way the API answers it, to keep for replays. The
/// API's wire supplies it (`wire::render`), so the engine stays free of wire
/// formats.
pub type Render = fn(&Result<Outcome>) -> StoredResponse;

/// The wallets a request names directly, to lock before the batch runs.
/// Campaign grants and revokes lock theirs as they go, after the campaign
/// row (which serialises them anyway).
pub(super) fn named_wallets(request: &Request, out: &mut Vec<u128>) {
    match request {
        Request::UpdateWallet { id, .. } => out.push(*id),
        Request::AddGrant(new) => out.push(new.wallet_id),
        Request::Debit(new) => out.push(new.wallet_id),
        Request::DebitBatch(items) => out.extend(items.iter().map(|item| item.debit.wallet_id)),
        Request::PlaceHold { wallet_id, .. } => out.push(*wallet_id),
        Request::Materialise { wallet_ids } => out.extend(wallet_ids),
        _ => {}
    }
}
