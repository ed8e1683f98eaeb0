"""The levels of model resolution, as data: each level names a model for an agent, or passes.

    levels = standard_levels(settings)      # override, pipeline, role, user, agent, ...
    pick = levels[0].pick(LevelQuery("strategist", "support"), snapshot)
    pick.level, pick.model, pick.set_by     # "override", "fast", "tg:42 (@ann)"

The resolver (`bot.services.model_resolution`) walks them in order and takes the first pick it
can serve. A level is a small object with a `name` (what `/models`, traces and the call ledger
record), `per_user` (whether its pick depends on who asks) and `pick()`. Levels whose picks do not
depend on the user are evaluated once per configuration snapshot and agent, so only the per-user
ones (the user's own choice; later a trial's arm) cost anything per message. A new level is one
more entry in the tuple, at its place:

    (Trial(...), *standard_levels(settings))     # a running trial's arm, before the override

Targets an admin assigns with `/setmodel <target> <model>` are the keys of the assignments table
(`agent_model_config.agent_name`): an agent, `pipeline:<name>`, `role:<role>` or `default`.
Every agent has one role: `chat` writes the reply, `plan` prepares it, `post` works after or
beside it.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from pydantic import SecretStr

from bot.config import AGENT_NAMES, PIPELINE_NAMES, Settings
from bot.llm.specs import ModelSpec
from bot.quoting import quoted
from bot.services.model_catalog import Catalog
from bot.storage.models import AgentModelConfig, ModelPreference

__all__ = [
    "AGENT_ROLES",
    "ROLES",
    "Assigned",
    "ConfigSnapshot",
    "Configured",
    "Level",
    "LevelQuery",
    "Pick",
    "Pinned",
    "Preferred",
    "Target",
    "UnknownTargetError",
    "UserModelChoice",
    "UsersChoice",
    "allows",
    "local_model_of",
    "parse_target",
    "standard_levels",
    "target_names",
]

ROLES: dict[str, str] = {
    "chat": "writes the reply",
    "plan": "prepares the reply",
    "post": "post-completion work, after or beside the reply",
}
AGENT_ROLES: dict[str, str] = {
    "extraction": "post",
    "strategist": "plan",
    "coach": "chat",
    "tutor": "chat",
    "trainer": "chat",
    "summarizer": "post",
}
DEFAULT_TARGET = "default"


# --- targets ---


class UnknownTargetError(ValueError):
    """A `/setmodel` target that does not exist; the message lists what does."""


@dataclass(frozen=True, slots=True)
class Target:
    """What an assignment applies to; `name` is its key in the assignments table."""

    kind: str  # "agent", "pipeline", "role", "default"
    value: str

    @property
    def name(self) -> str:
        return self.value if self.kind in ("agent", "default") else f"{self.kind}:{self.value}"

    def __str__(self) -> str:
        return self.name


def target_names() -> str:
    return (
        ", ".join(AGENT_NAMES)
        + f", pipeline:<{'|'.join(PIPELINE_NAMES)}>, role:<{'|'.join(ROLES)}>, default"
    )


def _unknown(kind: str, value: str, known: tuple[str, ...] | list[str]) -> UnknownTargetError:
    close = difflib.get_close_matches(value, list(known), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return UnknownTargetError(f"unknown {kind} {quoted(value)}{hint} ({kind}s: {', '.join(known)})")


# Post-completion tasks (`/task`, bot.tasks) run like agents: their names are targets too (an
# override per task, `/setmodel <task> <model>`). Set by the task service whenever it reads them.
_task_names: frozenset[str] = frozenset()


def set_task_names(names: Iterable[str]) -> None:
    global _task_names
    _task_names = frozenset(names)


def task_names() -> frozenset[str]:
    return _task_names


def parse_target(text: str) -> Target:
    """`strategist`, `pipeline:learn`, `role:chat` or `default`; raises `UnknownTargetError`."""
    raw = text.strip().lower()
    if raw == DEFAULT_TARGET:
        return Target("default", DEFAULT_TARGET)
    kind, sep, value = raw.partition(":")
    if sep:
        if kind == "pipeline":
            if value not in PIPELINE_NAMES:
                raise _unknown("pipeline", value, PIPELINE_NAMES)
            return Target("pipeline", value)
        if kind == "role":
            if value not in ROLES:
                raise _unknown("role", value, list(ROLES))
            return Target("role", value)
    elif raw in AGENT_NAMES or raw in _task_names:
        return Target("agent", raw)
    known = [*AGENT_NAMES, *sorted(_task_names), "default"]
    close = difflib.get_close_matches(raw, known, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise UnknownTargetError(
        f"unknown target {quoted(text.strip())}{hint}; targets: {target_names()}"
    )


# --- what the levels read ---


@dataclass(frozen=True, slots=True)
class UserModelChoice:
    """A user's own model and key, loaded once per message (not per step).

    `choice` is what the user picked (a catalog alias, or a spec stored by an older bot); `spec`
    is it parsed when it is a spec. `api_key` is the decrypted key; `SecretStr` keeps it out of
    reprs and logs.
    """

    spec: ModelSpec | None = None
    key_provider: str | None = None
    api_key: SecretStr | None = field(default=None, repr=False)
    choice: str | None = None
    # `/prefer`: `local` lets only local models serve this user, `online` only cloud ones.
    preference: ModelPreference = "any"

    @property
    def model(self) -> str | None:
        """The model text the user chose, if any."""
        if self.choice:
            return self.choice
        return str(self.spec) if self.spec is not None else None

    def key_for(self, spec: ModelSpec) -> str | None:
        if self.api_key is not None and self.key_provider == spec.provider:
            return self.api_key.get_secret_value()
        return None


@dataclass(frozen=True, slots=True, eq=False)
class ConfigSnapshot:
    """The model configuration in memory: the admins' assignments by target, the catalog, and
    the configuration version (the newest history line's id) they make up together."""

    assignments: Mapping[str, AgentModelConfig]
    catalog: Catalog
    version: int = 0


# Not frozen: one is made per message and level that depends on the user, and a frozen
# dataclass pays a setattr call per field.
@dataclass(slots=True)
class LevelQuery:
    agent: str
    pipeline: str | None = None
    user: UserModelChoice | None = None
    # The asking user's preference (plans are made per preference, so levels may read it).
    preference: ModelPreference = "any"

    @property
    def role(self) -> str | None:
        return AGENT_ROLES.get(self.agent)


# Not frozen for the same reason as LevelQuery: per-user levels make one per message.
@dataclass(slots=True)
class Pick:
    """What a level names: model text (an alias, a spec or an OpenRouter id), and its origin."""

    level: str
    model: str
    # Who set it: an admin (`tg:42 (@ann)`, `console:1`), a variable (`AGENT_MODELS`), the user.
    set_by: str | None
    # Where it is kept: the assignment's target, or the variable and its key.
    target: str | None = None
    set_at: datetime | None = None
    # The user's choice, when this is it: their own key may pay for it, and it must be offered.
    user: UserModelChoice | None = None


class Level(Protocol):
    @property
    def name(self) -> str: ...

    # True: `pick` reads `query.user` (and picks nothing when there is none); False: its pick
    # depends only on the agent, the pipeline and the snapshot, and is worked out once each.
    @property
    def per_user(self) -> bool: ...

    def pick(self, query: LevelQuery, snapshot: ConfigSnapshot) -> Pick | None: ...


# --- the levels ---


@dataclass(frozen=True, slots=True)
class Assigned:
    """An admin's assignment to the target `target_of(query)` (`/setmodel`)."""

    name: str
    target_of: Callable[[LevelQuery], str | None]
    per_user: bool = False

    def pick(self, query: LevelQuery, snapshot: ConfigSnapshot) -> Pick | None:
        target = self.target_of(query)
        row = snapshot.assignments.get(target) if target is not None else None
        if row is None:
            return None
        return Pick(self.name, row.model_id, row.set_by or "an admin", target, row.updated_at)


@dataclass(frozen=True, slots=True)
class Configured:
    """A model the environment sets: `values[key_of(query)]` of `variable`."""

    name: str
    variable: str
    values: Mapping[str, str]
    key_of: Callable[[LevelQuery], str | None]
    per_user: bool = False

    def pick(self, query: LevelQuery, snapshot: ConfigSnapshot) -> Pick | None:
        key = self.key_of(query)
        raw = self.values.get(key) if key is not None else None
        if raw is None:
            return None
        where = f"{self.variable}[{key}]" if key else self.variable
        return Pick(self.name, raw, self.variable, where)


@dataclass(frozen=True, slots=True)
class UsersChoice:
    """The user's own model (`/model`), while it is still offered to users."""

    name: str = "user"
    per_user: bool = True

    def pick(self, query: LevelQuery, snapshot: ConfigSnapshot) -> Pick | None:
        user = query.user
        model = user.model if user is not None else None
        if model is None:
            return None
        return Pick(self.name, model, "the user", "user", user=user)


@dataclass(frozen=True, slots=True)
class Pinned:
    """One model for every agent, whatever the rest says (the console's `--model`)."""

    model: str
    set_by: str
    name: str = "session"
    per_user: bool = False

    def pick(self, query: LevelQuery, snapshot: ConfigSnapshot) -> Pick | None:
        return Pick(self.name, self.model, self.set_by, "session")


def allows(preference: ModelPreference, spec: ModelSpec) -> bool:
    """Whether a user with `preference` may be served by `spec` (a pick or a fallback)."""
    if preference == "local":
        return spec.is_local
    if preference == "online":
        return not spec.is_local
    return True


def local_model_of(local_model: str, catalog: Catalog) -> tuple[str, str] | None:
    """The model text serving `local` users where the levels name cloud models, and who set
    it: LOCAL_MODEL when it names a local model, else the catalog's first local entry."""
    if local_model:
        try:
            if catalog.interpret(local_model).spec.is_local:
                return local_model, "LOCAL_MODEL"
        except ValueError:
            pass
    for entry in catalog:
        if entry.spec.is_local:
            return entry.alias, "the catalog"
    return None


@dataclass(frozen=True, slots=True)
class Preferred:
    """The last level for users who chose `local`: LOCAL_MODEL (or the catalog's first local
    model), so that they are served where every other level names a cloud model."""

    local_model: str
    name: str = "preference"
    per_user: bool = False

    def pick(self, query: LevelQuery, snapshot: ConfigSnapshot) -> Pick | None:
        if query.preference != "local":
            return None
        found = local_model_of(self.local_model, snapshot.catalog)
        if found is None:
            return None
        model, set_by = found
        return Pick(self.name, model, set_by, set_by if set_by == "LOCAL_MODEL" else None)


def _pipeline_target(query: LevelQuery) -> str | None:
    return f"pipeline:{query.pipeline}" if query.pipeline else None


def _role_target(query: LevelQuery) -> str | None:
    return f"role:{query.role}" if query.role else None


def standard_levels(settings: Settings) -> tuple[Level, ...]:
    """DESIGN.md's order, most specific first; the first pick that can be served wins."""
    return (
        Assigned("override", lambda q: q.agent),
        Assigned("pipeline", _pipeline_target),
        Assigned("role", _role_target),
        UsersChoice(),
        Configured("agent", "AGENT_MODELS", settings.agent_models, lambda q: q.agent),
        Configured(
            "pipeline-default", "PIPELINE_MODELS", settings.pipeline_models, lambda q: q.pipeline
        ),
        Assigned("default", lambda q: DEFAULT_TARGET),
        Configured("default", "DEFAULT_MODEL", {"": settings.default_model}, lambda q: ""),
        Preferred(settings.local_model),
    )
