//! Secrets at rest (SPEC §3: "the secret is returned once ... and stored only
//! as a hash"): API key secrets and console session tokens, after they have
//! been created, used, replayed under an Idempotency-Key and signed in with,
//! are found in the store only as their SHA-256. On the embedded store the
//! raw bytes of every file in the data directory (the database, its WAL and
//! shared memory) are searched; on PostgreSQL every row of every table, as
//! text (a `bytea` shows as hex there, so raw bytes are searched too).

mod common;

use common::{ADMIN_KEY, Server, console_sign_in};
use reqwest::Method;
use serde_json::json;
use sha2::{Digest, Sha256};

/// The forms a secret could be stored in: as sent, its hex part, and the
/// bytes that hex part encodes.
fn forms_of(secret: &str) -> Vec<Vec<u8>> {
    let mut forms = vec![secret.as_bytes().to_vec()];
    let hex_part = secret.strip_prefix("csk_").unwrap_or(secret);
    if let Ok(raw) = hex::decode(hex_part) {
        forms.push(hex_part.as_bytes().to_vec());
        forms.push(raw);
    }
    forms
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

struct Secrets {
    /// API key secrets: the bootstrap key and those the API created.
    keys: Vec<String>,
    /// Console session tokens.
    sessions: Vec<String>,
}

/// Creates keys of every scope (one under an Idempotency-Key, replayed),
/// uses each, and signs in to the console.
async fn make_and_use_secrets(server: &Server) -> Secrets {
    let mut keys = vec![ADMIN_KEY.to_string()];
    for scope in ["admin", "usage", "read"] {
        let created = server
            .post("/v1/api_keys", json!({"name": scope, "scope": scope}))
            .await
            .ok();
        keys.push(created.str("secret"));
    }
    let headers = [("Idempotency-Key", "key-creation")];
    let body = json!({"name": "replayed", "scope": "usage"});
    let created = server
        .post_with("/v1/api_keys", body.clone(), &headers)
        .await
        .ok();
    keys.push(created.str("secret"));
    let replayed = server.post_with("/v1/api_keys", body, &headers).await.ok();
    assert!(
        replayed.body.get("secret").is_none(),
        "a replay does not show the secret again: {}",
        replayed.body
    );
    for key in &keys {
        server
            .send_as(Some(key), Method::GET, "/v1/customers", None)
            .await
            .ok();
    }
    let mut sessions = Vec::new();
    for key in [&keys[0], &keys[1]] {
        sessions.push(
            console_sign_in(&server.base, key)
                .await
                .expect("an admin key signs in"),
        );
    }
    Secrets { keys, sessions }
}

#[tokio::test]
async fn secrets_are_stored_only_as_sha256() {
    let server = Server::start().await;
    let secrets = make_and_use_secrets(&server).await;
    let hash = |s: &String| hex::encode(Sha256::digest(s.as_bytes()));
    let (key_hashes, session_hashes, rows) = match &server.db {
        None => read_sqlite(&server),
        Some(db) => read_postgres(db),
    };

    // The stored columns are the SHA-256 of each secret, 32 bytes.
    for key in &secrets.keys {
        assert!(key_hashes.contains(&hash(key)), "{key}'s hash is stored");
    }
    assert_eq!(key_hashes.len(), secrets.keys.len(), "one row per key");
    for token in &secrets.sessions {
        assert!(
            session_hashes.contains(&hash(token)),
            "the session's hash is stored"
        );
    }

    // No secret in any other form, anywhere in the store.
    let mut searched = 0;
    for secret in secrets.keys.iter().chain(&secrets.sessions) {
        for form in forms_of(secret) {
            for (place, bytes) in &rows {
                assert!(
                    !contains(bytes, &form),
                    "a secret ({}) is stored in {place}",
                    String::from_utf8_lossy(&form)
                );
            }
            searched += 1;
        }
    }
    println!(
        "{} secrets, {searched} forms searched in {} places ({} bytes)",
        secrets.keys.len() + secrets.sessions.len(),
        rows.len(),
        rows.iter().map(|(_, b)| b.len()).sum::<usize>()
    );
    // The search can find: the hashes it reads are in the same bytes.
    let stored = hex::decode(hash(&secrets.keys[1])).unwrap();
    let found_hex = rows
        .iter()
        .any(|(_, b)| contains(b, &stored) || contains(b, hash(&secrets.keys[1]).as_bytes()));
    assert!(found_hex, "the search sees the stored hash");
}

type Store = (Vec<String>, Vec<String>, Vec<(String, Vec<u8>)>);

/// The key and session hashes (hex), and the raw bytes of every file of
/// the embedded store.
fn read_sqlite(server: &Server) -> Store {
    let path = server.data_dir().join("credstack.db");
    let connection =
        rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open the store");
    let hashes = |sql: &str| -> Vec<String> {
        let mut statement = connection.prepare(sql).unwrap();
        statement
            .query_map([], |row| row.get::<_, Vec<u8>>(0))
            .unwrap()
            .map(|hash| {
                let hash = hash.unwrap();
                assert_eq!(hash.len(), 32, "a SHA-256 is 32 bytes");
                hex::encode(hash)
            })
            .collect()
    };
    let keys = hashes("SELECT secret_hash FROM api_keys");
    let sessions = hashes("SELECT token_hash FROM console_sessions");
    let mut files = Vec::new();
    for entry in std::fs::read_dir(server.data_dir()).unwrap() {
        let path = entry.unwrap().path();
        files.push((path.display().to_string(), std::fs::read(&path).unwrap()));
    }
    assert!(
        files.iter().any(|(p, _)| p.ends_with("credstack.db-wal")),
        "the WAL is searched too: {:?}",
        files.iter().map(|(p, _)| p).collect::<Vec<_>>()
    );
    (keys, sessions, files)
}

/// The key and session hashes (hex), and every row of every table as text.
fn read_postgres(db: &common::pg::TestDb) -> Store {
    let config = db.config.clone();
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                let mut client = config.connect(postgres::NoTls).expect("connect");
                let mut hashes = |sql: &str| -> Vec<String> {
                    client
                        .query(sql, &[])
                        .unwrap()
                        .iter()
                        .map(|row| {
                            let hash: Vec<u8> = row.get(0);
                            assert_eq!(hash.len(), 32, "a SHA-256 is 32 bytes");
                            hex::encode(hash)
                        })
                        .collect()
                };
                let keys = hashes("SELECT secret_hash FROM api_keys");
                let sessions = hashes("SELECT token_hash FROM console_sessions");
                let tables: Vec<String> = client
                    .query(
                        "SELECT table_name::text FROM information_schema.tables \
                         WHERE table_schema = 'public'",
                        &[],
                    )
                    .unwrap()
                    .iter()
                    .map(|row| row.get(0))
                    .collect();
                assert!(tables.len() > 5, "the schema's tables: {tables:?}");
                let mut rows = Vec::new();
                for table in tables {
                    let text: String = client
                        .query_one(
                            &format!("SELECT coalesce(string_agg(t::text, E'\\n'), '') FROM \"{table}\" t"),
                            &[],
                        )
                        .unwrap()
                        .get(0);
                    rows.push((format!("table {table}"), text.into_bytes()));
                }
                (keys, sessions, rows)
            })
            .join()
            .unwrap()
    })
}
