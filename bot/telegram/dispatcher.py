"""The bot and the dispatcher, built from the services.

    bot = create_bot(settings)
    dp = build_dispatcher(services)                        # in-process chat state and order
    dp = build_dispatcher(services, fsm_storage=redis_storage, events_isolation=redis_isolation)
    await bot.set_my_commands(BOT_COMMANDS)

Handlers get by name: `services` (the whole `Services`), `admin` (`AdminCommands`), `users`
(`UserSettingsService`), `max_input_chars`, `live_budget`, `votes` (who rated which reply),
plus `db_user` and `storage_ok` from the user loader. Chat state is per chat
(`FSMStrategy.CHAT`: a `/train` in a group waits for the group's next answer) and so is update
order (one chat's updates one at a time, in the order sent; different chats concurrently).

Router order matters, first match wins: errors; the commands, behind one "starts with /" gate
(start/help, settings, access (/users, Approve / Deny), admin then its refusal for non-admins,
learn, /archives, /train and /stop); feedback buttons; documents and the /archives buttons;
answers while training; chat (unknown commands, then any text).
"""

from __future__ import annotations

from aiogram import Bot, Dispatcher, Router
from aiogram.client.default import DefaultBotProperties
from aiogram.client.telegram import TelegramAPIServer
from aiogram.fsm.storage.base import BaseEventIsolation, BaseStorage
from aiogram.fsm.storage.memory import MemoryStorage
from aiogram.fsm.strategy import FSMStrategy
from aiogram.types import BotCommand

from bot.app import Services
from bot.config import ConfigError, Settings
from bot.services.admin_commands import AdminCommands
from bot.services.user_settings import UserSettingsService
from bot.telegram.access import install as install_access
from bot.telegram.change_reports import ChangeReportSender
from bot.telegram.filters import LooksLikeCommand
from bot.telegram.flood import FloodControlMiddleware
from bot.telegram.intake_feed import StaleUpdateMiddleware
from bot.telegram.live_budget import LiveUpdateBudget
from bot.telegram.long_text import LongTextGuard
from bot.telegram.middlewares import UserLoaderMiddleware
from bot.telegram.ordering import ChatEventIsolation
from bot.telegram.routers import (
    admin,
    archives,
    budget,
    chat,
    errors,
    feedback,
    learn,
    settings,
    start,
    train,
    users,
)
from bot.telegram.routers.common import MAX_INPUT_CHARS
from bot.telegram.routers.feedback import VoteBook
from bot.telegram.session import JsonAiohttpSession
from bot.telegram.trial_guard import TrialGuardSender

BOT_COMMANDS: list[BotCommand] = [
    BotCommand(command="start", description="What I can do"),
    BotCommand(command="learn", description="A short lesson: /learn <topic>"),
    BotCommand(command="train", description="An exercise to answer: /train [topic]"),
    BotCommand(command="stop", description="Stop training"),
    BotCommand(command="archives", description="Your notes I search: send a document to add"),
    BotCommand(command="model", description="Choose the model I use for you"),
    BotCommand(command="prefer", description="Local or online models: /prefer local|online|any"),
    BotCommand(command="usage", description="What you've spent today and this month"),
    BotCommand(command="setkey", description="Use your own API key: /setkey <provider> <key>"),
    BotCommand(command="forget", description="Forget this chat's history"),
    BotCommand(command="deleteme", description="Erase everything I hold about you"),
    BotCommand(command="help", description="The commands"),
]


def create_bot(settings: Settings) -> Bot:
    """A Bot on TELEGRAM_API_BASE (when set), with flood control and the long-text guard;
    formatting is per call."""
    token = settings.telegram_bot_token
    if token is None:
        raise ConfigError("TELEGRAM_BOT_TOKEN is not set: get a token from @BotFather")
    api = (
        TelegramAPIServer.from_base(settings.telegram_api_base)
        if settings.telegram_api_base
        else None
    )
    session = JsonAiohttpSession(api=api) if api is not None else JsonAiohttpSession()
    session.middleware(FloodControlMiddleware())
    # Before the request goes out, whatever middleware retries it: a too-long plain answer is
    # shortened instead of refused.
    session.middleware(LongTextGuard())
    # parse_mode None: the streamer renders replies to HTML itself and falls back to plain text.
    return Bot(token.get_secret_value(), session=session, default=DefaultBotProperties())


def install_notifiers(services: Services, bot: Bot) -> None:
    """What the services tell the admins (budget alerts) goes out through `bot`."""
    if services.budgets is not None:
        services.budgets.notify = budget.admin_notifier(bot, list(services.settings.admin_ids))


def build_dispatcher(
    services: Services,
    *,
    fsm_storage: BaseStorage | None = None,
    events_isolation: BaseEventIsolation | None = None,
) -> Dispatcher:
    dp = Dispatcher(
        storage=fsm_storage or MemoryStorage(),
        fsm_strategy=FSMStrategy.CHAT,
        events_isolation=events_isolation or ChatEventIsolation(),
        services=services,
        admin=AdminCommands.from_services(services),
        users=UserSettingsService.from_services(services),
        max_input_chars=MAX_INPUT_CHARS,
        live_budget=LiveUpdateBudget(services.settings.live_updates_per_second),
        votes=VoteBook(),
    )
    # Who may use the bot, and how fast: before the user loader, so a refused stranger is not
    # recorded as a user.
    install_access(dp, services)
    # After the Dispatcher's own FSM middleware: runs inside the chat's isolation lock.
    # Without the settings repository: the conversation loads the settings it needs, and
    # /model loads them itself (one read per message instead of two).
    # First inside the lock: an update that waited too long is apologized for, not answered.
    dp.update.outer_middleware(
        StaleUpdateMiddleware(
            services.settings.stale_update_seconds, services.settings.delivery_retry_seconds
        )
    )
    dp.update.outer_middleware(UserLoaderMiddleware(services.storage.users))
    # The routers whose message handlers are all commands, behind one check: a plain message
    # goes straight on to training answers and the chat (their callback queries are not gated).
    commands = Router(name="commands")
    commands.message.filter(LooksLikeCommand())
    commands.include_routers(
        start.create_router(),
        settings.create_router(),
        users.create_router(),
        budget.create_router(),
        admin.create_router(),
        learn.create_router(),
        archives.create_command_router(),
        train.create_command_router(),
    )
    if services.reports is not None:
        ChangeReportSender(services.reports, services.settings.admin_ids).attach(
            dp, "change_reports"
        )
    if services.trial_guard is not None:
        # The reports' and the guardrails' loops run while the dispatcher does.
        TrialGuardSender(
            services.trial_guard,
            list(services.settings.admin_ids),
            services.settings.trial_check_seconds,
        ).attach(dp, "trial_guard")
    dp.include_routers(
        errors.create_router(),
        commands,
        feedback.create_router(),
        archives.create_router(),
        train.create_router(),
        chat.create_router(),
    )
    return dp
