//! Running the HTTP server: `run` takes its listener from the caller (tests
//! bind port 0) and a shutdown future, and returns once in-flight requests
//! have finished. Every acknowledged write was committed before it was
//! acknowledged, so stopping loses nothing.

use crate::ledger::Ledger;
use std::future::Future;
use tokio::net::TcpListener;

pub async fn run(
    listener: TcpListener,
    ledger: Ledger,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    ledger.spawn_background();
    let app = crate::http::app(ledger).layer(tower_http::trace::TraceLayer::new_for_http());
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("install SIGTERM handler");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("shutting down: finishing requests in flight");
}
