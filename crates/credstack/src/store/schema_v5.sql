-- credstack embedded store, version 5: calls to all customers of a
-- campaign (SPEC rules 22, 24), one at a time per campaign. The row lives
-- while a call runs; `lease_until` (wall clock) is pushed forward with
-- every chunk, so a call whose process died can be taken over once it
-- passes. `cursor` is the last customer id done, `progress` the counts so
-- far (JSON): a retry with the same idempotency key resumes from there.
CREATE TABLE bulk_runs (
    promotional_credit_id BLOB PRIMARY KEY REFERENCES promotional_credits(id),
    run_id BLOB NOT NULL,
    action TEXT NOT NULL,
    idempotency_key TEXT,
    fingerprint BLOB,
    cursor BLOB,
    progress TEXT NOT NULL,
    lease_until INTEGER NOT NULL
);
