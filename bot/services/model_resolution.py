"""Which model an agent runs on, and why.

    resolution = await resolver.resolve("strategist", pipeline="support", user=choice)
    resolution.provider                   # what to call: a fallback chain ending in FALLBACK_MODELS
    resolution.level, resolution.set_by   # "role", "tg:42 (@ann)"
    resolution.alias, resolution.config_version

The levels (`bot.services.model_levels.standard_levels`), most specific first:

    trial             a running `/trial`'s candidate, for the users on its candidate arm
    override          the admin's `/setmodel <agent> ...`
    pipeline          the admin's `/setmodel pipeline:<name> ...`
    role              the admin's `/setmodel role:<chat|plan|post> ...`
    user              the user's own choice (`/model`; their own key when it is for that provider)
    agent             AGENT_MODELS[agent]
    pipeline-default  PIPELINE_MODELS[pipeline]
    default           the admin's `/setmodel default ...`, then DEFAULT_MODEL
    preference        LOCAL_MODEL, for a user who chose `/prefer local` (the levels above
                      named cloud models only)

The user's preference filters every level: `local` passes over each pick that is not a local
model (mlx, vLLM), whoever made it (an admin's override, a trial's arm), and keeps only local
fallbacks; `online` passes over local picks and skips local fallbacks. A `local` user for whom
nothing local is configured gets no model at all (`ModelSpecError`: the step fails) rather than
a cloud one. Plans are made per preference (three values), so this costs nothing per message.

A level's model is a catalog alias, a `provider:model` spec or a bare OpenRouter id; it runs with
its catalog entry's parameters. A level whose model cannot be served (no key for its provider,
an alias no longer in the catalog, a user's model no longer offered) is passed over, with a
warning logged once and a note on `/models`.

Off the per-message bill: levels that do not depend on the user are worked out once per
configuration snapshot and (agent, pipeline), into a short plan ("the user's choice if any, else
this resolution"); a message only runs the plan. The snapshot changes with every refresh (at
most once per MODEL_CONFIG_TTL) and every change, and then the plans are made again; each new
effective model is logged with its level, who set it and the configuration version.

A user's own key never leaves that user's resolution: chains built with it are not shared with
anyone (they are not cached here under any key another user could hit).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol

from bot.config import Settings
from bot.llm.parameters import ModelParams, ParamsFor
from bot.llm.protocol import LLMProvider
from bot.llm.specs import ModelSpec, ModelSpecError
from bot.services.model_catalog import Catalog, Picked, UnknownAliasError, configured_models
from bot.services.model_config import ModelConfigService, ProviderSource
from bot.services.model_levels import (
    ConfigSnapshot,
    Level,
    LevelQuery,
    Pick,
    Pinned,
    UserModelChoice,
    allows,
    standard_levels,
)
from bot.services.trials import arm_of
from bot.storage.models import ModelPreference
from bot.storage.trial_models import TrialArm, TrialRow

__all__ = [
    "ModelResolver",
    "ProviderSource",
    "Resolution",
    "Source",
    "UserModelChoice",
]

log = logging.getLogger(__name__)

# The level names (DESIGN.md): trial, override, pipeline, role, user, agent, pipeline-default,
# default, preference; `session` for the console's --model.
Source = str


@dataclass(frozen=True, slots=True)
class Resolution:
    """The provider an agent gets, the model chosen for it, and where that choice came from."""

    provider: LLMProvider
    spec: ModelSpec
    # The level's name (see the module docstring).
    source: Source
    # Who set it: an admin (`tg:42 (@ann)`), a variable (`AGENT_MODELS`), `the user`.
    set_by: str | None = None
    # The catalog entry it runs as, when there is one.
    alias: str | None = None
    display_name: str | None = None
    # The assignment's target or the variable's key (`role:chat`, `AGENT_MODELS[coach]`).
    target: str | None = None
    # The model text the level named (an alias, a spec or an OpenRouter id).
    chosen: str | None = None
    set_at: datetime | None = None
    # The configuration version this came from (the newest history line's id).
    config_version: int = 0
    params: ModelParams | None = None
    # The user's `/prefer` this was resolved under: wrappers that change the model later (a
    # budget's downgrade) must keep to it.
    preference: ModelPreference = "any"
    # The running trial (`/trial`) this resolution is part of, and the user's arm in it.
    trial_id: int | None = None
    trial_arm: TrialArm | None = None

    @property
    def model(self) -> str:
        return str(self.spec)

    @property
    def level(self) -> str:
        return self.source

    @property
    def label(self) -> str:
        """`GPT-4o mini (openai:gpt-4o-mini)`, or the spec alone without a display name."""
        return f"{self.display_name} ({self.spec})" if self.display_name else str(self.spec)


@dataclass(frozen=True, slots=True)
class Explanation:
    """What `resolve` would pick, and what was passed over on the way (for `/models`)."""

    resolution: Resolution
    notes: tuple[str, ...] = ()

    @property
    def note(self) -> str | None:
        return "; ".join(self.notes) or None


# Resolutions a trial leaves alone: the user's own model, the console's --model.
OUT_OF_TRIALS = frozenset({"user", "session"})


class TrialSource(Protocol):
    async def running(self) -> Mapping[str, TrialRow]: ...


# Distinct per-user picks remembered per snapshot (the menu's entries, trial arms: a handful).
SERVED_LIMIT = 1024

# A plan step: a resolution that always applies from here, or a level to ask per message.
_Step = Resolution | Level


class ModelResolver:
    """Resolves agents to providers over the levels, in their order (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        providers: ProviderSource,
        model_config: ModelConfigService | None = None,
        *,
        levels: Sequence[Level] | None = None,
        trials: TrialSource | None = None,
    ) -> None:
        self._settings = settings
        # Running trials (`bot.services.trials.Trials`): a share of users on a candidate.
        self.trials = trials
        self._providers = providers
        self._model_config = model_config
        self.levels: tuple[Level, ...] = (
            tuple(levels) if levels is not None else standard_levels(settings)
        )
        self._without_config = ConfigSnapshot({}, Catalog.build(configured_models(settings)), 0)
        # Chains over the shared keys only, by (spec, parameters, preference); users' own keys
        # never go in.
        self._chains: dict[tuple[ModelSpec, ModelParams, ModelPreference], LLMProvider] = {}
        self._params_key: object = None
        # Per preference: plans by (agent, pipeline).
        self._plans: dict[ModelPreference, dict[tuple[str, str | None], tuple[_Step, ...]]] = {
            "any": {},
            "local": {},
            "online": {},
        }
        self._planned_for: ConfigSnapshot | None = None
        self._served: dict[tuple[object, ...], Resolution | None] = {}
        self._logged: dict[tuple[str, str | None], str] = {}
        self._warned: set[str] = set()

    # --- resolving ---

    async def resolve(
        self,
        agent: str,
        *,
        pipeline: str | None = None,
        user: UserModelChoice | None = None,
        user_id: int | None = None,
    ) -> Resolution:
        snapshot = await self._snapshot()
        if snapshot is not self._planned_for:
            self._new_snapshot(snapshot)
        preference: ModelPreference = user.preference if user is not None else "any"
        found = self._resolve(agent, pipeline, user, snapshot, preference)
        if self.trials is None or user_id is None:
            return found
        trial = (await self.trials.running()).get(agent)
        if trial is None:
            return found
        return self._in_trial(trial, user_id, found, snapshot, preference)

    def _in_trial(
        self,
        trial: TrialRow,
        user_id: int,
        found: Resolution,
        snapshot: ConfigSnapshot,
        preference: ModelPreference,
    ) -> Resolution:
        """`found` or the trial's candidate, marked with the user's arm; users the candidate
        may not serve (their `/prefer`, their own `/model`, the console's pin) stay out."""
        if found.source in OUT_OF_TRIALS:
            return found
        pick = Pick(
            "trial", trial.candidate, trial.started_by, f"trial:{trial.id}", trial.started_at
        )
        candidate = self._serve_per_user(pick, snapshot, preference)
        if candidate is None:
            return found
        if arm_of(trial, user_id) == "candidate":
            return replace(candidate, trial_id=trial.id, trial_arm="candidate")
        return replace(found, trial_id=trial.id, trial_arm="incumbent")

    def _resolve(
        self,
        agent: str,
        pipeline: str | None,
        user: UserModelChoice | None,
        snapshot: ConfigSnapshot,
        preference: ModelPreference,
    ) -> Resolution:
        plan = self._plans[preference].get((agent, pipeline))
        if plan is None:
            plan = self._plan(agent, pipeline, snapshot, preference)
        for step in plan:
            if isinstance(step, Resolution):
                return step
            if user is None:
                continue  # a per-user level has nothing to pick for nobody
            pick = step.pick(LevelQuery(agent, pipeline, user, preference), snapshot)
            if pick is None:
                continue
            found = self._serve_per_user(pick, snapshot, preference)
            if found is not None:
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("%s in %s: %s", agent, pipeline, _describe(found))
                return found
        raise _nothing_for(agent, preference)

    async def explain(
        self, agent: str, *, pipeline: str | None = None, user: UserModelChoice | None = None
    ) -> Explanation:
        """What `resolve` would pick, and why: every level that was passed over says so."""
        snapshot = await self._snapshot()
        preference: ModelPreference = user.preference if user is not None else "any"
        query = LevelQuery(agent, pipeline, user, preference)
        notes: list[str] = []
        for level in self.levels:
            found = self._try(level, query, snapshot, notes)
            if found is not None:
                return Explanation(found, tuple(notes))
        raise _nothing_for(agent, preference)

    def pinned(self, model: str, set_by: str) -> ModelResolver:
        """A resolver that runs every agent on `model` (level `session`), sharing this one's
        configuration and chains: the console's `--model`."""
        clone = ModelResolver(
            self._settings,
            self._providers,
            self._model_config,
            levels=(Pinned(model, set_by), *self.levels),
        )
        clone._chains = self._chains
        return clone

    def catalog(self) -> Catalog:
        """The catalog in memory now (without a refresh)."""
        return self._current().catalog

    async def current_catalog(self) -> Catalog:
        """The catalog, fresh within MODEL_CONFIG_TTL."""
        return (await self._snapshot()).catalog

    def interpret(self, model: str) -> Picked:
        """Model text read against the catalog in memory (raises like `Catalog.interpret`)."""
        return self._current().catalog.interpret(model)

    def shared_chain(self, spec: ModelSpec, preference: ModelPreference = "any") -> LLMProvider:
        """The chain for `spec` on the shared keys, with the catalog's parameters for it (and
        only the fallbacks `preference` allows)."""
        catalog = self._current().catalog
        picked = Picked(str(spec), spec, catalog.for_spec(spec))
        return self._chain(picked, None, catalog, preference)

    def candidate_chain(self, picked: Picked) -> LLMProvider:
        """`picked` alone, on the shared keys, with the catalog's parameters for it: no
        fallbacks (a replay must hear the candidate itself, or its error), not cached."""
        catalog = self._current().catalog
        options: dict[str, object] = {"fallbacks": []}
        if picked.params or catalog.any_params:
            options["parameters"] = _parameters_for(picked.spec, picked.params, catalog)
        return self._providers.chain(picked.spec, **options)  # type: ignore[arg-type]

    # --- internals ---

    async def _snapshot(self) -> ConfigSnapshot:
        if self._model_config is None:
            return self._without_config
        return await self._model_config.snapshot()

    def _current(self) -> ConfigSnapshot:
        return (
            self._model_config.peek() if self._model_config is not None else (self._without_config)
        )

    def _new_snapshot(self, snapshot: ConfigSnapshot) -> None:
        self._planned_for = snapshot
        self._plans = {"any": {}, "local": {}, "online": {}}
        self._served = {}
        key = snapshot.catalog.params_key()
        if key != self._params_key:
            # Fallbacks' parameters live in the cached chains: they go with a catalog change.
            self._params_key = key
            self._chains.clear()

    def _plan(
        self,
        agent: str,
        pipeline: str | None,
        snapshot: ConfigSnapshot,
        preference: ModelPreference = "any",
    ) -> tuple[_Step, ...]:
        """The levels that depend on the user, up to the first one that does not and can be
        served (under `preference`): that one's resolution ends the plan."""
        query = LevelQuery(agent, pipeline, preference=preference)
        steps: list[_Step] = []
        for level in self.levels:
            if level.per_user:
                steps.append(level)
                continue
            found = self._try(level, query, snapshot, None)
            if found is not None:
                steps.append(found)
                if preference == "any":
                    self._log_change(agent, pipeline, found)
                break
        plan = tuple(steps)
        self._plans[preference][(agent, pipeline)] = plan
        return plan

    def _try(
        self, level: Level, query: LevelQuery, snapshot: ConfigSnapshot, notes: list[str] | None
    ) -> Resolution | None:
        pick = level.pick(query, snapshot)
        if pick is None:
            return None
        return self._serve(pick, snapshot, notes, query.preference)

    def _serve_per_user(
        self, pick: Pick, snapshot: ConfigSnapshot, preference: ModelPreference
    ) -> Resolution | None:
        """`_serve`, remembered per pick for this snapshot: many users make the same pick (the
        same model on the menu, the same trial arm), and what serves it is the same for all
        of them, unless their own key pays for it (never shared)."""
        if pick.user is not None and pick.user.api_key is not None:
            return self._serve(pick, snapshot, None, preference)
        key = (pick.level, pick.model, pick.set_by, pick.target, pick.set_at, preference)
        try:
            return self._served[key]
        except KeyError:
            pass
        found = self._serve(pick, snapshot, None, preference)
        if len(self._served) >= SERVED_LIMIT:
            self._served.clear()
        self._served[key] = found
        return found

    def _serve(
        self,
        pick: Pick,
        snapshot: ConfigSnapshot,
        notes: list[str] | None,
        preference: ModelPreference = "any",
    ) -> Resolution | None:
        """The pick as a resolution, or None (noted, logged once) when it cannot be served."""
        catalog = snapshot.catalog
        try:
            picked = catalog.interpret(pick.model)
        except (ModelSpecError, UnknownAliasError) as exc:
            self._pass_over(pick, str(exc), notes)
            return None
        if not allows(preference, picked.spec):
            # Expected, not a fault: noted for /models, never logged as a warning.
            if notes is not None:
                kind = "a cloud model" if preference == "local" else "a local model"
                notes.append(
                    f"{_who(pick)} {pick.model} passed over: it is {kind}, and the user's "
                    f"preference is {preference}"
                )
            return None
        user = pick.user
        if user is not None and not (picked.entry is not None and picked.entry.offered_to_users):
            self._pass_over(pick, "it is not offered to users any more", notes)
            return None
        key = user.key_for(picked.spec) if user is not None else None
        try:
            provider = self._chain(picked, key, catalog, preference)
        except ModelSpecError as exc:
            self._pass_over(pick, str(exc), notes)
            return None
        entry = picked.entry
        return Resolution(
            provider,
            picked.spec,
            pick.level,
            set_by=pick.set_by,
            alias=entry.alias if entry is not None else None,
            display_name=entry.display_name if entry is not None else None,
            target=pick.target,
            chosen=pick.model,
            set_at=pick.set_at,
            config_version=snapshot.version,
            params=picked.params,
            preference=preference,
        )

    def _fallbacks(self, preference: ModelPreference) -> list[ModelSpec] | None:
        """FALLBACK_MODELS the preference allows (None: all of them, the registry's default)."""
        if preference == "any":
            return None
        return [spec for spec in self._settings.fallback_specs if allows(preference, spec)]

    def _chain(
        self, picked: Picked, key: str | None, catalog: Catalog, preference: ModelPreference
    ) -> LLMProvider:
        spec, params = picked.spec, picked.params
        options: dict[str, object] = {}
        fallbacks = self._fallbacks(preference)
        if fallbacks is not None:
            options["fallbacks"] = fallbacks
        # Without parameters anywhere, no `parameters` (what every provider source takes).
        if params or catalog.any_params:
            options["parameters"] = _parameters_for(spec, params, catalog)
        if key is not None:
            # The user's own key: built for this message, never cached where others could reach.
            return self._providers.chain(spec, api_key=key, **options)  # type: ignore[arg-type]
        cache_key = (spec, params, preference)
        chain = self._chains.get(cache_key)
        if chain is None:
            chain = self._providers.chain(spec, **options)  # type: ignore[arg-type]
            self._chains[cache_key] = chain
        return chain

    def _pass_over(self, pick: Pick, why: str, notes: list[str] | None) -> None:
        text = f"{_who(pick)} {pick.model} cannot be used: {why}"
        if notes is not None:
            notes.append(text)
        warned = f"{pick.level}|{pick.target}|{pick.model}"
        if warned not in self._warned:
            self._warned.add(warned)
            log.warning("%s; using the next level", text)

    def _log_change(self, agent: str, pipeline: str | None, found: Resolution) -> None:
        text = _describe(found)
        key = (agent, pipeline)
        if self._logged.get(key) != text:
            self._logged[key] = text
            log.info("%s in %s runs on %s", agent, pipeline or "any pipeline", text)


def _who(pick: Pick) -> str:
    return "your model" if pick.user is not None else f"{pick.level} {pick.target or ''}".strip()


def _nothing_for(agent: str, preference: ModelPreference) -> ModelSpecError:
    if preference == "local":
        return ModelSpecError(
            f"no local model can serve {agent} for a user who chose local: set LOCAL_MODEL "
            "(an mlx: or vllm: model)"
        )
    return ModelSpecError(f"no model can be served for {agent}: set DEFAULT_MODEL and its key")


def _describe(resolution: Resolution) -> str:
    return (
        f"{resolution.label} [{resolution.level}, set by {resolution.set_by or 'unknown'}] "
        f"(configuration version {resolution.config_version})"
    )


def _parameters_for(spec: ModelSpec, params: ModelParams, catalog: Catalog) -> ParamsFor:
    """The chosen model runs with its entry's parameters, each fallback with its own."""

    def parameters(candidate: ModelSpec) -> ModelParams | None:
        return params if candidate == spec else catalog.params_for(candidate)

    return parameters
