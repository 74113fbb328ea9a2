-- Retention schedules (workflow `[[schedule]]`): one row per (schedule, processor),
-- with the durable time of its next run. The daemon wakes for `next_run_at`
-- like it does for a step's `run_at`.
CREATE TABLE schedules (
    name          TEXT NOT NULL,
    processor     TEXT NOT NULL,
    workflow      TEXT NOT NULL,
    older_than_ms BIGINT NOT NULL,
    every_ms      BIGINT NOT NULL,
    next_run_at   BIGINT NOT NULL,
    last_run_id   TEXT,
    updated_at    BIGINT NOT NULL,
    PRIMARY KEY (name, processor)
);

-- One sweep run: claimed with a lease and a fencing token like a step.
-- `cutoff_at` is fixed when the run is created, so a run taken over after a
-- crash sweeps exactly the same period. States: pending (due at run_at),
-- running (leased), done, failed.
CREATE TABLE sweep_runs (
    id               TEXT PRIMARY KEY,
    schedule         TEXT NOT NULL,
    processor        TEXT NOT NULL,
    started_by       TEXT NOT NULL,
    state            TEXT NOT NULL,
    cutoff_at        BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    run_at           BIGINT NOT NULL,
    started_at       BIGINT,
    finished_at      BIGINT,
    lease_owner      TEXT,
    lease_expires_at BIGINT,
    lease_token      BIGINT NOT NULL DEFAULT 0,
    attempts         BIGINT NOT NULL DEFAULT 0,
    last_error       TEXT,
    updated_at       BIGINT NOT NULL
);
CREATE INDEX sweep_runs_due ON sweep_runs (state, run_at);
CREATE INDEX sweep_runs_schedule ON sweep_runs (schedule, processor, created_at);

-- What one run found and what the processor's answer proved about each item.
-- Never a file name or object key in clear: `item_hash` is a keyed hash;
-- `reference` holds a pure id (a ticket number) or nothing.
-- States: pending (listed, no proof yet), removed (the answer proves it),
-- failed (the answer refused it).
CREATE TABLE sweep_items (
    run_id      TEXT NOT NULL REFERENCES sweep_runs (id),
    item_hash   TEXT NOT NULL,
    kind        TEXT NOT NULL,
    reference   TEXT,
    size        BIGINT,
    modified_at BIGINT,
    state       TEXT NOT NULL,
    evidence    TEXT,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (run_id, item_hash)
);
