-- credstack PostgreSQL store, version 2: calls to all customers of a
-- campaign, one at a time per campaign; SQLite version 5 explains the
-- columns.
CREATE TABLE bulk_runs (
    promotional_credit_id bytea PRIMARY KEY REFERENCES promotional_credits(id),
    run_id bytea NOT NULL,
    action text NOT NULL,
    idempotency_key text,
    fingerprint bytea,
    cursor bytea,
    progress text NOT NULL,
    lease_until bigint NOT NULL
);
