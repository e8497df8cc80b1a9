-- 0008_reserved: kept free for the volume records (branch wip/volumes), which the lead
-- merges here; on this branch it changes nothing, so 0009 follows without a gap.
CREATE TABLE IF NOT EXISTS corral_reserved_0008 (id INTEGER PRIMARY KEY);
DROP TABLE corral_reserved_0008;
