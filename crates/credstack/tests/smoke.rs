mod common;

use common::Server;
use serde_json::json;

#[tokio::test]
async fn rule_04_seed_002_worked_example() {
    let server = Server::start().await;
    let wallet = server.wallet(0).await;
    server
        .grant(&wallet, json!({"amount": "1000000", "purpose": "bundled", "recurrence": {"interval": "month"}}))
        .await
        .ok();
    let promotional = server
        .grant(&wallet, json!({"amount": "100000", "purpose": "promotional", "expires_at": "2025-03-02T10:00:00Z"}))
        .await
        .ok()
        .id();
    let paid = server.grant(&wallet, json!({"amount": "500000", "purpose": "paid"})).await.ok().id();
    let debit = server.debit(&wallet, "100000").await.ok();
    assert_eq!(debit.body["allocations"], json!([{"grant_id": promotional, "amount": "100000"}]));
    let debit = server.debit(&wallet, "1200000").await.ok();
    assert_eq!(debit.body["allocations"][1], json!({"grant_id": paid, "amount": "200000"}));
    assert_eq!(debit.str("balance_after"), "300000");
}
