"""The prepaid balance: ledger writes, holds around provider calls, and the reads behind /balance.

Model: `users.balance_micros` is the settled balance and always equals the sum of the user's
ledger rows (`balance_operations`); `users.held_micros` is the sum of open holds; available =
balance - held. A hold moves no money (no ledger row); capturing it writes one 'charge' row;
releasing or expiring it writes nothing.

Every public method is its own short transaction. Balance changes are single conditional
UPDATEs (no read-modify-write in Python), and each ledger row is inserted with
`ON CONFLICT (idempotency_key) DO NOTHING` in the same transaction as its balance change; a
conflict rolls the whole transaction back, so a key applies at most once. Lock order is always
hold rows first, then the user row, which keeps concurrent settles, releases and the sweeper
free of deadlocks.

The two calls every chat turn makes first try a single statement (`_HOLD`, `_CAPTURE`): it does
the whole common case atomically or changes nothing, and anything else (a repeated key, too
little balance, a hold no longer open) falls through to the transactions below, which decide it.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Literal

import structlog
from sqlalchemy import func, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.direct import DirectSQL, UniqueViolation
from bot.db.models import ApiCall, BalanceHold, BalanceOperation, User
from bot.services.controls import SPENT_TODAY_SQL
from bot.services.pricing import apply_markup
from bot.services.reports import format_usd

log = structlog.get_logger(__name__)

CallStatus = Literal["ok", "error", "blocked", "cancelled"]
CHARGED_STATUSES = ("ok", "cancelled")  # a stopped stream is charged for what it streamed
ERROR_TEXT_LIMIT = 2000


class BillingError(Exception):
    """Base of the billing errors callers may want to handle."""


class InsufficientBalance(BillingError):
    def __init__(self, needed_micros: int, available_micros: int) -> None:
        self.needed_micros = needed_micros
        self.available_micros = available_micros
        super().__init__(
            f"Insufficient balance: this needs {format_usd(needed_micros)}, "
            f"available {format_usd(available_micros)}."
        )


class DailyLimitReached(InsufficientBalance):
    """The person's own daily spend limit (/limit) leaves less than this hold needs."""

    def __init__(self, needed_micros: int, limit_micros: int, left_micros: int) -> None:
        self.limit_micros = limit_micros
        InsufficientBalance.__init__(self, needed_micros, left_micros)
        self.args = (
            f"Daily spending limit reached: this needs {format_usd(needed_micros)}, "
            f"{format_usd(left_micros)} of today's {format_usd(limit_micros)} is left.",
        )

    def __str__(self) -> str:
        return str(self.args[0])


class UnknownUserError(BillingError):
    def __init__(self, user_id: int) -> None:
        self.user_id = user_id
        super().__init__(f"No user with id {user_id}.")


class HoldNotOpenError(BillingError):
    """The hold key was used before and that hold is already captured, released or expired."""

    def __init__(self, key: str, status: str) -> None:
        self.key = key
        self.status = status
        super().__init__(f"Hold {key!r} is already {status}.")


class IdempotencyConflictError(BillingError):
    """An idempotency key was reused for a different user."""


@dataclass(frozen=True, slots=True)
class Hold:
    id: int
    user_id: int
    amount_micros: int
    key: str


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One provider call, as stored in api_calls. `charge_key` defaults to the hold's key."""

    user_id: int
    provider: Literal["anthropic", "google", "openai"]
    model: str
    purpose: Literal["chat", "analyze_image", "generate_image", "transcribe", "read_document"]
    status: CallStatus
    provider_cost_micros: int = 0
    price_version: str | None = None
    tool_use_id: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_tokens: int = 0
    cache_read_tokens: int = 0
    image_count: int = 0
    image_size: str | None = None
    image_output_tokens: int = 0
    image_list_price_micros: int | None = None
    web_search_requests: int = 0
    web_fetch_requests: int = 0
    error: str | None = None
    provider_cost_unknown: bool = False
    request_id: str | None = None
    duration_ms: int = 0
    charge_key: str | None = None


@dataclass(frozen=True, slots=True)
class Settlement:
    """Outcome of settle(); `applied` is False when the hold was already settled or the charge
    key already used (nothing changed then)."""

    api_call_id: int | None
    charged_micros: int
    provider_cost_micros: int
    balance_micros: int
    applied: bool


@dataclass(frozen=True, slots=True)
class BalanceView:
    balance_micros: int
    held_micros: int
    available_micros: int


@dataclass(frozen=True, slots=True)
class Operation:
    id: int
    kind: str
    amount_micros: int
    balance_after_micros: int
    description: str | None
    created_at: datetime


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


_API_CALL_COLUMNS = (
    "provider",
    "model",
    "purpose",
    "tool_use_id",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "image_count",
    "image_size",
    "image_output_tokens",
    "image_list_price_micros",
    "web_search_requests",
    "web_fetch_requests",
    "provider_cost_micros",
    "price_version",
    "status",
    "error",
    "provider_cost_unknown",
    "request_id",
    "duration_ms",
)

# Reserve and record the hold in one statement; no row when the balance is too low or the user
# is unknown, a unique violation when the key was used: either way nothing changed.
_WITHIN_DAILY_LIMIT = (
    "(daily_limit_micros IS NULL OR daily_limit_micros - held_micros - ("
    + SPENT_TODAY_SQL.format(user="users.id")
    + ") >= {amount})"
)
_HOLD = f"""
    WITH reserved AS (
        UPDATE users SET held_micros = held_micros + $2
        WHERE id = $1 AND balance_micros - held_micros >= $2
          AND {_WITHIN_DAILY_LIMIT.format(amount="$2")}
        RETURNING id
    )
    INSERT INTO balance_holds (user_id, amount_micros, idempotency_key, description, expires_at)
    SELECT id, $2, $3, $4, now() + $5::interval FROM reserved
    RETURNING id
"""

# Capture an open hold: close it, record the call, move the balance and append the ledger row,
# in one statement. No row when the hold is not open (or not this amount and user); a unique
# violation when the charge key was used. Either way nothing changed.
_CAPTURE = f"""
    WITH closed AS (
        UPDATE balance_holds
        SET status = 'captured', captured_micros = $3, settled_at = now()
        WHERE id = $1 AND user_id = $2 AND status = 'held' AND amount_micros = $4
        RETURNING user_id
    ), call AS (
        INSERT INTO api_calls (user_id, charged_micros, {", ".join(_API_CALL_COLUMNS)})
        SELECT user_id, $3, {", ".join(f"${n}" for n in range(7, 7 + len(_API_CALL_COLUMNS)))}
        FROM closed
        RETURNING id
    ), moved AS (
        UPDATE users SET balance_micros = balance_micros - $3, held_micros = held_micros - $4
        WHERE id = (SELECT user_id FROM closed)
        RETURNING balance_micros
    ), posted AS (
        INSERT INTO balance_operations
            (user_id, kind, amount_micros, balance_after_micros, idempotency_key, api_call_id,
             description)
        SELECT $2, 'charge', -$3, moved.balance_micros, $5, call.id, $6 FROM moved, call
        RETURNING id
    )
    SELECT call.id AS api_call_id, moved.balance_micros FROM call, moved, posted
"""


def _api_call_values(call: CallRecord) -> list[object]:
    """The call's api_calls columns, in `_API_CALL_COLUMNS` order."""
    values = {name: getattr(call, name) for name in _API_CALL_COLUMNS if name != "error"}
    values["error"] = call.error[:ERROR_TEXT_LIMIT] if call.error else None
    return [values[name] for name in _API_CALL_COLUMNS]


class BillingService:
    """Holds, captures and ledger writes; each method commits its own short transaction."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        markup: Decimal,
        hold_ttl: timedelta,
    ) -> None:
        if markup < 1:
            raise ValueError("markup below 1 would charge less than the provider cost")
        self._sessionmaker = sessionmaker
        self._sql = DirectSQL.of(sessionmaker)
        self._markup = markup
        self._hold_ttl = hold_ttl

    @property
    def markup(self) -> Decimal:
        return self._markup

    def user_price(self, provider_cost_micros: int) -> int:
        """What the user pays for a provider cost; hold this much before the call."""
        return apply_markup(provider_cost_micros, self._markup)

    # Ledger writes

    async def credit_starter(self, user_id: int, amount_micros: int) -> bool:
        """Credit the starter balance once per user; False when it was credited before."""
        if amount_micros <= 0:
            return False
        async with self._sessionmaker() as session:
            balance = await self._post(
                session,
                user_id=user_id,
                kind="starter",
                amount_micros=amount_micros,
                key=f"starter:{user_id}",
                description="starter balance",
            )
            if balance is None:
                return False
            await session.commit()
        log.info("starter_credited", user_id=user_id, amount_micros=amount_micros)
        return True

    async def topup(
        self,
        user_id: int,
        amount_micros: int,
        *,
        key: str,
        admin_user_id: int | None = None,
        description: str | None = None,
    ) -> int:
        """Credit the balance once per key; returns the balance afterwards."""
        if amount_micros <= 0:
            raise ValueError("a top-up must be positive")
        async with self._sessionmaker() as session:
            balance = await self._post(
                session,
                user_id=user_id,
                kind="topup",
                amount_micros=amount_micros,
                key=key,
                admin_user_id=admin_user_id,
                description=description,
            )
            if balance is None:
                log.info("topup_duplicate", user_id=user_id, key=key)
                return await self._current_balance(session, user_id)
            await session.commit()
        log.info("topup_applied", user_id=user_id, amount_micros=amount_micros, key=key)
        return balance

    async def adjust(
        self,
        user_id: int,
        amount_micros_signed: int,
        *,
        key: str,
        admin_user_id: int,
        description: str,
    ) -> int:
        """Admin correction; a negative one needs that much available balance."""
        if amount_micros_signed == 0:
            raise ValueError("an adjustment must not be zero")
        async with self._sessionmaker() as session:
            balance = await self._post(
                session,
                user_id=user_id,
                kind="adjustment",
                amount_micros=amount_micros_signed,
                key=key,
                admin_user_id=admin_user_id,
                description=description,
            )
            if balance is None:
                log.info("adjustment_duplicate", user_id=user_id, key=key)
                return await self._current_balance(session, user_id)
            await session.commit()
        log.info(
            "adjustment_applied",
            user_id=user_id,
            amount_micros=amount_micros_signed,
            admin_user_id=admin_user_id,
            key=key,
        )
        return balance

    # Holds

    async def hold(
        self, user_id: int, amount_micros: int, *, key: str, description: str | None = None
    ) -> Hold:
        """Reserve `amount_micros` of the available balance; the same open key returns the same
        hold. Raises InsufficientBalance, HoldNotOpenError or UnknownUserError."""
        if amount_micros <= 0:
            raise ValueError("a hold must be positive")
        hold_id = await self._hold_in_one_statement(user_id, amount_micros, key, description)
        if hold_id is not None:
            log.debug("hold_placed", user_id=user_id, amount_micros=amount_micros, key=key)
            return Hold(id=hold_id, user_id=user_id, amount_micros=amount_micros, key=key)
        async with self._sessionmaker() as session:
            hold_id = await self._insert_hold(session, user_id, amount_micros, key, description)
            if hold_id is None:
                return await self._existing_hold(session, user_id, key)
            reserved = await session.execute(
                update(User)
                .where(
                    User.id == user_id,
                    User.balance_micros - User.held_micros >= amount_micros,
                    text(_WITHIN_DAILY_LIMIT.format(amount=":amount")).bindparams(
                        amount=amount_micros
                    ),
                )
                .values(held_micros=User.held_micros + amount_micros)
                .returning(User.id)
                .execution_options(synchronize_session=False)
            )
            if reserved.first() is None:
                await session.rollback()
                available = (await self._balance_view(session, user_id)).available_micros
                if available >= amount_micros:
                    raise await self._daily_limit_reached(session, user_id, amount_micros)
                log.info(
                    "hold_insufficient_balance",
                    user_id=user_id,
                    needed_micros=amount_micros,
                    available_micros=available,
                )
                raise InsufficientBalance(amount_micros, available)
            await session.commit()
        log.debug("hold_placed", user_id=user_id, amount_micros=amount_micros, key=key)
        return Hold(id=hold_id, user_id=user_id, amount_micros=amount_micros, key=key)

    async def settle(self, hold: Hold, call: CallRecord) -> Settlement:
        """Record the call and capture its cost (x markup, capped at the hold) if it succeeded,
        or release the hold if it did not; one transaction."""
        if call.user_id != hold.user_id:
            raise ValueError("the call and the hold belong to different users")
        captured = await self._capture_in_one_statement(hold, call)
        if captured is not None:
            return captured
        async with self._sessionmaker() as session:
            status, amount = await self._lock_hold(session, hold.id)
            if status == "held":
                settlement = await self._settle_open_hold(session, hold, amount, call)
                if settlement is not None:
                    await session.commit()
                    return settlement
                await session.rollback()
                await self._release_in(session, hold.id, reason="charge_key_already_used")
                await session.commit()
                return await self._already_settled(session, hold, call)
            if status == "expired":
                return await self._record_after_expiry(session, hold, call)
            await session.rollback()
            log.info("settle_duplicate", hold_id=hold.id, status=status)
            return await self._already_settled(session, hold, call)

    async def release(self, hold: Hold, *, reason: str) -> bool:
        """Release an open hold without a call record; False if it was not open any more."""
        async with self._sessionmaker() as session:
            released = await self._release_in(session, hold.id, reason=reason)
            await session.commit()
        return released

    async def record_call(self, call: CallRecord) -> int:
        """An api_calls row for a call that had no hold (nothing is charged)."""
        async with self._sessionmaker() as session:
            api_call_id = await self._insert_call(session, call, charged_micros=0)
            await session.commit()
        return api_call_id

    async def expire_stale_holds(self, now: datetime | None = None) -> int:
        """Expire open holds past their expiry and give their amounts back; returns how many."""
        cutoff = now if now is not None else func.now()
        async with self._sessionmaker() as session:
            stale = (
                select(BalanceHold.id)
                .where(BalanceHold.status == "held", BalanceHold.expires_at <= cutoff)
                .with_for_update(skip_locked=True)
                .scalar_subquery()
            )
            expired = (
                await session.execute(
                    update(BalanceHold)
                    .where(BalanceHold.id.in_(stale), BalanceHold.status == "held")
                    .values(status="expired", settled_at=func.now())
                    .returning(BalanceHold.user_id, BalanceHold.amount_micros)
                    .execution_options(synchronize_session=False)
                )
            ).all()
            per_user: dict[int, int] = defaultdict(int)
            for user_id, amount in expired:
                per_user[user_id] += amount
            for user_id in sorted(per_user):
                await self._change_held(session, user_id, -per_user[user_id])
            await session.commit()
        if expired:
            log.warning("holds_expired", holds=len(expired), users=len(per_user))
        return len(expired)

    async def run_sweeper(self, interval_seconds: float, stop_event: asyncio.Event) -> None:
        """Expire stale holds every `interval_seconds` until `stop_event` is set."""
        while not stop_event.is_set():
            try:
                await self.expire_stale_holds()
            except Exception:
                log.exception("hold_sweeper_failed")
            try:
                await asyncio.wait_for(stop_event.wait(), timeout=interval_seconds)
            except TimeoutError:
                continue

    # Reads

    async def get_balance(self, user_id: int) -> BalanceView:
        async with self._sessionmaker() as session:
            return await self._balance_view(session, user_id)

    async def recent_operations(self, user_id: int, limit: int = 10) -> list[Operation]:
        async with self._sessionmaker() as session:
            rows = await session.execute(
                select(
                    BalanceOperation.id,
                    BalanceOperation.kind,
                    BalanceOperation.amount_micros,
                    BalanceOperation.balance_after_micros,
                    BalanceOperation.description,
                    BalanceOperation.created_at,
                )
                .where(BalanceOperation.user_id == user_id)
                .order_by(BalanceOperation.id.desc())
                .limit(limit)
            )
            return [Operation(*row) for row in rows]

    async def usage_summary(self, user_id: int, days: int = 30) -> UsageSummary:
        """Spend per purpose over the last `days` days."""
        images = func.coalesce(
            func.sum(ApiCall.image_count).filter(ApiCall.status == "ok"), 0
        ).label("images")
        async with self._sessionmaker() as session:
            rows = await session.execute(
                select(
                    ApiCall.purpose,
                    func.count().label("calls"),
                    func.coalesce(func.sum(ApiCall.charged_micros), 0).label("charged"),
                    images,
                )
                .where(
                    ApiCall.user_id == user_id,
                    ApiCall.created_at >= func.now() - timedelta(days=days),
                )
                .group_by(ApiCall.purpose)
                .order_by(ApiCall.purpose)
            )
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
            users = int(await session.scalar(select(func.count()).select_from(User)) or 0)
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

    # The common cases in one statement each (None: nothing changed, decide it in a transaction)

    async def _hold_in_one_statement(
        self, user_id: int, amount_micros: int, key: str, description: str | None
    ) -> int | None:
        try:
            hold_id = await self._sql.fetchval(
                _HOLD, user_id, amount_micros, key, description, self._hold_ttl
            )
        except UniqueViolation:
            return None
        return None if hold_id is None else int(hold_id)

    async def _capture_in_one_statement(self, hold: Hold, call: CallRecord) -> Settlement | None:
        charged = self._charge_for(call, hold, hold.amount_micros)
        if charged == 0:
            return None
        try:
            row = await self._sql.fetchrow(
                _CAPTURE,
                hold.id,
                hold.user_id,
                charged,
                hold.amount_micros,
                call.charge_key or hold.key,
                f"{call.purpose} {call.model}",
                *_api_call_values(call),
            )
        except UniqueViolation:
            return None
        if row is None:
            return None
        log.info("hold_captured", hold_id=hold.id, charged_micros=charged)
        return Settlement(
            api_call_id=int(row["api_call_id"]),
            charged_micros=charged,
            provider_cost_micros=call.provider_cost_micros,
            balance_micros=int(row["balance_micros"]),
            applied=True,
        )

    # Internals (all take the caller's session and never commit)

    async def _post(
        self,
        session: AsyncSession,
        *,
        user_id: int,
        kind: str,
        amount_micros: int,
        key: str,
        admin_user_id: int | None = None,
        description: str | None = None,
        api_call_id: int | None = None,
        held_change_micros: int = 0,
    ) -> int | None:
        """Move the balance and append its ledger row. Returns the new balance, or None when the
        key was used before (the caller must not commit). Raises InsufficientBalance."""
        change = (
            update(User)
            .where(User.id == user_id)
            .values(
                balance_micros=User.balance_micros + amount_micros,
                held_micros=User.held_micros + held_change_micros,
            )
            .returning(User.balance_micros)
            .execution_options(synchronize_session=False)
        )
        if amount_micros < 0 and held_change_micros == 0:
            change = change.where(User.balance_micros - User.held_micros >= -amount_micros)
        new_balance = await session.scalar(change)
        if new_balance is None:
            await session.rollback()
            if await self._ledger_key_used(session, key):
                return None
            view = await self._balance_view(session, user_id)
            raise InsufficientBalance(-amount_micros, view.available_micros)
        inserted = await session.scalar(
            pg_insert(BalanceOperation)
            .values(
                user_id=user_id,
                kind=kind,
                amount_micros=amount_micros,
                balance_after_micros=new_balance,
                idempotency_key=key,
                api_call_id=api_call_id,
                admin_user_id=admin_user_id,
                description=description,
            )
            .on_conflict_do_nothing(index_elements=[BalanceOperation.idempotency_key])
            .returning(BalanceOperation.id)
        )
        if inserted is None:
            await session.rollback()
            return None
        return new_balance

    async def _daily_limit_reached(
        self, session: AsyncSession, user_id: int, amount_micros: int
    ) -> DailyLimitReached:
        row = (
            await session.execute(
                text(
                    "SELECT daily_limit_micros, held_micros, ("
                    + SPENT_TODAY_SQL.format(user=":id")
                    + ") AS spent FROM users WHERE id = :id"
                ),
                {"id": user_id},
            )
        ).one()
        limit = int(row.daily_limit_micros or 0)
        left = max(0, limit - int(row.spent) - int(row.held_micros))
        log.info("hold_daily_limit", user_id=user_id, needed_micros=amount_micros, left=left)
        return DailyLimitReached(amount_micros, limit, left)

    async def _ledger_key_used(self, session: AsyncSession, key: str) -> bool:
        used = await session.scalar(
            select(BalanceOperation.id).where(BalanceOperation.idempotency_key == key)
        )
        return used is not None

    async def _insert_hold(
        self,
        session: AsyncSession,
        user_id: int,
        amount_micros: int,
        key: str,
        description: str | None,
    ) -> int | None:
        try:
            return await session.scalar(
                pg_insert(BalanceHold)
                .values(
                    user_id=user_id,
                    amount_micros=amount_micros,
                    idempotency_key=key,
                    description=description,
                    expires_at=func.now() + self._hold_ttl,
                )
                .on_conflict_do_nothing(index_elements=[BalanceHold.idempotency_key])
                .returning(BalanceHold.id)
            )
        except IntegrityError:
            raise UnknownUserError(user_id) from None

    async def _existing_hold(self, session: AsyncSession, user_id: int, key: str) -> Hold:
        row = (
            await session.execute(
                select(
                    BalanceHold.id,
                    BalanceHold.user_id,
                    BalanceHold.amount_micros,
                    BalanceHold.status,
                ).where(BalanceHold.idempotency_key == key)
            )
        ).one()
        if row.user_id != user_id:
            raise IdempotencyConflictError(f"Hold key {key!r} belongs to another user.")
        if row.status != "held":
            raise HoldNotOpenError(key, row.status)
        return Hold(id=row.id, user_id=row.user_id, amount_micros=row.amount_micros, key=key)

    async def _lock_hold(self, session: AsyncSession, hold_id: int) -> tuple[str, int]:
        row = (
            await session.execute(
                select(BalanceHold.status, BalanceHold.amount_micros)
                .where(BalanceHold.id == hold_id)
                .with_for_update()
            )
        ).first()
        if row is None:
            raise LookupError(f"No hold with id {hold_id}.")
        return str(row.status), int(row.amount_micros)

    async def _settle_open_hold(
        self, session: AsyncSession, hold: Hold, hold_amount: int, call: CallRecord
    ) -> Settlement | None:
        """Capture or release a locked open hold. None when the charge key was used before."""
        charged = self._charge_for(call, hold, hold_amount)
        api_call_id = await self._insert_call(session, call, charged_micros=charged)
        if charged == 0:
            balance = await self._change_held(session, hold.user_id, -hold_amount)
            await self._close_hold(session, hold.id, "released", captured_micros=0)
            log.info("hold_released", hold_id=hold.id, reason=call.status)
        else:
            maybe_balance = await self._post(
                session,
                user_id=hold.user_id,
                kind="charge",
                amount_micros=-charged,
                key=call.charge_key or hold.key,
                api_call_id=api_call_id,
                description=f"{call.purpose} {call.model}",
                held_change_micros=-hold_amount,
            )
            if maybe_balance is None:
                log.warning("charge_key_already_used", hold_id=hold.id, key=call.charge_key)
                return None
            balance = maybe_balance
            await self._close_hold(session, hold.id, "captured", captured_micros=charged)
            log.info("hold_captured", hold_id=hold.id, charged_micros=charged)
        return Settlement(
            api_call_id=api_call_id,
            charged_micros=charged,
            provider_cost_micros=call.provider_cost_micros,
            balance_micros=balance,
            applied=True,
        )

    def _charge_for(self, call: CallRecord, hold: Hold, hold_amount: int) -> int:
        if call.status not in CHARGED_STATUSES or call.provider_cost_micros <= 0:
            return 0
        price = self.user_price(call.provider_cost_micros)
        if price > hold_amount:
            log.warning(
                "charge_capped_at_hold",
                hold_id=hold.id,
                user_id=hold.user_id,
                price_micros=price,
                hold_micros=hold_amount,
            )
            return hold_amount
        return price

    async def _record_after_expiry(
        self, session: AsyncSession, hold: Hold, call: CallRecord
    ) -> Settlement:
        """The sweeper already gave the hold back: keep the provider cost, charge nothing."""
        api_call_id = await self._insert_call(session, call, charged_micros=0)
        await session.commit()
        log.warning("settled_after_hold_expired", hold_id=hold.id, user_id=hold.user_id)
        return Settlement(
            api_call_id=api_call_id,
            charged_micros=0,
            provider_cost_micros=call.provider_cost_micros,
            balance_micros=await self._current_balance(session, hold.user_id),
            applied=False,
        )

    async def _already_settled(
        self, session: AsyncSession, hold: Hold, call: CallRecord
    ) -> Settlement:
        charge = (
            await session.execute(
                select(BalanceOperation.api_call_id, BalanceOperation.amount_micros).where(
                    BalanceOperation.idempotency_key == (call.charge_key or hold.key),
                    BalanceOperation.user_id == hold.user_id,
                )
            )
        ).first()
        return Settlement(
            api_call_id=charge.api_call_id if charge else None,
            charged_micros=-charge.amount_micros if charge else 0,
            provider_cost_micros=call.provider_cost_micros,
            balance_micros=await self._current_balance(session, hold.user_id),
            applied=False,
        )

    async def _release_in(self, session: AsyncSession, hold_id: int, *, reason: str) -> bool:
        status, amount = await self._lock_hold(session, hold_id)
        if status != "held":
            return False
        user_id = await self._close_hold(session, hold_id, "released", captured_micros=0)
        await self._change_held(session, user_id, -amount)
        log.info("hold_released", hold_id=hold_id, reason=reason)
        return True

    async def _close_hold(
        self, session: AsyncSession, hold_id: int, status: str, *, captured_micros: int
    ) -> int:
        user_id = await session.scalar(
            update(BalanceHold)
            .where(BalanceHold.id == hold_id)
            .values(status=status, captured_micros=captured_micros, settled_at=func.now())
            .returning(BalanceHold.user_id)
            .execution_options(synchronize_session=False)
        )
        assert user_id is not None
        return user_id

    async def _change_held(self, session: AsyncSession, user_id: int, delta: int) -> int:
        balance = await session.scalar(
            update(User)
            .where(User.id == user_id)
            .values(held_micros=User.held_micros + delta)
            .returning(User.balance_micros)
            .execution_options(synchronize_session=False)
        )
        assert balance is not None
        return balance

    async def _insert_call(
        self, session: AsyncSession, call: CallRecord, *, charged_micros: int
    ) -> int:
        api_call_id = await session.scalar(
            insert(ApiCall)
            .values(
                user_id=call.user_id,
                provider=call.provider,
                model=call.model,
                purpose=call.purpose,
                tool_use_id=call.tool_use_id,
                input_tokens=call.input_tokens,
                output_tokens=call.output_tokens,
                cache_read_tokens=call.cache_read_tokens,
                cache_write_tokens=call.cache_write_tokens,
                image_count=call.image_count,
                image_size=call.image_size,
                image_output_tokens=call.image_output_tokens,
                image_list_price_micros=call.image_list_price_micros,
                web_search_requests=call.web_search_requests,
                web_fetch_requests=call.web_fetch_requests,
                provider_cost_micros=call.provider_cost_micros,
                charged_micros=charged_micros,
                price_version=call.price_version,
                status=call.status,
                error=call.error[:ERROR_TEXT_LIMIT] if call.error else None,
                provider_cost_unknown=call.provider_cost_unknown,
                request_id=call.request_id,
                duration_ms=call.duration_ms,
            )
            .returning(ApiCall.id)
        )
        assert api_call_id is not None
        return int(api_call_id)

    async def _balance_view(self, session: AsyncSession, user_id: int) -> BalanceView:
        row = (
            await session.execute(
                select(User.balance_micros, User.held_micros).where(User.id == user_id)
            )
        ).first()
        if row is None:
            raise UnknownUserError(user_id)
        balance, held = int(row.balance_micros), int(row.held_micros)
        return BalanceView(
            balance_micros=balance, held_micros=held, available_micros=balance - held
        )

    async def _current_balance(self, session: AsyncSession, user_id: int) -> int:
        return (await self._balance_view(session, user_id)).balance_micros


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
           GREATEST(u.last_seen_at, c.last_call_at) AS last_activity_at
    FROM users u
    LEFT JOIN LATERAL (
        SELECT SUM(charged_micros) AS charged,
               SUM(provider_cost_micros) AS provider_cost,
               COUNT(*) AS calls,
               SUM(image_count) FILTER (WHERE purpose = 'generate_image' AND status = 'ok')
                   AS images,
               MAX(created_at) AS last_call_at
        FROM api_calls WHERE user_id = u.id
    ) c ON true
    WHERE u.id = :user_id
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
