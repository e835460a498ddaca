//! What both stores read the same way: each record's column list
//! ([`columns!`]) and how a row of those columns becomes the record
//! ([`Record`]), written once over a [`Row`] of either backend.
//!
//! A column is decoded by the type it becomes ([`Stored`]): an id from its
//! 16 big-endian bytes, an instant from its microseconds, an amount from its
//! atomic units, a status or kind from its text. A value the ledger could
//! not have written (an id of the wrong length, an unknown entry type, a
//! number out of range, a NULL where none is stored) is a read error of the
//! backend, never a panic. One thing still panics, on both backends as
//! before: a JSON column the codec cannot read ([`super::codec`]).

use super::codec;
use crate::records::*;
use credstack_core::promotion::Policy;
use credstack_core::{
    Allocation, Amount, EntryKind, Grant, GrantId, GrantStatus, GrantTerms, Instant, Interval,
    Period, Purpose, Scale, Wallet,
};
use std::error::Error;
use std::fmt;

/// The columns a [`Record`] reads, in its order, as a string literal (for
/// `concat!`, so each statement's text is built at compile time). Columns
/// of a table read under an alias carry it: `g.` grants, `h.` holds, `d.`
/// debits and deliveries, `e.` entries, `p.` campaigns, `ev.` events,
/// `c.` customers joined to their assignments.
macro_rules! columns {
    (credit_system) => {
        "id, key, name, unit, scale, active, created_at"
    };
    (customer) => {
        "id, name, email, external_id, metadata, created_at"
    };
    (customer_c) => {
        "c.id, c.name, c.email, c.external_id, c.metadata, c.created_at"
    };
    (wallet_info) => {
        "id, customer_id, credit_system_id, scale, created_at, low_balance_threshold"
    };
    // A wallet's settings and then its state (`(WalletInfo, Wallet)`).
    (wallet) => {
        concat!(
            $crate::store::rows::columns!(wallet_info),
            ", overdraft_limit, debt, balance, last_sequence"
        )
    };
    (grant) => {
        "g.id, g.wallet_id, g.amount, g.purpose, g.priority, g.effective_at,
        g.expires_at, g.recurrence_interval, g.recurrence_count, g.rollover_max, g.remaining,
        g.held, g.cycle, g.status, g.ended_at, g.description, g.metadata, g.source, g.created_at,
        (SELECT scale FROM wallets w WHERE w.id = g.wallet_id)"
    };
    (hold) => {
        "h.id, h.wallet_id, h.amount, h.reservations, h.status, h.expires_at,
        h.debit_id, h.ended_at, h.created_at,
        (SELECT scale FROM wallets w WHERE w.id = h.wallet_id)"
    };
    (debit) => {
        "d.id, d.wallet_id, d.amount, d.allocations, d.balance_after,
        d.description, d.metadata, d.hold_id, d.created_at,
        (SELECT scale FROM wallets w WHERE w.id = d.wallet_id)"
    };
    // An entry's columns but its hash ([`entry_without_hash`]).
    (entry_without_hash) => {
        "e.id, e.wallet_id, e.sequence, e.type, e.amount, e.balance_after,
        e.occurred_at, e.grant_id, e.reference,
        (SELECT scale FROM wallets w WHERE w.id = e.wallet_id)"
    };
    (entry) => {
        concat!(
            $crate::store::rows::columns!(entry_without_hash),
            ", e.hash"
        )
    };
    (api_key) => {
        "id, name, scope, secret_hash, created_at"
    };
    (kept) => {
        "key, fingerprint, status, body, debit_id, created_at"
    };
    (session) => {
        "token_hash, csrf_token, api_key_id, created_at, expires_at"
    };
    (promotion) => {
        "p.id, p.name, p.description, p.credit_system_id, p.starts_at,
        p.ends_at, p.quantity, p.reset_interval, p.access_period_value, p.access_period_unit,
        p.allow_multiple_grants, p.applied, p.created_at,
        (SELECT scale FROM credit_systems c WHERE c.id = p.credit_system_id)"
    };
    (assignment) => {
        "id, promotional_credit_id, customer_id, wallet_id, grant_id, granted_at, expires_at,
        revoked_at"
    };
    (bulk_run) => {
        "promotional_credit_id, run_id, action, idempotency_key, fingerprint, cursor, progress,
        lease_until, total, finished_at, error"
    };
    (bulk_resume) => {
        "promotional_credit_id, idempotency_key, fingerprint, action, cursor, progress, saved_at"
    };
    (event) => {
        "ev.id, ev.wallet_id, ev.sequence, ev.type, ev.occurred_at, ev.data"
    };
    (endpoint) => {
        "id, url, description, event_types, secret, enabled, created_at"
    };
    (delivery) => {
        "d.id, d.endpoint_id, d.event_id, d.type, d.wallet_id, d.sequence,
        d.status, d.attempts, d.next_attempt_at, d.retry_from, d.created_at, d.last_attempt_at,
        d.last_status_code, d.last_error, d.attempts_before_retry"
    };
    // A claimed delivery with its endpoint's url and secret, then its event.
    (delivery_job) => {
        concat!(
            $crate::store::rows::columns!(delivery),
            ", w.url, w.secret, ",
            $crate::store::rows::columns!(event)
        )
    };
    (attempt) => {
        "delivery_id, number, at, status_code, error, duration_ms"
    };
}
pub(crate) use columns;

/// `SELECT` a record's [`columns!`], then the rest of the statement, as one
/// string literal: `select!(grant, " FROM grants g WHERE g.id = ?")`.
macro_rules! select {
    ($record:ident, $rest:literal) => {
        concat!("SELECT ", $crate::store::rows::columns!($record), $rest)
    };
}
pub(crate) use select;

// ---- one column ------------------------------------------------------------------

/// A column's value as the backend hands it over, borrowed from the row.
#[derive(Clone, Copy, Debug)]
pub enum Raw<'a> {
    Null,
    /// Any integer, whatever its width in the schema.
    Int(i64),
    /// PostgreSQL's `boolean` (SQLite stores booleans as integers).
    Bool(bool),
    Text(&'a str),
    Blob(&'a [u8]),
}

/// Why a stored value cannot be read: the backend's read error carries it.
#[derive(Debug)]
pub struct Unreadable(String);

impl Unreadable {
    fn new(what: impl Into<String>) -> Unreadable {
        Unreadable(what.into())
    }

    fn unexpected(raw: Raw<'_>, wanted: &str) -> Unreadable {
        let found = match raw {
            Raw::Null => "NULL",
            Raw::Int(_) => "an integer",
            Raw::Bool(_) => "a boolean",
            Raw::Text(_) => "text",
            Raw::Blob(_) => "a blob",
        };
        Unreadable(format!("{found} where {wanted} is stored"))
    }
}

impl fmt::Display for Unreadable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Error for Unreadable {}

/// A type a column decodes to.
pub trait Stored<'a>: Sized {
    fn decode(raw: Raw<'a>) -> Result<Self, Unreadable>;
}

impl<'a, T: Stored<'a>> Stored<'a> for Option<T> {
    fn decode(raw: Raw<'a>) -> Result<Self, Unreadable> {
        match raw {
            Raw::Null => Ok(None),
            raw => T::decode(raw).map(Some),
        }
    }
}

impl<'a> Stored<'a> for &'a str {
    fn decode(raw: Raw<'a>) -> Result<Self, Unreadable> {
        match raw {
            Raw::Text(text) => Ok(text),
            raw => Err(Unreadable::unexpected(raw, "text")),
        }
    }
}

impl Stored<'_> for String {
    fn decode(raw: Raw<'_>) -> Result<Self, Unreadable> {
        <&str>::decode(raw).map(str::to_owned)
    }
}

impl Stored<'_> for bool {
    fn decode(raw: Raw<'_>) -> Result<Self, Unreadable> {
        match raw {
            Raw::Bool(value) => Ok(value),
            Raw::Int(value) => Ok(value != 0),
            raw => Err(Unreadable::unexpected(raw, "a boolean")),
        }
    }
}

macro_rules! integers {
    ($($ty:ty),*) => {$(
        impl Stored<'_> for $ty {
            fn decode(raw: Raw<'_>) -> Result<Self, Unreadable> {
                match raw {
                    Raw::Int(value) => <$ty>::try_from(value).map_err(|_| {
                        Unreadable(format!("{value} is out of range for {}", stringify!($ty)))
                    }),
                    raw => Err(Unreadable::unexpected(raw, "an integer")),
                }
            }
        }
    )*};
}
integers!(i64, u64, u32, u16, u8);

/// An id: a ULID as 16 big-endian bytes.
impl Stored<'_> for u128 {
    fn decode(raw: Raw<'_>) -> Result<Self, Unreadable> {
        match raw {
            Raw::Blob(bytes) => bytes
                .try_into()
                .map(u128::from_be_bytes)
                .map_err(|_| Unreadable(format!("an id of {} bytes, not 16", bytes.len()))),
            raw => Err(Unreadable::unexpected(raw, "an id")),
        }
    }
}

/// A SHA-256 hash: an entry's, a key's secret, a fingerprint.
impl Stored<'_> for [u8; 32] {
    fn decode(raw: Raw<'_>) -> Result<Self, Unreadable> {
        match raw {
            Raw::Blob(bytes) => bytes
                .try_into()
                .map_err(|_| Unreadable(format!("a hash of {} bytes, not 32", bytes.len()))),
            raw => Err(Unreadable::unexpected(raw, "a hash")),
        }
    }
}

/// Microseconds since the epoch.
impl Stored<'_> for Instant {
    fn decode(raw: Raw<'_>) -> Result<Self, Unreadable> {
        let micros = i64::decode(raw)?;
        Instant::from_timestamp_micros(micros)
            .ok_or_else(|| Unreadable(format!("the instant {micros} µs is out of range")))
    }
}

/// Atomic units.
impl Stored<'_> for Amount {
    fn decode(raw: Raw<'_>) -> Result<Self, Unreadable> {
        i64::decode(raw).map(Amount::from_atomic)
    }
}

/// Decimal places.
impl Stored<'_> for Scale {
    fn decode(raw: Raw<'_>) -> Result<Self, Unreadable> {
        let places = u8::decode(raw)?;
        Scale::new(places).ok_or_else(|| Unreadable(format!("a scale of {places} places")))
    }
}

/// How many intervals a stored period spans: a count [`Period::new`] takes.
pub struct Count(u32);

impl Stored<'_> for Count {
    fn decode(raw: Raw<'_>) -> Result<Self, Unreadable> {
        let count = u32::decode(raw)?;
        if (1..=Period::COUNT_MAX).contains(&count) {
            Ok(Count(count))
        } else {
            Err(Unreadable(format!("a period of {count} intervals")))
        }
    }
}

/// A period from its interval and [`Count`], each read checked.
fn period(interval: Interval, Count(count): Count) -> Period {
    Period::new(interval, count).expect("a count in range makes a period")
}

/// Types stored as the text their `parse` reads.
macro_rules! parsed {
    ($($ty:ty => $parse:path, $what:literal;)*) => {$(
        impl Stored<'_> for $ty {
            fn decode(raw: Raw<'_>) -> Result<Self, Unreadable> {
                let text = <&str>::decode(raw)?;
                $parse(text).ok_or_else(|| Unreadable(format!("unknown {} {text:?}", $what)))
            }
        }
    )*};
}
parsed! {
    EntryKind => EntryKind::parse, "entry type";
    Purpose => Purpose::parse, "purpose";
    GrantStatus => GrantStatus::parse, "grant status";
    Interval => Interval::parse, "interval";
    Source => Source::from_stored, "source";
    HoldStatus => HoldStatus::parse, "hold status";
    Scope => Scope::parse, "scope";
    EventType => EventType::parse, "event type";
    DeliveryStatus => DeliveryStatus::parse, "delivery status";
}

// ---- one row ---------------------------------------------------------------------

/// A result row of either backend, read column by column (from 0).
pub trait Row {
    /// The backend's error; a value [`Stored`] refuses becomes one.
    type Error;

    fn value<'a, T: Stored<'a>>(&'a self, index: usize) -> Result<T, Self::Error>;
}

/// SQLite hands over every value with its own type, whatever the column's.
impl Row for rusqlite::Row<'_> {
    type Error = rusqlite::Error;

    fn value<'a, T: Stored<'a>>(&'a self, index: usize) -> rusqlite::Result<T> {
        use rusqlite::types::ValueRef;
        let value = self.get_ref(index)?;
        let raw = match value {
            ValueRef::Null => Ok(Raw::Null),
            ValueRef::Integer(integer) => Ok(Raw::Int(integer)),
            ValueRef::Text(bytes) => std::str::from_utf8(bytes)
                .map(Raw::Text)
                .map_err(|_| Unreadable::new("text that is not UTF-8")),
            ValueRef::Blob(bytes) => Ok(Raw::Blob(bytes)),
            ValueRef::Real(_) => Err(Unreadable::new("a real number, which no column stores")),
        };
        raw.and_then(T::decode).map_err(|unreadable| {
            rusqlite::Error::FromSqlConversionFailure(
                index,
                value.data_type(),
                Box::new(unreadable),
            )
        })
    }
}

/// PostgreSQL decodes by the column's declared type; [`Checked`] turns
/// what [`Stored`] refuses into the error `try_get` reports for the column.
impl Row for postgres::Row {
    type Error = postgres::Error;

    fn value<'a, T: Stored<'a>>(&'a self, index: usize) -> Result<T, postgres::Error> {
        self.try_get::<_, Checked<T>>(index)
            .map(|Checked(value)| value)
    }
}

struct Checked<T>(T);

impl<'a, T: Stored<'a>> postgres::types::FromSql<'a> for Checked<T> {
    fn from_sql(
        ty: &postgres::types::Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn Error + Sync + Send>> {
        use postgres::types::Type;
        let value = match *ty {
            Type::INT2 => Raw::Int(i16::from_sql(ty, raw)?.into()),
            Type::INT4 => Raw::Int(i32::from_sql(ty, raw)?.into()),
            Type::INT8 => Raw::Int(i64::from_sql(ty, raw)?),
            Type::BOOL => Raw::Bool(bool::from_sql(ty, raw)?),
            Type::BYTEA => Raw::Blob(<&[u8]>::from_sql(ty, raw)?),
            _ => Raw::Text(<&str>::from_sql(ty, raw)?),
        };
        Ok(Checked(T::decode(value)?))
    }

    fn from_sql_null(_: &postgres::types::Type) -> Result<Self, Box<dyn Error + Sync + Send>> {
        Ok(Checked(T::decode(Raw::Null)?))
    }

    postgres::types::accepts!(INT2, INT4, INT8, BOOL, BYTEA, TEXT, VARCHAR, BPCHAR, NAME);
}

/// The columns of a row from `at` on: a record joined after other columns.
pub struct Shifted<'r, R>(pub &'r R, pub usize);

impl<R: Row> Row for Shifted<'_, R> {
    type Error = R::Error;

    fn value<'a, T: Stored<'a>>(&'a self, index: usize) -> Result<T, R::Error> {
        self.0.value(self.1 + index)
    }
}

// ---- records ---------------------------------------------------------------------

/// A record read from a row of its [`columns!`].
pub trait Record: Sized {
    fn read<R: Row>(row: &R) -> Result<Self, R::Error>;
}

/// Records whose fields are their columns, in order, each decoded by its type.
macro_rules! field_per_column {
    ($($record:ident { $($field:ident),* $(,)? })*) => {$(
        impl Record for $record {
            fn read<R: Row>(row: &R) -> Result<Self, R::Error> {
                let mut column = 0;
                let mut next = || {
                    column += 1;
                    column - 1
                };
                Ok($record { $($field: row.value(next())?,)* })
            }
        }
    )*};
}
field_per_column! {
    CreditSystem { id, key, name, unit, scale, active, created_at }
    WalletInfo { id, customer_id, credit_system_id, scale, created_at, low_balance_threshold }
    ApiKey { id, name, scope, secret_hash, created_at }
    ConsoleSession { token_hash, csrf_token, api_key_id, created_at, expires_at }
    Assignment {
        id, promotional_credit_id, customer_id, wallet_id, grant_id, granted_at, expires_at,
        revoked_at,
    }
    BulkRun {
        promotional_credit_id, run_id, action, idempotency_key, fingerprint, cursor, progress,
        lease_until, total, finished_at, error,
    }
    BulkResume {
        promotional_credit_id, idempotency_key, fingerprint, action, cursor, progress, saved_at,
    }
    EventRecord { id, wallet_id, sequence, kind, occurred_at, data }
    Delivery {
        id, endpoint_id, event_id, event_type, wallet_id, sequence, status, attempts,
        next_attempt_at, retry_from, created_at, last_attempt_at, last_status_code, last_error,
        attempts_before_retry,
    }
    Attempt { delivery_id, number, at, status_code, error, duration_ms }
}

/// Also of `customer_c`.
impl Record for Customer {
    fn read<R: Row>(row: &R) -> Result<Self, R::Error> {
        Ok(Customer {
            id: row.value(0)?,
            name: row.value(1)?,
            email: row.value(2)?,
            external_id: row.value(3)?,
            metadata: codec::metadata_from_text(row.value(4)?),
            created_at: row.value(5)?,
        })
    }
}

/// A wallet's row (`wallet`): its settings and its state, without its
/// grants and holds, which the caller reads next.
impl Record for (WalletInfo, Wallet) {
    fn read<R: Row>(row: &R) -> Result<Self, R::Error> {
        let wallet = Wallet {
            overdraft_limit: row.value(6)?,
            debt: row.value(7)?,
            balance: row.value(8)?,
            last_sequence: row.value(9)?,
            grants: Vec::new(),
            holds: Vec::new(),
        };
        Ok((WalletInfo::read(row)?, wallet))
    }
}

impl Record for GrantRecord {
    fn read<R: Row>(row: &R) -> Result<Self, R::Error> {
        let recurrence = match (row.value(7)?, row.value(8)?) {
            (Some(interval), Some(count)) => Some(period(interval, count)),
            _ => None,
        };
        let grant = Grant {
            id: GrantId(row.value(0)?),
            terms: GrantTerms {
                amount: row.value(2)?,
                purpose: row.value(3)?,
                priority: row.value(4)?,
                effective_at: row.value(5)?,
                expires_at: row.value(6)?,
                recurrence,
                rollover_max: row.value(9)?,
            },
            remaining: row.value(10)?,
            held: row.value(11)?,
            cycle: row.value(12)?,
            status: row.value(13)?,
            ended_at: row.value(14)?,
        };
        Ok(GrantRecord {
            grant,
            wallet_id: row.value(1)?,
            description: row.value(15)?,
            metadata: codec::metadata_from_text(row.value(16)?),
            source: row.value(17)?,
            created_at: row.value(18)?,
            scale: row.value(19)?,
        })
    }
}

impl Record for HoldRecord {
    fn read<R: Row>(row: &R) -> Result<Self, R::Error> {
        Ok(HoldRecord {
            id: row.value(0)?,
            wallet_id: row.value(1)?,
            amount: row.value(2)?,
            reservations: codec::reservations_from_text(row.value(3)?),
            status: row.value(4)?,
            expires_at: row.value(5)?,
            debit_id: row.value(6)?,
            ended_at: row.value(7)?,
            created_at: row.value(8)?,
            scale: row.value(9)?,
        })
    }
}

impl Record for DebitRecord {
    fn read<R: Row>(row: &R) -> Result<Self, R::Error> {
        Ok(DebitRecord {
            id: row.value(0)?,
            wallet_id: row.value(1)?,
            amount: row.value(2)?,
            allocations: codec::parts_from_text(row.value(3)?)
                .into_iter()
                .map(|(grant, amount)| Allocation { grant, amount })
                .collect(),
            balance_after: row.value(4)?,
            description: row.value(5)?,
            metadata: codec::metadata_from_text(row.value(6)?),
            hold_id: row.value(7)?,
            created_at: row.value(8)?,
            scale: row.value(9)?,
        })
    }
}

impl Record for EntryRecord {
    fn read<R: Row>(row: &R) -> Result<Self, R::Error> {
        Ok(EntryRecord {
            hash: row.value(10)?,
            ..entry_without_hash(row)?
        })
    }
}

/// An entry from `entry_without_hash`, its hash left as [`CHAIN_START`]
/// (the migration that adds hashes chains the entries it reads so).
pub fn entry_without_hash<R: Row>(row: &R) -> Result<EntryRecord, R::Error> {
    Ok(EntryRecord {
        id: row.value(0)?,
        wallet_id: row.value(1)?,
        sequence: row.value(2)?,
        kind: row.value(3)?,
        amount: row.value(4)?,
        balance_after: row.value(5)?,
        occurred_at: row.value(6)?,
        grant_id: row.value(7)?,
        reference: row.value(8)?,
        scale: row.value(9)?,
        hash: CHAIN_START,
    })
}

/// A wallet's chart: its last entries, oldest first, each with its
/// grant's purpose, its debt, and the rows `purpose, sum(remaining)` of
/// its grants.
impl super::PurposeLedger {
    pub(super) fn new(
        entries: Vec<(EntryRecord, Option<Purpose>)>,
        debt: i64,
        totals: Vec<(String, i64)>,
    ) -> Self {
        let mut ledger = super::PurposeLedger {
            entries,
            promotional: Amount::ZERO,
            bundled: Amount::ZERO,
            paid: Amount::ZERO,
            debt: Amount::from_atomic(debt),
        };
        for (purpose, total) in totals {
            let total = Amount::from_atomic(total);
            match Purpose::parse(&purpose) {
                Some(Purpose::Promotional) => ledger.promotional = total,
                Some(Purpose::Bundled) => ledger.bundled = total,
                Some(Purpose::Paid) => ledger.paid = total,
                None => {}
            }
        }
        ledger
    }
}

/// A kept response in its columns: `status` and `body`, or for a debit
/// `debit_id` (with `status` 0 and an empty `body`).
impl Record for KeptResponse {
    fn read<R: Row>(row: &R) -> Result<Self, R::Error> {
        Ok(KeptResponse {
            key: row.value(0)?,
            fingerprint: row.value(1)?,
            kept: match row.value(4)? {
                Some(id) => Kept::Debit(id),
                None => Kept::Response(StoredResponse {
                    status: row.value(2)?,
                    body: row.value(3)?,
                }),
            },
            at: row.value(5)?,
        })
    }
}

impl Record for PromotionalCredit {
    fn read<R: Row>(row: &R) -> Result<Self, R::Error> {
        let access_period = match (row.value(8)?, row.value(9)?) {
            (Some(count), Some(unit)) => Some(period(unit, count)),
            _ => None,
        };
        Ok(PromotionalCredit {
            id: row.value(0)?,
            name: row.value(1)?,
            description: row.value(2)?,
            credit_system_id: row.value(3)?,
            starts_at: row.value(4)?,
            ends_at: row.value(5)?,
            policy: Policy {
                quantity: row.value(6)?,
                // `never` reads as no interval.
                reset_interval: Interval::parse(row.value(7)?),
                access_period,
                allow_multiple_grants: row.value(10)?,
            },
            applied: row.value(11)?,
            created_at: row.value(12)?,
            scale: row.value(13)?,
        })
    }
}

/// `customer_c`, then the customer's active assignments, when it was last
/// granted, when last revoked, and whether its latest assignment is revoked.
impl Record for PromotionCustomer {
    fn read<R: Row>(row: &R) -> Result<Self, R::Error> {
        Ok(PromotionCustomer {
            customer: Customer::read(row)?,
            active_assignments: row.value(6)?,
            last_granted_at: row.value(7)?,
            revoked_at: row.value(8)?,
            latest_revoked: row.value(9)?,
        })
    }
}

impl Record for WebhookEndpoint {
    fn read<R: Row>(row: &R) -> Result<Self, R::Error> {
        Ok(WebhookEndpoint {
            id: row.value(0)?,
            url: row.value(1)?,
            description: row.value(2)?,
            event_types: codec::strings_from_text(row.value(3)?),
            secret: row.value(4)?,
            enabled: row.value(5)?,
            created_at: row.value(6)?,
        })
    }
}

/// How many columns `delivery` has.
const DELIVERY_COLUMNS: usize = 15;

impl Record for DeliveryJob {
    fn read<R: Row>(row: &R) -> Result<Self, R::Error> {
        Ok(DeliveryJob {
            delivery: Delivery::read(row)?,
            url: row.value(DELIVERY_COLUMNS)?,
            secret: row.value(DELIVERY_COLUMNS + 1)?,
            event: EventRecord::read(&Shifted(row, DELIVERY_COLUMNS + 2))?,
        })
    }
}

#[cfg(test)]
mod tests {
    /// A claimed delivery's endpoint and event columns start where
    /// `delivery`'s end.
    #[test]
    fn a_job_reads_past_every_delivery_column() {
        assert_eq!(
            columns!(delivery).split(',').count(),
            super::DELIVERY_COLUMNS
        );
    }
}
