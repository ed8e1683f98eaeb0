-- The call ledger (bot/observatory): one row per model call attempt, written in batches off the
-- reply's path; ratings stored against the turn (the user's message) they rate, so every agent
-- x model that served the turn is credited. The aggregates `/stats`, its chart and `/usage`
-- read are functions here: the records API cannot group (called through /api/database/rpc/).
CREATE TABLE IF NOT EXISTS ledger_calls (
    id BIGSERIAL PRIMARY KEY,
    -- Made by the bot per batch: a write repeated after a lost answer stores each call once.
    call_id TEXT NOT NULL UNIQUE,
    at TIMESTAMPTZ NOT NULL,
    turn_id BIGINT,
    chat_id BIGINT,
    user_id BIGINT,
    pipeline TEXT NOT NULL,
    agent TEXT NOT NULL,
    role TEXT,
    level TEXT,
    spec TEXT NOT NULL,
    model TEXT NOT NULL,
    provider TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0,
    fallback BOOLEAN NOT NULL DEFAULT false,
    outcome TEXT NOT NULL,
    latency_ms DOUBLE PRECISION NOT NULL,
    ttft_ms DOUBLE PRECISION,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd DOUBLE PRECISION,
    cost_source TEXT NOT NULL
        CHECK (cost_source IN ('provider', 'price_table', 'local', 'unpriced')),
    config_version BIGINT
);
CREATE INDEX IF NOT EXISTS ledger_calls_at_idx ON ledger_calls (at);
CREATE INDEX IF NOT EXISTS ledger_calls_agent_at_idx ON ledger_calls (agent, at);
CREATE INDEX IF NOT EXISTS ledger_calls_user_at_idx ON ledger_calls (user_id, at);

CREATE TABLE IF NOT EXISTS ledger_ratings (
    turn_id BIGINT NOT NULL,
    user_id BIGINT NOT NULL,
    chat_id BIGINT,
    up BOOLEAN NOT NULL,
    at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (turn_id, user_id)
);
CREATE INDEX IF NOT EXISTS ledger_ratings_at_idx ON ledger_ratings (at);

-- One change report per (model configuration change, agent): the replica whose insert lands
-- sends it.
CREATE TABLE IF NOT EXISTS ledger_reports (
    change_id BIGINT NOT NULL,
    agent TEXT NOT NULL,
    at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (change_id, agent)
);

-- Per agent (grp NULL) and per agent x model: the `/stats` figures over [p_since, p_until),
-- optionally one agent and a range of configuration versions [p_min_version, p_max_version).
-- Percentiles are nearest rank (percentile_disc) over the calls that answered.
CREATE OR REPLACE FUNCTION ledger_stats(
    p_since TIMESTAMPTZ,
    p_until TIMESTAMPTZ,
    p_agent TEXT DEFAULT NULL,
    p_min_version BIGINT DEFAULT NULL,
    p_max_version BIGINT DEFAULT NULL
)
RETURNS TABLE (
    agent TEXT,
    grp TEXT,
    calls BIGINT,
    turns BIGINT,
    errors BIGINT,
    fallbacks BIGINT,
    prompt_tokens BIGINT,
    completion_tokens BIGINT,
    cost_usd DOUBLE PRECISION,
    unpriced BIGINT,
    p50 DOUBLE PRECISION,
    p95 DOUBLE PRECISION,
    ttft_p50 DOUBLE PRECISION,
    up BIGINT,
    rated BIGINT
)
LANGUAGE sql STABLE SET jit = off AS $$
    WITH base AS (
        SELECT c.agent, c.model, c.turn_id, c.outcome, c.attempt, c.latency_ms, c.ttft_ms,
            c.prompt_tokens, c.completion_tokens, c.cost_usd, c.cost_source
        FROM ledger_calls c
        WHERE c.at >= p_since AND c.at < p_until
            AND (p_agent IS NULL OR c.agent = p_agent)
            AND (p_min_version IS NULL OR c.config_version >= p_min_version)
            AND (p_max_version IS NULL OR c.config_version < p_max_version)
    ),
    agg AS (
        SELECT b.agent, b.model AS grp, count(*) AS calls, count(DISTINCT b.turn_id) AS turns,
            count(*) FILTER (WHERE b.outcome <> 'ok') AS errors,
            count(*) FILTER (WHERE b.attempt > 0) AS fallbacks,
            coalesce(sum(b.prompt_tokens), 0)::BIGINT AS prompt_tokens,
            coalesce(sum(b.completion_tokens), 0)::BIGINT AS completion_tokens,
            coalesce(sum(b.cost_usd), 0)::DOUBLE PRECISION AS cost_usd,
            count(*) FILTER (WHERE b.cost_source = 'unpriced' AND b.outcome = 'ok') AS unpriced,
            percentile_disc(0.5) WITHIN GROUP (ORDER BY b.latency_ms)
                FILTER (WHERE b.outcome = 'ok') AS p50,
            percentile_disc(0.95) WITHIN GROUP (ORDER BY b.latency_ms)
                FILTER (WHERE b.outcome = 'ok') AS p95,
            percentile_disc(0.5) WITHIN GROUP (ORDER BY b.ttft_ms)
                FILTER (WHERE b.outcome = 'ok') AS ttft_p50
        FROM base b
        GROUP BY GROUPING SETS ((b.agent, b.model), (b.agent))
    ),
    served AS (
        SELECT DISTINCT b.agent, b.model AS grp, b.turn_id FROM base b
        WHERE b.outcome = 'ok' AND b.turn_id IS NOT NULL
        UNION ALL
        SELECT DISTINCT b.agent, NULL::TEXT, b.turn_id FROM base b
        WHERE b.outcome = 'ok' AND b.turn_id IS NOT NULL
    ),
    rated AS (
        SELECT s.agent, s.grp, count(*) FILTER (WHERE r.up) AS up, count(*) AS n
        FROM served s JOIN ledger_ratings r ON r.turn_id = s.turn_id
        GROUP BY s.agent, s.grp
    )
    SELECT a.agent, a.grp, a.calls, a.turns, a.errors, a.fallbacks, a.prompt_tokens,
        a.completion_tokens, a.cost_usd, a.unpriced, a.p50, a.p95, a.ttft_p50,
        coalesce(r.up, 0), coalesce(r.n, 0)
    FROM agg a
    LEFT JOIN rated r ON r.agent = a.agent AND r.grp IS NOT DISTINCT FROM a.grp
    ORDER BY a.agent, a.grp IS NOT NULL, a.calls DESC, a.grp
$$;

-- The `/stats <agent>` chart: per bucket of p_bucket seconds from p_since and per model, the
-- p95 latency of the calls that answered, the cost and the turns.
CREATE OR REPLACE FUNCTION ledger_series(
    p_agent TEXT,
    p_since TIMESTAMPTZ,
    p_until TIMESTAMPTZ,
    p_bucket INTEGER
)
RETURNS TABLE (b INTEGER, model TEXT, p95 DOUBLE PRECISION, cost_usd DOUBLE PRECISION, turns BIGINT)
LANGUAGE sql STABLE SET jit = off AS $$
    SELECT floor(extract(epoch FROM c.at - p_since) / p_bucket)::INTEGER AS b, c.model,
        percentile_disc(0.95) WITHIN GROUP (ORDER BY c.latency_ms)
            FILTER (WHERE c.outcome = 'ok'),
        coalesce(sum(c.cost_usd), 0)::DOUBLE PRECISION,
        count(DISTINCT c.turn_id)
    FROM ledger_calls c
    WHERE c.agent = p_agent AND c.at >= p_since AND c.at < p_until
    GROUP BY 1, 2
    ORDER BY 1, 2
$$;

-- `/usage`: what one user's calls cost since p_since, and how many answered calls no price
-- covers (a failed call reported no usage: nothing to price).
CREATE OR REPLACE FUNCTION ledger_user_cost(p_user_id BIGINT, p_since TIMESTAMPTZ)
RETURNS TABLE (cost_usd DOUBLE PRECISION, calls BIGINT, unpriced BIGINT)
LANGUAGE sql STABLE AS $$
    SELECT coalesce(sum(c.cost_usd), 0)::DOUBLE PRECISION, count(*),
        count(*) FILTER (WHERE c.cost_source = 'unpriced' AND c.outcome = 'ok')
    FROM ledger_calls c
    WHERE c.user_id = p_user_id AND c.at >= p_since
$$;

-- Retention (LEDGER_RETENTION_DAYS): one statement, answering how many calls went.
CREATE OR REPLACE FUNCTION ledger_prune(p_before TIMESTAMPTZ)
RETURNS BIGINT
LANGUAGE sql AS $$
    WITH calls AS (DELETE FROM ledger_calls WHERE at < p_before RETURNING 1),
        ratings AS (DELETE FROM ledger_ratings WHERE at < p_before RETURNING 1)
    SELECT (SELECT count(*) FROM calls) + 0 * (SELECT count(*) FROM ratings)
$$;
