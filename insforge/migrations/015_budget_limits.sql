-- Budget limits set at runtime (`/budget`): one row per scope (bot:day, user:day, user:month,
-- user:<id>:day, user:<id>:month, agent:<name>:day). usd NULL: the admin turned it off. What is
-- spent is not stored here: it is the call ledger's costs (counted live in Redis or in process).
CREATE TABLE IF NOT EXISTS budget_limits (
    scope TEXT PRIMARY KEY,
    usd DOUBLE PRECISION CHECK (usd IS NULL OR usd >= 0),
    set_by TEXT,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
