"""Admin commands: /topup, /user, /stats. For anyone else they do not exist.

The admin check is a router-level filter, so a message from anyone who is not an admin (by the
numeric id of its sender; forwarded messages never count) falls through to the fallback router
and gets exactly the unknown-command reply.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

import structlog
from aiogram import Bot, Router
from aiogram.filters import Command, CommandObject
from aiogram.types import Message, Update

from bot.config import Settings, usd_to_micros
from bot.i18n import N_, _, format_money
from bot.services.ledger import Ledger, UnknownUserError
from bot.services.money import MICROS_PER_USD, format_usd
from bot.services.usage import GlobalStats, UsageReports, UserOverview

log = structlog.get_logger(__name__)

MAX_TOPUP_MICROS = 10_000 * MICROS_PER_USD
TOPUP_USAGE = N_(
    "Usage: /topup <user_id> <usd>, a positive amount up to $10000 (e.g. /topup 12345 5)"
)
USER_USAGE = N_("Usage: /user <user_id> (e.g. /user 12345)")
STATS_USAGE = N_("Usage: /stats (no arguments)")
_WINDOW_NAMES = {"today": N_("Today"), "7 days": N_("7 days"), "30 days": N_("30 days")}


async def is_admin(message: Message, settings: Settings) -> bool:
    """Only the sender's numeric id decides; a forwarded command is never an admin's.

    A coroutine, like every filter here: aiogram runs a plain function in a worker thread.
    """
    sender = message.from_user
    if sender is None or message.forward_origin is not None:
        return False
    return sender.id in settings.ADMIN_USER_IDS


async def is_private_chat(message: Message) -> bool:
    """Admin commands work in private chats only (design section 11)."""
    return message.chat.type == "private"


def parse_user_id(text: str) -> int | None:
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        return None
    user_id = int(text)
    return user_id if 0 < user_id < 2**63 else None


def parse_topup_micros(text: str) -> int | None:
    """Dollars as typed ("5", "2.50", "$0.134"): positive, at most six decimals, capped."""
    cleaned = text.removeprefix("$")
    if not cleaned.isascii() or not cleaned.replace(".", "", 1).isdigit():
        return None
    try:
        micros = usd_to_micros(Decimal(cleaned))
    except (InvalidOperation, ValueError):
        return None
    return micros if 0 < micros <= MAX_TOPUP_MICROS else None


def parse_topup_args(args: str | None) -> tuple[int, int] | None:
    parts = (args or "").split()
    if len(parts) != 2:
        return None
    user_id, micros = parse_user_id(parts[0]), parse_topup_micros(parts[1])
    if user_id is None or micros is None:
        return None
    return user_id, micros


def topup_notice(amount_micros: int, balance_micros: int) -> str:
    return _("Your balance was topped up by {amount}. New balance: {balance}.").format(
        amount=format_money(amount_micros), balance=format_money(balance_micros)
    )


def full_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def render_user(overview: UserOverview) -> str:
    names = [f"@{overview.username}" if overview.username else "", overview.first_name or ""]
    label = ", ".join(name for name in names if name)
    lines = [_("User {id}").format(id=overview.user_id) + (f" ({label})" if label else "")]
    balance = _("Balance: {amount}").format(amount=format_money(overview.available_micros))
    if overview.held_micros > 0:
        balance += " " + _("({amount} reserved)").format(amount=format_money(overview.held_micros))
    lines += [
        balance,
        _("Credited in total: {amount}").format(amount=format_money(overview.total_topups_micros)),
        _("Spent: {spent} (provider cost {cost})").format(
            spent=format_money(overview.total_spent_micros),
            cost=format_money(overview.total_provider_cost_micros),
        ),
        _("API calls: {calls}, images generated: {images}").format(
            calls=overview.api_calls, images=overview.images_generated
        ),
        _("Joined: {moment}").format(moment=full_time(overview.created_at)),
        _("Last activity: {moment}").format(moment=full_time(overview.last_activity_at)),
    ]
    if overview.uncollected_micros > 0:
        lines.append(
            f"Uncollected (cost beyond the balance): {format_usd(overview.uncollected_micros)}"
        )
    if overview.is_blocked:
        lines.append(_("Blocked: yes"))
    return "\n".join(lines)


def render_stats(stats: GlobalStats) -> str:
    lines = [_("Users: {count}").format(count=stats.users)]
    for window in stats.windows:
        margin = window.charged_micros - window.provider_cost_micros
        label = _(_WINDOW_NAMES.get(window.label, window.label.capitalize()))
        lines += [
            "",
            _("{window}: {calls} calls, {users} active users").format(
                window=label, calls=window.calls, users=window.active_users
            ),
            _("Charged {charged}, provider cost {cost}, margin {margin}").format(
                charged=format_money(window.charged_micros),
                cost=format_money(window.provider_cost_micros),
                margin=format_money(margin),
            ),
        ]
    return "\n".join(lines)


async def topup_handler(
    message: Message,
    command: CommandObject,
    event_update: Update,
    billing: Ledger,
    bot: Bot,
) -> None:
    assert message.from_user is not None
    parsed = parse_topup_args(command.args)
    if parsed is None:
        await message.answer(_(TOPUP_USAGE))
        return
    user_id, micros = parsed
    admin_id = message.from_user.id
    try:
        balance = await billing.topup(
            user_id,
            micros,
            key=f"topup:admin:{event_update.update_id}",
            admin_user_id=admin_id,
            description=f"top-up by admin {admin_id}",
        )
    except UnknownUserError:
        await message.answer(
            _("No user with id {id}. They need to message the bot first.").format(id=user_id)
        )
        return
    log.info("admin_topup", admin_user_id=admin_id, user_id=user_id, amount_micros=micros)
    notified = await notify_user(bot, user_id, topup_notice(micros, balance))
    reply = _("Topped up {id} by {amount}. New balance: {balance}.").format(
        id=user_id, amount=format_money(micros), balance=format_money(balance)
    )
    if not notified:
        reply += " " + _("(Could not notify them.)")
    await message.answer(reply)


async def notify_user(bot: Bot, user_id: int, text: str) -> bool:
    try:
        await bot.send_message(user_id, text)
    except Exception as exc:  # any shape of failure: the admin still gets the confirmation
        log.warning("topup_notice_failed", user_id=user_id, error=type(exc).__name__)
        return False
    return True


async def user_handler(message: Message, command: CommandObject, usage: UsageReports) -> None:
    parts = (command.args or "").split()
    user_id = parse_user_id(parts[0]) if len(parts) == 1 else None
    if user_id is None:
        await message.answer(_(USER_USAGE))
        return
    overview = await usage.user_overview(user_id)
    if overview is None:
        await message.answer(_("No user with id {id}.").format(id=user_id))
        return
    await message.answer(render_user(overview))


async def stats_handler(message: Message, command: CommandObject, usage: UsageReports) -> None:
    if command.args:
        await message.answer(_(STATS_USAGE))
        return
    await message.answer(render_stats(await usage.global_stats()))


def build_router() -> Router:
    """Include before the fallback router; its filter hides it from everyone but admins."""
    router = Router(name="admin")
    router.message.filter(is_admin, is_private_chat)
    router.message.register(topup_handler, Command("topup"))
    router.message.register(user_handler, Command("user"))
    router.message.register(stats_handler, Command("stats"))
    return router
