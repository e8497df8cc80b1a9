-- 0009_taints: instances corral must burn, kept across processes.
--
-- `corral break-glass` taints the instance it opens a shell in before the shell opens:
-- the row says who and why, and from when the instance is due for replacement (the end
-- of the session, or its time limit if the session's process dies). Until then the
-- watcher holds off (the exec it sees is the session's); from then on every reconcile
-- pass burns it. A row goes when its instance is gone.

CREATE TABLE taints (
    fleet    TEXT NOT NULL,
    instance TEXT NOT NULL,
    reason   TEXT NOT NULL,
    who      TEXT NOT NULL,  -- user@host
    since    TEXT NOT NULL,  -- UTC, as every time in the state
    due      REAL NOT NULL,  -- Unix seconds: replaced from then on
    PRIMARY KEY (fleet, instance)
);
