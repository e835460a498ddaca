//! credstack-bench: measures credstack doing real work on a real store with
//! durable acknowledgement, and prints the figures. Nothing is extrapolated
//! and nothing is asserted about time: this machine is shared and noisy, so
//! figures are read, compared as ratios within one run, and recorded in
//! BENCHMARKS.md.
//!
//! `cargo run --release -p credstack-bench -- [--quick] [--json] [WORKLOAD...]`

use credstack::clock::Clock;
use credstack::engine::{NewPromotion, Outcome, Request};
use credstack::ledger::{Config, Ledger};
use std::sync::Arc;
use std::time::Instant;

const WORKLOADS: &[&str] = &["promo-grant-all"];

struct Options {
    quick: bool,
    json: bool,
    workloads: Vec<String>,
}

/// One workload's result. Latencies are absent where a workload is one call.
struct Figure {
    workload: &'static str,
    ops: u64,
    seconds: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    notes: String,
}

fn main() {
    let options = match parse_args() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            eprintln!(
                "usage: credstack-bench [--quick] [--json] [WORKLOAD...]\nworkloads: {}",
                WORKLOADS.join(", ")
            );
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if !options.json {
        println!(
            "{:<18} {:>12} {:>14} {:>9} {:>9} {:>10}  notes",
            "workload", "ops", "ops/s", "p50 ms", "p99 ms", "seconds"
        );
    }
    for workload in &options.workloads {
        let figure = match workload.as_str() {
            "promo-grant-all" => {
                let customers = if options.quick { 10_000 } else { 100_000 };
                runtime.block_on(promo_grant_all(customers))
            }
            other => unreachable!("checked in parse_args: {other}"),
        };
        print(&figure, options.json);
    }
}

fn parse_args() -> Result<Options, String> {
    let mut options = Options {
        quick: false,
        json: false,
        workloads: Vec::new(),
    };
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--quick" => options.quick = true,
            "--json" => options.json = true,
            name if WORKLOADS.contains(&name) => options.workloads.push(arg),
            other => return Err(format!("unknown argument: {other}")),
        }
    }
    if options.workloads.is_empty() {
        options.workloads = WORKLOADS.iter().map(|w| w.to_string()).collect();
    }
    Ok(options)
}

fn print(figure: &Figure, json: bool) {
    let ops_per_sec = figure.ops as f64 / figure.seconds;
    if json {
        let line = serde_json::json!({
            "workload": figure.workload,
            "ops_per_sec": ops_per_sec,
            "p50_ms": figure.p50_ms,
            "p99_ms": figure.p99_ms,
            "ops": figure.ops,
            "seconds": figure.seconds,
            "notes": figure.notes,
        });
        println!("{line}");
    } else {
        let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
        println!(
            "{:<18} {:>12} {:>14.0} {:>9} {:>9} {:>10.2}  {}",
            figure.workload,
            figure.ops,
            ops_per_sec,
            ms(figure.p50_ms),
            ms(figure.p99_ms),
            figure.seconds,
            figure.notes
        );
    }
}

/// A ledger on a fresh embedded store in a temporary directory.
fn open_ledger() -> (Ledger, tempfile::TempDir) {
    let data = tempfile::tempdir().expect("temp dir");
    let ledger = Ledger::open(Config {
        backend: credstack::ledger::Backend::Embedded {
            data_dir: data.path().to_path_buf(),
        },
        clock: Clock::system(),
        render: credstack::http::render,
    })
    .expect("open ledger");
    (ledger, data)
}

async fn execute(ledger: &Ledger, request: Request) -> Outcome {
    ledger
        .execute(request)
        .await
        .expect("benchmark requests succeed")
}

/// Creates `count` customers, each with a wallet in `credit_system_id`,
/// with many requests in flight so the writer batches them.
async fn seed_customers(ledger: &Ledger, credit_system_id: u128, count: usize) {
    const IN_FLIGHT: usize = 512;
    let limit = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let mut tasks = tokio::task::JoinSet::new();
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
            };
            execute(&ledger, request).await;
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

/// One all-customers grant of a promotional credit to `customers`
/// customers with wallets: a grant, an assignment and a ledger entry each.
async fn promo_grant_all(customers: usize) -> Figure {
    let (ledger, _data) = open_ledger();
    let request = Request::CreateCreditSystem {
        key: "tokens".into(),
        name: "Tokens".into(),
        unit: "tokens".into(),
        scale: 0,
    };
    let Outcome::CreditSystem(cs) = execute(&ledger, request).await else {
        unreachable!("a credit system")
    };
    let seeding = Instant::now();
    seed_customers(&ledger, cs.id, customers).await;
    let seed_seconds = seeding.elapsed().as_secs_f64();
    let request = Request::CreatePromotion(NewPromotion {
        name: "Launch".into(),
        description: None,
        credit_system_id: cs.id,
        starts_at: None,
        ends_at: None,
        quantity: "500".into(),
        reset_interval: Some(credstack_core::Interval::Month),
        access_period: credstack_core::Period::new(credstack_core::Interval::Month, 3),
        allow_multiple_grants: false,
    });
    let Outcome::Promotion(promotion) = execute(&ledger, request).await else {
        unreachable!("a promotion")
    };
    let started = Instant::now();
    let last = std::sync::Mutex::new(None);
    let reply = ledger
        .to_all(
            credstack::ledger::BulkCall::new(
                credstack::ledger::BulkAction::Grant,
                promotion.promotion.id,
                None,
            ),
            &|so_far| *last.lock().unwrap() = Some(so_far.clone()),
            &|_| serde_json::Value::Null,
        )
        .await;
    let seconds = started.elapsed().as_secs_f64();
    assert!(
        matches!(reply, credstack::engine::Reply::Fresh(Ok(_))),
        "grant to all: {reply:?}"
    );
    let outcome = last.into_inner().unwrap().expect("at least one chunk");
    assert_eq!(
        outcome.done_count, customers as u64,
        "every customer granted"
    );
    assert_eq!(outcome.skipped_count, 0);
    Figure {
        workload: "promo-grant-all",
        ops: outcome.done_count,
        seconds,
        p50_ms: None,
        p99_ms: None,
        notes: format!(
            "{customers} customers with wallets, one call; seeding took {seed_seconds:.1} s; peak RSS {} MiB",
            peak_rss_mib()
        ),
    }
}

/// The process's peak resident memory, from /proc (Linux); 0 elsewhere.
fn peak_rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse::<u64>().ok())
        .map_or(0, |kib| kib / 1024)
}
