-- Per-chain audit hashing (issue 12): each request, hold and processor has its
-- own hash chain, so writers never serialise on one global head. `seq` stays
-- the global order (not covered by the hash); `chain_seq` is the position
-- within `chain`, from 1. Rows written before this migration form the chain
-- `legacy` (numbered by their global seq) and keep their original hash rule.
ALTER TABLE events ADD COLUMN chain TEXT;
ALTER TABLE events ADD COLUMN chain_seq INTEGER;
UPDATE events SET chain = 'legacy', chain_seq = seq;
CREATE UNIQUE INDEX events_chain ON events (chain, chain_seq);

-- The head of every chain, updated in the same transaction as each append:
-- a truncated tail (rows deleted at the end of a chain) no longer verifies.
-- `checkpointed` is reset on every append; signed checkpoints set it.
CREATE TABLE chain_heads (
    chain        TEXT PRIMARY KEY,
    chain_seq    INTEGER NOT NULL,
    hash         TEXT NOT NULL,
    event_seq    INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    checkpointed INTEGER NOT NULL DEFAULT 0
);
INSERT INTO chain_heads (chain, chain_seq, hash, event_seq, updated_at, checkpointed)
    SELECT 'legacy', seq, hash, seq, at, 0 FROM events ORDER BY seq DESC LIMIT 1;
