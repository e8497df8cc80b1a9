-- 0008_volumes: data volumes as objects of their own, recorded when a deploy creates them.
--
-- Instances are cattle; volumes are not. One row per engine volume of a fleet (its name
-- is <fleet>-<role>-<volume>), kept after the spec stops naming it (retained = 1, with
-- the reason) and after it is deleted (deleted_at): the state, not the spec, says a volume
-- holds data that must not be lost. The backup columns are written by `corral backup`
-- (last_backup_*) and by its restore drill (last_verified_*).

CREATE TABLE volumes (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    fleet                TEXT    NOT NULL,
    name                 TEXT    NOT NULL,  -- the engine's name
    role                 TEXT    NOT NULL,
    volume               TEXT    NOT NULL,  -- the name in the role's spec
    path                 TEXT    NOT NULL,  -- where the role mounted it last
    created_at           TEXT    NOT NULL,
    created_release      INTEGER,
    protection           TEXT    NOT NULL DEFAULT 'protected'
                                 CHECK (protection IN ('protected')),
    retained             INTEGER NOT NULL DEFAULT 0 CHECK (retained IN (0, 1)),
    retained_reason      TEXT,
    retained_at          TEXT,
    last_backup_at       TEXT,
    last_backup_snapshot TEXT,
    last_verified_at     TEXT,
    last_verified_snapshot TEXT,
    deleted_at           TEXT,
    UNIQUE (fleet, name)
);
