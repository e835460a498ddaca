//! Object ids: 128-bit ULIDs, time-ordered, shown on the wire with a type
//! prefix (`wal_01J…`). Stored as 16 big-endian bytes so that byte order is
//! creation order, which is what "newest first" lists page by.

use std::sync::Mutex;

/// The prefix of each object type's id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    CreditSystem,
    Customer,
    Wallet,
    Grant,
    Debit,
    Hold,
    Entry,
    ApiKey,
    PromotionalCredit,
    Assignment,
    /// A console background job.
    Job,
    Event,
    WebhookEndpoint,
    WebhookDelivery,
}

impl Kind {
    pub fn prefix(self) -> &'static str {
        match self {
            Kind::CreditSystem => "cs",
            Kind::Customer => "cus",
            Kind::Wallet => "wal",
            Kind::Grant => "gr",
            Kind::Debit => "deb",
            Kind::Hold => "hold",
            Kind::Entry => "ent",
            Kind::ApiKey => "key",
            Kind::PromotionalCredit => "pc",
            Kind::Assignment => "pca",
            Kind::Job => "job",
            Kind::Event => "evt",
            Kind::WebhookEndpoint => "we",
            Kind::WebhookDelivery => "whd",
        }
    }
}

pub fn format(kind: Kind, id: u128) -> String {
    format!("{}_{}", kind.prefix(), ulid::Ulid(id))
}

/// Parses `prefix_ULID`; `None` for any other shape, including another type's prefix.
pub fn parse(kind: Kind, text: &str) -> Option<u128> {
    let rest = text.strip_prefix(kind.prefix())?.strip_prefix('_')?;
    if rest.len() != 26 {
        return None;
    }
    ulid::Ulid::from_string(rest).ok().map(|u| u.0)
}

pub fn to_bytes(id: u128) -> [u8; 16] {
    id.to_be_bytes()
}

pub fn from_bytes(bytes: &[u8]) -> u128 {
    let array: [u8; 16] = bytes.try_into().expect("ids are stored as 16 bytes");
    u128::from_be_bytes(array)
}

/// A monotonic ULID generator: ids made by one process strictly increase.
pub struct Generator(Mutex<ulid::Generator>);

impl Default for Generator {
    fn default() -> Self {
        Generator(Mutex::new(ulid::Generator::new()))
    }
}

impl Generator {
    pub fn next(&self) -> u128 {
        let mut generator = self.0.lock().expect("id generator lock");
        loop {
            // Overflow of the random part within one millisecond is
            // astronomically rare; waiting for the next millisecond fixes it.
            if let Ok(id) = generator.generate() {
                return id.0;
            }
            std::thread::yield_now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_prefix_check() {
        let generator = Generator::default();
        let a = generator.next();
        let b = generator.next();
        assert!(b > a);
        let text = format(Kind::Wallet, a);
        assert!(text.starts_with("wal_"));
        assert_eq!(parse(Kind::Wallet, &text), Some(a));
        assert_eq!(parse(Kind::Customer, &text), None);
        assert_eq!(parse(Kind::Wallet, "wal_nope"), None);
        assert_eq!(from_bytes(&to_bytes(a)), a);
    }
}
