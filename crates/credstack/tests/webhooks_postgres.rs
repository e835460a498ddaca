//! `webhooks.rs` again, with the server on a fresh PostgreSQL database.

#[path = "webhooks.rs"]
mod suite;
