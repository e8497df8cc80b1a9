-- 0013_backups_pruned: a backup row whose snapshot `corral backup --prune` removed.
--
-- The row stays (the history of what was backed up, when, and proven how), with the time
-- the prune removed its snapshot: a pruned backup is never restored, verified or counted
-- as a recent verified backup.

ALTER TABLE backups ADD COLUMN pruned_at TEXT;
