-- Signed checkpoints of the audit chains (issue 12.2). A checkpoint is a
-- Merkle root over chain heads (those with `chain_heads.checkpointed` false),
-- chained to the previous checkpoint by `prev_hash` and signed with Ed25519
-- by a key kept outside the database. `hash` is SHA-256 of the signed
-- message (the next checkpoint's prev_hash); `writer` names the daemon that
-- held the checkpointer lease. The leaves are kept so that inclusion proofs
-- can be built later and `lethe audit verify` can recompute each root.
CREATE TABLE checkpoints (
    id         BIGINT PRIMARY KEY,
    at         BIGINT NOT NULL,
    prev_hash  TEXT NOT NULL,
    root       TEXT NOT NULL,
    size       BIGINT NOT NULL,
    key_id     TEXT NOT NULL,
    signature  TEXT NOT NULL,
    hash       TEXT NOT NULL,
    writer     TEXT NOT NULL
);

CREATE TABLE checkpoint_leaves (
    checkpoint_id BIGINT NOT NULL REFERENCES checkpoints (id),
    chain         TEXT NOT NULL,
    chain_seq     BIGINT NOT NULL,
    hash          TEXT NOT NULL,
    PRIMARY KEY (checkpoint_id, chain)
);
CREATE INDEX checkpoint_leaves_chain ON checkpoint_leaves (chain, chain_seq);

-- Leader leases (one row per role, e.g. `checkpointer`): the holder renews
-- it; another process takes it over only once it expired (database clock).
CREATE TABLE leader_leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
