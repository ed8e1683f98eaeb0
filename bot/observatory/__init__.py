"""The agent observatory: every model call on the record, and the evidence for choosing models.

What flows through it, in order:

    capture.LedgerProvider   wraps each leaf provider; in a turn (`capture.turn_scope`, opened
                             by ConversationService) each call attempt becomes a `LedgerCall`
                             naming the turn, the agent (`CURRENT_STEP`), its level and config
                             version, the model that answered, tokens, latency, outcome
    writer.LedgerWriter      holds the rows in memory (bounded) and writes them in batches off
                             the reply's path; prices them first (`pricing.Prices`); prunes
    stats.LedgerStats        `/stats` and `/usage`: the figures the database aggregates
    chart                    `/stats <agent>`'s PNG (Pillow)
    reports.ChangeReports    after a model change, the before/after report for the admins

It knows nothing of Telegram: `bot.telegram.routers.observatory` parses the commands, calls
these and answers.
"""
