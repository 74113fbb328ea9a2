-- Envelope encryption: one data key per request, stored wrapped (AEAD) by a
-- master key that lives outside the database (an environment variable).
-- `kid` names the master key that wrapped it (a short keyed hash of that key).
-- Crypto-shredding sets `wrapped` to NULL and stamps `destroyed_at`.
-- The reserved id `lethe:subject-hash` holds the key of the matching HMAC,
-- wrapped the same way, so it survives master key rotation.
CREATE TABLE data_keys (
    request_id   TEXT PRIMARY KEY,
    kid          TEXT NOT NULL,
    wrapped      BLOB,
    created_at   INTEGER NOT NULL,
    destroyed_at INTEGER
);
CREATE INDEX data_keys_kid ON data_keys (kid);
