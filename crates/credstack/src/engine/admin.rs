//! Administrative operations: credit systems, customers, API keys, console
//! sessions, webhook endpoints, and the purge of what is kept for a time.
//!
//! Owns: checking and writing these records, each through the batch's sink.
//! May not: touch a wallet's balance.

use super::validate::{
    TEXT_SHORT_MAX, checked_event_types, checked_metadata, checked_opt_text, checked_text,
    checked_url, hash_secret,
};
use super::writer::Writer;
use super::{IDEMPOTENCY_KEEP_HOURS, Outcome};
use crate::error::{Error, Result};
use crate::ids::Kind;
use crate::records::*;
use credstack_core::{Instant, Scale};

impl Writer {
    pub(super) fn create_credit_system(
        &mut self,
        key: &str,
        name: &str,
        unit: &str,
        scale: u8,
        now: Instant,
    ) -> Result<Outcome> {
        let valid_key = !key.is_empty()
            && key.len() <= 64
            && key
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !valid_key {
            return Err(Error::invalid(
                "key",
                "must be 1 to 64 characters of a-z, 0-9, _ and -",
            ));
        }
        let scale =
            Scale::new(scale).ok_or_else(|| Error::invalid("scale", "must be between 0 and 6"))?;
        if self.store()?.credit_system_by_key(key)?.is_some() {
            return Err(Error::Conflict {
                code: "credit_system_key_taken",
                message: format!("a credit system with key {key:?} already exists"),
                param: Some("key".into()),
            });
        }
        let cs = CreditSystem {
            id: self.ids.next(),
            key: key.to_string(),
            name: checked_text("name", name, TEXT_SHORT_MAX)?,
            unit: checked_text("unit", unit, 32)?,
            scale,
            active: true,
            created_at: now,
        };
        self.store()?.upsert_credit_system(&cs)?;
        Ok(Outcome::CreditSystem(cs))
    }

    pub(super) fn save_customer(&mut self, customer: &Customer) -> Result<()> {
        if let Some(external_id) = &customer.external_id
            && let Some(other) = self.store()?.customer_by_external_id(external_id)?
            && other.id != customer.id
        {
            return Err(Error::Conflict {
                code: "external_id_taken",
                message: "another customer has this external_id".into(),
                param: Some("external_id".into()),
            });
        }
        self.store()?.upsert_customer(customer)?;
        Ok(())
    }

    pub(super) fn update_credit_system(
        &mut self,
        id: &u128,
        name: &Option<String>,
        active: &Option<bool>,
    ) -> Result<Outcome> {
        let mut cs = self.store()?.credit_system(*id)?.ok_or(Error::NotFound {
            what: "credit system",
        })?;
        if let Some(name) = name {
            cs.name = checked_text("name", name, TEXT_SHORT_MAX)?;
        }
        if let Some(active) = active {
            cs.active = *active;
        }
        self.store()?.upsert_credit_system(&cs)?;
        Ok(Outcome::CreditSystem(cs))
    }

    pub(super) fn create_customer(
        &mut self,
        name: &str,
        email: &Option<String>,
        external_id: &Option<String>,
        metadata: &Metadata,
        now: Instant,
    ) -> Result<Outcome> {
        let customer = Customer {
            id: self.ids.next(),
            name: checked_text("name", name, TEXT_SHORT_MAX)?,
            email: checked_opt_text("email", email.as_deref())?,
            external_id: checked_opt_text("external_id", external_id.as_deref())?,
            metadata: checked_metadata(metadata)?,
            created_at: now,
        };
        self.save_customer(&customer)?;
        Ok(Outcome::Customer(customer))
    }

    pub(super) fn update_customer(
        &mut self,
        id: &u128,
        name: &Option<String>,
        email: &Option<Option<String>>,
        external_id: &Option<Option<String>>,
        metadata: &Option<Metadata>,
    ) -> Result<Outcome> {
        let mut customer = self
            .store()?
            .customer(*id)?
            .ok_or(Error::NotFound { what: "customer" })?;
        if let Some(name) = name {
            customer.name = checked_text("name", name, TEXT_SHORT_MAX)?;
        }
        if let Some(email) = email {
            customer.email = checked_opt_text("email", email.as_deref())?;
        }
        if let Some(external_id) = external_id {
            customer.external_id = checked_opt_text("external_id", external_id.as_deref())?;
        }
        if let Some(metadata) = metadata {
            customer.metadata = checked_metadata(metadata)?;
        }
        self.save_customer(&customer)?;
        Ok(Outcome::Customer(customer))
    }

    pub(super) fn create_api_key(
        &mut self,
        name: &str,
        scope: &Scope,
        secret: &str,
        now: Instant,
    ) -> Result<Outcome> {
        let key = ApiKey {
            id: self.ids.next(),
            name: checked_text("name", name, TEXT_SHORT_MAX)?,
            scope: *scope,
            secret_hash: hash_secret(secret),
            created_at: now,
        };
        // Only the bootstrap key has a secret chosen outside; two
        // nodes starting with the same one race to store it.
        if self
            .store()?
            .api_keys()?
            .iter()
            .any(|k| k.secret_hash == key.secret_hash)
        {
            return Err(Error::conflict(
                "api_key_exists",
                "a key with this secret already exists",
            ));
        }
        self.store()?.insert_api_key(&key)?;
        Ok(Outcome::ApiKey {
            key,
            secret: Some(secret.to_string()),
        })
    }

    pub(super) fn delete_api_key(&mut self, id: &u128) -> Result<Outcome> {
        if !self.store()?.delete_api_key(*id)? {
            return Err(Error::NotFound { what: "API key" });
        }
        Ok(Outcome::Deleted {
            kind: Kind::ApiKey,
            id: *id,
        })
    }

    pub(super) fn purge_expired(&mut self, now: Instant) -> Result<Outcome> {
        let before = now - chrono::Duration::hours(IDEMPOTENCY_KEEP_HOURS);
        self.store()?.purge_idempotency(before)?;
        let wall_before = chrono::Utc::now() - chrono::Duration::hours(IDEMPOTENCY_KEEP_HOURS);
        self.store()?.purge_bulk_resumes(wall_before, None)?;
        self.store()?.purge_sessions(chrono::Utc::now())?;
        Ok(Outcome::Done)
    }

    pub(super) fn create_session(&mut self, session: &ConsoleSession) -> Result<Outcome> {
        self.store()?.insert_session(session)?;
        Ok(Outcome::Done)
    }

    pub(super) fn delete_session(&mut self, token_hash: &[u8; 32]) -> Result<Outcome> {
        self.store()?.delete_session(token_hash)?;
        Ok(Outcome::Done)
    }

    pub(super) fn create_webhook_endpoint(
        &mut self,
        url: &str,
        description: &Option<String>,
        event_types: &[String],
        secret: &str,
        now: Instant,
    ) -> Result<Outcome> {
        let endpoint = WebhookEndpoint {
            id: self.ids.next(),
            url: checked_url(url)?,
            description: checked_opt_text("description", description.as_deref())?,
            event_types: checked_event_types(event_types)?,
            secret: secret.to_string(),
            enabled: true,
            created_at: now,
        };
        self.store()?.upsert_webhook_endpoint(&endpoint)?;
        Ok(Outcome::WebhookEndpoint {
            endpoint: Box::new(endpoint),
            secret: Some(secret.to_string()),
        })
    }

    pub(super) fn update_webhook_endpoint(
        &mut self,
        id: &u128,
        url: &Option<String>,
        description: &Option<Option<String>>,
        event_types: &Option<Vec<String>>,
        enabled: &Option<bool>,
    ) -> Result<Outcome> {
        let mut endpoint = self
            .store()?
            .webhook_endpoint(*id)?
            .ok_or(Error::NotFound {
                what: "webhook endpoint",
            })?;
        if let Some(url) = url {
            endpoint.url = checked_url(url)?;
        }
        if let Some(description) = description {
            endpoint.description = checked_opt_text("description", description.as_deref())?;
        }
        if let Some(types) = event_types {
            endpoint.event_types = checked_event_types(types)?;
        }
        if let Some(enabled) = enabled {
            endpoint.enabled = *enabled;
        }
        self.store()?.upsert_webhook_endpoint(&endpoint)?;
        Ok(Outcome::WebhookEndpoint {
            endpoint: Box::new(endpoint),
            secret: None,
        })
    }

    pub(super) fn delete_webhook_endpoint(&mut self, id: &u128) -> Result<Outcome> {
        if !self.store()?.delete_webhook_endpoint(*id)? {
            return Err(Error::NotFound {
                what: "webhook endpoint",
            });
        }
        Ok(Outcome::Deleted {
            kind: Kind::WebhookEndpoint,
            id: *id,
        })
    }
}
