-- One plain chat turn in two round trips (decision 0020): `turn_context` reads everything a turn's
-- context needs in one RPC, `turn_write` stores the turn's messages and its ledger rows in one.
-- Through the records API the same turn took four reads, two message writes, a count for the
-- summarizer and a ledger batch.

-- The context of a turn in `p_chat_id` for `p_user_id`: the last `p_history_limit` messages
-- (oldest first), the chat's summary, the user's last `p_facts_limit` facts (only when `p_facts`:
-- a private chat), their settings row, the chat's open exercise (only when `p_exercise`: /train)
-- and whether the user has an active archive (so the archive search step knows, without a read
-- of its own, whether there is anything to search).
CREATE OR REPLACE FUNCTION turn_context(
    p_chat_id BIGINT,
    p_user_id BIGINT,
    p_history_limit INTEGER DEFAULT 20,
    p_facts_limit INTEGER DEFAULT 50,
    p_facts BOOLEAN DEFAULT true,
    p_exercise BOOLEAN DEFAULT false
) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'history', COALESCE((
            SELECT jsonb_agg(to_jsonb(h) ORDER BY h.id)
            FROM (
                SELECT * FROM messages
                WHERE chat_id = p_chat_id
                ORDER BY id DESC
                LIMIT GREATEST(p_history_limit, 0)
            ) h
        ), '[]'::jsonb),
        'summary', (SELECT to_jsonb(s) FROM chat_summaries s WHERE s.chat_id = p_chat_id),
        'facts', CASE WHEN p_facts THEN COALESCE((
            SELECT jsonb_agg(f.fact ORDER BY f.id)
            FROM (
                SELECT id, fact FROM user_facts
                WHERE user_id = p_user_id
                ORDER BY id DESC
                LIMIT GREATEST(p_facts_limit, 0)
            ) f
        ), '[]'::jsonb) ELSE '[]'::jsonb END,
        'settings', (
            SELECT jsonb_build_object(
                'user_id', u.user_id,
                'default_model', u.default_model,
                'model_preference', u.model_preference,
                'api_key_provider', u.api_key_provider,
                'api_key_encrypted', u.api_key_encrypted,
                'updated_at', u.updated_at
            )
            FROM user_settings u WHERE u.user_id = p_user_id
        ),
        'exercise', CASE WHEN p_exercise THEN (
            SELECT to_jsonb(e) FROM exercises e
            WHERE e.chat_id = p_chat_id AND e.graded_at IS NULL
            ORDER BY e.id DESC LIMIT 1
        ) END,
        'archives', EXISTS (
            SELECT 1 FROM archives a WHERE a.user_id = p_user_id AND a.is_active
        )
    );
$$;

-- A turn's writes: its messages (insert-once on their idempotency keys, in the order given: the
-- user's message, then the reply) and its ledger rows (insert-once on `call_id`; a row without a
-- turn gets the id of the turn's user message). Safe to repeat after a lost answer: a repeat
-- stores nothing twice and answers the same rows. Answers the stored messages, in the order
-- given, and the chat's message count after the write (what the summarizer compares its summary
-- against).
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
               JOIN messages s ON s.idempotency_key = g.m->>'idempotency_key'
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
            JOIN messages s ON s.idempotency_key = g.m->>'idempotency_key'
        ), '[]'::jsonb),
        'count', (
            SELECT count(*) FROM messages
            WHERE chat_id = (p_messages->0->>'chat_id')::BIGINT
        )
    );
$$;
