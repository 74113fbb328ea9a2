-- Fencing: every claim takes a new lease token; a result is written only by the
-- holder of the current token. `maybe_acted`: an earlier attempt of this step
-- may have reached the processor (its lease expired mid-call, or it failed
-- after sending), so a later "not found" means "gone", never "held no data".
ALTER TABLE steps ADD COLUMN lease_token INTEGER NOT NULL DEFAULT 0;
ALTER TABLE steps ADD COLUMN maybe_acted INTEGER NOT NULL DEFAULT 0;

-- Processor free text (error messages), kept outside the hash chain: the chain
-- holds its SHA-256, so the text can be destroyed with the identities.
CREATE TABLE texts (
    hash       TEXT PRIMARY KEY,
    request_id TEXT NOT NULL,
    body       TEXT NOT NULL,
    at         INTEGER NOT NULL
);
CREATE INDEX texts_request ON texts (request_id);
