"""/limit and /receipts: the person's own spending controls."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from aiogram import Router
from aiogram.filters import Command, CommandObject
from aiogram.types import CallbackQuery, Message

from bot.config import usd_to_micros
from bot.i18n import N_, _, format_moment, format_money
from bot.services.controls import MAX_DAILY_LIMIT_MICROS, ControlsService, DailyLimit
from bot.telegram.confirm import CALLBACK_PREFIX as CONFIRM_PREFIX
from bot.telegram.confirm import TelegramToolConfirmation
from bot.telegram.private import answer_privately

LIMIT_USAGE = N_(
    "Send /limit <dollars> to cap what you spend per day (UTC), e.g. /limit 2 or /limit 0.50; "
    "/limit off removes it."
)
RECEIPTS_USAGE = N_(
    "Send /receipts on to get the exact charge after each answer, /receipts off to stop."
)
RECEIPTS_ON = N_("Receipts on: after each answer I'll tell you exactly what it cost.")
RECEIPTS_OFF = N_("Receipts off. /balance and /usage still list every charge.")
EXPIRED = N_("This question has expired.")


def describe_limit(limit: DailyLimit) -> str:
    spent = format_money(limit.spent_micros)
    if limit.limit_micros is None or limit.left_micros is None:
        return _("No daily limit. Spent today (UTC): {spent}. {usage}").format(
            spent=spent, usage=_(LIMIT_USAGE)
        )
    return _(
        "Daily limit: {limit}. Spent today: {spent}; left: {left}. It resets at 00:00 UTC "
        "({resets} UTC). /limit off removes it."
    ).format(
        limit=format_money(limit.limit_micros),
        spent=spent,
        left=format_money(limit.left_micros),
        resets=format_moment(limit.resets_at),
    )


def parse_limit(arg: str) -> int | None:
    """Micro-USD of "/limit <usd>"; raises ValueError for anything else."""
    try:
        amount = Decimal(arg.strip().removeprefix("$"))
    except InvalidOperation:
        raise ValueError(arg) from None
    if not amount.is_finite() or amount <= 0:
        raise ValueError(arg)
    micros = usd_to_micros(amount)
    if micros > MAX_DAILY_LIMIT_MICROS:
        raise ValueError(arg)
    return micros


async def limit_handler(
    message: Message, command: CommandObject, controls: ControlsService
) -> None:
    assert message.from_user is not None
    user_id = message.from_user.id
    arg = (command.args or "").strip().lower()
    if not arg:
        limit = await controls.daily_limit(user_id)
    elif arg == "off":
        limit = await controls.set_daily_limit(user_id, None)
    else:
        try:
            micros = parse_limit(arg)
        except ValueError:
            await message.answer(_(LIMIT_USAGE))
            return
        limit = await controls.set_daily_limit(user_id, micros)
    await answer_privately(message, describe_limit(limit))  # what was spent: not for a group


async def receipts_handler(
    message: Message, command: CommandObject, controls: ControlsService
) -> None:
    assert message.from_user is not None
    arg = (command.args or "").strip().lower()
    if arg not in ("on", "off"):
        await message.answer(_(RECEIPTS_USAGE))
        return
    await controls.set_receipts(message.from_user.id, arg == "on")
    await message.answer(_(RECEIPTS_ON) if arg == "on" else _(RECEIPTS_OFF))


async def confirm_button_handler(
    query: CallbackQuery, confirmations: TelegramToolConfirmation
) -> None:
    taken = confirmations.resolve(query.data or "", query.from_user.id)
    await query.answer(None if taken else _(EXPIRED))


async def is_confirm_button(query: CallbackQuery) -> bool:
    """A coroutine: aiogram runs a filter that is a plain function in a worker thread."""
    return (query.data or "").startswith(f"{CONFIRM_PREFIX}:")


def build_router() -> Router:
    router = Router(name="controls")
    router.message.register(limit_handler, Command("limit"))
    router.message.register(receipts_handler, Command("receipts"))
    router.callback_query.register(confirm_button_handler, is_confirm_button)
    return router
