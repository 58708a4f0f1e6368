"""The read side of billing: spend per person, the admin's user overview, global statistics and
the reconciliation check. Reads only, in plain SQL (aggregates over api_calls and the ledger);
the ledger (bot/services/ledger/) writes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker


@dataclass(frozen=True, slots=True)
class UsageLine:
    purpose: str
    calls: int
    charged_micros: int
    images: int


@dataclass(frozen=True, slots=True)
class UsageSummary:
    days: int
    lines: tuple[UsageLine, ...]

    @property
    def total_charged_micros(self) -> int:
        return sum(line.charged_micros for line in self.lines)


@dataclass(frozen=True, slots=True)
class UserOverview:
    user_id: int
    username: str | None
    first_name: str | None
    is_blocked: bool
    balance_micros: int
    held_micros: int
    total_topups_micros: int
    total_spent_micros: int
    total_provider_cost_micros: int
    api_calls: int
    images_generated: int
    created_at: datetime
    last_activity_at: datetime
    uncollected_micros: int = 0

    @property
    def available_micros(self) -> int:
        return self.balance_micros - self.held_micros


@dataclass(frozen=True, slots=True)
class StatsWindow:
    label: str
    since: datetime
    calls: int
    active_users: int
    charged_micros: int
    provider_cost_micros: int


@dataclass(frozen=True, slots=True)
class GlobalStats:
    users: int
    windows: tuple[StatsWindow, ...]


_USER_OVERVIEW_SQL = text(
    """
    SELECT u.id, u.username, u.first_name, u.is_blocked, u.balance_micros, u.held_micros,
           u.created_at,
           COALESCE((SELECT SUM(amount_micros) FROM balance_operations o
                     WHERE o.user_id = u.id AND o.kind IN ('topup', 'starter')), 0) AS topups,
           COALESCE(c.charged, 0) AS charged,
           COALESCE(c.provider_cost, 0) AS provider_cost,
           COALESCE(c.calls, 0) AS calls,
           COALESCE(c.images, 0) AS images,
           COALESCE(c.uncollected, 0) AS uncollected,
           GREATEST(u.last_seen_at, c.last_call_at) AS last_activity_at
    FROM users u
    LEFT JOIN LATERAL (
        SELECT SUM(charged_micros) AS charged,
               SUM(provider_cost_micros) AS provider_cost,
               SUM(uncollected_micros) AS uncollected,
               COUNT(*) AS calls,
               SUM(image_count) FILTER (WHERE purpose = 'generate_image' AND status = 'ok')
                   AS images,
               MAX(created_at) AS last_call_at
        FROM api_calls WHERE user_id = u.id
    ) c ON true
    WHERE u.id = :user_id
    """
)

_USAGE_SQL = text(
    """
    SELECT purpose, COUNT(*) AS calls, COALESCE(SUM(charged_micros), 0) AS charged,
           COALESCE(SUM(image_count) FILTER (WHERE status = 'ok'), 0) AS images
    FROM api_calls
    WHERE user_id = :user_id AND created_at >= now() - CAST(:window AS interval)
    GROUP BY purpose ORDER BY purpose
    """
)

_IMAGES_SINCE_SQL = text(
    """
    SELECT COUNT(*) FROM api_calls
    WHERE user_id = :user_id AND purpose = 'generate_image' AND status = 'ok'
      AND created_at >= :since
    """
)

_WINDOW_SQL = text(
    """
    SELECT COUNT(*) AS calls,
           COUNT(DISTINCT user_id) AS active_users,
           COALESCE(SUM(charged_micros), 0) AS charged,
           COALESCE(SUM(provider_cost_micros), 0) AS provider_cost
    FROM api_calls
    WHERE created_at >= :since AND created_at <= :until
    """
)


class UsageReports:
    """Reads for /usage, the admin's /user and /stats, and reconciliation."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker

    async def usage_summary(self, user_id: int, days: int = 30) -> UsageSummary:
        """Spend per purpose over the last `days` days."""
        window = timedelta(days=days)
        async with self._sessionmaker() as session:
            rows = await session.execute(_USAGE_SQL, {"user_id": user_id, "window": window})
            lines = tuple(
                UsageLine(purpose=p, calls=int(c), charged_micros=int(ch), images=int(i))
                for p, c, ch, i in rows
            )
        return UsageSummary(days=days, lines=lines)

    async def user_overview(self, user_id: int) -> UserOverview | None:
        """The admin's /user view; None for an unknown user."""
        async with self._sessionmaker() as session:
            row = (await session.execute(_USER_OVERVIEW_SQL, {"user_id": user_id})).first()
        if row is None:
            return None
        return UserOverview(
            user_id=row.id,
            username=row.username,
            first_name=row.first_name,
            is_blocked=row.is_blocked,
            balance_micros=row.balance_micros,
            held_micros=row.held_micros,
            total_topups_micros=int(row.topups),
            total_spent_micros=int(row.charged),
            total_provider_cost_micros=int(row.provider_cost),
            api_calls=int(row.calls),
            images_generated=int(row.images),
            created_at=row.created_at,
            last_activity_at=row.last_activity_at,
            uncollected_micros=int(row.uncollected),
        )

    async def global_stats(self, now: datetime | None = None) -> GlobalStats:
        """Users, and calls, spend and provider cost today (UTC), in 7 and in 30 days."""
        moment = (now or datetime.now(UTC)).astimezone(UTC)
        starts = (
            ("today", moment.replace(hour=0, minute=0, second=0, microsecond=0)),
            ("7 days", moment - timedelta(days=7)),
            ("30 days", moment - timedelta(days=30)),
        )
        async with self._sessionmaker() as session:
            users = int(await session.scalar(text("SELECT COUNT(*) FROM users")) or 0)
            windows = []
            for label, since in starts:
                row = (await session.execute(_WINDOW_SQL, {"since": since, "until": moment})).one()
                windows.append(
                    StatsWindow(
                        label=label,
                        since=since,
                        calls=int(row.calls),
                        active_users=int(row.active_users),
                        charged_micros=int(row.charged),
                        provider_cost_micros=int(row.provider_cost),
                    )
                )
        return GlobalStats(users=users, windows=tuple(windows))

    async def reconcile(self) -> list[int]:
        """Ids of users whose balance or held amount disagrees with the ledger and holds."""
        async with self._sessionmaker() as session:
            rows = await session.execute(
                text("SELECT user_id FROM admin_balance_mismatches ORDER BY user_id")
            )
            return [int(user_id) for (user_id,) in rows]


class ImageRateLimit:
    """Generated images per user in the last hour, counted from api_calls."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], *, per_hour: int) -> None:
        self._sessionmaker = sessionmaker
        self._per_hour = per_hour

    @property
    def per_hour(self) -> int:
        return self._per_hour

    async def allows(self, user_id: int) -> bool:
        since = datetime.now(UTC) - timedelta(hours=1)
        arguments = {"user_id": user_id, "since": since}
        async with self._sessionmaker() as session:
            count = int(await session.scalar(_IMAGES_SINCE_SQL, arguments) or 0)
        return count < self._per_hour
