"""Answers while the database is down: the last context seen, and writes held until it is back.

    memory = Continuity(storage.messages)
    turn = memory.turn()
    history = await turn.read("history", chat_id, lambda: messages.recent(chat_id, 20), [])
    await turn.add_message(stored_message)          # stored now, or queued while the DB is down
    if turn.degraded and memory.should_note(chat_id):
        reply += NOTE                               # once per chat and outage

Why: with the database down, a turn's first read failed and the turn ended in an apology (the
fault suite's `database-down`: 166 of 740 answered, 580 apologies). The message itself and what
the bot last read of the chat are enough for a good answer; the turn's messages can be written
when the database is back.

- Reads: a successful read is remembered per chat or user (a bounded LRU); while the database is
  down (a read or write failed less than `retry_after` seconds ago), reads are not even tried:
  the remembered value (or the default) stands in and the turn is marked degraded.
- Messages: written at once while the database is up; queued (in order, up to `max_pending`)
  once a write failed or while anything is queued, so the order of a chat's messages holds; a
  background flusher writes the queue in batches (`MessageRepo.add_many`, idempotent) every
  `retry_after` seconds until it is empty. The remembered history follows every message added.
- Past `max_pending` queued messages the write raises, as without this module: the caller
  apologizes, nothing is dropped silently.
"""

from bot.continuity.memory import Continuity, TurnMemory

__all__ = ["Continuity", "TurnMemory"]
