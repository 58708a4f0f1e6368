"""/balance and /usage: what a user has, and what they spent it on (from a group: privately)."""

from __future__ import annotations

from datetime import datetime

from aiogram import Router
from aiogram.filters import Command
from aiogram.types import Message

from bot.i18n import N_, _, format_moment, format_money, ngettext
from bot.services.ledger import BalanceView, Ledger, Operation
from bot.services.usage import UsageReports, UsageSummary
from bot.telegram.private import answer_privately

RECENT_OPERATIONS = 10
USAGE_DAYS = 30

_KIND_NAMES = {
    "starter": N_("Welcome credit"),
    "topup": N_("Top-up"),
    "refund": N_("Refund"),
    "adjustment": N_("Adjustment"),
}
_PURPOSE_NAMES = {
    "chat": N_("Chat"),
    "analyze_image": N_("Image analysis"),
    "generate_image": N_("Image generation"),
    "transcribe": N_("Voice transcription"),
    "read_document": N_("Document reading"),
}
_CHARGE = N_("Charge")
_USAGE_ORDER = ("chat", "analyze_image", "generate_image", "transcribe", "read_document")
_IMAGE_PURPOSES = ("analyze_image", "generate_image")


def operation_name(operation: Operation) -> str:
    """The kind of a ledger row in plain words; a charge is named after what it paid for."""
    if operation.kind == "charge":
        purpose = (operation.description or "").split(" ", 1)[0]
        return _(_PURPOSE_NAMES.get(purpose, _CHARGE))
    kind = _KIND_NAMES.get(operation.kind)
    return _(kind) if kind else operation.kind.capitalize()


def signed_usd(micros: int) -> str:
    return f"+{format_money(micros)}" if micros > 0 else format_money(micros)


def short_time(moment: datetime) -> str:
    return format_moment(moment)


def render_balance(balance: BalanceView, operations: list[Operation]) -> str:
    lines = [_("Your balance: {amount}").format(amount=format_money(balance.available_micros))]
    if balance.held_micros > 0:
        lines.append(
            _("Reserved for work in progress: {amount}").format(
                amount=format_money(balance.held_micros)
            )
        )
    if not operations:
        lines += ["", _("No operations yet.")]
        return "\n".join(lines)
    lines += ["", _("Recent operations (UTC):")]
    lines += [
        f"{short_time(op.created_at)} · {operation_name(op)} · {signed_usd(op.amount_micros)}"
        for op in operations
    ]
    return "\n".join(lines)


def render_usage(summary: UsageSummary) -> str:
    by_purpose = {line.purpose: line for line in summary.lines}
    lines = [_("Spending in the last {days} days:").format(days=summary.days)]
    for purpose in _USAGE_ORDER:
        line = by_purpose.get(purpose)
        spent = format_money(line.charged_micros if line else 0)
        text = f"• {_(_PURPOSE_NAMES[purpose])}: {spent}"
        if purpose in _IMAGE_PURPOSES:
            images = line.images if line else 0
            text += " " + ngettext("({count} image)", "({count} images)", images).format(
                count=images
            )
        lines.append(text)
    lines.append(_("Total: {amount}").format(amount=format_money(summary.total_charged_micros)))
    return "\n".join(lines)


async def balance_handler(message: Message, billing: Ledger) -> None:
    assert message.from_user is not None
    user_id = message.from_user.id
    balance = await billing.get_balance(user_id)
    operations = await billing.recent_operations(user_id, limit=RECENT_OPERATIONS)
    await answer_privately(message, render_balance(balance, operations))


async def usage_handler(message: Message, usage: UsageReports) -> None:
    assert message.from_user is not None
    summary = await usage.usage_summary(message.from_user.id, days=USAGE_DAYS)
    await answer_privately(message, render_usage(summary))


def build_router() -> Router:
    router = Router(name="billing")
    router.message.register(balance_handler, Command("balance"))
    router.message.register(usage_handler, Command("usage"))
    return router
