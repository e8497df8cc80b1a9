-- 0010_fleet_ids: the id a fleet's first deploy gives it, one per fleet.
--
-- Every engine object corral creates for the fleet carries this id as a label
-- (io.corral.fleet-id), so a corral whose state does not hold it knows the fleet belongs
-- to another state and refuses to change it. `origin` says how the id got here: a first
-- deploy, an existing fleet adopted, `corral state recover` or `corral state import`.

CREATE TABLE fleets (
    fleet      TEXT PRIMARY KEY,
    fleet_id   TEXT NOT NULL UNIQUE,
    origin     TEXT NOT NULL CHECK (origin IN ('deploy', 'adopt', 'recover')),
    created_at TEXT NOT NULL
);
