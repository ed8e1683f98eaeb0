"""`python -m bot console`: chat with the pipelines in a terminal, no Telegram needed.

Same storage, same model resolution, same admin commands as the bot (the console user is an
admin), with exactly the Telegram syntax. Replies stream as they are written.

    $ python -m bot console --model fast       # every agent of this session on `fast`
    you> I keep putting off my thesis
    bot> ...
    you> /catalog add fast openai:gpt-4o-mini max_tokens=400
    you> /setmodel role:plan fast
    you> /models

`--model <alias|spec>` pins every agent of the session to that model (level `session`, above
every other level), without changing anything stored.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bot.app import Services, build_services
from bot.config import Settings
from bot.services.admin_commands import ADMIN_COMMANDS, AdminCommands
from bot.services.conversation import ConversationService
from bot.services.model_checks import ModelChecker, ModelProblem
from bot.services.model_config import normalize_model_id
from bot.services.user_settings import UserSettingsService
from bot.storage.models import User
from bot.storage.repositories import StorageError

HELP = """\
Commands:
  /learn <topic>                 a short lesson on a topic
  /train <topic>                 start a drill; your next messages are answers (/chat to stop)
  /chat                          back to normal chat
  /model [<alias>|default]       the models offered to you, or pick one
  /models                        which model each agent uses, per pipeline, and why
  /agents                        the agents and their roles
  /setmodel <target> <model>     target: agent, pipeline:<name>, role:<role> or default;
                                 model: catalog alias, provider:model or OpenRouter id
  /resetmodel <target>           back to the configured model
  /rollback <target>             undo the target's latest change
  /modelhistory [target]         who changed which model, and when
  /catalog [show|add|edit|remove ...]   the catalog of named models (/catalog help)
  /help                          this list
  /quit                          leave
Anything else is a message to the coach."""

ReadLine = Callable[[], Awaitable[str | None]]
Write = Callable[[str], None]


@dataclass(slots=True)
class ConsoleSession:
    """One person at the terminal; `read_line` returns None at end of input."""

    services: Services
    read_line: ReadLine
    write: Write
    user_id: int = 1
    chat_id: int = 1
    mode: str = "support"
    topic: str | None = None

    async def run(self) -> int:
        services = self.services
        await services.storage.users.touch(User(id=self.user_id, first_name="console"))
        self.write("Coach bot console. /help lists the commands, /quit leaves.\n")
        while True:
            self.write("you> ")
            line = await self.read_line()
            if line is None:
                self.write("\n")
                return 0
            text = line.strip()
            if not text:
                continue
            if text.startswith("/"):
                if not await self._command(services, text):
                    return 0
                continue
            await self._message(services, self.mode, text, topic=None)

    async def _message(
        self, services: Services, pipeline: str, text: str, topic: str | None
    ) -> None:

        async def show(chunk: str) -> None:
            self.write(chunk)

        self.write("bot> ")
        try:
            result = await services.conversation.handle(
                pipeline,
                user_id=self.user_id,
                chat_id=self.chat_id,
                text=text,
                topic=topic,
                on_text=show,
            )
        except StorageError as exc:
            self.write(f"\n(storage error: {exc})\n")
            return
        if not result.success:
            self.write(f"\n{result.error_message}\n")
            return
        self.write("\n")

    async def _command(self, services: Services, text: str) -> bool:
        command, _, rest = text.partition(" ")
        command = command.lower()
        admin = f"console:{self.user_id}"
        if command in {"/quit", "/exit"}:
            return False
        if command == "/help":
            self.write(HELP + "\n")
        elif command == "/chat":
            self.mode, self.topic = "support", None
            self.write("Back to chat.\n")
        elif command == "/learn":
            if not rest.strip():
                self.write("Usage: /learn <topic>\n")
            else:
                await self._message(services, "learn", rest.strip(), topic=rest.strip())
        elif command == "/train":
            topic = rest.strip() or self.topic
            if not topic:
                self.write("Usage: /train <topic>\n")
            else:
                self.mode, self.topic = "train", topic
                await self._message(services, "train", f"/train {topic}", topic=topic)
        elif command == "/model":
            self.write(await self._model(services, rest.strip()) + "\n")
        elif command.lstrip("/") in ADMIN_COMMANDS:
            reply = await self._admin(services).handle(
                command.lstrip("/"), rest, by=admin, user_id=self.user_id
            )
            self.write(reply.text + "\n")
        else:
            self.write(f"Unknown command {command}.\n{HELP}\n")
        return True

    @staticmethod
    def _admin(services: Services) -> AdminCommands:
        return AdminCommands.from_services(services)

    async def _model(self, services: Services, choice: str) -> str:
        """`/model` lists what users may pick; `/model <alias>` picks it, `/model default`
        goes back to the bot's defaults (as the Telegram buttons do)."""
        users = UserSettingsService.from_services(services)
        try:
            if choice:
                picked = None if choice.lower() == "default" else choice
                try:
                    await users.choose_model(self.user_id, picked)
                except ValueError as exc:
                    return f"Not changed: {exc} (/model lists them)"
                return f"Your model is now {picked or 'the bot default'}."
            current = (await users.load(self.user_id)).default_model
            offered = await users.offered()
        except StorageError as exc:
            return f"(storage error: {exc})"
        lines = [f"Your model: {current or 'the bot default'}. Offered (/model <alias>):"]
        lines += [f"  {e.alias}  {e.label}" for e in offered]
        lines.append("  default  the bot's default")
        return "\n".join(lines)


def _stdout_write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


async def _stdin_line() -> str | None:
    line = await asyncio.to_thread(sys.stdin.readline)
    return line if line else None


def console_identity(settings: Settings) -> int:
    """The console speaks as the first admin (so admin commands apply to them), else user 1."""
    return settings.admin_ids[0] if settings.admin_ids else 1


async def pin_model(services: Services, model: str) -> Services | str:
    """`services` running every agent on `model` (`--model`), or why it cannot run."""
    snapshot = await services.model_config.snapshot()
    try:
        text = normalize_model_id(model)
        await ModelChecker(services.settings, services.openrouter_models).check(
            text, snapshot.catalog
        )
    except (ModelProblem, ValueError) as exc:
        return f"Cannot run on --model {model}: {exc}"
    resolver = services.resolver.pinned(text, set_by="console --model")
    conversation: ConversationService = services.conversation.with_resolver(resolver)
    # `/models` and the other commands explain the session as it runs.
    return dataclasses.replace(services, conversation=conversation, resolver=resolver)


async def run_console(settings: Settings, *, model: str | None = None) -> int:
    identity = console_identity(settings)
    try:
        async with build_services(settings) as services:
            if model is not None:
                pinned = await pin_model(services, model)
                if isinstance(pinned, str):
                    print(pinned, file=sys.stderr)
                    return 2
                services = pinned
                print(f"Every agent runs on {model} in this session.", file=sys.stderr)
            session = ConsoleSession(
                services, _stdin_line, _stdout_write, user_id=identity, chat_id=identity
            )
            return await session.run()
    except StorageError as exc:
        print(f"Storage is not available: {exc}", file=sys.stderr)
        return 2
