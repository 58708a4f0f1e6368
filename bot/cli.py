"""Operator commands: `python -m bot admin report|topup|stars-reconcile` and `python -m bot migrate`.

With no command at all, `python -m bot` runs the bot itself (long polling until Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from datetime import timedelta
from decimal import Decimal, InvalidOperation

import click
from click.exceptions import Exit

from bot.config import (
    ConfigurationError,
    OperatorSettings,
    TelegramOperatorSettings,
    load_operator_settings,
    load_telegram_operator_settings,
    usd_to_micros,
)
from bot.db.lifecycle import database
from bot.db.session import create_sessionmaker
from bot.logs import configure_logging
from bot.services.income import income_by_day, render_income
from bot.services.ledger import Ledger, UnknownUserError
from bot.services.money import format_usd
from bot.services.payments import PaymentsConfig, PaymentService
from bot.services.reports import admin_report, render_report_csv, render_table

MAX_TOPUP_USD = Decimal(10_000)
MAX_USER_ID = 2**63 - 1  # Postgres BIGINT, the type of every Telegram id column
MICRO_DECIMALS = 6


class _Command(click.Command):
    """In a group's command list, the whole first sentence of the help (click cuts it short)."""

    def get_short_help_str(self, limit: int = 45) -> str:
        return super().get_short_help_str(limit=sys.maxsize)


class _Group(_Command, click.Group):
    """Commands listed in the order they are defined (click sorts them by name)."""

    command_class = _Command
    group_class = type

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


@click.group(cls=_Group, no_args_is_help=True, help=__doc__.replace("\n\n", "\n\n\b\n", 1))
def cli() -> None:
    pass


def _settings(*, telegram: bool = False) -> OperatorSettings:
    try:
        settings = load_telegram_operator_settings() if telegram else load_operator_settings()
    except ConfigurationError as exc:
        click.echo(str(exc), err=True)
        raise Exit(2) from None
    configure_logging(log_format=settings.LOG_FORMAT, level="WARNING")
    return settings


@cli.command()
def migrate() -> None:
    """Apply database migrations (the bot also does this at start-up)."""

    async def _run() -> None:
        async with database(_settings()):
            click.echo("Database is at the latest revision.")

    asyncio.run(_run())


@cli.group(no_args_is_help=True)
def admin() -> None:
    """Cost review and balance administration."""


@admin.command("report")
@click.option(
    "--days",
    type=click.IntRange(1, 3650),
    default=30,
    show_default=True,
    help="Window in days",
)
@click.option(
    "--csv",
    is_flag=True,
    help="CSV instead of a table: the per-day table, a blank line, then the per-user table",
)
def report(days: int, csv: bool) -> None:
    """Costs per user and per day, provider cost against what users were charged, and Stars
    income against provider cost per day."""

    async def _run() -> str:
        async with database(_settings()) as engine:
            sessionmaker = create_sessionmaker(engine)
            result = await admin_report(sessionmaker, days)
            income = await income_by_day(sessionmaker, days, now=result.generated_at)
        if csv:
            return render_report_csv(result)
        return render_table(result) + "\n" + render_income(income)

    click.echo(asyncio.run(_run()))


# ignore_unknown_options: an amount like "-5" must reach _parse_usd (and its message), not be
# rejected by click as an unknown option.
@admin.command("topup", context_settings={"ignore_unknown_options": True})
@click.argument("user_id", help="Telegram user id")
@click.argument("usd", help="Amount in dollars, e.g. 5 or 2.50")
def topup(user_id: str, usd: str) -> None:
    """Credit a user's balance (a ledger row; the user sees it in /balance)."""
    user = _parse_user_id(user_id)
    micros = _parse_usd(usd)
    settings = _settings()

    async def _run() -> int:
        async with database(settings) as engine:
            billing = Ledger(
                create_sessionmaker(engine),
                markup=settings.PRICE_MARKUP,
                hold_ttl=timedelta(seconds=settings.HOLD_TTL_SECONDS),
            )
            return await billing.topup(
                user,
                micros,
                key=f"topup:cli:{uuid.uuid4()}",
                description="top-up from the command line",
            )

    try:
        balance = asyncio.run(_run())
    except UnknownUserError:
        click.echo(f"No user {user}: a person must write to the bot once first.", err=True)
        raise Exit(2) from None
    click.echo(f"Credited {format_usd(micros)} to {user}; balance is now {format_usd(balance)}.")


def _fail(message: str) -> Exit:
    click.echo(message, err=True)
    return Exit(2)


def _parse_user_id(text: str) -> int:
    """A Telegram user id that fits the database's BIGINT; anything else is one clear line."""
    stripped = text.strip()
    if not stripped.isascii() or not stripped.isdigit() or not 1 <= int(stripped) <= MAX_USER_ID:
        raise _fail(
            f"The user id must be a Telegram user id, a whole number from 1 to {MAX_USER_ID} "
            f"(got {text[:40]!r})."
        )
    return int(stripped)


@admin.command("stars-reconcile")
def stars_reconcile() -> None:
    """Compare Telegram's Star transactions with the database: credit payments it lacks, record
    refunds made outside the bot, and finish refunds left in progress (the bot also does this
    every STARS_RECONCILE_INTERVAL_SECONDS)."""
    from aiogram import Bot
    from aiogram.client.session.aiohttp import AiohttpSession
    from aiogram.client.telegram import TelegramAPIServer

    from bot.telegram.stars import TelegramStars

    settings = _settings(telegram=True)
    assert isinstance(settings, TelegramOperatorSettings)

    async def _run() -> str:
        api = (
            TelegramAPIServer.from_base(settings.TELEGRAM_API_URL)
            if settings.TELEGRAM_API_URL
            else None
        )
        session = AiohttpSession(api=api) if api else AiohttpSession()
        bot = Bot(settings.TELEGRAM_BOT_TOKEN.get_secret_value(), session=session)
        try:
            async with database(settings) as engine:
                payments = PaymentService(
                    create_sessionmaker(engine), PaymentsConfig.from_settings(settings)
                )
                report = await payments.reconcile(TelegramStars(bot))
        finally:
            await bot.session.close()
        return (
            f"Checked {report.transactions} Star transaction(s): credited {report.credited} "
            f"missing payment(s), recorded {report.external_refunds} refund(s) made outside "
            f"the bot, finished {report.resumed_refunds} interrupted refund(s)."
        )

    click.echo(asyncio.run(_run()))


def _parse_usd(text: str) -> int:
    usage = f"The amount must be a positive number of dollars up to {MAX_TOPUP_USD}, e.g. 5 or 2.50"
    try:
        amount = Decimal(text.strip().removeprefix("$"))
    except InvalidOperation:
        raise _fail(f"{usage} (got {text[:40]!r}).") from None
    if not amount.is_finite() or amount <= 0 or amount > MAX_TOPUP_USD:
        raise _fail(f"{usage} (got {text[:40]!r}).")
    try:
        return usd_to_micros(amount)
    except ValueError:
        raise _fail(
            f"The amount has at most {MICRO_DECIMALS} decimal places (one micro-dollar); "
            f"got {text[:40]!r}."
        ) from None


def run_cli(argv: list[str]) -> int:
    try:
        cli.main(args=argv, prog_name="python -m bot")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)


if __name__ == "__main__":
    sys.exit(run_cli(sys.argv[1:]))
