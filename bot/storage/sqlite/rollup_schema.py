"""SQLite step 12: the ledger's hourly and daily rollups (mirrors insforge/migrations/016).

`ledger_rollups`: per period (`g` seconds long: 3600 or 86400, starting at `p`, unix seconds) x
agent x grp (the model, or '' for the agent over all its models) the figures that add up, the
distinct turns (`turns`) and how many of them the period before had too (`turns_cont`), and the
ratings of the turns served (answered) there (`rated`, `rated_up`, with `_cont` the same
for the turns the period before served too). `ledger_histograms`: per period x agent x model the
answered calls' latency (kind 0) and first token (kind 1) in log buckets (8 per doubling).
Decision 0016 and `bot/storage/ledger_rollups.py` say how `/stats` reads them.

Kept off the write: the ledger's rows are written as before (one `INSERT OR IGNORE` a batch, so
a repeated batch stores nothing twice), and `SQLiteLedgerRepo.roll_up` adds the calls above
`ledger_rollup_state.rolled_id` (the changes worked out by
`bot/storage/ledger_rollups.rollup_changes`), in one transaction with the new mark: every few
seconds from the writer's task and before each read of the figures. A rating, new or changed,
updates the periods its turn was served in by the calls rolled up so far (a trigger); the
roll-up of a turn's later calls counts its ratings then. Step 12 fills them from the rows
already there (`REBUILD_SQL`).
"""

from __future__ import annotations

from bot.storage.ledger_rollups import BUCKETS_PER_DOUBLING, EPSILON, FLOOR_MS

# Each period length, and each call counted for its model and for its agent as a whole.
_LEVELS = "(SELECT 3600 AS g UNION ALL SELECT 86400) lv"
_WHOLE = "(SELECT 0 AS whole UNION ALL SELECT 1) w"
# Only the calls rolled up so far: the roll-up counts a turn's ratings when it rolls its calls.
_ROLLED = "(SELECT rolled_id FROM ledger_rollup_state)"
_BUCKET = (
    f"CAST(floor({BUCKETS_PER_DOUBLING} * log2(max({{v}}, {FLOOR_MS})) + {EPSILON}) AS INTEGER)"
)


# An upsert's additions (the batch writes' and the ratings').
ADD_SQL = """
    calls = calls + excluded.calls, errors = errors + excluded.errors,
    fallbacks = fallbacks + excluded.fallbacks,
    prompt_tokens = prompt_tokens + excluded.prompt_tokens,
    completion_tokens = completion_tokens + excluded.completion_tokens,
    cost_usd = cost_usd + excluded.cost_usd, unpriced = unpriced + excluded.unpriced,
    turns = turns + excluded.turns, turns_cont = turns_cont + excluded.turns_cont,
    rated = rated + excluded.rated, rated_up = rated_up + excluded.rated_up,
    rated_cont = rated_cont + excluded.rated_cont,
    rated_up_cont = rated_up_cont + excluded.rated_up_cont"""


def _rating_trigger(name: str, event: str, rated: str, up: str) -> str:
    return f"""
CREATE TRIGGER IF NOT EXISTS {name} {event}
BEGIN
    INSERT INTO ledger_rollups (g, p, agent, grp, rated, rated_up, rated_cont, rated_up_cont)
    SELECT s.g, s.p, s.agent, s.grp, {rated}, {up}, s.prev * ({rated}), s.prev * ({up})
    FROM (SELECT DISTINCT lv.g AS g, unixepoch(c.at) / lv.g * lv.g AS p, c.agent AS agent,
            CASE w.whole WHEN 1 THEN '' ELSE c.model END AS grp,
            EXISTS (SELECT 1 FROM ledger_calls d WHERE d.turn_id = c.turn_id
                AND d.outcome = 'ok' AND d.agent = c.agent AND d.id <= {_ROLLED}
                AND (w.whole = 1 OR d.model = c.model)
                AND unixepoch(d.at) / lv.g = unixepoch(c.at) / lv.g - 1) AS prev
        FROM ledger_calls c, {_LEVELS}, {_WHOLE}
        WHERE c.turn_id = NEW.turn_id AND c.outcome = 'ok' AND c.id <= {_ROLLED}) s
    WHERE true
    ON CONFLICT (g, p, agent, grp) DO UPDATE SET {ADD_SQL};
END;
"""


TABLES_SQL = """
CREATE TABLE IF NOT EXISTS ledger_rollups (
    g INTEGER NOT NULL,
    p INTEGER NOT NULL,
    agent TEXT NOT NULL,
    grp TEXT NOT NULL,
    calls INTEGER NOT NULL DEFAULT 0,
    errors INTEGER NOT NULL DEFAULT 0,
    fallbacks INTEGER NOT NULL DEFAULT 0,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    unpriced INTEGER NOT NULL DEFAULT 0,
    turns INTEGER NOT NULL DEFAULT 0,
    turns_cont INTEGER NOT NULL DEFAULT 0,
    rated INTEGER NOT NULL DEFAULT 0,
    rated_up INTEGER NOT NULL DEFAULT 0,
    rated_cont INTEGER NOT NULL DEFAULT 0,
    rated_up_cont INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (g, p, agent, grp)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ledger_histograms (
    g INTEGER NOT NULL,
    p INTEGER NOT NULL,
    agent TEXT NOT NULL,
    model TEXT NOT NULL,
    kind INTEGER NOT NULL,
    bucket INTEGER NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (g, p, agent, model, kind, bucket)
) WITHOUT ROWID;
-- The roll-up and `/stats` find a turn's other calls by it.
CREATE INDEX IF NOT EXISTS ledger_calls_turn_idx ON ledger_calls (turn_id)
    WHERE turn_id IS NOT NULL;
-- The calls up to rolled_id (ledger_calls.id) are in the rollups; the rest are rolled up in the
-- background and before each read.
CREATE TABLE IF NOT EXISTS ledger_rollup_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    rolled_id INTEGER NOT NULL
);
INSERT OR IGNORE INTO ledger_rollup_state (id, rolled_id) VALUES (1, 0);
"""

TRIGGERS_SQL = _rating_trigger(
    "ledger_ratings_rollup", "AFTER INSERT ON ledger_ratings", "1", "NEW.up"
) + _rating_trigger(
    "ledger_ratings_rollup_change",
    "AFTER UPDATE OF up ON ledger_ratings WHEN NEW.up <> OLD.up",
    "0",
    "NEW.up - OLD.up",
)

# The rollups of the rows there are, from scratch (step 12; the benchmark after a bulk load).
REBUILD_SQL = f"""
DELETE FROM ledger_rollups;
DELETE FROM ledger_histograms;
INSERT INTO ledger_rollups (g, p, agent, grp, calls, errors, fallbacks, prompt_tokens,
    completion_tokens, cost_usd, unpriced)
SELECT lv.g, unixepoch(c.at) / lv.g * lv.g, c.agent,
    CASE w.whole WHEN 1 THEN '' ELSE c.model END, COUNT(*), SUM(c.outcome <> 'ok'),
    SUM(c.attempt > 0), SUM(c.prompt_tokens), SUM(c.completion_tokens), TOTAL(c.cost_usd),
    SUM(c.cost_source = 'unpriced' AND c.outcome = 'ok')
FROM ledger_calls c, {_LEVELS}, {_WHOLE}
GROUP BY 1, 2, 3, 4;
CREATE TEMP TABLE rollup_turns (
    g INTEGER, p INTEGER, agent TEXT, grp TEXT, turn_id INTEGER, ok INTEGER,
    PRIMARY KEY (g, agent, grp, turn_id, p)
) WITHOUT ROWID;
INSERT INTO rollup_turns
SELECT lv.g, unixepoch(c.at) / lv.g * lv.g, c.agent,
    CASE w.whole WHEN 1 THEN '' ELSE c.model END, c.turn_id, MAX(c.outcome = 'ok')
FROM ledger_calls c, {_LEVELS}, {_WHOLE}
WHERE c.turn_id IS NOT NULL
GROUP BY 1, 2, 3, 4, 5;
INSERT INTO ledger_rollups (g, p, agent, grp, turns, turns_cont, rated, rated_up, rated_cont,
    rated_up_cont)
SELECT t.g, t.p, t.agent, t.grp, COUNT(*), COUNT(b.turn_id),
    SUM(t.ok * COALESCE(r.n, 0)), SUM(t.ok * COALESCE(r.up, 0)),
    SUM(t.ok * COALESCE(b.ok, 0) * COALESCE(r.n, 0)),
    SUM(t.ok * COALESCE(b.ok, 0) * COALESCE(r.up, 0))
FROM rollup_turns t
LEFT JOIN rollup_turns b ON b.g = t.g AND b.agent = t.agent AND b.grp = t.grp
    AND b.turn_id = t.turn_id AND b.p = t.p - t.g
LEFT JOIN (SELECT turn_id, COUNT(*) AS n, SUM(up) AS up FROM ledger_ratings GROUP BY turn_id) r
    ON r.turn_id = t.turn_id
GROUP BY t.g, t.p, t.agent, t.grp
ON CONFLICT (g, p, agent, grp) DO UPDATE SET turns = excluded.turns,
    turns_cont = excluded.turns_cont, rated = excluded.rated, rated_up = excluded.rated_up,
    rated_cont = excluded.rated_cont, rated_up_cont = excluded.rated_up_cont;
DROP TABLE rollup_turns;
INSERT INTO ledger_histograms (g, p, agent, model, kind, bucket, n)
SELECT lv.g, unixepoch(c.at) / lv.g * lv.g, c.agent, c.model, k.kind,
    {_BUCKET.format(v="CASE k.kind WHEN 0 THEN c.latency_ms ELSE c.ttft_ms END")}, COUNT(*)
FROM ledger_calls c, {_LEVELS}, (SELECT 0 AS kind UNION ALL SELECT 1) k
WHERE c.outcome = 'ok' AND (k.kind = 0 OR c.ttft_ms IS NOT NULL)
GROUP BY 1, 2, 3, 4, 5, 6;
UPDATE ledger_rollup_state SET rolled_id = (SELECT COALESCE(MAX(id), 0) FROM ledger_calls);
"""

ROLLUP_SQL = TABLES_SQL + TRIGGERS_SQL + REBUILD_SQL
