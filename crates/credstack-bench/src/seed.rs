//! Data for the workloads, made through the ledger's own API (so every row
//! is what the service itself writes), with many requests in flight so the
//! writer batches them.

use credstack::engine::{NewGrant, Outcome, Request};
use credstack::ledger::Ledger;
use credstack_core::{Interval, Period, Purpose};
use std::sync::Arc;

const IN_FLIGHT: usize = 512;

/// More than any workload debits from one wallet, in whole tokens.
pub const GRANT_AMOUNT: &str = "1000000000";

pub async fn execute(ledger: &Ledger, request: Request) -> Outcome {
    ledger
        .execute(request)
        .await
        .expect("benchmark requests succeed")
}

pub async fn credit_system(ledger: &Ledger) -> u128 {
    let request = Request::CreateCreditSystem {
        key: "tokens".into(),
        name: "Tokens".into(),
        unit: "tokens".into(),
        scale: 0,
    };
    let Outcome::CreditSystem(cs) = execute(ledger, request).await else {
        unreachable!("a credit system")
    };
    cs.id
}

/// Creates `count` customers with a wallet each in `credit_system_id`;
/// with `stacked`, each wallet gets the four stacked grants: a
/// promotional grant expiring in 30 days, a monthly bundled allowance and
/// two paid top-ups. Returns the wallet ids in creation order.
pub async fn wallets(
    ledger: &Ledger,
    credit_system_id: u128,
    count: usize,
    stacked: bool,
) -> Vec<u128> {
    let limit = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let mut tasks = tokio::task::JoinSet::new();
    let now = chrono::Utc::now();
    for index in 0..count {
        let permit = limit.clone().acquire_owned().await.expect("semaphore");
        let ledger = ledger.clone();
        tasks.spawn(async move {
            let request = Request::CreateCustomer {
                name: format!("Customer {index}"),
                email: None,
                external_id: None,
                metadata: Default::default(),
            };
            let Outcome::Customer(customer) = execute(&ledger, request).await else {
                unreachable!("a customer")
            };
            let request = Request::CreateWallet {
                customer_id: customer.id,
                credit_system_id,
                overdraft_limit: None,
                low_balance_threshold: None,
            };
            let Outcome::Wallet(wallet) = execute(&ledger, request).await else {
                unreachable!("a wallet")
            };
            let wallet_id = wallet.info.id;
            if stacked {
                let grants = [
                    (
                        Purpose::Promotional,
                        Some(now + chrono::Duration::days(30)),
                        None,
                    ),
                    (
                        Purpose::Bundled,
                        None,
                        Some(Period::new(Interval::Month, 1)),
                    ),
                    (Purpose::Paid, None, None),
                    (Purpose::Paid, None, None),
                ];
                for (purpose, expires_at, recurrence) in grants {
                    let grant = NewGrant {
                        wallet_id,
                        amount: GRANT_AMOUNT.into(),
                        purpose,
                        priority: None,
                        effective_at: None,
                        expires_at,
                        recurrence: recurrence.flatten(),
                        rollover_max: None,
                        description: None,
                        metadata: Default::default(),
                    };
                    execute(&ledger, Request::AddGrant(grant)).await;
                }
            }
            drop(permit);
        });
        while let Some(done) = tasks.try_join_next() {
            done.expect("seeding task");
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("seeding task");
    }
    // The ids from the store, in creation order (ids are ULIDs).
    let mut listed = ledger
        .read(move |c| {
            let mut all = Vec::with_capacity(count);
            let mut after = None;
            loop {
                let page = c.list_wallets(None, Some(credit_system_id), 100, after)?;
                all.extend(page.items.iter().map(|w| w.id));
                after = page.items.last().map(|w| w.id);
                if !page.has_more {
                    return Ok(all);
                }
            }
        })
        .await
        .expect("list wallets");
    listed.sort_unstable();
    listed
}
