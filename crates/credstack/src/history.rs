//! Wallet reads: the current state (brought up to date first, SPEC rule 11)
//! and the state at a past instant, rebuilt from the ledger (rule 17).

use crate::engine::WalletView;
use crate::error::{Error, Result};
use crate::ledger::Ledger;
use crate::records::GrantRecord;
use credstack_core::{Amount, GrantStatus, Instant, Wallet};

pub async fn require_wallet(ledger: &Ledger, wallet_id: u128) -> Result<()> {
    ledger.ensure_current(wallet_id).await?;
    match ledger.read(move |c| c.wallet_info(wallet_id)).await? {
        Some(_) => Ok(()),
        None => Err(Error::NotFound { what: "wallet" }),
    }
}

/// The wallet now, with every event due by now materialised: one read
/// when nothing is due (the usual case), else the writer brings it up to
/// date and it is read again.
pub async fn current(ledger: &Ledger, wallet_id: u128) -> Result<WalletView> {
    let load = || ledger.read(move |c| c.load_wallet(wallet_id));
    let mut at = ledger.now();
    let (mut info, mut wallet) = load().await?.ok_or(Error::NotFound { what: "wallet" })?;
    if wallet.next_event_at().is_some_and(|due| due <= at) {
        ledger.ensure_current(wallet_id).await?;
        at = ledger.now();
        (info, wallet) = load().await?.ok_or(Error::NotFound { what: "wallet" })?;
    }
    Ok(WalletView {
        info,
        summary: wallet.summary(),
        wallet,
        at,
    })
}

/// A grant as it is now.
pub async fn grant(ledger: &Ledger, grant_id: u128) -> Result<GrantRecord> {
    let record = ledger
        .read(move |c| c.grant(grant_id))
        .await?
        .ok_or(Error::NotFound { what: "grant" })?;
    ledger.ensure_current(record.wallet_id).await?;
    ledger
        .read(move |c| c.grant(grant_id))
        .await?
        .ok_or(Error::NotFound { what: "grant" })
}

/// The wallet as it stood at `at` (not in the future): each grant's
/// remainder is the sum of its entries up to `at`, the balance is the last
/// entry's `balance_after`, and the debt follows from them. Holds are not
/// ledger entries, so `held` is reported as zero; the overdraft limit is
/// today's (limit changes are not kept as history).
pub async fn at(ledger: &Ledger, wallet_id: u128, at: Instant) -> Result<WalletView> {
    ledger.ensure_current(wallet_id).await?;
    ledger
        .read(move |c| {
            let Some(info) = c.wallet_info(wallet_id)? else {
                return Ok(None);
            };
            let sequence = c.last_sequence_at(wallet_id, at)?;
            let balance = c.balance_after(wallet_id, sequence)?;
            let remainders = c.grant_remainders_through(wallet_id, sequence)?;
            let (_, now_state) = c.load_wallet(wallet_id)?.expect("wallet exists");
            let mut grants = Vec::new();
            for (grant_id, remaining) in remainders {
                let record = c.grant(grant_id)?.expect("entries reference stored grants");
                let mut grant = record.grant;
                grant.remaining = remaining;
                grant.held = Amount::ZERO;
                if grant.ended_at.is_some_and(|ended| ended > at) {
                    grant.status = GrantStatus::Active;
                    grant.ended_at = None;
                }
                grant.cycle = cycle_at(&grant.terms, at);
                grants.push(grant);
            }
            let remaining_total: i64 = grants.iter().map(|g| g.remaining.atomic()).sum();
            let debt = Amount::from_atomic(remaining_total - balance.atomic());
            grants.retain(|g| !g.is_ended());
            let wallet = Wallet {
                overdraft_limit: now_state.overdraft_limit,
                debt,
                balance,
                last_sequence: 0,
                grants,
                holds: Vec::new(),
            };
            Ok(Some((info, wallet)))
        })
        .await?
        .map(|(info, wallet)| WalletView {
            info,
            summary: wallet.summary(),
            wallet,
            at,
        })
        .ok_or(Error::NotFound { what: "wallet" })
}

/// The cycle a grant was in at `at`: the last k with cycle_start(k) <= at.
fn cycle_at(terms: &credstack_core::GrantTerms, at: Instant) -> u64 {
    let mut cycle = 1;
    while terms
        .renewal_after(cycle)
        .is_some_and(|renewal| renewal <= at)
    {
        cycle += 1;
    }
    cycle
}

/// A campaign with its counts at `now` (run on a read connection).
pub fn promotion_view(
    c: &mut dyn crate::store::Store,
    id: u128,
    now: Instant,
) -> crate::store::StoreResult<Option<crate::engine::PromotionView>> {
    let Some(promotion) = c.promotion(id)? else {
        return Ok(None);
    };
    let (granted_count, revoked_count) = c.promotion_counts(id, now)?;
    Ok(Some(crate::engine::PromotionView {
        promotion,
        granted_count,
        revoked_count,
        at: now,
    }))
}

/// Campaigns newest first with their counts at `now`, optionally by status.
pub fn promotion_views(
    c: &mut dyn crate::store::Store,
    status: Option<credstack_core::promotion::Status>,
    now: Instant,
    limit: usize,
    starting_after: Option<u128>,
) -> crate::store::StoreResult<crate::records::Page<crate::engine::PromotionView>> {
    let page = c.list_promotions(status, now, limit, starting_after)?;
    let mut items = Vec::with_capacity(page.items.len());
    for promotion in page.items {
        let (granted_count, revoked_count) = c.promotion_counts(promotion.id, now)?;
        items.push(crate::engine::PromotionView {
            promotion,
            granted_count,
            revoked_count,
            at: now,
        });
    }
    Ok(crate::records::Page {
        items,
        has_more: page.has_more,
    })
}
