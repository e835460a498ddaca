//! Wallet operations: creating and changing wallets, grants, debits and
//! holds. Each runs on a wallet brought up to now (`with_wallet`: every
//! event due materialised first, SPEC rule 11) and writes the entries,
//! finished grants and holds, and events its change produced.
//!
//! Owns: turning a wallet command into the core's call and its [`Change`]s.
//! May not: decide a balance itself (the core does), or write outside the
//! batch's sink.

use super::sink::Change;
use super::validate::{checked_metadata, checked_opt_text, parse_amount, threshold};
use super::writer::{Cached, Writer};
use super::{BatchItem, NewDebit, NewGrant, Outcome, Request, WalletView};
use crate::error::{Error, Result};
use crate::ids::{self, Kind};
use crate::records::*;
use crate::store::StoreResult;
use credstack_core::{
    Amount, Changes, DebitId, Grant, GrantId, GrantTerms, HoldId, Instant, Reference, Wallet,
};

impl Writer {
    pub(super) fn create_wallet(
        &mut self,
        customer_id: u128,
        credit_system_id: u128,
        overdraft_limit: Option<&str>,
        low_balance_threshold: Option<&str>,
        now: Instant,
    ) -> Result<Outcome> {
        if self.store()?.customer(customer_id)?.is_none() {
            return Err(Error::invalid("customer_id", "no such customer"));
        }
        let cs = self
            .store()?
            .credit_system(credit_system_id)?
            .ok_or_else(|| Error::invalid("credit_system_id", "no such credit system"))?;
        if !cs.active {
            return Err(Error::Conflict {
                code: "credit_system_inactive",
                message: "only active credit systems accept new wallets".into(),
                param: Some("credit_system_id".into()),
            });
        }
        if self
            .store()?
            .wallet_by_owner(customer_id, credit_system_id)?
            .is_some()
        {
            return Err(Error::Conflict {
                code: "wallet_exists",
                message: "this customer already has a wallet in this credit system".into(),
                param: None,
            });
        }
        let limit = match overdraft_limit {
            Some(text) => parse_amount(
                "overdraft_limit",
                text,
                cs.scale,
                Amount::parse_non_negative,
            )?,
            None => Amount::ZERO,
        };
        let info = WalletInfo {
            id: self.ids.next(),
            customer_id,
            credit_system_id,
            scale: cs.scale,
            created_at: now,
            low_balance_threshold: threshold(low_balance_threshold, cs.scale)?,
        };
        let wallet = Wallet::new(limit);
        self.store()?.insert_wallet(&info, &wallet)?;
        // The insert holds the new row's lock until the commit; touched, the
        // new state leaves memory with the batch if the batch fails.
        self.locked.insert(info.id, 0);
        self.touched.insert(info.id, Vec::new());
        let cached = Cached {
            info: info.clone(),
            wallet,
            version: 0,
            chain: ChainHead::START,
            events: Some(0),
        };
        self.wallets.insert(info.id, cached);
        self.wallet_view(info.id, now)
    }

    /// Changes a wallet's overdraft limit and low-balance threshold, both
    /// checked before either is written.
    pub(super) fn update_wallet(
        &mut self,
        id: u128,
        overdraft_limit: Option<&str>,
        low_balance_threshold: Option<Option<&str>>,
        now: Instant,
    ) -> Result<Outcome> {
        let info = self.with_wallet(id, now, |info, wallet, changes| {
            let mut info = info.clone();
            if let Some(text) = low_balance_threshold {
                info.low_balance_threshold = threshold(text, info.scale)?;
            }
            if let Some(text) = overdraft_limit {
                let limit = parse_amount(
                    "overdraft_limit",
                    text,
                    info.scale,
                    Amount::parse_non_negative,
                )?;
                wallet
                    .set_overdraft_limit(limit, now, changes)
                    .map_err(|r| Error::from_rejection(r, "overdraft_limit"))?;
            }
            Ok(info)
        })?;
        if low_balance_threshold.is_some() {
            self.store()?.update_wallet_info(&info)?;
            self.wallets
                .get_mut(&id)
                .expect("a changed wallet is cached")
                .info = info;
        }
        self.wallet_view(id, now)
    }

    pub(super) fn add_grant(&mut self, new: &NewGrant, now: Instant) -> Result<Outcome> {
        let grant_id = GrantId(self.ids.next());
        let record = self.with_wallet(new.wallet_id, now, |info, wallet, changes| {
            let amount = parse_amount("amount", &new.amount, info.scale, Amount::parse_positive)?;
            let rollover_max = match &new.rollover_max {
                Some(text) => {
                    parse_amount("rollover_max", text, info.scale, Amount::parse_non_negative)?
                }
                None => Amount::ZERO,
            };
            let terms = GrantTerms {
                amount,
                purpose: new.purpose,
                priority: new.priority.unwrap_or(new.purpose.default_priority()),
                effective_at: new.effective_at.unwrap_or(now),
                expires_at: new.expires_at,
                recurrence: new.recurrence,
                rollover_max,
            };
            let description = checked_opt_text("description", new.description.as_deref())?;
            let metadata = checked_metadata(&new.metadata)?;
            wallet
                .add_grant(grant_id, terms, now, changes)
                .map_err(|r| Error::from_rejection(r, "amount"))?;
            let grant = new_grant_state(wallet, changes, grant_id);
            Ok(GrantRecord {
                grant,
                wallet_id: info.id,
                scale: info.scale,
                description,
                metadata,
                source: Source::Api,
                created_at: now,
            })
        })?;
        // The entries written above reference the grant; insert its row in the same commit.
        self.insert_grant(&record)?;
        Ok(Outcome::Grant(Box::new(record)))
    }

    pub(super) fn debit(&mut self, new: &NewDebit, now: Instant) -> Result<Outcome> {
        let debit_id = self.ids.next();
        let description = checked_opt_text("description", new.description.as_deref())?;
        let metadata = checked_metadata(&new.metadata)?;
        let record = self.with_wallet(new.wallet_id, now, |info, wallet, changes| {
            let amount = parse_amount("amount", &new.amount, info.scale, Amount::parse_positive)?;
            let allocations = wallet
                .debit(DebitId(debit_id), amount, now, changes)
                .map_err(|r| Error::from_rejection(r, "amount"))?;
            Ok(DebitRecord {
                id: debit_id,
                wallet_id: info.id,
                scale: info.scale,
                amount,
                allocations,
                balance_after: wallet.balance,
                description,
                metadata,
                hold_id: None,
                created_at: now,
            })
        })?;
        self.sink.write(Change::Debit(record.clone()))?;
        Ok(Outcome::Debit(record))
    }

    pub(super) fn place_hold(
        &mut self,
        wallet_id: u128,
        amount: &str,
        expires_in_seconds: Option<i64>,
        now: Instant,
    ) -> Result<Outcome> {
        let seconds = expires_in_seconds.unwrap_or(600);
        if !(1..=credstack_core::wallet::HOLD_SECONDS_MAX).contains(&seconds) {
            return Err(Error::invalid(
                "expires_in_seconds",
                "must be between 1 and 86400",
            ));
        }
        let expires_at = now + chrono::Duration::seconds(seconds);
        let hold_id = self.ids.next();
        let record = self.with_wallet(wallet_id, now, |info, wallet, changes| {
            let amount = parse_amount("amount", amount, info.scale, Amount::parse_positive)?;
            wallet
                .place_hold(HoldId(hold_id), amount, expires_at, now, changes)
                .map_err(|r| Error::from_rejection(r, "amount"))?;
            let hold = wallet.hold(HoldId(hold_id)).expect("placed");
            Ok(HoldRecord {
                id: hold_id,
                wallet_id: info.id,
                scale: info.scale,
                amount,
                reservations: hold.reservations.clone(),
                status: HoldStatus::Active,
                expires_at,
                debit_id: None,
                ended_at: None,
                created_at: now,
            })
        })?;
        self.store()?.insert_hold(&record)?;
        Ok(Outcome::Hold(record))
    }

    pub(super) fn capture(&mut self, hold_id: u128, amount: &str, now: Instant) -> Result<Outcome> {
        let hold = self
            .store()?
            .hold(hold_id)?
            .ok_or(Error::NotFound { what: "hold" })?;
        let debit_id = self.ids.next();
        let debit = self.with_wallet(hold.wallet_id, now, |info, wallet, changes| {
            let amount = parse_amount("amount", amount, info.scale, Amount::parse_positive)?;
            let allocations = wallet
                .capture(HoldId(hold_id), amount, DebitId(debit_id), now, changes)
                .map_err(|r| Error::from_rejection(r, "amount"))?;
            Ok(DebitRecord {
                id: debit_id,
                wallet_id: info.id,
                scale: info.scale,
                amount,
                allocations,
                balance_after: wallet.balance,
                description: None,
                metadata: Metadata::new(),
                hold_id: Some(hold_id),
                created_at: now,
            })
        })?;
        self.sink.write(Change::Debit(debit))?;
        self.store()?
            .finish_hold(hold_id, HoldStatus::Captured, Some(debit_id), now)?;
        let hold = self.store()?.hold(hold_id)?.expect("hold exists");
        Ok(Outcome::Hold(hold))
    }

    /// Inserts a grant added in this batch. Its row is then as current as
    /// the grants the batch found: `flush` writes it again only if it changes.
    pub(super) fn insert_grant(&mut self, record: &GrantRecord) -> StoreResult<()> {
        self.sink.write(Change::Grant(record.clone()))?;
        if let Some(before) = self.touched.get_mut(&record.wallet_id) {
            before.push(record.grant.clone());
        }
        self.emit(record.wallet_id, crate::events::grant_created(record))
    }

    /// Voids a grant (rule 14), live or not.
    pub(super) fn void(&mut self, wallet_id: u128, grant_id: u128, now: Instant) -> Result<()> {
        let live = self.with_wallet(wallet_id, now, |_, wallet, changes| {
            if wallet.grant(GrantId(grant_id)).is_none() {
                return Ok(false);
            }
            wallet
                .void_grant(GrantId(grant_id), now, changes)
                .map_err(|r| Error::from_rejection(r, "amount"))?;
            Ok(true)
        })?;
        if !live {
            self.void_finished_grant(grant_id, now)?;
        }
        Ok(())
    }

    /// Voids a grant that has left the working set (an active grant with
    /// nothing left and nothing to renew): nothing to forfeit, so no entry.
    pub(super) fn void_finished_grant(&mut self, id: u128, now: Instant) -> Result<()> {
        let mut record = self
            .store()?
            .grant(id)?
            .ok_or(Error::NotFound { what: "grant" })?;
        if record.grant.is_ended() {
            return Err(Error::from_rejection(
                credstack_core::Rejection::GrantAlreadyEnded,
                "amount",
            ));
        }
        record.grant.status = credstack_core::GrantStatus::Voided;
        record.grant.ended_at = Some(now);
        self.sink.write(Change::GrantState(record.grant.clone()))?;
        self.emit(
            record.wallet_id,
            crate::events::finished_grant_voided(id, now, record.scale),
        )?;
        Ok(())
    }

    pub(super) fn current_grant(&self, wallet_id: u128, grant_id: GrantId) -> Option<Grant> {
        self.wallets
            .get(&wallet_id)?
            .wallet
            .grant(grant_id)
            .cloned()
    }

    pub(super) fn wallet_view(&mut self, wallet_id: u128, now: Instant) -> Result<Outcome> {
        self.with_wallet(wallet_id, now, |_, _, _| Ok(()))?;
        let Cached { info, wallet, .. } = &self.wallets[&wallet_id];
        Ok(Outcome::Wallet(Box::new(WalletView {
            info: info.clone(),
            summary: wallet.summary(),
            wallet: wallet.clone(),
            at: now,
        })))
    }

    /// Runs `change` on a wallet brought up to `now`, then writes the
    /// entries and finished objects it produced. Balances and changed
    /// grants are written once per batch by `flush`.
    pub(super) fn with_wallet<T>(
        &mut self,
        wallet_id: u128,
        now: Instant,
        change: impl FnOnce(&WalletInfo, &mut Wallet, &mut Changes) -> Result<T>,
    ) -> Result<T> {
        // A wallet that exists is locked and in memory after this.
        self.lock(&[wallet_id])?;
        let cached = match self.locked.contains_key(&wallet_id) {
            true => self.wallets.get_mut(&wallet_id),
            false => None,
        };
        let Some(Cached { info, wallet, .. }) = cached else {
            return Err(Error::NotFound { what: "wallet" });
        };
        self.touched
            .entry(wallet_id)
            .or_insert_with(|| wallet.grants.clone());
        let mut changes = Changes::default();
        wallet.materialise(now, &mut changes);
        let result = change(info, wallet, &mut changes);
        let info = info.clone();
        self.persist(&info, changes)?;
        result
    }

    pub(super) fn persist(&mut self, info: &WalletInfo, changes: Changes) -> Result<()> {
        let cached = self
            .wallets
            .get_mut(&info.id)
            .expect("a changed wallet is cached");
        for entry in &changes.entries {
            let mut record = EntryRecord {
                id: self.ids.next(),
                wallet_id: info.id,
                scale: info.scale,
                sequence: entry.sequence,
                kind: entry.kind,
                amount: entry.amount,
                balance_after: entry.balance_after,
                occurred_at: entry.occurred_at,
                grant_id: entry.grant.map(|g| g.0),
                reference: match entry.reference {
                    Reference::Grant(id) => ids::format(Kind::Grant, id.0),
                    Reference::Debit(id) => ids::format(Kind::Debit, id.0),
                    Reference::Hold(id) => ids::format(Kind::Hold, id.0),
                },
                hash: CHAIN_START,
            };
            record.append_to(&mut cached.chain);
            self.sink.write(Change::Entry(record))?;
        }
        for grant in &changes.finished_grants {
            self.sink.write(Change::GrantState(grant.clone()))?;
        }
        for event in crate::events::from_changes(info, &changes) {
            self.emit(info.id, event)?;
        }
        for (hold, end, at) in &changes.finished_holds {
            // Captures record their debit themselves.
            if *end != credstack_core::HoldEnd::Captured {
                self.sink.write(Change::HoldFinished {
                    id: hold.id.0,
                    status: (*end).into(),
                    debit_id: None,
                    at: *at,
                })?;
            }
        }
        Ok(())
    }

    pub(super) fn void_grant(&mut self, id: &u128, now: Instant) -> Result<Outcome> {
        let record = self
            .store()?
            .grant(*id)?
            .ok_or(Error::NotFound { what: "grant" })?;
        self.void(record.wallet_id, *id, now)?;
        let record = self.store()?.grant(*id)?.expect("grant exists");
        let grant = self
            .current_grant(record.wallet_id, GrantId(*id))
            .unwrap_or(record.grant.clone());
        Ok(Outcome::Grant(Box::new(GrantRecord { grant, ..record })))
    }

    pub(super) fn debit_batch(&mut self, items: &[BatchItem]) -> Result<Outcome> {
        let mut replies = Vec::with_capacity(items.len());
        for item in items {
            let reply = self
                .apply_with_idempotency(
                    &Request::Debit(item.debit.clone()),
                    Some(&item.idempotency),
                )
                .map_err(|failure| match failure.retryable {
                    true => Error::Contended,
                    false => Error::Unavailable,
                })?;
            replies.push(reply);
        }
        Ok(Outcome::DebitBatch(replies))
    }

    pub(super) fn release_hold(&mut self, id: &u128, now: Instant) -> Result<Outcome> {
        let hold = self
            .store()?
            .hold(*id)?
            .ok_or(Error::NotFound { what: "hold" })?;
        self.with_wallet(hold.wallet_id, now, |_, wallet, changes| {
            wallet
                .release(HoldId(*id), now, changes)
                .map_err(|r| Error::from_rejection(r, "amount"))
        })?;
        let hold = self.store()?.hold(*id)?.expect("hold exists");
        Ok(Outcome::Hold(hold))
    }

    pub(super) fn materialise(&mut self, wallet_ids: &[u128], now: Instant) -> Result<Outcome> {
        for wallet_id in wallet_ids {
            match self.with_wallet(*wallet_id, now, |_, _, _| Ok(())) {
                Ok(()) | Err(Error::NotFound { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(Outcome::Done)
    }
}

/// A grant just added, as it stands: usually live, but a grant spent
/// entirely on repaying debt has already left the working set.
pub(super) fn new_grant_state(wallet: &Wallet, changes: &Changes, id: GrantId) -> Grant {
    wallet
        .grant(id)
        .or_else(|| changes.finished_grants.iter().find(|g| g.id == id))
        .expect("a grant just added is live or finished")
        .clone()
}
