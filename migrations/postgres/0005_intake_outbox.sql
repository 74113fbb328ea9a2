-- Intake (issue 5): status-callback URLs per request, and the transactional outbox.
-- A callback row is written in the same transaction as the state change that
-- causes it; a background task in the daemon delivers it (retries, survives restarts).
CREATE TABLE request_callbacks (
    request_id TEXT NOT NULL REFERENCES requests (id),
    url        TEXT NOT NULL,
    protocol   TEXT NOT NULL,            -- 'lethe' (our API) or 'opendsr'
    PRIMARY KEY (request_id, url)
);

CREATE TABLE outbox (
    id           BIGSERIAL PRIMARY KEY,
    request_id   TEXT NOT NULL REFERENCES requests (id),
    url          TEXT NOT NULL,
    protocol     TEXT NOT NULL,
    event        TEXT NOT NULL,          -- 'created', 'started' (first step claimed), 'status' (derived status changed)
    status       TEXT NOT NULL,          -- the request's derived status at that moment
    created_at   BIGINT NOT NULL,
    run_at       BIGINT NOT NULL,       -- next delivery attempt (also a visibility timeout while in flight)
    attempts     BIGINT NOT NULL DEFAULT 0,
    state        TEXT NOT NULL DEFAULT 'pending',  -- 'pending', 'delivered', 'dead'
    delivered_at BIGINT,
    last_error   TEXT
);
CREATE INDEX outbox_due ON outbox (state, run_at);
CREATE INDEX outbox_request ON outbox (request_id, url, id);
