//! The command line: `credstack serve` and its configuration (SPEC §4).

use crate::clock::Clock;
use crate::http::limits::{Limits, RATE_LIMIT_PER_KEY_DEFAULT};
use crate::ledger::{Backend, Config, Ledger, new_secret};
use clap::{Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "credstack",
    version,
    about = "A credit ledger for usage-based products"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Serve the HTTP API and the console, on the embedded store or on PostgreSQL.
    Serve(Box<ServeArgs>),
    /// Check a store against its ledger: every balance, remainder, sequence
    /// and entry hash. Runs beside a serving process (one read snapshot).
    /// Exits 1 when anything is wrong, with a report of what.
    Verify(StoreArgs),
    /// Write a consistent copy of the embedded store to a new file while it
    /// serves (PostgreSQL: use pg_dump or pg_basebackup).
    Backup(BackupArgs),
    /// Put a backup in place as the embedded store of an empty data directory.
    Restore(RestoreArgs),
}

/// Which store a command works on.
#[derive(Parser)]
pub struct StoreArgs {
    /// Directory of the embedded store.
    #[arg(long, env = "CREDSTACK_DATA", default_value = "./credstack-data")]
    pub data: PathBuf,
    /// A PostgreSQL database instead of the embedded store.
    #[arg(long, env = "DATABASE_URL", conflicts_with = "data")]
    pub database_url: Option<String>,
}

impl StoreArgs {
    fn backend(&self) -> Backend {
        match &self.database_url {
            Some(url) => Backend::Postgres {
                url: url.clone(),
                readers: 1,
            },
            None => Backend::Embedded {
                data_dir: self.data.clone(),
            },
        }
    }
}

#[derive(Parser)]
pub struct BackupArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// The backup file to write; it must not exist yet.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Parser)]
pub struct RestoreArgs {
    /// The backup file, written by `credstack backup`.
    #[arg(long)]
    pub from: PathBuf,
    /// The data directory to restore into; it must hold no store yet.
    #[arg(long, env = "CREDSTACK_DATA", default_value = "./credstack-data")]
    pub data: PathBuf,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ClockKind {
    System,
    Simulated,
}

#[derive(Parser)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "CREDSTACK_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Directory of the embedded store.
    #[arg(long, env = "CREDSTACK_DATA", default_value = "./credstack-data")]
    pub data: PathBuf,
    /// Run on this PostgreSQL database instead of the embedded store
    /// (`postgres://user@host:5432/db`). Several processes may share it.
    #[arg(long, env = "DATABASE_URL", conflicts_with = "data")]
    pub database_url: Option<String>,
    /// Read connections to PostgreSQL per process (the writer holds one more).
    #[arg(long, env = "CREDSTACK_DB_READERS", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub db_readers: u32,
    /// `system`, or `simulated`: a clock only `POST /v1/test_clock/advance` moves.
    #[arg(long, value_enum, default_value = "system")]
    pub clock: ClockKind,
    /// Start of the simulated clock (RFC 3339). Default: now.
    #[arg(long)]
    pub start: Option<chrono::DateTime<chrono::Utc>>,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Requests per second each API key may make, on average; over it the
    /// API answers 429 with `Retry-After`. 0 turns rate limiting off.
    #[arg(long, env = "CREDSTACK_RATE_LIMIT_PER_KEY", default_value_t = RATE_LIMIT_PER_KEY_DEFAULT)]
    pub rate_limit_per_key: u32,
    /// Requests a key may make at once before its rate applies. Default:
    /// one second's worth (the rate itself).
    #[arg(long, env = "CREDSTACK_RATE_LIMIT_BURST",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_burst: Option<u32>,
    /// Seconds a client has to send a request's headers (else the
    /// connection is closed), and then its body (else 408).
    #[arg(long, env = "CREDSTACK_REQUEST_TIMEOUT_SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub request_timeout_seconds: u64,
    /// Consume usage from this NATS server's JetStream
    /// (`nats://127.0.0.1:4222`): each message on `--nats-subject` is
    /// debited once (README, "Usage from NATS").
    #[arg(long, env = "CREDSTACK_NATS_URL")]
    pub nats_url: Option<String>,
    /// The JetStream stream of usage messages, created when missing.
    #[arg(long, env = "CREDSTACK_NATS_STREAM", default_value = "CREDSTACK_USAGE")]
    pub nats_stream: String,
    /// The subject usage is published on.
    #[arg(
        long,
        env = "CREDSTACK_NATS_SUBJECT",
        default_value = "credstack.usage"
    )]
    pub nats_subject: String,
    /// The durable consumer's name (its progress is kept by JetStream).
    #[arg(long, env = "CREDSTACK_NATS_CONSUMER", default_value = "credstack")]
    pub nats_consumer: String,
    /// Where refused usage goes, with the reason; kept in a stream of its own.
    #[arg(
        long,
        env = "CREDSTACK_NATS_DEAD_LETTER_SUBJECT",
        default_value = "credstack.usage.dead"
    )]
    pub nats_dead_letter_subject: String,
    /// The stream that keeps the dead letters, created when missing.
    #[arg(
        long,
        env = "CREDSTACK_NATS_DEAD_LETTER_STREAM",
        default_value = "CREDSTACK_USAGE_DEAD"
    )]
    pub nats_dead_letter_stream: String,
    /// Milliseconds a webhook attempt may take, answer included.
    #[arg(long, env = "CREDSTACK_WEBHOOK_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=300_000))]
    pub webhook_timeout_ms: u64,
    /// Milliseconds before a failed webhook delivery's first retry; each
    /// further wait doubles, up to an hour.
    #[arg(long, env = "CREDSTACK_WEBHOOK_RETRY_BASE_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub webhook_retry_base_ms: u64,
    /// Seconds a failing webhook delivery is retried before it is given up.
    #[arg(long, env = "CREDSTACK_WEBHOOK_RETRY_WINDOW_SECONDS", default_value_t = 86_400,
          value_parser = clap::value_parser!(u64).range(0..=30 * 86_400))]
    pub webhook_retry_window_seconds: u64,
}

impl ServeArgs {
    fn webhooks(&self) -> crate::webhooks::Settings {
        use std::time::Duration;
        crate::webhooks::Settings {
            timeout: Duration::from_millis(self.webhook_timeout_ms),
            retry_base: Duration::from_millis(self.webhook_retry_base_ms),
            retry_window: Duration::from_secs(self.webhook_retry_window_seconds),
        }
    }

    fn usage(&self) -> Option<crate::usage::UsageConfig> {
        self.nats_url.as_ref().map(|url| crate::usage::UsageConfig {
            url: url.clone(),
            stream: self.nats_stream.clone(),
            subject: self.nats_subject.clone(),
            consumer: self.nats_consumer.clone(),
            dead_letter_subject: self.nats_dead_letter_subject.clone(),
            dead_letter_stream: self.nats_dead_letter_stream.clone(),
        })
    }

    fn limits(&self) -> Limits {
        Limits {
            rate_limit_per_key: self.rate_limit_per_key,
            rate_limit_burst: self.rate_limit_burst.unwrap_or(self.rate_limit_per_key),
            request_time_max: std::time::Duration::from_secs(self.request_timeout_seconds),
        }
    }
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Verify(args) => verify(args),
        Command::Backup(args) => backup(args),
        Command::Restore(args) => restore(args),
    }
}

fn verify(args: StoreArgs) -> std::process::ExitCode {
    let mut store = match crate::ledger::open_store(&args.backend()) {
        Ok(store) => store,
        Err(error) => {
            eprintln!("error: {error}");
            return std::process::ExitCode::from(2);
        }
    };
    let bar = progress_bar("verifying");
    let checked = crate::verify::verify_with_progress(&mut *store, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    match checked {
        Ok(report) => {
            print!("{report}");
            if report.is_clean() {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("error: the store could not be read: {error}");
            std::process::ExitCode::from(2)
        }
    }
}

/// A progress bar on stderr for a long command; drawn only on a terminal,
/// so scripts and logs see the report alone.
fn progress_bar(what: &'static str) -> indicatif::ProgressBar {
    let bar =
        indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} {wide_bar} {pos}/{len} wallets, {per_sec}, {eta} left",
        )
        .expect("a valid template"),
    );
    bar.set_message(what);
    bar
}

fn backup(args: BackupArgs) -> std::process::ExitCode {
    if args.store.database_url.is_some() {
        eprintln!(
            "error: credstack backup copies the embedded store; back up PostgreSQL with its own \
             tools (pg_dump --format=custom, or pg_basebackup), see RELIABILITY.md"
        );
        return std::process::ExitCode::from(2);
    }
    let bar = progress_bar("verifying the backup");
    let backed_up = crate::backup::backup(&args.store.data, &args.out, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    match backed_up {
        Ok(report) => {
            println!(
                "backed up {} to {}",
                report.source.display(),
                args.out.display()
            );
            print!("{}", report.verified);
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn restore(args: RestoreArgs) -> std::process::ExitCode {
    match crate::backup::restore(&args.from, &args.data) {
        Ok(path) => {
            println!("restored {} to {}", args.from.display(), path.display());
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    // tokio_postgres logs every statement's parameters at debug, and they
    // carry what must not reach a log (a webhook endpoint's signing
    // secret): capped at info whatever CREDSTACK_LOG asks.
    let filter = tracing_subscriber::EnvFilter::try_from_env("CREDSTACK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
        .add_directive(
            "tokio_postgres::query=info"
                .parse()
                .expect("a valid directive"),
        );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn serve(args: ServeArgs) -> std::process::ExitCode {
    init_logging(args.log_format);
    if args.start.is_some() && args.clock != ClockKind::Simulated {
        eprintln!("error: --start needs --clock simulated");
        return std::process::ExitCode::from(2);
    }
    let clock = match args.clock {
        ClockKind::System => Clock::system(),
        ClockKind::Simulated => Clock::simulated(args.start.unwrap_or_else(chrono::Utc::now)),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        let backend = match &args.database_url {
            Some(url) => Backend::Postgres {
                url: url.clone(),
                readers: args.db_readers,
            },
            None => Backend::Embedded {
                data_dir: args.data.clone(),
            },
        };
        let config = Config {
            backend,
            clock,
            render: crate::wire::render,
        };
        let ledger = match Ledger::open(config) {
            Ok(ledger) => ledger,
            Err(error) => {
                eprintln!("error: {error}");
                return std::process::ExitCode::FAILURE;
            }
        };
        if let Err(message) = bootstrap_admin_key(&ledger).await {
            eprintln!("error: {message}");
            return std::process::ExitCode::FAILURE;
        }
        let usage = match args.usage() {
            None => None,
            Some(config) => match crate::usage::start(config.clone(), ledger.clone()).await {
                Ok(consume) => Some((config, consume)),
                Err(error) => {
                    eprintln!("error: {error}");
                    return std::process::ExitCode::FAILURE;
                }
            },
        };
        crate::webhooks::spawn(ledger.clone(), args.webhooks());
        let listener = match tokio::net::TcpListener::bind(args.addr).await {
            Ok(listener) => listener,
            Err(error) => {
                eprintln!("error: cannot listen on {}: {error}", args.addr);
                return std::process::ExitCode::FAILURE;
            }
        };
        let addr = listener.local_addr().expect("bound address");
        println!("credstack listening on http://{addr}");
        println!("  API:     http://{addr}/v1   (OpenAPI: http://{addr}/v1/openapi.json)");
        println!("  console: http://{addr}/   (sign in with an admin API key)");
        match &args.database_url {
            Some(url) => println!("  store:   PostgreSQL at {}", redact_password(url)),
            None => println!(
                "  store:   {}",
                crate::ledger::database_path(&args.data).display()
            ),
        }
        if ledger.clock().is_simulated() {
            println!("  clock:   simulated, at {}", ledger.now().to_rfc3339());
        }
        if let Some((config, consume)) = usage {
            println!(
                "  usage:   NATS {} stream {} subject {} (refused: {})",
                config.url, config.stream, config.subject, config.dead_letter_subject
            );
            tokio::spawn(consume);
        }
        let limits = args.limits();
        match crate::server::run_with(listener, ledger, limits, crate::server::shutdown_signal())
            .await
        {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: {error}");
                std::process::ExitCode::FAILURE
            }
        }
    })
}

/// `CREDSTACK_ADMIN_KEY` becomes an admin key; without it, a first start
/// with no keys generates one and prints it once.
async fn bootstrap_admin_key(ledger: &Ledger) -> Result<(), String> {
    match std::env::var("CREDSTACK_ADMIN_KEY") {
        Ok(secret) if !secret.trim().is_empty() => ledger
            .ensure_admin_key(secret.trim())
            .await
            .map_err(|e| format!("cannot store the admin key: {e:?}")),
        _ if ledger.has_api_keys() => Ok(()),
        _ => {
            let secret = new_secret();
            ledger
                .ensure_admin_key(&secret)
                .await
                .map_err(|e| format!("cannot store the admin key: {e:?}"))?;
            println!("Generated an admin API key. It is shown once and stored only as a hash:");
            println!();
            println!("    {secret}");
            println!();
            Ok(())
        }
    }
}

/// The URL with any password replaced, for printing.
fn redact_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("****"));
            parsed.to_string()
        }
        Ok(_) => url.to_string(),
        Err(_) => "(a connection string)".to_string(),
    }
}
