//! The outbox: every ledger change writes its events in its own commit
//! (`emit`, numbered 1, 2, 3… per wallet), and the delivery loop
//! (`webhooks.rs`) fans them out into deliveries, claims those due and
//! records how each attempt ended, each through the writer.
//!
//! Owns: event numbering and the outbox's writes.
//! May not: send anything (the delivery loop does), or read the clock for
//! an event's instant (a change's own instant is passed in).

use super::Outcome;
use super::sink::Change;
use super::writer::Writer;
use crate::error::{Error, Result};
use crate::records::*;
use crate::store::StoreResult;

impl Writer {
    /// Fans events out of the outbox: one pending delivery per enabled
    /// endpoint that wants each, in the commit that marks it dispatched. On
    /// PostgreSQL the events are locked as they are read, so two nodes
    /// fan out different events.
    pub(super) fn dispatch_events(&mut self, limit: usize) -> Result<Outcome> {
        let events = self.store()?.undispatched_events(limit)?;
        if events.is_empty() {
            return Ok(Outcome::Dispatched(0));
        }
        let endpoints = self.store()?.webhook_endpoints()?;
        let wall = chrono::Utc::now();
        let mut deliveries = Vec::new();
        for event in &events {
            for endpoint in endpoints
                .iter()
                .filter(|endpoint| endpoint.enabled && endpoint.wants(event.kind))
            {
                deliveries.push(Delivery {
                    id: self.ids.next(),
                    endpoint_id: endpoint.id,
                    event_id: event.id,
                    event_type: event.kind,
                    wallet_id: event.wallet_id,
                    sequence: event.sequence,
                    status: DeliveryStatus::Pending,
                    attempts: 0,
                    next_attempt_at: Some(wall),
                    retry_from: wall,
                    attempts_before_retry: 0,
                    created_at: wall,
                    last_attempt_at: None,
                    last_status_code: None,
                    last_error: None,
                });
            }
        }
        let store = self.store()?;
        store.insert_deliveries(&deliveries)?;
        let ids: Vec<u128> = events.iter().map(|event| event.id).collect();
        store.mark_dispatched(&ids)?;
        Ok(Outcome::Dispatched(events.len()))
    }

    /// Puts an event in the outbox, in the batch's commit, numbered after
    /// the wallet's last. The wallet is one the batch changed, so it is in
    /// memory and locked, and its version moves with the commit: another
    /// node holding it reloads it, and reads its last event number again.
    pub(super) fn emit(
        &mut self,
        wallet_id: u128,
        event: crate::events::Emitted,
    ) -> StoreResult<()> {
        let known = self
            .wallets
            .get(&wallet_id)
            .and_then(|cached| cached.events);
        let last = match known {
            Some(last) => last,
            None => self.store()?.last_event_sequence(wallet_id)?,
        };
        let cached = self
            .wallets
            .get_mut(&wallet_id)
            .expect("an event's wallet was changed in this batch, so it is cached");
        cached.events = Some(last + 1);
        self.touched
            .entry(wallet_id)
            .or_insert_with(|| cached.wallet.grants.clone());
        let data = crate::events::data_text(&cached.info, event.data);
        self.sink.write(Change::Event(EventRecord {
            id: self.ids.next(),
            wallet_id,
            sequence: last + 1,
            kind: event.kind,
            occurred_at: event.at,
            data,
        }))
    }

    pub(super) fn claim_deliveries(
        &mut self,
        limit: &usize,
        lease: &chrono::Duration,
    ) -> Result<Outcome> {
        let wall = chrono::Utc::now();
        let jobs = self
            .store()?
            .claim_deliveries(wall, wall + *lease, *limit)?;
        Ok(Outcome::Claimed(jobs))
    }

    pub(super) fn finish_attempts(
        &mut self,
        attempts: &[(Attempt, AttemptEnd)],
    ) -> Result<Outcome> {
        for (attempt, end) in attempts {
            self.store()?.finish_attempt(attempt, end)?;
        }
        Ok(Outcome::Done)
    }

    pub(super) fn release_waiting_deliveries(&mut self) -> Result<Outcome> {
        let released = self
            .store()?
            .release_waiting_deliveries(chrono::Utc::now())?;
        Ok(Outcome::Dispatched(
            usize::try_from(released).unwrap_or(usize::MAX),
        ))
    }

    pub(super) fn redeliver(&mut self, id: &u128) -> Result<Outcome> {
        if !self.store()?.redeliver(*id, chrono::Utc::now())? {
            self.store()?.delivery(*id)?.ok_or(Error::NotFound {
                what: "webhook delivery",
            })?;
            return Err(Error::conflict(
                "delivery_pending",
                "the delivery is pending: its attempts go on",
            ));
        }
        let delivery = self.store()?.delivery(*id)?.expect("just redelivered");
        Ok(Outcome::Delivery(Box::new(delivery)))
    }
}
