-- credstack embedded store, version 1. Applied migrations are never edited.
-- Ids are 16-byte big-endian ULIDs; instants are microseconds since the Unix
-- epoch; amounts are integers of atomic units at the wallet's scale.

CREATE TABLE credit_systems (
    id BLOB PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    unit TEXT NOT NULL,
    scale INTEGER NOT NULL,
    active INTEGER NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE customers (
    id BLOB PRIMARY KEY,
    name TEXT NOT NULL,
    email TEXT,
    external_id TEXT UNIQUE,
    metadata TEXT NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE wallets (
    id BLOB PRIMARY KEY,
    customer_id BLOB NOT NULL REFERENCES customers(id),
    credit_system_id BLOB NOT NULL REFERENCES credit_systems(id),
    scale INTEGER NOT NULL,
    overdraft_limit INTEGER NOT NULL,
    debt INTEGER NOT NULL,
    balance INTEGER NOT NULL,
    last_sequence INTEGER NOT NULL,
    -- When something next happens to this wallet by itself (rule 11).
    next_event_at INTEGER,
    created_at INTEGER NOT NULL,
    UNIQUE (customer_id, credit_system_id)
) WITHOUT ROWID;
CREATE INDEX wallets_by_credit_system ON wallets (credit_system_id, id);
CREATE INDEX wallets_due ON wallets (next_event_at) WHERE next_event_at IS NOT NULL;

CREATE TABLE grants (
    id BLOB PRIMARY KEY,
    wallet_id BLOB NOT NULL REFERENCES wallets(id),
    amount INTEGER NOT NULL,
    purpose TEXT NOT NULL,
    priority INTEGER NOT NULL,
    effective_at INTEGER NOT NULL,
    expires_at INTEGER,
    recurrence_interval TEXT,
    recurrence_count INTEGER,
    rollover_max INTEGER NOT NULL,
    remaining INTEGER NOT NULL,
    held INTEGER NOT NULL,
    cycle INTEGER NOT NULL,
    status TEXT NOT NULL,
    ended_at INTEGER,
    -- 1 while the grant can still change (loaded into the wallet's state).
    live INTEGER NOT NULL,
    description TEXT,
    metadata TEXT NOT NULL,
    source TEXT NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX grants_by_wallet ON grants (wallet_id, id);
CREATE INDEX grants_live ON grants (wallet_id) WHERE live = 1;

CREATE TABLE holds (
    id BLOB PRIMARY KEY,
    wallet_id BLOB NOT NULL REFERENCES wallets(id),
    amount INTEGER NOT NULL,
    reservations TEXT NOT NULL,
    status TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    debit_id BLOB,
    ended_at INTEGER,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX holds_active ON holds (wallet_id) WHERE status = 'active';

CREATE TABLE debits (
    id BLOB PRIMARY KEY,
    wallet_id BLOB NOT NULL REFERENCES wallets(id),
    amount INTEGER NOT NULL,
    allocations TEXT NOT NULL,
    balance_after INTEGER NOT NULL,
    description TEXT,
    metadata TEXT NOT NULL,
    hold_id BLOB,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX debits_by_wallet ON debits (wallet_id, id);

CREATE TABLE entries (
    wallet_id BLOB NOT NULL REFERENCES wallets(id),
    sequence INTEGER NOT NULL,
    id BLOB NOT NULL UNIQUE,
    type TEXT NOT NULL,
    amount INTEGER NOT NULL,
    balance_after INTEGER NOT NULL,
    occurred_at INTEGER NOT NULL,
    grant_id BLOB,
    reference TEXT NOT NULL,
    PRIMARY KEY (wallet_id, sequence)
) WITHOUT ROWID;
CREATE INDEX entries_by_grant ON entries (grant_id, occurred_at) WHERE grant_id IS NOT NULL;
CREATE INDEX entries_by_time ON entries (wallet_id, occurred_at);

CREATE TABLE api_keys (
    id BLOB PRIMARY KEY,
    name TEXT NOT NULL,
    scope TEXT NOT NULL,
    secret_hash BLOB NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE idempotency_keys (
    key TEXT PRIMARY KEY,
    fingerprint BLOB NOT NULL,
    status INTEGER NOT NULL,
    body TEXT NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX idempotency_by_age ON idempotency_keys (created_at);
