-- Trial guardrails (bot/trials): an arm's calls in time order straight from the index. The
-- guardrails' looks and /trial's intervals read a bounded window of them (newest first, or the
-- arm's n-th call); counting an arm's calls reads the index alone.
CREATE INDEX IF NOT EXISTS ledger_calls_trial_arm_at_idx ON ledger_calls (trial_id, trial_arm, at)
    WHERE trial_id IS NOT NULL;
