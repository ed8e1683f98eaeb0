"""`/stats [agent] [1h|24h|7d|30d]` (admins): the call ledger's figures. (`/usage`, which reads
the ledger too, is with the budgets: `bot.telegram.routers.budget`.)

The figures are `bot.observatory`'s; this file parses, asks and answers. `/stats <agent>` also
sends the chart (a PNG photo). Without the ledger (LEDGER_ENABLED=false) both say so.
"""

from __future__ import annotations

import logging

from aiogram.filters import CommandObject
from aiogram.types import BufferedInputFile, Message

from bot.app import Services
from bot.observatory.stats import StatsArgsError, parse_stats_args
from bot.storage.repositories import StorageError
from bot.telegram.routers.common import send_pre

log = logging.getLogger(__name__)

LEDGER_OFF = "The call ledger is off (LEDGER_ENABLED=false): no figures are recorded."
READ_FAILED = "The database did not answer. Please try again in a minute."


async def on_stats(message: Message, command: CommandObject, services: Services) -> None:
    if services.ledger is None or services.stats is None:
        await message.answer(LEDGER_OFF)
        return
    try:
        query = parse_stats_args(command.args)
    except StatsArgsError as exc:
        await message.answer(str(exc))
        return
    try:
        text = await services.stats.report(query)
    except StorageError as exc:
        log.error("/stats: the ledger could not be read: %s", exc)
        await message.answer(READ_FAILED)
        return
    await send_pre(message, text)
    if query.agent is not None:
        try:
            png = await services.stats.chart(query)
        except StorageError as exc:
            log.error("/stats %s: the chart's figures could not be read: %s", query.agent, exc)
            return
        await message.answer_photo(
            BufferedInputFile(png, filename=f"stats-{query.agent}-{query.window}.png"),
            caption=f"{query.agent}, last {query.window}: p95 latency and cost per turn",
        )
