"""`TurnRepo` over InsForge: the two PostgreSQL functions of insforge/migrations/020.

`turn_context` only reads, so the client repeats it like a GET after an unknown outcome.
`turn_write` is built to be repeated too: messages are insert-once on their idempotency keys and
ledger rows on their `call_id`, and it answers the stored rows either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bot.storage.insforge.ledger import ledger_row
from bot.storage.insforge.repos import message_row
from bot.storage.insforge_client import InsForgeClient
from bot.storage.ledger_models import LedgerCall
from bot.storage.models import ChatSummary, Exercise, StoredMessage, UserSettings
from bot.storage.repositories import StorageError
from bot.storage.turn_models import TurnContext, TurnWritten


def _object(answer: Any, function: str) -> dict[str, Any]:
    if not isinstance(answer, dict):
        raise StorageError(f"InsForge answered {function} with {type(answer).__name__}")
    return answer


class InsForgeTurnRepo:
    def __init__(self, client: InsForgeClient) -> None:
        self._client = client

    async def context(
        self,
        chat_id: int,
        user_id: int,
        *,
        history_limit: int,
        facts_limit: int,
        facts: bool,
        exercise: bool,
    ) -> TurnContext:
        answer = _object(
            await self._client.rpc(
                "turn_context",
                {
                    "p_chat_id": chat_id,
                    "p_user_id": user_id,
                    "p_history_limit": history_limit,
                    "p_facts_limit": facts_limit,
                    "p_facts": facts,
                    "p_exercise": exercise,
                },
                read_only=True,
            ),
            "turn_context",
        )
        summary = answer.get("summary")
        settings = answer.get("settings")
        open_exercise = answer.get("exercise")
        return TurnContext(
            history=[StoredMessage.model_validate(row) for row in answer.get("history") or ()],
            summary=ChatSummary.model_validate(summary) if summary else None,
            facts=[str(fact) for fact in answer.get("facts") or ()],
            settings=UserSettings.model_validate(settings) if settings else None,
            exercise=Exercise.model_validate(open_exercise) if open_exercise else None,
            archives=bool(answer.get("archives")),
        )

    async def write(
        self, messages: Sequence[StoredMessage], calls: Sequence[LedgerCall] = ()
    ) -> TurnWritten:
        answer = _object(
            await self._client.rpc(
                "turn_write",
                {
                    "p_messages": [message_row(m) for m in messages],
                    "p_calls": [ledger_row(call) for call in calls],
                },
                # Idempotent by construction (keys): repeated after an unknown outcome.
                read_only=True,
            ),
            "turn_write",
        )
        stored = [StoredMessage.model_validate(row) for row in answer.get("messages") or ()]
        if len(stored) != len(messages):
            raise StorageError(
                f"InsForge stored {len(stored)} of the turn's {len(messages)} messages"
            )
        return TurnWritten(stored, int(answer.get("count") or 0))
