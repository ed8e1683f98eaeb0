"""One turn of a conversation: load what the agents need, run the pipeline, store the exchange.

    result = await conversation.handle("support", user_id=1, chat_id=1, text="hi", on_text=send)

Reads happen concurrently before the run (history, summary, facts, the user's model choice and,
for `train`, the open exercise). A group's prompts get only what was said in that group: a
user's facts are read in their private chat only. The user's message is stored as soon as the
trace is open and the reply right after the foreground steps, both with the pipeline and the
trace id, before any background step starts (so the summarizer sees the exchange).

Where every request is a network round trip (InsForge: `Storage.turns`), a turn makes two: its
context in one read, and its messages with the ledger rows of its foreground calls in one write
with the reply (the user's message alone when there is none). Nothing is lost by storing the
user's message later: until the turn ends its update is held by the intake, and a turn run again
stores each message once (idempotency keys). Decision 0020.

While the database is down (`bot.continuity`), reads fall back on what was last read and the
messages are queued and written when it is back; the result says so (`RunResult.memory_degraded`)
so the caller can tell the user once. A write that cannot even be queued raises: the caller
tells the user, nothing is dropped silently.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from typing import Any, Protocol

from pydantic import SecretStr

from bot.continuity import Continuity, TurnMemory
from bot.llm.protocol import LLMProvider
from bot.llm.specs import ModelSpecError, parse_spec
from bot.observatory.capture import Turn, TurnLedger, turn_scope
from bot.pipeline.context import (
    DEFAULT_PROMPT_BUDGET,
    BudgetGuard,
    PipelineContext,
    Resolver,
    TextSink,
)
from bot.pipeline.runner import PipelineRunner, RunResult
from bot.pipeline.steps import Pipeline
from bot.services.model_resolution import UserModelChoice
from bot.storage.ledger_models import LedgerCall
from bot.storage.models import ChatSummary, Exercise, StoredMessage, UserSettings
from bot.storage.repositories import Storage, StorageError, TurnRepo

log = logging.getLogger(__name__)

KeyDecrypter = Callable[[str], str]
# Told whether a user has an active archive whenever a turn's read says (ArchiveService).
ArchivesKnown = Callable[[int, bool], None]


class UnknownPipelineError(ValueError):
    pass


def user_model_choice(
    row: UserSettings | None, decrypt: KeyDecrypter | None
) -> UserModelChoice | None:
    """The user's model, decrypted key and preference from their settings row (None: bot
    defaults)."""
    if row is None or (
        row.default_model is None
        and row.api_key_encrypted is None
        and row.model_preference == "any"
    ):
        return None
    spec = None
    # A catalog alias (what `/model` stores) is read by the resolver; a spec (stored by an
    # older bot) is parsed here.
    if row.default_model and ":" in row.default_model:
        try:
            spec = parse_spec(row.default_model)
        except ModelSpecError:
            log.warning(
                "user %s has an unusable model %r; using defaults", row.user_id, row.default_model
            )
    api_key = None
    if row.api_key_encrypted and row.api_key_provider and decrypt is not None:
        try:
            api_key = SecretStr(decrypt(row.api_key_encrypted))
        except Exception as exc:
            # Never the key or the token in the log; the type says what went wrong.
            log.warning(
                "user %s's own API key cannot be decrypted (%s)", row.user_id, type(exc).__name__
            )
    return UserModelChoice(
        spec,
        row.api_key_provider,
        api_key,
        choice=row.default_model,
        preference=row.model_preference,
    )


class TaskSource(Protocol):
    async def extend(self, pipeline: Pipeline, turn: Turn) -> Pipeline: ...


class ConversationService:
    # Budgets (BUDGET_*), set by `build_services`; every turn's agents go behind them.
    budgets: BudgetGuard | None = None
    # Post-completion tasks (`/task`, `bot.tasks.Tasks`), set by `build_services`: they add
    # background steps to the turns they are drawn for.
    tasks: TaskSource | None = None

    def __init__(
        self,
        storage: Storage,
        runner: PipelineRunner,
        pipelines: Mapping[str, Pipeline],
        *,
        resolver: Resolver | None,
        default_llm: LLMProvider,
        decrypt_key: KeyDecrypter | None = None,
        history_limit: int = 20,
        facts_limit: int = 50,
        prompt_budget: int = DEFAULT_PROMPT_BUDGET,
        ledger: bool = False,
        continuity: Continuity | None = None,
        ledger_writer: TurnLedger | None = None,
        archives_known: ArchivesKnown | None = None,
    ) -> None:
        self.storage = storage
        self.continuity = continuity or Continuity(storage.messages)
        self.runner = runner
        self.pipelines = pipelines
        self._resolver = resolver
        self._default_llm = default_llm
        self._decrypt = decrypt_key
        self._history_limit = history_limit
        self._facts_limit = facts_limit
        self._prompt_budget = prompt_budget
        # Whether the run opens a turn for the call ledger (its provider wrappers record in it).
        self._ledger = ledger
        # Where a turn's calls go when they are not stored with its messages.
        self._ledger_writer = ledger_writer
        self._archives_known = archives_known

    def with_resolver(self, resolver: Resolver) -> ConversationService:
        """The same service resolving models with `resolver` (the console's `--model`)."""
        service = ConversationService(
            self.storage,
            self.runner,
            self.pipelines,
            resolver=resolver,
            default_llm=self._default_llm,
            decrypt_key=self._decrypt,
            history_limit=self._history_limit,
            facts_limit=self._facts_limit,
            prompt_budget=self._prompt_budget,
            ledger=self._ledger,
            continuity=self.continuity,
            ledger_writer=self._ledger_writer,
            archives_known=self._archives_known,
        )
        service.budgets = self.budgets
        service.tasks = self.tasks
        return service

    async def load_user_model(self, user_id: int | None) -> UserModelChoice | None:
        if user_id is None:
            return None
        return user_model_choice(await self.storage.settings.get(user_id), self._decrypt)

    async def build_context(
        self,
        pipeline: str,
        *,
        user_id: int | None,
        chat_id: int | None,
        text: str,
        topic: str | None = None,
        on_text: TextSink | None = None,
        memory: TurnMemory | None = None,
    ) -> PipelineContext:
        storage = self.storage
        # Telegram gives a private chat its user's id; a group's is another (negative) number.
        private = chat_id is None or chat_id == user_id
        reads = memory or self.continuity.turn()

        async def chat_summary() -> ChatSummary | None:
            if chat_id is None:
                return None
            return await reads.read(
                "summary", chat_id, lambda: storage.summaries.get(chat_id), None
            )

        async def history() -> list[StoredMessage]:
            if chat_id is None:
                return []
            none: list[StoredMessage] = []
            recent = await reads.read(
                "history",
                chat_id,
                lambda: storage.messages.recent(chat_id, self._history_limit),
                none,
            )
            return recent[-self._history_limit :]

        async def facts() -> list[str]:
            if user_id is None or not private:
                return []

            async def fetch() -> list[str]:
                return [f.fact for f in await storage.facts.list(user_id, self._facts_limit)]

            return await reads.read("facts", user_id, fetch, [])

        async def user_model() -> UserModelChoice | None:
            if user_id is None:
                return None
            row = await reads.read("settings", user_id, lambda: storage.settings.get(user_id), None)
            return user_model_choice(row, self._decrypt)

        async def exercise() -> Exercise | None:
            if pipeline != "train" or chat_id is None:
                return None
            return await reads.read(
                "exercise", chat_id, lambda: storage.exercises.open_for_chat(chat_id), None
            )

        turns = storage.turns
        if turns is not None and chat_id is not None and user_id is not None:
            recent, summary, known, row, open_exercise = await self._read_turn(
                turns, reads, pipeline, user_id=user_id, chat_id=chat_id, private=private
            )
            user_choice = user_model_choice(row, self._decrypt)
        elif storage.reads_overlap:
            recent, summary, known, user_choice, open_exercise = await asyncio.gather(
                history(), chat_summary(), facts(), user_model(), exercise()
            )
        else:
            # One after the other: each read completes without waiting (SQLite on the loop), and
            # `gather` would only wrap each in a task (5 tasks per message, ~2 % of its CPU).
            recent = await history()
            summary = await chat_summary()
            known = await facts()
            user_choice = await user_model()
            open_exercise = await exercise()
        return PipelineContext(
            pipeline=pipeline,
            default_llm=self._default_llm,
            user_id=user_id,
            chat_id=chat_id,
            input_text=text,
            topic=topic,
            history=recent,
            summary=summary.summary if summary is not None else None,
            summary_covers=summary.message_count if summary is not None else 0,
            facts=known,
            private=private,
            prompt_budget=self._prompt_budget,
            exercise=open_exercise,
            user_model=user_choice,
            resolver=self._resolver,
            budgets=self.budgets,
            on_text=on_text,
        )

    async def _read_turn(
        self,
        turns: TurnRepo,
        reads: TurnMemory,
        pipeline: str,
        *,
        user_id: int,
        chat_id: int,
        private: bool,
    ) -> tuple[
        list[StoredMessage], ChatSummary | None, list[str], UserSettings | None, Exercise | None
    ]:
        """The reads of `build_context` in one request, remembered like the separate reads."""
        train = pipeline == "train"
        defaults: dict[tuple[str, Hashable], Any] = {
            ("history", chat_id): [],
            ("summary", chat_id): None,
            ("settings", user_id): None,
        }
        if private:
            defaults[("facts", user_id)] = []
        if train:
            defaults[("exercise", chat_id)] = None

        async def fetch() -> dict[tuple[str, Hashable], Any]:
            got = await turns.context(
                chat_id,
                user_id,
                history_limit=self._history_limit,
                facts_limit=self._facts_limit,
                facts=private,
                exercise=train,
            )
            if self._archives_known is not None:
                self._archives_known(user_id, got.archives)
            values: dict[tuple[str, Hashable], Any] = {
                ("history", chat_id): got.history,
                ("summary", chat_id): got.summary,
                ("settings", user_id): got.settings,
            }
            if private:
                values[("facts", user_id)] = got.facts
            if train:
                values[("exercise", chat_id)] = got.exercise
            return values

        values = await reads.read_all(fetch, defaults)
        history: list[StoredMessage] = list(values[("history", chat_id)])
        return (
            history[-self._history_limit :],
            values[("summary", chat_id)],
            values.get(("facts", user_id), []),
            values[("settings", user_id)],
            values.get(("exercise", chat_id)),
        )

    async def handle(
        self,
        pipeline: str,
        *,
        user_id: int | None,
        chat_id: int | None,
        text: str,
        topic: str | None = None,
        on_text: TextSink | None = None,
        message_key: str | None = None,
        deliver: Callable[[RunResult], Awaitable[None]] | None = None,
    ) -> RunResult:
        """`message_key`: names the incoming message for good (Telegram: chat and message id),
        so a turn run again after a restart stores its message and reply once, not twice.

        `deliver`: sends the reply; where the turn is stored in one write (`Storage.turns`) it
        is called with the result as soon as the reply is ready, beside that write, so the
        user does not wait for storage (the result's `turn_id` is then still None). The
        caller delivers when it was not called (no reply, a failed turn, SQLite)."""
        if pipeline not in self.pipelines:
            raise UnknownPipelineError(
                f"unknown pipeline {pipeline!r} (pipelines: {', '.join(self.pipelines)})"
            )
        memory = self.continuity.turn()
        ctx = await self.build_context(
            pipeline,
            user_id=user_id,
            chat_id=chat_id,
            text=text,
            topic=topic,
            on_text=on_text,
            memory=memory,
        )
        turn = Turn(pipeline, chat_id, user_id)
        turns = self.storage.turns if chat_id is not None and user_id is not None else None
        writer = self._ledger_writer if self._ledger else None
        if turns is not None and writer is not None:
            turn.held = []  # stored with the turn's messages
        # The user's message while it waits to be stored with the reply (`turns`).
        waiting: list[StoredMessage] = []

        async def write_turn(
            run_ctx: PipelineContext | None, messages: list[StoredMessage]
        ) -> None:
            assert turns is not None
            waiting.clear()
            calls, turn.held = turn.held or [], None
            if calls and writer is not None:
                writer.stamp(calls)
            try:
                written = await memory.add_messages(messages, lambda: turns.write(messages, calls))
            except BaseException:
                _hand_over(writer, calls)
                raise
            if written is None:
                _hand_over(writer, calls)  # the messages were queued; the writer retries these
                return
            memory.remember_written(written.messages)
            turn.turn_id = next((m.id for m in written.messages if m.role == "user"), None)
            if run_ctx is not None:
                # What the summarizer compares its summary against, without a count of its own.
                run_ctx.message_count = written.count

        async def store_input(run_ctx: PipelineContext) -> None:
            if chat_id is None:
                return
            message = StoredMessage(
                chat_id=chat_id,
                user_id=user_id,
                role="user",
                text=text,
                pipeline=pipeline,
                trace_id=run_ctx.trace_id,
                **_key(message_key, "user"),
            )
            if turns is not None:
                waiting.append(message)
                return
            stored = await memory.add_message(message)
            # The turn is the user's message: the ledger's rows and the rating buttons name it.
            turn.turn_id = stored.id

        async def store_reply(run_ctx: PipelineContext, result: RunResult) -> None:
            if chat_id is None or not result.reply:
                return
            reply = StoredMessage(
                chat_id=chat_id,
                user_id=user_id,
                role="assistant",
                text=result.reply,
                pipeline=pipeline,
                trace_id=run_ctx.trace_id,
                **_key(message_key, "assistant"),
            )
            if turns is None:
                await memory.add_message(reply)
            elif deliver is None:
                await write_turn(run_ctx, [*waiting, reply])
            else:
                result.memory_degraded = memory.degraded
                delivery = asyncio.ensure_future(deliver(result))
                try:
                    await write_turn(run_ctx, [*waiting, reply])
                finally:
                    # The write's error (if any) is what the caller hears; the reply is out.
                    await delivery

        shape = self.pipelines[pipeline]
        if self.tasks is not None:
            shape = await self.tasks.extend(shape, turn)
        run = self.runner.run(shape, ctx, on_start=store_input, on_reply=store_reply)
        try:
            if self._ledger:
                with turn_scope(turn):
                    result = await run
            else:
                result = await run
            if waiting:
                # No reply to store it with (the turn failed, or replied nothing).
                await write_turn(None, list(waiting))
        except Exception:
            if waiting:
                # The run failed before its reply: the user's message is still stored.
                try:
                    await write_turn(None, list(waiting))
                except StorageError as exc:
                    log.warning("the message of a failed turn was not stored: %s", exc)
            raise
        finally:
            _hand_over(writer, turn.held or [])
            turn.held = None
        result.turn_id = turn.turn_id
        result.memory_degraded = memory.degraded
        return result


def _hand_over(writer: TurnLedger | None, calls: Sequence[LedgerCall]) -> None:
    """Calls that were held for the turn's write but did not go with it: to the writer's queue."""
    if writer is None:
        return
    for call in calls:
        writer.record(call)


def stored_key(message_key: str, role: str) -> str:
    """The idempotency key a turn's message is stored under (`handle`'s `message_key`)."""
    return f"{message_key}:{role}"


def _key(message_key: str | None, role: str) -> dict[str, str]:
    # Without a key the row gets a fresh one (the model's default): stored once per call.
    return {"idempotency_key": stored_key(message_key, role)} if message_key else {}
