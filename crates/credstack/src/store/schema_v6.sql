-- credstack embedded store, version 6: a call to all customers stays in
-- `bulk_runs` once it ends, until the campaign's next call replaces it, so
-- any node can show its progress and outcome (the console's job card):
-- `total` is the customers it expected to consider (when the caller knew),
-- `finished_at` when it ended, `error` why it failed, if it did.
ALTER TABLE bulk_runs ADD COLUMN total INTEGER;
ALTER TABLE bulk_runs ADD COLUMN finished_at INTEGER;
ALTER TABLE bulk_runs ADD COLUMN error TEXT;
