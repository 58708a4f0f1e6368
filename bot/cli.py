"""Operator commands: `python -m bot admin report|topup` and `python -m bot migrate`."""

from __future__ import annotations

import asyncio
import sys
import uuid
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Annotated

import typer

from bot.config import ConfigurationError, OperatorSettings, load_operator_settings, usd_to_micros
from bot.db.lifecycle import database
from bot.db.session import create_sessionmaker
from bot.logs import configure_logging
from bot.services.billing import BillingService
from bot.services.reports import admin_report, format_usd, render_csv, render_table

MAX_TOPUP_USD = Decimal(10_000)

cli = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
admin = typer.Typer(no_args_is_help=True, help="Cost review and balance administration.")
cli.add_typer(admin, name="admin")


def _settings() -> OperatorSettings:
    try:
        settings = load_operator_settings()
    except ConfigurationError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    configure_logging(log_format=settings.LOG_FORMAT, level="WARNING")
    return settings


@cli.command()
def migrate() -> None:
    """Apply database migrations (the bot also does this at start-up)."""

    async def _run() -> None:
        async with database(_settings()):
            typer.echo("Database is at the latest revision.")

    asyncio.run(_run())


@admin.command("report")
def report(
    days: Annotated[int, typer.Option(min=1, max=3650, help="Window in days")] = 30,
    csv: Annotated[bool, typer.Option("--csv", help="CSV instead of a table")] = False,
) -> None:
    """Costs per user and per day, provider cost against what users were charged."""

    async def _run() -> str:
        async with database(_settings()) as engine:
            result = await admin_report(create_sessionmaker(engine), days)
        return render_csv(result) if csv else render_table(result)

    typer.echo(asyncio.run(_run()))


@admin.command("topup", context_settings={"ignore_unknown_options": True})
def topup(
    user_id: Annotated[int, typer.Argument(help="Telegram user id")],
    usd: Annotated[str, typer.Argument(help="Amount in dollars, e.g. 5 or 2.50")],
) -> None:
    """Credit a user's balance (a ledger row; the user sees it in /balance)."""
    micros = _parse_usd(usd)
    settings = _settings()

    async def _run() -> int:
        async with database(settings) as engine:
            billing = BillingService(
                create_sessionmaker(engine),
                markup=settings.PRICE_MARKUP,
                hold_ttl=timedelta(seconds=settings.HOLD_TTL_SECONDS),
            )
            return await billing.topup(
                user_id,
                micros,
                key=f"topup:cli:{uuid.uuid4()}",
                description="top-up from the command line",
            )

    balance = asyncio.run(_run())
    typer.echo(f"Credited {format_usd(micros)} to {user_id}; balance is now {format_usd(balance)}.")


def _parse_usd(text: str) -> int:
    try:
        amount = Decimal(text.strip().removeprefix("$"))
        if not amount.is_finite() or amount <= 0 or amount > MAX_TOPUP_USD:
            raise ValueError
        return usd_to_micros(amount)
    except (InvalidOperation, ValueError):
        typer.echo(
            f"The amount must be a positive number of dollars up to {MAX_TOPUP_USD}, "
            "e.g. 5 or 2.50.",
            err=True,
        )
        raise typer.Exit(2) from None


def run_cli(argv: list[str]) -> int:
    try:
        cli(args=argv, prog_name="python -m bot")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(sys.argv[1:]))
