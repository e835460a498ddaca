//! `crash.rs` again, on PostgreSQL: the same kills, checks and `verify`,
//! with the server on a fresh PostgreSQL database.

#[path = "crash.rs"]
mod suite;
