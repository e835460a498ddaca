//! The writer's side of promotional credits (SPEC rules 19–26): creating and
//! editing campaigns under the lock, and granting or revoking them customer
//! by customer. Every assignment is backed by a real grant in the customer's
//! wallet, written in the same commit; revoking voids that grant.

use super::Outcome;
use super::sink::Change;
use super::validate::{TEXT_SHORT_MAX, checked_opt_text, checked_text, parse_amount};
use super::writer::Writer;
use crate::error::{Error, Result};
use crate::ids::Kind;
use crate::records::*;
use credstack_core::promotion::{Edit, Policy, Skip, Status, locked_field};
use credstack_core::{Amount, GrantId, Instant, Interval, Period};

/// Most customers named in one grant or revoke call.
pub const PROMOTION_CUSTOMERS_MAX: usize = 1000;

/// A new promotional credit campaign (SPEC rule 19).
#[derive(Clone, Debug)]
pub struct NewPromotion {
    pub name: String,
    pub description: Option<String>,
    pub credit_system_id: u128,
    pub starts_at: Option<Instant>,
    pub ends_at: Option<Instant>,
    pub quantity: String,
    pub reset_interval: Option<Interval>,
    pub access_period: Option<Period>,
    pub allow_multiple_grants: bool,
}

/// A change to a campaign; `None` leaves a field as it is. Rule 26 decides
/// which changes an applied campaign refuses.
#[derive(Clone, Debug, Default)]
pub struct PromotionEdit {
    pub name: Option<String>,
    pub description: Option<Option<String>>,
    pub ends_at: Option<Option<Instant>>,
    pub credit_system_id: Option<u128>,
    pub quantity: Option<String>,
    pub reset_interval: Option<Option<Interval>>,
    pub access_period: Option<Option<Period>>,
    pub allow_multiple_grants: Option<bool>,
    pub starts_at: Option<Option<Instant>>,
}

/// A campaign with what derives from it at `at`.
#[derive(Clone, Debug)]
pub struct PromotionView {
    pub promotion: PromotionalCredit,
    pub granted_count: u64,
    pub revoked_count: u64,
    pub at: Instant,
}

/// What a grant call did, customer by customer (rule 25).
#[derive(Clone, Debug, Default)]
pub struct PromotionGrant {
    pub granted: Vec<Assignment>,
    pub skipped: Vec<(u128, Skip)>,
}

/// What a revoke call did: every assignment it ended, and who was skipped.
#[derive(Clone, Debug, Default)]
pub struct PromotionRevoke {
    pub revoked: Vec<Assignment>,
    pub skipped: Vec<(u128, Skip)>,
}

impl Writer {
    pub(super) fn finish_bulk_run(
        &mut self,
        promotion_id: &u128,
        run_id: &u128,
        response: &StoredResponse,
        error: &Option<String>,
    ) -> Result<Outcome> {
        let end = RunEnd::Finished {
            at: chrono::Utc::now(),
            error: error.clone(),
        };
        self.end_bulk_run(*promotion_id, *run_id, end)?;
        Ok(Outcome::Rendered(response.clone()))
    }

    pub(super) fn release_bulk_run(
        &mut self,
        promotion_id: &u128,
        run_id: &u128,
    ) -> Result<Outcome> {
        let end = RunEnd::Released {
            at: chrono::Utc::now(),
        };
        self.end_bulk_run(*promotion_id, *run_id, end)?;
        Ok(Outcome::Done)
    }

    /// The campaign, its row locked until the batch commits: every change
    /// to a campaign and its assignments takes this lock first, so grants,
    /// revokes and edits of one campaign from several nodes take turns.
    fn promotion(&mut self, id: u128) -> Result<PromotionalCredit> {
        self.store()?.lock_promotion(id)?.ok_or(Error::NotFound {
            what: "promotional credit",
        })
    }

    /// Starts a call to all customers, taking over one whose lease has
    /// passed; a retry of that same call (same key, same request) resumes
    /// from its cursor and counts.
    pub(super) fn claim_bulk_run(&mut self, claim: &BulkClaimRequest) -> Result<Outcome> {
        self.promotion(claim.promotion_id)?;
        // Under the campaign lock: a keyed call that finished meanwhile
        // (on any node) replays rather than running again.
        if let Some(idempotency) = &claim.idempotency
            && let Some((fingerprint, kept)) = self.store()?.idempotency(&idempotency.key)?
        {
            if fingerprint != idempotency.fingerprint {
                return Err(Error::idempotency_key_reused());
            }
            let render = self.render;
            let stored = super::kept_response(self.store()?, render, kept)?;
            return Ok(Outcome::BulkClaim(BulkClaim::Replayed(stored)));
        }
        let same_call = |key: Option<&str>, fingerprint: Option<[u8; 32]>, action: &str| {
            action == claim.action
                && claim.idempotency.as_ref().is_some_and(|i| {
                    key == Some(i.key.as_str()) && fingerprint == Some(i.fingerprint)
                })
        };
        let mut resume = None;
        match self.store()?.bulk_run(claim.promotion_id)? {
            // An ended call is kept only to show its outcome.
            Some(run) if run.finished_at.is_some() => {}
            Some(run) if run.lease_until > claim.wall_now => {
                let same = same_call(run.idempotency_key.as_deref(), run.fingerprint, &run.action);
                return Ok(Outcome::BulkClaim(BulkClaim::Busy {
                    same_call: same,
                    action: run.action,
                }));
            }
            Some(run)
                if same_call(run.idempotency_key.as_deref(), run.fingerprint, &run.action) =>
            {
                resume = Some((run.cursor, run.progress));
            }
            // Taking over another keyed call that stopped: keep its place
            // for its own retry.
            Some(run) => {
                if let (Some(key), Some(fingerprint)) = (run.idempotency_key, run.fingerprint) {
                    self.store()?.save_bulk_resume(&BulkResume {
                        promotional_credit_id: claim.promotion_id,
                        idempotency_key: key,
                        fingerprint,
                        action: run.action,
                        cursor: run.cursor,
                        progress: run.progress,
                        saved_at: claim.wall_now,
                    })?;
                }
            }
            None => {}
        }
        if resume.is_none()
            && let Some(idempotency) = &claim.idempotency
            && let Some(saved) = self
                .store()?
                .take_bulk_resume(claim.promotion_id, &idempotency.key)?
            && same_call(
                Some(&saved.idempotency_key),
                Some(saved.fingerprint),
                &saved.action,
            )
        {
            resume = Some((saved.cursor, saved.progress));
        }
        let (cursor, counts) = match resume {
            Some((cursor, progress)) => {
                (cursor, serde_json::from_str(&progress).unwrap_or_default())
            }
            None => (None, BulkCounts::default()),
        };
        self.store()?.upsert_bulk_run(&BulkRun {
            promotional_credit_id: claim.promotion_id,
            run_id: claim.run_id,
            action: claim.action.clone(),
            idempotency_key: claim.idempotency.as_ref().map(|i| i.key.clone()),
            fingerprint: claim.idempotency.as_ref().map(|i| i.fingerprint),
            cursor,
            progress: serde_json::to_string(&counts).expect("counts serialize"),
            lease_until: claim.lease_until,
            total: claim.total,
            finished_at: None,
            error: None,
        })?;
        Ok(Outcome::BulkClaim(BulkClaim::Started { cursor, counts }))
    }

    /// Writes a campaign's row, an assignment, a run's progress: to the
    /// journal when the batch in flight is journalled (a campaign grant).
    fn write_promotion(&mut self, promotion: &PromotionalCredit) -> Result<()> {
        Ok(self.sink.write(Change::Promotion(promotion.clone()))?)
    }

    fn write_assignment(&mut self, assignment: &Assignment) -> Result<()> {
        Ok(self.sink.write(Change::Assignment(assignment.clone()))?)
    }

    fn write_bulk_run(&mut self, run: &BulkRun) -> Result<()> {
        Ok(self.sink.write(Change::BulkRun(run.clone()))?)
    }

    /// The campaign's run, as the last batch left it.
    fn bulk_run(&mut self, promotion_id: u128) -> Result<Option<BulkRun>> {
        Ok(self.store()?.bulk_run(promotion_id)?)
    }

    /// How many assignments of the campaign the customer holds at `now`
    /// (unmerged batches' included, each counted once).
    fn active_assignments(
        &mut self,
        promotion_id: u128,
        customer_id: u128,
        now: Instant,
    ) -> Result<usize> {
        Ok(self
            .store()?
            .active_assignments(promotion_id, customer_id, now)?
            .len())
    }

    /// Checks that `step`'s run still holds its campaign (a run whose lease
    /// passed may have been taken over) before a chunk changes anything.
    fn check_run(&mut self, promotion_id: u128, step: &RunStep) -> Result<BulkRun> {
        match self.bulk_run(promotion_id)? {
            Some(run) if run.run_id == step.run_id && run.finished_at.is_none() => Ok(run),
            _ => Err(Error::conflict(
                "bulk_run_taken_over",
                "this call to all customers stalled and another call took it over",
            )),
        }
    }

    /// Records a chunk's progress in its run, in the chunk's commit.
    fn advance_run(
        &mut self,
        mut run: BulkRun,
        step: &RunStep,
        done: usize,
        skipped: &[(u128, Skip)],
    ) -> Result<()> {
        let mut counts: BulkCounts = serde_json::from_str(&run.progress).unwrap_or_default();
        counts.done += done as u64;
        counts.skipped += skipped.len() as u64;
        for (_, reason) in skipped {
            *counts
                .skipped_by_reason
                .entry(reason.as_str().to_string())
                .or_default() += 1;
        }
        run.progress = serde_json::to_string(&counts).expect("counts serialize");
        run.cursor = Some(step.cursor);
        run.lease_until = step.lease_until;
        self.write_bulk_run(&run)
    }

    /// Ends a run: marks it finished (with the error that ended it, if
    /// any), or, given `release_at`, leaves it unfinished (so a retry with
    /// its key can resume) but lets any call take it over from then.
    pub(super) fn end_bulk_run(
        &mut self,
        promotion_id: u128,
        run_id: u128,
        end: RunEnd,
    ) -> Result<()> {
        self.promotion(promotion_id)?;
        let Some(run) = self.store()?.bulk_run(promotion_id)? else {
            return Ok(());
        };
        if run.run_id != run_id || run.finished_at.is_some() {
            return Ok(());
        }
        let run = match end {
            RunEnd::Finished { at, error } => BulkRun {
                finished_at: Some(at),
                error,
                ..run
            },
            RunEnd::Released { at } => BulkRun {
                lease_until: at,
                ..run
            },
        };
        self.store()?.upsert_bulk_run(&run)?;
        Ok(())
    }

    fn promotion_view(&mut self, promotion: PromotionalCredit, now: Instant) -> Result<Outcome> {
        let (granted_count, revoked_count) = self.store()?.promotion_counts(promotion.id, now)?;
        Ok(Outcome::Promotion(Box::new(PromotionView {
            promotion,
            granted_count,
            revoked_count,
            at: now,
        })))
    }

    /// The active credit system a campaign funds (rule 19).
    fn active_credit_system(&mut self, id: u128) -> Result<CreditSystem> {
        let cs = self
            .store()?
            .credit_system(id)?
            .ok_or_else(|| Error::invalid("credit_system_id", "no such credit system"))?;
        if !cs.active {
            return Err(Error::Conflict {
                code: "credit_system_inactive",
                message: "only active credit systems accept new promotional credits".into(),
                param: Some("credit_system_id".into()),
            });
        }
        Ok(cs)
    }

    pub(super) fn create_promotion(&mut self, new: &NewPromotion, now: Instant) -> Result<Outcome> {
        let name = checked_text("name", &new.name, TEXT_SHORT_MAX)?;
        let description = checked_opt_text("description", new.description.as_deref())?;
        let cs = self.active_credit_system(new.credit_system_id)?;
        let quantity = parse_amount("quantity", &new.quantity, cs.scale, Amount::parse_positive)?;
        let promotion = PromotionalCredit {
            id: self.ids.next(),
            name,
            description,
            credit_system_id: cs.id,
            scale: cs.scale,
            starts_at: new.starts_at,
            ends_at: new.ends_at,
            policy: Policy {
                quantity,
                reset_interval: new.reset_interval,
                access_period: new.access_period,
                allow_multiple_grants: new.allow_multiple_grants,
            },
            applied: false,
            created_at: now,
        };
        check_window(&promotion, now, true)?;
        self.store()?.upsert_promotion(&promotion)?;
        self.promotion_view(promotion, now)
    }

    /// Edits a campaign. Once applied, a change to an economic field is
    /// refused whole (409 `promotion_locked`, naming the field); name,
    /// description and `ends_at` stay editable (rule 26).
    pub(super) fn update_promotion(
        &mut self,
        id: u128,
        edit: &PromotionEdit,
        now: Instant,
    ) -> Result<Outcome> {
        let mut promotion = self.promotion(id)?;
        let moves_credit_system = edit
            .credit_system_id
            .is_some_and(|cs| cs != promotion.credit_system_id);
        let scale = if moves_credit_system && !promotion.applied {
            let cs = edit.credit_system_id.expect("checked above");
            self.active_credit_system(cs)?.scale
        } else {
            promotion.scale
        };
        // Quantities are kept in atomic units of the credit system's scale:
        // moving to a system of another scale re-reads the current quantity
        // at the new scale (refused when it has too many decimal places).
        let current = (moves_credit_system && !promotion.applied && scale != promotion.scale)
            .then(|| promotion.policy.quantity.format(promotion.scale));
        let quantity = edit
            .quantity
            .as_deref()
            .or(current.as_deref())
            .map(|text| parse_amount("quantity", text, scale, Amount::parse_positive))
            .transpose()?;
        let economics = Edit {
            credit_system_id: edit.credit_system_id,
            quantity,
            reset_interval: edit.reset_interval,
            access_period: edit.access_period,
            allow_multiple_grants: edit.allow_multiple_grants,
            starts_at: edit.starts_at,
        };
        let locked = locked_field(
            &economics,
            promotion.credit_system_id,
            &promotion.policy,
            promotion.starts_at,
        );
        if promotion.applied
            && let Some(field) = locked
        {
            return Err(Error::Conflict {
                code: "promotion_locked",
                message: format!(
                    "{field} cannot change once the promotional credit has been granted"
                ),
                param: Some(field.to_string()),
            });
        }
        if let Some(name) = &edit.name {
            promotion.name = checked_text("name", name, TEXT_SHORT_MAX)?;
        }
        if let Some(description) = &edit.description {
            promotion.description = checked_opt_text("description", description.as_deref())?;
        }
        if let Some(ends_at) = edit.ends_at {
            promotion.ends_at = ends_at;
        }
        if let Some(cs) = economics.credit_system_id {
            promotion.credit_system_id = cs;
            promotion.scale = scale;
        }
        if let Some(quantity) = economics.quantity {
            promotion.policy.quantity = quantity;
        }
        if let Some(reset_interval) = economics.reset_interval {
            promotion.policy.reset_interval = reset_interval;
        }
        if let Some(access_period) = economics.access_period {
            promotion.policy.access_period = access_period;
        }
        if let Some(allow) = economics.allow_multiple_grants {
            promotion.policy.allow_multiple_grants = allow;
        }
        let starts_at_changed = economics
            .starts_at
            .is_some_and(|s| s != promotion.starts_at);
        if let Some(starts_at) = economics.starts_at {
            promotion.starts_at = starts_at;
        }
        check_window(&promotion, now, starts_at_changed)?;
        self.store()?.upsert_promotion(&promotion)?;
        self.promotion_view(promotion, now)
    }

    /// Deletes a campaign nobody has been granted (rule 26).
    pub(super) fn delete_promotion(&mut self, id: u128) -> Result<Outcome> {
        let promotion = self.promotion(id)?;
        if promotion.applied {
            return Err(Error::conflict(
                "promotion_locked",
                "a promotional credit that has been granted cannot be deleted; end it with ends_at",
            ));
        }
        self.store()?.delete_bulk_run(id)?;
        self.store()?
            .purge_bulk_resumes(chrono::DateTime::<chrono::Utc>::MIN_UTC, Some(id))?;
        self.store()?.delete_promotion(id)?;
        Ok(Outcome::Deleted {
            kind: Kind::PromotionalCredit,
            id,
        })
    }

    /// Grants a campaign to each customer, or says why not (rules 20–23, 25).
    /// One skipped customer never fails the others.
    pub(super) fn grant_promotion(
        &mut self,
        id: u128,
        customer_ids: &[u128],
        run: Option<&RunStep>,
        now: Instant,
    ) -> Result<Outcome> {
        let mut promotion = self.promotion(id)?;
        let running = run.map(|step| self.check_run(id, step)).transpose()?;
        if promotion.window().status(now) != Status::Active {
            return Err(Error::conflict(
                "promotion_not_active",
                "the promotional credit can be granted only inside its promo window",
            ));
        }
        let mut outcome = PromotionGrant::default();
        for &customer_id in customer_ids {
            match self.grant_one(&promotion, customer_id, now)? {
                Ok(assignment) => outcome.granted.push(assignment),
                Err(skip) => outcome.skipped.push((customer_id, skip)),
            }
        }
        if !outcome.granted.is_empty() && !promotion.applied {
            promotion.applied = true;
            self.write_promotion(&promotion)?;
        }
        if let (Some(running), Some(step)) = (running, run) {
            self.advance_run(running, step, outcome.granted.len(), &outcome.skipped)?;
        }
        Ok(Outcome::PromotionGrant(outcome))
    }

    fn grant_one(
        &mut self,
        promotion: &PromotionalCredit,
        customer_id: u128,
        now: Instant,
    ) -> Result<std::result::Result<Assignment, Skip>> {
        let wallet = self
            .store()?
            .wallet_by_owner(customer_id, promotion.credit_system_id)?;
        // A wallet has a customer; only without one is the customer looked up.
        if wallet.is_none() && self.store()?.customer(customer_id)?.is_none() {
            return Ok(Err(Skip::CustomerNotFound));
        }
        let active = self.active_assignments(promotion.id, customer_id, now)?;
        if let Err(skip) = promotion.policy.may_grant(wallet.is_some(), active) {
            return Ok(Err(skip));
        }
        let wallet = wallet.expect("may_grant checked the wallet");
        let assignment_id = self.ids.next();
        let grant_id = GrantId(self.ids.next());
        let terms = promotion.policy.grant_terms(now);
        let added = self.with_wallet(wallet.id, now, |_, state, changes| {
            state
                .add_grant(grant_id, terms, now, changes)
                .map_err(|r| Error::from_rejection(r, "quantity"))?;
            Ok(super::wallets::new_grant_state(state, changes, grant_id))
        });
        let grant = match added {
            Ok(grant) => grant,
            Err(Error::Conflict {
                code: "wallet_capacity_exceeded",
                ..
            }) => return Ok(Err(Skip::WalletCapacityExceeded)),
            Err(error) => return Err(error),
        };
        let assignment = Assignment {
            id: assignment_id,
            promotional_credit_id: promotion.id,
            customer_id,
            wallet_id: wallet.id,
            grant_id: grant_id.0,
            granted_at: now,
            expires_at: grant.terms.expires_at,
            revoked_at: None,
        };
        let record = GrantRecord {
            grant,
            wallet_id: wallet.id,
            scale: wallet.scale,
            description: Some(promotion.name.clone()),
            metadata: Metadata::new(),
            source: Source::PromotionalCredit {
                promotional_credit_id: promotion.id,
                assignment_id,
            },
            created_at: now,
        };
        self.insert_grant(&record)?;
        self.write_assignment(&assignment)?;
        self.emit(
            wallet.id,
            crate::events::promotional_credit(
                EventType::PromotionalCreditGranted,
                &assignment,
                now,
            ),
        )?;
        Ok(Ok(assignment))
    }

    /// Ends each customer's active assignments and voids their grants, so
    /// the unspent promotional balance is taken back and nothing renews
    /// (rule 24). Revoking is allowed outside the promo window.
    pub(super) fn revoke_promotion(
        &mut self,
        id: u128,
        customer_ids: &[u128],
        run: Option<&RunStep>,
        now: Instant,
    ) -> Result<Outcome> {
        let promotion = self.promotion(id)?;
        let running = run.map(|step| self.check_run(id, step)).transpose()?;
        let mut outcome = PromotionRevoke::default();
        for &customer_id in customer_ids {
            if self.store()?.customer(customer_id)?.is_none() {
                outcome.skipped.push((customer_id, Skip::CustomerNotFound));
                continue;
            }
            let active = self
                .store()?
                .active_assignments(promotion.id, customer_id, now)?;
            if active.is_empty() {
                outcome.skipped.push((customer_id, Skip::NotGranted));
                continue;
            }
            for mut assignment in active {
                assignment.revoked_at = Some(now);
                self.store()?.upsert_assignment(&assignment)?;
                match self.void(assignment.wallet_id, assignment.grant_id, now) {
                    // An operator may have voided the grant already; the
                    // assignment ends all the same.
                    Ok(())
                    | Err(Error::Conflict {
                        code: "grant_already_ended",
                        ..
                    }) => {}
                    Err(error) => return Err(error),
                }
                self.emit(
                    assignment.wallet_id,
                    crate::events::promotional_credit(
                        EventType::PromotionalCreditRevoked,
                        &assignment,
                        now,
                    ),
                )?;
                outcome.revoked.push(assignment);
            }
        }
        if let (Some(running), Some(step)) = (running, run) {
            self.advance_run(running, step, outcome.revoked.len(), &outcome.skipped)?;
        }
        Ok(Outcome::PromotionRevoke(outcome))
    }
}

/// One chunk's place in a call to all customers.
#[derive(Clone, Debug)]
pub struct RunStep {
    pub run_id: u128,
    /// The last customer id of this chunk: where a resumed call starts.
    pub cursor: u128,
    /// Wall-clock time until which the call keeps its campaign.
    pub lease_until: Instant,
}

/// How a call to all customers ends (wall-clock instants).
#[derive(Clone, Debug)]
pub enum RunEnd {
    Finished { at: Instant, error: Option<String> },
    Released { at: Instant },
}

#[derive(Clone, Debug)]
pub struct BulkClaimRequest {
    pub promotion_id: u128,
    pub run_id: u128,
    /// `grant` or `revoke`.
    pub action: String,
    pub idempotency: Option<super::Idempotency>,
    /// Wall-clock now, and the lease this claim takes.
    pub wall_now: Instant,
    pub lease_until: Instant,
    /// Customers the call expects to consider, if the caller counted them.
    pub total: Option<u64>,
}

#[derive(Clone, Debug)]
pub enum BulkClaim {
    /// The run is this call's; it starts after `cursor` with `counts` so far.
    Started {
        cursor: Option<u128>,
        counts: BulkCounts,
    },
    /// Another call to all customers of this campaign is running;
    /// `same_call` when it is this very call (same key, same request).
    Busy { same_call: bool, action: String },
    /// The same keyed call finished already: its answer.
    Replayed(StoredResponse),
}

/// A campaign's window: a start just set is not in the past, and the end
/// comes after the start.
fn check_window(promotion: &PromotionalCredit, now: Instant, starts_at_set: bool) -> Result<()> {
    if starts_at_set && promotion.starts_at.is_some_and(|s| s < now) {
        return Err(Error::invalid(
            "starts_at",
            "starts_at must not be in the past",
        ));
    }
    let start = promotion.window().starts_at;
    if promotion.ends_at.is_some_and(|end| end <= start) {
        return Err(Error::invalid(
            "ends_at",
            "ends_at must be after the promo window starts",
        ));
    }
    Ok(())
}
