//! How both stores write the values SQL has no type for: metadata maps,
//! debit allocations, hold reservations and name lists as JSON text, and LIKE patterns.
//! One codec, so a row written by one backend reads the same in the other.

use crate::records::Metadata;
use credstack_core::{Amount, GrantId, Reservation};

pub fn metadata_to_text(metadata: &Metadata) -> String {
    serde_json::to_string(metadata).expect("a string map serializes")
}

pub fn metadata_from_text(text: &str) -> Metadata {
    serde_json::from_str(text).expect("stored metadata is a string map")
}

/// A list of names (a webhook endpoint's event types) as a JSON array.
pub fn strings_to_text(strings: &[String]) -> String {
    serde_json::to_string(strings).expect("strings serialize")
}

pub fn strings_from_text(text: &str) -> Vec<String> {
    serde_json::from_str(text).expect("stored names are a string list")
}

fn grant_hex(grant: Option<GrantId>) -> Option<String> {
    grant.map(|g| format!("{:032x}", g.0))
}

fn grant_from_hex(hex: String) -> GrantId {
    GrantId(u128::from_str_radix(&hex, 16).expect("stored grant ids are hex"))
}

/// Allocations as `[[grant_hex_or_null, atomic], ...]`.
pub fn parts_to_text(parts: impl Iterator<Item = (Option<GrantId>, Amount)>) -> String {
    let values: Vec<serde_json::Value> = parts
        .map(|(grant, amount)| serde_json::json!([grant_hex(grant), amount.atomic()]))
        .collect();
    serde_json::Value::Array(values).to_string()
}

pub fn parts_from_text(text: &str) -> Vec<(Option<GrantId>, Amount)> {
    let values: Vec<(Option<String>, i64)> =
        serde_json::from_str(text).expect("stored parts are well formed");
    values
        .into_iter()
        .map(|(grant, atomic)| (grant.map(grant_from_hex), Amount::from_atomic(atomic)))
        .collect()
}

/// Reservations as `[[grant_hex_or_null, atomic, cycle], ...]`.
pub fn reservations_to_text(reservations: &[Reservation]) -> String {
    let values: Vec<serde_json::Value> = reservations
        .iter()
        .map(|r| serde_json::json!([grant_hex(r.grant), r.amount.atomic(), r.cycle]))
        .collect();
    serde_json::Value::Array(values).to_string()
}

pub fn reservations_from_text(text: &str) -> Vec<Reservation> {
    let values: Vec<(Option<String>, i64, u64)> =
        serde_json::from_str(text).expect("stored reservations are well formed");
    values
        .into_iter()
        .map(|(grant, atomic, cycle)| Reservation {
            grant: grant.map(grant_from_hex),
            amount: Amount::from_atomic(atomic),
            cycle,
        })
        .collect()
}

/// Escapes `\`, `%` and `_` for a `LIKE … ESCAPE '\'` pattern. NUL is
/// dropped: no stored text holds it, and PostgreSQL refuses it in a query.
pub fn like_escape(text: &str) -> String {
    text.replace('\0', "")
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}
