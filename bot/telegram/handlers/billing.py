"""/balance and /usage: what a user has, and what they spent it on."""

from __future__ import annotations

from datetime import UTC, datetime

from aiogram import Router
from aiogram.filters import Command
from aiogram.types import Message

from bot.services.billing import BalanceView, BillingService, Operation, UsageSummary
from bot.services.reports import format_usd

RECENT_OPERATIONS = 10
USAGE_DAYS = 30

_KIND_NAMES = {
    "starter": "Welcome credit",
    "topup": "Top-up",
    "refund": "Refund",
    "adjustment": "Adjustment",
}
_PURPOSE_NAMES = {
    "chat": "Chat",
    "analyze_image": "Image analysis",
    "generate_image": "Image generation",
    "transcribe": "Voice transcription",
    "read_document": "Document reading",
}
_USAGE_ORDER = ("chat", "analyze_image", "generate_image", "transcribe", "read_document")
_IMAGE_PURPOSES = ("analyze_image", "generate_image")


def operation_name(operation: Operation) -> str:
    """The kind of a ledger row in plain words; a charge is named after what it paid for."""
    if operation.kind == "charge":
        purpose = (operation.description or "").split(" ", 1)[0]
        return _PURPOSE_NAMES.get(purpose, "Charge")
    return _KIND_NAMES.get(operation.kind, operation.kind.capitalize())


def signed_usd(micros: int) -> str:
    return f"+{format_usd(micros)}" if micros > 0 else format_usd(micros)


def short_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%d %b %H:%M")


def render_balance(balance: BalanceView, operations: list[Operation]) -> str:
    lines = [f"Your balance: {format_usd(balance.available_micros)}"]
    if balance.held_micros > 0:
        lines.append(f"Reserved for work in progress: {format_usd(balance.held_micros)}")
    if not operations:
        lines += ["", "No operations yet."]
        return "\n".join(lines)
    lines += ["", "Recent operations (UTC):"]
    lines += [
        f"{short_time(op.created_at)} · {operation_name(op)} · {signed_usd(op.amount_micros)}"
        for op in operations
    ]
    return "\n".join(lines)


def render_usage(summary: UsageSummary) -> str:
    by_purpose = {line.purpose: line for line in summary.lines}
    lines = [f"Spending in the last {summary.days} days:"]
    for purpose in _USAGE_ORDER:
        line = by_purpose.get(purpose)
        spent = format_usd(line.charged_micros if line else 0)
        text = f"• {_PURPOSE_NAMES[purpose]}: {spent}"
        if purpose in _IMAGE_PURPOSES:
            images = line.images if line else 0
            text += f" ({images} image{'' if images == 1 else 's'})"
        lines.append(text)
    lines.append(f"Total: {format_usd(summary.total_charged_micros)}")
    return "\n".join(lines)


async def balance_handler(message: Message, billing: BillingService) -> None:
    assert message.from_user is not None
    user_id = message.from_user.id
    balance = await billing.get_balance(user_id)
    operations = await billing.recent_operations(user_id, limit=RECENT_OPERATIONS)
    await message.answer(render_balance(balance, operations))


async def usage_handler(message: Message, billing: BillingService) -> None:
    assert message.from_user is not None
    summary = await billing.usage_summary(message.from_user.id, days=USAGE_DAYS)
    await message.answer(render_usage(summary))


def build_router() -> Router:
    router = Router(name="billing")
    router.message.register(balance_handler, Command("balance"))
    router.message.register(usage_handler, Command("usage"))
    return router
