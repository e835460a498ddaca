-- credstack PostgreSQL store, version 4: where a keyed call to all
-- customers stopped; SQLite version 7 explains it.
CREATE TABLE bulk_run_resumes (
    promotional_credit_id bytea NOT NULL REFERENCES promotional_credits(id),
    idempotency_key text NOT NULL,
    fingerprint bytea NOT NULL,
    action text NOT NULL,
    cursor bytea,
    progress text NOT NULL,
    saved_at bigint NOT NULL,
    PRIMARY KEY (promotional_credit_id, idempotency_key)
);
