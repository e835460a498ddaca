-- credstack embedded store, version 7: where a keyed call to all customers
-- stopped, kept when another call takes its campaign over, so the retry
-- with its key still resumes where it stopped (and grants nobody twice).
-- Dropped when the retry resumes, or with the idempotency keys' age.
CREATE TABLE bulk_run_resumes (
    promotional_credit_id BLOB NOT NULL REFERENCES promotional_credits(id),
    idempotency_key TEXT NOT NULL,
    fingerprint BLOB NOT NULL,
    action TEXT NOT NULL,
    cursor BLOB,
    progress TEXT NOT NULL,
    saved_at INTEGER NOT NULL,
    PRIMARY KEY (promotional_credit_id, idempotency_key)
);
