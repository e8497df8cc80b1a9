-- 0007_locks: named locks as leases recorded in the state, not flocks on one host's files.
--
-- A shared state (several hosts deploying one fleet) cannot rely on a kernel lock or on
-- a PID: a row here says who holds a lock and until when. The holder renews expires_at
-- while it works; another process may take the lock only once expires_at has passed
-- (or, on the holder's own host, once its pid is gone). Releasing deletes the row.

CREATE TABLE locks (
    name        TEXT    PRIMARY KEY,
    lease       TEXT    NOT NULL,  -- random per acquisition: renewals and release name it
    holder      TEXT    NOT NULL,  -- random per process: pids repeat across hosts
    user        TEXT    NOT NULL,
    host        TEXT    NOT NULL,
    pid         INTEGER NOT NULL,
    command     TEXT    NOT NULL,  -- what the holder does, e.g. "deploy web"
    acquired_at TEXT    NOT NULL,  -- UTC, as every time in the state
    expires_at  REAL    NOT NULL   -- Unix seconds: compared, never only shown
);
