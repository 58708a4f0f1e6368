"""The prepaid balance: ledger writes, and holds around provider calls.

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

A hold is one statement (`statements.HOLD`, run by `holds.place`, the only code that creates
holds); a failed one only reads, to say why. A settlement
whose charge fits its hold tries one statement (`statements.CAPTURE`) first; everything else
(a larger charge, a release, a repeated key, a hold no longer open, a row to write with the
charge) is one transaction (`settle.py`).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal

import structlog
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.direct import DirectSQL, UniqueViolation
from bot.db.models import BalanceHold, BalanceOperation
from bot.services.ledger import holds, rows, statements
from bot.services.ledger.model import (
    CHARGED_STATUSES,
    BalanceView,
    CallRecord,
    DailyLimitReached,
    Hold,
    InsufficientBalance,
    Operation,
    Settlement,
    starter_key,
)
from bot.services.ledger.settle import release_locked, settle_locked
from bot.services.pricing import apply_markup

log = structlog.get_logger(__name__)

# Writes a row in the settlement's transaction (knowing the settlement); returns the row's id.
Attach = Callable[[AsyncSession, Settlement], Awaitable[int]]


class Ledger:
    """Ledger writes, holds and captures; each method commits its own short transaction."""

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
        key = starter_key(user_id)
        balance = await self._credit(user_id, "starter", amount_micros, key, "starter balance")
        if balance is None:
            return False
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
        balance = await self._credit(
            user_id, "topup", amount_micros, key, description, admin_user_id
        )
        if balance is None:
            log.info("topup_duplicate", user_id=user_id, key=key)
            return (await self.get_balance(user_id)).balance_micros
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
        balance = await self._credit(
            user_id, "adjustment", amount_micros_signed, key, description, admin_user_id
        )
        if balance is None:
            log.info("adjustment_duplicate", user_id=user_id, key=key)
            return (await self.get_balance(user_id)).balance_micros
        log.info(
            "adjustment_applied",
            user_id=user_id,
            amount_micros=amount_micros_signed,
            admin_user_id=admin_user_id,
            key=key,
        )
        return balance

    async def _credit(
        self,
        user_id: int,
        kind: str,
        amount_micros: int,
        key: str,
        description: str | None,
        admin_user_id: int | None = None,
    ) -> int | None:
        async with self._sessionmaker() as session:
            balance = await rows.post(
                session,
                user_id=user_id,
                kind=kind,
                amount_micros=amount_micros,
                key=key,
                admin_user_id=admin_user_id,
                description=description,
            )
            if balance is not None:
                await session.commit()
        return balance

    # Holds

    async def hold(
        self, user_id: int, amount_micros: int, *, key: str, description: str | None = None
    ) -> Hold:
        """Reserve `amount_micros` of the available balance for a provider call; the same open
        key returns the same hold. Raises InsufficientBalance (DailyLimitReached),
        HoldNotOpenError or UnknownUserError."""
        try:
            hold_id = await holds.place(
                self._sql.fetchval,
                user_id,
                amount_micros,
                key=key,
                description=description,
                ttl=self._hold_ttl,
                kind="call",
            )
        except UniqueViolation:
            hold_id = None
        if hold_id is None:
            return await self._existing_or_refused(user_id, amount_micros, key)
        log.debug("hold_placed", user_id=user_id, amount_micros=amount_micros, key=key)
        return Hold(id=hold_id, user_id=user_id, amount_micros=amount_micros, key=key)

    async def _existing_or_refused(self, user_id: int, amount_micros: int, key: str) -> Hold:
        """Why HOLD placed nothing: the key's open hold, or too little balance."""
        async with self._sessionmaker() as session:
            existing = await rows.existing_hold(session, user_id, key)
            if existing is not None:
                return existing
            available = (await rows.balance_view(session, user_id)).available_micros
            if available >= amount_micros:
                raise await rows.daily_limit_reached(session, user_id, amount_micros)
        log.info(
            "hold_insufficient_balance",
            user_id=user_id,
            needed_micros=amount_micros,
            available_micros=available,
        )
        raise InsufficientBalance(amount_micros, available)

    async def check_hold(self, user_id: int, amount_micros: int) -> None:
        """Raise what `hold` would raise for `amount_micros` now (InsufficientBalance, or
        DailyLimitReached under the person's /limit), without holding anything."""
        async with self._sessionmaker() as session:
            available = (await rows.balance_view(session, user_id)).available_micros
            if available < amount_micros:
                raise InsufficientBalance(amount_micros, available)
            limit, left = await rows.daily_limit_left(session, user_id)
        if limit is not None and left is not None and left < amount_micros:
            raise DailyLimitReached(amount_micros, limit, left)

    async def settle(
        self, hold: Hold, call: CallRecord, *, attach: Attach | None = None
    ) -> Settlement:
        """Record the call and capture its price if it succeeded, or release the hold if it did
        not; one transaction, which also writes `attach`'s row when given."""
        if call.user_id != hold.user_id:
            raise ValueError("the call and the hold belong to different users")
        price = self._price(call)
        if attach is None and 0 < price <= hold.amount_micros:
            captured = await self._capture_in_one_statement(hold, call, price)
            if captured is not None:
                return captured
        async with self._sessionmaker() as session:
            settlement = await settle_locked(session, hold, call, price)
            if attach is not None:
                attached = await attach(session, settlement)
                settlement = replace(settlement, attached_id=attached)
            await session.commit()
        return settlement

    def _price(self, call: CallRecord) -> int:
        charged = call.chargeable and call.status in CHARGED_STATUSES
        if not charged or call.provider_cost_micros <= 0:
            return 0
        return self.user_price(call.provider_cost_micros)

    async def _capture_in_one_statement(
        self, hold: Hold, call: CallRecord, charged: int
    ) -> Settlement | None:
        """Every chat turn's capture. Measured against `settle_locked` (same hold and call,
        tests/bench/ledger_paths.py): 1 database round trip instead of 7 (BEGIN, 5 statements,
        COMMIT) and about a tenth of the CPU (0.4 ms against 4.5-5 ms per capture on 2 loaded
        cores). Both leave the same rows (tests/billing/test_statements.py); None falls through
        to the transaction."""
        key = call.charge_key or hold.key
        arguments = statements.capture_arguments(call, hold.id, hold.amount_micros, charged, key)
        try:
            row = await self._sql.fetchrow(statements.CAPTURE, *arguments)
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

    async def release(self, hold: Hold, *, reason: str) -> bool:
        """Release an open hold without a call record; False if it was not open any more."""
        async with self._sessionmaker() as session:
            released = await release_locked(session, hold.id, reason=reason)
            await session.commit()
        return released

    async def expire_stale_holds(self, now: datetime | None = None) -> int:
        """Expire open holds past their expiry and give their amounts back; returns how many."""
        cutoff = now if now is not None else func.now()
        stale = (
            select(BalanceHold.id)
            .where(BalanceHold.status == "held", BalanceHold.expires_at <= cutoff)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        async with self._sessionmaker() as session:
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
                await rows.change_held(session, user_id, -per_user[user_id])
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

    # Reads behind /balance

    async def get_balance(self, user_id: int) -> BalanceView:
        async with self._sessionmaker() as session:
            return await rows.balance_view(session, user_id)

    async def recent_operations(self, user_id: int, limit: int = 10) -> list[Operation]:
        stmt = (
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
        async with self._sessionmaker() as session:
            return [Operation(*row) for row in await session.execute(stmt)]
