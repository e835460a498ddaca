//! Running the HTTP server: `run` takes its listener from the caller (tests
//! bind port 0) and a shutdown future, and returns once in-flight requests
//! have finished. Every acknowledged write was committed before it was
//! acknowledged, so stopping loses nothing.
//!
//! Connections are served by hyper directly (not `axum::serve`) so that the
//! limits that act before a request reaches the router can be set: the
//! bytes of a header section the parser reads, and the time a client has
//! to send one (a connection that trickles its headers, or sits idle
//! between requests, is closed after `request_time_max`).

use crate::http::limits::{HEADER_BYTES_PARSE_MAX, Limits};
use crate::ledger::Ledger;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;

/// Serves with the default [`Limits`].
pub async fn run(
    listener: TcpListener,
    ledger: Ledger,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    run_with(listener, ledger, Limits::default(), shutdown).await
}

pub async fn run_with(
    listener: TcpListener,
    ledger: Ledger,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    ledger.spawn_background();
    let app = crate::http::app(ledger.clone(), &limits);
    let connections = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    accept_failed(error).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.request_time_max)
            .max_header_size(HEADER_BYTES_PARSE_MAX)
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let connection = connections.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::trace!(%error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.shutdown().await;
    ledger.settle().await;
    Ok(())
}

/// A failed accept: a connection that died before it was accepted is
/// skipped; anything else (out of file descriptors) waits a moment rather
/// than spin.
async fn accept_failed(error: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "accepting a connection failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
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
