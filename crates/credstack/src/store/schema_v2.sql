-- Version 2: promotional credits (SPEC rules 19–26).

CREATE TABLE promotional_credits (
    id BLOB PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT,
    credit_system_id BLOB NOT NULL REFERENCES credit_systems(id),
    -- NULL: starts at creation (created_at).
    starts_at INTEGER,
    -- NULL: never ends.
    ends_at INTEGER,
    quantity INTEGER NOT NULL,
    -- 'never', 'day', 'week', 'month' or 'year'.
    reset_interval TEXT NOT NULL,
    -- Both NULL: the access period is forever.
    access_period_value INTEGER,
    access_period_unit TEXT,
    allow_multiple_grants INTEGER NOT NULL,
    -- 1 once any customer has been granted (is_applied).
    applied INTEGER NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE promotion_assignments (
    id BLOB PRIMARY KEY,
    promotional_credit_id BLOB NOT NULL REFERENCES promotional_credits(id),
    customer_id BLOB NOT NULL REFERENCES customers(id),
    wallet_id BLOB NOT NULL REFERENCES wallets(id),
    grant_id BLOB NOT NULL REFERENCES grants(id),
    granted_at INTEGER NOT NULL,
    -- End of the access period; NULL forever.
    expires_at INTEGER,
    revoked_at INTEGER
) WITHOUT ROWID;
CREATE INDEX assignments_by_customer ON promotion_assignments (promotional_credit_id, customer_id);
CREATE INDEX assignments_open ON promotion_assignments (promotional_credit_id, customer_id)
    WHERE revoked_at IS NULL;
-- All-customers grants walk a credit system's wallets in customer order.
CREATE INDEX wallets_by_credit_system_customer ON wallets (credit_system_id, customer_id);
