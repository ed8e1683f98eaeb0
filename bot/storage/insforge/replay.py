"""`ReplayRepo` over InsForge: the `replay_inputs` table (insforge/migrations/018); a batch is one
`ignore-duplicates` upsert on `input_id` (safe to repeat), pruning is `replay_prune`."""

from __future__ import annotations

import builtins
from collections.abc import Sequence

from bot.storage.insforge_client import InsForgeClient, Row, eq
from bot.storage.replay_models import ReplayInput
from bot.storage.sqlite.replay import replay_input
from bot.storage.timeutil import iso_utc

CHUNK = 200


def _row(item: ReplayInput) -> Row:
    return {
        "input_id": item.input_id,
        "at": iso_utc(item.at),
        "agent": item.agent,
        "pipeline": item.pipeline,
        "chat_id": item.chat_id,
        "user_id": item.user_id,
        "turn_id": item.turn_id,
        "preference": item.preference,
        "spec": item.spec,
        "provider": item.provider,
        "model": item.model,
        "messages": item.messages,
        "schema": item.schema,
        "temperature": item.temperature,
        "max_tokens": item.max_tokens,
        "streamed": item.streamed,
        "output": item.output,
        "latency_ms": item.latency_ms,
        "prompt_tokens": item.prompt_tokens,
        "completion_tokens": item.completion_tokens,
        "cost_usd": item.cost_usd,
    }


class InsForgeReplayRepo:
    def __init__(self, client: InsForgeClient) -> None:
        self._client = client

    async def add_many(self, inputs: Sequence[ReplayInput]) -> None:
        for start in range(0, len(inputs), CHUNK):
            await self._client.upsert(
                "replay_inputs",
                [_row(item) for item in inputs[start : start + CHUNK]],
                on_conflict="input_id",
                ignore_duplicates=True,
            )

    async def prune(self, keep: int) -> int:
        gone = await self._client.rpc("replay_prune", {"p_keep": keep})
        return int(gone or 0)

    async def recent(self, agent: str, limit: int) -> builtins.list[ReplayInput]:
        rows = await self._client.select(
            "replay_inputs", {"agent": eq(agent)}, order="id.desc", limit=limit
        )
        return [replay_input(dict(row)) for row in reversed(rows)]

    async def clear_chat(self, chat_id: int) -> int:
        return len(
            await self._client.delete("replay_inputs", {"chat_id": eq(chat_id)}, select="id")
        )
