-- credstack embedded store, version 9: a keyed debit keeps its debit's id
-- instead of its rendered response (issue 6). The debit row never changes,
-- so a replay renders it again to the same bytes; the key's row shrinks
-- from ~350 bytes to ~70. Such rows have status 0 and an empty body.
ALTER TABLE idempotency_keys ADD COLUMN debit_id BLOB;
