"""Confirm / Cancel before a single tool call whose list price is above CONFIRM_ABOVE_USD (design
section 10): the person sees the price and two buttons; no answer in CONFIRM_TIMEOUT_SECONDS counts
as Cancel; a cancelled call is not run, so it costs nothing. When the available balance (or the
person's /limit) cannot cover the call's hold, nothing is asked: the person is told so, and Claude
gets the tool error."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from typing import Any

import structlog
from aiogram import Bot
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

from bot.agent.tools.base import ToolContext
from bot.i18n import N_, _, format_money
from bot.services.controls import daily_limit_reply
from bot.services.ledger import DailyLimitReached, InsufficientBalance, Ledger
from bot.services.money import format_usd
from bot.services.pricing import PriceTable

log = structlog.get_logger(__name__)

CONFIRM_TIMEOUT_SECONDS = 120.0
CALLBACK_PREFIX = "confirm"
QUESTIONS = {"generate_image": N_("Making a {size} image costs {price}. Go ahead?")}
CONFIRMED = N_("Confirmed.")
CANCELLED = N_("Cancelled. Nothing was charged for it.")
TOO_LOW = N_(
    "Your balance is too low for a {size} image: it costs {price} ({hold} is set aside while it "
    "is made) and you have {available} available. Nothing was charged for it. "
    "You can top up with Telegram Stars: /buy"
)
TOO_LOW_IN_GROUP = N_(
    "Your balance is too low for a {size} image ({price}). Nothing was charged for it. "
    "Open a private chat with me and use /buy to add funds."
)
PAST_LIMIT_IN_GROUP = N_(
    "A {size} image ({price}) would pass your daily spending limit. Nothing was charged for it."
)


def _image_size(args: dict[str, Any]) -> str:
    return str(args.get("image_size") or "2K")


@dataclass
class _Pending:
    user_id: int
    answer: asyncio.Future[bool]


class TelegramToolConfirmation:
    def __init__(
        self,
        bot: Bot,
        *,
        prices: PriceTable,
        billing: Ledger,
        image_model: str,
        threshold_micros: int,
        timeout: float = CONFIRM_TIMEOUT_SECONDS,
    ) -> None:
        self._bot = bot
        self._prices = prices
        self._billing = billing
        self._image_model = image_model
        self._threshold = threshold_micros
        self._timeout = timeout
        self._pending: dict[str, _Pending] = {}

    def list_price(self, name: str, args: dict[str, Any]) -> tuple[int, str] | None:
        """(list price in micro-USD, what it buys) of a call, when it can be known in advance."""
        if name != "generate_image":
            return None
        size = _image_size(args)
        try:
            return self._prices.image_price(self._image_model, size), f"a {size} image"
        except (KeyError, ValueError, LookupError):
            return None

    async def check(self, name: str, args: dict[str, Any], ctx: ToolContext) -> str | None:
        priced = self.list_price(name, args)
        if priced is None or priced[0] <= self._threshold:
            return None
        list_price, what = priced
        user_price = self._billing.user_price(list_price)
        refused = await self._unaffordable(ctx, _image_size(args), user_price)
        if refused is not None:
            return refused
        price = format_money(user_price)
        question = _(QUESTIONS[name]).format(size=_image_size(args), price=price)
        if await self._ask(ctx, question, price):
            return None
        return (  # for Claude, not the person: English
            f"The person did not confirm {what} for {format_usd(user_price)} (cancelled, or no "
            f"answer within {int(self._timeout // 60)} minutes); it was not made and nothing was "
            "charged for it."
        )

    async def _unaffordable(self, ctx: ToolContext, size: str, user_price: int) -> str | None:
        """None when the balance and the daily limit cover the call's hold now; else the person
        is told (no question) and Claude gets why, in English."""
        hold = self._billing.user_price(self._prices.image_hold(self._image_model, size))
        try:
            await self._billing.check_hold(ctx.user_id, hold)
        except InsufficientBalance as exc:
            log.info("tool_confirmation_unaffordable", user_id=ctx.user_id, needed_micros=hold)
            in_group = ctx.chat_id != ctx.user_id
            await self._tell(ctx, _refusal_text(exc, size, user_price, hold, in_group))
            return _refusal_for_claude(exc, size, user_price, hold, in_group)
        return None

    async def _tell(self, ctx: ToolContext, text: str) -> None:
        try:
            await self._bot.send_message(ctx.chat_id, text, message_thread_id=ctx.message_thread_id)
        except Exception:
            log.warning("unaffordable_notice_failed", chat_id=ctx.chat_id)

    async def _ask(self, ctx: ToolContext, question: str, price: str) -> bool:
        token = secrets.token_hex(6)
        keyboard = InlineKeyboardMarkup(
            inline_keyboard=[
                [
                    InlineKeyboardButton(
                        text=_("Confirm ({price})").format(price=price),
                        callback_data=f"{CALLBACK_PREFIX}:{token}:y",
                    ),
                    InlineKeyboardButton(
                        text=_("Cancel"), callback_data=f"{CALLBACK_PREFIX}:{token}:n"
                    ),
                ]
            ]
        )
        answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending[token] = _Pending(ctx.user_id, answer)
        try:
            sent = await self._bot.send_message(
                ctx.chat_id,
                question,
                reply_markup=keyboard,
                message_thread_id=ctx.message_thread_id,
            )
            try:
                confirmed = await asyncio.wait_for(asyncio.shield(answer), self._timeout)
            except TimeoutError:
                confirmed = False
            await self._settle_message(ctx.chat_id, sent.message_id, question, confirmed)
        except Exception:
            log.exception("confirmation_failed", user_id=ctx.user_id)
            confirmed = False
        finally:
            self._pending.pop(token, None)
        log.info("tool_confirmation", user_id=ctx.user_id, confirmed=confirmed)
        return confirmed

    async def _settle_message(
        self, chat_id: int, message_id: int, question: str, confirmed: bool
    ) -> None:
        outcome = _(CONFIRMED if confirmed else CANCELLED)
        try:
            await self._bot.edit_message_text(
                f"{question}\n{outcome}", chat_id=chat_id, message_id=message_id
            )
        except Exception:
            log.warning("confirmation_edit_failed", chat_id=chat_id)

    def resolve(self, data: str, user_id: int) -> bool:
        """A press on Confirm or Cancel; False when it is stale or not this person's question."""
        parts = data.split(":")
        if len(parts) != 3 or parts[0] != CALLBACK_PREFIX:
            return False
        pending = self._pending.get(parts[1])
        if pending is None or pending.user_id != user_id or pending.answer.done():
            return False
        pending.answer.set_result(parts[2] == "y")
        return True


def _refusal_text(
    exc: InsufficientBalance, size: str, price: int, hold: int, in_group: bool
) -> str:
    """What the person reads; in a group, without their balance or limit."""
    limited = isinstance(exc, DailyLimitReached)
    if in_group:
        text = _(PAST_LIMIT_IN_GROUP if limited else TOO_LOW_IN_GROUP)
        return text.format(size=size, price=format_money(price))
    if isinstance(exc, DailyLimitReached):
        return daily_limit_reply(hold, exc.limit_micros, exc.available_micros)
    return _(TOO_LOW).format(
        size=size,
        price=format_money(price),
        hold=format_money(hold),
        available=format_money(exc.available_micros),
    )


def _refusal_for_claude(
    exc: InsufficientBalance, size: str, price: int, hold: int, in_group: bool
) -> str:
    """The tool error Claude sees (English); in a group it names no balance, as the chat does."""
    outcome = "It was not made and nothing was charged for it; the user has been told"
    if isinstance(exc, DailyLimitReached):
        reason = f"Daily spending limit reached: a {size} image needs {format_usd(hold)}"
        if not in_group:
            reason += (
                f" and {format_usd(exc.available_micros)} of the user's daily limit of "
                f"{format_usd(exc.limit_micros)} is left today"
            )
        return f"{reason}. {outcome} (they can change the limit with /limit)."
    reason = f"Insufficient balance: a {size} image costs {format_usd(price)}"
    if not in_group:
        reason += (
            f" ({format_usd(hold)} is reserved while it is made) and the user has "
            f"{format_usd(exc.available_micros)} available"
        )
    return f"{reason}. {outcome} (they can top up with /buy in a private chat)."
