-- Live workers (daemons and `run` processes), for limits shared by the whole cluster;
-- and an index so the next due step is found without scanning every waiting step.
CREATE TABLE workers (
    id           TEXT PRIMARY KEY,
    started_at   BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL
);
CREATE INDEX steps_run_at ON steps (run_at);
