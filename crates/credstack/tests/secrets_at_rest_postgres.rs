//! `secrets_at_rest.rs` again, on PostgreSQL: the harness runs every server of a test
//! target whose name ends in `_postgres` on a fresh PostgreSQL database
//! (see `tests/common/mod.rs`).

#[path = "secrets_at_rest.rs"]
mod suite;
