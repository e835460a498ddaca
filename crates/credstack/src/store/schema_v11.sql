-- credstack embedded store, version 11: debit batches are journalled first
-- (issue 6, `store/journal.rs`). `journal.db` beside this file holds each
-- batch as the statements it runs here; the merger runs them many batches at
-- a time and records, in the same transaction, the batch merged through.
CREATE TABLE IF NOT EXISTS journal_merged (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    batch INTEGER NOT NULL
);
INSERT OR IGNORE INTO journal_merged (id, batch) VALUES (1, 0);
