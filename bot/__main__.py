"""`python -m bot` runs the bot; `python -m bot console|migrate|check` the other entry points.

Only wiring lives here: every subcommand is a function elsewhere. A configuration problem exits
at once with a message naming the variable to set, never with a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Coroutine
from typing import Any

from bot.config import ConfigError, Settings, load_settings

USAGE = """\
python -m bot            run the Telegram bot (polling, or webhook when WEBHOOK_URL is set)
python -m bot console    chat with the pipelines in this terminal (no Telegram needed)
                         [--model <alias|provider:model>]: every agent on that model
python -m bot migrate    apply the database migrations (SQLite or InsForge)
python -m bot check      validate the configuration and reach every configured service
"""


def _run(main: Coroutine[Any, Any, int]) -> int:
    """Run `main` on uvloop where it is installed (Linux, macOS), else on asyncio's own loop.

    The bot spends most of its CPU in the event loop (sockets, timers, thread wake-ups); uvloop
    cuts that share by about half in the load benchmark (.planning/decisions/0004-hot-path.md).
    """
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def _fail(message: str) -> int:
    print(message, file=sys.stderr)
    return 2


def _run_bot(settings: Settings) -> int:
    if settings.telegram_bot_token is None:
        return _fail(
            "TELEGRAM_BOT_TOKEN is not set: get a token from @BotFather and put it in .env "
            "(copy .env.example to .env and fill it in), or try `python -m bot console` "
            "without Telegram."
        )
    from aiogram.utils.token import TokenValidationError, validate_token

    try:
        validate_token(settings.telegram_bot_token.get_secret_value())
    except TokenValidationError:
        # Never the value itself: it may be a real token with a typo.
        return _fail(
            "TELEGRAM_BOT_TOKEN is not a bot token: @BotFather gives one like "
            "123456789:AAH... (digits, a colon, then letters); check .env."
        )
    from bot.telegram.runtime import run_bot

    return _run(run_bot(settings))


def _run_console(settings: Settings, model: str | None = None) -> int:
    from bot.console import run_console

    return _run(run_console(settings, model=model))


def _run_migrate(settings: Settings) -> int:
    from bot.storage.migrate import run_migrate

    return _run(run_migrate(settings))


def _run_check(settings: Settings) -> int:
    from bot.check import run_check

    return _run(run_check(settings))


COMMANDS = {
    "run": _run_bot,
    "console": _run_console,
    "migrate": _run_migrate,
    "check": _run_check,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot", usage=USAGE)
    parser.add_argument("command", nargs="?", default="run", choices=sorted(COMMANDS))
    parser.add_argument("--model", help="console only: run every agent on this model")
    args = parser.parse_args(argv)
    if args.model is not None and args.command != "console":
        parser.error("--model is for `python -m bot console`")
    try:
        settings = load_settings()
    except ConfigError as exc:
        return _fail(str(exc))
    from bot.observability.logs import install_log_scrubbing
    from bot.observability.scrub import Scrubber

    install_log_scrubbing(Scrubber(settings.secrets()), settings.log_level.upper())
    try:
        if args.command == "console":
            return _run_console(settings, args.model)
        return COMMANDS[args.command](settings)
    except ConfigError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
