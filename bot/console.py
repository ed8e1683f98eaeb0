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
import contextlib
import dataclasses
import logging
import signal
import sys
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bot.app import Services, build_services
from bot.config import Settings
from bot.services.admin_commands import ADMIN_COMMANDS, AdminCommands
from bot.services.conversation import ConversationService
from bot.services.model_checks import ModelChecker, ModelProblem
from bot.services.model_config import normalize_model_id
from bot.services.user_replies import SETKEY_USAGE, forgotten_text, key_reply, setkey_words
from bot.services.user_settings import UserSettingsService
from bot.storage.models import User
from bot.storage.repositories import StorageError

HELP = """\
Commands (as in Telegram):
  /learn <topic>                 a short lesson on a topic
  /train [topic]                 an exercise; your next message is graded, then the next one
                                 comes (/stop ends it)
  /stop                          stop training, back to chat
  /model [<alias>|default]       the models offered to you, or pick one
  /setkey <provider> <key>       use your own API key (/setkey off removes it)
  /forget                        forget this chat's history and the facts I noted about you
  /models                        which model each agent uses, per pipeline, and why
  /agents                        the agents and their roles
  /setmodel <target> <model>     target: agent, pipeline:<name>, role:<role> or default;
                                 model: catalog alias, provider:model or OpenRouter id
  /resetmodel <target>           back to the configured model
  /rollback <target>             undo the target's latest change
  /modelhistory [target]         who changed which model, and when
  /catalog [show|add|edit|remove ...]   the catalog of named models (/catalog help)
  /trial [<agent> <model> ...]   the running trials, or start one (/trial stop|promote <agent>)
  /replay <agent> <model> [n=20] [confirm]   the agent's last n inputs run again on the
                                 model, side by side (without confirm: the estimate only)
  /task add <name> <model> [on=<pipeline>] [sample=<percent>] [kind=note|score] <text>
                                 a background step after replies; /task list|show|remove
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
        elif command in {"/stop", "/chat"}:
            # `/chat`: what the console called it before it said `/stop` like Telegram.
            self.mode, self.topic = "support", None
            self.write("Back to chat.\n")
        elif command == "/setkey":
            self.write(await self._setkey(services, rest.split()) + "\n")
        elif command == "/forget":
            users = UserSettingsService.from_services(services)
            try:
                forgotten = await users.forget_chat(self.chat_id, user_id=self.user_id)
            except StorageError as exc:
                self.write(f"(storage error: {exc})\n")
            else:
                self.write(forgotten_text(forgotten) + "\n")
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
        elif command == "/replay" and rest.split()[-1:] == ["confirm"]:
            # The console's stand-in for Telegram's "Run the replay" button.
            words = rest.split()[:-1]
            commands = self._admin(services).replay_commands
            try:
                request = commands.parse(" ".join(words))
            except ValueError as exc:
                self.write(f"{exc}\n")
            else:
                for text in await commands.run(request, by=admin):
                    self.write(text + "\n\n")
        elif command.lstrip("/") in ADMIN_COMMANDS:
            reply = await self._admin(services).handle(
                command.lstrip("/"), rest, by=admin, user_id=self.user_id
            )
            self.write(reply.text + "\n")
            if reply.confirm is not None:
                self.write(f"Type {command} {rest.strip()} confirm to run it.\n")
        else:
            self.write(f"Unknown command {command}.\n{HELP}\n")
        return True

    async def _setkey(self, services: Services, args: list[str]) -> str:
        """`/setkey <provider> <key>` (either order), `/setkey off`, as in Telegram."""
        users = UserSettingsService.from_services(services)
        try:
            if args == ["off"]:
                removed = await users.forget_key(self.user_id)
                return "Your key is removed." if removed else "You had no key stored."
            if len(args) != 2:
                return SETKEY_USAGE
            provider, key = setkey_words(args)
            outcome = await users.set_key(self.user_id, provider, key)
        except StorageError as exc:
            return f"(storage error: {exc})"
        return key_reply(outcome, users)

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


class StdinLines:
    """Lines of stdin, read by a daemon thread.

    `asyncio.to_thread(sys.stdin.readline)` would hold one of the loop's executor threads inside
    `readline`, and Ctrl-C at an idle prompt then hung: closing the loop waits for that thread,
    which waits for a line. A daemon thread does not hold the exit.
    """

    def __init__(self) -> None:
        self._queue: asyncio.Queue[str | None] | None = None

    async def __call__(self) -> str | None:
        if self._queue is None:
            self._queue = asyncio.Queue()
            loop = asyncio.get_running_loop()
            queue = self._queue

            def read() -> None:
                while True:
                    line = sys.stdin.readline()
                    loop.call_soon_threadsafe(queue.put_nowait, line or None)
                    if not line:
                        return

            threading.Thread(target=read, name="console-stdin", daemon=True).start()
        return await self._queue.get()


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
    quiet_logs()
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    interrupted = False

    def interrupt() -> None:
        # Ctrl-C: leave, at the prompt or in the middle of a reply. The loop's own handler for
        # it did not run while uvloop waited for input, so the console hung until a line came.
        nonlocal interrupted
        interrupted = True
        if main is not None:
            main.cancel()

    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGINT, interrupt)
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
                services, StdinLines(), _stdout_write, user_id=identity, chat_id=identity
            )
            return await session.run()
    except asyncio.CancelledError:
        if not interrupted or main is None:
            raise
        main.uncancel()
        _stdout_write("\n")
        return 130
    except StorageError as exc:
        print(f"Storage is not available: {exc}", file=sys.stderr)
        return 2
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.remove_signal_handler(signal.SIGINT)


def quiet_logs() -> None:
    """At LOG_LEVEL=INFO the console shows warnings and errors only: an INFO line per agent and
    an HTTP client's line per model call, between the prompt and the reply, are noise in a
    chat. LOG_LEVEL=DEBUG shows everything."""
    root = logging.getLogger()
    if root.level == logging.INFO:
        root.setLevel(logging.WARNING)
    for noisy in ("httpx", "httpx2"):
        logging.getLogger(noisy).setLevel(max(root.level, logging.WARNING))
