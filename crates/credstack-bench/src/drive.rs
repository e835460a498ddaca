//! The load driver: concurrent callers, a fixed number of operations (or
//! closed loops until stopped, timed in a window), each timed into a
//! histogram.

use hdrhistogram::Histogram;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// What a run of operations measured.
pub struct Measured {
    pub ops: u64,
    pub seconds: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl Measured {
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.seconds
    }
}

/// A histogram of latencies in microseconds, up to a minute.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

pub fn measured(ops: u64, seconds: f64, latencies: &Histogram<u64>) -> Measured {
    Measured {
        ops,
        seconds,
        p50_ms: latencies.value_at_quantile(0.50) as f64 / 1000.0,
        p99_ms: latencies.value_at_quantile(0.99) as f64 / 1000.0,
    }
}

/// Runs `total` operations from `callers` concurrent tasks. `op(caller, n)`
/// performs operation number `n` (0-based, unique across callers) and
/// must succeed; each is timed.
pub async fn drive<F, Fut>(callers: usize, total: u64, op: F) -> Measured
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for caller in 0..callers {
        let op = op.clone();
        let next = next.clone();
        tasks.spawn(async move {
            let mut latencies = histogram();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    return latencies;
                }
                let began = Instant::now();
                op(caller, n).await;
                let micros = began.elapsed().as_micros() as u64;
                latencies.saturating_record(micros.max(1));
            }
        });
    }
    let mut latencies = histogram();
    while let Some(done) = tasks.join_next().await {
        latencies.add(done.expect("caller")).expect("same bounds");
    }
    measured(total, started.elapsed().as_secs_f64(), &latencies)
}

/// What operations that run until stopped measured in their window, and
/// the replies that were not the expected ones: those are counted apart
/// (over the whole run, window or not), neither timed nor in `ops`.
pub struct Checked {
    pub measured: Measured,
    pub wrong: u64,
    /// The first wrong reply, as the operation described it.
    pub first_wrong: Option<String>,
}

impl Checked {
    /// "none", or how many and the first one.
    pub fn wrong_text(&self) -> String {
        match &self.first_wrong {
            None => "none".into(),
            Some(first) => format!("{} (first: {first})", self.wrong),
        }
    }
}

/// Callers in closed loops until [`Looping::stop`]: `op(caller, n)`
/// performs operation number `n` (0-based, unique across callers) and
/// says whether its reply was the expected one. Operations are timed and
/// counted only between [`Looping::record`] and [`Looping::pause`] (by
/// when they end), so a window can be cut out of a longer run.
pub struct Looping {
    stop: Arc<AtomicBool>,
    recording: Arc<AtomicBool>,
    window: Option<(Instant, Option<Instant>)>,
    tasks: tokio::task::JoinSet<(Histogram<u64>, u64, Option<String>)>,
}

impl Looping {
    /// Starts `callers` callers on the current runtime, not recording yet.
    pub fn start<F, Fut>(callers: usize, op: F) -> Looping
    where
        F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        Looping::start_on(&tokio::runtime::Handle::current(), callers, op)
    }

    /// Starts `callers` callers on `runtime`, not recording yet.
    pub fn start_on<F, Fut>(runtime: &tokio::runtime::Handle, callers: usize, op: F) -> Looping
    where
        F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        let op = Arc::new(op);
        let next = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let recording = Arc::new(AtomicBool::new(false));
        let mut tasks = tokio::task::JoinSet::new();
        for caller in 0..callers {
            let (op, next) = (op.clone(), next.clone());
            let (stop, recording) = (stop.clone(), recording.clone());
            tasks.spawn_on(
                async move {
                    let mut latencies = histogram();
                    let (mut wrong, mut first_wrong) = (0, None);
                    while !stop.load(Ordering::Relaxed) {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        let began = Instant::now();
                        let reply = op(caller, n).await;
                        let micros = began.elapsed().as_micros() as u64;
                        match reply {
                            Ok(()) if recording.load(Ordering::Relaxed) => {
                                latencies.saturating_record(micros.max(1));
                            }
                            Ok(()) => {}
                            Err(what) => {
                                wrong += 1;
                                first_wrong.get_or_insert(what);
                            }
                        }
                    }
                    (latencies, wrong, first_wrong)
                },
                runtime,
            );
        }
        Looping {
            stop,
            recording,
            window: None,
            tasks,
        }
    }

    /// Opens the window: operations ending from now on are timed.
    pub fn record(&mut self) {
        self.recording.store(true, Ordering::Relaxed);
        self.window = Some((Instant::now(), None));
    }

    /// Closes the window: operations ending from now on are not timed.
    pub fn pause(&mut self) {
        self.recording.store(false, Ordering::Relaxed);
        if let Some((_, end)) = &mut self.window {
            end.get_or_insert_with(Instant::now);
        }
    }

    /// Stops the callers (each finishes the operation it is in) and
    /// returns what the window measured; the window closes now if it is
    /// still open.
    pub async fn stop(mut self) -> Checked {
        self.pause();
        self.stop.store(true, Ordering::Relaxed);
        let mut latencies = histogram();
        let (mut wrong, mut first_wrong) = (0, None);
        while let Some(done) = self.tasks.join_next().await {
            let (caller, caller_wrong, caller_first) = done.expect("caller");
            latencies.add(caller).expect("same bounds");
            wrong += caller_wrong;
            if first_wrong.is_none() {
                first_wrong = caller_first;
            }
        }
        let seconds = match self.window {
            Some((start, Some(end))) => (end - start).as_secs_f64(),
            _ => 0.0,
        };
        Checked {
            measured: measured(latencies.len(), seconds, &latencies),
            wrong,
            first_wrong,
        }
    }
}
