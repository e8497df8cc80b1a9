-- 0005_replacements: how long each stop-first replacement left a role unavailable.
--
-- A role with a single-writer volume is replaced stop-first: its old instance is gone
-- before the new one starts, so it serves nothing in between. One row per such
-- replacement, measured from the old instance leaving service to the new one serving;
-- `corral plan` shows a role's newest row as the estimate of its next outage.

CREATE TABLE replacements (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    fleet         TEXT    NOT NULL,
    role          TEXT    NOT NULL,
    "release"     INTEGER NOT NULL CHECK ("release" >= 0),
    unavailable_s REAL    NOT NULL CHECK (unavailable_s >= 0),
    at            TEXT    NOT NULL
);

CREATE INDEX replacements_by_role ON replacements (fleet, role, id);
