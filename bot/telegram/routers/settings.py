"""A user's own settings: `/model` (inline keyboard, with the local/online preference under
it), `/prefer local|online|any`, `/setkey`, `/forget`.

`/forget` clears the chat's history and summary, and in a private chat the facts noted about the
user too, and says what went. `/deleteme` asks first (a button only that user's press counts
on), then erases everything stored about them, archives included.

`/setkey` deletes the message that carried the key first (whatever happens next), refuses to
work in groups, and never repeats the key: replies name the provider only.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiogram import Bot, Router
from aiogram.exceptions import TelegramAPIError
from aiogram.filters import Command, CommandObject
from aiogram.filters.callback_data import CallbackData
from aiogram.fsm.context import FSMContext
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message

from bot.services.model_catalog import CatalogEntry
from bot.services.user_replies import (
    SETKEY_USAGE,
    count,
    forgotten_text,
    key_reply,
    setkey_words,
)
from bot.services.user_settings import (
    PREFER_USAGE,
    PREFERENCES,
    Erased,
    PreferenceRefused,
    UserSettingsService,
)
from bot.storage.models import ModelPreference
from bot.storage.repositories import StorageError
from bot.telegram.middlewares import typing_action

log = logging.getLogger(__name__)

NO_STORAGE = "Sorry, I can't reach my settings store right now. Please try again in a minute."


class PickModel(CallbackData, prefix="model"):
    """A button of `/model`: a catalog alias, or `-` for the bot's default; `user` is who sent
    `/model`, the only one whose choice the menu shows and sets."""

    alias: str
    user: int


class PickPreference(CallbackData, prefix="pref"):
    """A preference button under `/model`: `any`, `local` or `online`, for `user` only."""

    value: str
    user: int


NOT_YOUR_MENU = "This menu is someone else's: send /model to choose your own model."
PREFERENCE_BUTTONS: dict[str, str] = {"any": "Any", "local": "Local only", "online": "Online only"}


BOT_DEFAULT = "-"


def model_keyboard(
    offered: list[CatalogEntry],
    current: str | None,
    user_id: int,
    preference: ModelPreference = "any",
) -> InlineKeyboardMarkup:
    def row(text: str, alias: str, ticked: bool) -> list[InlineKeyboardButton]:
        data = PickModel(alias=alias, user=user_id).pack()
        return [InlineKeyboardButton(text=("✅ " if ticked else "") + text, callback_data=data)]

    rows = [row(entry.name, entry.alias, entry.alias == current) for entry in offered]
    rows.append(row("Bot default", BOT_DEFAULT, current is None))
    rows.append(
        [
            InlineKeyboardButton(
                text=("✅ " if value == preference else "") + label,
                callback_data=PickPreference(value=value, user=user_id).pack(),
            )
            for value, label in PREFERENCE_BUTTONS.items()
        ]
    )
    return InlineKeyboardMarkup(inline_keyboard=rows)


def preference_text(users: UserSettingsService, preference: ModelPreference) -> str:
    if preference == "local":
        return (
            f"Your preference: local only: every agent serving you runs on "
            f"{users.local_model() or 'a local model (none is set up now, so I cannot answer)'} "
            "or another model on this bot's own machines; nothing of yours goes to a cloud model."
        )
    if preference == "online":
        return "Your preference: online only: never a local model."
    return "Your preference: any (the models the admins set)."


async def model_text(
    users: UserSettingsService,
    choice: str | None,
    offered: list[CatalogEntry],
    preference: ModelPreference = "any",
) -> str:
    entry = users.entry_of(choice)
    if choice is None:
        shown = f"the bot's default ({await users.bot_default()})"
    elif entry is None or entry not in offered:
        shown = f"{choice}, which is no longer offered, so you get the bot's default"
    else:
        shown = entry.name
    return (
        f"Your model: {shown}.\n{preference_text(users, preference)}\nChoose the model I use "
        "for you (admins may still pin some agents to other models), and below it local or "
        "online (/prefer):"
    )


def _current_alias(users: UserSettingsService, choice: str | None) -> str | None:
    """The alias the keyboard ticks (a spec stored by an older bot shows as its entry)."""
    entry = users.entry_of(choice)
    return entry.alias if entry is not None else choice


async def model_menu(users: UserSettingsService, user_id: int) -> tuple[str, InlineKeyboardMarkup]:
    """The `/model` message for `user_id` as their settings are now. Raises `StorageError`."""
    row = await users.load(user_id)
    offered = await users.offered()
    text = await model_text(users, row.default_model, offered, row.model_preference)
    current = _current_alias(users, row.default_model)
    return text, model_keyboard(offered, current, user_id, row.model_preference)


async def on_model(
    message: Message,
    users: UserSettingsService,
    storage_ok: bool,
) -> None:
    if not storage_ok or message.from_user is None:
        await message.answer(NO_STORAGE)
        return
    try:
        text, keyboard = await model_menu(users, message.from_user.id)
    except StorageError as exc:
        log.error("could not load the settings of user %s: %s", message.from_user.id, exc)
        await message.answer(NO_STORAGE)
        return
    await message.answer(text, reply_markup=keyboard)


async def _show_model_menu(query: CallbackQuery, users: UserSettingsService) -> None:
    """Redraw the `/model` message the button was on, as the settings are now."""
    if not isinstance(query.message, Message):
        return
    text, keyboard = await model_menu(users, query.from_user.id)
    try:
        await query.message.edit_text(text, reply_markup=keyboard)
    except TelegramAPIError as exc:
        log.info("could not update the /model message: %s", exc)


async def on_pick_model(
    query: CallbackQuery, callback_data: PickModel, users: UserSettingsService
) -> None:
    if query.from_user.id != callback_data.user:
        # Another group member's press: their choice is theirs to make with their own menu, and
        # this one keeps showing its owner's.
        await query.answer(NOT_YOUR_MENU, show_alert=True)
        return
    choice = None if callback_data.alias == BOT_DEFAULT else callback_data.alias
    try:
        offered = await users.offered()
        entry = next((e for e in offered if e.alias == choice), None)
        if choice is not None and entry is None:
            await query.answer(
                "That choice is no longer offered; send /model again.", show_alert=True
            )
            return
    except StorageError as exc:
        log.error("could not read the models offered: %s", exc)
        await query.answer(NO_STORAGE, show_alert=True)
        return

    async def save() -> str:
        await users.choose_model(query.from_user.id, choice)
        return f"Saved: {entry.name if entry is not None else 'bot default'}"

    await _save_from_menu(query, users, save, "model")


async def _save_from_menu(
    query: CallbackQuery, users: UserSettingsService, save: Callable[[], Awaitable[str]], what: str
) -> None:
    """Run a button's change, answer the press (what was saved, or why not), redraw the menu."""
    try:
        await query.answer(await save())
        await _show_model_menu(query, users)
    except PreferenceRefused as exc:
        await query.answer(str(exc), show_alert=True)
    except StorageError as exc:
        log.error("could not save the %s of user %s: %s", what, query.from_user.id, exc)
        await query.answer(NO_STORAGE, show_alert=True)


async def on_pick_preference(
    query: CallbackQuery, callback_data: PickPreference, users: UserSettingsService
) -> None:
    if query.from_user.id != callback_data.user:
        await query.answer(NOT_YOUR_MENU, show_alert=True)
        return

    async def save() -> str:
        row = await users.set_preference(query.from_user.id, callback_data.value)
        return f"Saved: {PREFERENCE_BUTTONS[row.model_preference].lower()}"

    await _save_from_menu(query, users, save, "preference")


async def on_prefer(
    message: Message, command: CommandObject, users: UserSettingsService, storage_ok: bool
) -> None:
    words = (command.args or "").split()
    if len(words) != 1 or words[0].lower() not in PREFERENCES:
        await message.answer(PREFER_USAGE)
        return
    if not storage_ok or message.from_user is None:
        await message.answer(NO_STORAGE)
        return
    try:
        row = await users.set_preference(message.from_user.id, words[0])
    except PreferenceRefused as exc:
        await message.answer(str(exc))
        return
    except StorageError as exc:
        log.error("could not save the preference of user %s: %s", message.from_user.id, exc)
        await message.answer(NO_STORAGE)
        return
    await message.answer("Saved. " + preference_text(users, row.model_preference))


async def on_setkey(
    message: Message,
    command: CommandObject,
    bot: Bot,
    users: UserSettingsService,
    storage_ok: bool,
) -> None:
    args = (command.args or "").split()
    if args:
        # The key must leave the chat at once, whatever happens next.
        try:
            await message.delete()
        except TelegramAPIError as exc:
            log.warning("could not delete a /setkey message in chat %s: %s", message.chat.id, exc)
    if message.chat.type != "private":
        note = (
            " This chat has seen it, so please revoke that key and make a new one."
            if len(args) >= 2
            else ""
        )
        await message.answer("Please send /setkey to me in a private chat." + note)
        return
    if not storage_ok:
        await message.answer(NO_STORAGE)
        return
    user_id = message.from_user.id if message.from_user else message.chat.id
    if args == ["off"]:
        try:
            removed = await users.forget_key(user_id)
        except StorageError as exc:
            log.error("could not remove the key of user %s: %s", user_id, exc)
            await message.answer(NO_STORAGE)
            return
        await message.answer("Your key is removed." if removed else "You had no key stored.")
        return
    if len(args) != 2:
        await message.answer(SETKEY_USAGE)
        return
    provider, key = setkey_words(args)
    async with typing_action(bot, message.chat.id):
        try:
            outcome = await users.set_key(user_id, provider, key)
        except StorageError as exc:
            log.error("could not store the key of user %s: %s", user_id, exc)
            await message.answer(
                "Your key works, but I couldn't store it just now. Please try again in a minute."
            )
            return
    await message.answer(key_reply(outcome, users))


async def on_forget(
    message: Message, users: UserSettingsService, state: FSMContext, storage_ok: bool
) -> None:
    user_id = message.from_user.id if message.from_user else None
    try:
        forgotten = await users.forget_chat(message.chat.id, user_id=user_id)
    except StorageError as exc:
        log.error("could not clear chat %s: %s", message.chat.id, exc)
        await message.answer(NO_STORAGE)
        return
    await state.clear()
    await message.answer(forgotten_text(forgotten))


class EraseMe(CallbackData, prefix="erase"):
    """The confirmation of `/deleteme`: `yes` or `no`, and whose data it is about."""

    answer: str
    user: int


NOT_YOUR_BUTTON = "This button is someone else's: it does nothing for you."
ERASE_ASK = (
    "This will erase everything I hold about you: your settings and API key, the facts I noted, "
    "your exercises, our private chat, what you said to me in groups, and your archives. It "
    "cannot be undone. Erase everything?"
)


def erased_text(erased: Erased) -> str:
    counts = erased.counts
    return (
        "Done: I erased everything I held about you: "
        f"{count(counts.get('messages', 0), 'message')}, "
        f"{count(counts.get('facts', 0), 'fact')}, "
        f"{count(counts.get('exercises', 0), 'exercise')}, "
        f"{count(erased.archives, 'archive')} and your settings. A group's summary written "
        "earlier may still mention you: /forget in that group clears it."
    )


async def on_deleteme(message: Message) -> None:
    if message.chat.type != "private" or message.from_user is None:
        await message.answer("Please send /deleteme to me in a private chat.")
        return
    user_id = message.from_user.id
    buttons = [
        InlineKeyboardButton(
            text="Erase everything", callback_data=EraseMe(answer="yes", user=user_id).pack()
        ),
        InlineKeyboardButton(
            text="Cancel", callback_data=EraseMe(answer="no", user=user_id).pack()
        ),
    ]
    await message.answer(ERASE_ASK, reply_markup=InlineKeyboardMarkup(inline_keyboard=[buttons]))


async def on_erase(
    query: CallbackQuery, callback_data: EraseMe, users: UserSettingsService, state: FSMContext
) -> None:
    if query.from_user.id != callback_data.user:
        await query.answer(NOT_YOUR_BUTTON, show_alert=True)
        return
    if callback_data.answer != "yes":
        text = "Nothing was erased."
    else:
        try:
            erased = await users.erase_user(callback_data.user)
        except StorageError as exc:
            log.error("could not erase user %s: %s", callback_data.user, exc)
            await query.answer(NO_STORAGE, show_alert=True)
            return
        await state.clear()
        log.info("user %s erased their data (%s)", callback_data.user, erased.counts)
        text = erased_text(erased)
    await query.answer()
    if isinstance(query.message, Message):
        try:
            await query.message.edit_text(text, reply_markup=None)
        except TelegramAPIError as exc:
            log.info("could not update the /deleteme message: %s", exc)


def create_router() -> Router:
    router = Router(name=__name__)
    router.message.register(on_model, Command("model"))
    router.callback_query.register(on_pick_model, PickModel.filter())
    router.message.register(on_prefer, Command("prefer"))
    router.callback_query.register(on_pick_preference, PickPreference.filter())
    router.message.register(on_setkey, Command("setkey"))
    router.message.register(on_forget, Command("forget"))
    router.message.register(on_deleteme, Command("deleteme"))
    router.callback_query.register(on_erase, EraseMe.filter())
    return router
