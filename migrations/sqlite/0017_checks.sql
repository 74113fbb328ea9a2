-- PostgreSQL's 0017 adds CHECK constraints on the enumerated text columns
-- (request kind and status, step state, outcome, action and phase, outbox
-- state, suppression kind, sweep states) and on counters and leases. SQLite
-- cannot add a constraint to an existing table without rebuilding it, so here
-- 0017 only keeps the numbering identical on both backends; lethe still
-- refuses such a row as corrupt when it reads it.
SELECT 1;
