-- 0012_volumes: data volumes as objects of their own, recorded when a deploy creates them.
--
-- Instances are cattle; volumes are not. One row per engine volume of a fleet (its name
-- is <fleet>-<role>-<volume>, or a restored copy's), kept after the spec stops naming it
-- (retained = 1, with the reason) and after it is deleted (deleted_at): the state, not
-- the spec, says a volume holds data that must not be lost. Its backups and restore
-- drills are the `backups` table's rows (0011) for this engine volume: one record only.

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
    deleted_at           TEXT,
    UNIQUE (fleet, name)
);
