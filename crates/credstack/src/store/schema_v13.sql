-- credstack embedded store, version 13: entries kept in the order they are
-- written (issue 6). Keyed by (wallet_id, sequence), each merge wrote its
-- entries all over the table (one leaf page per wallet touched, each ~200
-- bytes a row) and SQLite wrote every such page twice, to the WAL and back;
-- as the table grew, more of each merge's pages were distinct. As a rowid
-- table the rows are appended, and only the narrow index on (wallet_id,
-- sequence) takes a page per wallet. BENCHMARKS.md section 6 has the
-- figures. The copy runs once, in id (creation) order.
CREATE TABLE entries_v13 (
    wallet_id BLOB NOT NULL REFERENCES wallets(id),
    sequence INTEGER NOT NULL,
    id BLOB NOT NULL,
    type TEXT NOT NULL,
    amount INTEGER NOT NULL,
    balance_after INTEGER NOT NULL,
    occurred_at INTEGER NOT NULL,
    grant_id BLOB,
    reference TEXT NOT NULL,
    hash BLOB NOT NULL
);
INSERT INTO entries_v13 (wallet_id, sequence, id, type, amount, balance_after,
        occurred_at, grant_id, reference, hash)
    SELECT wallet_id, sequence, id, type, amount, balance_after,
        occurred_at, grant_id, reference, hash
    FROM entries ORDER BY id;
DROP TABLE entries;
ALTER TABLE entries_v13 RENAME TO entries;
CREATE UNIQUE INDEX entries_by_wallet ON entries (wallet_id, sequence);
CREATE UNIQUE INDEX entries_by_id ON entries (id);
