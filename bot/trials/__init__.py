"""Trials' evidence: the guardrails that stop a worse candidate, and the figures `/trial` shows.

    looks.look_number(candidate_calls, trial.min_calls)      # 0 before `min`, then 1, 2, ...
    guardrails.decide(look, candidate=ArmData.of(rows), incumbent=ArmData.of(rows))
    guard.TrialGuard(trials, ledger).check()                 # in the background, every few s

What flows: the ledger's rows of a trial's two arms (a bounded window of raw calls) become one
`ArmData` per arm; `decide` runs three one-sided sequential tests on them (error rate, p95
latency, cost per turn); `TrialGuard` ends a trial that fails one and says why. The trial
itself (start, arms, stop) is `bot.services.trials`; `/trial` is `bot.services.trial_commands`.
"""
