-- credstack PostgreSQL store, version 7: one index fewer to write per entry
-- (issue 6). A wallet's entries never go back in time (the writer dates each
-- no earlier than the one before, `EntryRecord::append_to`, whatever the
-- clocks of the nodes that write it), so history at an instant finds its
-- entry by bisecting the primary key (wallet_id, sequence) instead of
-- through an index on (wallet_id, occurred_at).
DROP INDEX IF EXISTS entries_by_time;
