-- How long tasks took, as the waits that saw them end learned it (issue 24):
-- the learned schedule of a worker that starts (or restarts) reads these, so
-- it starts warm. Kept per provider and duration key ('' for none), the
-- newest few hundred (the rest are deleted as new ones come).
CREATE TABLE taskpoll_durations (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    provider TEXT NOT NULL,
    duration_key TEXT NOT NULL,
    after_ms INTEGER NOT NULL,      -- still running this long after its wait started
    by_ms INTEGER NOT NULL          -- and seen ended by then
);
CREATE INDEX taskpoll_durations_lane ON taskpoll_durations (provider, duration_key, seq);
