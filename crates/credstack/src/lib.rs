//! credstack: a credit ledger for usage-based products. One binary serves
//! the HTTP API and runs the CLI; this library holds the application so that
//! tests and benchmarks can run it in-process.
//!
//! Layers, from the edge in: the edges (`http`, the router and routes;
//! `console`; `usage`, NATS; `webhooks`, delivery) → `wire` (the API's JSON,
//! shared by the edges) → `ledger` (the service API) → `engine` (the single
//! writer, group commit) → `store` (SQL) → `records`. Imports run only that
//! way (ARCHITECTURE.md lists which module may import which;
//! `tests/layering.rs` checks there is no circle). The domain rules live in
//! the `credstack-core` crate, which does no IO.

pub mod backup;
pub mod body;
pub mod cli;
pub mod clock;
pub mod console;
pub mod engine;
pub mod error;
pub mod events;
pub mod history;
pub mod http;
pub mod ids;
pub mod ledger;
pub mod metrics;
pub mod records;
pub mod server;
pub mod store;
pub mod usage;
pub mod verify;
pub mod webhooks;
pub mod wire;
