-- credstack embedded store, version 8: one index fewer to write per entry
-- (issue 6). No query reads entries by grant alone: what a grant held at
-- an instant is summed per wallet through entries_by_time.
DROP INDEX entries_by_grant;
