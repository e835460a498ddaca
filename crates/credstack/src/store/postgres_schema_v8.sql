-- credstack PostgreSQL store, version 8: events and webhooks (issue 8);
-- SQLite version 14 explains the tables.
--
-- `events` is the transactional outbox, written by `insert_rows` in the
-- commit of the ledger change each event tells. Like entries and debits
-- (version 5) it has no foreign key to wallets: only a writer holding the
-- wallet's row lock writes one. `dispatched` turns true once the event has
-- a delivery for every endpoint that wants it; only undispatched events
-- are indexed, and nodes fanning them out lock them with
-- `FOR UPDATE SKIP LOCKED`, so two nodes fan out different events.
--
-- Counts and numbers that are `u32` in Rust (attempts, an attempt's number,
-- its duration) are `bigint`, so every value maps exactly; HTTP status
-- codes (`u16`) are `integer`, as in `idempotency_keys`.
ALTER TABLE wallets ADD COLUMN low_balance_threshold bigint;

CREATE TABLE events (
    id bytea PRIMARY KEY CHECK (octet_length(id) = 16),
    wallet_id bytea NOT NULL,
    sequence bigint NOT NULL,
    type text NOT NULL,
    occurred_at bigint NOT NULL,
    -- The event's `data` object as JSON text, as delivered.
    data text NOT NULL,
    dispatched boolean NOT NULL DEFAULT false
);
CREATE UNIQUE INDEX events_by_wallet ON events (wallet_id, sequence);
-- A wallet's events newest first (GET /v1/events?wallet_id=).
CREATE INDEX events_of_wallet ON events (wallet_id, id);
CREATE INDEX events_undispatched ON events (id) WHERE NOT dispatched;
-- A claim holds back a wallet's delivery while an earlier event of the wallet
-- is not fanned out yet (another node's fan-out may be in flight).
CREATE INDEX events_undispatched_by_wallet ON events (wallet_id, sequence) WHERE NOT dispatched;

CREATE TABLE webhook_endpoints (
    id bytea PRIMARY KEY CHECK (octet_length(id) = 16),
    url text NOT NULL,
    description text,
    -- A JSON array of event type names (or "*"), as in SQLite.
    event_types text NOT NULL,
    -- Kept as it is: it signs each delivery.
    secret text NOT NULL,
    enabled boolean NOT NULL,
    created_at bigint NOT NULL
);

-- Instants here are wall-clock microseconds. Deleting an endpoint deletes
-- its deliveries and their attempts (`delete_webhook_endpoint` does so
-- itself; the cascades cover a delivery or attempt another node writes
-- meanwhile), and a delivery cannot be written for an endpoint deleted
-- since the events were fanned out.
CREATE TABLE webhook_deliveries (
    id bytea PRIMARY KEY CHECK (octet_length(id) = 16),
    endpoint_id bytea NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_id bytea NOT NULL,
    type text NOT NULL,
    wallet_id bytea NOT NULL,
    sequence bigint NOT NULL,
    -- 'pending', 'succeeded' or 'failed'.
    status text NOT NULL,
    attempts bigint NOT NULL,
    next_attempt_at bigint,
    retry_from bigint NOT NULL,
    -- The attempts made before retry_from (0, or as many as at its redelivery).
    attempts_before_retry bigint NOT NULL DEFAULT 0,
    created_at bigint NOT NULL,
    last_attempt_at bigint,
    last_status_code integer,
    last_error text
);
CREATE UNIQUE INDEX deliveries_by_endpoint ON webhook_deliveries (endpoint_id, id);
CREATE UNIQUE INDEX deliveries_of_event ON webhook_deliveries (event_id, endpoint_id);
-- A wallet's pending deliveries to an endpoint, in order: only the first is sent.
CREATE UNIQUE INDEX deliveries_pending ON webhook_deliveries (endpoint_id, wallet_id, sequence)
    WHERE status = 'pending';
CREATE INDEX deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';

CREATE TABLE webhook_attempts (
    delivery_id bytea NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    number bigint NOT NULL,
    at bigint NOT NULL,
    status_code integer,
    error text,
    duration_ms bigint NOT NULL,
    PRIMARY KEY (delivery_id, number)
);
