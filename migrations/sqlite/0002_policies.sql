-- Ad-hoc legal holds (litigation) and per-processor health (pausing a processor that fails every call).
CREATE TABLE holds (
    id             TEXT PRIMARY KEY,
    subject_hash   TEXT NOT NULL,
    subject_masked TEXT NOT NULL,
    basis          TEXT NOT NULL,
    until_at       INTEGER,
    processor      TEXT,
    created_at     INTEGER NOT NULL,
    released_at    INTEGER
);
CREATE INDEX holds_subject ON holds (subject_hash);

CREATE TABLE processor_health (
    processor            TEXT PRIMARY KEY,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    paused_until         INTEGER,
    last_error           TEXT,
    updated_at           INTEGER NOT NULL
);
