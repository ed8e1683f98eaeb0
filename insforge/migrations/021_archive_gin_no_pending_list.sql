-- Issue 17: archive search p95 on PostgreSQL (decision 0010, "The GIN's pending list").
-- With GIN's default fastupdate, the passages an upload commits go to the index's pending list,
-- which every search then reads whole, once per index scan (a search makes two to four):
-- after one upload of 10,000 passages (~250 pages of pending list) the benchmark's `common`
-- p95 was 23 ms against 14-17 ms with the list merged. The list is merged only by the 4 MB
-- limit, VACUUM or gin_clean_pending_list (the index's owner only: not callable by the RPC's
-- role). Uploads are rare and searches run with every message, so the index takes each
-- passage at once: ingest is ~30-45 % slower (in the database part), searches never read a
-- pending list.
ALTER INDEX archive_passages_tsv_idx SET (fastupdate = off);
-- Turning it off leaves what is pending where it is; merge it now (migrations run as owner).
SELECT gin_clean_pending_list('archive_passages_tsv_idx'::regclass);
