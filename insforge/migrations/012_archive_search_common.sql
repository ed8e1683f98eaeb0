-- Issue 17: the worst case of archive_search (decision 0010, the benchmark's `common` queries):
-- a message of the user's common words (each in ~14 % of their passages) and one rare word.
-- 008 weighed every passage holding any informative term: ~4,000-7,500 of 10,000, p95 33-39 ms.
-- Now the rarest terms pick the candidates, as long as they hold at most 1,000 passages
-- together (the rarest term always picks); when some term picks none, the passages holding
-- every term, and those holding all the terms that pick none, are candidates too (each one
-- GIN scan of an AND, at most 1,000 rows). Every term still counts in the final ts_rank, now
-- of the best 10 rather than 20 (recall@5 0.977 either way on the benchmark's 300 questions,
-- 1-2 ms less: ts_rank re-derives each passage's tsvector).
-- Mirrored for SQLite in bot/storage/sqlite/archives.py (no schema there).
CREATE OR REPLACE FUNCTION archive_search(
    p_user_id BIGINT,
    p_terms TEXT[],
    p_limit INTEGER DEFAULT 5,
    p_archive_ids BIGINT[] DEFAULT NULL
)
RETURNS TABLE (
    passage_id BIGINT,
    archive_id BIGINT,
    document TEXT,
    page INTEGER,
    section TEXT,
    text TEXT,
    score REAL
)
-- jit off: the planner's estimates for the text functions are high enough to start the JIT
-- compiler, which costs more (~270 ms) than the query it compiles.
LANGUAGE sql STABLE SET jit = off AS $$
    WITH words AS (
        SELECT DISTINCT p_user_id::TEXT || '_' || l.lexeme AS keyed,
            plainto_tsquery('english', w) AS plain
        FROM unnest(p_terms[1:32]) AS w
        CROSS JOIN LATERAL unnest(to_tsvector('english', w)) AS l
    ),
    terms AS (
        SELECT w.plain, coalesce(s.ndoc, 0) AS ndoc,
            -- A quoted lexeme: taken as it is, whatever it holds.
            '''' || replace(replace(w.keyed, '\', '\\'), '''', '''''') || '''' AS quoted,
            ln(1 + (n.total - coalesce(s.ndoc, 0) + 0.5) / (coalesce(s.ndoc, 0) + 0.5)) AS idf
        FROM words w
        CROSS JOIN (
            SELECT greatest(coalesce(sum(a.passage_count), 0), 1) AS total
            FROM archives a WHERE a.user_id = p_user_id
        ) n
        LEFT JOIN archive_terms s ON s.user_id = p_user_id AND s.lexeme = w.keyed
    ),
    -- The terms the user's passages hold, rarest first; `picks` while they hold at most 1,000
    -- passages together (the rarest always).
    present AS (
        SELECT t.quoted, t.idf,
            (row_number() OVER rarest = 1 OR sum(t.ndoc) OVER rarest <= 1000) AS picks
        FROM terms t
        WHERE t.ndoc > 0
        WINDOW rarest AS (ORDER BY t.ndoc, t.quoted ROWS UNBOUNDED PRECEDING)
    ),
    picked AS (
        SELECT o.quoted::tsquery AS query, o.idf FROM present o WHERE o.picks
    ),
    by_terms AS (
        SELECT m.id, m.archive_id, sum(m.idf) AS weight
        FROM picked t
        CROSS JOIN LATERAL (
            -- OFFSET 0 keeps this a scan per term, with the term's query as the GIN's key;
            -- flattened into a join, the planner filters all the user's passages instead.
            SELECT p.id, p.archive_id, t.idf FROM archive_passages p
            WHERE p.tsv @@ t.query AND p.user_id = p_user_id
            OFFSET 0
        ) m
        GROUP BY m.id, m.archive_id
    ),
    -- Some term picks none: the passages holding every term, and those holding all the terms
    -- that pick none (intersections: few rows).
    together AS MATERIALIZED (
        SELECT p.id, p.archive_id, (SELECT sum(o.idf) FROM present o) AS weight
        FROM archive_passages p
        WHERE EXISTS (SELECT 1 FROM present o WHERE NOT o.picks)
            AND p.user_id = p_user_id
            AND p.tsv @@ (SELECT string_agg(o.quoted, ' & ')::tsquery FROM present o)
        LIMIT 1000
    ),
    unpicked AS MATERIALIZED (
        SELECT p.id, p.archive_id,
            (SELECT sum(o.idf) FROM present o WHERE NOT o.picks) AS weight
        FROM archive_passages p
        WHERE EXISTS (SELECT 1 FROM present o WHERE NOT o.picks)
            AND p.user_id = p_user_id
            AND p.tsv @@ (SELECT string_agg(o.quoted, ' & ')::tsquery FROM present o
                          WHERE NOT o.picks)
        LIMIT 1000
    ),
    weighed AS (
        SELECT c.id, c.archive_id, max(c.weight) AS weight
        FROM (
            SELECT * FROM by_terms
            UNION ALL SELECT * FROM together
            UNION ALL SELECT * FROM unpicked
        ) c
        GROUP BY c.id, c.archive_id
    ),
    best AS (
        SELECT w.id, w.weight, a.name
        FROM weighed w
        JOIN archives a ON a.id = w.archive_id AND a.user_id = p_user_id
        WHERE CASE WHEN p_archive_ids IS NULL THEN a.is_active
                   ELSE a.id = ANY (p_archive_ids) END
        ORDER BY w.weight DESC, w.id
        LIMIT greatest(10, p_limit)
    )
    SELECT p.id, p.archive_id, b.name, p.page, p.section, p.text,
        (b.weight + ts_rank(
            '{0.1, 0.2, 0.4, 0.2}',
            setweight(to_tsvector('english', coalesce(p.section, '')), 'A')
                || to_tsvector('english', p.text),
            (SELECT string_agg(t.plain::TEXT, ' | ')::tsquery FROM terms t),
            1
        ))::REAL AS score
    FROM best b
    JOIN archive_passages p ON p.id = b.id
    ORDER BY score DESC, p.id
    LIMIT least(greatest(p_limit, 0), 50)
$$;
