//! credstack-bench: measures credstack doing real work on a real store with
//! durable acknowledgement, and prints the figures. Nothing is extrapolated
//! and nothing is asserted about time: this machine is shared and noisy, so
//! figures are read, compared as ratios within one run, and recorded in
//! BENCHMARKS.md.
//!
//! `cargo run --release -p credstack-bench -- [--quick] [--json] [WORKLOAD...]`

mod drive;
mod naive;
mod seed;

use credstack::clock::Clock;
use credstack::engine::{Idempotency, NewDebit, NewPromotion, Outcome, Reply, Request};
use credstack::ids::{self, Kind};
use credstack::ledger::{Backend, Config, Ledger};
use drive::{Measured, drive};
use rand::{RngExt, SeedableRng};
use seed::execute;
use std::sync::Arc;
use std::time::Instant;

const WORKLOADS: &[&str] = &[
    "engine-debits",
    "engine-hot-wallet",
    "http-debits",
    "http-batch",
    "promo-grant-all",
    "pg-debits",
    "read-under-load",
    "nats-usage",
    "webhooks",
    "memory",
    "restart",
];

struct Options {
    quick: bool,
    json: bool,
    /// `--wallets N` and `--ops N`: override the workloads' sizes, to
    /// compare a change on one workload quickly.
    wallets: Option<usize>,
    ops: Option<usize>,
    workloads: Vec<String>,
}

/// One workload's result. Latencies are absent where a workload is one call.
struct Figure {
    workload: &'static str,
    ops: u64,
    seconds: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    /// The baseline measured beside it in the same run, in ops/s.
    baseline_ops_per_sec: Option<f64>,
    notes: String,
    /// Further fields for `--json`, after the common ones (the notes say
    /// the same in words).
    more: Vec<(&'static str, serde_json::Value)>,
}

impl Figure {
    fn from(workload: &'static str, measured: &Measured, notes: String) -> Figure {
        Figure {
            workload,
            ops: measured.ops,
            seconds: measured.seconds,
            p50_ms: Some(measured.p50_ms),
            p99_ms: Some(measured.p99_ms),
            baseline_ops_per_sec: None,
            notes,
            more: Vec::new(),
        }
    }
}

fn main() {
    let options = match parse_args() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            eprintln!(
                "usage: credstack-bench [--quick] [--json] [--wallets N] [--ops N] [WORKLOAD...]\nworkloads: {}\n(read-under-load times two windows of reads, 10 s each, 1 s with --quick; --ops does not apply to it)",
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
    let quick = options.quick;
    let size = |quick_size: usize, full_size: usize| if quick { quick_size } else { full_size };
    let wallets = |quick_size: usize, full_size: usize| {
        options.wallets.unwrap_or(size(quick_size, full_size))
    };
    let ops = |quick_size: usize, full_size: usize| {
        options.ops.unwrap_or(size(quick_size, full_size)) as u64
    };
    for workload in &options.workloads {
        let figures = match workload.as_str() {
            "engine-debits" => vec![runtime.block_on(engine_debits(
                "engine-debits",
                wallets(5_000, 100_000),
                ops(20_000, 1_000_000),
            ))],
            "engine-hot-wallet" => {
                vec![runtime.block_on(engine_debits("engine-hot-wallet", 1, ops(20_000, 500_000)))]
            }
            "http-debits" => {
                vec![runtime.block_on(http_debits(wallets(1_000, 10_000), ops(5_000, 200_000)))]
            }
            "http-batch" => {
                vec![runtime.block_on(http_batch(wallets(1_000, 10_000), ops(10, 300)))]
            }
            "promo-grant-all" => {
                vec![runtime.block_on(promo_grant_all(wallets(10_000, 1_000_000)))]
            }
            "pg-debits" => runtime.block_on(pg_debits(wallets(1_000, 20_000), ops(5_000, 200_000))),
            "read-under-load" => runtime.block_on(read_under_load(
                wallets(200, 1_000),
                std::time::Duration::from_secs(size(1, 10) as u64),
            )),
            "nats-usage" => {
                runtime.block_on(nats_usage(wallets(1_000, 10_000), ops(5_000, 200_000)))
            }
            "webhooks" => vec![runtime.block_on(webhooks(wallets(500, 10_000)))],
            "memory" => vec![runtime.block_on(memory(wallets(20_000, 1_000_000)))],
            "restart" => vec![runtime.block_on(restart(ops(100_000, 10_000_000)))],
            other => unreachable!("checked in parse_args: {other}"),
        };
        for figure in &figures {
            print(figure, options.json);
        }
    }
}

fn parse_args() -> Result<Options, String> {
    let mut options = Options {
        quick: false,
        json: false,
        wallets: None,
        ops: None,
        workloads: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    let number = |flag: &str, value: Option<String>| {
        value
            .and_then(|v| v.replace('_', "").parse::<usize>().ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("{flag} needs a positive number"))
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--wallets" => options.wallets = Some(number("--wallets", args.next())?),
            "--ops" => options.ops = Some(number("--ops", args.next())?),
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
        let mut line = serde_json::json!({
            "workload": figure.workload,
            "ops_per_sec": ops_per_sec,
            "p50_ms": figure.p50_ms,
            "p99_ms": figure.p99_ms,
            "ops": figure.ops,
            "seconds": figure.seconds,
            "notes": figure.notes,
        });
        if let Some(baseline) = figure.baseline_ops_per_sec {
            line["baseline_ops_per_sec"] = baseline.into();
            line["ratio"] = (ops_per_sec / baseline).into();
        }
        for (field, value) in &figure.more {
            line[*field] = value.clone();
        }
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
            match figure.baseline_ops_per_sec {
                Some(baseline) => format!(
                    "{:.1}x the baseline ({baseline:.0} ops/s); {}",
                    ops_per_sec / baseline,
                    figure.notes
                ),
                None => figure.notes.clone(),
            }
        );
    }
}

/// A ledger on a fresh embedded store in a temporary directory.
fn open_ledger() -> (Ledger, tempfile::TempDir) {
    let data = tempfile::tempdir().expect("temp dir");
    let ledger = open_embedded(data.path());
    (ledger, data)
}

fn open_embedded(dir: &std::path::Path) -> Ledger {
    open_on(Backend::Embedded {
        data_dir: dir.to_path_buf(),
    })
}

fn open_on(backend: Backend) -> Ledger {
    Ledger::open(Config {
        backend,
        clock: Clock::system(),
        render: credstack::wire::render,
    })
    .expect("open ledger")
}

/// An idempotency key as clients make them: a random UUID, so keys arrive
/// in no order (a counter's keys would each land beside the last one).
fn client_key() -> String {
    let hex = format!("{:032x}", rand::random::<u128>());
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// A keyed debit of 1 from `wallet`, through the ledger's Rust API.
async fn debit(ledger: &Ledger, wallet: u128) {
    let key = client_key();
    let idempotency = Idempotency::new(key, &[b"debit", &wallet.to_be_bytes(), b"1"]);
    let request = Request::Debit(NewDebit {
        wallet_id: wallet,
        amount: "1".into(),
        description: None,
        metadata: Default::default(),
    });
    match ledger.submit(request, Some(idempotency)).await {
        Reply::Fresh(Ok(Outcome::Debit(_))) => {}
        other => panic!("a debit failed: {other:?}"),
    }
}

/// Wallet picks: Zipf-distributed over `wallets` (rank 1 the most
/// popular), one generator per caller, seeded so runs repeat.
fn zipf_picker(wallets: Vec<u128>) -> impl Fn(usize, u64) -> u128 + Send + Sync + 'static {
    let zipf = rand_distr::Zipf::new(wallets.len() as f64, 1.0).expect("zipf");
    let rngs: Vec<std::sync::Mutex<rand::rngs::SmallRng>> = (0..1024)
        .map(|caller| std::sync::Mutex::new(rand::rngs::SmallRng::seed_from_u64(caller)))
        .collect();
    move |caller, _| {
        let rank: f64 = rngs[caller % rngs.len()].lock().unwrap().sample(zipf);
        wallets[(rank as usize).clamp(1, wallets.len()) - 1]
    }
}

/// Debits through the ledger's own Rust API on the embedded store: 256
/// callers, wallets chosen Zipf-distributed among `wallet_count` wallets
/// of four stacked grants.
async fn engine_debits(workload: &'static str, wallet_count: usize, total: u64) -> Figure {
    let (ledger, _data) = open_ledger();
    let cs = seed::credit_system(&ledger).await;
    let seeding = Instant::now();
    let wallets = seed::wallets(&ledger, cs, wallet_count, true).await;
    let seed_seconds = seeding.elapsed().as_secs_f64();
    let pick = zipf_picker(wallets);
    let driver = ledger.clone();
    let (measured, settled) = merged(&ledger, async move {
        drive(256, total, move |caller, n| {
            let ledger = driver.clone();
            let wallet = pick(caller, n);
            async move { debit(&ledger, wallet).await }
        })
        .await
    })
    .await;
    let notes = format!(
        "{wallet_count} wallets x 4 grants (seeded in {seed_seconds:.1} s), 256 callers, keyed debits of 1, Zipf s=1, until merged ({settled:.2} s after the last answer)"
    );
    Figure::from(workload, &measured, notes)
}

/// Serves `ledger` over real HTTP on loopback, on a runtime of its own
/// (two threads, as `serve` would have on this machine); returns the base
/// URL. The runtime lives as long as the process.
fn serve(ledger: Ledger) -> String {
    serve_until(ledger, std::future::pending()).0
}

/// A server that [`Served::stop`] stops, as `serve` stops on a signal.
struct Served {
    base: String,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Served {
    fn start(ledger: Ledger) -> Served {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (base, thread) = serve_until(ledger, async move {
            let _ = stopped.await;
        });
        Served { base, stop, thread }
    }

    /// Stops accepting, waits for open connections to finish and the store
    /// to settle, and ends the server's runtime (its background tasks and
    /// its handle on the ledger with it).
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::task::spawn_blocking(move || self.thread.join())
            .await
            .expect("join")
            .expect("the server's thread");
    }
}

/// `serve`, until `shutdown` resolves; returns the base URL and the
/// server's thread, which ends after it.
fn serve_until(
    ledger: Ledger,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> (String, std::thread::JoinHandle<()>) {
    let (sender, receiver) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("server runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            sender
                .send(format!("http://{}", listener.local_addr().unwrap()))
                .unwrap();
            credstack::server::run(listener, ledger, shutdown)
                .await
                .expect("server");
        });
    });
    (receiver.recv().expect("server address"), thread)
}

const HTTP_KEY: &str = "csk_bench_admin_key";

/// A ledger with `wallet_count` stacked wallets, served over HTTP.
async fn http_setup(wallet_count: usize) -> (Ledger, String, Vec<String>, tempfile::TempDir, f64) {
    let (ledger, data) = open_ledger();
    ledger.ensure_admin_key(HTTP_KEY).await.expect("admin key");
    let cs = seed::credit_system(&ledger).await;
    let seeding = Instant::now();
    let wallets = seed::wallets(&ledger, cs, wallet_count, true).await;
    let seed_seconds = seeding.elapsed().as_secs_f64();
    let base = serve(ledger.clone());
    let wallets = wallets
        .iter()
        .map(|&w| ids::format(Kind::Wallet, w))
        .collect();
    (ledger, base, wallets, data, seed_seconds)
}

/// Runs `work`, then waits until the embedded store has merged everything
/// it acknowledged (`Ledger::settle`), and counts that wait in the figure's
/// seconds: a debit is durable once answered, but a rate the merger cannot
/// keep up with would only grow its backlog, so the rate reported is the
/// one it sustains. (PostgreSQL has no journal: nothing to wait for.)
/// Also returns how long the wait was.
async fn merged(ledger: &Ledger, work: impl Future<Output = Measured>) -> (Measured, f64) {
    let started = Instant::now();
    let mut measured = work.await;
    let answered = started.elapsed();
    ledger.settle().await;
    let all = started.elapsed();
    measured.seconds = all.as_secs_f64();
    (measured, (all - answered).as_secs_f64())
}

/// Single keyed debits over HTTP to a real server, 64 keep-alive connections.
async fn http_debits(wallet_count: usize, total: u64) -> Figure {
    let (ledger, base, wallets, _data, seed_seconds) = http_setup(wallet_count).await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .expect("client");
    let pick = zipf_picker((0..wallets.len() as u128).collect());
    let (measured, settled) = merged(
        &ledger,
        drive(64, total, move |caller, n| {
            let client = client.clone();
            let url = format!(
                "{base}/v1/wallets/{}/debits",
                wallets[pick(caller, n) as usize]
            );
            async move {
                let response = client
                    .post(url)
                    .bearer_auth(HTTP_KEY)
                    .header("Idempotency-Key", client_key())
                    .json(&serde_json::json!({"amount": "1"}))
                    .send()
                    .await
                    .expect("request");
                assert_eq!(response.status(), 200, "a debit over HTTP failed");
                response.bytes().await.expect("body");
            }
        }),
    )
    .await;
    let notes = format!(
        "{wallet_count} wallets x 4 grants (seeded in {seed_seconds:.1} s), 64 connections, client and server in one process, until merged ({settled:.2} s after the last answer)"
    );
    Figure::from("http-debits", &measured, notes)
}

/// `/v1/debits/batch` with 1,000 keyed items per request, 4 in flight.
async fn http_batch(wallet_count: usize, requests: u64) -> Figure {
    const ITEMS: u64 = 1000;
    let (ledger, base, wallets, _data, seed_seconds) = http_setup(wallet_count).await;
    let client = reqwest::Client::new();
    let pick = zipf_picker((0..wallets.len() as u128).collect());
    let (measured, settled) = merged(
        &ledger,
        drive(4, requests, move |caller, n| {
            let client = client.clone();
            let items: Vec<serde_json::Value> = (0..ITEMS)
                .map(|i| {
                    serde_json::json!({
                        "wallet_id": wallets[pick(caller, n * ITEMS + i) as usize],
                        "amount": "1",
                        "idempotency_key": client_key(),
                    })
                })
                .collect();
            let url = format!("{base}/v1/debits/batch");
            async move {
                let response = client
                    .post(url)
                    .bearer_auth(HTTP_KEY)
                    .json(&serde_json::json!({ "debits": items }))
                    .send()
                    .await
                    .expect("request");
                assert_eq!(response.status(), 200, "a batch failed");
                let body: serde_json::Value = response.json().await.expect("body");
                let ok = body["data"]
                    .as_array()
                    .expect("results")
                    .iter()
                    .all(|r| r["status"] == 200);
                assert!(ok, "every item of a batch succeeds");
            }
        }),
    )
    .await;
    let debits = Measured {
        ops: measured.ops * ITEMS,
        ..measured
    };
    let notes = format!(
        "{wallet_count} wallets x 4 grants (seeded in {seed_seconds:.1} s), 1,000 items per request, 4 requests in flight; p50/p99 per request; until merged ({settled:.2} s after the last answer)"
    );
    Figure::from("http-batch", &debits, notes)
}

/// Usage messages from NATS JetStream (`serve --nats-url`): `total` keyed
/// debits of 1 published to a fresh stream (acknowledged by JetStream, 1,000
/// in flight), consumed by the ledger's usage consumer, timed from the first
/// publish until every message is acknowledged and merged. Runs when a NATS
/// server answers at `NATS_URL` (default `nats://127.0.0.1:4222`).
async fn nats_usage(wallet_count: usize, total: u64) -> Vec<Figure> {
    use async_nats::jetstream;
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let Ok(client) = async_nats::connect(&url).await else {
        eprintln!("nats-usage: skipped, no NATS server at {url}");
        return Vec::new();
    };
    let js = jetstream::new(client);
    let (ledger, _data) = open_ledger();
    let cs = seed::credit_system(&ledger).await;
    let seeding = Instant::now();
    let wallets = seed::wallets(&ledger, cs, wallet_count, true).await;
    let seed_seconds = seeding.elapsed().as_secs_f64();
    let suffix = format!("{:016x}", rand::random::<u64>());
    let config = credstack::usage::UsageConfig {
        url,
        stream: format!("BENCH_USAGE_{suffix}"),
        subject: format!("bench.usage.{suffix}"),
        consumer: "credstack".into(),
        dead_letter_subject: format!("bench.usage.{suffix}.dead"),
        dead_letter_stream: format!("BENCH_USAGE_DEAD_{suffix}"),
    };
    let consume = credstack::usage::start(config.clone(), ledger.clone())
        .await
        .expect("start the usage consumer");
    let consumer_task = tokio::spawn(consume);
    let pick = zipf_picker(wallets);
    let started = Instant::now();
    let mut acks = Vec::with_capacity(1000);
    for n in 0..total {
        let wallet = ids::format(Kind::Wallet, pick(0, n));
        let message = serde_json::json!({"wallet_id": wallet, "amount": "1", "idempotency_key": client_key()});
        let ack = js
            .publish(config.subject.clone(), message.to_string().into())
            .await
            .expect("publish");
        acks.push(ack);
        if acks.len() == 1000 {
            for ack in acks.drain(..) {
                ack.await.expect("stored by JetStream");
            }
        }
    }
    for ack in acks {
        ack.await.expect("stored by JetStream");
    }
    let published = started.elapsed().as_secs_f64();
    let stream = js.get_stream(&config.stream).await.expect("the stream");
    let mut consumer: jetstream::consumer::PullConsumer = stream
        .get_consumer("credstack")
        .await
        .expect("the consumer");
    loop {
        let info = consumer.info().await.expect("consumer info");
        if info.num_pending == 0
            && info.num_ack_pending == 0
            && info.ack_floor.stream_sequence >= total
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    ledger.settle().await;
    let seconds = started.elapsed().as_secs_f64();
    consumer_task.abort();
    let dead = stream_len(&js, &config.dead_letter_stream).await;
    assert_eq!(dead, 0, "no usage refused");
    js.delete_stream(&config.stream).await.ok();
    js.delete_stream(&config.dead_letter_stream).await.ok();
    vec![Figure {
        workload: "nats-usage",
        ops: total,
        seconds,
        p50_ms: None,
        p99_ms: None,
        baseline_ops_per_sec: None,
        notes: format!(
            "{wallet_count} wallets x 4 grants (seeded in {seed_seconds:.1} s), Zipf s=1, keyed debits of 1 published in {published:.1} s, until acknowledged and merged"
        ),
        more: Vec::new(),
    }]
}

/// Webhook deliveries while events happen: the delivery loop `serve` runs
/// (default settings) and an endpoint subscribed to every event, with a
/// receiver on loopback answering 200; seeding `wallet_count` wallets of
/// four grants makes four `grant.created` events each. Ops are deliveries,
/// counted from the first grant to the last delivery; latency is from an
/// event's commit (its `created_at`) to its arrival.
async fn webhooks(wallet_count: usize) -> Figure {
    let (ledger, _data) = open_ledger();
    let received = Arc::new(std::sync::Mutex::new(drive::histogram()));
    let count = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    let (latencies, counted) = (received.clone(), count.clone());
    let receiver = axum::Router::new().route(
        "/hooks",
        axum::routing::post(move |body: String| {
            let (latencies, counted) = (latencies.clone(), counted.clone());
            async move {
                let event: serde_json::Value = serde_json::from_str(&body).expect("an event");
                let created: chrono::DateTime<chrono::Utc> = event["created_at"]
                    .as_str()
                    .expect("created_at")
                    .parse()
                    .expect("an instant");
                let lag = (chrono::Utc::now() - created)
                    .num_microseconds()
                    .unwrap_or(0);
                latencies
                    .lock()
                    .unwrap()
                    .record(lag.max(1) as u64)
                    .expect("within a minute");
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, receiver).await.expect("receiver") });
    let request = Request::CreateWebhookEndpoint {
        url,
        description: None,
        event_types: vec!["*".into()],
        secret: "whsec_bench".into(),
    };
    execute(&ledger, request).await;
    credstack::webhooks::spawn(ledger.clone(), credstack::webhooks::Settings::default());
    let cs = seed::credit_system(&ledger).await;
    let started = Instant::now();
    seed::wallets(&ledger, cs, wallet_count, true).await;
    let seeded = started.elapsed().as_secs_f64();
    let total = wallet_count as u64 * 4;
    while count.load(std::sync::atomic::Ordering::SeqCst) < total {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let measured = drive::measured(total, seconds, &received.lock().unwrap());
    let notes = format!(
        "{wallet_count} wallets x 4 grants made in {seeded:.1} s (the events), every one delivered {:.2} s after the last grant; loopback receiver answering 200; latency from commit to arrival",
        seconds - seeded
    );
    Figure::from("webhooks", &measured, notes)
}

async fn stream_len(js: &async_nats::jetstream::Context, name: &str) -> u64 {
    match js.get_stream(name).await {
        Ok(mut stream) => stream.info().await.map_or(0, |info| info.state.messages),
        Err(_) => 0,
    }
}

/// A fresh database on the `DATABASE_URL` server, dropped with `Drop`.
struct PgDatabase {
    server: postgres::Config,
    config: postgres::Config,
    name: String,
}

impl PgDatabase {
    fn create(url: &str) -> PgDatabase {
        let server: postgres::Config = url.parse().expect("DATABASE_URL");
        let name = format!("credstack_bench_{:032x}", ulid_now());
        let mut admin = server
            .connect(postgres::NoTls)
            .expect("connect to DATABASE_URL");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create the benchmark database");
        let mut config = server.clone();
        config.dbname(&name);
        PgDatabase {
            server,
            config,
            name,
        }
    }

    fn url(&self) -> String {
        let host = match self.config.get_hosts().first() {
            Some(postgres::config::Host::Tcp(host)) => host.clone(),
            _ => "127.0.0.1".into(),
        };
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        let user = self.config.get_user().unwrap_or("postgres");
        format!("postgres://{user}@{host}:{port}/{}", self.name)
    }
}

impl Drop for PgDatabase {
    /// On a thread of its own: the synchronous client cannot run on the
    /// async runtime's threads.
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        let dropping = std::thread::spawn(move || {
            let dropped = server.connect(postgres::NoTls).and_then(|mut admin| {
                admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            });
            if let Err(error) = dropped {
                eprintln!("cannot drop the benchmark database {name}: {error:?}");
            }
        });
        let _ = dropping.join();
    }
}

fn ulid_now() -> u128 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    nanos ^ (u128::from(std::process::id()) << 96)
}

/// `engine-debits` on PostgreSQL, and beside it, on the same server and the
/// same data shape, the naive design (see `naive.rs`): uniform wallet picks,
/// then every debit on one wallet. Needs `DATABASE_URL`.
async fn pg_debits(wallet_count: usize, total: u64) -> Vec<Figure> {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!("pg-debits: skipped, DATABASE_URL is not set");
        return Vec::new();
    };
    let url = url.clone();
    let db = tokio::task::spawn_blocking(move || PgDatabase::create(&url))
        .await
        .unwrap();
    let ledger = open_on(Backend::Postgres {
        url: db.url(),
        readers: 8,
    });
    let cs = seed::credit_system(&ledger).await;
    let seeding = Instant::now();
    let wallets = seed::wallets(&ledger, cs, wallet_count, true).await;
    let seed_seconds = seeding.elapsed().as_secs_f64();
    let config = db.config.clone();
    let count = wallet_count as u64;
    tokio::task::spawn_blocking(move || naive::seed(&config, count))
        .await
        .unwrap();

    let uniform = {
        let wallets = wallets.clone();
        move |n: u64| wallets[(mix(n) % wallets.len() as u64) as usize]
    };
    let driver = ledger.clone();
    let ours = drive(256, total, move |_, n| {
        let ledger = driver.clone();
        let wallet = uniform(n);
        async move { debit(&ledger, wallet).await }
    })
    .await;
    let hot = wallets[0];
    let driver = ledger.clone();
    let ours_hot = drive(256, total / 4, move |_, _| {
        let ledger = driver.clone();
        async move { debit(&ledger, hot).await }
    })
    .await;

    let config = db.config.clone();
    let naive_uniform = tokio::task::spawn_blocking(move || {
        naive::run(&config, 64, total, Arc::new(move |n| 1 + mix(n) % count))
    })
    .await
    .unwrap();
    let config = db.config.clone();
    let naive_hot =
        tokio::task::spawn_blocking(move || naive::run(&config, 64, total / 4, Arc::new(|_| 1)))
            .await
            .unwrap();
    drop(ledger);

    let shape = format!("{wallet_count} wallets x 4 grants");
    let mut pg = Figure::from(
        "pg-debits",
        &ours,
        format!("{shape} (seeded in {seed_seconds:.1} s), 256 callers, uniform picks"),
    );
    pg.baseline_ops_per_sec = Some(naive_uniform.ops_per_sec());
    let mut pg_hot = Figure::from(
        "pg-hot-wallet",
        &ours_hot,
        "every debit on one wallet, 256 callers".into(),
    );
    pg_hot.baseline_ops_per_sec = Some(naive_hot.ops_per_sec());
    let naive_row = Figure::from(
        "pg-naive",
        &naive_uniform,
        format!("{shape}, one transaction per debit, 64 connections, uniform picks"),
    );
    let naive_hot_row = Figure::from(
        "pg-naive-hot-wallet",
        &naive_hot,
        "one transaction per debit, 64 connections, one wallet".into(),
    );
    vec![pg, naive_row, pg_hot, naive_hot_row]
}

/// A cheap reversible mix of `n` (splitmix64), for uniform picks that
/// repeat from run to run.
fn mix(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Connections reading balances in `read-under-load`.
const READ_CONNECTIONS: usize = 4;
/// Connections posting debits in `read-under-load`, as fast as they are
/// answered: enough to keep the writer busy.
const DEBIT_CONNECTIONS: usize = 48;
/// How long the debits run before the reads beside them are timed.
const DEBIT_RAMP: std::time::Duration = std::time::Duration::from_secs(1);

/// Balance reads (`GET /v1/wallets/{id}/balance`, uniform picks, 4
/// keep-alive connections) on a server that is idle, then on the same
/// server while 48 more connections post keyed debits of 1 (uniform picks)
/// as fast as they are answered, each read window `window` long. On the
/// embedded store (`read-under-load`), then on PostgreSQL
/// (`pg-read-under-load`) when `DATABASE_URL` is set. A figure is the reads
/// under load; its notes and `--json` fields carry the idle reads, the
/// ratios, and the debits that ran in the window. `--ops` does not apply:
/// the windows are timed.
async fn read_under_load(wallet_count: usize, window: std::time::Duration) -> Vec<Figure> {
    let mut figures = Vec::new();
    let (ledger, data) = open_ledger();
    figures.push(reads_beside_debits("read-under-load", ledger, wallet_count, window).await);
    drop(data);
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!("read-under-load: pg-read-under-load skipped, DATABASE_URL is not set");
        return figures;
    };
    let db = tokio::task::spawn_blocking(move || PgDatabase::create(&url))
        .await
        .unwrap();
    // As many read connections as `serve` opens by default.
    let ledger = open_on(Backend::Postgres {
        url: db.url(),
        readers: 16,
    });
    figures.push(reads_beside_debits("pg-read-under-load", ledger, wallet_count, window).await);
    drop(db);
    figures
}

/// `read-under-load` on `ledger`'s store; see [`read_under_load`]. The
/// server is stopped before this returns.
async fn reads_beside_debits(
    workload: &'static str,
    ledger: Ledger,
    wallet_count: usize,
    window: std::time::Duration,
) -> Figure {
    ledger.ensure_admin_key(HTTP_KEY).await.expect("admin key");
    let cs = seed::credit_system(&ledger).await;
    let seeding = Instant::now();
    let wallets = seed::wallets(&ledger, cs, wallet_count, true).await;
    // Idle means idle: nothing of the seeding left to merge.
    ledger.settle().await;
    let seed_seconds = seeding.elapsed().as_secs_f64();
    let wallets: Arc<Vec<String>> = Arc::new(
        wallets
            .iter()
            .map(|&w| ids::format(Kind::Wallet, w))
            .collect(),
    );
    let server = Served::start(ledger.clone());
    // The readers on a runtime and a thread of their own, as a client in
    // another process would be: they do not wait behind the debit callers'
    // tasks on this runtime.
    let readers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("readers' runtime");

    let mut reads = start_reads(readers.handle(), &server.base, &wallets);
    reads.record();
    tokio::time::sleep(window).await;
    reads.pause();
    let idle = reads.stop().await;

    let mut debits = start_debits(&server.base, &wallets);
    tokio::time::sleep(DEBIT_RAMP).await;
    let mut reads = start_reads(readers.handle(), &server.base, &wallets);
    reads.record();
    debits.record();
    tokio::time::sleep(window).await;
    reads.pause();
    debits.pause();
    let loaded = reads.stop().await;
    let debits = debits.stop().await;
    let stopping = Instant::now();
    server.stop().await;
    ledger.settle().await;
    let settled = stopping.elapsed().as_secs_f64();
    readers.shutdown_background();
    drop(ledger);

    let (idle_m, load_m, debit_m) = (&idle.measured, &loaded.measured, &debits.measured);
    let p50_ratio = load_m.p50_ms / idle_m.p50_ms;
    let p99_ratio = load_m.p99_ms / idle_m.p99_ms;
    let seconds = window.as_secs_f64();
    let wrong = if idle.wrong + loaded.wrong + debits.wrong == 0 {
        "none".to_string()
    } else {
        format!(
            "idle reads {}, reads under load {}, debits {}",
            idle.wrong_text(),
            loaded.wrong_text(),
            debits.wrong_text()
        )
    };
    let notes = format!(
        "{wallet_count} wallets x 4 grants (seeded in {seed_seconds:.1} s); balance reads on {READ_CONNECTIONS} connections, uniform picks, {seconds:.0} s idle, then {seconds:.0} s beside keyed debits of 1 on {DEBIT_CONNECTIONS} connections (started {:.0} s before); idle: p50 {:.2} ms, p99 {:.2} ms, {:.0} reads/s; under load p50 {p50_ratio:.1}x, p99 {p99_ratio:.1}x idle; debits in the read window: {:.0}/s, p50 {:.2} ms, p99 {:.2} ms; wrong replies: {wrong}; server stopped and store merged {settled:.2} s after the debits stopped",
        DEBIT_RAMP.as_secs_f64(),
        idle_m.p50_ms,
        idle_m.p99_ms,
        idle_m.ops_per_sec(),
        debit_m.ops_per_sec(),
        debit_m.p50_ms,
        debit_m.p99_ms,
    );
    let mut figure = Figure::from(workload, load_m, notes);
    figure.more = vec![
        ("idle_reads_per_sec", idle_m.ops_per_sec().into()),
        ("idle_p50_ms", idle_m.p50_ms.into()),
        ("idle_p99_ms", idle_m.p99_ms.into()),
        ("idle_reads", idle_m.ops.into()),
        ("p50_ratio", p50_ratio.into()),
        ("p99_ratio", p99_ratio.into()),
        ("debits_per_sec", debit_m.ops_per_sec().into()),
        ("debit_p50_ms", debit_m.p50_ms.into()),
        ("debit_p99_ms", debit_m.p99_ms.into()),
        ("wrong_reads", (idle.wrong + loaded.wrong).into()),
        ("wrong_debits", debits.wrong.into()),
    ];
    figure
}

/// One keep-alive connection per caller: a client of its own, at most one
/// request in flight.
fn connections(count: usize) -> Arc<Vec<reqwest::Client>> {
    Arc::new(
        (0..count)
            .map(|_| {
                reqwest::Client::builder()
                    .pool_max_idle_per_host(1)
                    .build()
                    .expect("client")
            })
            .collect(),
    )
}

/// Sends `request` and reads its whole reply: `Ok` if its status is
/// `expected`, otherwise what came back.
async fn expect_status(request: reqwest::RequestBuilder, expected: u16) -> Result<(), String> {
    let response = request
        .send()
        .await
        .map_err(|error| format!("no reply: {error}"))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|error| format!("{status}, body cut: {error}"))?;
    if status != expected {
        let text = String::from_utf8_lossy(&body);
        return Err(format!(
            "{status}: {}",
            text.chars().take(200).collect::<String>()
        ));
    }
    Ok(())
}

/// `READ_CONNECTIONS` callers reading balances of wallets picked uniformly.
fn start_reads(
    runtime: &tokio::runtime::Handle,
    base: &str,
    wallets: &Arc<Vec<String>>,
) -> drive::Looping {
    let (clients, base, wallets) = (
        connections(READ_CONNECTIONS),
        base.to_string(),
        wallets.clone(),
    );
    drive::Looping::start_on(runtime, READ_CONNECTIONS, move |caller, n| {
        let wallet = &wallets[(mix(!n) % wallets.len() as u64) as usize];
        let request = clients[caller]
            .get(format!("{base}/v1/wallets/{wallet}/balance"))
            .bearer_auth(HTTP_KEY);
        expect_status(request, 200)
    })
}

/// `DEBIT_CONNECTIONS` callers posting keyed debits of 1 from wallets
/// picked uniformly (each wallet holds far more than a run takes).
fn start_debits(base: &str, wallets: &Arc<Vec<String>>) -> drive::Looping {
    let (clients, base, wallets) = (
        connections(DEBIT_CONNECTIONS),
        base.to_string(),
        wallets.clone(),
    );
    drive::Looping::start(DEBIT_CONNECTIONS, move |caller, n| {
        let wallet = &wallets[(mix(n) % wallets.len() as u64) as usize];
        let request = clients[caller]
            .post(format!("{base}/v1/wallets/{wallet}/debits"))
            .bearer_auth(HTTP_KEY)
            .header("Idempotency-Key", client_key())
            .json(&serde_json::json!({"amount": "1"}));
        expect_status(request, 200)
    })
}

/// Resident memory with `wallet_count` wallets of four grants loaded in
/// the writer (every wallet it creates stays in its memory).
async fn memory(wallet_count: usize) -> Figure {
    let before = rss_mib();
    let (ledger, _data) = open_ledger();
    let cs = seed::credit_system(&ledger).await;
    let seeding = Instant::now();
    seed::wallets(&ledger, cs, wallet_count, true).await;
    let seconds = seeding.elapsed().as_secs_f64();
    let after = rss_mib();
    Figure {
        workload: "memory",
        ops: wallet_count as u64,
        seconds,
        p50_ms: None,
        p99_ms: None,
        baseline_ops_per_sec: None,
        notes: format!(
            "resident {after} MiB with {wallet_count} wallets x 4 grants loaded ({before} MiB before); ops/s is the seeding rate"
        ),
        more: Vec::new(),
    }
}

/// From opening a store holding `entries` ledger entries to serving HTTP.
async fn restart(entries: u64) -> Figure {
    const WALLETS: u64 = 1000;
    let data = tempfile::tempdir().expect("temp dir");
    let seeding = Instant::now();
    {
        let ledger = open_embedded(data.path());
        let cs = seed::credit_system(&ledger).await;
        let wallets = seed::wallets(&ledger, cs, WALLETS as usize, true).await;
        // Batch debits of 1,000 items, 4 in flight: one entry each.
        let batches = entries / 1000;
        let driver = ledger.clone();
        drive(4, batches, move |_, n| {
            let ledger = driver.clone();
            let items = (0..1000u64)
                .map(|i| {
                    let wallet = wallets[((n * 1000 + i) % WALLETS) as usize];
                    credstack::engine::BatchItem {
                        debit: NewDebit {
                            wallet_id: wallet,
                            amount: "1".into(),
                            description: None,
                            metadata: Default::default(),
                        },
                        idempotency: Idempotency::new(
                            format!("restart-{n}-{i}"),
                            &[&wallet.to_be_bytes()],
                        ),
                    }
                })
                .collect();
            async move {
                execute(&ledger, Request::DebitBatch(items)).await;
            }
        })
        .await;
        // As a server stopping does: the journal merged before it lets go.
        ledger.settle().await;
    }
    let seed_seconds = seeding.elapsed().as_secs_f64();
    // The first ledger's writer ends once every handle is dropped.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let started = Instant::now();
    let ledger = open_embedded(data.path());
    let base = serve(ledger);
    let client = reqwest::Client::new();
    loop {
        let healthy = client.get(format!("{base}/healthz")).send().await;
        if healthy.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    Figure {
        workload: "restart",
        ops: 1,
        seconds,
        p50_ms: None,
        p99_ms: None,
        baseline_ops_per_sec: None,
        notes: format!(
            "open and serve with {entries} entries on disk (written in {seed_seconds:.0} s); ops/s is restarts/s"
        ),
        more: Vec::new(),
    }
}

/// The process's resident memory now, from /proc (Linux); 0 elsewhere.
fn rss_mib() -> u64 {
    proc_status_mib("VmRSS:")
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
    seed::wallets(&ledger, cs.id, customers, false).await;
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
    // Answered means durable (in the journal, on the embedded store); the
    // indexed tables catch up behind it. The note says when they had.
    ledger.settle().await;
    let merged_seconds = started.elapsed().as_secs_f64();
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
        baseline_ops_per_sec: None,
        notes: format!(
            "{customers} customers with wallets, one call; all merged into the store after {merged_seconds:.1} s; seeding took {seed_seconds:.1} s; peak RSS {} MiB",
            peak_rss_mib()
        ),
        more: Vec::new(),
    }
}

/// The process's peak resident memory, from /proc (Linux); 0 elsewhere.
fn peak_rss_mib() -> u64 {
    proc_status_mib("VmHWM:")
}

fn proc_status_mib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse::<u64>().ok())
        .map_or(0, |kib| kib / 1024)
}
