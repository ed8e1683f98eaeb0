-- The call ledger's hourly and daily rollups (decision 0016; SQLite step 12 mirrors them), so
-- `/stats` over a month reads some thousand rows instead of a million.
--
-- ledger_rollups: per period (g seconds long: 3600 or 86400, starting at p, unix seconds) x
-- agent x grp (the model, or '' for the agent over all its models): the figures that add up,
-- the distinct turns (turns) and how many of them the period before had too (turns_cont), and
-- the ratings of the turns served (answered) there (rated, rated_up; the _cont columns for the
-- turns the period before served too). ledger_histograms: per period x agent x model the
-- answered calls' latency (kind 0) and first token (kind 1) in log buckets, 8 per doubling.
--
-- Kept off the writes (the ledger's rows are stored as before, by the records API's upsert and by
-- turn_write): ledger_roll_up() adds the calls not rolled up yet, every few seconds from each
-- replica's ledger writer and before each read of the figures. Every call with id <= floor_id
-- is in the rollups, and so is every id listed in ledger_rolled; the listing makes each call
-- counted once even when its insert commits after a later id's (sequence order is not commit
-- order): a roll-up lists what it adds, and the floor moves up only to ids a roll-up listed 10
-- minutes ago. Roll-ups and ratings (ledger_rate) take one advisory lock, so a rating counts
-- for exactly the periods of its turn's calls rolled up so far, and a later roll-up of the
-- turn's other calls counts it there. No trigger: a PL/pgSQL body does not pass InsForge's
-- migration check (it refuses statements that start with BEGIN or END).
CREATE TABLE IF NOT EXISTS ledger_rollups (
    g INTEGER NOT NULL,
    p BIGINT NOT NULL,
    agent TEXT NOT NULL,
    grp TEXT NOT NULL,
    calls BIGINT NOT NULL DEFAULT 0,
    errors BIGINT NOT NULL DEFAULT 0,
    fallbacks BIGINT NOT NULL DEFAULT 0,
    prompt_tokens BIGINT NOT NULL DEFAULT 0,
    completion_tokens BIGINT NOT NULL DEFAULT 0,
    cost_usd DOUBLE PRECISION NOT NULL DEFAULT 0,
    unpriced BIGINT NOT NULL DEFAULT 0,
    turns BIGINT NOT NULL DEFAULT 0,
    turns_cont BIGINT NOT NULL DEFAULT 0,
    rated BIGINT NOT NULL DEFAULT 0,
    rated_up BIGINT NOT NULL DEFAULT 0,
    rated_cont BIGINT NOT NULL DEFAULT 0,
    rated_up_cont BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (g, p, agent, grp)
);

CREATE TABLE IF NOT EXISTS ledger_histograms (
    g INTEGER NOT NULL,
    p BIGINT NOT NULL,
    agent TEXT NOT NULL,
    model TEXT NOT NULL,
    kind SMALLINT NOT NULL,
    bucket INTEGER NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (g, p, agent, model, kind, bucket)
);

-- The roll-up and `/stats` find a turn's other calls by it.
CREATE INDEX IF NOT EXISTS ledger_calls_turn_idx ON ledger_calls (turn_id)
    WHERE turn_id IS NOT NULL;

CREATE TABLE IF NOT EXISTS ledger_rollup_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    floor_id BIGINT NOT NULL,
    last_rolled BIGINT NOT NULL DEFAULT 0
);
INSERT INTO ledger_rollup_state (id, floor_id) VALUES (1, 0) ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS ledger_rolled (
    id BIGINT PRIMARY KEY,
    at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Whether the call `p_id` is in the rollups.
CREATE OR REPLACE FUNCTION ledger_is_rolled(p_id BIGINT)
RETURNS BOOLEAN
LANGUAGE sql STABLE AS $$
    SELECT p_id <= coalesce((SELECT floor_id FROM ledger_rollup_state), 0)
        OR EXISTS (SELECT 1 FROM ledger_rolled r WHERE r.id = p_id)
$$;

-- A latency's bucket: the same formula (and nudge, for values on an edge) as
-- bot/storage/ledger_rollups.py and SQLite's.
CREATE OR REPLACE FUNCTION ledger_bucket(p_value DOUBLE PRECISION)
RETURNS INTEGER
LANGUAGE sql IMMUTABLE AS $$
    SELECT floor(8 * ln(greatest(p_value, 0.01)) / ln(2) + 1e-9)::INTEGER
$$;

CREATE OR REPLACE FUNCTION ledger_period(p_at TIMESTAMPTZ, p_g INTEGER)
RETURNS BIGINT
LANGUAGE sql IMMUTABLE AS $$
    SELECT (floor(extract(epoch FROM p_at) / p_g) * p_g)::BIGINT
$$;

-- Add up to 20,000 calls not rolled up yet to the rollups (oldest ids first); answers how many.
-- (SET jit = off: the estimates of this statement's many parts pass JIT's cost threshold even
-- with nothing to add, and compiling it took ~100 ms of every call, measured.)
CREATE OR REPLACE FUNCTION ledger_roll_up()
RETURNS BIGINT
LANGUAGE sql SET jit = off AS $$
    SELECT pg_advisory_xact_lock(16016);
    INSERT INTO ledger_rollup_state (id, floor_id) VALUES (1, 0) ON CONFLICT DO NOTHING;
    WITH listed AS (
        INSERT INTO ledger_rolled (id)
        SELECT c.id FROM ledger_calls c
        WHERE c.id > (SELECT floor_id FROM ledger_rollup_state)
            AND NOT EXISTS (SELECT 1 FROM ledger_rolled r WHERE r.id = c.id)
        ORDER BY c.id
        LIMIT 20000
        ON CONFLICT DO NOTHING
        RETURNING id
    ),
    -- By id, one index probe each (a join would let the planner scan the whole ledger).
    ins AS (
        SELECT c.* FROM listed l
        CROSS JOIN LATERAL (SELECT * FROM ledger_calls c WHERE c.id = l.id) c
    ),
    noted AS (
        UPDATE ledger_rollup_state SET last_rolled = (SELECT count(*) FROM listed) RETURNING 1
    ),
    -- Each new call per period length and per grp (its model, and '' for its agent).
    new_g AS (
        SELECT lv.g, ledger_period(i.at, lv.g) AS p, i.agent, gr.grp, i.model, i.turn_id,
            i.outcome, i.attempt, i.prompt_tokens, i.completion_tokens, i.cost_usd,
            i.cost_source, i.latency_ms, i.ttft_ms
        FROM ins i
        CROSS JOIN (VALUES (3600), (86400)) lv(g)
        CROSS JOIN LATERAL (VALUES (i.model), ('')) gr(grp)
    ),
    keys AS (
        SELECT g, p, agent, grp, turn_id, bool_or(outcome = 'ok') AS ok
        FROM new_g WHERE turn_id IS NOT NULL
        GROUP BY g, p, agent, grp, turn_id
    ),
    -- The turn's presence in each new key's period and its two neighbours among the calls rolled
    -- up before (the statement's snapshot does not see `listed`) and after.
    occ AS (
        SELECT s.g, s.p, s.agent, s.grp, s.turn_id,
            EXISTS (SELECT 1 FROM ledger_calls c WHERE c.turn_id = s.turn_id
                AND c.agent = s.agent AND (s.grp = '' OR c.model = s.grp)
                AND c.at >= to_timestamp(s.p) AND c.at < to_timestamp(s.p + s.g)
                AND ledger_is_rolled(c.id)) AS old_any,
            EXISTS (SELECT 1 FROM ledger_calls c WHERE c.turn_id = s.turn_id
                AND c.agent = s.agent AND (s.grp = '' OR c.model = s.grp) AND c.outcome = 'ok'
                AND c.at >= to_timestamp(s.p) AND c.at < to_timestamp(s.p + s.g)
                AND ledger_is_rolled(c.id)) AS old_ok,
            k.turn_id IS NOT NULL AS new_any, coalesce(k.ok, false) AS new_ok
        FROM (SELECT DISTINCT k.g, k.p + o.d * k.g AS p, k.agent, k.grp, k.turn_id
              FROM keys k CROSS JOIN (VALUES (-1), (0), (1)) o(d)) s
        LEFT JOIN keys k ON k.g = s.g AND k.p = s.p AND k.agent = s.agent AND k.grp = s.grp
            AND k.turn_id = s.turn_id
    ),
    rates AS (
        SELECT r.turn_id, count(*) AS n, count(*) FILTER (WHERE r.up) AS up
        FROM ledger_ratings r WHERE r.turn_id IN (SELECT turn_id FROM keys)
        GROUP BY r.turn_id
    ),
    deltas AS (
        SELECT g, p, agent, grp, count(*) AS calls,
            count(*) FILTER (WHERE outcome <> 'ok') AS errors,
            count(*) FILTER (WHERE attempt > 0) AS fallbacks,
            sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens,
            coalesce(sum(cost_usd), 0) AS cost_usd,
            count(*) FILTER (WHERE cost_source = 'unpriced' AND outcome = 'ok') AS unpriced,
            0 AS turns, 0 AS turns_cont, 0 AS rated, 0 AS rated_up, 0 AS rated_cont,
            0 AS rated_up_cont
        FROM new_g GROUP BY g, p, agent, grp
        UNION ALL
        -- the turn appears in the period
        SELECT o.g, o.p, o.agent, o.grp, 0, 0, 0, 0, 0, 0, 0,
            (o.new_any AND NOT o.old_any)::INT, 0,
            CASE WHEN o.new_ok AND NOT o.old_ok THEN coalesce(r.n, 0) ELSE 0 END,
            CASE WHEN o.new_ok AND NOT o.old_ok THEN coalesce(r.up, 0) ELSE 0 END, 0, 0
        FROM occ o LEFT JOIN rates r ON r.turn_id = o.turn_id
        WHERE o.new_any
        UNION ALL
        -- the turn comes to be in both a period (b) and the one before (a)
        SELECT b.g, b.p, b.agent, b.grp, 0, 0, 0, 0, 0, 0, 0, 0,
            ((a.old_any OR a.new_any) AND (b.old_any OR b.new_any)
                AND NOT (a.old_any AND b.old_any))::INT, 0, 0,
            CASE WHEN (a.old_ok OR a.new_ok) AND (b.old_ok OR b.new_ok)
                AND NOT (a.old_ok AND b.old_ok) THEN coalesce(r.n, 0) ELSE 0 END,
            CASE WHEN (a.old_ok OR a.new_ok) AND (b.old_ok OR b.new_ok)
                AND NOT (a.old_ok AND b.old_ok) THEN coalesce(r.up, 0) ELSE 0 END
        FROM occ a
        JOIN occ b ON b.g = a.g AND b.agent = a.agent AND b.grp = a.grp
            AND b.turn_id = a.turn_id AND b.p = a.p + a.g
        LEFT JOIN rates r ON r.turn_id = a.turn_id
        WHERE (a.new_any OR b.new_any) AND (a.old_any OR a.new_any) AND (b.old_any OR b.new_any)
    ),
    rolled AS (
        INSERT INTO ledger_rollups AS t (g, p, agent, grp, calls, errors, fallbacks,
            prompt_tokens, completion_tokens, cost_usd, unpriced, turns, turns_cont, rated,
            rated_up, rated_cont, rated_up_cont)
        SELECT g, p, agent, grp, sum(calls), sum(errors), sum(fallbacks), sum(prompt_tokens),
            sum(completion_tokens), sum(cost_usd), sum(unpriced), sum(turns), sum(turns_cont),
            sum(rated), sum(rated_up), sum(rated_cont), sum(rated_up_cont)
        FROM deltas GROUP BY g, p, agent, grp
        ON CONFLICT (g, p, agent, grp) DO UPDATE SET calls = t.calls + excluded.calls,
            errors = t.errors + excluded.errors, fallbacks = t.fallbacks + excluded.fallbacks,
            prompt_tokens = t.prompt_tokens + excluded.prompt_tokens,
            completion_tokens = t.completion_tokens + excluded.completion_tokens,
            cost_usd = t.cost_usd + excluded.cost_usd, unpriced = t.unpriced + excluded.unpriced,
            turns = t.turns + excluded.turns, turns_cont = t.turns_cont + excluded.turns_cont,
            rated = t.rated + excluded.rated, rated_up = t.rated_up + excluded.rated_up,
            rated_cont = t.rated_cont + excluded.rated_cont,
            rated_up_cont = t.rated_up_cont + excluded.rated_up_cont
        RETURNING 1
    ),
    counted AS (
        INSERT INTO ledger_histograms AS t (g, p, agent, model, kind, bucket, n)
        SELECT g, p, agent, model, kind, ledger_bucket(v), count(*)
        FROM new_g
        CROSS JOIN LATERAL (VALUES (0::SMALLINT, latency_ms), (1::SMALLINT, ttft_ms)) k(kind, v)
        WHERE grp <> '' AND outcome = 'ok' AND v IS NOT NULL
        GROUP BY 1, 2, 3, 4, 5, 6
        ON CONFLICT (g, p, agent, model, kind, bucket) DO UPDATE SET n = t.n + excluded.n
        RETURNING 1
    )
    SELECT count(*) FROM noted;
    -- Every id a roll-up listed 10 minutes ago or more is below any insert still in flight then.
    UPDATE ledger_rollup_state SET floor_id = greatest(floor_id, coalesce(
        (SELECT max(id) FROM ledger_rolled WHERE at < now() - interval '10 minutes'), 0));
    DELETE FROM ledger_rolled WHERE id <= (SELECT floor_id FROM ledger_rollup_state);
    SELECT last_rolled FROM ledger_rollup_state
$$;

-- A user's 👍 (up) or 👎 on a turn; a second vote replaces the first. The periods the turn was
-- served in (answered) by calls rolled up so far get the rating, or its change.
CREATE OR REPLACE FUNCTION ledger_rate(
    p_turn_id BIGINT, p_user_id BIGINT, p_chat_id BIGINT, p_up BOOLEAN
)
RETURNS BIGINT
LANGUAGE sql SET jit = off AS $$
    SELECT pg_advisory_xact_lock(16016);
    WITH vote AS (
        INSERT INTO ledger_ratings AS t (turn_id, user_id, chat_id, up, at)
        VALUES (p_turn_id, p_user_id, p_chat_id, p_up, now())
        ON CONFLICT (turn_id, user_id) DO UPDATE SET up = excluded.up, at = excluded.at
            WHERE t.up IS DISTINCT FROM excluded.up
        -- xmax is 0 for a row just inserted; a changed vote flipped, so its change is +-1.
        RETURNING (xmax = 0) AS inserted, up
    ),
    d AS (
        SELECT CASE WHEN inserted THEN 1 ELSE 0 END AS dn,
            CASE WHEN inserted THEN up::INT WHEN up THEN 1 ELSE -1 END AS du
        FROM vote
    ),
    served AS (
        SELECT DISTINCT lv.g, ledger_period(c.at, lv.g) AS p, c.agent, gr.grp
        FROM ledger_calls c
        CROSS JOIN (VALUES (3600), (86400)) lv(g)
        CROSS JOIN LATERAL (VALUES (c.model), ('')) gr(grp)
        WHERE c.turn_id = p_turn_id AND c.outcome = 'ok' AND ledger_is_rolled(c.id)
    ),
    rolled AS (
        INSERT INTO ledger_rollups AS t (g, p, agent, grp, rated, rated_up, rated_cont,
            rated_up_cont)
        SELECT s.g, s.p, s.agent, s.grp, d.dn, d.du, s.prev * d.dn, s.prev * d.du
        FROM (SELECT s.*, EXISTS (SELECT 1 FROM served b WHERE b.g = s.g AND b.agent = s.agent
                AND b.grp = s.grp AND b.p = s.p - s.g)::INT AS prev
              FROM served s) s
        CROSS JOIN d
        ON CONFLICT (g, p, agent, grp) DO UPDATE SET rated = t.rated + excluded.rated,
            rated_up = t.rated_up + excluded.rated_up,
            rated_cont = t.rated_cont + excluded.rated_cont,
            rated_up_cont = t.rated_up_cont + excluded.rated_up_cont
        RETURNING 1
    )
    SELECT count(*) FROM vote
$$;

-- The rollups of the rows there are, from scratch (this migration; the benchmark after a bulk
-- load). Answers how many rollup rows it made.
CREATE OR REPLACE FUNCTION ledger_rollups_rebuild()
RETURNS BIGINT
LANGUAGE sql AS $$
    SELECT pg_advisory_xact_lock(16016);
    DELETE FROM ledger_rollups;
    DELETE FROM ledger_histograms;
    WITH g AS (
        SELECT lv.g, ledger_period(c.at, lv.g) AS p, c.agent, gr.grp, c.turn_id, c.outcome,
            c.attempt, c.prompt_tokens, c.completion_tokens, c.cost_usd, c.cost_source
        FROM ledger_calls c
        CROSS JOIN (VALUES (3600), (86400)) lv(g)
        CROSS JOIN LATERAL (VALUES (c.model), ('')) gr(grp)
    ),
    occ AS (
        SELECT g, p, agent, grp, turn_id, bool_or(outcome = 'ok') AS ok
        FROM g WHERE turn_id IS NOT NULL GROUP BY 1, 2, 3, 4, 5
    ),
    rates AS (
        SELECT turn_id, count(*) AS n, count(*) FILTER (WHERE up) AS up
        FROM ledger_ratings GROUP BY turn_id
    ),
    turns AS (
        SELECT t.g, t.p, t.agent, t.grp, count(*) AS turns, count(b.turn_id) AS turns_cont,
            coalesce(sum(r.n) FILTER (WHERE t.ok), 0) AS rated,
            coalesce(sum(r.up) FILTER (WHERE t.ok), 0) AS rated_up,
            coalesce(sum(r.n) FILTER (WHERE t.ok AND b.ok), 0) AS rated_cont,
            coalesce(sum(r.up) FILTER (WHERE t.ok AND b.ok), 0) AS rated_up_cont
        FROM occ t
        LEFT JOIN occ b ON b.g = t.g AND b.agent = t.agent AND b.grp = t.grp
            AND b.turn_id = t.turn_id AND b.p = t.p - t.g
        LEFT JOIN rates r ON r.turn_id = t.turn_id
        GROUP BY 1, 2, 3, 4
    ),
    sums AS (
        SELECT g, p, agent, grp, count(*) AS calls,
            count(*) FILTER (WHERE outcome <> 'ok') AS errors,
            count(*) FILTER (WHERE attempt > 0) AS fallbacks,
            sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens,
            coalesce(sum(cost_usd), 0) AS cost_usd,
            count(*) FILTER (WHERE cost_source = 'unpriced' AND outcome = 'ok') AS unpriced
        FROM g GROUP BY 1, 2, 3, 4
    )
    INSERT INTO ledger_rollups (g, p, agent, grp, calls, errors, fallbacks, prompt_tokens,
        completion_tokens, cost_usd, unpriced, turns, turns_cont, rated, rated_up, rated_cont,
        rated_up_cont)
    SELECT s.g, s.p, s.agent, s.grp, s.calls, s.errors, s.fallbacks, s.prompt_tokens,
        s.completion_tokens, s.cost_usd, s.unpriced, coalesce(t.turns, 0),
        coalesce(t.turns_cont, 0), coalesce(t.rated, 0), coalesce(t.rated_up, 0),
        coalesce(t.rated_cont, 0), coalesce(t.rated_up_cont, 0)
    FROM sums s
    LEFT JOIN turns t ON t.g = s.g AND t.p = s.p AND t.agent = s.agent AND t.grp = s.grp;
    INSERT INTO ledger_histograms (g, p, agent, model, kind, bucket, n)
    SELECT lv.g, ledger_period(c.at, lv.g), c.agent, c.model, k.kind, ledger_bucket(k.v),
        count(*)
    FROM ledger_calls c
    CROSS JOIN (VALUES (3600), (86400)) lv(g)
    CROSS JOIN LATERAL (VALUES (0::SMALLINT, c.latency_ms), (1::SMALLINT, c.ttft_ms)) k(kind, v)
    WHERE c.outcome = 'ok' AND k.v IS NOT NULL
    GROUP BY 1, 2, 3, 4, 5, 6;
    DELETE FROM ledger_rolled;
    UPDATE ledger_rollup_state SET floor_id = (SELECT coalesce(max(id), 0) FROM ledger_calls);
    SELECT count(*) FROM ledger_rollups
$$;

SELECT ledger_rollups_rebuild();

-- Retention (LEDGER_RETENTION_DAYS) by whole days (the day p_before falls in is kept), so that
-- a rollup period is kept whole or goes with its rows. Answers how many calls went.
CREATE OR REPLACE FUNCTION ledger_prune(p_before TIMESTAMPTZ)
RETURNS BIGINT
LANGUAGE sql AS $$
    WITH cut AS (SELECT ledger_period(p_before, 86400) AS day),
        calls AS (DELETE FROM ledger_calls WHERE at < (SELECT to_timestamp(day) FROM cut)
            RETURNING 1),
        ratings AS (DELETE FROM ledger_ratings WHERE at < (SELECT to_timestamp(day) FROM cut)
            RETURNING 1),
        rolled AS (DELETE FROM ledger_rollups WHERE p < (SELECT day FROM cut) RETURNING 1),
        counted AS (DELETE FROM ledger_histograms WHERE p < (SELECT day FROM cut) RETURNING 1)
    SELECT (SELECT count(*) FROM calls)
$$;

-- `/stats` over a window that holds whole hours: the parts bot/storage/ledger_rollups.py puts
-- together (the cuts p_h1 <= p_d1 <= p_d2 <= p_h2 are worked out there). part 'sums': per
-- (agent, grp) the additive figures, once for the rolled periods and once for the raw edges
-- [p_since, h1) and [h2, p_until); 'hist': per (agent, model, kind) the rolled buckets and
-- their counts; 'values': per (agent, model) the raw edges' answered latencies and first tokens.
CREATE OR REPLACE FUNCTION ledger_stats_rolled(
    p_since TIMESTAMPTZ,
    p_until TIMESTAMPTZ,
    p_h1 BIGINT,
    p_d1 BIGINT,
    p_d2 BIGINT,
    p_h2 BIGINT,
    p_agent TEXT DEFAULT NULL
)
RETURNS TABLE (
    part TEXT,
    agent TEXT,
    grp TEXT,
    kind SMALLINT,
    calls BIGINT,
    errors BIGINT,
    fallbacks BIGINT,
    prompt_tokens BIGINT,
    completion_tokens BIGINT,
    cost_usd DOUBLE PRECISION,
    unpriced BIGINT,
    turns BIGINT,
    up BIGINT,
    rated BIGINT,
    buckets INTEGER[],
    counts BIGINT[],
    latencies DOUBLE PRECISION[],
    ttfts DOUBLE PRECISION[]
)
LANGUAGE sql STABLE AS $$
    WITH spans AS (
        -- w counts a row's figures, c subtracts the turns it shares with the period before
        -- (not at the span's first period; the first day takes it from the hourly row).
        SELECT 3600 AS g, p_h1 AS lo, p_d1 AS hi, 1 AS w, p_h1 AS free
        UNION ALL SELECT 86400, p_d1, p_d2, 1, p_d1
        UNION ALL SELECT 3600, p_d2, p_h2, 1, p_h1
        UNION ALL SELECT 3600, p_d1, p_d1 + 1, 0, p_h1 WHERE p_d1 > p_h1 AND p_d1 < p_d2
    ),
    rolled AS (
        SELECT r.agent, r.grp, sum(s.w * r.calls)::BIGINT AS calls,
            sum(s.w * r.errors)::BIGINT AS errors, sum(s.w * r.fallbacks)::BIGINT AS fallbacks,
            sum(s.w * r.prompt_tokens)::BIGINT AS prompt_tokens,
            sum(s.w * r.completion_tokens)::BIGINT AS completion_tokens,
            sum(s.w * r.cost_usd)::DOUBLE PRECISION AS cost_usd,
            sum(s.w * r.unpriced)::BIGINT AS unpriced,
            sum(s.w * r.turns - (r.p > s.free)::INT * r.turns_cont)::BIGINT AS turns,
            sum(s.w * r.rated_up - (r.p > s.free)::INT * r.rated_up_cont)::BIGINT AS up,
            sum(s.w * r.rated - (r.p > s.free)::INT * r.rated_cont)::BIGINT AS rated
        FROM spans s
        JOIN ledger_rollups r ON r.g = s.g AND r.p >= s.lo AND r.p < s.hi
        WHERE p_agent IS NULL OR r.agent = p_agent
        GROUP BY r.agent, r.grp
    ),
    counted AS (
        SELECT h.agent, h.model, h.kind, h.bucket, sum(h.n)::BIGINT AS n
        FROM spans s
        JOIN ledger_histograms h ON h.g = s.g AND h.p >= s.lo AND h.p < s.hi
        WHERE s.w = 1 AND (p_agent IS NULL OR h.agent = p_agent)
        GROUP BY h.agent, h.model, h.kind, h.bucket
    ),
    edge AS (
        SELECT c.id, c.agent, c.model, c.turn_id, c.outcome, c.attempt, c.latency_ms,
            c.ttft_ms, c.prompt_tokens, c.completion_tokens, c.cost_usd, c.cost_source
        FROM ledger_calls c
        WHERE ((c.at >= p_since AND c.at < to_timestamp(p_h1))
                OR (c.at >= to_timestamp(p_h2) AND c.at < p_until))
            AND (p_agent IS NULL OR c.agent = p_agent)
    ),
    -- A raw edge's turn (and its ratings) counts only when the rolled span lacks it.
    k AS MATERIALIZED (
        SELECT e.*, gr.grp,
            e.turn_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM ledger_calls c
                WHERE c.turn_id = e.turn_id AND c.agent = e.agent
                    AND (gr.grp = '' OR c.model = gr.grp)
                    AND c.at >= to_timestamp(p_h1) AND c.at < to_timestamp(p_h2)) AS fresh,
            e.outcome = 'ok' AND e.turn_id IS NOT NULL AND NOT EXISTS (SELECT 1
                FROM ledger_calls c WHERE c.turn_id = e.turn_id AND c.agent = e.agent
                    AND c.outcome = 'ok' AND (gr.grp = '' OR c.model = gr.grp)
                    AND c.at >= to_timestamp(p_h1) AND c.at < to_timestamp(p_h2)) AS served
        FROM edge e CROSS JOIN LATERAL (VALUES (e.model), ('')) gr(grp)
    ),
    edge_rated AS (
        SELECT s.agent, s.grp, count(*) FILTER (WHERE r.up) AS up, count(*) AS n
        FROM (SELECT DISTINCT k.agent, k.grp, k.turn_id FROM k WHERE k.served) s
        JOIN ledger_ratings r ON r.turn_id = s.turn_id
        GROUP BY s.agent, s.grp
    ),
    edge_sums AS (
        SELECT k.agent, k.grp, count(*) AS calls,
            count(*) FILTER (WHERE k.outcome <> 'ok') AS errors,
            count(*) FILTER (WHERE k.attempt > 0) AS fallbacks,
            coalesce(sum(k.prompt_tokens), 0)::BIGINT AS prompt_tokens,
            coalesce(sum(k.completion_tokens), 0)::BIGINT AS completion_tokens,
            coalesce(sum(k.cost_usd), 0)::DOUBLE PRECISION AS cost_usd,
            count(*) FILTER (WHERE k.cost_source = 'unpriced' AND k.outcome = 'ok') AS unpriced,
            count(DISTINCT k.turn_id) FILTER (WHERE k.fresh) AS turns
        FROM k GROUP BY k.agent, k.grp
    )
    SELECT 'sums', r.agent, r.grp, NULL::SMALLINT, r.calls, r.errors, r.fallbacks,
        r.prompt_tokens, r.completion_tokens, r.cost_usd, r.unpriced, r.turns, r.up, r.rated,
        NULL::INTEGER[], NULL::BIGINT[], NULL::DOUBLE PRECISION[], NULL::DOUBLE PRECISION[]
    FROM rolled r
    UNION ALL
    SELECT 'sums', e.agent, e.grp, NULL, e.calls, e.errors, e.fallbacks, e.prompt_tokens,
        e.completion_tokens, e.cost_usd, e.unpriced, e.turns, coalesce(x.up, 0),
        coalesce(x.n, 0), NULL, NULL, NULL, NULL
    FROM edge_sums e LEFT JOIN edge_rated x ON x.agent = e.agent AND x.grp = e.grp
    UNION ALL
    SELECT 'hist', h.agent, h.model, h.kind, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
        NULL, NULL, array_agg(h.bucket ORDER BY h.bucket), array_agg(h.n ORDER BY h.bucket),
        NULL, NULL
    FROM counted h GROUP BY h.agent, h.model, h.kind
    UNION ALL
    SELECT 'values', e.agent, e.model, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
        NULL, NULL, NULL, NULL, array_agg(e.latency_ms ORDER BY e.id),
        array_agg(e.ttft_ms ORDER BY e.id)
    FROM edge e WHERE e.outcome = 'ok' GROUP BY e.agent, e.model
$$;

-- The `/stats <agent>` chart from the rollups of period p_g (3600 or 86400): buckets of p_bucket
-- seconds (whole periods) from p_base (a period's start), per model: cost, turns, the latency
-- buckets and their counts.
CREATE OR REPLACE FUNCTION ledger_series_rolled(
    p_g INTEGER,
    p_agent TEXT,
    p_base BIGINT,
    p_end DOUBLE PRECISION,
    p_bucket INTEGER
)
RETURNS TABLE (
    b INTEGER,
    model TEXT,
    cost_usd DOUBLE PRECISION,
    turns BIGINT,
    buckets INTEGER[],
    counts BIGINT[]
)
LANGUAGE sql STABLE AS $$
    WITH sums AS (
        SELECT ((r.p - p_base) / p_bucket)::INTEGER AS b, r.grp AS model,
            sum(r.cost_usd)::DOUBLE PRECISION AS cost_usd,
            sum(r.turns - CASE WHEN (r.p - p_base) % p_bucket = 0 THEN 0 ELSE r.turns_cont END)
                ::BIGINT AS turns
        FROM ledger_rollups r
        WHERE r.agent = p_agent AND r.g = p_g AND r.p >= p_base AND r.p < p_end
            AND r.grp <> ''
        GROUP BY 1, 2
    ),
    counted AS (
        SELECT ((h.p - p_base) / p_bucket)::INTEGER AS b, h.model, h.bucket, sum(h.n) AS n
        FROM ledger_histograms h
        WHERE h.agent = p_agent AND h.g = p_g AND h.p >= p_base AND h.p < p_end
            AND h.kind = 0
        GROUP BY 1, 2, 3
    )
    SELECT s.b, s.model, s.cost_usd, s.turns, c.buckets, c.counts
    FROM sums s
    LEFT JOIN (SELECT b, model, array_agg(bucket ORDER BY bucket) AS buckets,
            array_agg(n::BIGINT ORDER BY bucket) AS counts
        FROM counted GROUP BY b, model) c ON c.b = s.b AND c.model = s.model
    ORDER BY s.b, s.model
$$;
