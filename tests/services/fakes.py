"""Small in-test fakes for the model-config cache and resolution tests.

The cache is the subject there, so its repository is a dict that counts reads and fails or
blocks on demand; providers are FunctionProviders that say which spec and key built them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

from bot.llm.function_provider import CallInfo, FunctionProvider
from bot.llm.parameters import ModelParams, ParamsFor
from bot.llm.specs import ModelSpec
from bot.llm.types import ChatMessage
from bot.storage.models import AgentModelConfig, ModelCatalogRow, ModelConfigChange
from bot.storage.repositories import StorageUnavailable


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeConfigRepo:
    def __init__(self) -> None:
        self.rows: dict[str, AgentModelConfig] = {}
        self.reads = 0
        self.fail = False
        # When set, get_all_active waits for it (to hold many callers on one refresh).
        self.gate: asyncio.Event | None = None
        # When set, deactivate turns the active row off but answers False, as when a concurrent
        # reset got there first (the repository gives True to one call only).
        self.deactivated_by_another = False

    def put(self, agent: str, model_id: str) -> None:
        self.rows[agent] = AgentModelConfig(agent_name=agent, model_id=model_id)

    async def get_all_active(self) -> list[AgentModelConfig]:
        self.reads += 1
        # The query "runs" now; what it returns is what the table held at this moment.
        snapshot = [r.model_copy() for r in self.rows.values() if r.is_active]
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise StorageUnavailable("database is down")
        return snapshot

    async def get(self, agent_name: str) -> AgentModelConfig | None:
        return self.rows.get(agent_name)

    async def upsert(self, agent_name: str, model_id: str, set_by: str | None) -> AgentModelConfig:
        row = AgentModelConfig(agent_name=agent_name, model_id=model_id, set_by=set_by)
        self.rows[agent_name] = row
        return row

    async def deactivate(self, agent_name: str) -> bool:
        row = self.rows.get(agent_name)
        if row is None or not row.is_active:
            return False
        row.is_active = False
        return not self.deactivated_by_another


class FakeHistoryRepo:
    def __init__(self) -> None:
        self.changes: list[ModelConfigChange] = []
        self.fail = False

    async def append(self, change: ModelConfigChange) -> ModelConfigChange:
        if self.fail:
            raise StorageUnavailable("history table is down")
        line = change.model_copy(update={"id": len(self.changes) + 1})
        self.changes.append(line)
        return line

    async def list(self, agent_name: str | None = None, limit: int = 20) -> list[ModelConfigChange]:
        rows = [c for c in self.changes if agent_name is None or c.agent_name == agent_name]
        return list(reversed(rows))[:limit]

    async def latest_id(self) -> int:
        if self.fail:
            raise StorageUnavailable("history table is down")
        return len(self.changes)


class FakeCatalogRepo:
    def __init__(self) -> None:
        self.rows: dict[str, ModelCatalogRow] = {}

    async def list(self) -> list[ModelCatalogRow]:
        return [self.rows[alias] for alias in sorted(self.rows)]

    async def get(self, alias: str) -> ModelCatalogRow | None:
        return self.rows.get(alias)

    async def save(self, row: ModelCatalogRow) -> ModelCatalogRow:
        self.rows[row.alias] = row.model_copy()
        return row

    async def delete(self, alias: str) -> bool:
        return self.rows.pop(alias, None) is not None


def scripted_reply(messages: Sequence[ChatMessage], info: CallInfo) -> str:
    """A valid answer for every agent's schema, naming the model that produced it."""
    name = info.schema.__name__ if info.schema is not None else None
    if name == "ExtractedFacts":
        return json.dumps({"facts": ["Is learning Go."]})
    if name == "ReplyPlan":
        return json.dumps({"intent": f"plan by {info.model}", "key_points": ["one step"]})
    if name == "ExerciseSpec":
        return json.dumps({"question": f"Exercise from {info.model}?"})
    if name == "Grade":
        return json.dumps({"score": 0.8, "feedback": "Nearly right."})
    if info.streaming:
        return f"Reply from {info.model}."
    return f"Summary by {info.model}."


class FakeProviders:
    """A ProviderSource: every chain is a FunctionProvider named after its spec (and key)."""

    def __init__(self, latency: float = 0.0) -> None:
        self.latency = latency
        self.built: list[tuple[str, str | None]] = []
        self.made: dict[str, list[FunctionProvider]] = {}
        # The parameters the last chain built for a spec was given for it.
        self.parameters: dict[str, ModelParams | None] = {}
        # The fallbacks the last chain built for a spec was given (None: FALLBACK_MODELS).
        self.fallbacks: dict[str, list[str] | None] = {}
        self.closed = False

    def chain(
        self,
        primary: ModelSpec,
        *,
        api_key: str | None = None,
        fallbacks: Sequence[ModelSpec] | None = None,
        parameters: ParamsFor | None = None,
    ) -> FunctionProvider:
        self.built.append((str(primary), api_key))
        self.parameters[str(primary)] = parameters(primary) if parameters is not None else None
        self.fallbacks[str(primary)] = (
            [str(spec) for spec in fallbacks] if fallbacks is not None else None
        )
        provider = FunctionProvider(
            scripted_reply, provider=primary.provider, model=primary.model, latency=self.latency
        )
        provider.api_key = api_key  # type: ignore[attr-defined]
        self.made.setdefault(str(primary), []).append(provider)
        return provider

    def calls(self, spec: str) -> list[CallInfo]:
        """Every call made to providers built for `spec`, in order."""
        return [info for p in self.made.get(spec, []) for _, info in p.calls]

    async def close(self) -> None:
        self.closed = True
