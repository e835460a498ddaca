//! The API's JSON: what every edge that speaks the API reads and writes.
//!
//! The HTTP routes (`http/`) answer with these shapes, and so do the other
//! edges that carry API objects without HTTP: a webhook delivery's body is
//! an event as `GET /v1/events/{id}` shows it (`webhooks.rs`). So they live
//! here, below every edge, rather than in `http/`, which nothing below the
//! router may import.
//!
//! What this module serializes is a compatibility promise (SPEC §3): field
//! names and the OpenAPI schema names (the type names here) never change.
//!
//! Imports: the engine's views, records, ids and the core; never an edge
//! (`http`, `console`, `usage`, `webhooks`).

mod error;
mod shapes;

pub use error::ApiError;
pub use shapes::*;
