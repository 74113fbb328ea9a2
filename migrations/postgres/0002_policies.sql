-- Ad-hoc legal holds (litigation) and per-processor health (pausing a processor that fails every call).
CREATE TABLE holds (
    id             TEXT PRIMARY KEY,
    subject_hash   TEXT NOT NULL,
    subject_masked TEXT NOT NULL,
    basis          TEXT NOT NULL,
    until_at       BIGINT,
    processor      TEXT,
    created_at     BIGINT NOT NULL,
    released_at    BIGINT
);
CREATE INDEX holds_subject ON holds (subject_hash);

CREATE TABLE processor_health (
    processor            TEXT PRIMARY KEY,
    consecutive_failures BIGINT NOT NULL DEFAULT 0,
    paused_until         BIGINT,
    last_error           TEXT,
    updated_at           BIGINT NOT NULL
);
