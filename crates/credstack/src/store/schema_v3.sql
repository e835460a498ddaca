-- Version 3: operator console sessions. The cookie carries a random token;
-- only its SHA-256 is stored, like API key secrets.

CREATE TABLE console_sessions (
    token_hash BLOB PRIMARY KEY,
    -- The synchronizer token every console form must send back.
    csrf_token TEXT NOT NULL,
    api_key_id BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX console_sessions_by_expiry ON console_sessions (expires_at);
