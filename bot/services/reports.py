"""Admin cost reports from the database views."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.services.money import MICROS_PER_USD, format_usd_exact, usd_decimal


def _micros(usd: Decimal | None) -> int:
    """Dollars from a view (NUMERIC) back to exact micro-USD."""
    if usd is None:
        return 0
    micros = usd * MICROS_PER_USD
    if micros != micros.to_integral_value():
        raise ValueError("view returned a fraction of a micro-USD")
    return int(micros)


@dataclass(frozen=True, slots=True)
class UserCostRow:
    user_id: int
    username: str | None
    calls: int
    images: int
    provider_cost_micros: int
    charged_micros: int
    balance_micros: int
    total_topups_micros: int
    last_activity_at: datetime | None

    @property
    def margin_micros(self) -> int:
        return self.charged_micros - self.provider_cost_micros


@dataclass(frozen=True, slots=True)
class DailyCostRow:
    day: date
    provider: str
    model: str
    purpose: str
    calls: int
    failed_calls: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    images: int
    provider_cost_micros: int
    charged_micros: int

    @property
    def margin_micros(self) -> int:
        return self.charged_micros - self.provider_cost_micros


@dataclass(frozen=True, slots=True)
class ReportTotals:
    calls: int
    failed_calls: int
    images: int
    provider_cost_micros: int
    charged_micros: int

    @property
    def margin_micros(self) -> int:
        return self.charged_micros - self.provider_cost_micros


@dataclass(frozen=True, slots=True)
class AdminReport:
    days: int
    since: date
    generated_at: datetime
    users: tuple[UserCostRow, ...]
    daily: tuple[DailyCostRow, ...]
    totals: ReportTotals


# Users with calls in the window, and users topped up in it without a call (so an operator can
# confirm a top-up in the report).
_USERS_SQL = text(
    """
    WITH calls AS (
        SELECT user_id,
               COUNT(*) AS calls,
               COALESCE(SUM(image_count)
                        FILTER (WHERE purpose = 'generate_image' AND status = 'ok'), 0) AS images,
               COALESCE(SUM(provider_cost_micros), 0) AS provider_cost_micros,
               COALESCE(SUM(charged_micros), 0) AS charged_micros
        FROM api_calls
        WHERE (created_at AT TIME ZONE 'UTC')::date >= :since
        GROUP BY user_id
    ), topped_up AS (
        SELECT DISTINCT user_id
        FROM balance_operations
        WHERE kind = 'topup'
          AND (created_at AT TIME ZONE 'UTC')::date >= :since
          AND created_at <= :until
    )
    SELECT v.user_id,
           v.username,
           COALESCE(c.calls, 0) AS calls,
           COALESCE(c.images, 0) AS images,
           COALESCE(c.provider_cost_micros, 0) AS provider_cost_micros,
           COALESCE(c.charged_micros, 0) AS charged_micros,
           v.balance_usd,
           v.total_topups_usd,
           v.last_activity_at
    FROM admin_user_costs v
    LEFT JOIN calls c ON c.user_id = v.user_id
    WHERE c.user_id IS NOT NULL OR v.user_id IN (SELECT user_id FROM topped_up)
    ORDER BY charged_micros DESC, v.user_id
    """
)

_DAILY_SQL = text(
    """
    SELECT day, provider, model, purpose, calls, failed_calls, input_tokens, output_tokens,
           cache_read_tokens, cache_write_tokens, images, provider_cost_usd, charged_usd
    FROM admin_daily_costs
    WHERE day >= :since
    ORDER BY day, provider, model, purpose
    """
)


async def admin_report(
    sessionmaker: async_sessionmaker[AsyncSession], days: int, *, now: datetime | None = None
) -> AdminReport:
    """Costs of the last `days` UTC days (today included): per active user, per day, totals."""
    if days < 1:
        raise ValueError("days must be at least 1")
    generated_at = now or datetime.now(UTC)
    since = generated_at.astimezone(UTC).date() - timedelta(days=days - 1)
    async with sessionmaker() as session:
        user_rows = (
            await session.execute(_USERS_SQL, {"since": since, "until": generated_at})
        ).all()
        daily_rows = (await session.execute(_DAILY_SQL, {"since": since})).all()
    users = tuple(
        UserCostRow(
            user_id=r.user_id,
            username=r.username,
            calls=int(r.calls),
            images=int(r.images),
            provider_cost_micros=int(r.provider_cost_micros),
            charged_micros=int(r.charged_micros),
            balance_micros=_micros(r.balance_usd),
            total_topups_micros=_micros(r.total_topups_usd),
            last_activity_at=r.last_activity_at,
        )
        for r in user_rows
    )
    daily = tuple(
        DailyCostRow(
            day=r.day,
            provider=r.provider,
            model=r.model,
            purpose=r.purpose,
            calls=int(r.calls),
            failed_calls=int(r.failed_calls),
            input_tokens=int(r.input_tokens),
            output_tokens=int(r.output_tokens),
            cache_read_tokens=int(r.cache_read_tokens),
            cache_write_tokens=int(r.cache_write_tokens),
            images=int(r.images),
            provider_cost_micros=_micros(r.provider_cost_usd),
            charged_micros=_micros(r.charged_usd),
        )
        for r in daily_rows
    )
    return AdminReport(
        days=days,
        since=since,
        generated_at=generated_at,
        users=users,
        daily=daily,
        totals=_totals(daily),
    )


def _totals(daily: Sequence[DailyCostRow]) -> ReportTotals:
    return ReportTotals(
        calls=sum(row.calls for row in daily),
        failed_calls=sum(row.failed_calls for row in daily),
        images=sum(row.images for row in daily),
        provider_cost_micros=sum(row.provider_cost_micros for row in daily),
        charged_micros=sum(row.charged_micros for row in daily),
    )


_USER_HEADER = (
    "user_id",
    "username",
    "calls",
    "images",
    "provider_cost",
    "charged",
    "margin",
    "balance",
)
_DAILY_HEADER = (
    "day",
    "provider",
    "model",
    "purpose",
    "calls",
    "failed",
    "input_tok",
    "output_tok",
    "cache_read_tok",
    "cache_write_tok",
    "images",
    "provider_cost",
    "charged",
    "margin",
)


def _user_cells(row: UserCostRow, money: _Money) -> list[str]:
    return [
        str(row.user_id),
        row.username or "",
        str(row.calls),
        str(row.images),
        money(row.provider_cost_micros),
        money(row.charged_micros),
        money(row.margin_micros),
        money(row.balance_micros),
    ]


def _daily_cells(row: DailyCostRow, money: _Money) -> list[str]:
    return [
        row.day.isoformat(),
        row.provider,
        row.model,
        row.purpose,
        str(row.calls),
        str(row.failed_calls),
        str(row.input_tokens),
        str(row.output_tokens),
        str(row.cache_read_tokens),
        str(row.cache_write_tokens),
        str(row.images),
        money(row.provider_cost_micros),
        money(row.charged_micros),
        money(row.margin_micros),
    ]


def _totals_cells(totals: ReportTotals, money: _Money) -> list[str]:
    return [
        "total",
        "",
        "",
        "",
        str(totals.calls),
        str(totals.failed_calls),
        "",
        "",
        "",
        "",
        str(totals.images),
        money(totals.provider_cost_micros),
        money(totals.charged_micros),
        money(totals.margin_micros),
    ]


class _Money:
    """Formats micro-USD for one renderer."""

    def __init__(self, *, dollar_sign: bool) -> None:
        self._dollar_sign = dollar_sign

    def __call__(self, micros: int) -> str:
        return format_usd_exact(micros) if self._dollar_sign else str(usd_decimal(micros))


def render_table(report: AdminReport) -> str:
    """Aligned plain text; money with six decimals ("$0.134000")."""
    money = _Money(dollar_sign=True)
    title = (
        f"Costs for {report.days} day(s) since {report.since.isoformat()} "
        f"(UTC, generated {report.generated_at.astimezone(UTC):%Y-%m-%d %H:%M})"
    )
    users = _align([list(_USER_HEADER), *(_user_cells(r, money) for r in report.users)])
    daily_rows = [_daily_cells(r, money) for r in report.daily]
    daily = _align([list(_DAILY_HEADER), *daily_rows, _totals_cells(report.totals, money)])
    return "\n".join([title, "", "Per user", *users, "", "Per day", *daily]) + "\n"


def render_csv(report: AdminReport) -> str:
    """One CSV table per day, provider, model and purpose, then a total row; dollars as numbers."""
    money = _Money(dollar_sign=False)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(_DAILY_HEADER)
    writer.writerows(_daily_cells(row, money) for row in report.daily)
    writer.writerow(_totals_cells(report.totals, money))
    return buffer.getvalue()


def render_users_csv(report: AdminReport) -> str:
    """The per-user part of the report as CSV; dollars as numbers."""
    money = _Money(dollar_sign=False)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(_USER_HEADER)
    writer.writerows(_user_cells(row, money) for row in report.users)
    return buffer.getvalue()


def render_report_csv(report: AdminReport) -> str:
    """Both tables as CSV, per day (with its total row) then per user, a blank line between."""
    return render_csv(report) + "\n" + render_users_csv(report)


def _align(rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned text columns, right-aligned number columns (the header row follows its
    column)."""
    columns = range(len(rows[0]))
    widths = [max(len(row[i]) for row in rows) for i in columns]
    numeric = [all(_is_number(row[i]) for row in rows[1:] if row[i]) for i in columns]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(widths[i]) if numeric[i] else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def _is_number(cell: str) -> bool:
    return cell.lstrip("-$").replace(".", "", 1).isdigit()
