-- PostgreSQL's own checks on the enumerated text columns and a few sanity
-- rules, so a row lethe would read as corrupt cannot be written in the first
-- place (by lethe or by hand). The values are exactly what the code writes
-- (`as_str` of the domain enums: RequestKind, RequestStatus, StepState,
-- Outcome, Action, Phase; the outbox, suppression and sweep literals).
--
-- NOT VALID: the checks bind every row written from now on, but an existing
-- database whose old rows break one (a hand edit) still migrates; lethe
-- reports such a row as corrupt when it reads it, as before.
--
-- SQLite cannot add a constraint to an existing table without rebuilding it:
-- its 0017 is a no-op.

ALTER TABLE requests ADD CONSTRAINT requests_kind_check
    CHECK (kind IN ('erasure', 'export', 'objection', 'rectification')) NOT VALID;
ALTER TABLE requests ADD CONSTRAINT requests_status_check
    CHECK (status IN ('in_progress', 'waiting', 'completed', 'completed_with_exceptions', 'failed', 'cancelled')) NOT VALID;
ALTER TABLE requests ADD CONSTRAINT requests_flags_check
    CHECK (cancelled IN (0, 1) AND verified IN (0, 1)) NOT VALID;

ALTER TABLE steps ADD CONSTRAINT steps_state_check
    CHECK (state IN ('pending', 'running', 'retry_wait', 'grace', 'held', 'awaiting_confirmation',
                     'done', 'failed', 'cancelled', 'skipped')) NOT VALID;
ALTER TABLE steps ADD CONSTRAINT steps_outcome_check
    CHECK (outcome IS NULL OR outcome IN ('erased', 'purged', 'not_found', 'exported', 'confirmed', 'retained',
                                          'objected', 'rectified', 'not_applicable')) NOT VALID;
ALTER TABLE steps ADD CONSTRAINT steps_action_check
    CHECK (action IN ('erase', 'export', 'object', 'rectify')) NOT VALID;
ALTER TABLE steps ADD CONSTRAINT steps_phase_check
    CHECK (phase IN ('act', 'verify', 'remind')) NOT VALID;
ALTER TABLE steps ADD CONSTRAINT steps_counts_check
    CHECK (attempts >= 0 AND lease_token >= 0 AND maybe_acted IN (0, 1)) NOT VALID;
-- A step is running exactly while a worker holds its lease (claims set both,
-- results and expiry clear both), and a lease always has an end.
ALTER TABLE steps ADD CONSTRAINT steps_lease_check
    CHECK ((state = 'running') = (lease_owner IS NOT NULL)
           AND (lease_owner IS NULL OR lease_expires_at IS NOT NULL)) NOT VALID;

ALTER TABLE outbox ADD CONSTRAINT outbox_state_check
    CHECK (state IN ('pending', 'delivered', 'dead')) NOT VALID;
ALTER TABLE outbox ADD CONSTRAINT outbox_status_check
    CHECK (status IN ('in_progress', 'waiting', 'completed', 'completed_with_exceptions', 'failed', 'cancelled')) NOT VALID;
ALTER TABLE outbox ADD CONSTRAINT outbox_attempts_check
    CHECK (attempts >= 0) NOT VALID;

ALTER TABLE suppression ADD CONSTRAINT suppression_check
    CHECK (kind IN ('email', 'phone', 'customer_id') AND active IN (0, 1)) NOT VALID;

ALTER TABLE processor_health ADD CONSTRAINT processor_health_failures_check
    CHECK (consecutive_failures >= 0) NOT VALID;
ALTER TABLE processor_limits ADD CONSTRAINT processor_limits_check
    CHECK (concurrency >= 1 AND burst >= 1) NOT VALID;

ALTER TABLE sweep_runs ADD CONSTRAINT sweep_runs_state_check
    CHECK (state IN ('pending', 'running', 'done', 'failed') AND started_by IN ('schedule', 'manual')
           AND attempts >= 0 AND lease_token >= 0) NOT VALID;
ALTER TABLE sweep_items ADD CONSTRAINT sweep_items_state_check
    CHECK (state IN ('pending', 'removed', 'failed')) NOT VALID;
