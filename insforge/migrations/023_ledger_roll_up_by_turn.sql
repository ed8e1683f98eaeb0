-- ledger_roll_up() (016) found a new key's turn among the calls rolled up before with an EXISTS
-- per key that PostgreSQL answered through ledger_calls_agent_at_idx: every call of the agent in
-- the period, per probe. Its cost grew with the hour's traffic: 6 s for 1,800 new calls among
-- 18,000, and 20 s at 100% of a core in the burst of `e2e_load --production` (2026-12-04). Here
-- the turn's earlier calls are read turn by turn (the index on turn_id) and joined once, as
-- SQLite's roll-up does (bot/storage/sqlite/ledger.py). Same figures: tests/storage/
-- test_ledger_rollups.py holds the rollups equal to the exact figures on both backends.
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
    -- The calls rolled up before (the statement's snapshot does not see `listed`) of the new
    -- keys' turns, found turn by turn through ledger_calls_turn_idx (OFFSET 0 keeps each lookup a
    -- probe: the planner could otherwise probe (agent, at), which holds a whole period's calls
    -- of the agent, and did: 0.08 ms a probe at 9,000 calls, ~50,000 probes a roll-up).
    prior AS (
        SELECT lv.g, ledger_period(c.at, lv.g) AS p, c.agent, gr.grp, c.turn_id,
            bool_or(c.outcome = 'ok') AS ok
        FROM (SELECT DISTINCT turn_id FROM keys) t
        CROSS JOIN LATERAL (SELECT c.id, c.at, c.agent, c.model, c.turn_id, c.outcome
            FROM ledger_calls c WHERE c.turn_id = t.turn_id OFFSET 0) c
        CROSS JOIN (VALUES (3600), (86400)) lv(g)
        CROSS JOIN LATERAL (VALUES (c.model), ('')) gr(grp)
        WHERE c.id <= (SELECT floor_id FROM ledger_rollup_state)
            OR EXISTS (SELECT 1 FROM ledger_rolled r WHERE r.id = c.id)
        GROUP BY 1, 2, 3, 4, 5
    ),
    -- The turn's presence in each new key's period and its two neighbours, before and after.
    occ AS (
        SELECT s.g, s.p, s.agent, s.grp, s.turn_id,
            o.turn_id IS NOT NULL AS old_any, coalesce(o.ok, false) AS old_ok,
            k.turn_id IS NOT NULL AS new_any, coalesce(k.ok, false) AS new_ok
        FROM (SELECT DISTINCT k.g, k.p + o.d * k.g AS p, k.agent, k.grp, k.turn_id
              FROM keys k CROSS JOIN (VALUES (-1), (0), (1)) o(d)) s
        LEFT JOIN keys k ON k.g = s.g AND k.p = s.p AND k.agent = s.agent AND k.grp = s.grp
            AND k.turn_id = s.turn_id
        LEFT JOIN prior o ON o.g = s.g AND o.p = s.p AND o.agent = s.agent AND o.grp = s.grp
            AND o.turn_id = s.turn_id
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
