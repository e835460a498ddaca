-- credstack embedded store, version 14: events and webhooks (issue 8).
--
-- `events` is the transactional outbox: each event is written in the commit
-- of the ledger change it tells (journalled batches carry theirs), numbered
-- per wallet from 1. `dispatched` turns 1 once the event has a delivery for
-- every endpoint that wants it; only undispatched events are indexed.
ALTER TABLE wallets ADD COLUMN low_balance_threshold INTEGER;

CREATE TABLE events (
    id BLOB PRIMARY KEY,
    wallet_id BLOB NOT NULL,
    sequence INTEGER NOT NULL,
    type TEXT NOT NULL,
    occurred_at INTEGER NOT NULL,
    data TEXT NOT NULL,
    dispatched INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX events_by_wallet ON events (wallet_id, sequence);
-- A wallet's events newest first (GET /v1/events?wallet_id=).
CREATE INDEX events_of_wallet ON events (wallet_id, id);
CREATE INDEX events_undispatched ON events (id) WHERE dispatched = 0;
-- A claim holds back a wallet's delivery while an earlier event of the wallet
-- is not fanned out yet (another node's fan-out may be in flight).
CREATE INDEX events_undispatched_by_wallet ON events (wallet_id, sequence) WHERE dispatched = 0;

CREATE TABLE webhook_endpoints (
    id BLOB PRIMARY KEY,
    url TEXT NOT NULL,
    description TEXT,
    event_types TEXT NOT NULL,
    secret TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);

-- Instants here are wall-clock microseconds.
CREATE TABLE webhook_deliveries (
    id BLOB PRIMARY KEY,
    endpoint_id BLOB NOT NULL,
    event_id BLOB NOT NULL,
    type TEXT NOT NULL,
    wallet_id BLOB NOT NULL,
    sequence INTEGER NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_attempt_at INTEGER,
    retry_from INTEGER NOT NULL,
    -- The attempts made before retry_from (0, or as many as at its redelivery).
    attempts_before_retry INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    last_attempt_at INTEGER,
    last_status_code INTEGER,
    last_error TEXT
);
CREATE UNIQUE INDEX deliveries_by_endpoint ON webhook_deliveries (endpoint_id, id);
CREATE UNIQUE INDEX deliveries_of_event ON webhook_deliveries (event_id, endpoint_id);
-- A wallet's pending deliveries to an endpoint, in order: only the first is sent.
CREATE UNIQUE INDEX deliveries_pending ON webhook_deliveries (endpoint_id, wallet_id, sequence)
    WHERE status = 'pending';
CREATE INDEX deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';

CREATE TABLE webhook_attempts (
    delivery_id BLOB NOT NULL,
    number INTEGER NOT NULL,
    at INTEGER NOT NULL,
    status_code INTEGER,
    error TEXT,
    duration_ms INTEGER NOT NULL,
    PRIMARY KEY (delivery_id, number)
) WITHOUT ROWID;
