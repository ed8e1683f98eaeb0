-- Users' study archives (one row per uploaded document) and their passages, indexed for ranked
-- full-text search. The bot reaches them through the functions below (PostgREST RPC,
-- `/api/database/rpc/<function>`): the records API has no transaction across requests and no
-- ranking, so an archive is staged in chunks and then committed by one call, atomically, and a
-- search is one call. Mirrored for SQLite by schema step 4 (bot/storage/sqlite/archives_schema.py).

CREATE TABLE IF NOT EXISTS archives (
    id BIGSERIAL PRIMARY KEY,
    user_id BIGINT NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('text', 'markdown', 'pdf', 'html')),
    size_bytes BIGINT NOT NULL CHECK (size_bytes >= 0),
    page_count INTEGER NOT NULL,
    passage_count INTEGER NOT NULL,
    is_active BOOLEAN NOT NULL DEFAULT true,
    -- The upload this archive was committed from: committing the same upload again returns it.
    idempotency_key TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT archives_user_id_name_key UNIQUE (user_id, name),
    CONSTRAINT archives_idempotency_key_key UNIQUE (idempotency_key)
);

-- A passage's lexemes, each keyed by its owner: `4711_mitochondria` for user 4711 (english
-- stemming, its section heading included). A GIN entry is then one user's passages holding one
-- word, so a search reads only its user's postings, however many users share the word. With a
-- GIN over (user_id, tsv) (btree_gin) every search intersects the user's whole entry with each
-- term's postings of every user: 6 ms a term at 1,000,000 passages (decision 0010).
CREATE OR REPLACE FUNCTION archive_lexemes(p_user_id BIGINT, p_section TEXT, p_text TEXT)
RETURNS TSVECTOR LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT array_to_tsvector(coalesce(array_agg(p_user_id::TEXT || '_' || l.lexeme), '{}'))
    FROM unnest(to_tsvector('english', coalesce(p_section, '') || ' ' || p_text)) AS l
$$;

-- The passages searched. `tsv` is computed by PostgreSQL, so no client can index a passage
-- differently from the query.
CREATE TABLE IF NOT EXISTS archive_passages (
    id BIGSERIAL PRIMARY KEY,
    archive_id BIGINT NOT NULL REFERENCES archives (id) ON DELETE CASCADE,
    user_id BIGINT NOT NULL,
    ordinal INTEGER NOT NULL,
    page INTEGER,
    section TEXT,
    text TEXT NOT NULL,
    tsv TSVECTOR GENERATED ALWAYS AS (archive_lexemes(user_id, section, text)) STORED
);

CREATE INDEX IF NOT EXISTS archive_passages_archive_idx ON archive_passages (archive_id, ordinal);
CREATE INDEX IF NOT EXISTS archive_passages_tsv_idx ON archive_passages USING GIN (tsv);

-- Passages of uploads not yet committed: invisible to search, moved into archive_passages by
-- archive_commit, dropped by archive_abort (and after a day, if a bot died mid-upload).
CREATE TABLE IF NOT EXISTS archive_uploads (
    upload TEXT NOT NULL,
    user_id BIGINT NOT NULL,
    ordinal INTEGER NOT NULL,
    page INTEGER,
    section TEXT,
    text TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (upload, ordinal)
);
CREATE INDEX IF NOT EXISTS archive_uploads_created_at_idx ON archive_uploads (created_at);

-- Stage one chunk of an upload's passages (a JSON array of {ordinal, page, section, text}).
-- Repeating a chunk stores it once. Returns how many passages the upload has staged.
CREATE OR REPLACE FUNCTION archive_stage(p_upload TEXT, p_user_id BIGINT, p_passages JSONB)
RETURNS INTEGER LANGUAGE sql AS $$
    INSERT INTO archive_uploads (upload, user_id, ordinal, page, section, text)
    SELECT p_upload, p_user_id, x.ordinal, x.page, x.section, x.text
    FROM jsonb_to_recordset(p_passages) AS x (ordinal INTEGER, page INTEGER, section TEXT, text TEXT)
    ON CONFLICT (upload, ordinal) DO NOTHING;
    SELECT count(*)::INTEGER FROM archive_uploads s WHERE s.upload = p_upload AND s.user_id = p_user_id;
$$;

-- Drop an upload's staged passages (it failed or was refused); also any upload left over a day.
CREATE OR REPLACE FUNCTION archive_abort(p_upload TEXT, p_user_id BIGINT)
RETURNS INTEGER LANGUAGE sql AS $$
    WITH gone AS (
        DELETE FROM archive_uploads s
        WHERE (s.upload = p_upload AND s.user_id = p_user_id)
            OR s.created_at < now() - INTERVAL '1 day'
        RETURNING 1
    )
    SELECT count(*)::INTEGER FROM gone;
$$;

-- How many of a user's passages hold each lexeme: the document frequencies that make a rare word
-- of the query count more than a common one (ts_rank alone has no such statistics, and ranked
-- "dish known" above "Liyevetu" for "What dish is Liyevetu known for?": recall@5 0.70 -> 0.97,
-- decision 0010). Kept per user, so one user's uploads never contend with another's.
CREATE TABLE IF NOT EXISTS archive_terms (
    user_id BIGINT NOT NULL,
    lexeme TEXT NOT NULL,
    ndoc INTEGER NOT NULL,
    PRIMARY KEY (user_id, lexeme)
);

-- Add (p_sign 1) or take away (-1) one archive's passages in its user's term statistics.
CREATE OR REPLACE FUNCTION archive_terms_count(p_archive_id BIGINT, p_user_id BIGINT, p_sign INTEGER)
RETURNS INTEGER LANGUAGE sql AS $$
    INSERT INTO archive_terms AS t (user_id, lexeme, ndoc)
    SELECT p_user_id, s.word, p_sign * s.ndoc
    FROM ts_stat('SELECT tsv FROM archive_passages WHERE archive_id = ' || p_archive_id::TEXT) s
    ORDER BY s.word
    ON CONFLICT (user_id, lexeme) DO UPDATE SET ndoc = t.ndoc + EXCLUDED.ndoc;
    DELETE FROM archive_terms t WHERE p_sign < 0 AND t.user_id = p_user_id AND t.ndoc <= 0;
    SELECT 1;
$$;

-- Whether the upload may be committed now: every passage staged, the name free (or replaced),
-- and the user within both limits, not counting the archive it replaces.
CREATE OR REPLACE FUNCTION archive_fits(
    p_upload TEXT, p_user_id BIGINT, p_name TEXT, p_size_bytes BIGINT, p_passage_count INTEGER,
    p_max_files INTEGER, p_max_bytes BIGINT, p_replace BOOLEAN
)
RETURNS BOOLEAN LANGUAGE sql STABLE AS $$
    SELECT NOT EXISTS (SELECT 1 FROM archives d WHERE d.idempotency_key = p_upload)
        AND (SELECT count(*) FROM archive_uploads s
             WHERE s.upload = p_upload AND s.user_id = p_user_id) = p_passage_count
        AND (p_replace OR NOT EXISTS (SELECT 1 FROM archives n
                                      WHERE n.user_id = p_user_id AND n.name = p_name))
        AND (SELECT count(*) + 1 FROM archives o
             WHERE o.user_id = p_user_id AND o.name <> p_name) <= p_max_files
        AND (SELECT coalesce(sum(o.size_bytes), 0) + p_size_bytes FROM archives o
             WHERE o.user_id = p_user_id AND o.name <> p_name) <= p_max_bytes;
$$;

-- Commit a staged upload as one archive, in this one transaction: all of its passages become
-- searchable, or nothing changes. Under a per-user lock it checks `archive_fits`, swaps out the
-- archive of that name when p_replace, moves the passages in and counts their terms.
-- `outcome`: stored (also when this upload was committed before: the call is safe to repeat),
-- incomplete, exists, files or bytes; `files` and `used_bytes` are what the user keeps besides
-- the archive replaced.
CREATE OR REPLACE FUNCTION archive_commit(
    p_upload TEXT,
    p_user_id BIGINT,
    p_name TEXT,
    p_kind TEXT,
    p_size_bytes BIGINT,
    p_page_count INTEGER,
    p_passage_count INTEGER,
    p_max_files INTEGER,
    p_max_bytes BIGINT,
    p_replace BOOLEAN
)
RETURNS TABLE (
    outcome TEXT,
    id BIGINT,
    user_id BIGINT,
    name TEXT,
    kind TEXT,
    size_bytes BIGINT,
    page_count INTEGER,
    passage_count INTEGER,
    is_active BOOLEAN,
    created_at TIMESTAMPTZ,
    files BIGINT,
    used_bytes BIGINT
)
LANGUAGE sql AS $$
    SELECT pg_advisory_xact_lock(hashtext('archives'), hashtext(p_user_id::TEXT));

    SELECT archive_terms_count(a.id, p_user_id, -1) FROM archives a
    WHERE p_replace AND a.user_id = p_user_id AND a.name = p_name
        AND archive_fits(p_upload, p_user_id, p_name, p_size_bytes, p_passage_count,
                         p_max_files, p_max_bytes, p_replace);

    DELETE FROM archives a
    WHERE p_replace AND a.user_id = p_user_id AND a.name = p_name
        AND archive_fits(p_upload, p_user_id, p_name, p_size_bytes, p_passage_count,
                         p_max_files, p_max_bytes, p_replace);

    INSERT INTO archives (user_id, name, kind, size_bytes, page_count, passage_count,
                          idempotency_key)
    SELECT p_user_id, p_name, p_kind, p_size_bytes, p_page_count, p_passage_count, p_upload
    WHERE archive_fits(p_upload, p_user_id, p_name, p_size_bytes, p_passage_count,
                       p_max_files, p_max_bytes, false);

    INSERT INTO archive_passages (archive_id, user_id, ordinal, page, section, text)
    SELECT a.id, p_user_id, s.ordinal, s.page, s.section, s.text
    FROM archive_uploads s
    JOIN archives a ON a.idempotency_key = p_upload AND a.user_id = p_user_id
    WHERE s.upload = p_upload AND s.user_id = p_user_id;

    -- Only when this call moved the passages in (the staged rows are still there).
    SELECT archive_terms_count(a.id, p_user_id, 1) FROM archives a
    WHERE a.idempotency_key = p_upload AND a.user_id = p_user_id
        AND EXISTS (SELECT 1 FROM archive_uploads s
                    WHERE s.upload = p_upload AND s.user_id = p_user_id);

    DELETE FROM archive_uploads s
    WHERE (s.upload = p_upload
           AND EXISTS (SELECT 1 FROM archives d WHERE d.idempotency_key = p_upload))
        OR s.created_at < now() - INTERVAL '1 day';

    SELECT
        CASE
            WHEN a.id IS NOT NULL THEN 'stored'
            WHEN (SELECT count(*) FROM archive_uploads s
                  WHERE s.upload = p_upload AND s.user_id = p_user_id) <> p_passage_count
                THEN 'incomplete'
            WHEN NOT p_replace AND EXISTS (SELECT 1 FROM archives n
                                           WHERE n.user_id = p_user_id AND n.name = p_name)
                THEN 'exists'
            WHEN u.files + 1 > p_max_files THEN 'files'
            ELSE 'bytes'
        END,
        a.id, a.user_id, a.name, a.kind, a.size_bytes, a.page_count, a.passage_count,
        a.is_active, a.created_at, u.files, u.used_bytes
    FROM (
        SELECT count(*) AS files, coalesce(sum(o.size_bytes), 0)::BIGINT AS used_bytes
        FROM archives o
        WHERE o.user_id = p_user_id AND o.idempotency_key <> p_upload
            AND NOT (p_replace AND o.name = p_name)
    ) u
    LEFT JOIN archives a ON a.idempotency_key = p_upload AND a.user_id = p_user_id;
$$;

-- Delete one of the user's archives: its passages leave the index (ON DELETE CASCADE) and its
-- terms the statistics, in one transaction. False when the user has no such archive.
CREATE OR REPLACE FUNCTION archive_delete(p_user_id BIGINT, p_archive_id BIGINT)
RETURNS BOOLEAN LANGUAGE sql AS $$
    SELECT pg_advisory_xact_lock(hashtext('archives'), hashtext(p_user_id::TEXT));
    SELECT archive_terms_count(a.id, p_user_id, -1) FROM archives a
    WHERE a.id = p_archive_id AND a.user_id = p_user_id;
    WITH gone AS (
        DELETE FROM archives a WHERE a.id = p_archive_id AND a.user_id = p_user_id RETURNING 1
    )
    SELECT count(*) > 0 FROM gone;
$$;

-- The best p_limit passages of the user's active archives (or of p_archive_ids, the user's) for
-- any of p_terms (words), best first.
-- - Each term is stemmed like the passages and keyed by the user (`archive_lexemes`), and
--   weighs its BM25 inverse document frequency among the user's passages (`archive_terms`).
-- - Candidates are the passages holding an informative term: one in at most 30 % of the user's
--   passages (once they are 1,000 or more), or every term when none is. A word that is
--   everywhere cannot tell passages apart, and weighing every passage that holds it is the cost.
-- - A passage weighs the sum of its terms' weights, from one GIN scan per term (no tsvector is
--   read); the best 20 are ordered by that plus ts_rank on their text (term frequency, length,
--   a heading counting twice the text; 0.12 ms a passage, so not for more) and the first
--   p_limit returned.
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
        SELECT w.plain, coalesce(s.ndoc, 0) AS ndoc, n.total,
            -- A quoted lexeme: taken as it is, whatever it holds.
            ('''' || replace(replace(w.keyed, '\', '\\'), '''', '''''') || '''')::tsquery AS query,
            ln(1 + (n.total - coalesce(s.ndoc, 0) + 0.5) / (coalesce(s.ndoc, 0) + 0.5)) AS idf
        FROM words w
        CROSS JOIN (
            SELECT greatest(coalesce(sum(a.passage_count), 0), 1) AS total
            FROM archives a WHERE a.user_id = p_user_id
        ) n
        LEFT JOIN archive_terms s ON s.user_id = p_user_id AND s.lexeme = w.keyed
    ),
    picked AS (
        SELECT t.query, t.idf FROM terms t
        WHERE (t.ndoc > 0 AND (t.total < 1000 OR t.ndoc <= 0.3 * t.total))
            OR NOT EXISTS (SELECT 1 FROM terms r
                           WHERE r.ndoc > 0 AND (r.total < 1000 OR r.ndoc <= 0.3 * r.total))
    ),
    weighed AS (
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
    best AS (
        SELECT w.id, w.weight, a.name
        FROM weighed w
        JOIN archives a ON a.id = w.archive_id AND a.user_id = p_user_id
        WHERE CASE WHEN p_archive_ids IS NULL THEN a.is_active
                   ELSE a.id = ANY (p_archive_ids) END
        ORDER BY w.weight DESC, w.id
        LIMIT greatest(20, p_limit)
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
