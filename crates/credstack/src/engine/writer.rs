//! The writer loop: the one thread that changes the store. It takes whatever
//! requests are queued (up to [`super::BATCH_MAX`]), applies each in order to
//! its in-memory wallet states, hands what they write to its [`Sink`], commits
//! once (one durable commit for the whole batch: group commit), and only then
//! answers each caller. A failed commit answers every caller of the batch
//! with `Unavailable` and drops the in-memory states it touched, which reload
//! from the store.
//!
//! Owns: batching, running a conflicting batch again, idempotency (looking
//! keys up, replaying, keeping responses), the cache of wallet states and
//! their locks, and handing each request to its operation (`wallets.rs`,
//! `admin.rs`, `outbox.rs`, `promotions.rs`).
//! May not: know how a batch is stored (that is the sink's), nor the wire
//! format (responses are rendered by [`Render`]).
//!
//! Invariants: a caller hears success only after its change is durable; an
//! idempotency record is written in the same commit as the change it guards;
//! the in-memory state of a wallet always equals committed state plus the
//! batch in flight.

use super::promotions::RunEnd;
use super::request::named_wallets;
use super::sink::{Change, Sink, StoreFailure};
use super::{BATCH_MAX, Envelope, Idempotency, Outcome, Render, Reply, Request, WALLET_CACHE_MAX};
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::ids::Generator;
use crate::metrics::Metrics;
use crate::records::*;
use crate::store::{Store, StoreError, StoreResult};
use credstack_core::{Grant, Wallet};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::mpsc;

/// How many times a batch runs before its callers hear `Unavailable`
/// because it kept conflicting with other writers.
const BATCH_ATTEMPTS_MAX: u32 = 8;

/// A wallet as the writer keeps it: the state and the `version` it has in
/// the store once the batch in flight commits.
pub(super) struct Cached {
    pub(super) info: WalletInfo,
    pub(super) wallet: Wallet,
    pub(super) version: i64,
    /// The wallet's last entry, which its next entry follows.
    pub(super) chain: ChainHead,
    /// The sequence of its last event, once read (see `emit`).
    pub(super) events: Option<u64>,
}

pub(super) struct Writer {
    /// Where every batch goes: the store directly, or the journal.
    pub(super) sink: Box<dyn Sink>,
    pub(super) clock: Arc<Clock>,
    pub(super) ids: Arc<Generator>,
    pub(super) render: Render,
    pub(super) metrics: Arc<Metrics>,
    /// Wallets the writer has touched: committed state plus the batch in
    /// flight. An entry is trusted only once its row is locked in the
    /// batch's transaction and its version matches (see `lock`).
    pub(super) wallets: HashMap<u128, Cached>,
    /// Wallets locked in the transaction in flight, with the version the
    /// store had when the lock was taken.
    pub(super) locked: HashMap<u128, i64>,
    /// Wallets changed in the batch in flight, with their grants as they were before it.
    pub(super) touched: HashMap<u128, Vec<Grant>>,
    /// What the batch in flight knows of its idempotency keys: the kept
    /// response, or `None` for a key the store does not have. Looked up
    /// for the whole batch in one statement, then kept up to date.
    pub(super) known: HashMap<String, Option<([u8; 32], Kept)>>,
}

impl Writer {
    pub(super) fn run(mut self, mut receiver: mpsc::Receiver<Envelope>) {
        let mut batch: Vec<Envelope> = Vec::with_capacity(BATCH_MAX);
        while let Some(first) = receiver.blocking_recv() {
            batch.push(first);
            while batch.len() < BATCH_MAX {
                match receiver.try_recv() {
                    Ok(envelope) => batch.push(envelope),
                    Err(_) => break,
                }
            }
            let replies = self.run_batch(&batch);
            for (envelope, reply) in batch.drain(..).zip(replies) {
                self.count(&envelope.request, &reply);
                let _ = envelope.reply.send(reply);
            }
        }
        self.sink.stop();
        tracing::info!("writer stopped: every acknowledged write is committed");
    }

    /// Counts a debit's answer (single, batch items, hold captures).
    fn count(&self, request: &Request, reply: &Reply) {
        match (request, reply) {
            (Request::Debit(_) | Request::CaptureHold { .. }, reply) => self.metrics.debit(reply),
            (Request::DebitBatch(_), Reply::Fresh(Ok(Outcome::DebitBatch(items)))) => {
                items.iter().for_each(|item| self.metrics.debit(item));
            }
            (Request::DebitBatch(items), reply) => {
                items.iter().for_each(|_| self.metrics.debit(reply));
            }
            _ => {}
        }
    }

    fn run_batch(&mut self, batch: &[Envelope]) -> Vec<Reply> {
        let started = std::time::Instant::now();
        for attempt in 1..=BATCH_ATTEMPTS_MAX {
            match self.try_batch(batch) {
                Ok(replies) => {
                    self.metrics.commit(batch.len(), started.elapsed());
                    return replies;
                }
                Err(failure) => {
                    self.forget_batch();
                    if failure.retryable && attempt < BATCH_ATTEMPTS_MAX {
                        tracing::debug!(
                            attempt,
                            "batch conflicted with another writer; running it again"
                        );
                        continue;
                    }
                    tracing::error!("batch failed; rolled back, nothing acknowledged");
                    if !failure.retryable {
                        // The failure may have been a commit whose outcome
                        // is unknown: trust no cached state.
                        self.wallets.clear();
                    }
                    break;
                }
            }
        }
        batch
            .iter()
            .map(|_| Reply::Fresh(Err(Error::Unavailable)))
            .collect()
    }

    fn try_batch(&mut self, batch: &[Envelope]) -> std::result::Result<Vec<Reply>, StoreFailure> {
        let ledger_only = batch.iter().all(|envelope| envelope.request.ledger_only());
        self.sink.begin(ledger_only)?;
        // Lock every wallet the batch names in one statement; wallets found
        // only while applying (a hold's, a campaign's) are locked then.
        let mut named = Vec::new();
        let (mut holds, mut grants) = (Vec::new(), Vec::new());
        for envelope in batch {
            named_wallets(&envelope.request, &mut named);
            match &envelope.request {
                Request::CaptureHold { id, .. } | Request::ReleaseHold { id } => holds.push(*id),
                Request::VoidGrant { id } => grants.push(*id),
                _ => {}
            }
        }
        // Wallets named through a hold or a grant join them, so every lock
        // of the batch is taken in one id order: two nodes capturing and
        // debiting on the same wallets queue instead of deadlocking.
        if !holds.is_empty() {
            named.extend(self.store()?.hold_wallet_ids(&holds)?);
        }
        if !grants.is_empty() {
            named.extend(self.store()?.grant_wallet_ids(&grants)?);
        }
        self.lock(&named)?;
        self.look_up_keys(batch)?;
        let mut replies = Vec::with_capacity(batch.len());
        for envelope in batch {
            let reply =
                self.apply_with_idempotency(&envelope.request, envelope.idempotency.as_ref())?;
            replies.push(reply);
        }
        self.flush()?;
        self.sink.commit()?;
        // Only now do the cached states equal the store.
        self.touched.clear();
        self.locked.clear();
        self.known.clear();
        self.bound_cache();
        Ok(replies)
    }

    /// Rolls back the transaction in flight and drops every in-memory state
    /// it may have changed; they reload from the store when next touched.
    fn forget_batch(&mut self) {
        self.sink.rollback();
        for (wallet_id, _) in self.touched.drain() {
            self.wallets.remove(&wallet_id);
        }
        self.locked.clear();
        self.known.clear();
    }

    /// The store as the batch sees it (see [`Sink::store`]).
    pub(super) fn store(&mut self) -> StoreResult<&mut dyn Store> {
        self.sink.store()
    }

    /// Looks up every idempotency key of the batch in one statement.
    fn look_up_keys(&mut self, batch: &[Envelope]) -> StoreResult<()> {
        let mut keys: Vec<&str> = Vec::new();
        for envelope in batch {
            keys.extend(envelope.idempotency.as_ref().map(|i| i.key.as_str()));
            if let Request::DebitBatch(items) = &envelope.request {
                keys.extend(items.iter().map(|item| item.idempotency.key.as_str()));
            }
        }
        if keys.is_empty() {
            return Ok(());
        }
        for kept in self.store()?.idempotency_many(&keys)? {
            self.known
                .insert(kept.key, Some((kept.fingerprint, kept.kept)));
        }
        for key in keys {
            self.known.entry(key.to_string()).or_insert(None);
        }
        Ok(())
    }

    /// Locks these wallets in the transaction in flight (those not locked
    /// yet) and drops any in-memory state another process has moved past:
    /// after this, a cached wallet equals the committed row it locked.
    pub(super) fn lock(&mut self, ids: &[u128]) -> StoreResult<()> {
        let mut wanted: Vec<u128> = ids
            .iter()
            .copied()
            .filter(|id| !self.locked.contains_key(id))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        wanted.sort_unstable();
        wanted.dedup();
        let mut to_load = Vec::new();
        match self.sink.lock_wallets(&wanted)? {
            // Only this writer changes the store: a cached wallet is current,
            // and one that is not cached is loaded (or found missing).
            None => {
                for id in wanted {
                    match self.wallets.get(&id) {
                        Some(cached) => {
                            self.locked.insert(id, cached.version);
                        }
                        None => to_load.push(id),
                    }
                }
            }
            Some(versions) => {
                for (id, version) in versions {
                    if self.wallets.get(&id).is_none_or(|c| c.version != version) {
                        self.wallets.remove(&id);
                        to_load.push(id);
                    }
                    self.locked.insert(id, version);
                }
            }
        }
        if to_load.is_empty() {
            return Ok(());
        }
        // Wallets not in memory, or moved on by another process, load together.
        for (info, wallet, chain) in self.store()?.load_wallets(&to_load)? {
            // Exclusive: the version is never compared, so it need not be read.
            let version = *self.locked.entry(info.id).or_insert(0);
            let cached = Cached {
                info,
                wallet,
                version,
                chain,
                events: None,
            };
            self.wallets.insert(cached.info.id, cached);
        }
        Ok(())
    }

    /// Keeps the in-memory wallet states within [`WALLET_CACHE_MAX`]. Runs
    /// after a commit, when every cached state equals what is on disk.
    fn bound_cache(&mut self) {
        if self.wallets.len() <= WALLET_CACHE_MAX {
            return;
        }
        // A wallet may be newer in memory than in the store (see `Sink::settled`).
        if !self.sink.settled() {
            return;
        }
        let mut to_drop = WALLET_CACHE_MAX / 10;
        self.wallets.retain(|_, _| {
            let keep = to_drop == 0;
            to_drop = to_drop.saturating_sub(1);
            keep
        });
    }

    /// Writes each touched wallet's balances (adding one to its version)
    /// and every grant that changed. `touched` stays as it is until the
    /// commit succeeds, so a failed commit drops these states too.
    fn flush(&mut self) -> std::result::Result<(), StoreFailure> {
        for (wallet_id, before) in &self.touched {
            let cached = &self.wallets[wallet_id];
            let grants = cached
                .wallet
                .grants
                .iter()
                .filter(|grant| before.iter().find(|b| b.id == grant.id) != Some(grant))
                .cloned()
                .collect();
            self.sink.write(Change::WalletState(
                cached.info.clone(),
                cached.wallet.clone(),
                grants,
            ))?;
        }
        for wallet_id in self.touched.keys() {
            let cached = self
                .wallets
                .get_mut(wallet_id)
                .expect("touched wallets are cached");
            cached.version += 1;
        }
        Ok(())
    }

    /// Applies a request, replaying or guarding it by its idempotency key.
    /// A store failure fails the whole batch: the in-memory state may then
    /// be ahead of the transaction, so it is dropped with the rollback.
    pub(super) fn apply_with_idempotency(
        &mut self,
        request: &Request,
        idempotency: Option<&Idempotency>,
    ) -> std::result::Result<Reply, StoreFailure> {
        if let Some(idempotency) = idempotency
            && let Some(reply) = self.replay(idempotency)?
        {
            // A run that finds its answer already kept (by an earlier run
            // of the same call) still ends, so its campaign is free.
            if let Request::FinishBulkRun {
                promotion_id,
                run_id,
                error,
                ..
            } = request
            {
                let end = RunEnd::Finished {
                    at: chrono::Utc::now(),
                    error: error.clone(),
                };
                match self.end_bulk_run(*promotion_id, *run_id, end) {
                    Err(Error::Unavailable) => return Err(StoreFailure { retryable: false }),
                    Err(Error::Contended) => return Err(StoreFailure { retryable: true }),
                    _ => {}
                }
            }
            return Ok(reply);
        }
        let result = self.apply(request);
        match result {
            Err(Error::Unavailable) => return Err(StoreFailure { retryable: false }),
            Err(Error::Contended) => return Err(StoreFailure { retryable: true }),
            _ => {}
        }
        if let Some(idempotency) = idempotency {
            self.remember(idempotency, &result)?;
        }
        Ok(Reply::Fresh(result))
    }

    pub(super) fn replay(&mut self, idempotency: &Idempotency) -> StoreResult<Option<Reply>> {
        let kept = match self.known.get(&idempotency.key) {
            Some(known) => known.clone(),
            None => self.store()?.idempotency(&idempotency.key)?,
        };
        Ok(match kept {
            None => None,
            Some((fingerprint, kept)) if fingerprint == idempotency.fingerprint => {
                // A debit perhaps of this batch: the store as the batch sees it has it.
                let render = self.render;
                let stored = kept_response(self.store()?, render, kept)?;
                Some(Reply::Replayed(stored))
            }
            Some(_) => Some(Reply::Fresh(Err(Error::idempotency_key_reused()))),
        })
    }

    /// Keeps what a replay answers with: the rendered response, or a
    /// debit's id (see [`Kept`]).
    fn remember(&mut self, idempotency: &Idempotency, result: &Result<Outcome>) -> StoreResult<()> {
        let kept = match result {
            Ok(Outcome::Debit(debit)) => Kept::Debit(debit.id),
            // A key's secret is shown once and never stored, not even for replays.
            Ok(Outcome::ApiKey { key, .. }) => {
                Kept::Response((self.render)(&Ok(Outcome::ApiKey {
                    key: key.clone(),
                    secret: None,
                })))
            }
            Ok(Outcome::WebhookEndpoint { endpoint, .. }) => {
                Kept::Response((self.render)(&Ok(Outcome::WebhookEndpoint {
                    endpoint: endpoint.clone(),
                    secret: None,
                })))
            }
            _ => Kept::Response((self.render)(result)),
        };
        self.known.insert(
            idempotency.key.clone(),
            Some((idempotency.fingerprint, kept.clone())),
        );
        self.sink.write(Change::Key(KeptResponse {
            key: idempotency.key.clone(),
            fingerprint: idempotency.fingerprint,
            kept,
            at: self.clock.now(),
        }))
    }

    /// Applies one request. A store failure comes back as `Error::Unavailable`.
    fn apply(&mut self, request: &Request) -> Result<Outcome> {
        let now = self.clock.now();
        match request {
            Request::CreateCreditSystem {
                key,
                name,
                unit,
                scale,
            } => self.create_credit_system(key, name, unit, *scale, now),
            Request::UpdateCreditSystem { id, name, active } => {
                self.update_credit_system(id, name, active)
            }
            Request::CreateCustomer {
                name,
                email,
                external_id,
                metadata,
            } => self.create_customer(name, email, external_id, metadata, now),
            Request::UpdateCustomer {
                id,
                name,
                email,
                external_id,
                metadata,
            } => self.update_customer(id, name, email, external_id, metadata),
            Request::CreateWallet {
                customer_id,
                credit_system_id,
                overdraft_limit,
                low_balance_threshold,
            } => self.create_wallet(
                *customer_id,
                *credit_system_id,
                overdraft_limit.as_deref(),
                low_balance_threshold.as_deref(),
                now,
            ),
            Request::UpdateWallet {
                id,
                overdraft_limit,
                low_balance_threshold,
            } => self.update_wallet(
                *id,
                overdraft_limit.as_deref(),
                low_balance_threshold.as_ref().map(Option::as_deref),
                now,
            ),
            Request::AddGrant(new) => self.add_grant(new, now),
            Request::VoidGrant { id } => self.void_grant(id, now),
            Request::Debit(new) => self.debit(new, now),
            Request::DebitBatch(items) => self.debit_batch(items),
            Request::PlaceHold {
                wallet_id,
                amount,
                expires_in_seconds,
            } => self.place_hold(*wallet_id, amount, *expires_in_seconds, now),
            Request::CaptureHold { id, amount } => self.capture(*id, amount, now),
            Request::ReleaseHold { id } => self.release_hold(id, now),
            Request::Materialise { wallet_ids } => self.materialise(wallet_ids, now),
            Request::CreateApiKey {
                name,
                scope,
                secret,
            } => self.create_api_key(name, scope, secret, now),
            Request::DeleteApiKey { id } => self.delete_api_key(id),
            Request::CreatePromotion(new) => self.create_promotion(new, now),
            Request::UpdatePromotion { id, edit } => self.update_promotion(*id, edit, now),
            Request::DeletePromotion { id } => self.delete_promotion(*id),
            Request::GrantPromotion {
                id,
                customer_ids,
                run,
            } => self.grant_promotion(*id, customer_ids, run.as_ref(), now),
            Request::RevokePromotion {
                id,
                customer_ids,
                run,
            } => self.revoke_promotion(*id, customer_ids, run.as_ref(), now),
            Request::ClaimBulkRun(claim) => self.claim_bulk_run(claim),
            Request::FinishBulkRun {
                promotion_id,
                run_id,
                response,
                error,
            } => self.finish_bulk_run(promotion_id, run_id, response, error),
            Request::ReleaseBulkRun {
                promotion_id,
                run_id,
            } => self.release_bulk_run(promotion_id, run_id),
            Request::PurgeExpired => self.purge_expired(now),
            Request::CreateSession(session) => self.create_session(session),
            Request::DeleteSession { token_hash } => self.delete_session(token_hash),
            Request::CreateWebhookEndpoint {
                url,
                description,
                event_types,
                secret,
            } => self.create_webhook_endpoint(url, description, event_types, secret, now),
            Request::UpdateWebhookEndpoint {
                id,
                url,
                description,
                event_types,
                enabled,
            } => self.update_webhook_endpoint(id, url, description, event_types, enabled),
            Request::DeleteWebhookEndpoint { id } => self.delete_webhook_endpoint(id),
            Request::DispatchEvents { limit } => self.dispatch_events(*limit),
            Request::ClaimDeliveries { limit, lease } => self.claim_deliveries(limit, lease),
            Request::FinishAttempts(attempts) => self.finish_attempts(attempts),
            Request::ReleaseWaitingDeliveries => self.release_waiting_deliveries(),
            Request::Redeliver { id } => self.redeliver(id),
        }
    }
}

/// The response a kept idempotency key answers a replay with: the one kept,
/// or its debit rendered again.
pub fn kept_response(
    store: &mut dyn Store,
    render: Render,
    kept: Kept,
) -> StoreResult<StoredResponse> {
    match kept {
        Kept::Response(response) => Ok(response),
        Kept::Debit(id) => match store.debit(id)? {
            Some(debit) => Ok(render(&Ok(Outcome::Debit(debit)))),
            // Written in the same commit as its key: never missing.
            None => Err(StoreError {
                retryable: false,
                broken: false,
                message: format!("the debit kept for an idempotency key is missing: {id}"),
            }),
        },
    }
}
