//! credstack-core: the pure domain of the credit ledger. Amounts, calendar
//! periods, grants, drawdown, holds and the wallet state machine.
//!
//! Architecture invariant: this crate does no IO, reads no clock and
//! generates no ids. Every function that depends on time takes `now`; every
//! new object's id is passed in. That makes every rule testable by data.

pub mod amount;
pub mod grant;
pub mod promotion;
pub mod time;
pub mod wallet;

pub use amount::{Amount, AmountError, Scale};
pub use grant::{Grant, GrantId, GrantStatus, GrantTerms, Purpose};
pub use time::{Instant, Interval, Period};
pub use wallet::{
    Allocation, Changes, DebitId, Entry, EntryKind, Happened, Hold, HoldEnd, HoldId, Reference,
    Rejection, Reservation, Summary, Wallet,
};
