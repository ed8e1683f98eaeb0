"""Middlewares every update passes through, and the typing indicator for long work.

`UserLoaderMiddleware` (register as an *outer* middleware on `dp.update`, after the Dispatcher's
own, so it runs inside the per-chat isolation lock) records the Telegram user (at most every few
minutes per user, see the class) and hands handlers `db_user` (a `bot.storage.models.User`) and,
when given the settings repository, `user_settings` (the stored `UserSettings`, or defaults for a
user who has none). When storage fails the update still goes on: the failure is logged and
handlers get a transient `User` built from the Telegram data and `storage_ok=False`, so that a
handler which must write can say so.

    dp.update.outer_middleware(UserLoaderMiddleware(storage.users, storage.settings))

    async def handler(message: Message, db_user: User, user_settings: UserSettings) -> None: ...

`typing_action(bot, chat_id)` keeps "typing…" visible while a pipeline runs (Telegram clears a chat
action after ~5 s or when a message arrives); unlike aiogram's `ChatActionSender` it never lets a
failed `sendChatAction` (flood, kicked from the group) disturb the work it decorates.

    async with typing_action(bot, chat_id):
        reply = await runner.run(...)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware, Bot
from aiogram.exceptions import TelegramAPIError, TelegramForbiddenError
from aiogram.types import TelegramObject
from aiogram.types import User as TelegramUser

from bot.storage.models import User, UserSettings, utcnow
from bot.storage.repositories import UserRepo, UserSettingsRepo

log = logging.getLogger(__name__)

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]

# Seconds between writes of one user's row while their names stay the same.
TOUCH_EVERY = 300.0
# Users whose last write is remembered (the least recently seen are forgotten first).
REMEMBERED_USERS = 10_000


def user_from_telegram(tg_user: TelegramUser) -> User:
    """The storage row for a Telegram user, as of now."""
    now = utcnow()
    return User(
        id=tg_user.id,
        username=tg_user.username,
        first_name=tg_user.first_name,
        last_name=tg_user.last_name,
        language_code=tg_user.language_code,
        first_seen=now,
        last_seen=now,
    )


class UserLoaderMiddleware(BaseMiddleware):
    """Put `db_user`, `user_settings` and `storage_ok` into handler data, once per update.

    The user row is written (first/last seen, names) at most every `touch_every` seconds per user
    while the names stay the same: `last_seen` to the minute needs no write per message, and
    that write was one database round trip (an HTTP request on InsForge) on every message.
    `user_settings` is only loaded when `settings` is given (the bot's conversation reads the
    settings it needs itself, so the dispatcher does not pass it).
    """

    def __init__(
        self,
        users: UserRepo,
        settings: UserSettingsRepo | None = None,
        *,
        touch_every: float = TOUCH_EVERY,
        remember: int = REMEMBERED_USERS,
    ) -> None:
        self.users = users
        self.settings = settings
        self.touch_every = touch_every
        self._remember = remember
        # user id -> (when the row was last written, the names written, the stored row)
        self._touched: OrderedDict[int, tuple[float, tuple[Any, ...], User]] = OrderedDict()

    async def _touch(self, tg_user: TelegramUser) -> User:
        names = (tg_user.username, tg_user.first_name, tg_user.last_name, tg_user.language_code)
        now = time.monotonic()
        known = self._touched.get(tg_user.id)
        if known is not None and known[1] == names and now - known[0] < self.touch_every:
            self._touched.move_to_end(tg_user.id)
            return known[2].model_copy(update={"last_seen": utcnow()})
        db_user = await self.users.touch(user_from_telegram(tg_user))
        self._touched[tg_user.id] = (now, names, db_user)
        self._touched.move_to_end(tg_user.id)
        while len(self._touched) > self._remember:
            self._touched.popitem(last=False)
        return db_user

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        tg_user: TelegramUser | None = data.get("event_from_user")
        if tg_user is None or tg_user.is_bot:
            return await handler(event, data)
        storage_ok = True
        try:
            db_user = await self._touch(tg_user)
        except Exception:
            # A storage outage must not cost the user their reply.
            log.exception("Could not store user %s; continuing with a transient user", tg_user.id)
            db_user, storage_ok = user_from_telegram(tg_user), False
        if self.settings is not None:
            # Only when asked for: defaults standing in for settings nobody loaded would be wrong.
            user_settings: UserSettings | None = None
            if storage_ok:
                try:
                    user_settings = await self.settings.get(tg_user.id)
                except Exception:
                    log.exception("Could not load settings of user %s; using defaults", tg_user.id)
                    storage_ok = False
            data["user_settings"] = user_settings or UserSettings(user_id=tg_user.id)
        data["db_user"] = db_user
        data["storage_ok"] = storage_ok
        return await handler(event, data)


@contextlib.asynccontextmanager
async def typing_action(
    bot: Bot,
    chat_id: int,
    *,
    message_thread_id: int | None = None,
    action: str = "typing",
    interval: float = 4.5,
) -> AsyncIterator[None]:
    """Show `action` in the chat until the block ends; errors of the indicator are only logged."""

    async def keep_sending() -> None:
        while True:
            try:
                await bot.send_chat_action(
                    chat_id=chat_id, action=action, message_thread_id=message_thread_id
                )
            except TelegramForbiddenError:
                return  # blocked or removed: every later call would be refused too
            except TelegramAPIError as exc:
                log.debug("sendChatAction failed in chat %s: %s", chat_id, exc)
            await asyncio.sleep(interval)

    task = asyncio.create_task(keep_sending())
    try:
        yield
    finally:
        task.cancel()
        # asyncio.wait does not raise the task's CancelledError, so our own cancellation (if
        # any) still propagates.
        await asyncio.wait([task])
