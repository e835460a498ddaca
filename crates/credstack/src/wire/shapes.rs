//! Wire types: the JSON the API reads and writes. Only this module derives
//! `Serialize`/`Deserialize` for the API; what it serializes is a
//! compatibility promise (SPEC §3), so field names here never change.
//!
//! Why this file is past ~800 lines: one serializable copy per domain type
//! the API shows, each with its schema annotations; they are the wire
//! promise, read best side by side, and share their conversions.

use crate::engine::WalletView;
use crate::ids::{self, Kind};
use crate::records::*;
use chrono::SecondsFormat;
use credstack_core::{Allocation, Amount, Grant, Instant, Reservation, Scale};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

pub fn time(at: Instant) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn opt_time(at: Option<Instant>) -> Option<String> {
    at.map(time)
}

fn money(amount: Amount, scale: Scale) -> String {
    amount.format(scale)
}

/// Distinguishes an absent field (`None`) from an explicit `null` (`Some(None)`).
pub fn double_option<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

// ---- lists and errors ---------------------------------------------------------

#[derive(Serialize, ToSchema)]
pub struct List<T: ToSchema> {
    /// Always `list`.
    pub object: &'static str,
    pub data: Vec<T>,
    pub has_more: bool,
}

impl<T: ToSchema> List<T> {
    pub fn new(data: Vec<T>, has_more: bool) -> List<T> {
        List {
            object: "list",
            data,
            has_more,
        }
    }
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// `invalid_request_error`, `authentication_error`, `permission_error`,
    /// `balance_error` or `api_error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A stable snake_case code such as `insufficient_balance`.
    pub code: String,
    pub message: String,
    /// The request field at fault, where there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
}

// ---- credit systems -----------------------------------------------------------

#[derive(Serialize, ToSchema)]
pub struct CreditSystemWire {
    pub id: String,
    /// Always `credit_system`.
    pub object: &'static str,
    pub key: String,
    pub name: String,
    pub unit: String,
    pub scale: u8,
    /// `active` or `inactive`.
    pub status: &'static str,
    pub created_at: String,
}

impl From<&CreditSystem> for CreditSystemWire {
    fn from(cs: &CreditSystem) -> Self {
        CreditSystemWire {
            id: ids::format(Kind::CreditSystem, cs.id),
            object: "credit_system",
            key: cs.key.clone(),
            name: cs.name.clone(),
            unit: cs.unit.clone(),
            scale: cs.scale.places(),
            status: if cs.active { "active" } else { "inactive" },
            created_at: time(cs.created_at),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCreditSystem {
    /// Unique slug: a-z, 0-9, `_` and `-`, at most 64 characters.
    #[schema(pattern = "^[a-z0-9_-]{1,64}$")]
    pub key: String,
    #[schema(min_length = 1, max_length = 200, pattern = "\\S")]
    pub name: String,
    /// Unit label such as `tokens`, `credits` or `USD`.
    #[schema(min_length = 1, max_length = 200, pattern = "\\S")]
    pub unit: String,
    /// Decimal places, 0 to 6. Default 0.
    #[serde(default)]
    #[schema(maximum = 6)]
    pub scale: u8,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateCreditSystem {
    pub name: Option<String>,
    /// `active` or `inactive`.
    #[schema(pattern = "^(active|inactive)$")]
    pub status: Option<String>,
}

// ---- customers ----------------------------------------------------------------

#[derive(Serialize, ToSchema)]
pub struct CustomerWire {
    pub id: String,
    /// Always `customer`.
    pub object: &'static str,
    pub name: String,
    pub email: Option<String>,
    pub external_id: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub created_at: String,
}

impl From<&Customer> for CustomerWire {
    fn from(c: &Customer) -> Self {
        CustomerWire {
            id: ids::format(Kind::Customer, c.id),
            object: "customer",
            name: c.name.clone(),
            email: c.email.clone(),
            external_id: c.external_id.clone(),
            metadata: c.metadata.clone(),
            created_at: time(c.created_at),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCustomer {
    #[schema(min_length = 1, max_length = 200, pattern = "\\S")]
    pub name: String,
    pub email: Option<String>,
    /// The integrator's own key for this customer; unique.
    pub external_id: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateCustomer {
    pub name: Option<String>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub email: Option<Option<String>>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub external_id: Option<Option<String>>,
    /// Replaces the whole map.
    pub metadata: Option<BTreeMap<String, String>>,
}

// ---- wallets ------------------------------------------------------------------

#[derive(Serialize, ToSchema)]
pub struct WalletWire {
    pub id: String,
    /// Always `wallet`.
    pub object: &'static str,
    pub customer_id: String,
    pub credit_system_id: String,
    pub overdraft_limit: String,
    /// Sum of grant remainders minus debt.
    pub balance: String,
    /// `balance - held`.
    pub available: String,
    pub held: String,
    pub debt: String,
    /// `wallet.low_balance` is sent each time the balance falls below it;
    /// `null` for none.
    pub low_balance_threshold: Option<String>,
    pub created_at: String,
}

impl From<&WalletView> for WalletWire {
    fn from(view: &WalletView) -> Self {
        let scale = view.info.scale;
        let s = &view.summary;
        WalletWire {
            id: ids::format(Kind::Wallet, view.info.id),
            object: "wallet",
            customer_id: ids::format(Kind::Customer, view.info.customer_id),
            credit_system_id: ids::format(Kind::CreditSystem, view.info.credit_system_id),
            overdraft_limit: money(s.overdraft_limit, scale),
            balance: money(s.balance, scale),
            available: money(s.available, scale),
            held: money(s.held, scale),
            debt: money(s.debt, scale),
            low_balance_threshold: view.info.low_balance_threshold.map(|t| money(t, scale)),
            created_at: time(view.info.created_at),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWallet {
    #[schema(pattern = "^cus_[0-9A-HJKMNP-TV-Z]{26}$")]
    pub customer_id: String,
    #[schema(pattern = "^cs_[0-9A-HJKMNP-TV-Z]{26}$")]
    pub credit_system_id: String,
    /// How far below zero the wallet may go. Default `"0"`.
    #[schema(pattern = "^-?[0-9]+(\\.[0-9]+)?$")]
    pub overdraft_limit: Option<String>,
    /// `wallet.low_balance` is sent each time the balance falls below it.
    #[schema(pattern = "^-?[0-9]+(\\.[0-9]+)?$")]
    pub low_balance_threshold: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWallet {
    /// Not `null`: `"0"` allows no overdraft.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, pattern = "^-?[0-9]+(\\.[0-9]+)?$")]
    pub overdraft_limit: Option<Option<String>>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, pattern = "^-?[0-9]+(\\.[0-9]+)?$")]
    pub low_balance_threshold: Option<Option<String>>,
}

#[derive(Serialize, ToSchema)]
pub struct ByPurpose {
    pub promotional: String,
    pub bundled: String,
    pub paid: String,
}

#[derive(Serialize, ToSchema)]
pub struct NextExpiry {
    pub at: String,
    pub amount: String,
}

#[derive(Serialize, ToSchema)]
pub struct GrantBalance {
    pub id: String,
    pub purpose: &'static str,
    pub priority: u8,
    pub status: &'static str,
    pub remaining: String,
    pub held: String,
    pub effective_at: String,
    pub expires_at: Option<String>,
    pub cycle_ends_at: Option<String>,
    pub next_renewal_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct BalanceWire {
    /// Always `balance`.
    pub object: &'static str,
    pub wallet_id: String,
    /// The instant this balance is for.
    pub at: String,
    pub balance: String,
    pub available: String,
    pub held: String,
    pub debt: String,
    pub overdraft_limit: String,
    /// The largest debit that would succeed now: `available + overdraft_limit`.
    pub spendable: String,
    pub by_purpose: ByPurpose,
    /// Grants holding or scheduled to hold balance, in drawdown order.
    pub grants: Vec<GrantBalance>,
    pub next_expiry: Option<NextExpiry>,
}

impl From<&WalletView> for BalanceWire {
    fn from(view: &WalletView) -> Self {
        let scale = view.info.scale;
        let s = &view.summary;
        BalanceWire {
            object: "balance",
            wallet_id: ids::format(Kind::Wallet, view.info.id),
            at: time(view.at),
            balance: money(s.balance, scale),
            available: money(s.available, scale),
            held: money(s.held, scale),
            debt: money(s.debt, scale),
            overdraft_limit: money(s.overdraft_limit, scale),
            spendable: money(s.spendable, scale),
            by_purpose: ByPurpose {
                promotional: money(s.promotional, scale),
                bundled: money(s.bundled, scale),
                paid: money(s.paid, scale),
            },
            grants: view
                .wallet
                .grants_in_drawdown_order()
                .into_iter()
                .filter(|g| !g.is_ended())
                .map(|g| GrantBalance {
                    id: ids::format(Kind::Grant, g.id.0),
                    purpose: g.terms.purpose.as_str(),
                    priority: g.terms.priority,
                    status: g.display_status(),
                    remaining: money(g.remaining, scale),
                    held: money(g.held, scale),
                    effective_at: time(g.terms.effective_at),
                    expires_at: opt_time(g.terms.expires_at),
                    cycle_ends_at: opt_time(g.cycle_end()),
                    next_renewal_at: opt_time(g.next_renewal_at()),
                })
                .collect(),
            next_expiry: s.next_expiry.map(|(at, amount)| NextExpiry {
                at: time(at),
                amount: money(amount, scale),
            }),
        }
    }
}

// ---- grants -------------------------------------------------------------------

#[derive(Serialize, Deserialize, ToSchema, Clone)]
#[serde(deny_unknown_fields)]
pub struct Recurrence {
    /// `day`, `week`, `month` or `year`.
    #[schema(pattern = "^(day|week|month|year)$")]
    pub interval: String,
    /// Default 1; at most 1000.
    #[serde(default = "one")]
    #[schema(minimum = 1, maximum = 1000)]
    pub interval_count: u32,
}

fn one() -> u32 {
    1
}

#[derive(Serialize, ToSchema)]
pub struct Cycle {
    /// 1-based; 0 while the grant is scheduled.
    pub number: u64,
    pub starts_at: Option<String>,
    pub ends_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct GrantSource {
    /// `api` or `promotional_credit`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub promotional_credit_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assignment_id: Option<String>,
}

impl From<&Source> for GrantSource {
    fn from(source: &Source) -> Self {
        match source {
            Source::Api => GrantSource {
                kind: "api",
                promotional_credit_id: None,
                assignment_id: None,
            },
            Source::PromotionalCredit {
                promotional_credit_id,
                assignment_id,
            } => GrantSource {
                kind: "promotional_credit",
                promotional_credit_id: Some(ids::format(
                    Kind::PromotionalCredit,
                    *promotional_credit_id,
                )),
                assignment_id: Some(ids::format(Kind::Assignment, *assignment_id)),
            },
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct GrantWire {
    pub id: String,
    /// Always `grant`.
    pub object: &'static str,
    pub wallet_id: String,
    /// Amount per cycle.
    pub amount: String,
    pub purpose: &'static str,
    pub priority: u8,
    pub effective_at: String,
    pub expires_at: Option<String>,
    pub recurrence: Option<Recurrence>,
    pub rollover_max: String,
    pub remaining: String,
    pub held: String,
    /// `scheduled`, `active`, `depleted`, `expired` or `voided`.
    pub status: &'static str,
    pub cycle: Cycle,
    pub next_renewal_at: Option<String>,
    pub ended_at: Option<String>,
    pub description: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub source: GrantSource,
    pub created_at: String,
}

impl GrantWire {
    pub fn new(record: &GrantRecord, grant: &Grant) -> GrantWire {
        let scale = record.scale;
        let cycle_number = grant.cycle;
        GrantWire {
            id: ids::format(Kind::Grant, grant.id.0),
            object: "grant",
            wallet_id: ids::format(Kind::Wallet, record.wallet_id),
            amount: money(grant.terms.amount, scale),
            purpose: grant.terms.purpose.as_str(),
            priority: grant.terms.priority,
            effective_at: time(grant.terms.effective_at),
            expires_at: opt_time(grant.terms.expires_at),
            recurrence: grant.terms.recurrence.map(|p| Recurrence {
                interval: p.interval.as_str().to_string(),
                interval_count: p.count,
            }),
            rollover_max: money(grant.terms.rollover_max, scale),
            remaining: money(grant.remaining, scale),
            held: money(grant.held, scale),
            status: grant.display_status(),
            cycle: Cycle {
                number: cycle_number,
                starts_at: opt_time(grant.terms.cycle_start(cycle_number.max(1))),
                ends_at: opt_time(grant.cycle_end()),
            },
            next_renewal_at: opt_time(grant.next_renewal_at()),
            ended_at: opt_time(grant.ended_at),
            description: record.description.clone(),
            metadata: record.metadata.clone(),
            source: GrantSource::from(&record.source),
            created_at: time(record.created_at),
        }
    }
}

impl From<&GrantRecord> for GrantWire {
    fn from(record: &GrantRecord) -> Self {
        GrantWire::new(record, &record.grant)
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGrant {
    #[schema(pattern = "^-?[0-9]+(\\.[0-9]+)?$")]
    pub amount: String,
    /// `promotional`, `bundled` or `paid`.
    #[schema(pattern = "^(promotional|bundled|paid)$")]
    pub purpose: String,
    /// 0 to 100, lower is drawn first. Default by purpose: 10, 20, 30.
    #[schema(maximum = 100)]
    pub priority: Option<u8>,
    /// Default now; never in the past.
    pub effective_at: Option<chrono::DateTime<chrono::Utc>>,
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    pub recurrence: Option<Recurrence>,
    /// Most that carries into the next cycle. Default `"0"`.
    #[schema(pattern = "^-?[0-9]+(\\.[0-9]+)?$")]
    pub rollover_max: Option<String>,
    pub description: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

// ---- debits and holds ---------------------------------------------------------

#[derive(Serialize, ToSchema)]
pub struct AllocationWire {
    /// Null for the part that went into debt (overdraft).
    pub grant_id: Option<String>,
    pub amount: String,
}

fn allocations(parts: &[Allocation], scale: Scale) -> Vec<AllocationWire> {
    parts
        .iter()
        .map(|a| AllocationWire {
            grant_id: a.grant.map(|g| ids::format(Kind::Grant, g.0)),
            amount: money(a.amount, scale),
        })
        .collect()
}

fn reservations(parts: &[Reservation], scale: Scale) -> Vec<AllocationWire> {
    parts
        .iter()
        .map(|r| AllocationWire {
            grant_id: r.grant.map(|g| ids::format(Kind::Grant, g.0)),
            amount: money(r.amount, scale),
        })
        .collect()
}

#[derive(Serialize, ToSchema)]
pub struct DebitWire {
    pub id: String,
    /// Always `debit`.
    pub object: &'static str,
    pub wallet_id: String,
    pub amount: String,
    /// How the debit was split, in drawdown order.
    pub allocations: Vec<AllocationWire>,
    pub balance_after: String,
    pub description: Option<String>,
    pub metadata: BTreeMap<String, String>,
    /// The hold this debit captured.
    pub hold_id: Option<String>,
    pub created_at: String,
}

impl From<&DebitRecord> for DebitWire {
    fn from(d: &DebitRecord) -> Self {
        DebitWire {
            id: ids::format(Kind::Debit, d.id),
            object: "debit",
            wallet_id: ids::format(Kind::Wallet, d.wallet_id),
            amount: money(d.amount, d.scale),
            allocations: allocations(&d.allocations, d.scale),
            balance_after: money(d.balance_after, d.scale),
            description: d.description.clone(),
            metadata: d.metadata.clone(),
            hold_id: d.hold_id.map(|h| ids::format(Kind::Hold, h)),
            created_at: time(d.created_at),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDebit {
    #[schema(pattern = "^-?[0-9]+(\\.[0-9]+)?$")]
    pub amount: String,
    pub description: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchDebitItem {
    #[schema(pattern = "^wal_[0-9A-HJKMNP-TV-Z]{26}$")]
    pub wallet_id: String,
    /// Checked per item, as a single debit's would be: a malformed amount
    /// is that item's `{"status": 400, "error"}`, not a refusal of the batch.
    pub amount: String,
    /// Required: each item is applied at most once.
    #[schema(pattern = "^[\\x21-\\x7e]{1,255}$")]
    pub idempotency_key: String,
    pub description: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchDebits {
    /// At most 1000 items.
    #[schema(min_items = 1, max_items = 1000)]
    pub debits: Vec<BatchDebitItem>,
}

#[derive(Serialize, ToSchema)]
pub struct BatchResult {
    /// The HTTP status a single debit would have got.
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<DebitWire>)]
    pub debit: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<ErrorDetail>)]
    pub error: Option<serde_json::Value>,
}

#[derive(Serialize, ToSchema)]
pub struct BatchResults {
    /// One result per item, in order.
    pub data: Vec<BatchResult>,
}

#[derive(Serialize, ToSchema)]
pub struct HoldWire {
    pub id: String,
    /// Always `hold`.
    pub object: &'static str,
    pub wallet_id: String,
    pub amount: String,
    /// `active`, `captured`, `released` or `expired`.
    pub status: &'static str,
    pub reservations: Vec<AllocationWire>,
    pub expires_at: String,
    /// The debit that captured this hold.
    pub debit_id: Option<String>,
    pub ended_at: Option<String>,
    pub created_at: String,
}

impl From<&HoldRecord> for HoldWire {
    fn from(h: &HoldRecord) -> Self {
        HoldWire {
            id: ids::format(Kind::Hold, h.id),
            object: "hold",
            wallet_id: ids::format(Kind::Wallet, h.wallet_id),
            amount: money(h.amount, h.scale),
            status: h.status.as_str(),
            reservations: reservations(&h.reservations, h.scale),
            expires_at: time(h.expires_at),
            debit_id: h.debit_id.map(|d| ids::format(Kind::Debit, d)),
            ended_at: opt_time(h.ended_at),
            created_at: time(h.created_at),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateHold {
    #[schema(pattern = "^-?[0-9]+(\\.[0-9]+)?$")]
    pub amount: String,
    /// Default 600; 1 to 86400.
    #[schema(minimum = 1, maximum = 86400)]
    pub expires_in_seconds: Option<i64>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CaptureHold {
    #[schema(pattern = "^-?[0-9]+(\\.[0-9]+)?$")]
    pub amount: String,
}

// ---- entries ------------------------------------------------------------------

#[derive(Serialize, ToSchema)]
pub struct EntryWire {
    pub id: String,
    /// Always `entry`.
    pub object: &'static str,
    pub wallet_id: String,
    /// Per-wallet, gapless, from 1.
    pub sequence: u64,
    /// `grant`, `renewal`, `debit`, `expiry`, `void`, `repayment` or `adjustment`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Signed change to the grant's remainder (or to minus the debt when `grant_id` is null).
    pub amount: String,
    pub balance_after: String,
    pub occurred_at: String,
    pub grant_id: Option<String>,
    /// The id of what caused the entry.
    pub reference: String,
}

impl From<&EntryRecord> for EntryWire {
    fn from(e: &EntryRecord) -> Self {
        EntryWire {
            id: ids::format(Kind::Entry, e.id),
            object: "entry",
            wallet_id: ids::format(Kind::Wallet, e.wallet_id),
            sequence: e.sequence,
            kind: e.kind.as_str(),
            amount: money(e.amount, e.scale),
            balance_after: money(e.balance_after, e.scale),
            occurred_at: time(e.occurred_at),
            grant_id: e.grant_id.map(|g| ids::format(Kind::Grant, g)),
            reference: e.reference.clone(),
        }
    }
}

// ---- api keys and the test clock ----------------------------------------------

#[derive(Serialize, ToSchema)]
pub struct ApiKeyWire {
    pub id: String,
    /// Always `api_key`.
    pub object: &'static str,
    pub name: String,
    /// `admin`, `usage` or `read`.
    pub scope: &'static str,
    /// Shown once, when the key is created; never stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    pub created_at: String,
}

impl ApiKeyWire {
    pub fn new(key: &ApiKey, secret: Option<String>) -> ApiKeyWire {
        ApiKeyWire {
            id: ids::format(Kind::ApiKey, key.id),
            object: "api_key",
            name: key.name.clone(),
            scope: key.scope.as_str(),
            secret,
            created_at: time(key.created_at),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    #[schema(min_length = 1, max_length = 200, pattern = "\\S")]
    pub name: String,
    /// `admin`, `usage` or `read`.
    #[schema(pattern = "^(admin|usage|read)$")]
    pub scope: String,
}

#[derive(Serialize, ToSchema)]
pub struct DeletedWire {
    pub id: String,
    pub object: &'static str,
    pub deleted: bool,
}

#[derive(Serialize, ToSchema)]
pub struct TestClockWire {
    /// Always `test_clock`.
    pub object: &'static str,
    pub now: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdvanceClock {
    pub to: chrono::DateTime<chrono::Utc>,
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
}

// ---- promotional credits ------------------------------------------------------

#[derive(Serialize, Deserialize, ToSchema, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AccessPeriod {
    /// 1 to 1000.
    #[schema(minimum = 1, maximum = 1000)]
    pub duration_value: u32,
    /// `day`, `week`, `month` or `year`.
    #[schema(pattern = "^(day|week|month|year)$")]
    pub duration_unit: String,
}

#[derive(Serialize, ToSchema)]
pub struct PromotionalCreditWire {
    pub id: String,
    /// Always `promotional_credit`.
    pub object: &'static str,
    pub name: String,
    pub description: Option<String>,
    pub credit_system_id: String,
    /// Null: the promo window started when the campaign was created.
    pub starts_at: Option<String>,
    /// Null: the promo window never ends.
    pub ends_at: Option<String>,
    /// Credits granted per reset cycle.
    pub quantity: String,
    /// `never`, `day`, `week`, `month` or `year`.
    pub reset_interval: &'static str,
    /// Null: forever.
    pub access_period: Option<AccessPeriod>,
    pub allow_multiple_grants: bool,
    /// `scheduled`, `active` or `ended`, from the clock.
    pub status: &'static str,
    /// True once any customer has been granted; the economics are then locked.
    pub is_applied: bool,
    /// Customers with an active assignment.
    pub granted_count: u64,
    /// Customers whose latest assignment was revoked and who hold none.
    pub revoked_count: u64,
    pub created_at: String,
}

impl From<&crate::engine::PromotionView> for PromotionalCreditWire {
    fn from(view: &crate::engine::PromotionView) -> Self {
        let p = &view.promotion;
        PromotionalCreditWire {
            id: ids::format(Kind::PromotionalCredit, p.id),
            object: "promotional_credit",
            name: p.name.clone(),
            description: p.description.clone(),
            credit_system_id: ids::format(Kind::CreditSystem, p.credit_system_id),
            starts_at: opt_time(p.starts_at),
            ends_at: opt_time(p.ends_at),
            quantity: money(p.policy.quantity, p.scale),
            reset_interval: p.policy.reset_interval.map_or("never", |i| i.as_str()),
            access_period: p.policy.access_period.map(|a| AccessPeriod {
                duration_value: a.count,
                duration_unit: a.interval.as_str().to_string(),
            }),
            allow_multiple_grants: p.policy.allow_multiple_grants,
            status: p.window().status(view.at).as_str(),
            is_applied: p.applied,
            granted_count: view.granted_count,
            revoked_count: view.revoked_count,
            created_at: time(p.created_at),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePromotionalCredit {
    #[schema(min_length = 1, max_length = 200, pattern = "\\S")]
    pub name: String,
    pub description: Option<String>,
    /// An active credit system.
    #[schema(pattern = "^cs_[0-9A-HJKMNP-TV-Z]{26}$")]
    pub credit_system_id: String,
    /// Null or absent: starts immediately. Never in the past.
    pub starts_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Null or absent: never ends.
    pub ends_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Credits per reset cycle; positive.
    #[schema(pattern = "^-?[0-9]+(\\.[0-9]+)?$")]
    pub quantity: String,
    /// `never` (default), `day`, `week`, `month` or `year`.
    #[serde(default = "never")]
    #[schema(pattern = "^(never|day|week|month|year)$")]
    pub reset_interval: String,
    /// Null or absent: forever.
    pub access_period: Option<AccessPeriod>,
    #[serde(default)]
    pub allow_multiple_grants: bool,
}

fn never() -> String {
    "never".to_string()
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdatePromotionalCredit {
    pub name: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
    pub credit_system_id: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub starts_at: Option<Option<chrono::DateTime<chrono::Utc>>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub ends_at: Option<Option<chrono::DateTime<chrono::Utc>>>,
    pub quantity: Option<String>,
    pub reset_interval: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<AccessPeriod>)]
    pub access_period: Option<Option<AccessPeriod>>,
    pub allow_multiple_grants: Option<bool>,
}

#[derive(Serialize, ToSchema)]
pub struct AssignmentWire {
    pub id: String,
    /// Always `promotional_credit_assignment`.
    pub object: &'static str,
    pub promotional_credit_id: String,
    pub customer_id: String,
    pub wallet_id: String,
    /// The grant in the customer's wallet that backs this assignment.
    pub grant_id: String,
    /// As of this response.
    pub active: bool,
    pub granted_at: String,
    /// End of the access period; null forever.
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
}

impl From<&Assignment> for AssignmentWire {
    fn from(a: &Assignment) -> Self {
        AssignmentWire {
            id: ids::format(Kind::Assignment, a.id),
            object: "promotional_credit_assignment",
            promotional_credit_id: ids::format(Kind::PromotionalCredit, a.promotional_credit_id),
            customer_id: ids::format(Kind::Customer, a.customer_id),
            wallet_id: ids::format(Kind::Wallet, a.wallet_id),
            grant_id: ids::format(Kind::Grant, a.grant_id),
            active: a.is_active(a.revoked_at.unwrap_or(a.granted_at)),
            granted_at: time(a.granted_at),
            expires_at: opt_time(a.expires_at),
            revoked_at: opt_time(a.revoked_at),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PromotionCustomers {
    /// Up to 1000 customer ids. Give this or `all_customers`.
    #[schema(min_items = 1, max_items = 1000)]
    pub customer_ids: Option<Vec<String>>,
    /// Every customer with a wallet in the credit system (grant), or every
    /// customer granted (revoke).
    pub all_customers: Option<bool>,
}

#[derive(Serialize, ToSchema)]
pub struct SkippedWire {
    pub customer_id: String,
    /// `no_wallet`, `already_granted`, `not_granted`, `customer_not_found`
    /// or `wallet_capacity_exceeded`.
    pub reason: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct GrantResultWire {
    /// Always `promotional_credit_grant`.
    pub object: &'static str,
    /// The new assignments; with `all_customers`, the first 100.
    pub granted: Vec<AssignmentWire>,
    /// With `all_customers`, the first 100.
    pub skipped: Vec<SkippedWire>,
    pub granted_count: u64,
    pub skipped_count: u64,
}

#[derive(Serialize, ToSchema)]
pub struct RevokeResultWire {
    /// Always `promotional_credit_revoke`.
    pub object: &'static str,
    /// Every assignment ended; with `all_customers`, the first 100.
    pub revoked: Vec<AssignmentWire>,
    pub skipped: Vec<SkippedWire>,
    pub revoked_count: u64,
    pub skipped_count: u64,
}

#[derive(Serialize, ToSchema)]
pub struct CustomerSummary {
    pub id: String,
    pub name: String,
    pub email: Option<String>,
    pub external_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct PromotionCustomerWire {
    /// Always `promotional_credit_customer`.
    pub object: &'static str,
    pub customer: CustomerSummary,
    /// `granted`, `revoked` or `expired`.
    pub status: &'static str,
    pub active_assignments: u64,
    pub last_granted_at: String,
    pub revoked_at: Option<String>,
}

impl From<&PromotionCustomer> for PromotionCustomerWire {
    fn from(row: &PromotionCustomer) -> Self {
        PromotionCustomerWire {
            object: "promotional_credit_customer",
            customer: CustomerSummary {
                id: ids::format(Kind::Customer, row.customer.id),
                name: row.customer.name.clone(),
                email: row.customer.email.clone(),
                external_id: row.customer.external_id.clone(),
            },
            status: row.status(),
            active_assignments: row.active_assignments,
            last_granted_at: time(row.last_granted_at),
            revoked_at: opt_time(row.revoked_at),
        }
    }
}

// ---- events and webhooks --------------------------------------------------------

/// An event: what happened to a wallet, numbered per wallet. The body of
/// every webhook delivery is this object.
#[derive(Serialize, ToSchema)]
pub struct EventWire {
    pub id: String,
    /// Always `event`.
    pub object: &'static str,
    /// `grant.created`, `grant.renewed`, `grant.expired`, `grant.voided`,
    /// `wallet.low_balance`, `wallet.depleted`, `hold.expired`,
    /// `promotional_credit.granted` or `promotional_credit.revoked`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// When it happened, on the ledger's clock.
    pub created_at: String,
    pub wallet_id: String,
    /// The wallet's events are numbered 1, 2, 3… in the order they happened.
    pub sequence: u64,
    /// The ids and figures of what happened, with `customer_id` and
    /// `credit_system_id`.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

impl From<&EventRecord> for EventWire {
    fn from(event: &EventRecord) -> Self {
        EventWire {
            id: ids::format(Kind::Event, event.id),
            object: "event",
            kind: event.kind.as_str(),
            created_at: time(event.occurred_at),
            wallet_id: ids::format(Kind::Wallet, event.wallet_id),
            sequence: event.sequence,
            data: serde_json::from_str(&event.data).expect("event data is stored as JSON"),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct WebhookEndpointWire {
    pub id: String,
    /// Always `webhook_endpoint`.
    pub object: &'static str,
    pub url: String,
    pub description: Option<String>,
    /// The event types delivered here; `*` for all.
    pub event_types: Vec<String>,
    /// A disabled endpoint gets no new deliveries and none are sent.
    pub enabled: bool,
    /// The signing secret, shown once: when the endpoint is created.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    pub created_at: String,
}

impl WebhookEndpointWire {
    pub fn new(endpoint: &WebhookEndpoint, secret: Option<String>) -> WebhookEndpointWire {
        WebhookEndpointWire {
            id: ids::format(Kind::WebhookEndpoint, endpoint.id),
            object: "webhook_endpoint",
            url: endpoint.url.clone(),
            description: endpoint.description.clone(),
            event_types: endpoint.event_types.clone(),
            enabled: endpoint.enabled,
            secret,
            created_at: time(endpoint.created_at),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhookEndpoint {
    /// An absolute `http` or `https` URL, at most 2048 characters.
    #[schema(min_length = 1, max_length = 2048)]
    pub url: String,
    /// Event types to deliver, or `["*"]` for all.
    #[schema(min_items = 1)]
    pub event_types: Vec<String>,
    pub description: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhookEndpoint {
    #[schema(min_length = 1, max_length = 2048)]
    pub url: Option<String>,
    #[schema(min_items = 1)]
    pub event_types: Option<Vec<String>>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
    pub enabled: Option<bool>,
}

#[derive(Serialize, ToSchema)]
pub struct AttemptWire {
    pub number: u32,
    /// When it was sent (wall clock).
    pub at: String,
    /// The endpoint's HTTP status; `null` when no answer came.
    pub status_code: Option<u16>,
    /// Why it failed; `null` when it succeeded.
    pub error: Option<String>,
    pub duration_ms: u32,
}

impl From<&Attempt> for AttemptWire {
    fn from(attempt: &Attempt) -> Self {
        AttemptWire {
            number: attempt.number,
            at: time(attempt.at),
            status_code: attempt.status_code,
            error: attempt.error.clone(),
            duration_ms: attempt.duration_ms,
        }
    }
}

/// One event on its way to one endpoint. Instants are wall-clock.
#[derive(Serialize, ToSchema)]
pub struct WebhookDeliveryWire {
    pub id: String,
    /// Always `webhook_delivery`.
    pub object: &'static str,
    pub endpoint_id: String,
    pub event_id: String,
    pub event_type: &'static str,
    pub wallet_id: String,
    /// The event's sequence in its wallet.
    pub sequence: u64,
    /// `pending`, `succeeded` or `failed` (given up after the retry window).
    pub status: &'static str,
    pub attempt_count: u32,
    /// While pending: the next attempt, no earlier.
    pub next_attempt_at: Option<String>,
    pub last_attempt_at: Option<String>,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    pub created_at: String,
    /// Every attempt, oldest first: only when one delivery is read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<Vec<AttemptWire>>,
}

impl WebhookDeliveryWire {
    pub fn new(delivery: &Delivery, attempts: Option<&[Attempt]>) -> WebhookDeliveryWire {
        WebhookDeliveryWire {
            id: ids::format(Kind::WebhookDelivery, delivery.id),
            object: "webhook_delivery",
            endpoint_id: ids::format(Kind::WebhookEndpoint, delivery.endpoint_id),
            event_id: ids::format(Kind::Event, delivery.event_id),
            event_type: delivery.event_type.as_str(),
            wallet_id: ids::format(Kind::Wallet, delivery.wallet_id),
            sequence: delivery.sequence,
            status: delivery.status.as_str(),
            attempt_count: delivery.attempts,
            next_attempt_at: match delivery.status {
                DeliveryStatus::Pending => opt_time(delivery.next_attempt_at),
                _ => None,
            },
            last_attempt_at: opt_time(delivery.last_attempt_at),
            last_status_code: delivery.last_status_code,
            last_error: delivery.last_error.clone(),
            created_at: time(delivery.created_at),
            attempts: attempts.map(|list| list.iter().map(AttemptWire::from).collect()),
        }
    }
}
