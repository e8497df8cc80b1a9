-- 0008_ancestry: which base each image was built from, its package list, and revocations.
--
-- (Numbered 0010 on main once the other helpers' 0008 and 0009 are in: renumber at merge.)
--
-- A base is one engine image (a Debian bootstrap, a named image, a Containerfile build)
-- that role images are built on. Its ``line`` names what it is a base *of* (for Debian:
-- suite, variant and packages, not the mirror): a refreshed base, from the same archive or
-- a later snapshot, is a newer base of the same line, and an image on an older one is
-- outdated. Revocations are append-only: undoing one is a new row, never an edit.

CREATE TABLE bases (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    fleet       TEXT NOT NULL,
    image_id    TEXT NOT NULL,  -- the engine's id of the base image
    digest      TEXT NOT NULL,
    line        TEXT NOT NULL,  -- e.g. debian:bookworm:apt:1f2e3d4c5b6a
    ref         TEXT NOT NULL,  -- the tag or reference it was found under
    created_at  TEXT NOT NULL,  -- when the base was made (the engine's creation time), UTC
    source      TEXT NOT NULL,  -- the archive or snapshot it came from, or the image named
    recorded_at TEXT NOT NULL,
    UNIQUE (fleet, image_id)
);

CREATE INDEX bases_by_line ON bases (fleet, line, created_at);

-- The base's engine id; NULL for images baked before this migration.
ALTER TABLE images ADD COLUMN base_id TEXT;

CREATE TABLE image_packages (
    fleet   TEXT    NOT NULL,
    role    TEXT    NOT NULL,
    number  INTEGER NOT NULL,  -- the image's (fleet, role, number) in images
    name    TEXT    NOT NULL,
    version TEXT    NOT NULL,
    PRIMARY KEY (fleet, role, number, name)
);

CREATE INDEX image_packages_by_name ON image_packages (fleet, name);

CREATE TABLE revocations (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    fleet   TEXT NOT NULL,
    kind    TEXT NOT NULL CHECK (kind IN ('image', 'base')),
    target  TEXT NOT NULL,  -- the engine id of the image or base
    action  TEXT NOT NULL CHECK (action IN ('revoke', 'undo')),
    reason  TEXT NOT NULL,
    at      TEXT NOT NULL,
    user    TEXT NOT NULL
);

CREATE INDEX revocations_by_target ON revocations (fleet, kind, target, id);

CREATE TRIGGER revocations_no_update BEFORE UPDATE ON revocations
BEGIN
    SELECT RAISE(ABORT, 'revocations are append-only: rows cannot be updated');
END;

CREATE TRIGGER revocations_no_delete BEFORE DELETE ON revocations
BEGIN
    SELECT RAISE(ABORT, 'revocations are append-only: rows cannot be deleted');
END;
