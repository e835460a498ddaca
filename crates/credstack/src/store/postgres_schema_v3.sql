-- credstack PostgreSQL store, version 3: ended calls to all customers stay
-- in `bulk_runs` with their outcome; SQLite version 6 explains the columns.
ALTER TABLE bulk_runs ADD COLUMN total bigint;
ALTER TABLE bulk_runs ADD COLUMN finished_at bigint;
ALTER TABLE bulk_runs ADD COLUMN error text;
