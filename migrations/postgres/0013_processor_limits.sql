-- Exact cluster-wide limits (issue 12.3): one row per processor, written from
-- the config when a worker starts. A step is claimed only while fewer than
-- `concurrency` steps of its processor are `running` (the slot is the running
-- step itself: applying its result or the expiry of its lease gives it back)
-- and, if the processor is rated, a whole token is in its bucket. Tokens are
-- counted in millionths and refilled by the database's clock: `rate_milli` is
-- calls per 1000 seconds, i.e. millionths of a token per millisecond.
CREATE TABLE processor_limits (
    processor   TEXT PRIMARY KEY,
    concurrency BIGINT NOT NULL,
    rate_milli  BIGINT,
    burst       BIGINT NOT NULL,
    tokens      BIGINT NOT NULL,
    refilled_at BIGINT NOT NULL
);
CREATE INDEX steps_running_processor ON steps (processor) WHERE state = 'running';
