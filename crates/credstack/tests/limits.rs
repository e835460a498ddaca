//! The limits of `serve` over real TCP (README, Configuration; SECURITY.md):
//! per-key rate limiting (429 with `Retry-After`), header size (431) and the
//! time to receive a request (408 for a body, a closed connection for
//! headers). Every refusal is checked to have changed nothing.

mod common;

use common::{START, Server, assert_error};
use credstack::http::limits::{HEADER_BYTES_MAX, HEADER_BYTES_PARSE_MAX, Limits};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn limits(rate: u32, burst: u32, time_max: Duration) -> Limits {
    Limits {
        rate_limit_per_key: rate,
        rate_limit_burst: burst,
        request_time_max: time_max,
    }
}

/// A wallet with 1000 units, made with 4 admin requests.
async fn funded_wallet(server: &Server) -> String {
    let wallet = server.wallet(0).await;
    server
        .grant_ok(&wallet, json!({"amount": "1000", "purpose": "paid"}))
        .await;
    wallet
}

async fn balance_as(server: &Server, key: &str, wallet: &str) -> String {
    let response = server
        .send_as(
            Some(key),
            Method::GET,
            &format!("/v1/wallets/{wallet}/balance"),
            None,
        )
        .await
        .ok();
    response.str("balance")
}

#[tokio::test]
async fn a_key_over_its_rate_gets_429_with_retry_after_and_nothing_changes() {
    // One request a second, ten at once.
    let server = Server::start_with(START, limits(1, 10, Duration::from_secs(30))).await;
    let wallet = funded_wallet(&server).await;
    let usage = server.api_key("usage").await;
    let read = server.api_key("read").await;
    let debits = format!("/v1/wallets/{wallet}/debits");

    let mut admitted = 0;
    let refused = loop {
        let response = server
            .send_as(
                Some(&usage),
                Method::POST,
                &debits,
                Some(json!({"amount": "1"})),
            )
            .await;
        if response.status.as_u16() != 200 {
            break response;
        }
        admitted += 1;
        assert!(admitted <= 30, "the key was never limited");
    };
    // The burst, plus at most what refilled meanwhile on a slow machine.
    assert!((10..=12).contains(&admitted), "{admitted} admitted");
    assert_error(&refused, 429, "rate_limited", None);
    assert_eq!(refused.body["error"]["type"], "rate_limit_error");
    let retry_after: u64 = refused.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After in whole seconds");
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");

    // Another key has its own budget; the refused debit was not applied.
    assert_eq!(
        balance_as(&server, &read, &wallet).await,
        (1000 - admitted).to_string()
    );

    // A refused request with an Idempotency-Key kept nothing under it: the
    // same request once the wait is over is applied, not replayed.
    let key = [("Idempotency-Key", "after-a-429")];
    let mut request = server
        .client
        .post(format!("{}{debits}", server.base))
        .bearer_auth(&usage)
        .json(&json!({"amount": "1"}));
    for (name, value) in key {
        request = request.header(name, value);
    }
    let limited = request.try_clone().unwrap().send().await.unwrap();
    assert_eq!(limited.status().as_u16(), 429);
    let wait: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let applied = request.send().await.unwrap();
    assert_eq!(applied.status().as_u16(), 200);
    assert!(applied.headers().get("idempotent-replayed").is_none());
    assert_eq!(
        balance_as(&server, &read, &wallet).await,
        (1000 - admitted - 1).to_string()
    );
}

#[tokio::test]
async fn a_rate_of_zero_is_no_limit() {
    let server = Server::start_with(START, limits(0, 0, Duration::from_secs(30))).await;
    for _ in 0..200 {
        server.get("/v1/customers").await.ok();
    }
}

/// Sends `request` on a new connection and reads until the server closes
/// it or a whole response has arrived; `None` if the connection closed with
/// no response. Panics if nothing happens for 10 s: a hang.
async fn exchange(server: &Server, request: Vec<u8>) -> Option<(u16, Value)> {
    let mut stream = TcpStream::connect(server.base.trim_start_matches("http://"))
        .await
        .unwrap();
    // The server may answer and close before reading everything we send.
    let _ = stream.write_all(&request).await;
    read_response(&mut stream).await
}

async fn read_response(stream: &mut TcpStream) -> Option<(u16, Value)> {
    let mut received = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer))
            .await
            .expect("the server answered or closed within 10 s");
        match read {
            Ok(0) | Err(_) => break,
            Ok(n) => received.extend_from_slice(&buffer[..n]),
        }
        if let Some(response) = parse_response(&received) {
            return Some(response);
        }
    }
    parse_response(&received).or_else(|| {
        assert!(received.is_empty(), "a partial response: {received:?}");
        None
    })
}

/// Status and JSON body (null when empty) of a complete response.
fn parse_response(bytes: &[u8]) -> Option<(u16, Value)> {
    let text = String::from_utf8_lossy(bytes);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    if body.len() < length {
        return None;
    }
    let body = if length == 0 {
        Value::Null
    } else {
        serde_json::from_str(&body[..length]).expect("a JSON body")
    };
    Some((status, body))
}

fn debit_request(server: &Server, wallet: &str, extra_headers: &str) -> Vec<u8> {
    let body = r#"{"amount":"1"}"#;
    format!(
        "POST /v1/wallets/{wallet}/debits HTTP/1.1\r\nHost: localhost\r\n\
         Authorization: Bearer {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n{extra_headers}\r\n{body}",
        server.key,
        body.len()
    )
    .into_bytes()
}

#[tokio::test]
async fn oversized_headers_get_431_and_change_nothing() {
    let server = Server::start().await;
    let wallet = funded_wallet(&server).await;

    // Just under the limit: served.
    let padding = format!("X-Padding: {}\r\n", "a".repeat(HEADER_BYTES_MAX - 1024));
    let (status, body) = exchange(&server, debit_request(&server, &wallet, &padding))
        .await
        .expect("a response");
    assert_eq!(status, 200, "{body}");

    // Over the limit: a SPEC-shaped 431.
    let padding = format!("X-Padding: {}\r\n", "a".repeat(HEADER_BYTES_MAX + 1));
    let (status, body) = exchange(&server, debit_request(&server, &wallet, &padding))
        .await
        .expect("a response");
    assert_eq!(status, 431, "{body}");
    assert_eq!(body["error"]["code"], "headers_too_large");
    assert_eq!(body["error"]["type"], "invalid_request_error");

    // Over what the parser reads at all, in one header or in many: a bare
    // 431 from the connection, before any routing.
    let padding = format!("X-Padding: {}\r\n", "a".repeat(HEADER_BYTES_PARSE_MAX));
    let (status, _) = exchange(&server, debit_request(&server, &wallet, &padding))
        .await
        .expect("a response");
    assert_eq!(status, 431);
    let many: String = (0..150).map(|i| format!("X-Header-{i}: {i}\r\n")).collect();
    let (status, _) = exchange(&server, debit_request(&server, &wallet, &many))
        .await
        .expect("a response");
    assert_eq!(status, 431);

    // Only the first request was applied.
    assert_eq!(server.balance(&wallet).await["balance"], "999");
}

#[tokio::test]
async fn a_body_sent_too_slowly_gets_408_and_changes_nothing() {
    let server = Server::start_with(START, limits(100, 100, Duration::from_secs(1))).await;
    let wallet = funded_wallet(&server).await;
    // A valid debit whose 40 bytes trickle in, one every 200 ms: 8 s in all.
    let body = format!("{:<40}", r#"{"amount":"1"}"#);
    let head = format!(
        "POST /v1/wallets/{wallet}/debits HTTP/1.1\r\nHost: localhost\r\n\
         Authorization: Bearer {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        server.key,
        body.len()
    );
    let stream = TcpStream::connect(server.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        writer.write_all(head.as_bytes()).await?;
        for byte in body.bytes() {
            writer.write_all(&[byte]).await?;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        std::io::Result::Ok(())
    });
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let response = loop {
        let n = tokio::time::timeout(Duration::from_secs(10), reader.read(&mut buffer))
            .await
            .expect("an answer within 10 s")
            .unwrap_or(0);
        assert!(n > 0, "closed without an answer");
        received.extend_from_slice(&buffer[..n]);
        if let Some(response) = parse_response(&received) {
            break response;
        }
    };
    let elapsed = started.elapsed();
    trickle.abort();
    let (status, body) = response;
    assert_eq!(status, 408, "{body}");
    assert_eq!(body["error"]["code"], "request_timeout");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(5),
        "answered after {elapsed:?}, for a limit of 1 s"
    );
    assert_eq!(server.balance(&wallet).await["balance"], "1000");
    assert_eq!(server.entries(&wallet).await.len(), 1, "only the grant");
}

#[tokio::test]
async fn headers_sent_too_slowly_close_the_connection() {
    let server = Server::start_with(START, limits(100, 100, Duration::from_secs(1))).await;
    let started = Instant::now();
    let answer = exchange(
        &server,
        b"GET /v1/customers HTTP/1.1\r\nHost: localhost\r\n".to_vec(),
    )
    .await;
    let elapsed = started.elapsed();
    assert_eq!(answer, None, "closed without an answer");
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(5),
        "closed after {elapsed:?}, for a limit of 1 s"
    );
    // The server still serves whoever sends a whole request.
    server.get("/v1/customers").await.ok();
}
