"""Replay: an agent's real inputs, run again on a candidate model and shown side by side.

    keeper = ReplayKeeper(storage.replay, keep=50)    # fed by the ledger's capture wrapper
    plan = await replayer.plan("coach", picked, "fast", n=20)
    rows = await replayer.run(plan, by="tg:1")         # report.report_messages(plan, rows)

What flows through it, in order:

    capture.LedgerProvider   (bot.observatory) hands each answered call of a turn to the keeper:
                             the messages as sent, schema, max_tokens, temperature, the output
    keeper.ReplayKeeper      holds the newest REPLAY_KEEP per agent in memory, writes them off
                             the reply's path and prunes the table to REPLAY_KEEP per agent
    run.Replayer             reads the newest n, leaves out what a cloud model may not see
                             (`/prefer local`), estimates the cost, runs them on the candidate
    report                   the estimate, then the side-by-side report in Telegram-sized parts
    commands.ReplayCommands  `/replay <agent> <model> [n=20]`, shared by Telegram and console

STORE_PROMPTS=false keeps nothing (and deletes what was kept). It knows nothing of Telegram.
"""

from bot.replay.keeper import ReplayKeeper
from bot.replay.run import Replayer, ReplayPlan, ReplayRow

__all__ = ["ReplayKeeper", "ReplayPlan", "ReplayRow", "Replayer"]
