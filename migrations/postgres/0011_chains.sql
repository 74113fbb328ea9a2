-- Per-chain audit hashing (issue 12): each request, hold and processor has its
-- own hash chain, so writers never serialise on one global head (and the
-- global advisory lock is gone). `seq` stays the global order, now drawn from
-- a sequence and not covered by the hash; `chain_seq` is the position within
-- `chain`, from 1. Rows written before this migration form the chain `legacy`
-- (numbered by their global seq) and keep their original hash rule.
-- Chain names compare bytewise ("C"), as in SQLite and in lethe's own code:
-- `audit verify` merges events and heads, both read in chain order.
ALTER TABLE events ADD COLUMN chain TEXT COLLATE "C";
ALTER TABLE events ADD COLUMN chain_seq BIGINT;
UPDATE events SET chain = 'legacy', chain_seq = seq;
CREATE UNIQUE INDEX events_chain ON events (chain, chain_seq);
CREATE SEQUENCE events_seq_seq OWNED BY events.seq;
SELECT setval('events_seq_seq', COALESCE((SELECT MAX(seq) FROM events), 0) + 1, false);
ALTER TABLE events ALTER COLUMN seq SET DEFAULT nextval('events_seq_seq');

-- The head of every chain, updated in the same transaction as each append
-- (its row lock serialises appends to one chain): a truncated tail no longer
-- verifies. `checkpointed` is reset on every append; signed checkpoints set it.
CREATE TABLE chain_heads (
    chain        TEXT COLLATE "C" PRIMARY KEY,
    chain_seq    BIGINT NOT NULL,
    hash         TEXT NOT NULL,
    event_seq    BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    checkpointed BOOLEAN NOT NULL DEFAULT FALSE
);
INSERT INTO chain_heads (chain, chain_seq, hash, event_seq, updated_at, checkpointed)
    SELECT 'legacy', seq, hash, seq, at, FALSE FROM events ORDER BY seq DESC LIMIT 1;
