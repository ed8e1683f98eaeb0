"""`/replay` (admins), shared by Telegram and the console: text in, text out.

    /replay <agent> <model> [n=20]     the estimate, and a confirmation (Telegram: a button)
    (pressed / the console's `confirm`) the side-by-side report, as one or more messages

The confirmation carries the request itself (`rp:<n>:<agent>:<model>`, within Telegram's 64
bytes), so any replica can run it from the shared inputs: nothing waits in one process's memory
between the question and the press.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bot.config import AGENT_NAMES
from bot.quoting import quoted
from bot.replay.report import estimate_text, report_messages
from bot.replay.run import Replayer
from bot.services.command_replies import STORAGE_PROBLEM
from bot.services.model_catalog import Picked
from bot.storage.repositories import StorageError

log = logging.getLogger(__name__)

REPLAY_USAGE = (
    "Usage: /replay <agent> <model> [n=20]: the agent's last n real inputs, run again on the "
    "model and shown side by side with what it answered then (asks before it runs)."
)
BUTTON_PREFIX = "rp:"
# Telegram's bound on a button's data.
BUTTON_BYTES = 64
DEFAULT_N = 20

# Model text -> what it names and notes for the admin; raises ValueError (`ModelProblem`).
Check = Callable[[str], Awaitable[tuple[Picked, list[str]]]]


class ReplayRefused(ValueError):
    """A request that cannot run; the message says why, kindly."""


@dataclass(frozen=True, slots=True)
class ReplayRequest:
    agent: str
    model: str
    n: int

    @property
    def button(self) -> str:
        return f"{BUTTON_PREFIX}{self.n}:{self.agent}:{self.model}"


def parse_button(data: str) -> ReplayRequest | None:
    if not data.startswith(BUTTON_PREFIX):
        return None
    n, _, rest = data[len(BUTTON_PREFIX) :].partition(":")
    agent, _, model = rest.partition(":")
    if not n.isdigit() or not agent or not model:
        return None
    return ReplayRequest(agent, model, int(n))


@dataclass(frozen=True, slots=True)
class Asked:
    text: str
    # The confirmation to offer (a button's data), None when there is nothing to run.
    confirm: str | None = None


@dataclass(slots=True)
class ReplayCommands:
    replayer: Replayer | None
    check: Check
    keep: int
    agents: tuple[str, ...] = AGENT_NAMES

    def parse(self, args: str | None) -> ReplayRequest:
        words = (args or "").split()
        if len(words) < 2 or len(words) > 3:
            raise ReplayRefused(REPLAY_USAGE)
        agent = words[0].lower()
        if agent not in self.agents:
            raise ReplayRefused(
                f"{quoted(words[0])} is not an agent ({', '.join(self.agents)}). {REPLAY_USAGE}"
            )
        n = min(DEFAULT_N, self.keep)
        if len(words) == 3:
            key, sep, value = words[2].partition("=")
            if not sep or key.lower() != "n" or not value.isdigit() or int(value) < 1:
                raise ReplayRefused(REPLAY_USAGE)
            n = int(value)
        if n > self.keep:
            raise ReplayRefused(
                f"At most {self.keep} inputs are kept per agent (REPLAY_KEEP): use n={self.keep} "
                "or less."
            )
        return ReplayRequest(agent, words[1], n)

    async def ask(self, args: str | None) -> Asked:
        """The estimate and the confirmation to offer, or why not."""
        try:
            request = self.parse(args)
            replayer = self._replayer()
            picked, notes = await self._picked(request.model)
            plan = await replayer.plan(request.agent, picked, request.model, request.n)
        except ReplayRefused as exc:
            return Asked(str(exc))
        except StorageError as exc:
            log.error("/replay %s failed: %s", (args or "")[:80], exc)
            return Asked(STORAGE_PROBLEM)
        if not plan.inputs:
            text = estimate_text(plan) if plan.skipped_local or plan.skipped_schema else ""
            return Asked(
                f"No inputs of {request.agent} to replay yet: they are kept as its calls are "
                "made (the newest REPLAY_KEEP per agent)." + (f"\n{text}" if text else "")
            )
        if len(request.button.encode()) > BUTTON_BYTES:
            return Asked(
                estimate_text(plan) + "\nThat model's name is too long for a confirmation button: "
                "give it a short alias with /catalog add <alias> <model>, then /replay with the "
                "alias."
            )
        return Asked("\n".join([estimate_text(plan), *notes, "Run it?"]), request.button)

    async def run(self, request: ReplayRequest, *, by: str) -> list[str]:
        """Plan again from the stored inputs (the newest at the press) and run; the report."""
        try:
            replayer = self._replayer()
            picked, _notes = await self._picked(request.model)
            plan = await replayer.plan(request.agent, picked, request.model, request.n)
            if not plan.inputs:
                return [f"No inputs of {request.agent} to replay any more."]
            rows = await replayer.run(plan, by=by)
        except ReplayRefused as exc:
            return [str(exc)]
        except StorageError as exc:
            log.error("replay of %s on %s failed: %s", request.agent, request.model, exc)
            return [STORAGE_PROBLEM]
        log.info(
            "replay of %s on %s by %s: %d inputs, %d failed",
            request.agent,
            request.model,
            by,
            len(rows),
            sum(row.error is not None for row in rows),
        )
        return report_messages(plan, rows)

    def _replayer(self) -> Replayer:
        if self.replayer is None:
            raise ReplayRefused(
                "Replay inputs are not kept here (STORE_PROMPTS=false or LEDGER_ENABLED=false): "
                "there is nothing to replay."
            )
        return self.replayer

    async def _picked(self, model: str) -> tuple[Picked, list[str]]:
        try:
            return await self.check(model)
        except ValueError as exc:  # ModelProblem, a bad alias or spec
            raise ReplayRefused(f"Not run: {exc}") from None
