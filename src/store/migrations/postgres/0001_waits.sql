-- Every wait, waiting or finished. `task` is the task reference as text
-- (provider:id with its inputs), one row per task.
CREATE TABLE taskpoll_waits (
    id BIGSERIAL PRIMARY KEY,
    provider TEXT NOT NULL,
    task TEXT NOT NULL UNIQUE,
    options TEXT NOT NULL,          -- StoredOptions, JSON
    state TEXT NOT NULL,            -- WaitState, JSON (the saved schedule and deadline)
    due_at_ms BIGINT NOT NULL,     -- when the next poll is due (Unix ms)
    worker TEXT,                    -- who holds it while its lease lives (NULL: nobody)
    finished_at_ms BIGINT,         -- NULL while waiting
    outcome TEXT,                   -- OutcomeBody, JSON
    consumed BOOLEAN NOT NULL DEFAULT FALSE
);
-- Claiming: a provider's unfinished waits by due time.
CREATE INDEX taskpoll_waits_due ON taskpoll_waits (provider, due_at_ms) WHERE finished_at_ms IS NULL;
-- Handing back the waits of a worker whose lease ran out.
CREATE INDEX taskpoll_waits_worker ON taskpoll_waits (worker) WHERE finished_at_ms IS NULL;
-- Reading outcomes not yet consumed, in the order they were written.
CREATE INDEX taskpoll_waits_outcomes ON taskpoll_waits (finished_at_ms, id) WHERE finished_at_ms IS NOT NULL AND NOT consumed;
-- One lease per worker: renewing it is one row however many waits it holds.
CREATE TABLE taskpoll_workers (
    worker TEXT PRIMARY KEY,
    lease_until_ms BIGINT NOT NULL
);
-- A provider's rate budget shared by every process: a token bucket.
-- `granted` is what the last take got (returned by the same UPDATE).
CREATE TABLE taskpoll_budgets (
    provider TEXT PRIMARY KEY,
    tokens DOUBLE PRECISION NOT NULL,
    refilled_at_ms BIGINT NOT NULL,
    granted BIGINT NOT NULL DEFAULT 0
);
