-- credstack PostgreSQL store, version 1: the embedded store's versions 1–3
-- (schema_v1.sql, schema_v2.sql, schema_v3.sql) as one schema. Applied
-- migrations are never edited; later changes get postgres_schema_v2.sql.
--
-- Types, chosen so that rows map exactly as in the SQLite store:
-- * Ids are `bytea` holding the same 16-byte big-endian ULIDs as SQLite
--   (`ids::to_bytes`). bytea compares byte by byte, so byte order is
--   creation order and "newest first" pages by `id < cursor` as before.
--   (`uuid` would also compare bytewise and save the 1-byte varlena header,
--   but would need the uuid crate and a second id encoding.)
-- * Instants are `bigint` microseconds since the Unix epoch, as in SQLite:
--   exact round trips, no time zone, no conversion at the boundary. Read one
--   by hand with `to_timestamp(created_at / 1e6)`.
-- * Amounts are `bigint` atomic units at the wallet's scale.
-- * Flags are `boolean`; small enumerations are `text`, as in SQLite; the
--   JSON columns (metadata, reservations, allocations) are `text` holding
--   the same JSON as SQLite: they are only ever read back whole.
--
-- Every hot query (load a wallet, its live grants, active holds, debits,
-- entries, balance at an instant) is keyed by wallet_id first, so a wallet's
-- work touches one index range and different wallets do not contend.

CREATE TABLE credit_systems (
    id bytea PRIMARY KEY CHECK (octet_length(id) = 16),
    key text NOT NULL UNIQUE,
    name text NOT NULL,
    unit text NOT NULL,
    scale smallint NOT NULL,
    active boolean NOT NULL,
    created_at bigint NOT NULL
);

CREATE TABLE customers (
    id bytea PRIMARY KEY CHECK (octet_length(id) = 16),
    name text NOT NULL,
    email text,
    external_id text UNIQUE,
    metadata text NOT NULL,
    created_at bigint NOT NULL
);

CREATE TABLE wallets (
    id bytea PRIMARY KEY CHECK (octet_length(id) = 16),
    customer_id bytea NOT NULL REFERENCES customers (id),
    credit_system_id bytea NOT NULL REFERENCES credit_systems (id),
    scale smallint NOT NULL,
    overdraft_limit bigint NOT NULL,
    debt bigint NOT NULL,
    balance bigint NOT NULL,
    last_sequence bigint NOT NULL,
    -- When something next happens to this wallet by itself (rule 11).
    next_event_at bigint,
    created_at bigint NOT NULL,
    -- Bumped by every state write, so that a node can tell whether the
    -- wallet state it cached is still the committed one.
    version bigint NOT NULL DEFAULT 0,
    UNIQUE (customer_id, credit_system_id)
);
CREATE INDEX wallets_by_credit_system ON wallets (credit_system_id, id);
CREATE INDEX wallets_due ON wallets (next_event_at) WHERE next_event_at IS NOT NULL;
-- All-customers grants walk a credit system's wallets in customer order.
CREATE INDEX wallets_by_credit_system_customer ON wallets (credit_system_id, customer_id);

CREATE TABLE grants (
    id bytea PRIMARY KEY CHECK (octet_length(id) = 16),
    wallet_id bytea NOT NULL REFERENCES wallets (id),
    amount bigint NOT NULL,
    purpose text NOT NULL,
    priority smallint NOT NULL,
    effective_at bigint NOT NULL,
    expires_at bigint,
    recurrence_interval text,
    recurrence_count bigint,
    rollover_max bigint NOT NULL,
    remaining bigint NOT NULL,
    held bigint NOT NULL,
    cycle bigint NOT NULL,
    status text NOT NULL,
    ended_at bigint,
    -- True while the grant can still change (loaded into the wallet's state).
    live boolean NOT NULL,
    description text,
    metadata text NOT NULL,
    source text NOT NULL,
    created_at bigint NOT NULL
);
CREATE INDEX grants_by_wallet ON grants (wallet_id, id);
CREATE INDEX grants_live ON grants (wallet_id) WHERE live;

CREATE TABLE holds (
    id bytea PRIMARY KEY CHECK (octet_length(id) = 16),
    wallet_id bytea NOT NULL REFERENCES wallets (id),
    amount bigint NOT NULL,
    reservations text NOT NULL,
    status text NOT NULL,
    expires_at bigint NOT NULL,
    debit_id bytea,
    ended_at bigint,
    created_at bigint NOT NULL
);
CREATE INDEX holds_active ON holds (wallet_id) WHERE status = 'active';

CREATE TABLE debits (
    id bytea PRIMARY KEY CHECK (octet_length(id) = 16),
    wallet_id bytea NOT NULL REFERENCES wallets (id),
    amount bigint NOT NULL,
    allocations text NOT NULL,
    balance_after bigint NOT NULL,
    description text,
    metadata text NOT NULL,
    hold_id bytea,
    created_at bigint NOT NULL
);
CREATE INDEX debits_by_wallet ON debits (wallet_id, id);

-- The ledger, append-only. Partitioning by time for retention, later:
-- a partitioned table needs the partition key in every unique constraint,
-- so the new table would be
--     CREATE TABLE entries (...same columns...,
--         PRIMARY KEY (wallet_id, sequence, occurred_at),
--         UNIQUE (id, occurred_at))
--     PARTITION BY RANGE (occurred_at);
-- with one partition per month, e.g.
--     CREATE TABLE entries_2026_01 PARTITION OF entries
--         FOR VALUES FROM (1767225600000000) TO (1769904000000000);
-- (bounds in microseconds, like every instant here), filled by
-- `INSERT INTO ... SELECT` or by attaching this table as the first partition,
-- and retention becomes `DETACH PARTITION` + `DROP TABLE`. (wallet_id,
-- sequence) stays unique in practice because `last_sequence` on the wallet
-- row, updated under the wallet's lock, hands out sequences; `list_entries`
-- looks its cursor up by (id, wallet_id), which the (id, occurred_at) index
-- still serves. Every index below already leads with wallet_id or is
-- partition-local, so none needs to change.
CREATE TABLE entries (
    wallet_id bytea NOT NULL REFERENCES wallets (id),
    sequence bigint NOT NULL,
    id bytea NOT NULL UNIQUE CHECK (octet_length(id) = 16),
    type text NOT NULL,
    amount bigint NOT NULL,
    balance_after bigint NOT NULL,
    occurred_at bigint NOT NULL,
    grant_id bytea,
    reference text NOT NULL,
    PRIMARY KEY (wallet_id, sequence)
);
-- SQLite's entries_by_grant is (grant_id, occurred_at); a grant belongs to
-- one wallet, so leading with wallet_id costs nothing and keeps the index
-- keyed by wallet like every other.
CREATE INDEX entries_by_grant ON entries (wallet_id, grant_id, occurred_at)
    WHERE grant_id IS NOT NULL;
CREATE INDEX entries_by_time ON entries (wallet_id, occurred_at);

CREATE TABLE api_keys (
    id bytea PRIMARY KEY CHECK (octet_length(id) = 16),
    name text NOT NULL,
    scope text NOT NULL,
    secret_hash bytea NOT NULL UNIQUE,
    created_at bigint NOT NULL
);

-- Shared by every node, so a key used on one replays on any other.
CREATE TABLE idempotency_keys (
    key text PRIMARY KEY,
    fingerprint bytea NOT NULL,
    status integer NOT NULL,
    body text NOT NULL,
    created_at bigint NOT NULL
);
CREATE INDEX idempotency_by_age ON idempotency_keys (created_at);

-- Promotional credits (SPEC rules 19–26); SQLite version 2.

CREATE TABLE promotional_credits (
    id bytea PRIMARY KEY CHECK (octet_length(id) = 16),
    name text NOT NULL,
    description text,
    credit_system_id bytea NOT NULL REFERENCES credit_systems (id),
    -- NULL: starts at creation (created_at).
    starts_at bigint,
    -- NULL: never ends.
    ends_at bigint,
    quantity bigint NOT NULL,
    -- 'never', 'day', 'week', 'month' or 'year'.
    reset_interval text NOT NULL,
    -- Both NULL: the access period is forever.
    access_period_value bigint,
    access_period_unit text,
    allow_multiple_grants boolean NOT NULL,
    -- True once any customer has been granted (is_applied).
    applied boolean NOT NULL,
    created_at bigint NOT NULL
);

CREATE TABLE promotion_assignments (
    id bytea PRIMARY KEY CHECK (octet_length(id) = 16),
    promotional_credit_id bytea NOT NULL REFERENCES promotional_credits (id),
    customer_id bytea NOT NULL REFERENCES customers (id),
    wallet_id bytea NOT NULL REFERENCES wallets (id),
    grant_id bytea NOT NULL REFERENCES grants (id),
    granted_at bigint NOT NULL,
    -- End of the access period; NULL forever.
    expires_at bigint,
    revoked_at bigint
);
CREATE INDEX assignments_by_customer ON promotion_assignments (promotional_credit_id, customer_id);
CREATE INDEX assignments_open ON promotion_assignments (promotional_credit_id, customer_id)
    WHERE revoked_at IS NULL;

-- Operator console sessions; SQLite version 3. The cookie carries a random
-- token; only its SHA-256 is stored, like API key secrets.

CREATE TABLE console_sessions (
    token_hash bytea PRIMARY KEY,
    -- The synchronizer token every console form must send back.
    csrf_token text NOT NULL,
    api_key_id bytea NOT NULL,
    created_at bigint NOT NULL,
    expires_at bigint NOT NULL
);
CREATE INDEX console_sessions_by_expiry ON console_sessions (expires_at);
