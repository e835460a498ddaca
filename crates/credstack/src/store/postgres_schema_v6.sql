-- credstack PostgreSQL store, version 6: entries form a hash chain per
-- wallet (issue 7). Each entry's `hash` is SHA-256 of the previous entry's
-- hash and the entry itself (`EntryRecord::chain`), so `credstack verify`
-- detects an entry edited, deleted or inserted behind the ledger's back.
-- Entries written before this version get their hashes from the migration
-- (`backfill_entry_hashes`), wallet by wallet in sequence order; the
-- default only stands in until then.
ALTER TABLE entries ADD COLUMN hash bytea NOT NULL DEFAULT '\x';
ALTER TABLE entries ALTER COLUMN hash DROP DEFAULT;
