-- lethe schema, PostgreSQL. Times are milliseconds since the Unix epoch (UTC).
CREATE TABLE requests (
    id              TEXT PRIMARY KEY,
    kind            TEXT NOT NULL,
    workflow        TEXT NOT NULL,
    status          TEXT NOT NULL,
    cancelled       BIGINT NOT NULL DEFAULT 0,
    received_at     BIGINT NOT NULL,
    due_at          BIGINT NOT NULL,
    completed_at    BIGINT,
    extended_reason TEXT,
    external_id     TEXT UNIQUE,
    subject_hash    TEXT NOT NULL,
    subject_masked  TEXT NOT NULL,
    identities      BYTEA,
    callback_url    TEXT,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX requests_status ON requests (status);
CREATE INDEX requests_subject ON requests (subject_hash);
CREATE INDEX requests_received ON requests (received_at);

CREATE TABLE steps (
    id               BIGSERIAL PRIMARY KEY,
    request_id       TEXT NOT NULL REFERENCES requests (id),
    processor        TEXT NOT NULL,
    connector        TEXT NOT NULL,
    category         TEXT NOT NULL,
    action           TEXT NOT NULL,
    wave             BIGINT NOT NULL,
    state            TEXT NOT NULL,
    phase            TEXT NOT NULL,
    outcome          TEXT,
    attempts         BIGINT NOT NULL DEFAULT 0,
    run_at           BIGINT NOT NULL,
    lease_owner      TEXT,
    lease_expires_at BIGINT,
    last_error       TEXT,
    error_class      TEXT,
    evidence         TEXT,
    hold_basis       TEXT,
    hold_until       BIGINT,
    grace_until      BIGINT,
    started_at       BIGINT,
    finished_at      BIGINT,
    updated_at       BIGINT NOT NULL,
    UNIQUE (request_id, processor)
);
CREATE INDEX steps_due ON steps (state, run_at);
CREATE INDEX steps_request ON steps (request_id, wave);

CREATE TABLE events (
    seq        BIGINT PRIMARY KEY,
    at         BIGINT NOT NULL,
    request_id TEXT,
    step_id    BIGINT,
    kind       TEXT NOT NULL,
    detail     TEXT NOT NULL,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL
);
CREATE INDEX events_request ON events (request_id);
