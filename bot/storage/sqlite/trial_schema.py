"""Schema step 10 (`schema.py`): trials and the ledger's arm columns (insforge/migrations/014).

The ledger's columns are added, not in step 7's table: a database made before trials gets them
here, a new one gets step 7's table and then these.
"""

TRIAL_SQL = """
CREATE TABLE IF NOT EXISTS trials (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    agent TEXT NOT NULL,
    candidate TEXT NOT NULL,
    share REAL NOT NULL CHECK (share > 0 AND share < 100),
    min_calls INTEGER NOT NULL CHECK (min_calls > 0),
    started_by TEXT,
    started_at TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'running'
        CHECK (status IN ('running', 'stopped', 'promoted', 'guardrail')),
    ended_at TEXT,
    ended_by TEXT,
    reason TEXT
);
-- One running trial per agent, whichever replica starts it.
CREATE UNIQUE INDEX IF NOT EXISTS trials_running_agent_idx ON trials (agent)
    WHERE status = 'running';
ALTER TABLE ledger_calls ADD COLUMN trial_id INTEGER;
ALTER TABLE ledger_calls ADD COLUMN trial_arm TEXT
    CHECK (trial_arm IS NULL OR trial_arm IN ('incumbent', 'candidate'));
CREATE INDEX IF NOT EXISTS ledger_calls_trial_idx ON ledger_calls (trial_id)
    WHERE trial_id IS NOT NULL;
"""

# Schema step 13 (insforge/migrations/017): an arm's calls in time order, straight from the index
# (the guardrails' looks and `/trial`'s intervals read a bounded window of them; counting an arm
# reads the index alone).
TRIAL_ARM_SQL = """
CREATE INDEX IF NOT EXISTS ledger_calls_trial_arm_at_idx ON ledger_calls (trial_id, trial_arm, at)
    WHERE trial_id IS NOT NULL;
"""
