//! Reads never wait for the journal's merger (issue 20). With the merger
//! held off (another connection holds `credstack.db`'s write lock, so
//! nothing merges however long the test runs), debits, a batch debit and a
//! clock advance that expires a grant and a hold all commit to the journal
//! only. Every read then answers at once from the tail laid over the store
//! (`store::tail`) and reflects everything acknowledged: balance, grants,
//! holds, a debit by id, the debit and entry lists paged across the store
//! and the tail in both orders, the balance at a past instant, events and
//! replays. Once the merger writes, the store answers the same.
//!
//! Embedded store only: PostgreSQL has no journal.

mod common;

use common::Server;
use serde_json::{Value, json};

/// Every item of a list, following `starting_after` pages of `limit`.
async fn all_pages(server: &Server, path: &str, limit: usize) -> Vec<Value> {
    let mut items: Vec<Value> = Vec::new();
    let separator = if path.contains('?') { '&' } else { '?' };
    loop {
        let cursor = items.last().map_or(String::new(), |last| {
            format!("&starting_after={}", last["id"].as_str().unwrap())
        });
        let page = server
            .get(&format!("{path}{separator}limit={limit}{cursor}"))
            .await
            .ok()
            .body;
        let data = page["data"].as_array().unwrap();
        items.extend(data.iter().cloned());
        if page["has_more"] != true {
            return items;
        }
        assert!(!data.is_empty(), "has_more with an empty page");
    }
}

fn ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|item| item["id"].as_str().unwrap().to_string())
        .collect()
}

/// What a wallet's reads say, to compare before and after the merge.
async fn reads(server: &Server, wallet: &str) -> Vec<Value> {
    let mut seen = vec![
        server.balance(wallet).await,
        json!(all_pages(server, &format!("/v1/wallets/{wallet}/debits"), 100).await),
        json!(
            all_pages(
                server,
                &format!("/v1/wallets/{wallet}/entries?order=asc"),
                100
            )
            .await
        ),
        json!(all_pages(server, &format!("/v1/wallets/{wallet}/grants"), 100).await),
        json!(all_pages(server, &format!("/v1/events?wallet_id={wallet}"), 100).await),
    ];
    // Instants are rendered as the read's own clock; the state is what counts.
    seen[0].as_object_mut().map(|balance| balance.remove("at"));
    seen
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_answer_from_the_unmerged_tail() {
    if common::ON_POSTGRES {
        return;
    }
    let server = Server::start().await;
    let wallet = server.wallet(0).await;
    let paid = server
        .grant_ok(&wallet, json!({"amount": "1000", "purpose": "paid"}))
        .await;
    let promo = server
        .grant_ok(
            &wallet,
            json!({"amount": "100", "purpose": "promotional",
                   "expires_at": "2025-01-31T11:00:00Z"}),
        )
        .await;
    let hold = server
        .hold(&wallet, json!({"amount": "30", "expires_in_seconds": 60}))
        .await
        .ok()
        .id();
    for _ in 0..3 {
        server.debit(&wallet, "10").await.ok();
    }
    let unmerged = || async {
        let metrics = server.get("/v1/metrics").await.ok().body;
        common::metric_sample(
            metrics.as_str().unwrap(),
            "credstack_journal_unmerged_batches",
        ) == 0.0
    };
    common::eventually("the journal merged", unmerged).await;
    let entries_merged = server.entries(&wallet).await.len();

    // From here on nothing merges.
    let blocker = rusqlite::Connection::open(server.data_dir().join("credstack.db")).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();

    let mut debits = Vec::new();
    for n in 0..5 {
        let key = format!("unmerged-{n}");
        let debit = server
            .post_key(
                &format!("/v1/wallets/{wallet}/debits"),
                json!({"amount": "7"}),
                &key,
            )
            .await
            .ok();
        debits.push((key, debit.id()));
    }
    let batch = server
        .post(
            "/v1/debits/batch",
            json!({"debits": (0..3).map(|n| json!({
                "wallet_id": wallet, "amount": "5", "idempotency_key": format!("batch-{n}")
            })).collect::<Vec<_>>()}),
        )
        .await
        .ok();
    for item in batch.body["data"].as_array().unwrap() {
        assert_eq!(item["status"], 200, "{item}");
    }
    let before_expiry = server.balance(&wallet).await;
    // The hold and the promotional grant expire in a journalled batch: the
    // sweep after the advance reads due wallets through the tail too (with
    // the store's stale `next_event_at` alone, it would never finish).
    server.advance("2025-01-31T12:00:00Z").await;
    assert!(
        !unmerged().await,
        "the merger is held off: the tail holds the batches"
    );

    // 1,100 granted, 80 spent, the hold gone and what the promotional
    // grant had left forfeited: the paid grant is all there is.
    let balance = server.balance(&wallet).await;
    assert_eq!(before_expiry["held"], "30", "{before_expiry}");
    assert_eq!(before_expiry["balance"], "1020", "{before_expiry}");
    assert_eq!(balance["held"], "0", "{balance}");
    assert_eq!(balance["by_purpose"]["promotional"], "0", "{balance}");
    assert_eq!(
        server.get(&format!("/v1/holds/{hold}")).await.ok().body["status"],
        "expired"
    );
    assert_eq!(server.get_grant(&promo).await["status"], "expired");
    assert_eq!(
        server.get_grant(&paid).await["remaining"],
        balance["balance"]
    );
    let expired = all_pages(
        &server,
        &format!("/v1/wallets/{wallet}/grants?status=expired"),
        1,
    )
    .await;
    assert_eq!(ids(&expired), vec![promo.clone()]);
    let active = all_pages(
        &server,
        &format!("/v1/wallets/{wallet}/grants?status=active"),
        1,
    )
    .await;
    assert_eq!(ids(&active), vec![paid.clone()]);

    // A debit just acknowledged, by id, and its key's replay.
    let (key, last) = debits.last().unwrap();
    assert_eq!(
        server.get(&format!("/v1/debits/{last}")).await.ok().body["amount"],
        "7"
    );
    let replay = server
        .post_key(
            &format!("/v1/wallets/{wallet}/debits"),
            json!({"amount": "7"}),
            key,
        )
        .await
        .ok();
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    assert_eq!(&replay.id(), last);

    // Lists page across the store and the tail, newest first.
    let all_debits = all_pages(&server, &format!("/v1/wallets/{wallet}/debits"), 2).await;
    assert_eq!(all_debits.len(), 3 + 5 + 3);
    let mut sorted = ids(&all_debits);
    sorted.sort();
    sorted.reverse();
    assert_eq!(sorted, ids(&all_debits), "newest first, each once");

    let ascending = all_pages(
        &server,
        &format!("/v1/wallets/{wallet}/entries?order=asc"),
        3,
    )
    .await;
    let mut descending = all_pages(
        &server,
        &format!("/v1/wallets/{wallet}/entries?order=desc"),
        3,
    )
    .await;
    descending.reverse();
    assert_eq!(ascending, descending);
    assert!(
        ascending.len() > entries_merged,
        "the tail's entries listed"
    );
    for (n, entry) in ascending.iter().enumerate() {
        assert_eq!(entry["sequence"], n as u64 + 1, "{entry}");
    }
    assert_eq!(
        ascending.last().unwrap()["balance_after"],
        balance["balance"]
    );
    server.check_invariants(&wallet).await;

    // The balance at an instant before the expiry, rebuilt from entries in
    // the tail.
    let at = server
        .get(&format!(
            "/v1/wallets/{wallet}/balance?at=2025-01-31T10:30:00Z"
        ))
        .await
        .ok()
        .body;
    assert_eq!(at["balance"], before_expiry["balance"], "{at}");

    let events = all_pages(&server, &format!("/v1/events?wallet_id={wallet}"), 2).await;
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"grant.expired"), "{kinds:?}");
    let mut sorted = ids(&events);
    sorted.sort();
    sorted.reverse();
    assert_eq!(sorted, ids(&events), "newest first, each once");

    // Once merged, the store answers what the tail did.
    let from_tail = reads(&server, &wallet).await;
    drop(blocker);
    common::eventually("the journal merged", unmerged).await;
    assert_eq!(reads(&server, &wallet).await, from_tail);
}
