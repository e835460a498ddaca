//! SPEC §2 rules 1–18 end to end: a real server, a real store, real HTTP,
//! the simulated clock. Each test is named after the rule it proves and
//! asserts the exact JSON the API returns.

mod common;

use common::{START, Server, assert_error, atomic};
use serde_json::{Value, json};

fn ledger_rows(rows: &[(&str, &str, &str, &str)]) -> Vec<(String, String, String, String)> {
    rows.iter()
        .map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), d.to_string()))
        .collect()
}

fn ids(list: &Value) -> Vec<String> {
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["id"].as_str().unwrap().to_string())
        .collect()
}

// ---- rule 1: exact decimals -----------------------------------------------------

#[tokio::test]
async fn rule_01_amounts_are_exact_decimal_strings() {
    let server = Server::start().await;
    let wallet = server.wallet(2).await;
    let grant = server
        .grant(&wallet, json!({"amount": "100.5", "purpose": "paid"}))
        .await
        .ok();
    assert_eq!(grant.body["amount"], "100.5");
    assert_eq!(grant.body["remaining"], "100.5");
    server
        .grant_ok(&wallet, json!({"amount": "0.01", "purpose": "paid"}))
        .await;
    // Trailing zeros are accepted and the canonical form is returned.
    server
        .grant_ok(&wallet, json!({"amount": "1.50", "purpose": "paid"}))
        .await;
    let debit = server.debit(&wallet, "0.1").await.ok();
    assert_eq!(debit.body["amount"], "0.1");
    assert_eq!(debit.body["balance_after"], "101.91");
    let balance = server.balance(&wallet).await;
    assert_eq!(balance["balance"], "101.91");
    assert_eq!(balance["available"], "101.91");
    assert_eq!(
        balance["by_purpose"],
        json!({"promotional": "0", "bundled": "0", "paid": "101.91"})
    );
    // 0.1 + 0.2 style sums stay exact.
    server.debit(&wallet, "0.2").await.ok();
    server.debit(&wallet, "0.7").await.ok();
    assert_eq!(server.balance(&wallet).await["balance"], "101.01");

    // Scale 6: a millionth is exact.
    let micro = server.wallet(6).await;
    server
        .grant_ok(&micro, json!({"amount": "0.000003", "purpose": "paid"}))
        .await;
    let debit = server.debit(&micro, "0.000001").await.ok();
    assert_eq!(debit.body["balance_after"], "0.000002");
    assert_eq!(debit.body["allocations"][0]["amount"], "0.000001");

    // Scale 0: whole units only.
    let whole = server.wallet(0).await;
    let grant = server
        .grant(
            &whole,
            json!({"amount": "1000000000000", "purpose": "paid"}),
        )
        .await
        .ok();
    assert_eq!(
        grant.body["amount"], "1000000000000",
        "exactly 10^12 is allowed"
    );
    assert_eq!(
        server
            .debit(&whole, "999999999999")
            .await
            .ok()
            .str("balance_after"),
        "1"
    );
}

#[tokio::test]
async fn rule_01_over_precise_negative_and_huge_amounts_are_refused() {
    let server = Server::start().await;
    let cases: [(u8, &[&str]); 3] = [
        (
            0,
            &[
                "1.5",
                "0.1",
                "-1",
                "0",
                "-0",
                "1000000000001",
                "99999999999999999999",
                "1e3",
                "abc",
                "",
                " 1",
                "+1",
                ".5",
            ],
        ),
        (
            2,
            &[
                "1.005",
                "-0.01",
                "0.00",
                "1000000000000.01",
                "1000000000001",
                "1.2.3",
                "1,5",
            ],
        ),
        (
            6,
            &["0.0000001", "-0.000001", "1000000000000.000001", "NaN"],
        ),
    ];
    for (scale, amounts) in cases {
        let cs = server.credit_system(&format!("refuse{scale}"), scale).await;
        let wallet = server.wallet_with_overdraft(&cs, "0").await;
        let grant = server
            .grant_ok(&wallet, json!({"amount": "10", "purpose": "paid"}))
            .await;
        let hold = server.hold(&wallet, json!({"amount": "1"})).await.ok().id();
        let before = server.snapshot(&wallet).await;
        for amount in amounts {
            let cases = [
                (
                    format!("/v1/wallets/{wallet}/grants"),
                    json!({"amount": amount, "purpose": "paid"}),
                    "amount",
                ),
                (
                    format!("/v1/wallets/{wallet}/debits"),
                    json!({ "amount": amount }),
                    "amount",
                ),
                (
                    format!("/v1/wallets/{wallet}/holds"),
                    json!({ "amount": amount }),
                    "amount",
                ),
                (
                    format!("/v1/holds/{hold}/capture"),
                    json!({ "amount": amount }),
                    "amount",
                ),
                (
                    format!("/v1/wallets/{wallet}/grants"),
                    json!({"amount": "1", "purpose": "paid", "recurrence": {"interval": "month"}, "rollover_max": amount}),
                    "rollover_max",
                ),
            ];
            for (path, body, param) in cases {
                if param == "rollover_max" && ["0", "-0", "0.00"].contains(amount) {
                    continue; // a zero rollover_max is valid
                }
                let response = server.post(&path, body.clone()).await;
                assert_error(&response, 400, "parameter_invalid", Some(param));
            }
            if !["0", "-0", "0.00"].contains(amount) {
                let customer = server.customer("Refused").await;
                let response = server
                    .post("/v1/wallets", json!({"customer_id": customer, "credit_system_id": cs, "overdraft_limit": amount}))
                    .await;
                assert_error(&response, 400, "parameter_invalid", Some("overdraft_limit"));
                let response = server
                    .patch(
                        &format!("/v1/wallets/{wallet}"),
                        json!({ "overdraft_limit": amount }),
                    )
                    .await;
                assert_error(&response, 400, "parameter_invalid", Some("overdraft_limit"));
            }
        }
        let mut after = server.snapshot(&wallet).await;
        // Refused wallet creations made customers, nothing else.
        after["customers"] = before["customers"].clone();
        assert_eq!(
            before, after,
            "scale {scale}: refused amounts changed nothing"
        );
        assert_eq!(server.get_grant(&grant).await["remaining"], "10");
        assert_eq!(
            server
                .get(&format!("/v1/holds/{hold}"))
                .await
                .ok()
                .str("status"),
            "active"
        );
        let wallets = server
            .get(&format!("/v1/wallets?credit_system_id={cs}"))
            .await
            .ok()
            .body;
        assert_eq!(
            wallets["data"].as_array().unwrap().len(),
            1,
            "no wallet was created"
        );
    }
}

#[tokio::test]
async fn rule_01_no_arithmetic_wraps() {
    let server = Server::start().await;
    let wallet = server.wallet(6).await;
    // 9 × 10^12 whole units at scale 6 is 9 × 10^18 atomic units: just inside i64.
    for _ in 0..9 {
        server
            .grant_ok(
                &wallet,
                json!({"amount": "1000000000000", "purpose": "paid"}),
            )
            .await;
    }
    assert_eq!(server.balance(&wallet).await["balance"], "9000000000000");
    let before = server.snapshot(&wallet).await;
    let response = server
        .grant(
            &wallet,
            json!({"amount": "1000000000000", "purpose": "paid"}),
        )
        .await;
    assert!(
        response.status.is_client_error(),
        "a 10th grant would overflow: {}",
        response.body
    );
    assert!(response.body["error"]["code"].is_string());
    assert_eq!(
        server.snapshot(&wallet).await,
        before,
        "the refused grant changed nothing"
    );
    let debit = server.debit(&wallet, "1000000000000").await.ok();
    assert_eq!(debit.str("balance_after"), "8000000000000");
    let response = server.debit(&wallet, "1000000000000.000001").await;
    assert_error(&response, 400, "parameter_invalid", Some("amount"));
    server.check_invariants(&wallet).await;
}

// ---- rule 2: RFC 3339 UTC, half-open validity -----------------------------------

#[tokio::test]
async fn rule_02_validity_is_half_open_and_instants_are_utc() {
    let server = Server::start().await;
    let wallet = server.wallet(0).await;
    let grant = server
        .grant(
            &wallet,
            json!({"amount": "10", "purpose": "paid", "effective_at": "2025-01-31T13:00:00+02:00", "expires_at": "2025-01-31T12:00:00Z"}),
        )
        .await
        .ok();
    assert_eq!(
        grant.body["effective_at"], "2025-01-31T11:00:00Z",
        "instants come back in UTC"
    );
    assert_eq!(grant.body["expires_at"], "2025-01-31T12:00:00Z");
    assert_eq!(grant.body["status"], "scheduled");
    assert_eq!(grant.body["created_at"], START);
    let id = grant.id();

    assert_error(
        &server.debit(&wallet, "1").await,
        402,
        "insufficient_balance",
        None,
    );
    server.advance("2025-01-31T10:59:59Z").await;
    assert_error(
        &server.debit(&wallet, "1").await,
        402,
        "insufficient_balance",
        None,
    );
    server.advance("2025-01-31T11:00:00Z").await;
    let debit = server.debit(&wallet, "1").await.ok();
    assert_eq!(
        debit.body["allocations"],
        json!([{"grant_id": id, "amount": "1"}]),
        "spendable at effective_at"
    );
    assert_eq!(debit.body["created_at"], "2025-01-31T11:00:00Z");
    server.advance("2025-01-31T11:59:59Z").await;
    assert_eq!(
        server.debit(&wallet, "1").await.ok().str("balance_after"),
        "8"
    );
    server.advance("2025-01-31T12:00:00Z").await;
    assert_error(
        &server.debit(&wallet, "1").await,
        402,
        "insufficient_balance",
        None,
    );
    let grant = server.get_grant(&id).await;
    assert_eq!(grant["status"], "expired", "not spendable at expires_at");
    assert_eq!(grant["remaining"], "0");
    assert_eq!(
        server.ledger(&wallet).await,
        ledger_rows(&[
            ("grant", "10", "10", "2025-01-31T11:00:00Z"),
            ("debit", "-1", "9", "2025-01-31T11:00:00Z"),
            ("debit", "-1", "8", "2025-01-31T11:59:59Z"),
            ("expiry", "-8", "0", "2025-01-31T12:00:00Z"),
        ])
    );
    let clock = server.get("/v1/test_clock").await.ok();
    assert_eq!(
        clock.body,
        json!({"object": "test_clock", "now": "2025-01-31T12:00:00Z"})
    );
}

// ---- rule 3: the server clock, scheduled grants ---------------------------------

#[tokio::test]
async fn rule_03_effective_at_in_the_past_is_refused() {
    let server = Server::start().await;
    let wallet = server.wallet(0).await;
    let before = server.snapshot(&wallet).await;
    let response = server
        .grant(
            &wallet,
            json!({"amount": "10", "purpose": "paid", "effective_at": "2025-01-31T09:59:59Z"}),
        )
        .await;
    assert_error(&response, 400, "parameter_invalid", Some("effective_at"));
    let response = server
        .grant(&wallet, json!({"amount": "10", "purpose": "paid", "effective_at": "2025-01-31T09:59:59.999999Z"}))
        .await;
    assert_error(&response, 400, "parameter_invalid", Some("effective_at"));
    assert_eq!(server.snapshot(&wallet).await, before);
    // Now is not in the past.
    let grant = server
        .grant(
            &wallet,
            json!({"amount": "10", "purpose": "paid", "effective_at": START}),
        )
        .await
        .ok();
    assert_eq!(grant.body["status"], "active");
    assert_eq!(grant.body["remaining"], "10");
    // Time only moves forward.
    let response = server
        .post(
            "/v1/test_clock/advance",
            json!({"to": "2025-01-31T09:00:00Z"}),
        )
        .await;
    assert_error(&response, 400, "parameter_invalid", Some("to"));
}

#[tokio::test]
async fn rule_03_scheduled_grant_arrives_at_effective_at() {
    let server = Server::start().await;
    let wallet = server.wallet(0).await;
    let grant = server
        .grant(
            &wallet,
            json!({"amount": "50", "purpose": "bundled", "effective_at": "2025-02-01T00:00:00Z"}),
        )
        .await
        .ok();
    assert_eq!(grant.body["status"], "scheduled");
    assert_eq!(grant.body["remaining"], "0");
    assert_eq!(grant.body["cycle"]["number"], 0);
    let id = grant.id();
    let balance = server.balance(&wallet).await;
    assert_eq!(balance["balance"], "0");
    assert_eq!(balance["grants"][0]["id"], id.as_str());
    assert_eq!(balance["grants"][0]["status"], "scheduled");
    assert!(
        server.entries(&wallet).await.is_empty(),
        "nothing arrived yet"
    );
    assert_error(
        &server.debit(&wallet, "1").await,
        402,
        "insufficient_balance",
        None,
    );
    let listed = server
        .get(&format!("/v1/wallets/{wallet}/grants?status=scheduled"))
        .await
        .ok()
        .body;
    assert_eq!(ids(&listed), vec![id.clone()]);

    server.advance("2025-02-02T00:00:00Z").await;
    let grant = server.get_grant(&id).await;
    assert_eq!(grant["status"], "active");
    assert_eq!(grant["remaining"], "50");
    assert_eq!(grant["cycle"]["number"], 1);
    assert_eq!(grant["cycle"]["starts_at"], "2025-02-01T00:00:00Z");
    assert_eq!(
        server.ledger(&wallet).await,
        ledger_rows(&[("grant", "50", "50", "2025-02-01T00:00:00Z")]),
        "the arrival is dated effective_at, not when it was processed"
    );
    let debit = server.debit(&wallet, "5").await.ok();
    assert_eq!(
        debit.body["created_at"], "2025-02-02T00:00:00Z",
        "every write happens at the server's now"
    );
    let listed = server
        .get(&format!("/v1/wallets/{wallet}/grants?status=active"))
        .await
        .ok()
        .body;
    assert_eq!(ids(&listed), vec![id]);
}

// ---- rule 4: drawdown order -----------------------------------------------------

#[tokio::test]
async fn rule_04_drawdown_order_priority_then_cycle_end_then_effective_at_then_id() {
    let server = Server::start().await;
    let wallet = server.wallet(0).await;
    let grant = |body: Value| {
        let mut body = body;
        body["amount"] = json!("10");
        body["purpose"] = json!("paid");
        body
    };
    let a = server
        .grant_ok(&wallet, grant(json!({"priority": 50})))
        .await;
    let b = server
        .grant_ok(
            &wallet,
            grant(json!({"priority": 50, "expires_at": "2025-03-01T00:00:00Z"})),
        )
        .await;
    let c = server
        .grant_ok(
            &wallet,
            grant(json!({"priority": 50, "expires_at": "2025-02-15T00:00:00Z"})),
        )
        .await;
    let d = server
        .grant_ok(&wallet, grant(json!({"priority": 40})))
        .await;
    // Its cycle ends at the first renewal, 2025-02-28T10:00:00Z: between c and b.
    let e = server
        .grant_ok(
            &wallet,
            grant(json!({"priority": 50, "recurrence": {"interval": "month"}})),
        )
        .await;
    server.advance("2025-01-31T10:01:00Z").await;
    let f = server
        .grant_ok(&wallet, grant(json!({"priority": 50})))
        .await;
    let g = server
        .grant_ok(&wallet, grant(json!({"priority": 50})))
        .await;

    let order: Vec<String> = server.balance(&wallet).await["grants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        order,
        vec![
            d.clone(),
            c.clone(),
            e.clone(),
            b.clone(),
            a.clone(),
            f.clone(),
            g.clone()
        ]
    );
    let balance = server.balance(&wallet).await;
    assert_eq!(
        balance["grants"][1]["cycle_ends_at"],
        "2025-02-15T00:00:00Z"
    );
    assert_eq!(
        balance["grants"][2]["cycle_ends_at"],
        "2025-02-28T10:00:00Z"
    );
    assert_eq!(
        balance["grants"][2]["next_renewal_at"],
        "2025-02-28T10:00:00Z"
    );
    assert_eq!(balance["grants"][4]["cycle_ends_at"], Value::Null);

    let debit = server.debit(&wallet, "65").await.ok();
    assert_eq!(
        debit.body["allocations"],
        json!([
            {"grant_id": d, "amount": "10"},
            {"grant_id": c, "amount": "10"},
            {"grant_id": e, "amount": "10"},
            {"grant_id": b, "amount": "10"},
            {"grant_id": a, "amount": "10"},
            {"grant_id": f, "amount": "10"},
            {"grant_id": g, "amount": "5"},
        ])
    );
    assert_eq!(debit.body["balance_after"], "5");
}

#[tokio::test]
async fn rule_04_default_priority_by_purpose() {
    let server = Server::start().await;
    let wallet = server.wallet(0).await;
    let paid = server
        .grant(&wallet, json!({"amount": "10", "purpose": "paid"}))
        .await
        .ok();
    let bundled = server
        .grant(&wallet, json!({"amount": "10", "purpose": "bundled"}))
        .await
        .ok();
    let promotional = server
        .grant(&wallet, json!({"amount": "10", "purpose": "promotional"}))
        .await
        .ok();
    assert_eq!(paid.body["priority"], 30);
    assert_eq!(bundled.body["priority"], 20);
    assert_eq!(promotional.body["priority"], 10);
    let debit = server.debit(&wallet, "25").await.ok();
    assert_eq!(
        debit.body["allocations"],
        json!([
            {"grant_id": promotional.id(), "amount": "10"},
            {"grant_id": bundled.id(), "amount": "10"},
            {"grant_id": paid.id(), "amount": "5"},
        ])
    );
    // An explicit priority overrides the default.
    let first = server
        .grant(
            &wallet,
            json!({"amount": "3", "purpose": "paid", "priority": 0}),
        )
        .await
        .ok();
    assert_eq!(first.body["priority"], 0);
    let debit = server.debit(&wallet, "4").await.ok();
    assert_eq!(
        debit.body["allocations"],
        json!([{"grant_id": first.id(), "amount": "3"}, {"grant_id": paid.id(), "amount": "1"}])
    );
    let response = server
        .grant(
            &wallet,
            json!({"amount": "3", "purpose": "paid", "priority": 101}),
        )
        .await;
    assert_error(&response, 400, "parameter_invalid", Some("priority"));
    let response = server
        .grant(&wallet, json!({"amount": "3", "purpose": "gift"}))
        .await;
    assert_error(&response, 400, "parameter_invalid", Some("purpose"));
}

#[tokio::test]
async fn rule_04_seed_002_worked_example() {
    // 1M tokens a month bundled, a 100k promotion expiring in 30 days, a
    // 500k paid top-up: promotional first, then bundled, then paid.
    let server = Server::start().await;
    let cs = server
        .post(
            "/v1/credit_systems",
            json!({"key": "ai_tokens", "name": "AI tokens", "unit": "tokens", "scale": 0}),
        )
        .await
        .ok()
        .id();
    let wallet = server.wallet_in(&cs).await;
    let bundled = server
        .grant_ok(
            &wallet,
            json!({"amount": "1000000", "purpose": "bundled", "recurrence": {"interval": "month"}}),
        )
        .await;
    let promotional = server
        .grant_ok(&wallet, json!({"amount": "100000", "purpose": "promotional", "expires_at": "2025-03-02T10:00:00Z"}))
        .await;
    let paid = server
        .grant_ok(&wallet, json!({"amount": "500000", "purpose": "paid"}))
        .await;
    let balance = server.balance(&wallet).await;
    assert_eq!(balance["balance"], "1600000");
    assert_eq!(
        balance["by_purpose"],
        json!({"promotional": "100000", "bundled": "1000000", "paid": "500000"})
    );
    assert_eq!(
        balance["next_expiry"],
        json!({"at": "2025-02-28T10:00:00Z", "amount": "1000000"})
    );

    let debit = server.debit(&wallet, "100000").await.ok();
    assert_eq!(
        debit.body["allocations"],
        json!([{"grant_id": promotional, "amount": "100000"}])
    );
    assert_eq!(debit.str("balance_after"), "1500000");
    let debit = server.debit(&wallet, "1200000").await.ok();
    assert_eq!(
        debit.body["allocations"],
        json!([{"grant_id": bundled, "amount": "1000000"}, {"grant_id": paid, "amount": "200000"}])
    );
    assert_eq!(debit.str("balance_after"), "300000");
    assert_eq!(
        server.balance(&wallet).await["by_purpose"],
        json!({"promotional": "0", "bundled": "0", "paid": "300000"})
    );

    // The allowance refreshes on 2025-02-28; the paid top-up is preserved.
    server.advance("2025-02-28T10:00:00Z").await;
    let balance = server.balance(&wallet).await;
    assert_eq!(
        balance["by_purpose"],
        json!({"promotional": "0", "bundled": "1000000", "paid": "300000"})
    );
    let debit = server.debit(&wallet, "10").await.ok();
    assert_eq!(
        debit.body["allocations"],
        json!([{"grant_id": bundled, "amount": "10"}])
    );
    server.check_invariants(&wallet).await;
}

// ---- rule 5: all or nothing -----------------------------------------------------

#[tokio::test]
async fn rule_05_debit_is_all_or_nothing() {
    let server = Server::start().await;
    let wallet = server.wallet(2).await;
    server
        .grant_ok(&wallet, json!({"amount": "60", "purpose": "promotional"}))
        .await;
    server
        .grant_ok(&wallet, json!({"amount": "40", "purpose": "paid"}))
        .await;
    let before = server.snapshot(&wallet).await;
    let response = server.debit(&wallet, "100.01").await;
    assert_error(&response, 402, "insufficient_balance", None);
    assert_eq!(response.body["error"]["type"], "balance_error");
    assert_eq!(
        server.snapshot(&wallet).await,
        before,
        "a refused debit changes nothing"
    );

    server.hold(&wallet, json!({"amount": "30"})).await.ok();
    let before = server.snapshot(&wallet).await;
    assert_error(
        &server.debit(&wallet, "70.01").await,
        402,
        "insufficient_balance",
        None,
    );
    assert_eq!(server.snapshot(&wallet).await, before);
    let debit = server.debit(&wallet, "70").await.ok();
    assert_eq!(debit.str("balance_after"), "30");
    let balance = server.balance(&wallet).await;
    assert_eq!(
        (&balance["balance"], &balance["held"], &balance["available"]),
        (&json!("30"), &json!("30"), &json!("0"))
    );
    assert_error(
        &server.debit(&wallet, "0.01").await,
        402,
        "insufficient_balance",
        None,
    );
}

// ---- rule 6: overdraft and debt -------------------------------------------------

#[tokio::test]
async fn rule_06_overdraft_debt_repaid_by_a_new_grant() {
    let server = Server::start().await;
    let cs = server.credit_system("overdraft", 0).await;
    let wallet = server.wallet_with_overdraft(&cs, "50").await;
    assert_eq!(
        server
            .get(&format!("/v1/wallets/{wallet}"))
            .await
            .ok()
            .str("overdraft_limit"),
        "50"
    );
    let g1 = server
        .grant_ok(&wallet, json!({"amount": "100", "purpose": "paid"}))
        .await;
    let debit = server.debit(&wallet, "130").await.ok();
    assert_eq!(
        debit.body["allocations"],
        json!([{"grant_id": g1, "amount": "100"}, {"grant_id": null, "amount": "30"}])
    );
    assert_eq!(debit.str("balance_after"), "-30");
    let balance = server.balance(&wallet).await;
    assert_eq!(balance["balance"], "-30");
    assert_eq!(balance["debt"], "30");
    assert_eq!(balance["available"], "-30");
    assert_eq!(balance["overdraft_limit"], "50");
    assert_eq!(balance["spendable"], "20");

    assert_error(
        &server.debit(&wallet, "21").await,
        402,
        "insufficient_balance",
        None,
    );
    let debit = server.debit(&wallet, "20").await.ok();
    assert_eq!(
        debit.body["allocations"],
        json!([{"grant_id": null, "amount": "20"}])
    );
    assert_eq!(debit.str("balance_after"), "-50");
    assert_error(
        &server.debit(&wallet, "1").await,
        402,
        "insufficient_balance",
        None,
    );
    let before = server.snapshot(&wallet).await;
    let response = server
        .patch(
            &format!("/v1/wallets/{wallet}"),
            json!({"overdraft_limit": "40"}),
        )
        .await;
    assert_error(
        &response,
        409,
        "overdraft_below_debt",
        Some("overdraft_limit"),
    );
    assert_eq!(server.snapshot(&wallet).await, before);

    let g2 = server
        .grant_ok(&wallet, json!({"amount": "80", "purpose": "paid"}))
        .await;
    let entries = server.entries(&wallet).await;
    let tail: Vec<Value> = entries[4..]
        .iter()
        .map(|e| {
            json!([
                e["sequence"],
                e["type"],
                e["amount"],
                e["balance_after"],
                e["grant_id"]
            ])
        })
        .collect();
    assert_eq!(
        tail,
        vec![
            json!([5, "grant", "80", "30", g2]),
            json!([6, "repayment", "-50", "-20", g2]),
            json!([7, "repayment", "50", "30", null]),
        ]
    );
    let balance = server.balance(&wallet).await;
    assert_eq!(
        (&balance["balance"], &balance["debt"]),
        (&json!("30"), &json!("0"))
    );
    assert_eq!(server.get_grant(&g2).await["remaining"], "30");
    server.check_invariants(&wallet).await;
}

#[tokio::test]
async fn rule_06_debt_repaid_at_renewal() {
    let server = Server::start().await;
    let cs = server.credit_system("renewdebt", 0).await;
    let wallet = server.wallet_with_overdraft(&cs, "50").await;
    let g = server
        .grant_ok(
            &wallet,
            json!({"amount": "100", "purpose": "bundled", "recurrence": {"interval": "month"}}),
        )
        .await;
    let debit = server.debit(&wallet, "150").await.ok();
    assert_eq!(
        debit.body["allocations"],
        json!([{"grant_id": g, "amount": "100"}, {"grant_id": null, "amount": "50"}])
    );
    server.advance("2025-03-01T00:00:00Z").await;
    let entries = server.entries(&wallet).await;
    let rows: Vec<Value> = entries
        .iter()
        .map(|e| {
            json!([
                e["type"],
                e["amount"],
                e["balance_after"],
                e["occurred_at"],
                e["grant_id"]
            ])
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            json!(["grant", "100", "100", START, g]),
            json!(["debit", "-100", "0", START, g]),
            json!(["debit", "-50", "-50", START, null]),
            json!(["renewal", "100", "50", "2025-02-28T10:00:00Z", g]),
            json!(["repayment", "-50", "0", "2025-02-28T10:00:00Z", g]),
            json!(["repayment", "50", "50", "2025-02-28T10:00:00Z", null]),
        ]
    );
    let balance = server.balance(&wallet).await;
    assert_eq!(
        (&balance["balance"], &balance["debt"]),
        (&json!("50"), &json!("0"))
    );
    server.check_invariants(&wallet).await;
}

#[tokio::test]
async fn rule_06_debt_repaid_when_a_scheduled_grant_arrives() {
    let server = Server::start().await;
    let cs = server.credit_system("scheduleddebt", 0).await;
    let wallet = server.wallet_with_overdraft(&cs, "20").await;
    let later = server
        .grant_ok(
            &wallet,
            json!({"amount": "50", "purpose": "paid", "effective_at": "2025-02-01T00:00:00Z"}),
        )
        .await;
    let debit = server.debit(&wallet, "15").await.ok();
    assert_eq!(
        debit.body["allocations"],
        json!([{"grant_id": null, "amount": "15"}])
    );
    server.advance("2025-02-01T00:00:00Z").await;
    assert_eq!(
        server.ledger(&wallet).await,
        ledger_rows(&[
            ("debit", "-15", "-15", START),
            ("grant", "50", "35", "2025-02-01T00:00:00Z"),
            ("repayment", "-15", "20", "2025-02-01T00:00:00Z"),
            ("repayment", "15", "35", "2025-02-01T00:00:00Z"),
        ])
    );
    assert_eq!(server.get_grant(&later).await["remaining"], "35");
    let balance = server.balance(&wallet).await;
    assert_eq!(
        (&balance["balance"], &balance["debt"], &balance["spendable"]),
        (&json!("35"), &json!("0"), &json!("55"))
    );
    server.check_invariants(&wallet).await;
}

// ---- rule 7: the debit's split --------------------------------------------------

#[tokio::test]
async fn rule_07_debit_response_shows_allocations_and_balance_after() {
    let server = Server::start().await;
    let wallet = server.wallet(0).await;
    let promotional = server
        .grant_ok(&wallet, json!({"amount": "30", "purpose": "promotional"}))
        .await;
    let paid = server
        .grant_ok(&wallet, json!({"amount": "100", "purpose": "paid"}))
        .await;
    let debit = server
        .post(
            &format!("/v1/wallets/{wallet}/debits"),
            json!({"amount": "50", "description": "chat completion", "metadata": {"model": "m1"}}),
        )
        .await
        .ok();
    let id = debit.id();
    assert!(id.starts_with("deb_"), "{id}");
    assert_eq!(
        debit.body,
        json!({
            "id": id,
            "object": "debit",
            "wallet_id": wallet,
            "amount": "50",
            "allocations": [{"grant_id": promotional, "amount": "30"}, {"grant_id": paid, "amount": "20"}],
            "balance_after": "80",
            "description": "chat completion",
            "metadata": {"model": "m1"},
            "hold_id": null,
            "created_at": START,
        })
    );
    assert_eq!(
        server.get(&format!("/v1/debits/{id}")).await.ok().body,
        debit.body
    );
    let list = server
        .get(&format!("/v1/wallets/{wallet}/debits"))
        .await
        .ok()
        .body;
    assert_eq!(list["object"], "list");
    assert_eq!(list["data"], json!([debit.body]));
    assert_eq!(list["has_more"], false);
}

// ---- rule 8: expiry -------------------------------------------------------------

#[tokio::test]
async fn rule_08_expiry_entry_dated_exactly_expires_at() {
    let server = Server::start().await;
    let wallet = server.wallet(0).await;
    let promotional = server
        .grant_ok(&wallet, json!({"amount": "100", "purpose": "promotional", "expires_at": "2025-02-10T00:00:00Z"}))
        .await;
    let paid = server
        .grant_ok(&wallet, json!({"amount": "5", "purpose": "paid"}))
        .await;
    server.debit(&wallet, "30").await.ok();
    let balance = server.balance(&wallet).await;
    assert_eq!(
        balance["next_expiry"],
        json!({"at": "2025-02-10T00:00:00Z", "amount": "70"})
    );

    // Nobody touches the wallet across the expiry.
    server.advance("2025-02-20T00:00:00Z").await;
    assert_eq!(
        server.ledger(&wallet).await,
        ledger_rows(&[
            ("grant", "100", "100", START),
            ("grant", "5", "105", START),
            ("debit", "-30", "75", START),
            ("expiry", "-70", "5", "2025-02-10T00:00:00Z"),
        ])
    );
    let entries = server.entries(&wallet).await;
    assert_eq!(entries[3]["grant_id"], promotional.as_str());
    assert_eq!(entries[3]["reference"], promotional.as_str());
    let grant = server.get_grant(&promotional).await;
    assert_eq!(grant["status"], "expired");
    assert_eq!(grant["remaining"], "0");
    assert_eq!(grant["ended_at"], "2025-02-10T00:00:00Z");
    let balance = server.balance(&wallet).await;
    assert_eq!(balance["balance"], "5");
    assert_eq!(balance["next_expiry"], Value::Null);
    assert_eq!(balance["grants"].as_array().unwrap().len(), 1);
    assert_eq!(balance["grants"][0]["id"], paid.as_str());
    let expired = server
        .get(&format!("/v1/wallets/{wallet}/grants?status=expired"))
        .await
        .ok()
        .body;
    assert_eq!(ids(&expired), vec![promotional]);
}

#[tokio::test]
async fn rule_08_grant_statuses_and_the_status_filter() {
    let server = Server::start().await;
    let wallet = server.wallet(0).await;
    let scheduled = server
        .grant_ok(
            &wallet,
            json!({"amount": "5", "purpose": "paid", "effective_at": "2025-03-01T00:00:00Z"}),
        )
        .await;
    let depleted = server
        .grant_ok(&wallet, json!({"amount": "5", "purpose": "promotional"}))
        .await;
    let expired = server
        .grant_ok(
            &wallet,
            json!({"amount": "5", "purpose": "bundled", "expires_at": "2025-02-01T00:00:00Z"}),
        )
        .await;
    let voided = server
        .grant_ok(
            &wallet,
            json!({"amount": "5", "purpose": "paid", "priority": 90}),
        )
        .await;
    let active = server
        .grant_ok(&wallet, json!({"amount": "5", "purpose": "paid"}))
        .await;
    server.debit(&wallet, "5").await.ok();
    server
        .post(&format!("/v1/grants/{voided}/void"), json!({}))
        .await
        .ok();
    server.advance("2025-02-02T00:00:00Z").await;
    for (status, id) in [
        ("scheduled", &scheduled),
        ("active", &active),
        ("depleted", &depleted),
        ("expired", &expired),
        ("voided", &voided),
    ] {
        assert_eq!(server.get_grant(id).await["status"], status);
        let listed = server
            .get(&format!("/v1/wallets/{wallet}/grants?status={status}"))
            .await
            .ok()
            .body;
        assert_eq!(ids(&listed), vec![id.clone()], "status={status}");
    }
    let all = server
        .get(&format!("/v1/wallets/{wallet}/grants"))
        .await
        .ok()
        .body;
    assert_eq!(
        ids(&all),
        vec![active, voided, expired, depleted, scheduled]
    );
}

// ---- rule 9: recurrence from the anchor -----------------------------------------

#[tokio::test]
async fn rule_09_monthly_recurrence_from_jan_31() {
    let server = Server::start().await;
    let wallet = server.wallet(0).await;
    let grant = server
        .grant(
            &wallet,
            json!({"amount": "100", "purpose": "bundled", "recurrence": {"interval": "month"}}),
        )
        .await
        .ok();
    assert_eq!(
        grant.body["recurrence"],
        json!({"interval": "month", "interval_count": 1})
    );
    assert_eq!(grant.body["next_renewal_at"], "2025-02-28T10:00:00Z");
    assert_eq!(
        grant.body["cycle"],
        json!({"number": 1, "starts_at": START, "ends_at": "2025-02-28T10:00:00Z"})
    );
    let id = grant.id();

    server.advance("2025-02-28T10:00:00Z").await;
    let grant = server.get_grant(&id).await;
    assert_eq!(grant["next_renewal_at"], "2025-03-31T10:00:00Z");
    assert_eq!(
        grant["cycle"],
        json!({"number": 2, "starts_at": "2025-02-28T10:00:00Z", "ends_at": "2025-03-31T10:00:00Z"})
    );
    server.advance("2025-05-01T00:00:00Z").await;
    let grant = server.get_grant(&id).await;
    assert_eq!(grant["next_renewal_at"], "2025-05-31T10:00:00Z");
    assert_eq!(grant["cycle"]["number"], 4);
    assert_eq!(grant["cycle"]["starts_at"], "2025-04-30T10:00:00Z");
    assert_eq!(grant["remaining"], "100");
    let balance = server.balance(&wallet).await;
    assert_eq!(
        balance["grants"][0]["next_renewal_at"],
        "2025-05-31T10:00:00Z"
    );
    assert_eq!(
        balance["grants"][0]["cycle_ends_at"],
        "2025-05-31T10:00:00Z"
    );
    assert_eq!(
        server.ledger(&wallet).await,
        ledger_rows(&[
            ("grant", "100", "100", START),
            ("expiry", "-100", "0", "2025-02-28T10:00:00Z"),
            ("renewal", "100", "100", "2025-02-28T10:00:00Z"),
            ("expiry", "-100", "0", "2025-03-31T10:00:00Z"),
            ("renewal", "100", "100", "2025-03-31T10:00:00Z"),
            ("expiry", "-100", "0", "2025-04-30T10:00:00Z"),
            ("renewal", "100", "100", "2025-04-30T10:00:00Z"),
        ])
    );
}

#[tokio::test]
async fn rule_09_leap_year_and_other_intervals() {
    let server = Server::start_at("2024-01-31T10:00:00Z").await;
    let wallet = server.wallet(0).await;
    let monthly = server
        .grant(
            &wallet,
            json!({"amount": "1", "purpose": "bundled", "recurrence": {"interval": "month"}}),
        )
        .await
        .ok();
    assert_eq!(monthly.body["next_renewal_at"], "2024-02-29T10:00:00Z");
    let cases = [
        (json!({"interval": "day"}), "2024-02-01T10:00:00Z"),
        (
            json!({"interval": "week", "interval_count": 2}),
            "2024-02-14T10:00:00Z",
        ),
        (
            json!({"interval": "month", "interval_count": 3}),
            "2024-04-30T10:00:00Z",
        ),
        (json!({"interval": "year"}), "2025-01-31T10:00:00Z"),
    ];
    for (recurrence, next) in cases {
        let grant = server
            .grant(
                &wallet,
                json!({"amount": "1", "purpose": "bundled", "recurrence": recurrence}),
            )
            .await
            .ok();
        assert_eq!(grant.body["next_renewal_at"], next, "{recurrence}");
    }
    let response = server
        .grant(
            &wallet,
            json!({"amount": "1", "purpose": "bundled", "recurrence": {"interval": "hour"}}),
        )
        .await;
    assert_error(
        &response,
        400,
        "parameter_invalid",
        Some("recurrence.interval"),
    );
    let response = server
        .grant(&wallet, json!({"amount": "1", "purpose": "bundled", "recurrence": {"interval": "day", "interval_count": 0}}))
        .await;
    assert_error(
        &response,
        400,
        "parameter_invalid",
        Some("recurrence.interval_count"),
    );

    // Yearly from Feb 29: Feb 28 in common years, Feb 29 again in 2028.
    let server = Server::start_at("2024-02-29T00:00:00Z").await;
    let wallet = server.wallet(0).await;
    let yearly = server
        .grant_ok(
            &wallet,
            json!({"amount": "7", "purpose": "bundled", "recurrence": {"interval": "year"}}),
        )
        .await;
    assert_eq!(
        server.get_grant(&yearly).await["next_renewal_at"],
        "2025-02-28T00:00:00Z"
    );
    server.advance("2025-03-01T00:00:00Z").await;
    assert_eq!(
        server.get_grant(&yearly).await["next_renewal_at"],
        "2026-02-28T00:00:00Z"
    );
    server.advance("2027-03-01T00:00:00Z").await;
    assert_eq!(
        server.get_grant(&yearly).await["next_renewal_at"],
        "2028-02-29T00:00:00Z"
    );
    let renewals: Vec<String> = server
        .entries(&wallet)
        .await
        .iter()
        .filter(|e| e["type"] == "renewal")
        .map(|e| e["occurred_at"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        renewals,
        vec![
            "2025-02-28T00:00:00Z",
            "2026-02-28T00:00:00Z",
            "2027-02-28T00:00:00Z"
        ]
    );
}

// ---- rule 10: rollover ----------------------------------------------------------

#[tokio::test]
async fn rule_10_rollover_carries_at_most_rollover_max() {
    let server = Server::start().await;
    let wallet = server.wallet(0).await;
    let grant = server
        .grant(
            &wallet,
            json!({"amount": "100", "purpose": "bundled", "recurrence": {"interval": "month"}, "rollover_max": "30"}),
        )
        .await
        .ok();
    assert_eq!(grant.body["rollover_max"], "30");
    let id = grant.id();
    server.debit(&wallet, "50").await.ok();
    assert_eq!(
        server.balance(&wallet).await["next_expiry"],
        json!({"at": "2025-02-28T10:00:00Z", "amount": "20"})
    );
    server.advance("2025-02-28T10:00:00Z").await;
    assert_eq!(
        server.get_grant(&id).await["remaining"],
        "130",
        "amount + carried"
    );
    server.advance("2025-03-31T10:00:00Z").await;
    assert_eq!(server.get_grant(&id).await["remaining"], "130");
    assert_eq!(
        server.ledger(&wallet).await,
        ledger_rows(&[
            ("grant", "100", "100", START),
            ("debit", "-50", "50", START),
            ("expiry", "-20", "30", "2025-02-28T10:00:00Z"),
            ("renewal", "100", "130", "2025-02-28T10:00:00Z"),
            ("expiry", "-100", "30", "2025-03-31T10:00:00Z"),
            ("renewal", "100", "130", "2025-03-31T10:00:00Z"),
        ])
    );
    // Less than rollover_max left: all of it carries, nothing is forfeited.
    server.debit(&wallet, "120").await.ok();
    server.advance("2025-04-30T10:00:00Z").await;
    let tail = server.ledger(&wallet).await[6..].to_vec();
    assert_eq!(
        tail,
        ledger_rows(&[
            ("debit", "-120", "10", "2025-03-31T10:00:00Z"),
            ("renewal", "100", "110", "2025-04-30T10:00:00Z")
        ])
    );
    server.check_invariants(&wallet).await;
}

#[tokio::test]
async fn rule_10_no_renewal_at_or_after_expires_at() {
    let server = Server::start().await;
    let wallet = server.wallet(0).await;
    let id = server
        .grant_ok(
            &wallet,
            json!({"amount": "100", "purpose": "bundled", "recurrence": {"interval": "month"}, "expires_at": "2025-03-31T10:00:00Z"}),
        )
        .await;
    server.advance("2025-03-01T00:00:00Z").await;
    let grant = server.get_grant(&id).await;
    assert_eq!(
        grant["next_renewal_at"],
        Value::Null,
        "the renewal on 2025-03-31 would be at expires_at"
    );
    assert_eq!(grant["cycle"]["ends_at"], "2025-03-31T10:00:00Z");
    server.advance("2025-06-01T00:00:00Z").await;
    assert_eq!(
        server.ledger(&wallet).await,
        ledger_rows(&[
            ("grant", "100", "100", START),
            ("expiry", "-100", "0", "2025-02-28T10:00:00Z"),
            ("renewal", "100", "100", "2025-02-28T10:00:00Z"),
            ("expiry", "-100", "0", "2025-03-31T10:00:00Z"),
        ])
    );
    let grant = server.get_grant(&id).await;
    assert_eq!(grant["status"], "expired");
    assert_eq!(grant["ended_at"], "2025-03-31T10:00:00Z");
}

#[tokio::test]
async fn rule_10_held_balance_does_not_roll_over_a_renewal() {
    // A hold taken before a renewal keeps its reservation capturable, but
    // what it does not capture belongs to the cycle that ended: forfeited.
    let server = Server::start().await;
    let wallet = server.wallet(0).await;
    let g = server
        .grant_ok(
            &wallet,
            json!({"amount": "100", "purpose": "bundled", "recurrence": {"interval": "month"}}),
        )
        .await;
    let other = server.wallet(0).await;
    let h = server
        .grant_ok(
            &other,
            json!({"amount": "100", "purpose": "bundled", "recurrence": {"interval": "month"}}),
        )
        .await;
    server.advance("2025-02-28T09:00:00Z").await;
    let released = server
        .hold(&wallet, json!({"amount": "60", "expires_in_seconds": 7200}))
        .await
        .ok()
        .id();
    let captured = server
        .hold(&other, json!({"amount": "60", "expires_in_seconds": 7200}))
        .await
        .ok()
        .id();
    server.advance("2025-02-28T10:30:00Z").await;
    assert_eq!(
        server.get_grant(&g).await["remaining"],
        "160",
        "the new cycle plus what is still held"
    );
    assert_eq!(server.balance(&wallet).await["available"], "100");
    server
        .post(&format!("/v1/holds/{released}/release"), json!({}))
        .await
        .ok();
    assert_eq!(
        server.ledger(&wallet).await,
        ledger_rows(&[
            ("grant", "100", "100", START),
            ("expiry", "-40", "60", "2025-02-28T10:00:00Z"),
            ("renewal", "100", "160", "2025-02-28T10:00:00Z"),
            ("expiry", "-60", "100", "2025-02-28T10:30:00Z"),
        ])
    );
    let capture = server
        .post(
            &format!("/v1/holds/{captured}/capture"),
            json!({"amount": "50"}),
        )
        .await
        .ok();
    let debit = server
        .get(&format!("/v1/debits/{}", capture.str("debit_id")))
        .await
        .ok();
    assert_eq!(
        debit.body["allocations"],
        json!([{"grant_id": h, "amount": "50"}])
    );
    assert_eq!(
        server.ledger(&other).await[3..].to_vec(),
        ledger_rows(&[
            ("debit", "-50", "110", "2025-02-28T10:30:00Z"),
            ("expiry", "-10", "100", "2025-02-28T10:30:00Z")
        ])
    );
    for wallet in [&wallet, &other] {
        assert_eq!(server.balance(wallet).await["balance"], "100");
        server.check_invariants(wallet).await;
    }
}

// ---- rule 11: on time, whether or not anyone reads ------------------------------

#[tokio::test]
async fn rule_11_events_dated_at_their_scheduled_instants_in_untouched_wallets() {
    let server = Server::start().await;
    let watched = server.wallet(0).await;
    let untouched = server.wallet(0).await;
    let mut grants = Vec::new();
    for wallet in [&watched, &untouched] {
        let promotional = server
            .grant_ok(wallet, json!({"amount": "40", "purpose": "promotional", "expires_at": "2025-02-10T00:00:00Z"}))
            .await;
        let bundled = server
            .grant_ok(
                wallet,
                json!({"amount": "100", "purpose": "bundled", "recurrence": {"interval": "month"}}),
            )
            .await;
        let paid = server
            .grant_ok(
                wallet,
                json!({"amount": "25", "purpose": "paid", "effective_at": "2025-02-05T00:00:00Z"}),
            )
            .await;
        grants.push((promotional, bundled, paid));
    }
    // The watched wallet is read along the way; the other is not.
    server.advance("2025-02-07T00:00:00Z").await;
    assert_eq!(server.balance(&watched).await["balance"], "165");
    server.advance("2025-03-15T00:00:00Z").await;

    let (promotional, bundled, paid) = &grants[1];
    // The first read of the untouched wallet is a grant read.
    let grant = server.get_grant(promotional).await;
    assert_eq!(
        (&grant["status"], &grant["remaining"]),
        (&json!("expired"), &json!("0"))
    );
    let grant = server.get_grant(bundled).await;
    assert_eq!(
        (&grant["cycle"]["number"], &grant["remaining"]),
        (&json!(2), &json!("100"))
    );
    for wallet in [&watched, &untouched] {
        assert_eq!(
            server.ledger(wallet).await,
            ledger_rows(&[
                ("grant", "40", "40", START),
                ("grant", "100", "140", START),
                ("grant", "25", "165", "2025-02-05T00:00:00Z"),
                ("expiry", "-40", "125", "2025-02-10T00:00:00Z"),
                ("expiry", "-100", "25", "2025-02-28T10:00:00Z"),
                ("renewal", "100", "125", "2025-02-28T10:00:00Z"),
            ]),
            "{wallet}"
        );
        let balance = server.balance(wallet).await;
        assert_eq!(balance["balance"], "125");
        assert_eq!(balance["at"], "2025-03-15T00:00:00Z");
        server.check_invariants(wallet).await;
    }
    let entries = server.entries(&untouched).await;
    assert_eq!(entries[2]["grant_id"], paid.as_str());
    // A write after the catch-up is dated now and continues the sequence.
    let debit = server.debit(&untouched, "1").await.ok();
    assert_eq!(debit.body["allocations"][0]["grant_id"], bundled.as_str());
    let last = server.entries(&untouched).await.pop().unwrap();
    assert_eq!(
        (&last["sequence"], &last["occurred_at"]),
        (&json!(7), &json!("2025-03-15T00:00:00Z"))
    );
}

#[tokio::test]
async fn rule_11_each_renewal_dated_at_its_own_instant() {
    // Several renewals between two reads, each dated at its scheduled instant.
    let server = Server::start().await;
    let wallet = server.wallet(0).await;
    let daily = server
        .grant_ok(
            &wallet,
            json!({"amount": "10", "purpose": "bundled", "recurrence": {"interval": "day"}, "rollover_max": "5"}),
        )
        .await;
    server.debit(&wallet, "8").await.ok();
    server.advance("2025-02-03T12:00:00Z").await;
    let balance = server.balance(&wallet).await;
    // Day 1: 2 left, all carried → 12; day 2: 12 left, 5 carried → 15; day 3: 15 → 5 + 10 = 15.
    assert_eq!(balance["balance"], "15");
    let renewals: Vec<(String, String)> = server
        .entries(&wallet)
        .await
        .iter()
        .filter(|e| {
            e["grant_id"] == daily.as_str() && (e["type"] == "renewal" || e["type"] == "expiry")
        })
        .map(|e| {
            (
                e["amount"].as_str().unwrap().to_string(),
                e["occurred_at"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        renewals,
        vec![
            ("10".to_string(), "2025-02-01T10:00:00Z".to_string()),
            ("-7".to_string(), "2025-02-02T10:00:00Z".to_string()),
            ("10".to_string(), "2025-02-02T10:00:00Z".to_string()),
            ("-10".to_string(), "2025-02-03T10:00:00Z".to_string()),
            ("10".to_string(), "2025-02-03T10:00:00Z".to_string()),
        ]
    );
}

// ---- rule 12: holds -------------------------------------------------------------

#[tokio::test]
async fn rule_12_hold_reserves_balance() {
    let server = Server::start().await;
    let wallet = server.wallet(0).await;
    let promotional = server
        .grant_ok(&wallet, json!({"amount": "30", "purpose": "promotional"}))
        .await;
    let paid = server
        .grant_ok(&wallet, json!({"amount": "100", "purpose": "paid"}))
        .await;
    let hold = server.hold(&wallet, json!({"amount": "50"})).await.ok();
    let id = hold.id();
    assert!(id.starts_with("hold_"), "{id}");
    assert_eq!(
        hold.body,
        json!({
            "id": id,
            "object": "hold",
            "wallet_id": wallet,
            "amount": "50",
            "status": "active",
            "reservations": [{"grant_id": promotional, "amount": "30"}, {"grant_id": paid, "amount": "20"}],
            "expires_at": "2025-01-31T10:10:00Z",
            "debit_id": null,
            "ended_at": null,
            "created_at": START,
        })
    );
    assert_eq!(
        server.get(&format!("/v1/holds/{id}")).await.ok().body,
        hold.body
    );
    let balance = server.balance(&wallet).await;
    assert_eq!(
        (
            &balance["balance"],
            &balance["held"],
            &balance["available"],
            &balance["spendable"]
        ),
        (&json!("130"), &json!("50"), &json!("80"), &json!("80"))
    );
    assert_eq!(balance["grants"][0]["held"], "30");
    assert_eq!(balance["grants"][1]["held"], "20");
    assert_eq!(server.get_grant(&paid).await["held"], "20");
    assert!(
        server
            .entries(&wallet)
            .await
            .iter()
            .all(|e| e["type"] == "grant"),
        "a hold writes no entry"
    );

    let before = server.snapshot(&wallet).await;
    assert_error(
        &server.debit(&wallet, "81").await,
        402,
        "insufficient_balance",
        None,
    );
    assert_error(
        &server.hold(&wallet, json!({"amount": "81"})).await,
        402,
        "insufficient_balance",
        None,
    );
    assert_eq!(server.snapshot(&wallet).await, before);
    let debit = server.debit(&wallet, "80").await.ok();
    assert_eq!(
        debit.body["allocations"],
        json!([{"grant_id": paid, "amount": "80"}]),
        "held balance is skipped"
    );
    assert_error(
        &server.hold(&wallet, json!({"amount": "1"})).await,
        402,
        "insufficient_balance",
        None,
    );
}

#[tokio::test]
async fn rule_12_hold_expiry_bounds() {
    let server = Server::start().await;
    let wallet = server.wallet(0).await;
    server
        .grant_ok(&wallet, json!({"amount": "100", "purpose": "paid"}))
        .await;
    let before = server.snapshot(&wallet).await;
    for seconds in [0, -1, 86401] {
        let response = server
            .hold(
                &wallet,
                json!({"amount": "1", "expires_in_seconds": seconds}),
            )
            .await;
        assert_error(
            &response,
            400,
            "parameter_invalid",
            Some("expires_in_seconds"),
        );
    }
    assert_eq!(server.snapshot(&wallet).await, before);
    let hold = server
        .hold(&wallet, json!({"amount": "1", "expires_in_seconds": 86400}))
        .await
        .ok();
    assert_eq!(hold.body["expires_at"], "2025-02-01T10:00:00Z");
    let hold = server
        .hold(&wallet, json!({"amount": "1", "expires_in_seconds": 1}))
        .await
        .ok();
    assert_eq!(hold.body["expires_at"], "2025-01-31T10:00:01Z");
}

#[tokio::test]
async fn rule_12_hold_may_reserve_overdraft() {
    let server = Server::start().await;
    let cs = server.credit_system("holdoverdraft", 0).await;
    let wallet = server.wallet_with_overdraft(&cs, "50").await;
    let g = server
        .grant_ok(&wallet, json!({"amount": "10", "purpose": "paid"}))
        .await;
    let hold = server.hold(&wallet, json!({"amount": "30"})).await.ok();
    assert_eq!(
        hold.body["reservations"],
        json!([{"grant_id": g, "amount": "10"}, {"grant_id": null, "amount": "20"}])
    );
    let balance = server.balance(&wallet).await;
    assert_eq!(
        (&balance["balance"], &balance["held"], &balance["debt"]),
        (&json!("10"), &json!("30"), &json!("0"))
    );
    // 30 of the 50 overdraft is reserved or the grant's: 30 more may be spent.
    assert_error(
        &server.debit(&wallet, "31").await,
        402,
        "insufficient_balance",
        None,
    );
    let captured = server
        .post(
            &format!("/v1/holds/{}/capture", hold.id()),
            json!({"amount": "30"}),
        )
        .await
        .ok();
    let debit = server
        .get(&format!("/v1/debits/{}", captured.str("debit_id")))
        .await
        .ok();
    assert_eq!(
        debit.body["allocations"],
        json!([{"grant_id": g, "amount": "10"}, {"grant_id": null, "amount": "20"}])
    );
    assert_eq!(debit.body["balance_after"], "-20");
    let balance = server.balance(&wallet).await;
    assert_eq!(
        (&balance["balance"], &balance["debt"], &balance["spendable"]),
        (&json!("-20"), &json!("20"), &json!("30"))
    );
    server.check_invariants(&wallet).await;
}

// ---- rule 13: capture and release -----------------------------------------------

#[tokio::test]
async fn rule_13_capture_less_equal_and_more_than_held() {
    let server = Server::start().await;
    let wallet = server.wallet(0).await;
    let g = server
        .grant_ok(&wallet, json!({"amount": "100", "purpose": "paid"}))
        .await;

    let hold = server
        .hold(&wallet, json!({"amount": "30"}))
        .await
        .ok()
        .id();
    let captured = server
        .post(
            &format!("/v1/holds/{hold}/capture"),
            json!({"amount": "20"}),
        )
        .await
        .ok();
    assert_eq!(captured.body["status"], "captured");
    assert_eq!(captured.body["ended_at"], START);
    let debit_id = captured.str("debit_id");
    let debit = server.get(&format!("/v1/debits/{debit_id}")).await.ok();
    assert_eq!(debit.body["amount"], "20");
    assert_eq!(
        debit.body["allocations"],
        json!([{"grant_id": g, "amount": "20"}])
    );
    assert_eq!(debit.body["balance_after"], "80");
    assert_eq!(debit.body["hold_id"], hold.as_str());
    let balance = server.balance(&wallet).await;
    assert_eq!(
        (&balance["balance"], &balance["held"], &balance["available"]),
        (&json!("80"), &json!("0"), &json!("80"))
    );
    assert_eq!(
        server.get(&format!("/v1/holds/{hold}")).await.ok().body,
        captured.body
    );

    let hold = server
        .hold(&wallet, json!({"amount": "30"}))
        .await
        .ok()
        .id();
    let captured = server
        .post(
            &format!("/v1/holds/{hold}/capture"),
            json!({"amount": "30"}),
        )
        .await
        .ok();
    let debit = server
        .get(&format!("/v1/debits/{}", captured.str("debit_id")))
        .await
        .ok();
    assert_eq!(debit.body["balance_after"], "50");

    // More than held: the excess is debited like a debit.
    let hold = server
        .hold(&wallet, json!({"amount": "30"}))
        .await
        .ok()
        .id();
    let captured = server
        .post(
            &format!("/v1/holds/{hold}/capture"),
            json!({"amount": "45"}),
        )
        .await
        .ok();
    let debit = server
        .get(&format!("/v1/debits/{}", captured.str("debit_id")))
        .await
        .ok();
    assert_eq!(debit.body["amount"], "45");
    assert_eq!(
        debit.body["allocations"],
        json!([{"grant_id": g, "amount": "45"}])
    );
    assert_eq!(debit.body["balance_after"], "5");

    // An excess that cannot be covered: 402 and the hold is untouched.
    let hold = server.hold(&wallet, json!({"amount": "5"})).await.ok();
    let before = server.snapshot(&wallet).await;
    let response = server
        .post(
            &format!("/v1/holds/{}/capture", hold.id()),
            json!({"amount": "6"}),
        )
        .await;
    assert_error(&response, 402, "insufficient_balance", None);
    assert_eq!(server.snapshot(&wallet).await, before);
    assert_eq!(
        server
            .get(&format!("/v1/holds/{}", hold.id()))
            .await
            .ok()
            .body,
        hold.body
    );

    // Release returns the reservation.
    let released = server
        .post(&format!("/v1/holds/{}/release", hold.id()), json!({}))
        .await
        .ok();
    assert_eq!(released.body["status"], "released");
    assert_eq!(released.body["debit_id"], Value::Null);
    assert_eq!(released.body["ended_at"], START);
    let balance = server.balance(&wallet).await;
    assert_eq!(
        (&balance["balance"], &balance["held"], &balance["available"]),
        (&json!("5"), &json!("0"), &json!("5"))
    );
    let before = server.snapshot(&wallet).await;
    let response = server
        .post(
            &format!("/v1/holds/{}/capture", hold.id()),
            json!({"amount": "1"}),
        )
        .await;
    assert_error(&response, 409, "hold_not_active", None);
    let response = server
        .post(&format!("/v1/holds/{}/release", hold.id()), json!({}))
        .await;
    assert_error(&response, 409, "hold_not_active", None);
    assert_eq!(server.snapshot(&wallet).await, before);
    let types: Vec<String> = server
        .ledger(&wallet)
        .await
        .into_iter()
        .map(|row| row.0)
        .collect();
    assert_eq!(types, vec!["grant", "debit", "debit", "debit"]);
    server.check_invariants(&wallet).await;
}

#[tokio::test]
async fn rule_13_capture_after_the_reserved_grant_expired() {
    let server = Server::start().await;
    let wallet = server.wallet(0).await;
    let promotional = server
        .grant_ok(&wallet, json!({"amount": "100", "purpose": "promotional", "expires_at": "2025-01-31T10:05:00Z"}))
        .await;
    server
        .grant_ok(&wallet, json!({"amount": "10", "purpose": "paid"}))
        .await;
    let hold = server.hold(&wallet, json!({"amount": "60"})).await.ok();
    assert_eq!(
        hold.body["reservations"],
        json!([{"grant_id": promotional, "amount": "60"}])
    );
    server.advance("2025-01-31T10:06:00Z").await;
    let balance = server.balance(&wallet).await;
    assert_eq!(
        (&balance["balance"], &balance["held"], &balance["available"]),
        (&json!("70"), &json!("60"), &json!("10"))
    );
    assert_eq!(server.get_grant(&promotional).await["status"], "expired");

    let captured = server
        .post(
            &format!("/v1/holds/{}/capture", hold.id()),
            json!({"amount": "50"}),
        )
        .await
        .ok();
    assert_eq!(captured.body["status"], "captured");
    let debit = server
        .get(&format!("/v1/debits/{}", captured.str("debit_id")))
        .await
        .ok();
    assert_eq!(
        debit.body["allocations"],
        json!([{"grant_id": promotional, "amount": "50"}])
    );
    assert_eq!(
        server.ledger(&wallet).await,
        ledger_rows(&[
            ("grant", "100", "100", START),
            ("grant", "10", "110", START),
            ("expiry", "-40", "70", "2025-01-31T10:05:00Z"),
            ("debit", "-50", "20", "2025-01-31T10:06:00Z"),
            ("expiry", "-10", "10", "2025-01-31T10:06:00Z"),
        ])
    );
    assert_eq!(server.get_grant(&promotional).await["remaining"], "0");
    server.check_invariants(&wallet).await;
}

#[tokio::test]
async fn rule_13_capture_after_the_reserved_grant_was_voided() {
    let server = Server::start().await;
    let wallet = server.wallet(0).await;
    let g = server
        .grant_ok(&wallet, json!({"amount": "100", "purpose": "paid"}))
        .await;
    let hold = server
        .hold(&wallet, json!({"amount": "60"}))
        .await
        .ok()
        .id();
    let voided = server
        .post(&format!("/v1/grants/{g}/void"), json!({}))
        .await
        .ok();
    assert_eq!(voided.body["status"], "voided");
    assert_eq!(
        (&voided.body["remaining"], &voided.body["held"]),
        (&json!("60"), &json!("60"))
    );
    assert_error(
        &server.debit(&wallet, "1").await,
        402,
        "insufficient_balance",
        None,
    );
    let captured = server
        .post(
            &format!("/v1/holds/{hold}/capture"),
            json!({"amount": "60"}),
        )
        .await
        .ok();
    let debit = server
        .get(&format!("/v1/debits/{}", captured.str("debit_id")))
        .await
        .ok();
    assert_eq!(
        debit.body["allocations"],
        json!([{"grant_id": g, "amount": "60"}])
    );
    assert_eq!(debit.body["balance_after"], "0");
    assert_eq!(
        server.ledger(&wallet).await,
        ledger_rows(&[
            ("grant", "100", "100", START),
            ("void", "-40", "60", START),
            ("debit", "-60", "0", START)
        ])
    );
    let grant = server.get_grant(&g).await;
    assert_eq!(
        (&grant["status"], &grant["remaining"], &grant["held"]),
        (&json!("voided"), &json!("0"), &json!("0"))
    );
    server.check_invariants(&wallet).await;
}

#[tokio::test]
async fn rule_13_release_and_expiry_forfeit_what_was_reserved_from_an_ended_grant() {
    let server = Server::start().await;
    let wallet = server.wallet(0).await;
    server
        .grant_ok(&wallet, json!({"amount": "100", "purpose": "promotional", "expires_at": "2025-01-31T10:05:00Z"}))
        .await;
    let released = server
        .hold(&wallet, json!({"amount": "60"}))
        .await
        .ok()
        .id();
    let expiring = server
        .hold(&wallet, json!({"amount": "30", "expires_in_seconds": 900}))
        .await
        .ok()
        .id();
    server.advance("2025-01-31T10:06:00Z").await;
    server
        .post(&format!("/v1/holds/{released}/release"), json!({}))
        .await
        .ok();
    server.advance("2025-01-31T10:30:00Z").await;
    let hold = server.get(&format!("/v1/holds/{expiring}")).await.ok();
    assert_eq!(
        (&hold.body["status"], &hold.body["ended_at"]),
        (&json!("expired"), &json!("2025-01-31T10:15:00Z"))
    );
    assert_eq!(
        server.ledger(&wallet).await,
        ledger_rows(&[
            ("grant", "100", "100", START),
            ("expiry", "-10", "90", "2025-01-31T10:05:00Z"),
            ("expiry", "-60", "30", "2025-01-31T10:06:00Z"),
            ("expiry", "-30", "0", "2025-01-31T10:15:00Z"),
        ])
    );
    server.check_invariants(&wallet).await;
}

#[tokio::test]
async fn rule_13_hold_expires_and_returns_its_reservation() {
    let server = Server::start().await;
    let wallet = server.wallet(0).await;
    server
        .grant_ok(&wallet, json!({"amount": "100", "purpose": "paid"}))
        .await;
    let hold = server
        .hold(&wallet, json!({"amount": "60", "expires_in_seconds": 60}))
        .await
        .ok()
        .id();
    server.advance("2025-01-31T10:00:59Z").await;
    assert_eq!(
        server
            .get(&format!("/v1/holds/{hold}"))
            .await
            .ok()
            .str("status"),
        "active"
    );
    // Half-open: at expires_at the hold is over.
    server.advance("2025-01-31T10:01:00Z").await;
    let body = server.get(&format!("/v1/holds/{hold}")).await.ok().body;
    assert_eq!(body["status"], "expired");
    assert_eq!(body["ended_at"], "2025-01-31T10:01:00Z");
    assert_eq!(body["debit_id"], Value::Null);
    let balance = server.balance(&wallet).await;
    assert_eq!(
        (&balance["balance"], &balance["held"], &balance["available"]),
        (&json!("100"), &json!("0"), &json!("100"))
    );
    let before = server.snapshot(&wallet).await;
    let response = server
        .post(
            &format!("/v1/holds/{hold}/capture"),
            json!({"amount": "10"}),
        )
        .await;
    assert_error(&response, 409, "hold_not_active", None);
    assert_eq!(server.snapshot(&wallet).await, before);
    assert_eq!(
        server.ledger(&wallet).await.len(),
        1,
        "an expired hold on a live grant writes no entry"
    );
}

// ---- rule 14: void --------------------------------------------------------------

#[tokio::test]
async fn rule_14_void_forfeits_the_remainder_and_ends_recurrence() {
    let server = Server::start().await;
    let wallet = server.wallet(0).await;
    let paid = server
        .grant_ok(&wallet, json!({"amount": "100", "purpose": "paid"}))
        .await;
    let monthly = server
        .grant_ok(
            &wallet,
            json!({"amount": "50", "purpose": "bundled", "recurrence": {"interval": "month"}}),
        )
        .await;
    server.debit(&wallet, "80").await.ok(); // 50 bundled, 30 paid
    let voided = server
        .post(&format!("/v1/grants/{paid}/void"), json!({}))
        .await
        .ok();
    assert_eq!(voided.body["status"], "voided");
    assert_eq!(voided.body["remaining"], "0");
    assert_eq!(voided.body["ended_at"], START);
    assert_eq!(server.get_grant(&paid).await, voided.body);
    let before = server.snapshot(&wallet).await;
    let response = server
        .post(&format!("/v1/grants/{paid}/void"), json!({}))
        .await;
    assert_error(&response, 409, "grant_already_ended", None);
    assert_eq!(server.snapshot(&wallet).await, before);

    server.advance("2025-02-01T00:00:00Z").await;
    let voided = server
        .post(&format!("/v1/grants/{monthly}/void"), json!({}))
        .await
        .ok();
    assert_eq!(voided.body["next_renewal_at"], Value::Null);
    assert_eq!(voided.body["ended_at"], "2025-02-01T00:00:00Z");
    server.advance("2025-04-01T00:00:00Z").await;
    assert_eq!(
        server.ledger(&wallet).await,
        ledger_rows(&[
            ("grant", "100", "100", START),
            ("grant", "50", "150", START),
            ("debit", "-50", "100", START),
            ("debit", "-30", "70", START),
            ("void", "-70", "0", START),
        ]),
        "a voided, depleted recurring grant never renews"
    );
    let grant = server.get_grant(&monthly).await;
    assert_eq!(
        (&grant["status"], &grant["remaining"]),
        (&json!("voided"), &json!("0"))
    );
    let voided = server
        .get(&format!("/v1/wallets/{wallet}/grants?status=voided"))
        .await
        .ok()
        .body;
    assert_eq!(ids(&voided), vec![monthly, paid]);
    assert_error(
        &server
            .post("/v1/grants/gr_01JZZZZZZZZZZZZZZZZZZZZZZZ/void", json!({}))
            .await,
        404,
        "resource_not_found",
        None,
    );
}

#[tokio::test]
async fn rule_14_void_keeps_held_balance_capturable_then_forfeits_it_on_release() {
    let server = Server::start().await;
    let wallet = server.wallet(0).await;
    let g = server
        .grant_ok(&wallet, json!({"amount": "100", "purpose": "paid"}))
        .await;
    let hold = server
        .hold(&wallet, json!({"amount": "40"}))
        .await
        .ok()
        .id();
    server
        .post(&format!("/v1/grants/{g}/void"), json!({}))
        .await
        .ok();
    server
        .post(&format!("/v1/holds/{hold}/release"), json!({}))
        .await
        .ok();
    assert_eq!(
        server.ledger(&wallet).await,
        ledger_rows(&[
            ("grant", "100", "100", START),
            ("void", "-60", "40", START),
            ("void", "-40", "0", START)
        ])
    );
    server.check_invariants(&wallet).await;
}

#[tokio::test]
async fn rule_14_void_of_scheduled_expired_and_depleted_grants() {
    let server = Server::start().await;
    let wallet = server.wallet(0).await;
    let scheduled = server
        .grant_ok(
            &wallet,
            json!({"amount": "50", "purpose": "paid", "effective_at": "2025-02-01T00:00:00Z"}),
        )
        .await;
    let expiring = server
        .grant_ok(
            &wallet,
            json!({"amount": "5", "purpose": "promotional", "expires_at": "2025-01-31T11:00:00Z"}),
        )
        .await;
    let depleted = server
        .grant_ok(&wallet, json!({"amount": "3", "purpose": "bundled"}))
        .await;
    server.debit(&wallet, "8").await.ok();
    let voided = server
        .post(&format!("/v1/grants/{scheduled}/void"), json!({}))
        .await
        .ok();
    assert_eq!(
        (&voided.body["status"], &voided.body["remaining"]),
        (&json!("voided"), &json!("0"))
    );
    let voided = server
        .post(&format!("/v1/grants/{depleted}/void"), json!({}))
        .await
        .ok();
    assert_eq!(voided.body["status"], "voided");
    server.advance("2025-02-02T00:00:00Z").await;
    let response = server
        .post(&format!("/v1/grants/{expiring}/void"), json!({}))
        .await;
    assert_error(&response, 409, "grant_already_ended", None);
    assert_eq!(
        server.get_grant(&scheduled).await["status"],
        "voided",
        "a voided scheduled grant never arrives"
    );
    assert_eq!(
        server.ledger(&wallet).await,
        ledger_rows(&[
            ("grant", "5", "5", START),
            ("grant", "3", "8", START),
            ("debit", "-5", "3", START),
            ("debit", "-3", "0", START),
        ])
    );
    assert_eq!(server.balance(&wallet).await["balance"], "0");
}

// ---- rule 15: entries -----------------------------------------------------------

#[tokio::test]
async fn rule_15_entries_are_typed_gapless_and_immutable() {
    let server = Server::start().await;
    let cs = server.credit_system("entries", 2).await;
    let wallet = server.wallet_with_overdraft(&cs, "10").await;
    let monthly = server
        .grant_ok(
            &wallet,
            json!({"amount": "20", "purpose": "bundled", "recurrence": {"interval": "month"}}),
        )
        .await;
    let expiring = server
        .grant_ok(&wallet, json!({"amount": "5.5", "purpose": "promotional", "expires_at": "2025-02-01T00:00:00Z"}))
        .await;
    let voided = server
        .grant_ok(
            &wallet,
            json!({"amount": "3", "purpose": "paid", "priority": 99}),
        )
        .await;
    server
        .post(&format!("/v1/grants/{voided}/void"), json!({}))
        .await
        .ok();
    let debit = server.debit(&wallet, "1.25").await.ok().id();
    let hold = server.hold(&wallet, json!({"amount": "2"})).await.ok().id();
    let captured = server
        .post(&format!("/v1/holds/{hold}/capture"), json!({"amount": "2"}))
        .await
        .ok();
    let capture_debit = captured.str("debit_id");
    server.advance("2025-02-15T00:00:00Z").await;
    let overdraft = server.debit(&wallet, "25").await.ok().id(); // 20 from the allowance, 5 into debt
    let early = server.entries(&wallet).await;
    server.advance("2025-03-01T00:00:00Z").await; // renewal repays the debt

    let entries = server.entries(&wallet).await;
    assert_eq!(
        &entries[..early.len()],
        &early[..],
        "entries are never updated or deleted"
    );
    let allowed = [
        "grant",
        "renewal",
        "debit",
        "expiry",
        "void",
        "repayment",
        "adjustment",
    ];
    let mut seen = std::collections::BTreeSet::new();
    for (index, entry) in entries.iter().enumerate() {
        let keys: std::collections::BTreeSet<&str> = entry
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        for field in [
            "id",
            "object",
            "wallet_id",
            "sequence",
            "type",
            "amount",
            "balance_after",
            "occurred_at",
            "grant_id",
            "reference",
        ] {
            assert!(keys.contains(field), "{field} in {entry}");
        }
        assert!(entry["id"].as_str().unwrap().starts_with("ent_"));
        assert_eq!(entry["object"], "entry");
        assert_eq!(entry["wallet_id"], wallet.as_str());
        assert_eq!(entry["sequence"], json!(index + 1));
        let kind = entry["type"].as_str().unwrap();
        assert!(allowed.contains(&kind), "{kind}");
        seen.insert(kind.to_string());
        assert!(entry["amount"].is_string() && entry["balance_after"].is_string());
        let reference = entry["reference"].as_str().unwrap();
        match kind {
            "grant" | "renewal" | "expiry" | "void" => {
                assert_eq!(entry["grant_id"].as_str(), Some(reference), "{entry}")
            }
            "debit" => assert!(reference.starts_with("deb_"), "{entry}"),
            _ => assert!(!reference.is_empty()),
        }
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        vec!["debit", "expiry", "grant", "renewal", "repayment", "void"]
    );
    let refs = |reference: &str| {
        entries
            .iter()
            .filter(|e| e["reference"] == reference)
            .count()
    };
    assert_eq!(refs(&debit), 1);
    assert_eq!(
        refs(&capture_debit),
        1,
        "a capture's entries reference its debit"
    );
    assert!(
        refs(&overdraft) >= 2,
        "the overdraft debit has a grant part and a debt part"
    );
    assert!(
        entries
            .iter()
            .any(|e| e["reference"] == overdraft.as_str() && e["grant_id"].is_null())
    );
    assert!(
        entries
            .iter()
            .any(|e| e["type"] == "repayment" && e["grant_id"].is_null())
    );
    assert!(
        entries
            .iter()
            .any(|e| e["type"] == "renewal" && e["grant_id"] == monthly.as_str())
    );
    assert!(
        entries
            .iter()
            .any(|e| e["type"] == "expiry" && e["grant_id"] == expiring.as_str())
    );

    // Default order is newest first, and paging walks every entry once.
    let newest = server
        .get(&format!("/v1/wallets/{wallet}/entries"))
        .await
        .ok()
        .body;
    assert_eq!(newest["data"][0]["sequence"], json!(entries.len()));
    let mut paged = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = server
            .get(&format!("/v1/wallets/{wallet}/entries?limit=3{cursor}"))
            .await
            .ok()
            .body;
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= 3);
        paged.extend(data.iter().map(|e| e["sequence"].as_u64().unwrap()));
        if !page["has_more"].as_bool().unwrap() {
            break;
        }
        cursor = format!(
            "&starting_after={}",
            data.last().unwrap()["id"].as_str().unwrap()
        );
    }
    assert_eq!(paged, (1..=entries.len() as u64).rev().collect::<Vec<_>>());
    server.check_invariants(&wallet).await;
}

// ---- rule 16: invariants --------------------------------------------------------

#[tokio::test]
async fn rule_16_invariants_hold_after_every_step() {
    let server = Server::start().await;
    let cs = server.credit_system("invariants", 3).await;
    let wallet = server.wallet_with_overdraft(&cs, "7.5").await;
    server.check_invariants(&wallet).await;
    let steps: Vec<(&str, Value)> = vec![
        (
            "grant",
            json!({"amount": "12.345", "purpose": "promotional", "expires_at": "2025-02-01T00:00:00Z"}),
        ),
        (
            "grant",
            json!({"amount": "40", "purpose": "bundled", "recurrence": {"interval": "week"}, "rollover_max": "5"}),
        ),
        (
            "grant",
            json!({"amount": "9.999", "purpose": "paid", "effective_at": "2025-02-03T00:00:00Z"}),
        ),
        ("debit", json!({"amount": "20.5"})),
        ("hold", json!({"amount": "15"})),
        ("advance", json!("2025-01-31T10:05:00Z")),
        ("debit", json!({"amount": "30"})),
        ("advance", json!("2025-02-04T00:00:00Z")),
        ("debit", json!({"amount": "3.001"})),
        ("hold", json!({"amount": "4"})),
        ("advance", json!("2025-02-08T00:00:00Z")),
        ("debit", json!({"amount": "50"})),
        ("grant", json!({"amount": "1.5", "purpose": "paid"})),
        ("advance", json!("2025-03-01T00:00:00Z")),
    ];
    for (step, body) in steps {
        match step {
            "grant" => {
                server.grant(&wallet, body).await.ok();
            }
            "debit" => {
                let response = server
                    .post(&format!("/v1/wallets/{wallet}/debits"), body)
                    .await;
                assert!(
                    [200, 402].contains(&response.status.as_u16()),
                    "{}",
                    response.body
                );
            }
            "hold" => {
                server.hold(&wallet, body).await.ok();
            }
            _ => server.advance(body.as_str().unwrap()).await,
        }
        let balance = server.balance(&wallet).await;
        let entries = server.entries(&wallet).await;
        let grants = server.grants(&wallet).await;
        server.check_invariants_of(&balance, &entries, &grants);
        let by_purpose: i128 = ["promotional", "bundled", "paid"]
            .iter()
            .map(|p| atomic(balance["by_purpose"][p].as_str().unwrap()))
            .sum();
        assert_eq!(
            by_purpose - atomic(balance["debt"].as_str().unwrap()),
            atomic(balance["balance"].as_str().unwrap())
        );
    }
}

// ---- rule 17: the past, from the ledger -----------------------------------------

#[tokio::test]
async fn rule_17_balance_at_a_past_instant() {
    let server = Server::start().await;
    let wallet = server.wallet(0).await;
    server
        .grant_ok(&wallet, json!({"amount": "100", "purpose": "paid"}))
        .await;
    let promotional = server
        .grant_ok(
            &wallet,
            json!({"amount": "50", "purpose": "promotional", "expires_at": "2025-02-01T00:00:00Z"}),
        )
        .await;
    server.advance("2025-01-31T11:00:00Z").await;
    server.debit(&wallet, "30").await.ok();
    server.advance("2025-02-02T00:00:00Z").await;
    server.debit(&wallet, "10").await.ok();

    let at = |instant: &str| format!("/v1/wallets/{wallet}/balance?at={instant}");
    let then = server.get(&at("2025-01-31T10:30:00Z")).await.ok().body;
    assert_eq!(then["at"], "2025-01-31T10:30:00Z");
    assert_eq!(then["balance"], "150");
    assert_eq!(
        then["by_purpose"],
        json!({"promotional": "50", "bundled": "0", "paid": "100"})
    );
    let then = server.get(&at("2025-01-31T12:00:00Z")).await.ok().body;
    assert_eq!(then["balance"], "120");
    assert_eq!(
        then["by_purpose"],
        json!({"promotional": "20", "bundled": "0", "paid": "100"})
    );
    assert!(
        then["grants"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["id"] == promotional.as_str() && g["remaining"] == "20")
    );
    let then = server.get(&at("2025-02-01T12:00:00Z")).await.ok().body;
    assert_eq!(then["balance"], "100");
    assert_eq!(
        then["by_purpose"],
        json!({"promotional": "0", "bundled": "0", "paid": "100"})
    );
    // An instant includes what happened at it, as validity is half-open.
    assert_eq!(server.get(&at(START)).await.ok().body["balance"], "150");
    assert_eq!(
        server.get(&at("2025-01-31T11:00:00Z")).await.ok().body["balance"],
        "120"
    );
    assert_eq!(
        server.get(&at("2025-01-31T10:59:59Z")).await.ok().body["balance"],
        "150"
    );
    assert_eq!(
        server.get(&at("2025-02-01T00:00:00Z")).await.ok().body["balance"],
        "100"
    );
    assert_eq!(
        server.get(&at("2025-01-31T23:59:59Z")).await.ok().body["balance"],
        "120"
    );
    let then = server.get(&at("2025-01-01T00:00:00Z")).await.ok().body;
    assert_eq!(then["balance"], "0", "before anything happened");
    assert_eq!(server.balance(&wallet).await["balance"], "90");

    assert_error(
        &server.get(&at("2025-02-03T00:00:00Z")).await,
        400,
        "parameter_invalid",
        Some("at"),
    );
    assert_error(
        &server.get(&at("yesterday")).await,
        400,
        "parameter_invalid",
        Some("at"),
    );
}

// ---- rule 18: idempotency -------------------------------------------------------

#[tokio::test]
async fn rule_18_same_key_same_request_replays_and_changes_nothing() {
    let server = Server::start().await;
    let wallet = server.wallet(0).await;
    let path = format!("/v1/wallets/{wallet}/grants");
    let first = server
        .post_key(
            &path,
            json!({"amount": "100", "purpose": "paid"}),
            "grant-1",
        )
        .await
        .ok();
    assert!(first.headers.get("idempotent-replayed").is_none());
    let again = server
        .post_key(
            &path,
            json!({"amount": "100", "purpose": "paid"}),
            "grant-1",
        )
        .await
        .ok();
    assert_eq!(again.headers.get("idempotent-replayed").unwrap(), "true");
    assert_eq!(again.body, first.body);
    assert_eq!(server.grants(&wallet).await.len(), 1);

    let debits = format!("/v1/wallets/{wallet}/debits");
    let first = server
        .post_key(&debits, json!({"amount": "30"}), "debit-1")
        .await
        .ok();
    let before = server.snapshot(&wallet).await;
    server.advance("2025-01-31T11:00:00Z").await;
    let again = server
        .post_key(&debits, json!({"amount": "30"}), "debit-1")
        .await
        .ok();
    assert_eq!(again.headers.get("idempotent-replayed").unwrap(), "true");
    assert_eq!(
        again.body, first.body,
        "the first response, created_at included"
    );
    assert_eq!(
        server.snapshot(&wallet).await,
        before,
        "a replay changes nothing"
    );

    // A refused first attempt is replayed as refused, even once it would succeed.
    let refused = server
        .post_key(&debits, json!({"amount": "500"}), "debit-2")
        .await;
    assert_error(&refused, 402, "insufficient_balance", None);
    server
        .grant_ok(&wallet, json!({"amount": "1000", "purpose": "paid"}))
        .await;
    let before = server.snapshot(&wallet).await;
    let again = server
        .post_key(&debits, json!({"amount": "500"}), "debit-2")
        .await;
    assert_eq!(again.status.as_u16(), 402);
    assert_eq!(again.headers.get("idempotent-replayed").unwrap(), "true");
    assert_eq!(again.body, refused.body);
    assert_eq!(server.snapshot(&wallet).await, before);

    // Customers, holds and captures replay too.
    let customer = server
        .post_key("/v1/customers", json!({"name": "Ada"}), "customer-1")
        .await
        .ok();
    let again = server
        .post_key("/v1/customers", json!({"name": "Ada"}), "customer-1")
        .await
        .ok();
    assert_eq!(again.id(), customer.id());
    let hold = server
        .post_key(
            &format!("/v1/wallets/{wallet}/holds"),
            json!({"amount": "5"}),
            "hold-1",
        )
        .await
        .ok();
    let again = server
        .post_key(
            &format!("/v1/wallets/{wallet}/holds"),
            json!({"amount": "5"}),
            "hold-1",
        )
        .await
        .ok();
    assert_eq!(again.id(), hold.id());
    assert_eq!(server.balance(&wallet).await["held"], "5");
    let capture = format!("/v1/holds/{}/capture", hold.id());
    let first = server
        .post_key(&capture, json!({"amount": "5"}), "capture-1")
        .await
        .ok();
    let again = server
        .post_key(&capture, json!({"amount": "5"}), "capture-1")
        .await
        .ok();
    assert_eq!(again.headers.get("idempotent-replayed").unwrap(), "true");
    assert_eq!(again.body, first.body);
    assert_eq!(server.balance(&wallet).await["balance"], "1065");
    server.check_invariants(&wallet).await;

    // Void, release, wallets and credit systems replay too.
    let grant = server
        .grant_ok(&wallet, json!({"amount": "1", "purpose": "paid"}))
        .await;
    let void = format!("/v1/grants/{grant}/void");
    let first = server.post_key(&void, json!({}), "void-1").await.ok();
    let again = server.post_key(&void, json!({}), "void-1").await.ok();
    assert_eq!(
        (
            again
                .headers
                .get("idempotent-replayed")
                .unwrap()
                .to_str()
                .unwrap(),
            &again.body
        ),
        ("true", &first.body)
    );
    let hold = server.hold(&wallet, json!({"amount": "1"})).await.ok().id();
    let release = format!("/v1/holds/{hold}/release");
    let first = server.post_key(&release, json!({}), "release-1").await.ok();
    let again = server.post_key(&release, json!({}), "release-1").await.ok();
    assert_eq!(
        (
            again
                .headers
                .get("idempotent-replayed")
                .unwrap()
                .to_str()
                .unwrap(),
            &again.body
        ),
        ("true", &first.body)
    );
    let cs = json!({"key": "replayed", "name": "Replayed", "unit": "credits"});
    let first = server
        .post_key("/v1/credit_systems", cs.clone(), "cs-1")
        .await
        .ok();
    let again = server.post_key("/v1/credit_systems", cs, "cs-1").await.ok();
    assert_eq!(again.id(), first.id());
    let body = json!({"customer_id": customer.id(), "credit_system_id": first.id()});
    let created = server
        .post_key("/v1/wallets", body.clone(), "wallet-1")
        .await
        .ok();
    let again = server.post_key("/v1/wallets", body, "wallet-1").await.ok();
    assert_eq!(
        (
            again
                .headers
                .get("idempotent-replayed")
                .unwrap()
                .to_str()
                .unwrap(),
            again.id()
        ),
        ("true", created.id())
    );
}

#[tokio::test]
async fn rule_18_keys_are_kept_at_least_24_hours() {
    let server = Server::start().await;
    let wallet = server.wallet(0).await;
    server
        .grant_ok(&wallet, json!({"amount": "100", "purpose": "paid"}))
        .await;
    let debits = format!("/v1/wallets/{wallet}/debits");
    let first = server
        .post_key(&debits, json!({"amount": "10"}), "day-old")
        .await
        .ok();
    server.advance("2025-02-01T09:59:59Z").await;
    let again = server
        .post_key(&debits, json!({"amount": "10"}), "day-old")
        .await
        .ok();
    assert_eq!(again.headers.get("idempotent-replayed").unwrap(), "true");
    assert_eq!(again.body, first.body);
    server.advance("2025-02-01T10:00:01Z").await;
    let again = server
        .post_key(&debits, json!({"amount": "10"}), "day-old")
        .await
        .ok();
    assert_eq!(again.body, first.body, "still kept after 24 hours");
    assert_eq!(server.balance(&wallet).await["balance"], "90");
}

#[tokio::test]
async fn rule_18_same_key_different_request_is_refused() {
    let server = Server::start().await;
    let wallet = server.wallet(0).await;
    server
        .grant_ok(&wallet, json!({"amount": "100", "purpose": "paid"}))
        .await;
    let debits = format!("/v1/wallets/{wallet}/debits");
    server
        .post_key(&debits, json!({"amount": "10"}), "k")
        .await
        .ok();
    let other = server.wallet(0).await;
    let before = server.snapshot(&wallet).await;
    let response = server.post_key(&debits, json!({"amount": "11"}), "k").await;
    assert_error(&response, 409, "idempotency_key_reused", None);
    let response = server
        .post_key(
            &debits,
            json!({"amount": "10", "description": "other"}),
            "k",
        )
        .await;
    assert_error(&response, 409, "idempotency_key_reused", None);
    let response = server
        .post_key(
            &format!("/v1/wallets/{other}/debits"),
            json!({"amount": "10"}),
            "k",
        )
        .await;
    assert_error(&response, 409, "idempotency_key_reused", None);
    let response = server
        .post_key(
            &format!("/v1/wallets/{wallet}/grants"),
            json!({"amount": "10", "purpose": "paid"}),
            "k",
        )
        .await;
    assert_error(&response, 409, "idempotency_key_reused", None);
    assert_eq!(server.snapshot(&wallet).await, before);
    assert!(server.grants(&other).await.is_empty());
    // The original still replays.
    let again = server
        .post_key(&debits, json!({"amount": "10"}), "k")
        .await
        .ok();
    assert_eq!(again.headers.get("idempotent-replayed").unwrap(), "true");
}

#[tokio::test]
async fn rule_18_batch_items_carry_their_own_keys() {
    let server = Server::start().await;
    let wallet = server.wallet(0).await;
    server
        .grant_ok(&wallet, json!({"amount": "100", "purpose": "paid"}))
        .await;
    let batch = json!({"debits": [
        {"wallet_id": wallet, "amount": "10", "idempotency_key": "item-1"},
        {"wallet_id": wallet, "amount": "20", "idempotency_key": "item-2", "description": "second"},
    ]});
    let first = server.post("/v1/debits/batch", batch.clone()).await.ok();
    assert_eq!(first.body["data"][1]["debit"]["balance_after"], "70");
    // A key repeated inside one batch: the repeat replays the item
    // applied a moment before, in the same commit.
    let repeated = json!({"debits": [
        {"wallet_id": wallet, "amount": "5", "idempotency_key": "item-3"},
        {"wallet_id": wallet, "amount": "5", "idempotency_key": "item-3"},
    ]});
    let results = server.post("/v1/debits/batch", repeated).await.ok();
    assert_eq!(results.body["data"][0]["debit"]["balance_after"], "65");
    assert_eq!(
        results.body["data"][1]["debit"], results.body["data"][0]["debit"],
        "the repeat is the same debit"
    );
    let before = server.snapshot(&wallet).await;
    let again = server.post("/v1/debits/batch", batch.clone()).await.ok();
    assert_eq!(again.body, first.body, "each item replays");
    assert_eq!(server.snapshot(&wallet).await, before);

    // A batch item's key used as a single debit's Idempotency-Key replays that item.
    let debits = format!("/v1/wallets/{wallet}/debits");
    let single = server
        .post_key(&debits, json!({"amount": "10"}), "item-1")
        .await
        .ok();
    assert_eq!(single.headers.get("idempotent-replayed").unwrap(), "true");
    assert_eq!(single.body, first.body["data"][0]["debit"]);
    let single = server
        .post_key(
            &debits,
            json!({"amount": "20", "description": "second"}),
            "item-2",
        )
        .await
        .ok();
    assert_eq!(single.body, first.body["data"][1]["debit"]);
    assert_eq!(server.snapshot(&wallet).await, before);
    let response = server
        .post_key(&debits, json!({"amount": "21"}), "item-2")
        .await;
    assert_error(&response, 409, "idempotency_key_reused", None);

    // And a single debit's key used by a batch item replays the single debit.
    let single = server
        .post_key(&debits, json!({"amount": "5"}), "single-1")
        .await
        .ok();
    let before = server.snapshot(&wallet).await;
    let batch = json!({"debits": [
        {"wallet_id": wallet, "amount": "5", "idempotency_key": "single-1"},
        {"wallet_id": wallet, "amount": "6", "idempotency_key": "item-1"},
    ]});
    let results = server.post("/v1/debits/batch", batch).await.ok();
    assert_eq!(
        results.body["data"][0],
        json!({"status": 200, "debit": single.body})
    );
    assert_eq!(results.body["data"][1]["status"], 409);
    assert_eq!(
        results.body["data"][1]["error"]["code"],
        "idempotency_key_reused"
    );
    assert_eq!(server.snapshot(&wallet).await, before);
}

#[tokio::test]
async fn rule_18_batch_request_with_its_own_header_key_replays() {
    let server = Server::start().await;
    let wallet = server.wallet(0).await;
    server
        .grant_ok(&wallet, json!({"amount": "100", "purpose": "paid"}))
        .await;
    let batch = json!({"debits": [{"wallet_id": wallet, "amount": "10", "idempotency_key": "a"}]});
    let first = server
        .post_key("/v1/debits/batch", batch.clone(), "batch-1")
        .await
        .ok();
    let again = server
        .post_key("/v1/debits/batch", batch, "batch-1")
        .await
        .ok();
    assert_eq!(again.headers.get("idempotent-replayed").unwrap(), "true");
    assert_eq!(again.body, first.body);
    let other = json!({"debits": [{"wallet_id": wallet, "amount": "10", "idempotency_key": "b"}]});
    assert_error(
        &server.post_key("/v1/debits/batch", other, "batch-1").await,
        409,
        "idempotency_key_reused",
        None,
    );
    assert_eq!(server.balance(&wallet).await["balance"], "90");
}

// ---- §3 API shapes --------------------------------------------------------------

#[tokio::test]
async fn batch_debit_results_one_per_item_in_order() {
    let server = Server::start().await;
    let wallet = server.wallet(2).await;
    let g = server
        .grant_ok(&wallet, json!({"amount": "50", "purpose": "paid"}))
        .await;
    let other = server.wallet(0).await;
    let missing = "wal_01JZZZZZZZZZZZZZZZZZZZZZZZ";
    let results = server
        .post(
            "/v1/debits/batch",
            json!({"debits": [
                {"wallet_id": wallet, "amount": "10.5", "idempotency_key": "b1", "description": "first"},
                {"wallet_id": wallet, "amount": "100", "idempotency_key": "b2"},
                {"wallet_id": missing, "amount": "1", "idempotency_key": "b3"},
                {"wallet_id": wallet, "amount": "1.005", "idempotency_key": "b4"},
                {"wallet_id": other, "amount": "1", "idempotency_key": "b5"},
                {"wallet_id": wallet, "amount": "39.5", "idempotency_key": "b6"},
            ]}),
        )
        .await
        .ok();
    let data = results.body["data"].as_array().unwrap();
    assert_eq!(
        results.body.as_object().unwrap().len(),
        1,
        "{}",
        results.body
    );
    assert_eq!(data.len(), 6);
    assert_eq!(data[0]["status"], 200);
    let debit = &data[0]["debit"];
    assert_eq!(debit["object"], "debit");
    assert_eq!(debit["amount"], "10.5");
    assert_eq!(debit["description"], "first");
    assert_eq!(
        debit["allocations"],
        json!([{"grant_id": g, "amount": "10.5"}])
    );
    assert_eq!(debit["balance_after"], "39.5");
    assert_eq!(
        server
            .get(&format!("/v1/debits/{}", debit["id"].as_str().unwrap()))
            .await
            .ok()
            .body,
        *debit
    );
    assert!(data[0].get("error").is_none());
    let expect_error = |index: usize, status: u16, code: &str| {
        assert_eq!(data[index]["status"], status, "{}", data[index]);
        assert_eq!(data[index]["error"]["code"], code, "{}", data[index]);
        assert!(
            data[index]["error"]["type"].is_string() && data[index]["error"]["message"].is_string()
        );
        assert!(data[index].get("debit").is_none());
    };
    expect_error(1, 402, "insufficient_balance");
    expect_error(2, 404, "resource_not_found");
    expect_error(3, 400, "parameter_invalid");
    assert_eq!(data[3]["error"]["param"], "amount");
    expect_error(4, 402, "insufficient_balance");
    assert_eq!(data[5]["status"], 200);
    assert_eq!(data[5]["debit"]["balance_after"], "0");
    assert_eq!(server.balance(&wallet).await["balance"], "0");
    assert!(server.entries(&other).await.is_empty());
    server.check_invariants(&wallet).await;

    // 1000 items is the most a batch takes.
    let full = server.wallet(0).await;
    server
        .grant_ok(&full, json!({"amount": "1000", "purpose": "paid"}))
        .await;
    let items: Vec<Value> = (0..1000)
        .map(|i| json!({"wallet_id": full, "amount": "1", "idempotency_key": format!("full-{i}")}))
        .collect();
    let results = server
        .post("/v1/debits/batch", json!({ "debits": items }))
        .await
        .ok();
    let data = results.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 1000);
    assert!(data.iter().all(|r| r["status"] == 200));
    assert_eq!(data[999]["debit"]["balance_after"], "0");
    assert_eq!(server.entries(&full).await.len(), 1001);

    let before = server.snapshot(&wallet).await;
    assert_error(
        &server.post("/v1/debits/batch", json!({"debits": []})).await,
        400,
        "parameter_invalid",
        Some("debits"),
    );
    let too_many: Vec<Value> = (0..1001)
        .map(
            |i| json!({"wallet_id": wallet, "amount": "1", "idempotency_key": format!("many-{i}")}),
        )
        .collect();
    let response = server
        .post("/v1/debits/batch", json!({ "debits": too_many }))
        .await;
    assert_error(&response, 400, "parameter_invalid", Some("debits"));
    let response = server
        .post(
            "/v1/debits/batch",
            json!({"debits": [{"wallet_id": wallet, "amount": "1", "idempotency_key": ""}]}),
        )
        .await;
    assert_error(
        &response,
        400,
        "parameter_invalid",
        Some("debits[0].idempotency_key"),
    );
    let response = server
        .post(
            "/v1/debits/batch",
            json!({"debits": [{"wallet_id": wallet, "amount": "1"}]}),
        )
        .await;
    assert_error(
        &response,
        400,
        "parameter_missing",
        Some("debits[0].idempotency_key"),
    );
    assert_eq!(server.snapshot(&wallet).await, before);
}

#[tokio::test]
async fn lists_page_newest_first() {
    let server = Server::start().await;
    let mut created = Vec::new();
    for i in 0..5 {
        created.push(server.customer(&format!("Pager {i}")).await);
    }
    created.reverse(); // newest first
    let page = server.get("/v1/customers?limit=2").await.ok().body;
    assert_eq!(page["object"], "list");
    assert_eq!(ids(&page), created[..2].to_vec());
    assert_eq!(page["has_more"], true);
    let page = server
        .get(&format!(
            "/v1/customers?limit=2&starting_after={}",
            created[1]
        ))
        .await
        .ok()
        .body;
    assert_eq!(ids(&page), created[2..4].to_vec());
    assert_eq!(page["has_more"], true);
    let page = server
        .get(&format!(
            "/v1/customers?limit=2&starting_after={}",
            created[3]
        ))
        .await
        .ok()
        .body;
    assert_eq!(ids(&page), created[4..].to_vec());
    assert_eq!(page["has_more"], false);
    let page = server.get("/v1/customers?limit=5").await.ok().body;
    assert_eq!(ids(&page), created);
    assert_eq!(page["has_more"], false, "exactly limit items and no more");
    let page = server.get("/v1/customers").await.ok().body;
    assert_eq!(ids(&page), created, "default limit 20");

    // Grants and debits page the same way.
    let wallet = server.wallet(0).await;
    let mut grants = Vec::new();
    for _ in 0..3 {
        grants.push(
            server
                .grant_ok(&wallet, json!({"amount": "5", "purpose": "paid"}))
                .await,
        );
    }
    grants.reverse();
    let page = server
        .get(&format!("/v1/wallets/{wallet}/grants?limit=2"))
        .await
        .ok()
        .body;
    assert_eq!(
        (ids(&page), &page["has_more"]),
        (grants[..2].to_vec(), &json!(true))
    );
    let page = server
        .get(&format!(
            "/v1/wallets/{wallet}/grants?limit=2&starting_after={}",
            grants[1]
        ))
        .await
        .ok()
        .body;
    assert_eq!(
        (ids(&page), &page["has_more"]),
        (grants[2..].to_vec(), &json!(false))
    );
    let mut debits = Vec::new();
    for _ in 0..3 {
        debits.push(server.debit(&wallet, "1").await.ok().id());
    }
    debits.reverse();
    let page = server
        .get(&format!(
            "/v1/wallets/{wallet}/debits?limit=1&starting_after={}",
            debits[0]
        ))
        .await
        .ok()
        .body;
    assert_eq!(
        (ids(&page), &page["has_more"]),
        (vec![debits[1].clone()], &json!(true))
    );
    let systems = server.get("/v1/credit_systems?limit=1").await.ok().body;
    assert_eq!(systems["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn customer_search_by_q_and_external_id() {
    let server = Server::start().await;
    let alice = server
        .post("/v1/customers", json!({"name": "Alice Smith", "email": "alice@example.com", "metadata": {"tier": "gold"}}))
        .await
        .ok();
    assert_eq!(alice.body["object"], "customer");
    assert_eq!(alice.body["metadata"], json!({"tier": "gold"}));
    let alice = alice.id();
    let bob = server
        .post(
            "/v1/customers",
            json!({"name": "Bob", "external_id": "EXT-42"}),
        )
        .await
        .ok()
        .id();
    let carol = server
        .post(
            "/v1/customers",
            json!({"name": "Carol", "email": "carol@other.org"}),
        )
        .await
        .ok()
        .id();
    let search = |q: &str| format!("/v1/customers?q={q}");
    assert_eq!(
        ids(&server.get(&search("ALICE")).await.ok().body),
        vec![alice.clone()]
    );
    assert_eq!(
        ids(&server.get(&search("smi")).await.ok().body),
        vec![alice.clone()]
    );
    assert_eq!(
        ids(&server.get(&search("example.COM")).await.ok().body),
        vec![alice.clone()]
    );
    assert_eq!(
        ids(&server.get(&search("ext-4")).await.ok().body),
        vec![bob.clone()]
    );
    assert_eq!(
        ids(&server.get(&search("C")).await.ok().body),
        vec![carol.clone(), alice.clone()]
    );
    assert!(ids(&server.get(&search("zzz")).await.ok().body).is_empty());
    // `%` and `_` are literal characters, not wildcards.
    assert!(ids(&server.get(&search("%25")).await.ok().body).is_empty());
    assert!(ids(&server.get(&search("_")).await.ok().body).is_empty());

    assert_eq!(
        ids(&server
            .get("/v1/customers?external_id=EXT-42")
            .await
            .ok()
            .body),
        vec![bob.clone()]
    );
    assert!(
        ids(&server
            .get("/v1/customers?external_id=EXT-4")
            .await
            .ok()
            .body)
        .is_empty(),
        "exact match only"
    );
    assert!(
        ids(&server
            .get("/v1/customers?external_id=nobody")
            .await
            .ok()
            .body)
        .is_empty()
    );
    let response = server
        .post(
            "/v1/customers",
            json!({"name": "Bob 2", "external_id": "EXT-42"}),
        )
        .await;
    assert_error(&response, 409, "external_id_taken", Some("external_id"));

    let updated = server
        .patch(
            &format!("/v1/customers/{carol}"),
            json!({"external_id": "C-1", "email": null}),
        )
        .await
        .ok();
    assert_eq!(
        (&updated.body["external_id"], &updated.body["email"]),
        (&json!("C-1"), &Value::Null)
    );
    assert_eq!(
        ids(&server.get("/v1/customers?external_id=C-1").await.ok().body),
        vec![carol]
    );
}

#[tokio::test]
async fn wallet_exists_and_credit_system_inactive() {
    let server = Server::start().await;
    let cs = server.credit_system("conflicts", 0).await;
    let customer = server.customer("Dup").await;
    let wallet = server
        .post(
            "/v1/wallets",
            json!({"customer_id": customer, "credit_system_id": cs}),
        )
        .await
        .ok();
    assert_eq!(wallet.body["object"], "wallet");
    assert_eq!(
        (
            &wallet.body["balance"],
            &wallet.body["overdraft_limit"],
            &wallet.body["debt"]
        ),
        (&json!("0"), &json!("0"), &json!("0"))
    );
    let wallet = wallet.id();
    server
        .grant_ok(&wallet, json!({"amount": "10", "purpose": "paid"}))
        .await;
    let before = server.snapshot(&wallet).await;
    let response = server
        .post(
            "/v1/wallets",
            json!({"customer_id": customer, "credit_system_id": cs}),
        )
        .await;
    assert_error(&response, 409, "wallet_exists", None);
    assert_eq!(server.snapshot(&wallet).await, before);
    let listed = server
        .get(&format!(
            "/v1/wallets?customer_id={customer}&credit_system_id={cs}"
        ))
        .await
        .ok()
        .body;
    assert_eq!(ids(&listed), vec![wallet.clone()]);

    let updated = server
        .patch(
            &format!("/v1/credit_systems/{cs}"),
            json!({"status": "inactive"}),
        )
        .await
        .ok();
    assert_eq!(updated.body["status"], "inactive");
    let other = server.customer("Late").await;
    let response = server
        .post(
            "/v1/wallets",
            json!({"customer_id": other, "credit_system_id": cs}),
        )
        .await;
    assert_error(&response, 409, "credit_system_inactive", None);
    let listed = server
        .get(&format!("/v1/wallets?customer_id={other}"))
        .await
        .ok()
        .body;
    assert!(ids(&listed).is_empty());
    // Balances in an inactive system stay spendable.
    assert_eq!(
        server.debit(&wallet, "4").await.ok().str("balance_after"),
        "6"
    );
    server
        .patch(
            &format!("/v1/credit_systems/{cs}"),
            json!({"status": "active"}),
        )
        .await
        .ok();
    server
        .post(
            "/v1/wallets",
            json!({"customer_id": other, "credit_system_id": cs}),
        )
        .await
        .ok();
    let response = server
        .post(
            "/v1/credit_systems",
            json!({"key": "conflicts", "name": "again", "unit": "credits"}),
        )
        .await;
    assert_eq!(response.status.as_u16(), 409, "{}", response.body);
}

#[tokio::test]
async fn rule_05_and_18_hold_under_concurrent_requests() {
    // No wallet spends what it does not have; no debit is applied twice.
    let server = Server::start().await;
    let wallet = server.wallet(0).await;
    server
        .grant_ok(&wallet, json!({"amount": "100", "purpose": "paid"}))
        .await;
    let debits = format!("/v1/wallets/{wallet}/debits");
    let racing = (0..25).map(|_| server.post(&debits, json!({"amount": "10"})));
    let statuses: Vec<u16> = futures_join_all(racing)
        .await
        .iter()
        .map(|r| r.status.as_u16())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        10,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 402).count(),
        15,
        "{statuses:?}"
    );
    assert_eq!(server.balance(&wallet).await["balance"], "0");

    server
        .grant_ok(&wallet, json!({"amount": "100", "purpose": "paid"}))
        .await;
    let racing = (0..25).map(|_| server.post_key(&debits, json!({"amount": "7"}), "same-key"));
    let responses = futures_join_all(racing).await;
    let first = &responses
        .iter()
        .find(|r| r.headers.get("idempotent-replayed").is_none())
        .unwrap()
        .body;
    assert!(
        responses
            .iter()
            .all(|r| r.status.as_u16() == 200 && r.body == *first)
    );
    assert_eq!(
        responses
            .iter()
            .filter(|r| r.headers.get("idempotent-replayed").is_none())
            .count(),
        1,
        "exactly one request applied"
    );
    assert_eq!(server.balance(&wallet).await["balance"], "93");
    server.check_invariants(&wallet).await;
}

/// Runs futures concurrently on the test's runtime and returns their outputs in order.
async fn futures_join_all<F: std::future::Future>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = futures.map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in pinned.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().map(Option::unwrap).collect()
}

/// A grant no larger than the debt is spent entirely on repaying it; it is
/// created (and listed) with nothing remaining, and the service stays up.
#[tokio::test]
async fn rule_06_grant_spent_entirely_on_debt() {
    let server = Server::start().await;
    let cs = server.credit_system("overdraft_small", 0).await;
    let wallet = server.wallet_with_overdraft(&cs, "50").await;
    server.debit(&wallet, "50").await.ok();
    let grant = server
        .grant(&wallet, json!({"amount": "20", "purpose": "paid"}))
        .await
        .ok();
    assert_eq!(grant.str("remaining"), "0");
    assert_eq!(grant.str("status"), "depleted");
    let balance = server.balance(&wallet).await;
    assert_eq!(
        (balance["balance"].as_str(), balance["debt"].as_str()),
        (Some("-30"), Some("30"))
    );
    let read = server.get(&format!("/v1/grants/{}", grant.id())).await.ok();
    assert_eq!(read.str("remaining"), "0");
    // The server is still up and the grant can be voided (nothing to forfeit).
    server
        .post(&format!("/v1/grants/{}/void", grant.id()), json!({}))
        .await
        .ok();
    let types: Vec<String> = server
        .entries(&wallet)
        .await
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(types, ["debit", "grant", "repayment", "repayment"]);
}

/// A batch whose Idempotency-Key is also one of its items' keys is refused
/// as bad input and changes nothing.
#[tokio::test]
async fn rule_18_batch_header_key_cannot_be_an_item_key() {
    let server = Server::start().await;
    let wallet = server.wallet(0).await;
    server
        .grant(&wallet, json!({"amount": "10", "purpose": "paid"}))
        .await
        .ok();
    let body = json!({"debits": [{"wallet_id": wallet, "amount": "1", "idempotency_key": "dup"}]});
    let refused = server
        .send(
            reqwest::Method::POST,
            "/v1/debits/batch",
            Some(body),
            &[("Idempotency-Key", "dup")],
        )
        .await
        .status(400);
    assert_eq!(
        refused.error_param().as_deref(),
        Some("debits[0].idempotency_key")
    );
    assert_eq!(server.balance(&wallet).await["balance"], "10");
}

/// Paging the ledger from an entry of another wallet (or none) is refused
/// rather than silently starting over.
#[tokio::test]
async fn rule_15_entries_cursor_must_belong_to_the_wallet() {
    let server = Server::start().await;
    let wallet = server.wallet(0).await;
    let other = server.wallet(0).await;
    server
        .grant(&other, json!({"amount": "5", "purpose": "paid"}))
        .await
        .ok();
    let foreign = server.entries(&other).await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let refused = server
        .get(&format!(
            "/v1/wallets/{wallet}/entries?starting_after={foreign}"
        ))
        .await
        .status(400);
    assert_eq!(refused.error_param().as_deref(), Some("starting_after"));
}
