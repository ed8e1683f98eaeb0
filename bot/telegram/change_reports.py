"""Sends the change reports (`bot.observatory.reports`) to every admin, with a "Roll back" button.

Started and stopped with the dispatcher (`BackgroundLoop`). Every `CHECK_EVERY` seconds it asks
which reports are due; each is claimed in the database first, so with several replicas one of
them sends it.
"""

from __future__ import annotations

import html
import logging

from aiogram import Bot
from aiogram.exceptions import TelegramAPIError
from aiogram.filters.callback_data import CallbackData
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

from bot.observatory.reports import ChangeReport, ChangeReports
from bot.telegram.background import BackgroundLoop

log = logging.getLogger(__name__)

CHECK_EVERY = 60.0


class RollBack(CallbackData, prefix="rollback"):
    """The report's button: undo `change` (a history line id) of `target`, as /rollback does."""

    change: int
    target: str


def rollback_keyboard(report: ChangeReport) -> InlineKeyboardMarkup:
    assert report.change.id is not None
    data = RollBack(change=report.change.id, target=report.target).pack()
    return InlineKeyboardMarkup(
        inline_keyboard=[[InlineKeyboardButton(text="Roll back", callback_data=data)]]
    )


class ChangeReportSender(BackgroundLoop):
    name = "change reports"

    def __init__(self, reports: ChangeReports, admin_ids: list[int]) -> None:
        super().__init__()
        self.reports = reports
        self.admin_ids = admin_ids

    @property
    def interval(self) -> float:
        return CHECK_EVERY

    def enabled(self) -> bool:
        return bool(self.admin_ids)

    async def round(self, bot: Bot) -> int:
        return await self.send_due(bot)

    async def send_due(self, bot: Bot) -> int:
        """Send the reports due now; how many."""
        reports = await self.reports.due()
        for report in reports:
            text = f"<pre>{html.escape(report.text, quote=False)}</pre>"
            for admin in self.admin_ids:
                try:
                    await bot.send_message(
                        admin, text, parse_mode="HTML", reply_markup=rollback_keyboard(report)
                    )
                except TelegramAPIError as exc:
                    log.warning("change report to admin %s not sent: %s", admin, exc)
        return len(reports)
