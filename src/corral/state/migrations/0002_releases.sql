-- 0002_releases: numbered, immutable releases of a fleet and the instances they started.
--
-- A release records one `corral deploy` or `corral rollback` attempt: every role's image
-- and run configuration (`roles`, a JSON object with sorted keys). Numbers are per fleet,
-- allocated as max + 1 inside BEGIN IMMEDIATE; failed attempts keep theirs.

CREATE TABLE releases (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    fleet       TEXT    NOT NULL,
    number      INTEGER NOT NULL CHECK (number > 0),
    kind        TEXT    NOT NULL CHECK (kind IN ('deploy', 'rollback')),
    status      TEXT    NOT NULL
                CHECK (status IN ('deploying', 'active', 'superseded', 'failed', 'aborted')),
    roles       TEXT    NOT NULL DEFAULT '{}',
    source      INTEGER CHECK (source > 0),
    message     TEXT,
    started_at  TEXT    NOT NULL,
    finished_at TEXT,
    user        TEXT    NOT NULL,
    pid         INTEGER NOT NULL,
    host        TEXT    NOT NULL,
    UNIQUE (fleet, number),
    -- a rollback names the release it rolled back to; a deploy does not
    CHECK ((kind = 'rollback') = (source IS NOT NULL))
);

-- At most one active release per fleet.
CREATE UNIQUE INDEX releases_one_active ON releases (fleet) WHERE status = 'active';
CREATE INDEX releases_by_status ON releases (status);

-- Releases are immutable apart from their status, message and finished_at.
CREATE TRIGGER releases_immutable BEFORE UPDATE ON releases
WHEN NEW.id IS NOT OLD.id
  OR NEW.fleet IS NOT OLD.fleet
  OR NEW.number IS NOT OLD.number
  OR NEW.kind IS NOT OLD.kind
  OR NEW.roles IS NOT OLD.roles
  OR NEW.source IS NOT OLD.source
  OR NEW.started_at IS NOT OLD.started_at
  OR NEW.user IS NOT OLD.user
  OR NEW.pid IS NOT OLD.pid
  OR NEW.host IS NOT OLD.host
BEGIN
    SELECT RAISE(ABORT, 'releases are immutable: only status, message and finished_at change');
END;

-- Status only moves forward: deploying -> active | failed | aborted, active -> superseded.
CREATE TRIGGER releases_status_flow BEFORE UPDATE OF status ON releases
WHEN NEW.status IS NOT OLD.status
 AND NOT (OLD.status = 'deploying' AND NEW.status IN ('active', 'failed', 'aborted'))
 AND NOT (OLD.status = 'active' AND NEW.status = 'superseded')
BEGIN
    SELECT RAISE(ABORT, 'a release status only moves deploying -> active/failed/aborted, active -> superseded');
END;

-- One row per container corral started. A name is unique per fleet among live
-- (un-retired) instances; retired rows stay as history.
CREATE TABLE instances (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    fleet       TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    role        TEXT    NOT NULL,
    "release"   INTEGER NOT NULL,
    image_id    TEXT    NOT NULL,
    started_at  TEXT    NOT NULL,
    retired_at  TEXT,
    outcome     TEXT,
    CHECK ((retired_at IS NULL) = (outcome IS NULL)),
    FOREIGN KEY (fleet, "release") REFERENCES releases (fleet, number)
);

CREATE UNIQUE INDEX instances_live_name ON instances (fleet, name) WHERE retired_at IS NULL;
CREATE INDEX instances_by_fleet ON instances (fleet, id);
