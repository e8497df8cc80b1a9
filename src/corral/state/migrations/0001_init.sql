-- 0001_init: builds, images and the append-only audit log.
--
-- Migrations run in file-name order, each in its own BEGIN IMMEDIATE transaction;
-- afterwards PRAGMA user_version is set to the file's number. To change the schema,
-- add 0002_<what>.sql next to this file; never edit a migration that has shipped.

CREATE TABLE builds (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    fleet        TEXT    NOT NULL,
    role         TEXT    NOT NULL,
    number       INTEGER NOT NULL CHECK (number > 0),
    content_hash TEXT    NOT NULL,
    status       TEXT    NOT NULL
                 CHECK (status IN ('running', 'ok', 'failed', 'interrupted')),
    started_at   TEXT    NOT NULL,
    finished_at  TEXT,
    image_id     TEXT,
    tag          TEXT,
    error        TEXT,
    pid          INTEGER NOT NULL,
    user         TEXT    NOT NULL,
    host         TEXT    NOT NULL,
    UNIQUE (fleet, role, number)
);

CREATE INDEX builds_by_status ON builds (status);

CREATE TABLE images (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    build_id     INTEGER NOT NULL UNIQUE REFERENCES builds (id),
    fleet        TEXT    NOT NULL,
    role         TEXT    NOT NULL,
    number       INTEGER NOT NULL,
    content_hash TEXT    NOT NULL,
    version      TEXT    NOT NULL,
    tag          TEXT    NOT NULL,
    image_id     TEXT    NOT NULL,
    digest       TEXT    NOT NULL,
    built_at     TEXT    NOT NULL,
    git_commit   TEXT,
    git_dirty    INTEGER NOT NULL CHECK (git_dirty IN (0, 1)),
    labels       TEXT    NOT NULL DEFAULT '{}',
    UNIQUE (fleet, role, number)
);

CREATE INDEX images_by_hash ON images (fleet, role, content_hash, number);

CREATE TABLE audit (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      TEXT NOT NULL,
    user    TEXT NOT NULL,
    fleet   TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT NOT NULL,
    outcome TEXT NOT NULL,
    details TEXT NOT NULL DEFAULT '{}'
);

CREATE INDEX audit_by_fleet ON audit (fleet, id);
CREATE INDEX audit_by_action ON audit (action, id);

-- The audit log is append-only: rows can be inserted, never changed or removed.
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only: rows cannot be updated');
END;

CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only: rows cannot be deleted');
END;
