"""A fake Telegram Bot API server on 127.0.0.1 that the real aiogram `Bot` talks to.

Why: the bot's Telegram layer is tested end to end with the real aiogram `Bot` and `Dispatcher`
(long polling, request building, error classification) and nothing reaches the internet. The server
speaks the Bot API wire format: `POST /bot{token}/{method}` with form (aiogram sends
`multipart/form-data` or urlencoded; nested objects as JSON strings) or JSON bodies, answering
`{"ok": true, "result": ...}` or `{"ok": false, "error_code": N, "description": "..."}` with the
matching HTTP status (and `parameters.retry_after` on 429), exactly like Telegram.

Use it::

    async with FakeTelegramServer() as tg:
        bot = tg.make_bot()                          # real aiogram Bot pointed at the fake
        task = asyncio.create_task(dp.start_polling(bot, handle_signals=False))
        tg.user_message("hello", user_id=42)          # private chat 42
        call = await tg.wait_for(lambda c: c.method == "sendMessage" and c.chat_id == 42)
        assert call.params["text"] == "hello"
        await dp.stop_polling(); await task           # start_polling closes the bot session

Implemented methods: getMe, getUpdates (long polling: `offset` confirms, `limit`, `timeout` waits
for a push), setWebhook, deleteWebhook, getWebhookInfo, sendMessage, sendMessageDraft (private
chats only), sendPhoto (the upload's bytes kept in `photos`), editMessageText,
editMessageReplyMarkup, deleteMessage, sendChatAction, answerCallbackQuery, setMyCommands,
getMyCommands, deleteMyCommands, getFile (with the download route
`GET /file/bot{token}/{file_path}`; files over Telegram's 20 MB for bots are refused with
`400 Bad Request: file is too big`). Any other method answers 404 "Not Found", as Telegram does
for a method it does not know.

Validation that matters for the bot: `parse_mode=HTML` text is parsed with Telegram's tag set;
unknown or unbalanced tags and bad `&entities;` are refused with Telegram's own
`400 Bad Request: can't parse entities: ...`; text longer than 4096 UTF-16 code units after entity
parsing is refused with `400 Bad Request: message is too long`; an edit to the same content is
refused with `400 Bad Request: message is not modified: ...`.

Test controls:
- inject updates: `user_message(...)` (private or group, with `bot_command`/`mention` entities and
  `reply_to_message_id`), `user_document(data, file_name=...)` (the bytes are kept for `getFile`
  and the download; `downloads` counts them), `callback_query(...)`, or any raw
  `push_update({...})`;
- observe: `calls` (every request: method, decoded params, time, status, result/description),
  `calls_of(method, chat_id=...)`, `wait_for(predicate, timeout)`, `wait_for_call(method, ...)`,
  `chat_messages(chat_id)` (the bot's messages as the chat would show them now, after edits and
  deletions), `drafts`;
- inject faults: `fail_next(method, status=..., description=..., retry_after=..., times=N)` and the
  shorthands `flood_next`, `parse_error_next`, `server_error_next`; `outage(method, seconds=...)`
  (every call 502 for a while); `disable_method(name)` (404);
  `set_latency(method, seconds)`;
- webhook mode: after the bot calls `setWebhook`, pushed updates are POSTed in order to that URL
  with the `X-Telegram-Bot-Api-Secret-Token` header; `post_to_webhook(update, secret=...)` sends
  one directly and returns the HTTP status.

Efficiency (the load benchmark pushes hundreds of chats): pending updates live in a deque that
`offset` trims from the left; long-polls wake on an event instead of scanning; `wait_for` scans
only calls recorded since its last look; per-chat messages are kept in dicts keyed by id.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import re
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import ClientSession, ClientTimeout, web

TELEGRAM_TEXT_LIMIT = 4096

# Params aiogram sends JSON-encoded (numbers, booleans, objects); everything else stays a string.
_JSON_PARAMS = frozenset(
    {
        "chat_id",
        "message_id",
        "draft_id",
        "message_thread_id",
        "offset",
        "limit",
        "timeout",
        "user_id",
        "cache_time",
        "max_connections",
        "reply_to_message_id",
        "reply_markup",
        "entities",
        "allowed_updates",
        "commands",
        "scope",
        "link_preview_options",
        "reply_parameters",
        "disable_notification",
        "protect_content",
        "show_alert",
        "drop_pending_updates",
        "can_stop",
        "keep_on_stop",
        "message_ids",
    }
)

# Telegram's HTML tags (https://core.telegram.org/bots/api#html-style).
_ALLOWED_TAGS = frozenset(
    {
        "b",
        "strong",
        "i",
        "em",
        "u",
        "ins",
        "s",
        "strike",
        "del",
        "span",
        "tg-spoiler",
        "a",
        "code",
        "pre",
        "blockquote",
        "tg-emoji",
        "tg-time",
    }
)
_NAMED_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
_TAG_RE = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)?([^<>]*)>")
_ENTITY_RE = re.compile(r"&(#x[0-9a-fA-F]+|#[0-9]+|[a-zA-Z]+);")


class TelegramHTMLError(ValueError):
    """The HTML is not what Telegram accepts; the message is Telegram's own wording."""


def parse_telegram_html(text: str) -> str:
    """The visible text Telegram shows for `text` sent with `parse_mode=HTML`.

    Raises `TelegramHTMLError` with Telegram's description (after "can't parse entities: ") for an
    unsupported tag, an end tag without a start tag, a start tag left open, or an unknown
    `&entity;`. Byte offsets are UTF-8 offsets into the sent text, like Telegram's.
    """
    out: list[str] = []
    stack: list[str] = []
    pos = 0
    length = len(text)

    def offset(index: int) -> int:
        return len(text[:index].encode("utf-8"))

    while pos < length:
        ch = text[pos]
        if ch == "<":
            match = _TAG_RE.match(text, pos)
            if match is None or match.group(2) is None:
                raise TelegramHTMLError(f'Unsupported start tag "" at byte offset {offset(pos)}')
            closing, name = match.group(1) == "/", match.group(2).lower()
            if name not in _ALLOWED_TAGS:
                kind = "end" if closing else "start"
                raise TelegramHTMLError(
                    f'Unsupported {kind} tag "{name}" at byte offset {offset(pos)}'
                )
            if closing:
                if not stack:
                    raise TelegramHTMLError(f"Unexpected end tag at byte offset {offset(pos)}")
                if stack[-1] != name:
                    raise TelegramHTMLError(
                        f"Unmatched end tag at byte offset {offset(pos)},"
                        f' expected "</{stack[-1]}>", found "</{name}>"'
                    )
                stack.pop()
            else:
                stack.append(name)
            pos = match.end()
        elif ch == "&":
            match = _ENTITY_RE.match(text, pos)
            if match is None:
                # Telegram keeps a lone ampersand as text.
                out.append("&")
                pos += 1
                continue
            body = match.group(1)
            if body.startswith("#"):
                code = int(body[2:], 16) if body[1:2] in {"x", "X"} else int(body[1:])
                out.append(chr(code))
            elif body.lower() in _NAMED_ENTITIES:
                out.append(_NAMED_ENTITIES[body.lower()])
            else:
                raise TelegramHTMLError(
                    f'Unsupported HTML entity "&{body};" at byte offset {offset(pos)}'
                )
            pos = match.end()
        elif ch == ">":
            out.append(">")
            pos += 1
        else:
            nxt = min(
                (
                    i
                    for i in (text.find("<", pos), text.find("&", pos), text.find(">", pos))
                    if i >= 0
                ),
                default=length,
            )
            out.append(text[pos:nxt])
            pos = nxt
    if stack:
        raise TelegramHTMLError(f'Can\'t find end tag corresponding to start tag "{stack[-1]}"')
    return "".join(out)


def utf16_len(text: str) -> int:
    """Length as Telegram counts it: UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


class BotAPIError(Exception):
    """Raised inside a method handler: becomes `{"ok": false, ...}` with this status."""

    def __init__(
        self, status: int, description: str, parameters: dict[str, Any] | None = None
    ) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.parameters = parameters


@dataclass
class Call:
    """One request the bot made, as the server saw it."""

    method: str  # canonical Bot API name, e.g. "sendMessage"
    params: dict[str, Any]  # decoded: ints/bools/objects parsed, text left as sent
    at: float  # time.monotonic() when the request arrived
    status: int = 200
    result: Any = None
    description: str | None = None  # the error description when status != 200
    content_type: str = ""  # of the request body: "application/json", "multipart/form-data", ...
    index: int = 0  # position in `FakeTelegramServer.calls`

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def chat_id(self) -> Any:
        return self.params.get("chat_id")

    @property
    def text(self) -> str | None:
        value = self.params.get("text")
        return value if isinstance(value, str) else None


@dataclass
class Fault:
    status: int
    description: str
    retry_after: int | None = None
    chat_id: int | None = None  # only calls for this chat, when set
    formatted_only: bool = False  # only calls with a parse_mode (a parse error needs one)


@dataclass
class BotMessage:
    """A message the bot sent, as the chat shows it now."""

    message_id: int
    chat_id: int
    text: str  # visible text (entities parsed)
    raw_text: str  # the text as sent
    parse_mode: str | None
    reply_markup: Any = None
    reply_to_message_id: int | None = None
    edits: int = 0
    deleted: bool = False
    date: int = field(default_factory=lambda: int(time.time()))


_CANONICAL = [
    "getMe",
    "getUpdates",
    "getFile",
    "setWebhook",
    "deleteWebhook",
    "getWebhookInfo",
    "sendMessage",
    "sendMessageDraft",
    "editMessageText",
    "editMessageReplyMarkup",
    "deleteMessage",
    "sendChatAction",
    "sendPhoto",
    "answerCallbackQuery",
    "setMyCommands",
    "getMyCommands",
    "deleteMyCommands",
    "close",
    "logOut",
]


# What getFile serves a bot at most (Telegram's limit for bots on the public Bot API).
MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024


def unique_token() -> str:
    """A bot token with a bot id of its own: a test sharing Redis with others (whose keys carry
    the bot id, e.g. the intake's record of update ids seen) meets only its own keys."""
    return f"{random.randint(10**8, 10**9 - 1)}:TEST-token-for-the-fake-server"


class FakeTelegramServer:
    """A Bot API server for one bot token. See the module docstring for the API."""

    def __init__(
        self,
        *,
        token: str = "123456789:TEST-token-for-the-fake-server",
        bot_username: str = "coach_test_bot",
        bot_first_name: str = "Coach",
    ) -> None:
        self.token = token
        self.bot_id = int(token.split(":", 1)[0])
        self.bot_username = bot_username
        self.bot_first_name = bot_first_name

        self.calls: list[Call] = []
        self.drafts: dict[tuple[int, int], str] = {}  # (chat_id, draft_id) -> visible text
        # sendPhoto: (chat_id, the image bytes, caption), in order.
        self.photos: list[tuple[int, bytes, str]] = []
        self.commands: dict[str, list[dict[str, Any]]] = {}
        self.webhook_url: str = ""
        self.webhook_secret: str | None = None
        self.webhook_deliveries: list[tuple[int, int]] = []  # (update_id, HTTP status)

        self._pending: deque[dict[str, Any]] = deque()
        self._update_ids = itertools.count(1)
        self._update_event = asyncio.Event()
        self._call_event = asyncio.Event()
        self._message_ids: defaultdict[int, itertools.count[int]] = defaultdict(
            lambda: itertools.count(1)
        )
        self._messages: defaultdict[int, dict[int, BotMessage]] = defaultdict(dict)
        self._user_messages: dict[tuple[int, int], dict[str, Any]] = {}
        self._callback_ids = itertools.count(1)
        self._faults: defaultdict[str, deque[Fault]] = defaultdict(deque)
        self._disabled: set[str] = set()
        # method -> (monotonic time the outage ends, status): every call fails until then.
        self._outages: dict[str, tuple[float, int]] = {}
        self._latency: dict[str, float] = {}
        self._methods = {name.lower(): name for name in _CANONICAL}
        # file_id -> (file_path, bytes); `downloads` lists the paths fetched, in order.
        self._files: dict[str, tuple[str, bytes]] = {}
        self._file_ids = itertools.count(1)
        self.downloads: list[str] = []
        self._closing = False

        self._runner: web.AppRunner | None = None
        self._client: ClientSession | None = None
        self._webhook_queue: asyncio.Queue[dict[str, Any]] | None = None
        self._webhook_task: asyncio.Task[None] | None = None
        self.port = 0

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> FakeTelegramServer:
        app = web.Application(client_max_size=50 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        app.router.add_get("/file/bot{token}/{path:.+}", self._download)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def close(self) -> None:
        self._closing = True
        self._update_event.set()  # release long-polls so the server can stop at once
        if self._webhook_task is not None:
            self._webhook_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._webhook_task
            self._webhook_task = None
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeTelegramServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def url(self) -> str:
        """Base URL for `TelegramAPIServer.from_base(url)` / `TELEGRAM_API_BASE`."""
        return f"http://127.0.0.1:{self.port}"

    def make_bot(self, **bot_kwargs: Any) -> Any:
        """A real aiogram `Bot` talking to this server, on the session the bot uses (aiogram's
        aiohttp session, sending JSON bodies); close its session."""
        from aiogram import Bot
        from aiogram.client.telegram import TelegramAPIServer

        from bot.telegram.session import JsonAiohttpSession

        session = JsonAiohttpSession(api=TelegramAPIServer.from_base(self.url))
        return Bot(self.token, session=session, **bot_kwargs)

    # ------------------------------------------------------------------ updates in

    def push_update(self, update: dict[str, Any]) -> dict[str, Any]:
        """Queue a raw update (an `update_id` is assigned when missing); returns it."""
        update = dict(update)
        update.setdefault("update_id", next(self._update_ids))
        self._pending.append(update)
        self._update_event.set()
        if self.webhook_url:
            self._ensure_webhook_worker()
            assert self._webhook_queue is not None
            self._webhook_queue.put_nowait(update)
        return update

    def user(self, user_id: int, **extra: Any) -> dict[str, Any]:
        """A Telegram `User` object for a human with this id."""
        user: dict[str, Any] = {
            "id": user_id,
            "is_bot": False,
            "first_name": extra.pop("first_name", f"User{user_id}"),
            "language_code": extra.pop("language_code", "en"),
        }
        username = extra.pop("username", f"user{user_id}")
        if username:
            user["username"] = username
        user.update(extra)
        return user

    def user_message(
        self,
        text: str,
        *,
        user_id: int = 1001,
        chat_id: int | None = None,
        chat_type: str | None = None,
        reply_to_message_id: int | None = None,
        first_name: str | None = None,
        username: str | None = None,
        message_thread_id: int | None = None,
    ) -> dict[str, Any]:
        """Queue a text message from a user; returns the update (its `message` has the id).

        `chat_id` defaults to `user_id` (a private chat); a negative id is a group
        (`chat_type` defaults to "supergroup" then). Entities: a leading `/command` (with an
        optional `@botname`) gets a `bot_command` entity, every `@username` a `mention`.
        `reply_to_message_id` may name a bot message (from `chat_messages`) or a user message.
        """
        chat_id = user_id if chat_id is None else chat_id
        if chat_type is None:
            chat_type = "private" if chat_id > 0 else "supergroup"
        from_user = self.user(
            user_id,
            **({"first_name": first_name} if first_name else {}),
            **({"username": username} if username else {}),
        )
        chat: dict[str, Any] = {"id": chat_id, "type": chat_type}
        if chat_type == "private":
            chat.update({k: v for k, v in from_user.items() if k in {"first_name", "username"}})
        else:
            chat["title"] = f"Group {chat_id}"
        message_id = next(self._message_ids[chat_id])
        message: dict[str, Any] = {
            "message_id": message_id,
            "date": int(time.time()),
            "chat": chat,
            "from": from_user,
            "text": text,
        }
        entities = _entities_for(text)
        if entities:
            message["entities"] = entities
        if message_thread_id is not None:
            message["message_thread_id"] = message_thread_id
        if reply_to_message_id is not None:
            replied = self._message_object(chat_id, reply_to_message_id)
            if replied is not None:
                message["reply_to_message"] = replied
        self._user_messages[(chat_id, message_id)] = message
        return self.push_update({"message": message})

    def user_document(
        self,
        data: bytes,
        *,
        file_name: str | None = "notes.txt",
        mime_type: str | None = None,
        user_id: int = 1001,
        chat_id: int | None = None,
        caption: str | None = None,
        file_size: int | None = None,
    ) -> dict[str, Any]:
        """Queue a document message; `data` is what `getFile` + the download give back.

        `file_size` overrides the size the update announces (a file "too big" without sending
        20 MB through the test)."""
        chat_id = user_id if chat_id is None else chat_id
        number = next(self._file_ids)
        file_id = f"DOC{number:06d}-{'x' * 40}"
        self._files[file_id] = (f"documents/file_{number}.bin", data)
        update = self.user_message(caption or "", user_id=user_id, chat_id=chat_id)
        message = update["message"]
        message.pop("text", None)
        message.pop("entities", None)
        if caption:
            message["caption"] = caption
        document: dict[str, Any] = {
            "file_id": file_id,
            "file_unique_id": f"U{number:06d}",
            "file_size": len(data) if file_size is None else file_size,
        }
        if file_name is not None:
            document["file_name"] = file_name
        if mime_type is not None:
            document["mime_type"] = mime_type
        message["document"] = document
        return update

    def callback_query(
        self,
        data: str,
        *,
        user_id: int = 1001,
        chat_id: int | None = None,
        message_id: int | None = None,
    ) -> dict[str, Any]:
        """Queue a press of an inline button carrying `data` on the bot message `message_id`.

        Without `message_id`, the bot's latest message in the chat is used.
        """
        chat_id = user_id if chat_id is None else chat_id
        if message_id is None:
            sent = self.chat_messages(chat_id)
            message_id = sent[-1].message_id if sent else None
        query: dict[str, Any] = {
            "id": str(next(self._callback_ids)),
            "from": self.user(user_id),
            "chat_instance": f"ci{chat_id}",
            "data": data,
        }
        if message_id is not None:
            message = self._message_object(chat_id, message_id)
            if message is not None:
                query["message"] = message
        return self.push_update({"callback_query": query})

    # ------------------------------------------------------------------ observation

    def calls_of(
        self, method: str, *, chat_id: int | None = None, ok: bool | None = None
    ) -> list[Call]:
        """Recorded calls of `method` (canonical name), optionally for one chat / outcome."""
        return [
            c
            for c in self.calls
            if c.method == method
            and (chat_id is None or c.chat_id == chat_id)
            and (ok is None or c.ok == ok)
        ]

    def chat_messages(self, chat_id: int, *, include_deleted: bool = False) -> list[BotMessage]:
        """The bot's messages in the chat, oldest first, as they read now."""
        return [
            m for m in self._messages.get(chat_id, {}).values() if include_deleted or not m.deleted
        ]

    async def wait_for(
        self, predicate: Callable[[Call], bool], timeout: float = 10.0, *, since: int = 0
    ) -> Call:
        """The first recorded call (at index >= `since`) matching `predicate`, waiting for it.

        Raises `TimeoutError` with the recent methods when none arrives in `timeout` seconds.
        """
        deadline = time.monotonic() + timeout
        index = since
        while True:
            while index < len(self.calls):
                call = self.calls[index]
                index += 1
                if predicate(call):
                    return call
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                recent = [f"{c.method}({c.status})" for c in self.calls[-10:]]
                raise TimeoutError(f"no matching Bot API call within {timeout}s; last: {recent}")
            self._call_event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._call_event.wait(), remaining)

    async def wait_for_call(
        self,
        method: str,
        *,
        chat_id: int | None = None,
        ok: bool | None = True,
        count: int = 1,
        timeout: float = 10.0,
        since: int = 0,
    ) -> list[Call]:
        """Wait until `count` calls of `method` (for `chat_id`, with outcome `ok`) are recorded."""
        found: list[Call] = []

        def match(call: Call) -> bool:
            return (
                call.method == method
                and (chat_id is None or call.chat_id == chat_id)
                and (ok is None or call.ok == ok)
            )

        start = since
        while len(found) < count:
            call = await self.wait_for(match, timeout, since=start)
            found.append(call)
            start = call.index + 1
        return found

    # ------------------------------------------------------------------ faults

    def fail_next(
        self,
        method: str,
        *,
        status: int,
        description: str,
        retry_after: int | None = None,
        times: int = 1,
        chat_id: int | None = None,
        formatted_only: bool = False,
    ) -> None:
        """The next `times` calls of `method` (for `chat_id`, if given) fail this way.

        `formatted_only`: only calls that carry a `parse_mode` count (and fail).
        """
        for _ in range(times):
            self._faults[method].append(
                Fault(status, description, retry_after, chat_id, formatted_only)
            )

    def flood_next(self, method: str, retry_after: int = 1, *, times: int = 1) -> None:
        """429 `Too Many Requests: retry after N` with `parameters.retry_after`."""
        self.fail_next(
            method,
            status=429,
            description=f"Too Many Requests: retry after {retry_after}",
            retry_after=retry_after,
            times=times,
        )

    def parse_error_next(self, method: str, *, times: int = 1) -> None:
        """400 can't parse entities for the next `times` calls that carry a `parse_mode`.

        Forces the plain-text path: a retry without `parse_mode` is not refused.
        """
        self.fail_next(
            method,
            status=400,
            description='Bad Request: can\'t parse entities: Unsupported start tag "x" at byte'
            " offset 0",
            times=times,
            formatted_only=True,
        )

    def server_error_next(self, method: str, *, status: int = 500, times: int = 1) -> None:
        self.fail_next(method, status=status, description="Internal Server Error", times=times)

    def outage(self, method: str, *, seconds: float = float("inf"), status: int = 502) -> None:
        """Every call of `method` fails with `status` (Telegram's 5xx) for `seconds`, or until
        `end_outage(method)`."""
        self._outages[method] = (time.monotonic() + seconds, status)

    def end_outage(self, method: str) -> None:
        self._outages.pop(method, None)

    def disable_method(self, method: str) -> None:
        """Answer 404 Not Found for `method`, like a Bot API server that lacks it."""
        self._disabled.add(method)

    def set_latency(self, method: str, seconds: float) -> None:
        """Delay every answer to `method` by `seconds` (simulates a slow Bot API)."""
        self._latency[method] = seconds

    # ------------------------------------------------------------------ webhook

    async def post_to_webhook(
        self, update: dict[str, Any], *, secret: str | None = None, url: str | None = None
    ) -> int:
        """POST one update to the webhook (default: the registered URL and secret); HTTP status."""
        target = url or self.webhook_url
        if not target:
            raise RuntimeError("no webhook registered; call setWebhook first or pass url=")
        if self._client is None:
            self._client = ClientSession(timeout=ClientTimeout(total=30))
        headers = {"Content-Type": "application/json"}
        secret = self.webhook_secret if secret is None else secret
        if secret:
            headers["X-Telegram-Bot-Api-Secret-Token"] = secret
        async with self._client.post(target, data=json.dumps(update), headers=headers) as resp:
            await resp.read()
            return resp.status

    def _ensure_webhook_worker(self) -> None:
        if self._webhook_task is None:
            self._webhook_queue = asyncio.Queue()
            self._webhook_task = asyncio.create_task(self._webhook_worker())

    async def _webhook_worker(self) -> None:
        # Telegram delivers one bot's updates in order; a failed delivery is retried.
        assert self._webhook_queue is not None
        while True:
            update = await self._webhook_queue.get()
            for _attempt in range(5):
                try:
                    status = await self.post_to_webhook(update)
                except OSError:
                    status = 0
                self.webhook_deliveries.append((update["update_id"], status))
                if status == 200:
                    break
                await asyncio.sleep(0.2)

    # ------------------------------------------------------------------ HTTP

    async def _handle(self, request: web.Request) -> web.Response:
        at = time.monotonic()
        if request.match_info["token"] != self.token:
            return _error_response(401, "Unauthorized")
        raw_method = request.match_info["method"]
        method = self._methods.get(raw_method.lower(), raw_method)
        params = await _read_params(request)
        call = Call(
            method=method,
            params=params,
            at=at,
            index=len(self.calls),
            content_type=request.content_type,
        )
        try:
            if method in self._latency:
                await asyncio.sleep(self._latency[method])
            self._raise_fault(method, params)
            handler = getattr(self, f"_m_{method}", None)
            if handler is None or method in self._disabled:
                raise BotAPIError(404, "Not Found")
            result = await handler(params)
        except BotAPIError as exc:
            call.status, call.description = exc.status, exc.description
            self._record(call)
            return _error_response(exc.status, exc.description, exc.parameters)
        call.result = result
        self._record(call)
        return web.json_response({"ok": True, "result": result})

    def _record(self, call: Call) -> None:
        call.index = len(self.calls)
        self.calls.append(call)
        self._call_event.set()

    def _raise_fault(self, method: str, params: dict[str, Any]) -> None:
        outage = self._outages.get(method)
        if outage is not None:
            if time.monotonic() < outage[0]:
                raise BotAPIError(outage[1], "Bad Gateway" if outage[1] == 502 else "Server Error")
            del self._outages[method]
        faults = self._faults.get(method)
        if not faults:
            return
        for i, fault in enumerate(faults):
            if fault.formatted_only and not params.get("parse_mode"):
                continue
            if fault.chat_id is None or fault.chat_id == params.get("chat_id"):
                del faults[i]
                parameters = {"retry_after": fault.retry_after} if fault.retry_after else None
                raise BotAPIError(fault.status, fault.description, parameters)

    # ------------------------------------------------------------------ methods

    def _me(self) -> dict[str, Any]:
        return {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": self.bot_first_name,
            "username": self.bot_username,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }

    async def _m_getMe(self, params: dict[str, Any]) -> Any:
        return self._me()

    async def _m_getFile(self, params: dict[str, Any]) -> Any:
        found = self._files.get(str(params.get("file_id", "")))
        if found is None:
            raise BotAPIError(400, "Bad Request: invalid file_id")
        path, data = found
        if len(data) > MAX_DOWNLOAD_BYTES:
            raise BotAPIError(400, "Bad Request: file is too big")
        file_id = str(params["file_id"])
        return {
            "file_id": file_id,
            "file_unique_id": f"U{file_id[3:9]}",
            "file_size": len(data),
            "file_path": path,
        }

    async def _download(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["token"] != self.token:
            return web.Response(status=401)
        path = request.match_info["path"]
        for stored_path, data in self._files.values():
            if stored_path == path:
                self.downloads.append(path)
                return web.Response(body=data, content_type="application/octet-stream")
        return web.Response(status=404, text="Not Found")

    async def _m_getUpdates(self, params: dict[str, Any]) -> Any:
        if self.webhook_url:
            raise BotAPIError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; use"
                " deleteWebhook to delete the webhook first",
            )
        offset = int(params.get("offset") or 0)
        limit = max(1, min(100, int(params.get("limit") or 100)))
        timeout = max(0.0, float(params.get("timeout") or 0))
        if offset < 0:
            keep = -offset
            while len(self._pending) > keep:
                self._pending.popleft()
        else:
            while self._pending and self._pending[0]["update_id"] < offset:
                self._pending.popleft()
        if not self._pending and timeout and not self._closing:
            self._update_event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._update_event.wait(), timeout)
        allowed = params.get("allowed_updates")
        result = list(itertools.islice(self._pending, limit))
        if allowed:
            result = [u for u in result if any(k in u for k in allowed)]
        return result

    async def _m_setWebhook(self, params: dict[str, Any]) -> Any:
        self.webhook_url = str(params.get("url") or "")
        self.webhook_secret = params.get("secret_token") or None
        if params.get("drop_pending_updates"):
            self._pending.clear()
        return True

    async def _m_deleteWebhook(self, params: dict[str, Any]) -> Any:
        self.webhook_url = ""
        self.webhook_secret = None
        if params.get("drop_pending_updates"):
            self._pending.clear()
        return True

    async def _m_getWebhookInfo(self, params: dict[str, Any]) -> Any:
        return {
            "url": self.webhook_url,
            "has_custom_certificate": False,
            "pending_update_count": len(self._pending) if not self.webhook_url else 0,
        }

    def _check_text(self, params: dict[str, Any], *, allow_empty: bool = False) -> str:
        raw = params.get("text") or ""
        parse_mode = params.get("parse_mode")
        visible = raw
        if parse_mode and str(parse_mode).lower() == "html":
            try:
                visible = parse_telegram_html(raw)
            except TelegramHTMLError as exc:
                raise BotAPIError(400, f"Bad Request: can't parse entities: {exc}") from None
        elif parse_mode:
            # MarkdownV2 and Markdown are not implemented: the bot sends HTML.
            raise BotAPIError(400, f"Bad Request: unsupported parse_mode {parse_mode!r} in fake")
        # Telegram trims the text it stores and shows.
        visible = visible.strip()
        if not visible and not allow_empty:
            raise BotAPIError(400, "Bad Request: message text is empty")
        if utf16_len(visible) > TELEGRAM_TEXT_LIMIT:
            raise BotAPIError(400, "Bad Request: message is too long")
        return visible

    def _chat_id(self, params: dict[str, Any]) -> int:
        chat_id = params.get("chat_id")
        if not isinstance(chat_id, int):
            raise BotAPIError(400, "Bad Request: chat not found")
        return chat_id

    def _message_object(self, chat_id: int, message_id: int) -> dict[str, Any] | None:
        if (chat_id, message_id) in self._user_messages:
            return self._user_messages[(chat_id, message_id)]
        sent = self._messages.get(chat_id, {}).get(message_id)
        if sent is None or sent.deleted:
            return None
        return self._bot_message_json(sent)

    def _chat_json(self, chat_id: int) -> dict[str, Any]:
        if chat_id > 0:
            return {"id": chat_id, "type": "private", "first_name": f"User{chat_id}"}
        return {"id": chat_id, "type": "supergroup", "title": f"Group {chat_id}"}

    def _bot_message_json(self, message: BotMessage) -> dict[str, Any]:
        data: dict[str, Any] = {
            "message_id": message.message_id,
            "date": message.date,
            "chat": self._chat_json(message.chat_id),
            "from": {
                k: v
                for k, v in self._me().items()
                if k in {"id", "is_bot", "first_name", "username"}
            },
            "text": message.text,
        }
        if message.edits:
            data["edit_date"] = int(time.time())
        if message.reply_markup:
            data["reply_markup"] = message.reply_markup
        return data

    async def _m_sendMessage(self, params: dict[str, Any]) -> Any:
        chat_id = self._chat_id(params)
        visible = self._check_text(params)
        reply_to = params.get("reply_to_message_id")
        if isinstance(params.get("reply_parameters"), dict):
            reply_to = params["reply_parameters"].get("message_id")
        message = BotMessage(
            message_id=next(self._message_ids[chat_id]),
            chat_id=chat_id,
            text=visible,
            raw_text=params.get("text") or "",
            parse_mode=params.get("parse_mode"),
            reply_markup=params.get("reply_markup"),
            reply_to_message_id=reply_to,
        )
        self._messages[chat_id][message.message_id] = message
        return self._bot_message_json(message)

    async def _m_sendPhoto(self, params: dict[str, Any]) -> Any:
        chat_id = self._chat_id(params)
        photo = params.get("photo")
        if isinstance(photo, str) and photo.startswith("attach://"):
            photo = params.get(photo.removeprefix("attach://"))  # the upload it names
        if not isinstance(photo, bytes) or not photo:
            raise BotAPIError(400, "Bad Request: there is no photo in the request")
        self.photos.append((chat_id, photo, str(params.get("caption") or "")))
        message = BotMessage(
            message_id=next(self._message_ids[chat_id]),
            chat_id=chat_id,
            text=str(params.get("caption") or ""),
            raw_text=str(params.get("caption") or ""),
            parse_mode=None,
            reply_markup=None,
            reply_to_message_id=None,
        )
        self._messages[chat_id][message.message_id] = message
        return self._bot_message_json(message)

    async def _m_sendMessageDraft(self, params: dict[str, Any]) -> Any:
        chat_id = self._chat_id(params)
        if chat_id <= 0:
            raise BotAPIError(400, "Bad Request: message drafts can be sent to private chats only")
        draft_id = params.get("draft_id")
        if not draft_id:
            raise BotAPIError(400, "Bad Request: draft_id must be non-zero")
        visible = self._check_text(params, allow_empty=True)
        self.drafts[(chat_id, int(draft_id))] = visible
        return True

    def _find_message(self, params: dict[str, Any], verb: str) -> BotMessage:
        chat_id = self._chat_id(params)
        message = self._messages.get(chat_id, {}).get(params.get("message_id"))  # type: ignore[arg-type]
        if message is None or message.deleted:
            raise BotAPIError(400, f"Bad Request: message to {verb} not found")
        return message

    async def _m_editMessageText(self, params: dict[str, Any]) -> Any:
        message = self._find_message(params, "edit")
        visible = self._check_text(params)
        markup = params.get("reply_markup")
        if visible == message.text and markup == message.reply_markup:
            raise BotAPIError(
                400,
                "Bad Request: message is not modified: specified new message content and reply"
                " markup are exactly the same as a current content and reply markup of the"
                " message",
            )
        message.text = visible
        message.raw_text = params.get("text") or ""
        message.parse_mode = params.get("parse_mode")
        message.reply_markup = markup
        message.edits += 1
        return self._bot_message_json(message)

    async def _m_editMessageReplyMarkup(self, params: dict[str, Any]) -> Any:
        message = self._find_message(params, "edit")
        markup = params.get("reply_markup")
        if markup == message.reply_markup:
            raise BotAPIError(
                400,
                "Bad Request: message is not modified: specified new message content and reply"
                " markup are exactly the same as a current content and reply markup of the"
                " message",
            )
        message.reply_markup = markup
        message.edits += 1
        return self._bot_message_json(message)

    async def _m_deleteMessage(self, params: dict[str, Any]) -> Any:
        chat_id = self._chat_id(params)
        message_id = params.get("message_id")
        message = self._messages.get(chat_id, {}).get(message_id)  # type: ignore[arg-type]
        if message is not None and not message.deleted:
            message.deleted = True
            return True
        if (chat_id, message_id) in self._user_messages:
            del self._user_messages[(chat_id, message_id)]  # type: ignore[arg-type]
            return True
        raise BotAPIError(400, "Bad Request: message to delete not found")

    async def _m_sendChatAction(self, params: dict[str, Any]) -> Any:
        self._chat_id(params)
        return True

    async def _m_answerCallbackQuery(self, params: dict[str, Any]) -> Any:
        if not params.get("callback_query_id"):
            raise BotAPIError(400, "Bad Request: query is too old and response timeout expired")
        return True

    async def _m_setMyCommands(self, params: dict[str, Any]) -> Any:
        self.commands[_scope_key(params)] = list(params.get("commands") or [])
        return True

    async def _m_getMyCommands(self, params: dict[str, Any]) -> Any:
        return self.commands.get(_scope_key(params), [])

    async def _m_deleteMyCommands(self, params: dict[str, Any]) -> Any:
        self.commands.pop(_scope_key(params), None)
        return True

    async def _m_close(self, params: dict[str, Any]) -> Any:
        return True

    async def _m_logOut(self, params: dict[str, Any]) -> Any:
        return True


def _scope_key(params: dict[str, Any]) -> str:
    scope = params.get("scope") or {"type": "default"}
    return f"{json.dumps(scope, sort_keys=True)}|{params.get('language_code') or ''}"


def _entities_for(text: str) -> list[dict[str, Any]]:
    entities: list[dict[str, Any]] = []
    command = re.match(r"/[A-Za-z0-9_]+(@[A-Za-z0-9_]+)?", text)
    if command:
        entities.append({"type": "bot_command", "offset": 0, "length": utf16_len(command.group())})
    for mention in re.finditer(r"(?<![\w/])@[A-Za-z0-9_]{3,}", text):
        entities.append(
            {
                "type": "mention",
                "offset": utf16_len(text[: mention.start()]),
                "length": utf16_len(mention.group()),
            }
        )
    return entities


async def _read_params(request: web.Request) -> dict[str, Any]:
    if request.content_type == "application/json":
        body = await request.json() if request.can_read_body else {}
        return dict(body)
    form = await request.post() if request.can_read_body else {}
    params: dict[str, Any] = dict(request.query)
    for key, value in form.items():
        if not isinstance(value, str):
            params[key] = value.file.read()  # an uploaded file (sendPhoto): its bytes
            continue
        if key in _JSON_PARAMS:
            try:
                params[key] = json.loads(value)
            except ValueError:
                params[key] = value  # e.g. chat_id "@channelname"
        else:
            params[key] = value
    return params


def _error_response(
    status: int, description: str, parameters: dict[str, Any] | None = None
) -> web.Response:
    body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if parameters:
        body["parameters"] = parameters
    return web.json_response(body, status=status)


def visible_text(raw: str, parse_mode: str | None) -> str:
    """What a chat shows for `raw` sent with `parse_mode` (HTML only); for test assertions."""
    return parse_telegram_html(raw) if parse_mode and parse_mode.lower() == "html" else raw


def joined_text(messages: Iterable[BotMessage]) -> str:
    """The visible texts of `messages` concatenated (for "arrived whole" assertions)."""
    return "".join(m.text for m in messages)


__all__ = [
    "TELEGRAM_TEXT_LIMIT",
    "BotAPIError",
    "BotMessage",
    "Call",
    "FakeTelegramServer",
    "TelegramHTMLError",
    "joined_text",
    "parse_telegram_html",
    "utf16_len",
    "visible_text",
]
