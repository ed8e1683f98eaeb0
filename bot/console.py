"""`python -m bot console`: chat with the pipelines in a terminal, no Telegram needed.

Same storage, same model resolution, same admin overrides as the bot (the console user is an
admin). Replies stream as they are written.

    you> I keep putting off my thesis
    bot> ...
    you> /setmodel strategist anthropic/claude-sonnet-4.5
    you> /models
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bot.app import Services, build_services
from bot.config import Settings
from bot.services.admin_commands import (
    HISTORY_USAGE,
    RESETMODEL_USAGE,
    SETMODEL_USAGE,
    AdminCommands,
)
from bot.storage.models import User
from bot.storage.repositories import StorageError

HELP = """\
Commands:
  /learn <topic>                 a short lesson on a topic
  /train <topic>                 start a drill; your next messages are answers (/chat to stop)
  /chat                          back to normal chat
  /models                        which model each agent uses, and why
  /agents                        the agents and what each does
  /modelhistory [agent]          who changed which model, and when
  /setmodel <agent> <model_id>   run an agent on an OpenRouter model (admin override)
  /resetmodel <agent>            back to the configured model
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
        args = rest.split()
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
        elif command == "/models":
            self.write(await self._admin(services).models(self.user_id) + "\n")
        elif command == "/agents":
            self.write(self._admin(services).agents() + "\n")
        elif command == "/modelhistory":
            if len(args) > 1:
                self.write(HISTORY_USAGE + "\n")
            else:
                agent = args[0] if args else None
                self.write(await self._admin(services).model_history(agent) + "\n")
        elif command == "/setmodel":
            if len(args) != 2:
                self.write(SETMODEL_USAGE + "\n")
            else:
                self.write(await self._admin(services).set_model(args[0], args[1], by=admin) + "\n")
        elif command == "/resetmodel":
            if len(args) != 1:
                self.write(RESETMODEL_USAGE + "\n")
            else:
                self.write(await self._admin(services).reset_model(args[0], by=admin) + "\n")
        else:
            self.write(f"Unknown command {command}.\n{HELP}\n")
        return True

    @staticmethod
    def _admin(services: Services) -> AdminCommands:
        return AdminCommands.from_services(services)


def _stdout_write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


async def _stdin_line() -> str | None:
    line = await asyncio.to_thread(sys.stdin.readline)
    return line if line else None


def console_identity(settings: Settings) -> int:
    """The console speaks as the first admin (so admin commands apply to them), else user 1."""
    return settings.admin_ids[0] if settings.admin_ids else 1


async def run_console(settings: Settings) -> int:
    identity = console_identity(settings)
    try:
        async with build_services(settings) as services:
            session = ConsoleSession(
                services, _stdin_line, _stdout_write, user_id=identity, chat_id=identity
            )
            return await session.run()
    except StorageError as exc:
        print(f"Storage is not available: {exc}", file=sys.stderr)
        return 2
