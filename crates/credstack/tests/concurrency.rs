//! Concurrency (issue 7): many clients on a few wallets at once, mixing
//! debits, holds, captures (under, at and over the held amount), releases,
//! grants and voids, against balances small enough that many calls are
//! refused. The check: the final state equals a sequential replay of the
//! acknowledged operations in commit order through `credstack-core`'s own
//! wallet model, every acknowledged answer (allocations, reservations,
//! `balance_after`) is the one the replay gives at that point, and `verify`
//! finds rule 16 intact, so no wallet ever spent what it did not have.
//! Refusals (402) are not replayed: with releases and voids floating, the
//! moment a refusal saw cannot be pinned down (RELIABILITY.md says why).
//!
//! Commit order: the single writer gives every debit, hold and grant an id
//! from one monotonic generator as it applies them, so ids order them.
//! Releases and voids create no id; each is placed, within the window its
//! real-time order allows (after every call answered before it was sent,
//! before every call sent after it was answered), at the point where the
//! next answers need it: as late as possible, since until an operation
//! needs it, whether it happened yet changes nothing it returned.
//! `concurrency_postgres.rs` runs the same on PostgreSQL.

mod common;

use common::Server;
use credstack::ids::{self, Kind};
use credstack_core::{
    Allocation, Amount, Changes, DebitId, GrantId, GrantTerms, HoldId, Instant, Purpose, Wallet,
};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

const WALLETS: usize = 3;
const CLIENTS: usize = 16;
const OPS_PER_CLIENT: usize = 40;
const OVERDRAFT: i64 = 20;

#[derive(Clone, Debug)]
enum Op {
    Debit {
        amount: i64,
        answer: Value,
    },
    Hold {
        amount: i64,
        answer: Value,
    },
    Capture {
        hold: u128,
        amount: i64,
        debit: u128,
    },
    Release {
        hold: u128,
    },
    Grant {
        amount: i64,
        purpose: Purpose,
        id: u128,
    },
    Void {
        grant: u128,
    },
}

#[derive(Clone, Debug)]
struct Done {
    wallet: usize,
    op: Op,
    sent: std::time::Instant,
    answered: std::time::Instant,
}

impl Done {
    /// The id the writer gave the operation, ordering it; `None` for the
    /// ones that create none.
    fn order(&self) -> Option<u128> {
        match &self.op {
            Op::Debit { answer, .. } => Some(parse(Kind::Debit, &answer["id"])),
            Op::Hold { answer, .. } => Some(parse(Kind::Hold, &answer["id"])),
            Op::Capture { debit, .. } => Some(*debit),
            Op::Grant { id, .. } => Some(*id),
            Op::Release { .. } | Op::Void { .. } => None,
        }
    }
}

fn parse(kind: Kind, value: &Value) -> u128 {
    ids::parse(kind, value.as_str().expect("an id")).expect("a valid id")
}

fn units(value: &Value) -> i64 {
    value
        .as_str()
        .expect("an amount")
        .parse()
        .expect("whole units")
}

struct Shared {
    wallets: Vec<String>,
    /// Grant ids each wallet has had (for voids), and each client's open holds.
    grants: Mutex<Vec<Vec<String>>>,
    done: Mutex<Vec<Done>>,
}

async fn grant(server: &Server, shared: &Shared, w: usize, amount: i64, purpose: Purpose) {
    let sent = std::time::Instant::now();
    let response = server
        .grant(
            &shared.wallets[w],
            json!({"amount": amount.to_string(), "purpose": purpose.as_str()}),
        )
        .await
        .ok();
    let id = response.id();
    shared.grants.lock().unwrap()[w].push(id.clone());
    shared.done.lock().unwrap().push(Done {
        wallet: w,
        op: Op::Grant {
            amount,
            purpose,
            id: ids::parse(Kind::Grant, &id).unwrap(),
        },
        sent,
        answered: std::time::Instant::now(),
    });
}

async fn client(server: Arc<Server>, shared: Arc<Shared>, seed: u64) {
    let mut state = seed;
    let mut next = |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let mut holds: Vec<(usize, String, i64)> = Vec::new();
    for _ in 0..OPS_PER_CLIENT {
        let w = next(WALLETS as u64) as usize;
        let wallet = &shared.wallets[w];
        let amount = 1 + next(15) as i64;
        let sent = std::time::Instant::now();
        let op = match next(12) {
            0..=3 => {
                let response = server.debit(wallet, &amount.to_string()).await;
                (response.status == 200).then_some(Op::Debit {
                    amount,
                    answer: response.body,
                })
            }
            4..=5 => {
                let response = server
                    .hold(wallet, json!({"amount": amount.to_string()}))
                    .await;
                if response.status == 200 {
                    holds.push((w, response.id(), amount));
                }
                (response.status == 200).then_some(Op::Hold {
                    amount,
                    answer: response.body,
                })
            }
            6..=7 if !holds.is_empty() => {
                let (hw, hold, held) = holds.remove(next(holds.len() as u64) as usize);
                let amount = (held - 2 + next(6) as i64).max(1);
                let response = server
                    .post(
                        &format!("/v1/holds/{hold}/capture"),
                        json!({"amount": amount.to_string()}),
                    )
                    .await;
                if response.status != 200 {
                    holds.push((hw, hold, held));
                } else {
                    let op = Op::Capture {
                        hold: ids::parse(Kind::Hold, &hold).unwrap(),
                        amount,
                        debit: parse(Kind::Debit, &response.body["debit_id"]),
                    };
                    record(&shared, hw, op, sent);
                }
                None
            }
            8 if !holds.is_empty() => {
                let (hw, hold, _) = holds.remove(next(holds.len() as u64) as usize);
                let response = server
                    .post(&format!("/v1/holds/{hold}/release"), json!({}))
                    .await;
                assert_eq!(response.status, 200, "{}", response.body);
                record(
                    &shared,
                    hw,
                    Op::Release {
                        hold: ids::parse(Kind::Hold, &hold).unwrap(),
                    },
                    sent,
                );
                None
            }
            9 => {
                grant(&server, &shared, w, 5 + amount, Purpose::Paid).await;
                None
            }
            10 => {
                let grants = shared.grants.lock().unwrap()[w].clone();
                let target = &grants[next(grants.len() as u64) as usize];
                let response = server
                    .post(&format!("/v1/grants/{target}/void"), json!({}))
                    .await;
                (response.status == 200).then(|| Op::Void {
                    grant: ids::parse(Kind::Grant, target).unwrap(),
                })
            }
            _ => {
                let response = server.debit(wallet, &(amount * 2).to_string()).await;
                (response.status == 200).then(|| Op::Debit {
                    amount: amount * 2,
                    answer: response.body,
                })
            }
        };
        if let Some(op) = op {
            record(&shared, w, op, sent);
        }
    }
    // Holds left open end released, so the final state has none pending.
    for (w, hold, _) in holds {
        let sent = std::time::Instant::now();
        server
            .post(&format!("/v1/holds/{hold}/release"), json!({}))
            .await
            .ok();
        record(
            &shared,
            w,
            Op::Release {
                hold: ids::parse(Kind::Hold, &hold).unwrap(),
            },
            sent,
        );
    }
}

fn record(shared: &Shared, wallet: usize, op: Op, sent: std::time::Instant) {
    shared.done.lock().unwrap().push(Done {
        wallet,
        op,
        sent,
        answered: std::time::Instant::now(),
    });
}

fn allocations(value: &Value) -> Vec<(Option<String>, i64)> {
    value
        .as_array()
        .expect("a list of allocations")
        .iter()
        .map(|a| {
            (
                a["grant_id"].as_str().map(str::to_string),
                units(&a["amount"]),
            )
        })
        .collect()
}

/// Whether a debit's answer shows the allocations and `balance_after` the
/// model gave it.
fn same_debit(
    what: &str,
    answer: &Value,
    parts: &[Allocation],
    wallet: &Wallet,
) -> Result<(), String> {
    let observed = (
        allocations(&answer["allocations"]),
        units(&answer["balance_after"]),
    );
    let replayed = (
        model_parts(parts.iter().map(|a| (a.grant, a.amount))),
        wallet.balance.atomic(),
    );
    if observed != replayed {
        return Err(format!(
            "{what} answered {observed:?}, replay gives {replayed:?}"
        ));
    }
    Ok(())
}

/// A debit's allocations or a hold's reservations, as the wire shows them.
fn model_parts(
    parts: impl Iterator<Item = (Option<GrantId>, Amount)>,
) -> Vec<(Option<String>, i64)> {
    parts
        .map(|(grant, amount)| {
            (
                grant.map(|g| ids::format(Kind::Grant, g.0)),
                amount.atomic(),
            )
        })
        .collect()
}

/// Applies `op` to a copy of the model; the copy, if the answer the
/// server gave is the one the model gives.
fn apply(
    model: &Wallet,
    now: Instant,
    op: &Op,
    debits: &std::collections::HashMap<u128, Value>,
) -> Result<Wallet, String> {
    let mut wallet = model.clone();
    let mut changes = Changes::default();
    match op {
        Op::Debit { amount, answer } => {
            let id = DebitId(parse(Kind::Debit, &answer["id"]));
            let parts = wallet
                .debit(id, Amount::from_atomic(*amount), now, &mut changes)
                .map_err(|r| format!("debit refused in the replay: {}", r.code()))?;
            same_debit("debit", answer, &parts, &wallet)?;
        }
        Op::Hold { amount, answer } => {
            let id = HoldId(parse(Kind::Hold, &answer["id"]));
            let expires_at =
                chrono::DateTime::parse_from_rfc3339(answer["expires_at"].as_str().unwrap())
                    .unwrap()
                    .with_timezone(&chrono::Utc);
            wallet
                .place_hold(
                    id,
                    Amount::from_atomic(*amount),
                    expires_at,
                    now,
                    &mut changes,
                )
                .map_err(|r| format!("hold refused in the replay: {}", r.code()))?;
            let observed = allocations(&answer["reservations"]);
            let replayed = model_parts(
                wallet
                    .hold(id)
                    .unwrap()
                    .reservations
                    .iter()
                    .map(|r| (r.grant, r.amount)),
            );
            if observed != replayed {
                return Err(format!(
                    "hold answered {observed:?}, replay gives {replayed:?}"
                ));
            }
        }
        Op::Capture {
            hold,
            amount,
            debit,
        } => {
            let parts = wallet
                .capture(
                    HoldId(*hold),
                    Amount::from_atomic(*amount),
                    DebitId(*debit),
                    now,
                    &mut changes,
                )
                .map_err(|r| format!("capture refused in the replay: {}", r.code()))?;
            same_debit("capture", &debits[debit], &parts, &wallet)?;
        }
        Op::Release { hold } => wallet
            .release(HoldId(*hold), now, &mut changes)
            .map_err(|r| format!("release refused in the replay: {}", r.code()))?,
        Op::Grant {
            amount,
            purpose,
            id,
        } => {
            let terms = GrantTerms {
                amount: Amount::from_atomic(*amount),
                purpose: *purpose,
                priority: purpose.default_priority(),
                effective_at: now,
                expires_at: None,
                recurrence: None,
                rollover_max: Amount::ZERO,
            };
            wallet
                .add_grant(GrantId(*id), terms, now, &mut changes)
                .map_err(|r| format!("grant refused in the replay: {}", r.code()))?;
        }
        // A grant that has left the working set (nothing left, nothing
        // to renew) is voided with nothing to forfeit, as the writer does.
        Op::Void { grant } if wallet.grant(GrantId(*grant)).is_none() => {}
        Op::Void { grant } => wallet
            .void_grant(GrantId(*grant), now, &mut changes)
            .map_err(|r| format!("void refused in the replay: {}", r.code()))?,
    }
    Ok(wallet)
}

/// Replays one wallet's operations in commit order; returns the final
/// model and how many operations were replayed.
fn replay(
    done: Vec<Done>,
    debits: std::collections::HashMap<u128, Value>,
    now: Instant,
    accept: &dyn Fn(&Wallet) -> bool,
) -> (Wallet, usize) {
    let count = done.len();
    let (mut ordered, mut floating): (Vec<Done>, Vec<Done>) =
        done.into_iter().partition(|d| d.order().is_some());
    ordered.sort_by_key(|d| d.order());
    floating.sort_by_key(|d| d.answered);
    let mut search = Search {
        accept,
        now,
        debits: &debits,
        ordered: &ordered,
        budget: 200_000,
        deepest: (0, String::new()),
    };
    match search.from(Wallet::new(Amount::from_atomic(OVERDRAFT)), 0, floating) {
        Some(wallet) => (wallet, count),
        None => panic!(
            "no order of the floating operations within their real-time windows replays operation {} of the commit order: {}\n{:?}",
            search.deepest.0,
            search.deepest.1,
            ordered[search.deepest.0.min(ordered.len() - 1)]
        ),
    }
}

/// A depth-first search for where releases and voids committed: at each
/// operation of the commit order, the floating ones that must come first
/// (answered before it was sent) do; then the others that may (sent before
/// it was answered) are tried, no subset first, fewest first, backtracking
/// when a later answer cannot be replayed.
struct Search<'a> {
    /// Whether a final model is the state the server ended with.
    accept: &'a dyn Fn(&Wallet) -> bool,
    now: Instant,
    debits: &'a std::collections::HashMap<u128, Value>,
    ordered: &'a [Done],
    budget: u64,
    deepest: (usize, String),
}

/// The orders of these operations their real-time order allows (one
/// answered before another was sent comes first); beyond five, only the
/// order they were answered in.
fn orders(ops: &[&Done]) -> Vec<Vec<usize>> {
    fn extend(ops: &[&Done], prefix: &mut Vec<usize>, all: &mut Vec<Vec<usize>>) {
        if prefix.len() == ops.len() {
            all.push(prefix.clone());
            return;
        }
        for i in 0..ops.len() {
            let waits = (0..ops.len())
                .any(|j| j != i && !prefix.contains(&j) && ops[j].answered < ops[i].sent);
            if !prefix.contains(&i) && !waits {
                prefix.push(i);
                extend(ops, prefix, all);
                prefix.pop();
            }
        }
    }
    if ops.len() > 5 {
        let mut order: Vec<usize> = (0..ops.len()).collect();
        order.sort_by_key(|&i| ops[i].answered);
        return vec![order];
    }
    let mut all = Vec::new();
    extend(ops, &mut Vec::new(), &mut all);
    all
}

impl Search<'_> {
    fn apply_all(&self, wallet: &Wallet, ops: &[&Done], order: &[usize]) -> Option<Wallet> {
        let mut wallet = wallet.clone();
        for &i in order {
            wallet = apply(&wallet, self.now, &ops[i].op, self.debits).ok()?;
        }
        Some(wallet)
    }

    fn from(&mut self, wallet: Wallet, position: usize, floating: Vec<Done>) -> Option<Wallet> {
        let Some(next) = self.ordered.get(position) else {
            // The rest committed after the last operation with an id, in
            // some order that leaves the state the server ended with.
            let rest: Vec<&Done> = floating.iter().collect();
            for order in orders(&rest) {
                if let Some(end) = self.apply_all(&wallet, &rest, &order)
                    && (self.accept)(&end)
                {
                    return Some(end);
                }
            }
            self.deepest = (
                position,
                "no order of the last releases and voids gives the final state".into(),
            );
            return None;
        };
        // Answered before `next` was sent: committed before it. Sent before
        // it was answered: may have. The rest: after.
        let forced: Vec<usize> = (0..floating.len())
            .filter(|&i| floating[i].answered < next.sent)
            .collect();
        let optional: Vec<usize> = (0..floating.len())
            .filter(|&i| !forced.contains(&i) && floating[i].sent < next.answered)
            .collect();
        assert!(optional.len() <= 16, "too many candidates to place");
        let mut subsets: Vec<u32> = (0..1u32 << optional.len()).collect();
        subsets.sort_by_key(|m| m.count_ones());
        for mask in subsets {
            let mut chosen = forced.clone();
            chosen.extend(
                (0..optional.len())
                    .filter(|b| mask & (1 << b) != 0)
                    .map(|b| optional[b]),
            );
            let before: Vec<&Done> = chosen.iter().map(|&i| &floating[i]).collect();
            for order in orders(&before) {
                if self.budget == 0 {
                    return None;
                }
                self.budget -= 1;
                let Some(trial) = self.apply_all(&wallet, &before, &order) else {
                    continue;
                };
                match apply(&trial, self.now, &next.op, self.debits) {
                    Ok(after) => {
                        let remaining: Vec<Done> = (0..floating.len())
                            .filter(|i| !chosen.contains(i))
                            .map(|i| floating[i].clone())
                            .collect();
                        if let Some(end) = self.from(after, position + 1, remaining) {
                            return Some(end);
                        }
                    }
                    Err(error) => {
                        if position >= self.deepest.0 {
                            self.deepest = (position, error);
                        }
                    }
                }
            }
        }
        None
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_equal_a_sequential_replay_in_commit_order() {
    let server = Arc::new(Server::start().await);
    let system = server.credit_system("tokens", 0).await;
    let mut wallets = Vec::new();
    for _ in 0..WALLETS {
        wallets.push(
            server
                .wallet_with_overdraft(&system, &OVERDRAFT.to_string())
                .await,
        );
    }
    let shared = Arc::new(Shared {
        wallets,
        grants: Mutex::new(vec![Vec::new(); WALLETS]),
        done: Mutex::new(Vec::new()),
    });
    for w in 0..WALLETS {
        grant(&server, &shared, w, 50, Purpose::Promotional).await;
        grant(&server, &shared, w, 80, Purpose::Bundled).await;
        grant(&server, &shared, w, 40, Purpose::Paid).await;
    }
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            tokio::spawn(client(
                server.clone(),
                shared.clone(),
                0x5eed + c as u64 * 7919,
            ))
        })
        .collect();
    for c in clients {
        c.await.unwrap();
    }

    let done = shared.done.lock().unwrap().clone();
    let now: Instant = common::START.parse().unwrap();
    let mut replayed = 0;
    for (w, wallet) in shared.wallets.iter().enumerate() {
        let mine: Vec<Done> = done.iter().filter(|d| d.wallet == w).cloned().collect();
        let mut debits = std::collections::HashMap::new();
        for d in &mine {
            if let Op::Capture { debit, .. } = d.op {
                let body = server
                    .get(&format!("/v1/debits/{}", ids::format(Kind::Debit, debit)))
                    .await
                    .ok()
                    .body;
                debits.insert(debit, body);
            }
        }
        // What the server ended with: the balance, and every grant's
        // remainder and held amount (a grant the model has retired holds
        // nothing).
        let balance = server.balance(wallet).await;
        let observed: Vec<(String, i64)> = ["balance", "available", "held", "debt"]
            .iter()
            .map(|field| (field.to_string(), units(&balance[field])))
            .collect();
        let mut grant_states = Vec::new();
        for d in &mine {
            if let Op::Grant { id, .. } = d.op {
                let grant = server.get_grant(&ids::format(Kind::Grant, id)).await;
                grant_states.push((id, units(&grant["remaining"]), units(&grant["held"])));
            }
        }
        let model_state = |model: &Wallet| {
            let summary = model.summary();
            let fields: Vec<(String, i64)> = [
                ("balance", summary.balance),
                ("available", summary.available),
                ("held", summary.held),
                ("debt", summary.debt),
            ]
            .iter()
            .map(|(field, value)| (field.to_string(), value.atomic()))
            .collect();
            let grants: Vec<(u128, i64, i64)> = grant_states
                .iter()
                .map(|(id, _, _)| match model.grant(GrantId(*id)) {
                    Some(g) => (*id, g.remaining.atomic(), g.held.atomic()),
                    None => (*id, 0, 0),
                })
                .collect();
            (fields, grants)
        };
        let accept =
            |model: &Wallet| model_state(model) == (observed.clone(), grant_states.clone());
        let (model, count) = replay(mine.clone(), debits, now, &accept);
        replayed += count;
        assert_eq!(
            model_state(&model),
            (observed.clone(), grant_states.clone()),
            "wallet {w}"
        );
        server.check_invariants(wallet).await;
    }
    let (code, report) = server.cli("verify", &[]);
    assert_eq!(code, 0, "{report}");
    println!(
        "concurrency: {replayed} acknowledged operations replayed in commit order on {WALLETS} wallets by {CLIENTS} clients"
    );
}
