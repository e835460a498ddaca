//! An all-customers grant (SPEC rules 22, 23 and §6 "an acknowledged write is
//! durable and survives a crash") killed part way with SIGKILL, then resumed.
//!
//! The real binary serves a real store; ~20,000 customers with wallets are
//! granted in chunks, each chunk one atomic commit. The test kills the
//! process once some chunks have committed, restarts the server on the same
//! data (the open merges what the journal held), and checks straight in the
//! SQLite file that every customer is either fully granted (assignment,
//! grant, ledger entry, balance) or untouched. Until the dead call's lease passes, another call to all customers
//! is refused (`bulk_run_in_progress`); the retry with the dead call's
//! idempotency key waits for the lease, then resumes after the last chunk
//! committed: everyone ends with exactly one assignment and one grant, the
//! response counts the whole call, and the key then replays it.

mod common;

use common::process::{LogOnFailure, Process};
use credstack::ids::{self, Kind};
use credstack::ledger::BULK_CHUNK;
use rusqlite::{Connection, OpenFlags, params};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const KEY: &str = "csk_crash_test_admin_key";
const START: &str = "2025-01-31T10:00:00Z";
/// Customers with a wallet in the promotion's credit system.
const ELIGIBLE: usize = 20_000;
/// Customers without any wallet.
const WALLETLESS: usize = 300;
/// Customers with a wallet in another credit system only.
const ELSEWHERE: usize = 100;
const IN_FLIGHT: usize = 64;
const QUANTITY: i64 = 100;
const ATTEMPTS: usize = 4;

/// The spawned `credstack serve`; killed (SIGKILL) when dropped.
async fn call(
    client: &reqwest::Client,
    base: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = client
        .request(method, format!("{base}{path}"))
        .bearer_auth(KEY);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn post(client: &reqwest::Client, base: &str, path: &str, body: Value) -> Value {
    let (status, body) = call(client, base, reqwest::Method::POST, path, Some(body)).await;
    assert_eq!(status, 200, "POST {path}: {body}");
    body
}

async fn get(client: &reqwest::Client, base: &str, path: &str) -> Value {
    let (status, body) = call(client, base, reqwest::Method::GET, path, None).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

fn store_args(data: &Path) -> [&str; 6] {
    [
        "--data",
        data.to_str().expect("a UTF-8 temp path"),
        "--clock",
        "simulated",
        "--start",
        START,
    ]
}

/// Posts, waiting while another call to all customers of the campaign
/// (one whose process was killed) still holds it.
async fn post_when_free(client: &reqwest::Client, base: &str, path: &str, body: Value) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, answer) = call(
            client,
            base,
            reqwest::Method::POST,
            path,
            Some(body.clone()),
        )
        .await;
        if status == 409 && answer["error"]["code"] == "bulk_run_in_progress" {
            assert!(Instant::now() < deadline, "the campaign stayed busy");
            tokio::time::sleep(Duration::from_millis(250)).await;
            continue;
        }
        assert_eq!(status, 200, "POST {path}: {answer}");
        return answer;
    }
}

/// Creates the population, `IN_FLIGHT` requests at a time.
async fn populate(base: &str, cs: &str, other: &str) {
    let total = ELIGIBLE + WALLETLESS + ELSEWHERE;
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..IN_FLIGHT {
        let client = reqwest::Client::new();
        let base = base.to_string();
        let (cs, other) = (cs.to_string(), other.to_string());
        workers.spawn(async move {
            for index in (worker..total).step_by(IN_FLIGHT) {
                let customer = post(
                    &client,
                    &base,
                    "/v1/customers",
                    json!({"name": format!("Customer {index}")}),
                )
                .await["id"]
                    .as_str()
                    .unwrap()
                    .to_string();
                let credit_system = if index < ELIGIBLE {
                    &cs
                } else if index < ELIGIBLE + WALLETLESS {
                    continue;
                } else {
                    &other
                };
                post(
                    &client,
                    &base,
                    "/v1/wallets",
                    json!({"customer_id": customer, "credit_system_id": credit_system}),
                )
                .await;
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done.expect("worker");
    }
}

fn open_read_only(path: &Path) -> Connection {
    let connection = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .expect("open the store read-only");
    connection
        .busy_timeout(Duration::from_secs(10))
        .expect("busy timeout");
    connection
}

fn id_bytes(kind: Kind, text: &str) -> [u8; 16] {
    ids::to_bytes(ids::parse(kind, text).expect("an id"))
}

fn assignments_of(db: &Connection, promo: &[u8; 16]) -> usize {
    db.query_row(
        "SELECT count(*) FROM promotion_assignments WHERE promotional_credit_id = ?",
        [promo],
        |row| row.get::<_, i64>(0),
    )
    .expect("count assignments") as usize
}

/// Where one eligible wallet stands with respect to the promotion.
#[derive(Debug)]
struct WalletState {
    wallet: String,
    balance: i64,
    assignments: i64,
    grants: i64,
    /// Assignments whose grant is promotional, of `QUANTITY`, unspent, in
    /// this wallet, with its `grant` ledger entry of `QUANTITY`.
    backed: i64,
    entries: i64,
    last_sequence: i64,
}

impl WalletState {
    fn granted(&self) -> bool {
        self.balance == QUANTITY
            && self.assignments == 1
            && self.grants == 1
            && self.backed == 1
            && self.entries == self.last_sequence
    }

    fn untouched(&self) -> bool {
        self.balance == 0
            && self.assignments == 0
            && self.grants == 0
            && self.backed == 0
            && self.entries == self.last_sequence
    }
}

fn wallet_states(
    db: &Connection,
    cs: &[u8; 16],
    promo: &[u8; 16],
    promo_id: u128,
) -> Vec<WalletState> {
    let source = format!("promotional_credit:{promo_id:032x}:%");
    let mut statement = db
        .prepare(
            "SELECT w.id, w.balance,
                (SELECT count(*) FROM promotion_assignments a
                  WHERE a.promotional_credit_id = ?1 AND a.customer_id = w.customer_id
                    AND a.wallet_id = w.id),
                (SELECT count(*) FROM grants g WHERE g.wallet_id = w.id AND g.source LIKE ?2),
                (SELECT count(*) FROM promotion_assignments a
                   JOIN grants g ON g.id = a.grant_id AND g.wallet_id = w.id
                   JOIN entries e ON e.wallet_id = w.id AND e.grant_id = g.id
                                 AND e.type = 'grant' AND e.amount = ?3
                  WHERE a.promotional_credit_id = ?1 AND a.customer_id = w.customer_id
                    AND a.wallet_id = w.id AND a.revoked_at IS NULL AND g.purpose = 'promotional'
                    AND g.amount = ?3 AND g.remaining = ?3),
                (SELECT count(*) FROM entries e WHERE e.wallet_id = w.id),
                w.last_sequence
             FROM wallets w WHERE w.credit_system_id = ?4",
        )
        .expect("prepare");
    statement
        .query_map(params![promo, source, QUANTITY, cs], |row| {
            let id: Vec<u8> = row.get(0)?;
            Ok(WalletState {
                wallet: ids::format(Kind::Wallet, ids::from_bytes(&id)),
                balance: row.get(1)?,
                assignments: row.get(2)?,
                grants: row.get(3)?,
                backed: row.get(4)?,
                entries: row.get(5)?,
                last_sequence: row.get(6)?,
            })
        })
        .expect("query")
        .collect::<rusqlite::Result<_>>()
        .expect("rows")
}

/// No assignment of the promotion outside the credit system's wallets.
fn strays(db: &Connection, cs: &[u8; 16], promo: &[u8; 16]) -> i64 {
    db.query_row(
        "SELECT count(*) FROM promotion_assignments a JOIN wallets w ON w.id = a.wallet_id
          WHERE a.promotional_credit_id = ?1 AND w.credit_system_id != ?2",
        params![promo, cs],
        |row| row.get(0),
    )
    .expect("strays")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_customers_grant_killed_part_way_resumes_without_double_grants() {
    let began = Instant::now();
    let data = tempfile::tempdir().expect("data dir");
    let logs = tempfile::tempdir().expect("log dir");
    let log = logs.path().join("server.log");
    let _log_guard = LogOnFailure(log.clone());
    let db_path: PathBuf = credstack::ledger::database_path(data.path());
    let client = reqwest::Client::new();

    let mut server = Process::spawn(&store_args(data.path()), KEY, &log).await;
    let cs = post(
        &client,
        &server.base,
        "/v1/credit_systems",
        json!({"key": "ai_tokens", "name": "AI tokens", "unit": "tokens", "scale": 0}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let other = post(
        &client,
        &server.base,
        "/v1/credit_systems",
        json!({"key": "other", "name": "Other", "unit": "credits", "scale": 0}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    populate(&server.base, &cs, &other).await;
    eprintln!("populated in {:?}", began.elapsed());
    let cs_bytes = id_bytes(Kind::CreditSystem, &cs);
    let db = open_read_only(&db_path);
    let wallets: i64 = db
        .query_row(
            "SELECT count(*) FROM wallets WHERE credit_system_id = ?",
            [&cs_bytes],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(wallets as usize, ELIGIBLE);

    // Start the grant and kill the server once part of it has committed.
    let mut interrupted = None;
    for attempt in 1..=ATTEMPTS {
        let promo = post(
            &client,
            &server.base,
            "/v1/promotional_credits",
            json!({
                "name": format!("Crash promo {attempt}"),
                "credit_system_id": cs,
                "quantity": QUANTITY.to_string(),
                "allow_multiple_grants": false,
            }),
        )
        .await["id"]
            .as_str()
            .unwrap()
            .to_string();
        let promo_bytes = id_bytes(Kind::PromotionalCredit, &promo);
        let request = {
            let base = server.base.clone();
            let promo = promo.clone();
            tokio::spawn(async move {
                reqwest::Client::new()
                    .post(format!("{base}/v1/promotional_credits/{promo}/grant"))
                    .bearer_auth(KEY)
                    .header("Idempotency-Key", format!("crash-grant-{attempt}"))
                    .json(&json!({"all_customers": true}))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            })
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        // Later attempts wait for more chunks, so the kill lands elsewhere.
        let threshold = (attempt - 1) * BULK_CHUNK;
        loop {
            if assignments_of(&db, &promo_bytes) > threshold || request.is_finished() {
                break;
            }
            assert!(Instant::now() < deadline, "the grant made no progress");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        server.kill();
        let outcome = request.await.expect("request task");
        // Counted once the server is back: a chunk committed to the journal
        // before the kill may not have been merged into the SQLite file yet,
        // and the next open merges it before serving.
        server = Process::spawn(&store_args(data.path()), KEY, &log).await;
        let granted = assignments_of(&db, &promo_bytes);
        eprintln!(
            "attempt {attempt}: killed at {granted} of {ELIGIBLE} granted ({:?}), request: {outcome:?}",
            began.elapsed()
        );
        if granted > 0 && granted < ELIGIBLE {
            assert!(outcome.is_err(), "an interrupted call is never answered");
            interrupted = Some((promo, granted, format!("crash-grant-{attempt}")));
            break;
        }
        if granted == ELIGIBLE {
            // Finished before the kill: take it back so balances start at 0
            // (once the dead call's lease has passed, if it had not ended).
            let revoked = post_when_free(
                &client,
                &server.base,
                &format!("/v1/promotional_credits/{promo}/revoke"),
                json!({"all_customers": true}),
            )
            .await;
            assert_eq!(revoked["revoked_count"], ELIGIBLE);
        }
    }
    let (promo, granted_before, key) =
        interrupted.expect("the kill never landed part way through the grant");
    let promo_id = ids::parse(Kind::PromotionalCredit, &promo).unwrap();
    let promo_bytes = ids::to_bytes(promo_id);

    // Every customer is fully granted or untouched; whole chunks committed.
    assert_eq!(
        granted_before % BULK_CHUNK,
        0,
        "each chunk of {BULK_CHUNK} customers commits atomically"
    );
    let states = wallet_states(&db, &cs_bytes, &promo_bytes, promo_id);
    assert_eq!(states.len(), ELIGIBLE);
    let mut granted_wallet = None;
    let mut untouched_wallet = None;
    for state in &states {
        if state.granted() {
            granted_wallet.get_or_insert_with(|| state.wallet.clone());
        } else if state.untouched() {
            untouched_wallet.get_or_insert_with(|| state.wallet.clone());
        } else {
            panic!("half-granted wallet after the kill: {state:?}");
        }
    }
    assert_eq!(
        states.iter().filter(|s| s.granted()).count(),
        granted_before
    );
    assert_eq!(strays(&db, &cs_bytes, &promo_bytes), 0);
    let applied: bool = db
        .query_row(
            "SELECT applied FROM promotional_credits WHERE id = ?",
            [&promo_bytes],
            |row| row.get(0),
        )
        .unwrap();
    assert!(applied, "is_applied committed with the first chunk");

    // The restarted server agrees.
    let base = server.base.clone();
    let promotion = get(&client, &base, &format!("/v1/promotional_credits/{promo}")).await;
    assert_eq!(promotion["is_applied"], true);
    assert_eq!(promotion["granted_count"], granted_before);
    let granted_wallet = granted_wallet.unwrap();
    let untouched_wallet = untouched_wallet.unwrap();
    let balance = get(
        &client,
        &base,
        &format!("/v1/wallets/{granted_wallet}/balance"),
    )
    .await;
    assert_eq!(
        (&balance["balance"], &balance["by_purpose"]["promotional"]),
        (&json!("100"), &json!("100"))
    );
    let grants = get(
        &client,
        &base,
        &format!("/v1/wallets/{granted_wallet}/grants"),
    )
    .await;
    let promo_grants: Vec<&Value> = grants["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["source"]["promotional_credit_id"] == promo.as_str())
        .collect();
    assert_eq!(promo_grants.len(), 1);
    assert_eq!(promo_grants[0]["amount"], "100");
    assert_eq!(promo_grants[0]["purpose"], "promotional");
    let balance = get(
        &client,
        &base,
        &format!("/v1/wallets/{untouched_wallet}/balance"),
    )
    .await;
    assert_eq!(balance["balance"], "0");

    // The dead call still holds the campaign until its lease passes: a
    // different call is refused rather than run beside it.
    let (status, body) = call(
        &client,
        &base,
        reqwest::Method::POST,
        &format!("/v1/promotional_credits/{promo}/grant"),
        Some(json!({"all_customers": true})),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("bulk_run_in_progress"))
    );

    // The retry with the same key waits for the lease, then resumes after
    // the last chunk committed: nobody before it is visited again, and the
    // counts are those of the whole call.
    let response = client
        .post(format!("{base}/v1/promotional_credits/{promo}/grant"))
        .bearer_auth(KEY)
        .header("Idempotency-Key", &key)
        .json(&json!({"all_customers": true}))
        .send()
        .await
        .expect("resume");
    assert_eq!(response.status().as_u16(), 200);
    let resumed: Value = response.json().await.expect("json");
    eprintln!("resumed by {:?}", began.elapsed());
    assert_eq!(resumed["granted_count"], ELIGIBLE);
    assert_eq!(resumed["skipped_count"], 0);
    assert_eq!(
        resumed["granted"].as_array().unwrap().len(),
        (ELIGIBLE - granted_before).min(100)
    );

    // Everyone eligible now holds exactly one assignment and one grant.
    let db = open_read_only(&db_path);
    let states = wallet_states(&db, &cs_bytes, &promo_bytes, promo_id);
    assert_eq!(states.len(), ELIGIBLE);
    for state in &states {
        assert!(state.granted(), "not granted exactly once: {state:?}");
    }
    assert_eq!(assignments_of(&db, &promo_bytes), ELIGIBLE);
    assert_eq!(strays(&db, &cs_bytes, &promo_bytes), 0);
    let promotion = get(&client, &base, &format!("/v1/promotional_credits/{promo}")).await;
    assert_eq!(promotion["granted_count"], ELIGIBLE);
    assert_eq!(promotion["revoked_count"], 0);

    // The key now replays the whole call's response.
    let response = client
        .post(format!("{base}/v1/promotional_credits/{promo}/grant"))
        .bearer_auth(KEY)
        .header("Idempotency-Key", &key)
        .json(&json!({"all_customers": true}))
        .send()
        .await
        .expect("replay");
    assert_eq!(response.headers()["idempotent-replayed"], "true");
    let replayed: Value = response.json().await.expect("json");
    assert_eq!(replayed, resumed);

    // A further run changes nothing.
    let again = post(
        &client,
        &base,
        &format!("/v1/promotional_credits/{promo}/grant"),
        json!({"all_customers": true}),
    )
    .await;
    assert_eq!(
        (&again["granted_count"], &again["skipped_count"]),
        (&json!(0), &json!(ELIGIBLE))
    );
    eprintln!("done in {:?}", began.elapsed());
    drop(server);
}
