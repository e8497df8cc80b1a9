-- 0004_release_outcomes: a release that failed and was taken back is `rolled-back`, not
-- `failed`; every finished release may keep why (`failure`, scrubbed JSON: the failing
-- roles, the assertion or HTTP answer, the instances' last log lines).
--
-- SQLite cannot change a CHECK in place: both tables are copied aside, made again and
-- filled back, parents first, so the instances' foreign key holds throughout (foreign
-- keys stay on; PRAGMA foreign_keys cannot change inside a transaction).

CREATE TABLE releases_0003 AS SELECT * FROM releases;
CREATE TABLE instances_0003 AS SELECT * FROM instances;
DROP TABLE instances;
DROP TABLE releases;

CREATE TABLE releases (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    fleet       TEXT    NOT NULL,
    number      INTEGER NOT NULL CHECK (number > 0),
    kind        TEXT    NOT NULL CHECK (kind IN ('deploy', 'rollback')),
    status      TEXT    NOT NULL
                CHECK (status IN ('deploying', 'active', 'superseded', 'failed',
                                  'rolled-back', 'aborted')),
    roles       TEXT    NOT NULL DEFAULT '{}',
    source      INTEGER CHECK (source > 0),
    message     TEXT,
    failure     TEXT    NOT NULL DEFAULT '{}',
    started_at  TEXT    NOT NULL,
    finished_at TEXT,
    user        TEXT    NOT NULL,
    pid         INTEGER NOT NULL,
    host        TEXT    NOT NULL,
    UNIQUE (fleet, number),
    -- a rollback names the release it rolled back to; a deploy does not
    CHECK ((kind = 'rollback') = (source IS NOT NULL))
);

CREATE UNIQUE INDEX releases_one_active ON releases (fleet) WHERE status = 'active';
CREATE INDEX releases_by_status ON releases (status);

-- Releases are immutable apart from their status, message, failure and finished_at.
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
    SELECT RAISE(ABORT, 'releases are immutable: only status, message, failure and finished_at change');
END;

-- Status only moves forward: deploying -> active | failed | rolled-back | aborted,
-- active -> superseded. A finished release is never relabelled.
CREATE TRIGGER releases_status_flow BEFORE UPDATE OF status ON releases
WHEN NEW.status IS NOT OLD.status
 AND NOT (OLD.status = 'deploying' AND NEW.status IN ('active', 'failed', 'rolled-back', 'aborted'))
 AND NOT (OLD.status = 'active' AND NEW.status = 'superseded')
BEGIN
    SELECT RAISE(ABORT, 'a release status only moves deploying -> active/failed/rolled-back/aborted, active -> superseded');
END;

-- Why a release ended is written once, when it ends.
CREATE TRIGGER releases_failure_once BEFORE UPDATE OF failure ON releases
WHEN NEW.failure IS NOT OLD.failure AND OLD.status IS NOT 'deploying'
BEGIN
    SELECT RAISE(ABORT, 'a release''s failure is written once, when it finishes');
END;

INSERT INTO releases (id, fleet, number, kind, status, roles, source, message, started_at,
                      finished_at, user, pid, host)
    SELECT id, fleet, number, kind, status, roles, source, message, started_at, finished_at,
           user, pid, host
    FROM releases_0003 ORDER BY id;

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

INSERT INTO instances SELECT * FROM instances_0003 ORDER BY id;

DROP TABLE instances_0003;
DROP TABLE releases_0003;
