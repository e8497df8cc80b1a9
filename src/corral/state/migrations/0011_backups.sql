-- 0011_backups: one row per restic snapshot corral wrote of a volume, and its last proof.
--
-- A row is written when a backup finishes (a snapshot exists in the repository); a
-- failed or killed backup writes none. `corral backup verify` fills verified_at and
-- verify_result ('ok' or 'failed') and verify_detail (why, in words). tree_sha256 is the
-- checksum of a files-mode volume's tree, taken while its writers were paused: a restore
-- of the snapshot must give the same. No secret is ever stored here.

CREATE TABLE backups (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    fleet         TEXT    NOT NULL,
    role          TEXT    NOT NULL,
    volume        TEXT    NOT NULL,
    engine_volume TEXT    NOT NULL,
    snapshot_id   TEXT    NOT NULL,
    mode          TEXT    NOT NULL CHECK (mode IN ('files', 'dump')),
    "release"     INTEGER,
    image_version TEXT    NOT NULL DEFAULT '',
    started       TEXT    NOT NULL,
    finished      TEXT    NOT NULL,
    bytes_added   INTEGER NOT NULL DEFAULT 0,
    tree_sha256   TEXT    NOT NULL DEFAULT '',
    reason        TEXT    NOT NULL DEFAULT '',
    verified_at   TEXT,
    verify_result TEXT CHECK (verify_result IS NULL OR verify_result IN ('ok', 'failed')),
    verify_detail TEXT    NOT NULL DEFAULT ''
);

CREATE INDEX backups_by_volume ON backups (fleet, role, volume, id);
