//! `metrics.rs` again, on PostgreSQL.

#[path = "metrics.rs"]
mod suite;
