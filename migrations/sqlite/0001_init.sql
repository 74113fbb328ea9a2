-- lethe schema, SQLite. Times are milliseconds since the Unix epoch (UTC).
CREATE TABLE requests (
    id              TEXT PRIMARY KEY,
    kind            TEXT NOT NULL,
    workflow        TEXT NOT NULL,
    status          TEXT NOT NULL,
    cancelled       INTEGER NOT NULL DEFAULT 0,
    received_at     INTEGER NOT NULL,
    due_at          INTEGER NOT NULL,
    completed_at    INTEGER,
    extended_reason TEXT,
    external_id     TEXT UNIQUE,
    subject_hash    TEXT NOT NULL,
    subject_masked  TEXT NOT NULL,
    identities      BLOB,
    callback_url    TEXT,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX requests_status ON requests (status);
CREATE INDEX requests_subject ON requests (subject_hash);
CREATE INDEX requests_received ON requests (received_at);

CREATE TABLE steps (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id       TEXT NOT NULL REFERENCES requests (id),
    processor        TEXT NOT NULL,
    connector        TEXT NOT NULL,
    category         TEXT NOT NULL,
    action           TEXT NOT NULL,
    wave             INTEGER NOT NULL,
    state            TEXT NOT NULL,
    phase            TEXT NOT NULL,
    outcome          TEXT,
    attempts         INTEGER NOT NULL DEFAULT 0,
    run_at           INTEGER NOT NULL,
    lease_owner      TEXT,
    lease_expires_at INTEGER,
    last_error       TEXT,
    error_class      TEXT,
    evidence         TEXT,
    hold_basis       TEXT,
    hold_until       INTEGER,
    grace_until      INTEGER,
    started_at       INTEGER,
    finished_at      INTEGER,
    updated_at       INTEGER NOT NULL,
    UNIQUE (request_id, processor)
);
CREATE INDEX steps_due ON steps (state, run_at);
CREATE INDEX steps_request ON steps (request_id, wave);

CREATE TABLE events (
    seq        INTEGER PRIMARY KEY,
    at         INTEGER NOT NULL,
    request_id TEXT,
    step_id    INTEGER,
    kind       TEXT NOT NULL,
    detail     TEXT NOT NULL,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL
);
CREATE INDEX events_request ON events (request_id);
