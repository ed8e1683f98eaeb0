-- Issue 18: `turn_write` (020) found the turn's stored messages again by joining
-- `jsonb_array_elements(p_messages)` to `messages` on the idempotency key. The planner cannot
-- see how many elements a jsonb array has (it assumes 100), so it hashed them and scanned the
-- whole `messages` table for every turn: 12 ms at 16,000 messages, growing with the table
-- (auto_explain, 2026-12-02), where the unique key's index finds the two rows in microseconds.
-- Each lookup is now a lateral subquery per element (`LIMIT 1` keeps it from being flattened
-- back into a join), so it can only be an index probe on `messages_idempotency_key_key`.
-- Same arguments, same answer, same insert-once behaviour as 020.
CREATE OR REPLACE FUNCTION turn_write(
    p_messages jsonb,
    p_calls jsonb DEFAULT '[]'::jsonb
) RETURNS jsonb
LANGUAGE sql AS $$
    -- (LANGUAGE sql: each statement sees what the ones before it wrote.)
    INSERT INTO messages (
        chat_id, user_id, role, text, pipeline, trace_id, created_at, idempotency_key
    )
    SELECT m.chat_id, m.user_id, m.role, m.text, m.pipeline, m.trace_id,
           COALESCE(m.created_at, now()), m.idempotency_key
    FROM jsonb_populate_recordset(NULL::messages, p_messages) WITH ORDINALITY AS m
    ORDER BY m.ordinality
    ON CONFLICT (idempotency_key) DO NOTHING;

    INSERT INTO ledger_calls (
        call_id, at, turn_id, chat_id, user_id, pipeline, agent, role, level, spec, model,
        provider, attempt, fallback, outcome, latency_ms, ttft_ms, prompt_tokens,
        completion_tokens, cost_usd, cost_source, config_version, trial_id, trial_arm
    )
    SELECT c.call_id, c.at,
           COALESCE(c.turn_id, (
               SELECT s.id FROM jsonb_array_elements(p_messages) AS g(m)
               CROSS JOIN LATERAL (
                   SELECT k.id, k.role FROM messages k
                   WHERE k.idempotency_key = g.m->>'idempotency_key'
                   LIMIT 1
               ) s
               WHERE s.role = 'user'
               ORDER BY s.id LIMIT 1
           )),
           c.chat_id, c.user_id, c.pipeline, c.agent, c.role, c.level, c.spec, c.model,
           c.provider, c.attempt, c.fallback, c.outcome, c.latency_ms, c.ttft_ms,
           c.prompt_tokens, c.completion_tokens, c.cost_usd, c.cost_source, c.config_version,
           c.trial_id, c.trial_arm
    FROM jsonb_populate_recordset(NULL::ledger_calls, COALESCE(p_calls, '[]'::jsonb)) AS c
    ON CONFLICT (call_id) DO NOTHING;

    SELECT jsonb_build_object(
        'messages', COALESCE((
            SELECT jsonb_agg(to_jsonb(s) ORDER BY g.n)
            FROM jsonb_array_elements(p_messages) WITH ORDINALITY AS g(m, n)
            CROSS JOIN LATERAL (
                SELECT k.* FROM messages k
                WHERE k.idempotency_key = g.m->>'idempotency_key'
                LIMIT 1
            ) s
        ), '[]'::jsonb),
        'count', (
            SELECT count(*) FROM messages
            WHERE chat_id = (p_messages->0->>'chat_id')::BIGINT
        )
    );
$$;
