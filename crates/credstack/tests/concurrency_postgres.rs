//! `concurrency.rs` again, on PostgreSQL.

#[path = "concurrency.rs"]
mod suite;
