"""Durable intake: an update counts as received once it is stored, and is forgotten once answered.

    intake = open_intake(settings)                     # Redis stream with REDIS_URL, else SQLite
    await intake.start()
    keys = await intake.put([(update_id, chat_id, body)], offset=update_id + 1)
    ...                                                # answer it
    await intake.done(keys[0])
    for entry in await intake.reclaim():               # after a restart: what is still open
        ...                                            # in update order, replies first

Why: Telegram forgets an update once the bot has confirmed it (the next `getUpdates` offset, or a
webhook's 200). Confirmed and only held in memory, a SIGTERM past the shutdown deadline, a crash
or a SIGKILL lost it: 4 of 12 queued messages of a chat were never answered after a restart
(issue 19). So the polling loop stores a batch (and the next offset) before it asks for the next
one, and the webhook stores an update before it answers 200; both mark it done once answered.

A reply whose delivery failed (Telegram 5xx, network) is stored too (`defer_reply`), in the same
write that marks its update answered, so a restart neither loses it nor answers the update twice.

What is stored is opaque to this package: JSON text, its update id and chat id. It knows no
Telegram types (`bot.telegram.intake_feed` decodes and feeds them).
"""

from bot.intake.store import (
    REPLY,
    UPDATE,
    Intake,
    IntakeError,
    QueueEntry,
    Stored,
    open_intake,
)

__all__ = ["REPLY", "UPDATE", "Intake", "IntakeError", "QueueEntry", "Stored", "open_intake"]
