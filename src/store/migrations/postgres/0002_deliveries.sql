-- Webhook deliveries in the store (issue 25): any process with a store writes
-- a verified delivery here; the worker holding the task's wait applies it.
-- A wait's task id as a delivery names it (no inputs), filled in by the store
-- for waits added before this migration (see SqlStore::new).
ALTER TABLE taskpoll_waits ADD COLUMN task_id TEXT;
CREATE INDEX taskpoll_waits_task_id ON taskpoll_waits (provider, task_id);
-- One finished task's verified delivery per (provider, task id); `seq` orders
-- them for dropping the oldest first.
CREATE TABLE taskpoll_deliveries (
    provider TEXT NOT NULL,
    task_id TEXT NOT NULL,
    seq BIGSERIAL NOT NULL,
    task TEXT NOT NULL,                 -- the verified Task, JSON
    received_at_ms BIGINT NOT NULL,
    PRIMARY KEY (provider, task_id)
);
CREATE INDEX taskpoll_deliveries_age ON taskpoll_deliveries (provider, seq);
-- Deliveries dropped, per provider: over the capacity (oldest first) or expired.
CREATE TABLE taskpoll_delivery_drops (
    provider TEXT PRIMARY KEY,
    over_capacity BIGINT NOT NULL DEFAULT 0,
    expired BIGINT NOT NULL DEFAULT 0
);
