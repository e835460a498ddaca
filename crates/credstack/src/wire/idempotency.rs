//! Idempotency keys as the API takes them, and the fingerprint of a debit.
//!
//! A debit reaches the ledger from HTTP (`POST /v1/wallets/{id}/debits`, an
//! item of `POST /v1/debits/batch`) and from NATS (`usage.rs`); each builds
//! its fingerprint with [`debit_idempotency`], so the same usage sent either
//! way under one key replays instead of debiting twice, and a key reused for
//! other usage is refused alike. Changing what it hashes would make every
//! kept key answer `409 idempotency_key_reused` to its own retry.

use crate::engine::{Idempotency, NewDebit};

/// Longest idempotency key (SPEC rule 18).
pub const IDEMPOTENCY_KEY_MAX: usize = 255;

/// 1 to [`IDEMPOTENCY_KEY_MAX`] visible ASCII characters.
pub fn valid_idempotency_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= IDEMPOTENCY_KEY_MAX
        && key.bytes().all(|b| (0x21..0x7f).contains(&b))
}

/// A debit's idempotency fingerprint covers what it does, not how it was
/// sent, so a batch item retried as a single debit (or back) replays.
pub fn debit_idempotency(key: String, debit: &NewDebit) -> Idempotency {
    let metadata = serde_json::to_string(&debit.metadata).expect("a string map serializes");
    Idempotency::new(
        key,
        &[
            b"debit",
            &debit.wallet_id.to_be_bytes(),
            debit.amount.as_bytes(),
            debit.description.as_deref().unwrap_or("").as_bytes(),
            metadata.as_bytes(),
        ],
    )
}
