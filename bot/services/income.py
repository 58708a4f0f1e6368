"""Stars income per UTC day against provider cost: the operator's margin (design section 10).

Income is what purchases credited, net of refunds (`admin_payments`), in Stars and in USD at
STAR_VALUE_USD; provider cost is what the providers billed that day (`admin_daily_costs`); the
margin is income minus provider cost. Balances bought but not yet spent are income too, so a day's
margin is what that day's cash flow left, not the profit of that day's usage."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.services.money import format_usd_exact


@dataclass(frozen=True, slots=True)
class IncomeRow:
    day: date
    payments: int
    stars: int
    refunds: int
    refunded_stars: int
    income_micros: int  # credited minus refunded
    charged_micros: int
    provider_cost_micros: int

    @property
    def net_stars(self) -> int:
        return self.stars - self.refunded_stars

    @property
    def margin_micros(self) -> int:
        return self.income_micros - self.provider_cost_micros


_INCOME_SQL = text(
    """
    WITH days AS (
        SELECT day FROM admin_payments WHERE day >= :since
        UNION SELECT day FROM admin_daily_costs WHERE day >= :since
    ), costs AS (
        SELECT day, SUM(provider_cost_usd) AS provider_cost_usd, SUM(charged_usd) AS charged_usd
        FROM admin_daily_costs WHERE day >= :since GROUP BY day
    )
    SELECT d.day,
           COALESCE(p.payments, 0) AS payments, COALESCE(p.stars, 0) AS stars,
           COALESCE(p.refunds, 0) AS refunds, COALESCE(p.refunded_stars, 0) AS refunded_stars,
           ((COALESCE(p.credited_usd, 0) - COALESCE(p.refunded_usd, 0)) * 1000000)::bigint
               AS income_micros,
           (COALESCE(c.charged_usd, 0) * 1000000)::bigint AS charged_micros,
           (COALESCE(c.provider_cost_usd, 0) * 1000000)::bigint AS provider_cost_micros
    FROM days d
    LEFT JOIN admin_payments p ON p.day = d.day
    LEFT JOIN costs c ON c.day = d.day
    ORDER BY d.day
    """
)


async def income_by_day(
    sessionmaker: async_sessionmaker[AsyncSession], days: int, *, now: datetime | None = None
) -> tuple[IncomeRow, ...]:
    since = (now or datetime.now(UTC)).astimezone(UTC).date() - timedelta(days=days - 1)
    async with sessionmaker() as session:
        rows = (await session.execute(_INCOME_SQL, {"since": since})).all()
    return tuple(IncomeRow(*(r[0], *(int(v) for v in r[1:]))) for r in rows)


HEADER = (
    "day",
    "payments",
    "stars",
    "refunds",
    "refunded_stars",
    "net_stars",
    "income",
    "charged",
    "provider_cost",
    "margin",
)


def _cells(row: IncomeRow) -> list[str]:
    return [
        row.day.isoformat(),
        str(row.payments),
        str(row.stars),
        str(row.refunds),
        str(row.refunded_stars),
        str(row.net_stars),
        format_usd_exact(row.income_micros),
        format_usd_exact(row.charged_micros),
        format_usd_exact(row.provider_cost_micros),
        format_usd_exact(row.margin_micros),
    ]


def render_income(rows: Sequence[IncomeRow]) -> str:
    """Aligned text: one line per day and a total line."""
    total = IncomeRow(
        date.min,
        *(sum(getattr(r, name) for r in rows) for name in IncomeRow.__slots__[1:]),
    )
    lines = [list(HEADER), *(_cells(r) for r in rows), ["sum", *_cells(total)[1:]]]
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER))]
    out = [
        "  ".join(
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i])
            for i, cell in enumerate(line)
        )
        for line in lines
    ]
    return (
        "Stars income per day (income = credited - refunded, at STAR_VALUE_USD)\n"
        + "\n".join(out)
        + "\n"
    )
