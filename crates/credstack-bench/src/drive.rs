//! The load driver: concurrent callers, a fixed number of operations, each
//! timed into a histogram.

use hdrhistogram::Histogram;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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
