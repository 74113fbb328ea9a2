-- Issue 14, points 3, 5, 6.
-- Identity verification: nothing runs at any processor while `verified` = 0.
ALTER TABLE requests ADD COLUMN verified INTEGER NOT NULL DEFAULT 1;
-- A follow-up erasure names the erasure whose subject re-appeared.
ALTER TABLE requests ADD COLUMN follows TEXT;
-- The daemon reports a request nearing its deadline once: when it did.
ALTER TABLE requests ADD COLUMN deadline_warned_at INTEGER;
CREATE INDEX requests_follows ON requests (follows);

-- Suppression: one keyed hash (HMAC) per identity of an erasure, never the
-- identity itself. Written when the request is filed with `active` = 0, and
-- made active in the transaction that completes the erasure. No foreign key:
-- an entry outlives its request row (that is its purpose).
CREATE TABLE suppression (
    hash       TEXT NOT NULL,
    kind       TEXT NOT NULL,
    request_id TEXT NOT NULL,
    masked     TEXT NOT NULL,
    active     INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (hash, request_id)
);
CREATE INDEX suppression_request ON suppression (request_id);

-- Durable timers (`[suppression] check_every`, `[sla]` scan): the next run is a row.
CREATE TABLE timers (
    name   TEXT PRIMARY KEY,
    run_at INTEGER NOT NULL
);
