-- credstack embedded store, version 4: a version per wallet, added to by
-- every write of the wallet's state. The writer keeps wallet states in
-- memory and compares versions under the write lock, so a state written by
-- another process (or restored from a backup) is never overwritten by a
-- stale copy. PostgreSQL has had the column since its version 1.
ALTER TABLE wallets ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
