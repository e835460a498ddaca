//! The service's records: what the store keeps around the core's wallet
//! state (names, metadata, sources, finished objects). Plain data, importing
//! nothing from the crate; the API's serializable copies are `wire`'s.

use credstack_core::{Allocation, Amount, EntryKind, Grant, HoldEnd, Instant, Reservation, Scale};
use std::collections::BTreeMap;

pub type Metadata = BTreeMap<String, String>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreditSystem {
    pub id: u128,
    pub key: String,
    pub name: String,
    pub unit: String,
    pub scale: Scale,
    pub active: bool,
    pub created_at: Instant,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Customer {
    pub id: u128,
    pub name: String,
    pub email: Option<String>,
    pub external_id: Option<String>,
    pub metadata: Metadata,
    pub created_at: Instant,
}

/// A wallet's identity and settings; its balances live in the core `Wallet`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalletInfo {
    pub id: u128,
    pub customer_id: u128,
    pub credit_system_id: u128,
    pub scale: Scale,
    pub created_at: Instant,
    /// `wallet.low_balance` is sent each time the balance falls below it.
    pub low_balance_threshold: Option<Amount>,
}

/// Where a grant came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// Added through the API by an operator or integration.
    Api,
    /// Handed out by a promotional credit campaign (SPEC rule 21).
    PromotionalCredit {
        promotional_credit_id: u128,
        assignment_id: u128,
    },
}

impl Source {
    /// Stored as `api` or `promotional_credit:<hex id>:<hex id>`.
    pub fn to_stored(&self) -> String {
        match self {
            Source::Api => "api".to_string(),
            Source::PromotionalCredit {
                promotional_credit_id,
                assignment_id,
            } => {
                format!("promotional_credit:{promotional_credit_id:032x}:{assignment_id:032x}")
            }
        }
    }

    pub fn from_stored(text: &str) -> Option<Source> {
        if text == "api" {
            return Some(Source::Api);
        }
        let mut parts = text.strip_prefix("promotional_credit:")?.split(':');
        let promotional_credit_id = u128::from_str_radix(parts.next()?, 16).ok()?;
        let assignment_id = u128::from_str_radix(parts.next()?, 16).ok()?;
        Some(Source::PromotionalCredit {
            promotional_credit_id,
            assignment_id,
        })
    }
}

/// A promotional credit campaign (SPEC rule 19).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PromotionalCredit {
    pub id: u128,
    pub name: String,
    pub description: Option<String>,
    pub credit_system_id: u128,
    pub scale: Scale,
    /// As given: `None` means it started at creation.
    pub starts_at: Option<Instant>,
    pub ends_at: Option<Instant>,
    pub policy: credstack_core::promotion::Policy,
    pub applied: bool,
    pub created_at: Instant,
}

impl PromotionalCredit {
    pub fn window(&self) -> credstack_core::promotion::Window {
        credstack_core::promotion::Window {
            starts_at: self.starts_at.unwrap_or(self.created_at),
            ends_at: self.ends_at,
        }
    }
}

/// One grant of a campaign to one customer (SPEC rules 21–24).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    pub id: u128,
    pub promotional_credit_id: u128,
    pub customer_id: u128,
    pub wallet_id: u128,
    pub grant_id: u128,
    pub granted_at: Instant,
    pub expires_at: Option<Instant>,
    pub revoked_at: Option<Instant>,
}

impl Assignment {
    /// Active until revoked or until its access period ends.
    pub fn is_active(&self, now: Instant) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|end| now < end)
    }
}

/// A campaign's customer: every customer ever granted, with where they stand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PromotionCustomer {
    pub customer: Customer,
    pub active_assignments: u64,
    pub last_granted_at: Instant,
    pub revoked_at: Option<Instant>,
    /// Whether the latest assignment ended by revocation (else by expiry).
    pub latest_revoked: bool,
}

impl PromotionCustomer {
    /// `granted`, `revoked` or `expired`.
    pub fn status(&self) -> &'static str {
        if self.active_assignments > 0 {
            "granted"
        } else if self.latest_revoked {
            "revoked"
        } else {
            "expired"
        }
    }
}

/// A grant with what the core does not need: its wallet, notes and source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantRecord {
    pub grant: Grant,
    pub wallet_id: u128,
    pub scale: Scale,
    pub description: Option<String>,
    pub metadata: Metadata,
    pub source: Source,
    pub created_at: Instant,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DebitRecord {
    pub id: u128,
    pub wallet_id: u128,
    pub scale: Scale,
    pub amount: Amount,
    pub allocations: Vec<Allocation>,
    pub balance_after: Amount,
    pub description: Option<String>,
    pub metadata: Metadata,
    /// The hold this debit captured, if any.
    pub hold_id: Option<u128>,
    pub created_at: Instant,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldStatus {
    Active,
    Captured,
    Released,
    Expired,
}

impl HoldStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldStatus::Active => "active",
            HoldStatus::Captured => "captured",
            HoldStatus::Released => "released",
            HoldStatus::Expired => "expired",
        }
    }

    pub fn parse(text: &str) -> Option<HoldStatus> {
        [
            HoldStatus::Active,
            HoldStatus::Captured,
            HoldStatus::Released,
            HoldStatus::Expired,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

impl From<HoldEnd> for HoldStatus {
    fn from(end: HoldEnd) -> HoldStatus {
        match end {
            HoldEnd::Captured => HoldStatus::Captured,
            HoldEnd::Released => HoldStatus::Released,
            HoldEnd::Expired => HoldStatus::Expired,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldRecord {
    pub id: u128,
    pub wallet_id: u128,
    pub scale: Scale,
    pub amount: Amount,
    pub reservations: Vec<Reservation>,
    pub status: HoldStatus,
    pub expires_at: Instant,
    pub debit_id: Option<u128>,
    pub ended_at: Option<Instant>,
    pub created_at: Instant,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryRecord {
    pub id: u128,
    pub wallet_id: u128,
    pub scale: Scale,
    pub sequence: u64,
    pub kind: EntryKind,
    pub amount: Amount,
    pub balance_after: Amount,
    pub occurred_at: Instant,
    pub grant_id: Option<u128>,
    /// The prefixed id of what caused the entry.
    pub reference: String,
    /// This entry's link in its wallet's hash chain: [`EntryRecord::chain`]
    /// of the previous entry's hash (zeros before the first) and this entry.
    pub hash: [u8; 32],
}

/// The hash before a wallet's first entry.
pub const CHAIN_START: [u8; 32] = [0; 32];

/// A wallet's last entry, as far as its next entry needs it: the hash that
/// entry chains from, and the instant it may not be dated before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainHead {
    pub hash: [u8; 32],
    /// `None` before the wallet's first entry.
    pub at: Option<Instant>,
}

impl ChainHead {
    /// The head of a wallet without entries.
    pub const START: ChainHead = ChainHead {
        hash: CHAIN_START,
        at: None,
    };
}

impl EntryRecord {
    /// SHA-256 of the previous entry's hash and every field of this one
    /// but `hash` (and `scale`, a property of the wallet), each encoded at a
    /// fixed width or length-prefixed, so no two different entries encode
    /// alike. Editing, deleting or inserting an entry breaks the chain from
    /// there on, which `credstack verify` reports.
    pub fn chain(&self, previous: &[u8; 32]) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        hasher.update(b"credstack entry v1");
        hasher.update(previous);
        hasher.update(self.id.to_be_bytes());
        hasher.update(self.wallet_id.to_be_bytes());
        hasher.update(self.sequence.to_be_bytes());
        let kind = self.kind.as_str().as_bytes();
        hasher.update((kind.len() as u64).to_be_bytes());
        hasher.update(kind);
        hasher.update(self.amount.atomic().to_be_bytes());
        hasher.update(self.balance_after.atomic().to_be_bytes());
        hasher.update(self.occurred_at.timestamp_micros().to_be_bytes());
        match self.grant_id {
            Some(id) => {
                hasher.update([1]);
                hasher.update(id.to_be_bytes());
            }
            None => hasher.update([0]),
        }
        hasher.update((self.reference.len() as u64).to_be_bytes());
        hasher.update(self.reference.as_bytes());
        hasher.finalize().into()
    }

    /// Appends this entry to its wallet's chain at `head`: dates it no
    /// earlier than the wallet's last entry, so a wallet's entries never go
    /// back in time even when the clock does (a restart after the system
    /// clock stepped back, or another node whose clock is behind), links it
    /// to that entry's hash, and moves `head` to it. History at an instant
    /// relies on exactly this order: the store finds an instant's entry by
    /// bisecting the sequence (its `last_sequence_at`, which points back
    /// here). Records are plain data and name nothing above them.
    pub fn append_to(&mut self, head: &mut ChainHead) {
        if let Some(at) = head.at {
            self.occurred_at = self.occurred_at.max(at);
        }
        self.hash = self.chain(&head.hash);
        *head = ChainHead {
            hash: self.hash,
            at: Some(self.occurred_at),
        };
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    Read,
    Usage,
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Usage => "usage",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Scope> {
        [Scope::Read, Scope::Usage, Scope::Admin]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKey {
    pub id: u128,
    pub name: String,
    pub scope: Scope,
    /// SHA-256 of the secret; the secret itself is never stored.
    pub secret_hash: [u8; 32],
    pub created_at: Instant,
}

/// The whole counts of a call to all customers so far.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BulkCounts {
    pub done: u64,
    pub skipped: u64,
    pub skipped_by_reason: std::collections::BTreeMap<String, u64>,
}

/// A call to all customers of a campaign while it runs (see `bulk_runs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BulkRun {
    pub promotional_credit_id: u128,
    pub run_id: u128,
    /// `grant` or `revoke`.
    pub action: String,
    pub idempotency_key: Option<String>,
    pub fingerprint: Option<[u8; 32]>,
    /// The last customer id done.
    pub cursor: Option<u128>,
    /// The counts so far, as JSON.
    pub progress: String,
    /// Wall-clock time after which another call may take the run over.
    pub lease_until: Instant,
    /// Customers the call expected to consider, when its caller knew.
    pub total: Option<u64>,
    /// When the call ended; an ended run is kept until the next call.
    pub finished_at: Option<Instant>,
    /// Why the call failed, if it did.
    pub error: Option<String>,
}

/// Where a keyed call to all customers stopped, kept when another call
/// took its campaign over (see `bulk_run_resumes`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BulkResume {
    pub promotional_credit_id: u128,
    pub idempotency_key: String,
    pub fingerprint: [u8; 32],
    pub action: String,
    pub cursor: Option<u128>,
    pub progress: String,
    pub saved_at: Instant,
}

/// A response kept for an idempotency key (SPEC rule 18).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub body: String,
}

/// What an idempotency key keeps to answer a replay: the response as it
/// was sent, or for a debit only its id. A debit row never changes, so
/// rendering it again gives the same bytes, and a keyed debit then writes
/// ~30 bytes for its key instead of a ~300-byte response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kept {
    Response(StoredResponse),
    Debit(u128),
}

/// What an idempotency key keeps, with the request's fingerprint and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeptResponse {
    pub key: String,
    pub fingerprint: [u8; 32],
    pub kept: Kept,
    pub at: Instant,
}

/// Rows the writer gathers while it applies a batch and writes together
/// (one statement on PostgreSQL), before the commit or before anything
/// else in the batch reaches the store.
#[derive(Clone, Debug, Default)]
pub struct NewRows {
    pub entries: Vec<EntryRecord>,
    pub debits: Vec<DebitRecord>,
    pub responses: Vec<KeptResponse>,
    /// The outbox: events, written in the commit of the change they tell.
    pub events: Vec<EventRecord>,
}

impl NewRows {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
            && self.debits.is_empty()
            && self.responses.is_empty()
            && self.events.is_empty()
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.debits.clear();
        self.responses.clear();
        self.events.clear();
    }
}

/// What happened to a wallet that other systems may subscribe to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    GrantCreated,
    GrantRenewed,
    GrantExpired,
    GrantVoided,
    WalletLowBalance,
    WalletDepleted,
    HoldExpired,
    PromotionalCreditGranted,
    PromotionalCreditRevoked,
}

impl EventType {
    pub const ALL: [EventType; 9] = [
        EventType::GrantCreated,
        EventType::GrantRenewed,
        EventType::GrantExpired,
        EventType::GrantVoided,
        EventType::WalletLowBalance,
        EventType::WalletDepleted,
        EventType::HoldExpired,
        EventType::PromotionalCreditGranted,
        EventType::PromotionalCreditRevoked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::GrantCreated => "grant.created",
            EventType::GrantRenewed => "grant.renewed",
            EventType::GrantExpired => "grant.expired",
            EventType::GrantVoided => "grant.voided",
            EventType::WalletLowBalance => "wallet.low_balance",
            EventType::WalletDepleted => "wallet.depleted",
            EventType::HoldExpired => "hold.expired",
            EventType::PromotionalCreditGranted => "promotional_credit.granted",
            EventType::PromotionalCreditRevoked => "promotional_credit.revoked",
        }
    }

    pub fn parse(text: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == text)
    }
}

/// One event of the outbox. `sequence` numbers a wallet's events from 1
/// without gaps, in the order they happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRecord {
    pub id: u128,
    pub wallet_id: u128,
    pub sequence: u64,
    pub kind: EventType,
    pub occurred_at: Instant,
    /// The event's `data` object as JSON text, as delivered.
    pub data: String,
}

/// Where events are delivered. The secret signs each delivery, so it is
/// kept as it is (it cannot be a hash); it is shown once, when created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookEndpoint {
    pub id: u128,
    pub url: String,
    pub description: Option<String>,
    /// Event type names, or `*` for every type.
    pub event_types: Vec<String>,
    pub secret: String,
    pub enabled: bool,
    pub created_at: Instant,
}

impl WebhookEndpoint {
    pub fn wants(&self, kind: EventType) -> bool {
        self.event_types
            .iter()
            .any(|t| t == "*" || t == kind.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// Not delivered yet: waiting for its turn, its next attempt, or an
    /// attempt in flight.
    Pending,
    Succeeded,
    /// Given up: every attempt failed for the whole retry window.
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<DeliveryStatus> {
        [
            DeliveryStatus::Pending,
            DeliveryStatus::Succeeded,
            DeliveryStatus::Failed,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// One event on its way to one endpoint. Its instants are wall-clock
/// times (a simulated ledger clock does not move retries).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub id: u128,
    pub endpoint_id: u128,
    pub event_id: u128,
    pub event_type: EventType,
    pub wallet_id: u128,
    pub sequence: u64,
    pub status: DeliveryStatus,
    pub attempts: u32,
    /// While pending: when it may be attempted next (or when the lease of
    /// an attempt in flight ends).
    pub next_attempt_at: Option<Instant>,
    /// When its retries began: created, or redelivered by hand.
    pub retry_from: Instant,
    /// How many attempts were made before `retry_from` (0, or as many as
    /// when it was redelivered): its backoff starts again from there.
    pub attempts_before_retry: u32,
    pub created_at: Instant,
    pub last_attempt_at: Option<Instant>,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
}

/// One attempt of a delivery, for its log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    pub delivery_id: u128,
    pub number: u32,
    pub at: Instant,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: u32,
}

/// A claimed delivery with what sending it needs.
#[derive(Clone, Debug)]
pub struct DeliveryJob {
    pub delivery: Delivery,
    pub url: String,
    pub secret: String,
    pub event: EventRecord,
}

/// How an attempt ended, for its delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttemptEnd {
    Succeeded,
    /// Failed; tried again at this instant.
    Retry(Instant),
    /// Failed, and the retry window is over.
    GiveUp,
}

/// A list page: items newest first (or in the order asked), and whether more follow.
#[derive(Clone, Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub has_more: bool,
}

/// A signed-in operator's console session. Expiry uses the wall clock, not
/// the ledger clock: a simulated clock moved months ahead must not sign
/// operators out, nor keep a session alive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsoleSession {
    pub token_hash: [u8; 32],
    pub csrf_token: String,
    pub api_key_id: u128,
    pub created_at: Instant,
    pub expires_at: Instant,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};

    fn entry(sequence: u64, seconds: i64) -> EntryRecord {
        EntryRecord {
            id: sequence as u128,
            wallet_id: 7,
            scale: Scale::new(0).expect("valid scale"),
            sequence,
            kind: EntryKind::Debit,
            amount: Amount::from_atomic(-1),
            balance_after: Amount::from_atomic(-(sequence as i64)),
            occurred_at: DateTime::<Utc>::from_timestamp(seconds, 0).expect("in range"),
            grant_id: None,
            reference: "deb_1".into(),
            hash: CHAIN_START,
        }
    }

    #[test]
    fn an_entry_follows_its_wallet_in_time_and_in_the_chain() {
        let mut head = ChainHead::START;
        let mut first = entry(1, 100);
        first.append_to(&mut head);
        assert_eq!(first.hash, first.chain(&CHAIN_START));
        assert_eq!(
            head,
            ChainHead {
                hash: first.hash,
                at: Some(first.occurred_at)
            }
        );
        // The clock went back 40 s (a restart, another node): the entry is
        // dated at the wallet's last instant, and hashed as dated.
        let mut second = entry(2, 60);
        second.append_to(&mut head);
        assert_eq!(second.occurred_at, first.occurred_at);
        assert_eq!(second.hash, second.chain(&first.hash));
        // A later clock dates it as it is.
        let mut third = entry(3, 130);
        third.append_to(&mut head);
        assert_eq!(third.occurred_at.timestamp(), 130);
        assert_eq!(head.at, Some(third.occurred_at));
    }
}

/// What a ledger change writes: rows appended and states moved. A batch
/// whose requests write nothing else (`engine::Request::ledger_only`) may
/// be journalled; anything else (customers, keys, endpoints…) is written
/// through [`Sink::store`] in a batch the sink runs directly.
#[derive(Clone, Debug)]
pub enum Change {
    Entry(EntryRecord),
    Debit(DebitRecord),
    Key(KeptResponse),
    Event(EventRecord),
    /// A wallet's balances and next event after the batch (its `version`
    /// moves by one), with its grants the batch changed: written together
    /// when the batch ends.
    WalletState(WalletInfo, credstack_core::Wallet, Vec<Grant>),
    /// A grant's state now: one that finished, and so left its wallet's
    /// live grants.
    GrantState(Grant),
    /// A hold that ended other than by capture (a capture writes its own).
    HoldFinished {
        id: u128,
        status: HoldStatus,
        debit_id: Option<u128>,
        at: Instant,
    },
    /// A new grant's row.
    Grant(GrantRecord),
    /// A campaign assignment, new or revoked.
    Assignment(Assignment),
    /// A campaign's row.
    Promotion(PromotionalCredit),
    /// A call to all customers' progress.
    BulkRun(BulkRun),
}
