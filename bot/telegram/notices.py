"""After a turn: the one-line receipt (/receipts on) and the low-balance notice with a /buy button."""

from __future__ import annotations

import structlog
from aiogram import Bot
from aiogram.exceptions import TelegramForbiddenError
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

from bot.i18n import _, format_money
from bot.services.controls import ControlsService, TurnEnd

log = structlog.get_logger(__name__)

BUY_MENU_CALLBACK = "buymenu"


def receipt_line(end: TurnEnd) -> str:
    return _("Charged {charged} for this answer · balance {balance}").format(
        charged=format_money(end.charged_micros), balance=format_money(end.available_micros)
    )


def low_balance_text(end: TurnEnd, threshold_micros: int) -> str:
    return _(
        "Your balance is low: {available} left (below {threshold}). "
        "Top up with Telegram Stars to keep going."
    ).format(available=format_money(end.available_micros), threshold=format_money(threshold_micros))


def buy_button() -> InlineKeyboardMarkup:
    """The /buy button under the low-balance notice, in the person's language."""
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [InlineKeyboardButton(text=_("Top up with Stars"), callback_data=BUY_MENU_CALLBACK)]
        ]
    )


class TelegramTurnNotices:
    def __init__(self, bot: Bot, controls: ControlsService, *, low_balance_micros: int) -> None:
        self._bot = bot
        self._controls = controls
        self._low = low_balance_micros

    async def begin(self, user_id: int) -> int | None:
        try:
            return await self._controls.turn_mark(user_id)
        except Exception:
            log.exception("turn_mark_failed", user_id=user_id)
            return None

    async def charged(self, user_id: int, mark: int) -> int | None:
        try:
            return await self._controls.charged_since(user_id, mark)
        except Exception:
            log.exception("turn_charged_failed", user_id=user_id)
            return None

    async def settle(self, user_id: int, mark: int) -> TurnEnd | None:
        """The turn's charges and the balance after it, in one statement (None: unreadable)."""
        try:
            return await self._controls.turn_end(user_id, mark)
        except Exception:
            log.exception("turn_end_failed", user_id=user_id)
            return None

    async def tell(self, user_id: int, chat_id: int, end: TurnEnd) -> None:
        """The receipt and the low-balance notice name the balance: they go to the person's
        private chat, also after a turn in a group (`chat_id`)."""
        try:
            if end.receipts and end.charged_micros > 0:
                await self._bot.send_message(user_id, receipt_line(end))
            if end.low_balance:
                log.info("low_balance_notice", user_id=user_id, available=end.available_micros)
                await self._bot.send_message(
                    user_id, low_balance_text(end, self._low), reply_markup=buy_button()
                )
        except TelegramForbiddenError:  # no private chat with them (yet): the group hears nothing
            log.info("turn_notices_not_delivered", user_id=user_id, chat_id=chat_id)
        except Exception:
            log.exception("turn_notices_failed", user_id=user_id)
