//! The API's wire: what every edge that speaks the API reads, writes and
//! keeps, below all of them.
//!
//! Four edges speak the API: the HTTP routes (`http/`), the console's forms
//! (`console/`, which show the API's error messages), the NATS usage
//! consumer (`usage.rs`, a debit without HTTP) and webhook delivery
//! (`webhooks.rs`, whose body is an event as `GET /v1/events/{id}` shows
//! it). What they share lives here rather than in `http/`, which nothing
//! but the command line and the server may import:
//! - `shapes.rs` — the JSON of every object, request body, list and error
//!   (`…Wire`, `List`, `ErrorBody`);
//! - `error.rs` — [`ApiError`], the API's error object, and the one mapping
//!   of a ledger `Error` onto its status, code and message;
//! - `render.rs` — [`render`], a ledger result as the API answers it (status
//!   and body): what the writer keeps under an idempotency key, so a replay
//!   answers the same bytes whichever edge asks again; [`batch_result`], one
//!   item of a batch debit;
//! - `idempotency.rs` — [`debit_idempotency`], a debit's idempotency
//!   fingerprint, one function for HTTP and NATS, so the same debit sent
//!   either way under one key replays; [`valid_idempotency_key`], the keys
//!   the API takes.
//!
//! What this module serializes and hashes is a compatibility promise (SPEC
//! §3): field names, the OpenAPI schema names (the type names here), error
//! codes and fingerprints never change.
//!
//! Imports: the engine's requests, replies and views, records, ids, the
//! ledger error and the core; never an edge (`http`, `console`, `usage`,
//! `webhooks`), nor the ledger service. The engine, below it, does not know
//! it: it is handed [`render`] as a function (`engine::Render`).

mod error;
mod idempotency;
mod render;
mod shapes;

pub use error::ApiError;
pub use idempotency::{IDEMPOTENCY_KEY_MAX, debit_idempotency, valid_idempotency_key};
pub use render::{batch_result, render, skipped_wire};
pub use shapes::*;
