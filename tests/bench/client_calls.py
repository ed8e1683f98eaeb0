"""Benchmark: the bot's CPU per outgoing call, through the real clients, one call at a time.

    python -m tests.bench.client_calls [--calls 400] [--only sendMessage,stream]

The end-to-end benchmark (`e2e_load.py`) says what a message costs in all; this one says what
each kind of call inside it costs, steadily enough to compare two versions of the code (the VM's
speed drifts by 20-30 % within an hour, which hides a 10 % change end to end):

- model calls through the bot's `OpenAICompatibleProvider` (openai SDK on our aiohttp transport):
  a completion, a structured completion (schema + validation) and a 20-token stream, with a
  support-sized prompt (system prompt and 12 turns of history);
- Bot API calls through the bot's own `Bot` (`create_bot`: aiogram, JSON session, flood control):
  `sendMessage` with a rating keyboard, `sendChatAction`, `sendMessageDraft`.

The fake servers run in a separate process, so the figure is the client's CPU alone
(`time.process_time` of this process, best of `--repeat` batches). Nothing asserts: it prints.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel

Call = Callable[[], Awaitable[Any]]


def _serve(queue: Any) -> None:
    """The fake model and Bot API servers, in their own process."""
    from tests.fakes.llm_server import FakeLLMServer
    from tests.fakes.telegram_server import FakeTelegramServer

    async def main() -> None:
        llm = await FakeLLMServer().start()
        llm.script("bench/text", text="word " * 20)
        llm.script("bench/json", text='{"facts": ["likes tea", "lives in Oslo"]}')
        tg = await FakeTelegramServer().start()
        queue.put((llm.openrouter_base_url, tg.url, tg.token))
        await asyncio.Event().wait()

    asyncio.run(main())


class _Facts(BaseModel):
    facts: list[str]


async def _model_calls(base_url: str) -> tuple[dict[str, Call], Callable[[], Awaitable[None]]]:
    from bot.llm.openai_compat import OpenAICompatibleProvider, make_openai_client
    from bot.llm.types import ChatMessage

    client = make_openai_client(
        provider="openrouter", base_url=base_url, api_key="sk-bench", timeout=30, max_retries=0
    )
    text = OpenAICompatibleProvider(provider="openrouter", model="bench/text", client=client)
    json = OpenAICompatibleProvider(provider="openrouter", model="bench/json", client=client)
    prompt = [ChatMessage(role="system", content="You are a patient coach. " * 30)] + [
        ChatMessage(role="user" if i % 2 == 0 else "assistant", content="How was the week? " * 5)
        for i in range(12)
    ]

    async def complete() -> None:
        await text.complete(prompt)

    async def structured() -> None:
        await json.complete(prompt, schema=_Facts)

    async def stream() -> None:
        async for _ in text.stream(prompt):
            pass

    calls: dict[str, Call] = {"complete": complete, "structured": structured, "stream": stream}
    return calls, client.close


async def _bot_calls(api_base: str, token: str) -> tuple[dict[str, Call], Any]:
    from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

    from bot.config import load_settings
    from bot.telegram.dispatcher import create_bot

    bot = create_bot(
        load_settings(_env_file=None, telegram_bot_token=token, telegram_api_base=api_base)
    )
    keyboard = InlineKeyboardMarkup(
        inline_keyboard=[
            [
                InlineKeyboardButton(text="Good", callback_data="rate:1"),
                InlineKeyboardButton(text="Bad", callback_data="rate:0"),
            ]
        ]
    )
    text = "Here is what I would try this week: <b>one</b> small step at a time. " * 6

    async def send_message() -> None:
        await bot.send_message(chat_id=42, text=text, parse_mode="HTML", reply_markup=keyboard)

    async def send_chat_action() -> None:
        await bot.send_chat_action(chat_id=42, action="typing")

    async def send_draft() -> None:
        await bot.send_message_draft(chat_id=42, draft_id=1, text=text[:120])

    calls: dict[str, Call] = {
        "sendMessage": send_message,
        "sendChatAction": send_chat_action,
        "sendMessageDraft": send_draft,
    }
    return calls, bot.session.close


async def _measure(call: Call, calls: int, repeat: int) -> list[float]:
    for _ in range(min(50, calls)):  # warm-up: connections, caches, lazy imports
        await call()
    batches = []
    for _ in range(repeat):
        started = time.process_time()
        for _ in range(calls):
            await call()
        batches.append((time.process_time() - started) / calls * 1e6)
    return batches


async def run(calls: int, repeat: int, only: set[str] | None) -> dict[str, list[float]]:
    queue: Any = multiprocessing.get_context("spawn").Queue()
    server = multiprocessing.get_context("spawn").Process(target=_serve, args=(queue,), daemon=True)
    server.start()
    try:
        llm_url, tg_url, token = queue.get(timeout=30)
        model, close_model = await _model_calls(llm_url)
        telegram, close_bot = await _bot_calls(tg_url, token)
        results: dict[str, list[float]] = {}
        try:
            for name, call in {**model, **telegram}.items():
                if only and name not in only:
                    continue
                results[name] = await _measure(call, calls, repeat)
                best = min(results[name])
                runs = ", ".join(f"{value:.0f}" for value in results[name])
                print(f"{name:<17} {best:7.0f} us CPU per call   (batches: {runs})", flush=True)
        finally:
            await close_model()
            await close_bot()
        return results
    finally:
        server.kill()
        server.join()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=400, help="calls per batch")
    parser.add_argument("--repeat", type=int, default=3, help="batches; the best is shown")
    parser.add_argument("--only", help="comma-separated call names")
    args = parser.parse_args(argv)
    only = set(args.only.split(",")) if args.only else None
    print(f"client CPU per call, best of {args.repeat} x {args.calls} calls (servers elsewhere)")
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        asyncio.run(run(args.calls, args.repeat, only))
    else:
        uvloop.run(run(args.calls, args.repeat, only))


if __name__ == "__main__":
    sys.exit(main())
