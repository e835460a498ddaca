//! An HTTP receiver for webhook deliveries on a loopback port, that can
//! answer 500 or hold requests unanswered on demand.

use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    pub body: Value,
    pub signature: String,
    pub raw: String,
    /// What the receiver answered.
    pub status: u16,
}

#[derive(Default)]
pub struct Behaviour {
    pub received: Mutex<Vec<Received>>,
    /// Answer 500 to this many requests first.
    pub fail: AtomicUsize,
    /// Hold this many requests without answering (until the test ends).
    pub stall: AtomicUsize,
}

/// An HTTP receiver on a loopback port.
pub struct Receiver {
    pub url: String,
    pub state: Arc<Behaviour>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let state: Arc<Behaviour> = Arc::default();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = state.clone();
        let app = axum::Router::new().route(
            "/hooks",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
                let state = shared.clone();
                async move {
                    if take(&state.stall) {
                        // Never answers: the sender's attempt is in flight.
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                    }
                    let status = if take(&state.fail) { 500 } else { 200 };
                    state.received.lock().unwrap().push(Received {
                        body: serde_json::from_str(&body).unwrap(),
                        signature: headers
                            .get("credstack-signature")
                            .map(|v| v.to_str().unwrap().to_string())
                            .unwrap_or_default(),
                        raw: body,
                        status,
                    });
                    axum::http::StatusCode::from_u16(status).unwrap()
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver {
            url: format!("http://127.0.0.1:{port}/hooks"),
            state,
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// Bodies answered 200, in the order they arrived.
    pub fn delivered(&self) -> Vec<Value> {
        self.received()
            .into_iter()
            .filter(|r| r.status == 200)
            .map(|r| r.body)
            .collect()
    }
}

/// Takes one from a counter, if any is left.
fn take(counter: &AtomicUsize) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}
