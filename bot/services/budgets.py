"""Budgets in USD: the whole bot per day, each user per day and month, each agent per day.

    budgets = Budgets.from_settings(settings, storage.budgets, counters, rates=prices.rates)
    llm = budgets.wrap("coach", llm, user_id=42, downgrade=resolve_model)   # per step

Every model call of an agent goes through `BudgetedProvider`: before it, its worst case (the
prompt's estimated tokens and the call's `max_tokens`, at the model's price) is reserved on every
scope it counts towards; after it, the reservation is settled with the real cost (the provider's
own figure when it reports one, else the price table's; a failed call gives it all back), without
the turn waiting for that (`settle_soon`). A scope at or over its limit refuses the reservation
(`budget_counters`), so a limit is overshot by at most one call's reservation per turn in flight.

When a reservation is refused the agent follows its policy (BUDGET_POLICY): `downgrade:<model>`
runs the call on that model instead (still counted, never refused), `skip` leaves an optional
agent out of the turn, `refuse` ends the turn with a kind message saying when the budget resets.
Defaults: `skip` for the optional helpers, `refuse` for the agents that write the reply.

Periods start at midnight in BUDGET_TIMEZONE, and months on the 1st; a period's counters are keys
named by its date, so a new day starts from zero with nothing to reset. Admins are exempt unless
BUDGET_ADMINS (their calls are counted all the same). A call no price is known for costs 0 here
and is counted as unpriced: `/budget` and `/usage` say how many there were. At 80 % of a limit
every admin gets one alert per scope and period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, Protocol
from zoneinfo import ZoneInfo

from pydantic import BaseModel

from bot.config import Settings
from bot.llm.bounds import DEFAULT_OUTPUT_TOKENS, estimate_tokens
from bot.llm.protocol import LLMProvider
from bot.llm.specs import ModelSpec
from bot.llm.types import ChatMessage, LLMResponse, StreamChunk
from bot.pipeline.observer import outside_trial
from bot.services.budget_counters import Limited, LocalCounters, SpendCounters
from bot.services.model_levels import AGENT_ROLES, allows
from bot.storage.budget_models import BudgetLimitRow
from bot.storage.models import utcnow
from bot.storage.repositories import BudgetRepo, StorageError

log = logging.getLogger(__name__)

Period = Literal["day", "month"]
# USD per prompt token and per completion token, or None when nothing knows the model.
Rates = Callable[[str, str], tuple[float, float] | None]
Notify = Callable[[str], Awaitable[None]]
LOCAL_PROVIDERS = frozenset({"mlx", "vllm"})
ALERT_SHARE = 0.8
# How a limit change is named on the model configuration's Redis channel (`budget:<scope>`).
BUDGET_TARGET = "budget:"
# Prompt tokens are estimated (4 bytes a token); reserve a little more than the estimate.
PROMPT_MARGIN = 1.25


class Seeder(Protocol):
    async def __call__(
        self, keys: Sequence[ScopeKey], starts: dict[str, datetime]
    ) -> dict[str, float]:
        """What each key's scope spent since its period's start (`starts` by period)."""
        ...


class DowngradeSource(Protocol):
    def interpret(self, model: str) -> ModelSpec: ...

    def chain(self, spec: ModelSpec, preference: str) -> LLMProvider: ...


class BudgetExceeded(Exception):
    """A call's reservation was refused: a scope is at its limit. `user_text` is what the user
    reads when the agent's policy is to refuse (the runner shows it instead of an apology)."""

    # The runner ends the turn on it even when the agent is optional (policy `refuse`).
    ends_turn = True

    def __init__(self, scope: str, user_text: str) -> None:
        super().__init__(f"budget {scope} is spent")
        self.scope = scope
        self.user_text = user_text


@dataclass(frozen=True, slots=True)
class Policy:
    kind: Literal["downgrade", "skip", "refuse"]
    model: str | None = None

    def __str__(self) -> str:
        return f"downgrade:{self.model}" if self.kind == "downgrade" else self.kind


def default_policy(agent: str) -> Policy:
    return Policy("refuse") if AGENT_ROLES.get(agent) == "chat" else Policy("skip")


def parse_policy(text: str) -> Policy:
    kind, _, model = text.partition(":")
    if kind == "downgrade" and model:
        return Policy("downgrade", model)
    if kind in ("skip", "refuse") and not model:
        return Policy(kind)  # type: ignore[arg-type]
    raise ValueError(f"expected downgrade:<model>, skip or refuse, got {text!r}")


# --- scopes and periods ---


def scope_name(kind: str, subject: str | None, period: Period) -> str:
    """`bot:day`, `user:day` (everyone's default), `user:42:month`, `agent:coach:day`."""
    return f"{kind}:{subject}:{period}" if subject else f"{kind}:{period}"


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits in force: the environment's, with the admins' runtime rows over them."""

    env: dict[str, float]
    rows: dict[str, float | None]

    def get(self, scope: str) -> float | None:
        if scope in self.rows:
            return self.rows[scope]
        return self.env.get(scope)

    @property
    def any(self) -> bool:
        """Whether any limit is set at all (without one, a call is not counted here)."""
        return any(v is not None for v in self.env.values()) or any(
            v is not None for v in self.rows.values()
        )

    def for_user(self, user_id: int, period: Period) -> tuple[float | None, str]:
        """A user's limit and where it comes from (their own, or everyone's)."""
        own = scope_name("user", str(user_id), period)
        if own in self.rows:
            return self.rows[own], own
        return self.get(scope_name("user", None, period)), scope_name("user", None, period)


def env_limits(settings: Settings) -> dict[str, float]:
    limits: dict[str, float] = {}
    if settings.budget_daily_usd is not None:
        limits["bot:day"] = settings.budget_daily_usd
    if settings.budget_user_daily_usd is not None:
        limits["user:day"] = settings.budget_user_daily_usd
    if settings.budget_user_monthly_usd is not None:
        limits["user:month"] = settings.budget_user_monthly_usd
    for agent, usd in settings.budget_agent_daily_usd.items():
        limits[scope_name("agent", agent, "day")] = float(usd)
    return limits


@dataclass(frozen=True, slots=True)
class ScopeKey:
    """One scope in the current period: its counter key and its limit."""

    scope: str  # the limit's scope (`user:day` for everyone's default)
    key: str  # the counter: `user:42:day:2026-12-02`
    limit: float | None
    period: Period
    what: str  # for people: "user 42's daily budget"


@dataclass(frozen=True, slots=True)
class Reservation:
    keys: tuple[str, ...]
    amount: float
    # Whether it could be refused (False: an admin's, or a downgrade's, only counted).
    checked: bool


class Budgets:
    def __init__(
        self,
        repo: BudgetRepo,
        counters: SpendCounters,
        *,
        env: dict[str, float],
        policies: dict[str, str],
        timezone: str = "UTC",
        admin_ids: Sequence[int] = (),
        budget_admins: bool = False,
        rates: Rates | None = None,
        ttl: float = 60.0,
        now: Callable[[], datetime] = utcnow,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.repo = repo
        self.counters = counters
        self._fallback_counters = LocalCounters()
        self._env = env
        self.policies = {agent: parse_policy(text) for agent, text in policies.items()}
        self.zone = ZoneInfo(timezone)
        self.timezone = timezone
        self.admin_ids = frozenset(admin_ids)
        self.budget_admins = budget_admins
        self._rates = rates
        self.ttl = ttl
        self.now = now
        self._clock = clock
        self._limits: Limits | None = None
        self._loaded_at = float("-inf")
        self._load_lock = asyncio.Lock()
        self.notify: Notify | None = None
        # provider -> model -> rates: prices a provider's own catalog gives (OpenRouter's).
        self._price_sources: dict[str, Callable[[str], tuple[float, float] | None]] = {}
        # Fetches what the price sources need (OpenRouter's catalog), when a limit is set.
        self.prefetch: Callable[[], Awaitable[None]] | None = None
        # Reads model text (alias, spec, OpenRouter id) and builds its chain, for
        # `downgrade:<model>` (the model resolver).
        self.downgrade: DowngradeSource | None = None
        # What the ledger says a scope spent this period: a counter seen for the first time in
        # this process starts from there (after a restart, or a limit set mid-day).
        self.seeder: Seeder | None = None
        self._seeded: set[str] = set()
        self._seeding: dict[str, asyncio.Future[None]] = {}  # counters being started now
        self._listeners: list[Callable[[str], object]] = []
        # (valid from, valid until, day id, month id): see `period_ids`.
        self._period_ids: tuple[datetime, datetime, str, str] | None = None
        self._settling: set[asyncio.Task[None]] = set()  # settlements no reply waits for

    @classmethod
    def from_settings(
        cls, settings: Settings, repo: BudgetRepo, counters: SpendCounters, *, rates: Rates | None
    ) -> Budgets:
        return cls(
            repo,
            counters,
            env=env_limits(settings),
            policies=settings.budget_policy,
            timezone=settings.budget_timezone,
            admin_ids=settings.admin_ids,
            budget_admins=settings.budget_admins,
            rates=rates,
            ttl=settings.model_config_ttl,
        )

    # --- limits ---

    async def limits(self) -> Limits:
        if self._limits is not None and self._clock() - self._loaded_at < self.ttl:
            return self._limits
        async with self._load_lock:
            if self._limits is not None and self._clock() - self._loaded_at < self.ttl:
                return self._limits
            self._loaded_at = self._clock()
            try:
                rows = await self.repo.list()
            except StorageError as exc:
                log.warning("could not read the budget limits (%s); using the last copy", exc)
                if self._limits is None:
                    self._limits = Limits(dict(self._env), {})
                return self._limits
            self._limits = Limits(dict(self._env), {row.scope: row.usd for row in rows})
            return self._limits

    def invalidate(self) -> None:
        self._loaded_at = float("-inf")

    def add_change_listener(self, listener: Callable[[str], object]) -> None:
        self._listeners.append(listener)

    async def set_limit(self, scope: str, usd: float | None, *, by: str) -> None:
        await self.repo.set(scope, usd, set_by=by)
        self.invalidate()
        if usd is not None and self.prefetch is not None:
            await self.prefetch()
        for listener in self._listeners:
            result = listener(scope)
            if asyncio.iscoroutine(result):
                await result

    # --- periods ---

    def local_now(self) -> datetime:
        return self.now().astimezone(self.zone)

    def period_id(self, period: Period) -> str:
        day, month = self.period_ids()
        return day if period == "day" else month

    def period_ids(self) -> tuple[str, str]:
        """Today's and this month's ids in the zone (`2026-12-02`, `2026-12`). Worked out again
        only at the zone's next midnight (or when the clock goes back): every model call names
        its counters by them, and a ZoneInfo conversion per call showed in the profile."""
        now = self.now()
        cached = self._period_ids
        if cached is not None and cached[0] <= now < cached[1]:
            return cached[2], cached[3]
        local = now.astimezone(self.zone)
        day, month = local.date().isoformat(), local.strftime("%Y-%m")
        self._period_ids = (now, self.resets_at("day", local), day, month)
        return day, month

    def resets_at(self, period: Period, local: datetime | None = None) -> datetime:
        if local is None:
            local = self.local_now()
        midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
        if period == "day":
            # Midnight of the next calendar day in the zone (a DST day has 23 or 25 hours).
            nxt = (midnight + timedelta(days=1, hours=2)).replace(hour=0)
        else:
            year, month = (
                (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
            )
            nxt = midnight.replace(year=year, month=month, day=1)
        return nxt

    def reset_text(self, period: Period) -> str:
        at = self.resets_at(period)
        left = at - self.local_now()
        hours, rest = divmod(int(left.total_seconds()), 3600)
        minutes = rest // 60
        zone = self.timezone
        if period == "day":
            return f"at midnight {zone} (in {hours} h {minutes:02d} min)"
        return f"on {at.strftime('%-d %B')} at 00:00 {zone}"

    # --- the keys of one call ---

    def exempt(self, user_id: int | None) -> bool:
        return user_id is not None and user_id in self.admin_ids and not self.budget_admins

    async def scope_keys(self, agent: str, user_id: int | None) -> list[ScopeKey]:
        limits = await self.limits()
        day, month = self.period_ids()
        keys = [
            ScopeKey("bot:day", f"bot:day:{day}", limits.get("bot:day"), "day", "the bot's daily"),
            ScopeKey(
                scope_name("agent", agent, "day"),
                f"agent:{agent}:day:{day}",
                limits.get(scope_name("agent", agent, "day")),
                "day",
                f"the {agent}'s daily",
            ),
        ]
        if user_id is not None:
            for period, period_key in (("day", day), ("month", month)):
                limit, scope = limits.for_user(user_id, period)  # type: ignore[arg-type]
                keys.append(
                    ScopeKey(
                        scope,
                        f"user:{user_id}:{period}:{period_key}",
                        limit,
                        period,  # type: ignore[arg-type]
                        "your daily" if period == "day" else "your monthly",
                    )
                )
        return keys

    # --- prices ---

    def add_price_source(
        self, provider: str, rates: Callable[[str], tuple[float, float] | None]
    ) -> None:
        self._price_sources[provider] = rates

    def rates(self, provider: str, model: str) -> tuple[float, float] | None:
        if provider in LOCAL_PROVIDERS:
            return (0.0, 0.0)
        source = self._price_sources.get(provider)
        if source is not None:
            found = source(model)
            if found is not None:
                return found
        if self._rates is None:
            return None
        return self._rates(provider, model)

    def worst_case(
        self, provider: LLMProvider, messages: Sequence[ChatMessage], max_tokens: int | None
    ) -> float:
        rates = self.rates(provider.provider, provider.model)
        if rates is None:
            return 0.0
        prompt = sum(estimate_tokens(m.content) + 4 for m in messages) * PROMPT_MARGIN
        completion = max_tokens if max_tokens is not None else DEFAULT_OUTPUT_TOKENS
        return prompt * rates[0] + completion * rates[1]

    def cost(self, response: LLMResponse) -> float | None:
        """What a call cost: the provider's figure, else the price table's; None: unknown."""
        if response.usage.cost is not None:
            return float(response.usage.cost)
        rates = self.rates(response.provider, response.model)
        if rates is None:
            return None
        return response.usage.prompt_tokens * rates[0] + response.usage.completion_tokens * rates[1]

    # --- reserve and settle ---

    async def reserve(
        self,
        agent: str,
        user_id: int | None,
        amount: Callable[[], float],
        *,
        check: bool = True,
    ) -> Reservation:
        """Reserve `amount()` (the call's worst case, worked out only when a limit applies) on
        every scope of the call; `BudgetExceeded` when one is spent."""
        checked = check and not self.exempt(user_id)
        # Only scopes with a limit are counted here (the ledger has every cost): without any
        # budget a call costs one look at the cached limits.
        if not (await self.limits()).any:
            return Reservation((), 0.0, checked)
        keys = [k for k in await self.scope_keys(agent, user_id) if k.limit is not None]
        if not keys:
            return Reservation((), 0.0, checked)
        await self._seed(keys)
        worst = amount()
        limited: list[Limited] = [(k.key, k.limit) for k in keys]
        try:
            over = await self.counters.reserve(limited, worst, check=checked)
        except Exception as exc:  # Redis down: count here rather than refuse everyone
            log.warning("budget counters did not answer (%s); counting in process", exc)
            over = await self._fallback_counters.reserve(limited, worst, check=checked)
        if over is not None:
            spent = next(k for k in keys if k.key == over)
            raise BudgetExceeded(spent.scope, self.refusal_text(spent))
        return Reservation(tuple(k.key for k in keys), worst, checked)

    def settle_soon(
        self, agent: str, user_id: int | None, reservation: Reservation, cost: float | None
    ) -> None:
        """Settle `reservation` with the real `cost` (the correction, the unpriced count and
        the totals the alert needs), off the turn's path: a model call's reply (and the next
        step) does not wait for its round trip. It is queued on the counters now, so the turn's
        next reservation is counted after it. `drain` waits for those still going."""
        settling = self._start_settling(reservation, cost)
        if settling is None:
            return
        task = asyncio.ensure_future(self._finish_settling(agent, user_id, *settling))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    def _start_settling(
        self, reservation: Reservation, cost: float | None
    ) -> tuple[list[str], float, bool, Awaitable[dict[str, float]]] | None:
        keys = list(reservation.keys)
        if not keys:
            return None
        delta = (cost or 0.0) - reservation.amount
        if delta == 0.0 and cost is not None and self.notify is None:
            return None  # nothing to correct, count or check
        unpriced = cost is None
        try:
            answer = self.counters.settle(keys, delta, unpriced=unpriced)
        except Exception as exc:  # never into the model call's `finally`
            log.warning("budget counters did not take a settlement (%s); counting in process", exc)
            self._fallback_counters.settle(keys, delta, unpriced=unpriced)  # applied at once
            return None
        return keys, delta, unpriced, answer

    async def _finish_settling(
        self,
        agent: str,
        user_id: int | None,
        keys: list[str],
        delta: float,
        unpriced: bool,
        answer: Awaitable[dict[str, float]],
    ) -> None:
        try:
            totals = await answer
        except Exception as exc:
            log.warning("budget counters did not answer (%s); counting in process", exc)
            await self._fallback_counters.settle(keys, delta, unpriced=unpriced)
            return  # without the shared totals there is nothing to alert on
        try:
            await self._alert(agent, user_id, totals)
        except Exception as exc:  # the alert's claim on a Redis that went away
            log.warning("could not check the budget alerts (%s): %s", agent, exc)

    async def drain(self) -> None:
        """Until every settlement started so far is done (before figures are shown, and at
        shutdown, before the counters close)."""
        while self._settling:
            await asyncio.gather(*self._settling, return_exceptions=True)

    async def _alert(self, agent: str, user_id: int | None, totals: dict[str, float]) -> None:
        """`totals`: what the settlement answered for the reserved keys."""
        if self.notify is None:
            return
        keys = [k for k in await self.scope_keys(agent, user_id) if k.limit and k.key in totals]
        if self.exempt(user_id):  # an admin's own limits do not hold them: no alert either
            keys = [k for k in keys if not k.scope.startswith("user:")]
        for k in keys:
            spent = totals[k.key]
            assert k.limit is not None
            if spent >= ALERT_SHARE * k.limit and await self.counters.claim_alert(k.key):
                who = k.what.replace("your", f"user {user_id}'s")
                text = (
                    f"Budget alert: {who} budget is {spent / k.limit:.0%} spent "
                    f"(${spent:.4f} of ${k.limit:.2f}); it resets {self.reset_text(k.period)}."
                )
                log.warning("%s", text)
                try:
                    await self.notify(text)
                except Exception as exc:
                    log.warning("could not send a budget alert: %s", exc)

    def refusal_text(self, spent: ScopeKey) -> str:
        when = self.reset_text(spent.period)
        if spent.scope.startswith("user:"):
            period = "daily" if spent.period == "day" else "monthly"
            return (
                f"You've reached your {period} limit for this bot (${spent.limit:.2f}). "
                f"It resets {when}. Until then I can't answer, sorry!"
            )
        return f"I've reached my spending limit for today, sorry! I'll be back {when}."

    def policy(self, agent: str) -> Policy:
        return self.policies.get(agent) or default_policy(agent)

    def guard(
        self,
        agent: str,
        provider: LLMProvider,
        *,
        user_id: int | None,
        optional: bool,
        preference: str = "any",
    ) -> LLMProvider:
        """The agent's provider behind its budgets (`PipelineContext.get_llm_for_agent`).
        `preference`: the user's `/prefer`; a downgrade never crosses it."""

        def downgrade(model: str) -> LLMProvider | None:
            return self._downgrade_to(model, preference)

        return BudgetedProvider(self, agent, provider, user_id, optional, downgrade)

    def _downgrade_to(self, model: str, preference: str) -> LLMProvider | None:
        if self.downgrade is None:
            return None
        try:
            spec = self.downgrade.interpret(model)
        except Exception as exc:  # an alias that is gone, a malformed spec
            log.warning("budget downgrade model %r cannot run: %s", model, exc)
            return None
        if not allows(preference, spec):  # type: ignore[arg-type]
            # A user who chose `local` is never sent to a cloud model, a downgrade included.
            log.info("budget downgrade to %s passed over: the user prefers %s", spec, preference)
            return None
        try:
            return self.downgrade.chain(spec, preference)
        except Exception as exc:  # a provider without a key
            log.warning("budget downgrade model %r cannot run: %s", model, exc)
            return None

    # --- seeding from the ledger ---

    def period_start(self, period: Period) -> datetime:
        local = self.local_now().replace(hour=0, minute=0, second=0, microsecond=0)
        return local if period == "day" else local.replace(day=1)

    async def _seed(self, keys: Sequence[ScopeKey]) -> None:
        """Counters this process has not seen start from what the ledger says was spent.

        One read per counter: a call whose counter another call is starting waits for that
        read (a new user's first turn runs agents in parallel; each read the ledger)."""
        new = [k for k in keys if k.key not in self._seeded]
        seeder = self.seeder
        if not new or seeder is None:
            return
        others = {self._seeding[k.key] for k in new if k.key in self._seeding}
        mine = [k for k in new if k.key not in self._seeding]
        if mine:
            started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            for k in mine:
                self._seeding[k.key] = started
            try:
                await self._seed_now(seeder, mine)
            finally:
                for k in mine:
                    self._seeding.pop(k.key, None)
                if not started.done():
                    started.set_result(None)
        for other in others:
            # Shielded: a waiter cancelled here must not cancel the read's other waiters.
            await asyncio.shield(other)

    async def _seed_now(self, seeder: Seeder, keys: Sequence[ScopeKey]) -> None:
        starts = {"day": self.period_start("day"), "month": self.period_start("month")}
        try:
            spent = await seeder(keys, starts)
            await self.counters.seed(spent)
        except Exception as exc:  # try again on the next call
            log.warning("could not start the budget counters from the ledger: %s", exc)
            return
        self._seeded.update(k.key for k in keys)

    # --- what /budget and /usage show ---

    async def spent(self, keys: Sequence[str]) -> tuple[dict[str, float], dict[str, int]]:
        await self.drain()  # what was spent includes the calls that just ended
        try:
            return await self.counters.totals(keys), await self.counters.unpriced(keys)
        except Exception:
            return (
                await self._fallback_counters.totals(keys),
                await self._fallback_counters.unpriced(keys),
            )

    async def rows(self) -> list[BudgetLimitRow]:
        return await self.repo.list()


class BudgetSkipped(BudgetExceeded):
    """An optional agent left out of the turn: its budget is spent (policy `skip`)."""

    ends_turn = False


class BudgetedProvider:
    """The agent's provider (its fallback chain) behind its budgets."""

    def __init__(
        self,
        budgets: Budgets,
        agent: str,
        inner: LLMProvider,
        user_id: int | None,
        optional: bool,
        downgrade: Callable[[str], LLMProvider | None],
    ) -> None:
        self._budgets = budgets
        self._agent = agent
        self.inner = inner
        self.provider = inner.provider
        self.model = inner.model
        self._user_id = user_id
        self._optional = optional
        self._downgrade = downgrade

    @property
    def spec(self) -> str:
        return self.inner.spec

    async def _admit(
        self, messages: Sequence[ChatMessage], max_tokens: int | None
    ) -> tuple[LLMProvider, Reservation]:
        """Reserve on the agent's model, or follow the policy when a budget is spent."""
        budgets = self._budgets

        def worst_case() -> float:
            return budgets.worst_case(self.inner, messages, max_tokens)

        try:
            return self.inner, await budgets.reserve(self._agent, self._user_id, worst_case)
        except BudgetExceeded as exc:
            policy = budgets.policy(self._agent)
            log.info("budget %s spent: %s follows its policy (%s)", exc.scope, self._agent, policy)
            if policy.kind == "downgrade" and policy.model is not None:
                cheaper = self._downgrade(policy.model)
                if cheaper is not None:
                    reservation = await budgets.reserve(
                        self._agent,
                        self._user_id,
                        lambda: budgets.worst_case(cheaper, messages, max_tokens),
                        check=False,
                    )
                    return cheaper, reservation
                log.warning("budget downgrade model %r cannot run: refusing", policy.model)
            if self._optional and policy.kind == "skip":
                raise BudgetSkipped(exc.scope, exc.user_text) from None
            raise  # the turn ends with exc.user_text

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        schema: type[BaseModel] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        timeout: float | None = None,
    ) -> LLMResponse:
        llm, reservation = await self._admit(messages, max_tokens)
        cost: float | None = 0.0
        try:
            with self._arm_scope(llm):
                response = await llm.complete(
                    messages,
                    schema=schema,
                    temperature=temperature,
                    max_tokens=max_tokens,
                    timeout=timeout,
                )
            cost = self._budgets.cost(response)
            return response
        finally:
            self._budgets.settle_soon(self._agent, self._user_id, reservation, cost)

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[StreamChunk]:
        llm, reservation = await self._admit(messages, max_tokens)
        cost: float | None = 0.0
        try:
            with self._arm_scope(llm):
                async for chunk in llm.stream(
                    messages, temperature=temperature, max_tokens=max_tokens, timeout=timeout
                ):
                    if chunk.response is not None:
                        cost = self._budgets.cost(chunk.response)
                    yield chunk
        finally:
            self._budgets.settle_soon(self._agent, self._user_id, reservation, cost)

    def _arm_scope(self, llm: LLMProvider) -> AbstractContextManager[None]:
        # A downgraded call runs on the budget's model, not the trial arm's: the ledger leaves it
        # out of the arm (a user's budget wins over a trial, and the arm's figures stay clean).
        return outside_trial() if llm is not self.inner else contextlib.nullcontext()

    async def close(self) -> None:
        await self.inner.close()


__all__ = [
    "BudgetExceeded",
    "BudgetSkipped",
    "BudgetedProvider",
    "Budgets",
    "Limits",
    "Policy",
    "default_policy",
    "parse_policy",
    "scope_name",
]
