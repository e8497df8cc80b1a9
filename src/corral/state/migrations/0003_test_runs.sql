-- 0003_test_runs: the results of `corral test`, bound to the exact image digest.
--
-- One row per role per test run: the image tested (id, digest, version), whether it
-- passed, every check (`checks`, a JSON array of objects with name, kind, outcome,
-- seconds and message), how long it took and a scrubbed excerpt of the test log.
-- The deploy gate looks for a passed run of the digest it is about to deploy.

CREATE TABLE test_runs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    fleet         TEXT    NOT NULL,
    role          TEXT    NOT NULL,
    image_id      TEXT    NOT NULL,
    image_digest  TEXT    NOT NULL,
    image_version TEXT    NOT NULL,
    outcome       TEXT    NOT NULL CHECK (outcome IN ('passed', 'failed')),
    checks        TEXT    NOT NULL DEFAULT '[]',
    seconds       REAL    NOT NULL CHECK (seconds >= 0),
    log_excerpt   TEXT    NOT NULL DEFAULT '',
    started_at    TEXT    NOT NULL,
    user          TEXT    NOT NULL
);

CREATE INDEX test_runs_by_role ON test_runs (fleet, role, id);
CREATE INDEX test_runs_by_digest ON test_runs (fleet, role, image_digest, outcome, id);

-- Test runs are append-only: a result, once recorded, is never changed or removed.
CREATE TRIGGER test_runs_no_update BEFORE UPDATE ON test_runs
BEGIN
    SELECT RAISE(ABORT, 'test runs are append-only: rows cannot be updated');
END;

CREATE TRIGGER test_runs_no_delete BEFORE DELETE ON test_runs
BEGIN
    SELECT RAISE(ABORT, 'test runs are append-only: rows cannot be deleted');
END;
