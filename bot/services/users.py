"""Users: created on first sight, with the starter balance credited once through the ledger."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, exists, func, not_, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from bot.db.models import BalanceOperation, User
from bot.services.ledger import Ledger, starter_key

TOUCH_INTERVAL_SECONDS = 60.0
MAX_CACHED_USERS = 50_000


@dataclass(frozen=True)
class TelegramIdentity:
    id: int
    username: str | None
    first_name: str | None
    language_code: str | None


@dataclass(frozen=True)
class UserState:
    id: int
    is_blocked: bool
    is_new: bool
    chat_model: str | None = None  # chosen with /model; None = the default model
    locale: str | None = None  # chosen with /language; None = follow language_code


class UserService:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        billing: Ledger,
        *,
        starter_micros: int,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._billing = billing
        self._starter_micros = starter_micros
        self._fresh: dict[TelegramIdentity, tuple[float, UserState]] = {}

    async def touch(self, who: TelegramIdentity) -> UserState:
        """The user's state; written at most once a minute per unchanged identity."""
        now = time.monotonic()
        cached = self._fresh.get(who)
        if cached is not None and now - cached[0] < TOUCH_INTERVAL_SECONDS:
            return cached[1]
        state = await self._upsert(who)
        if len(self._fresh) > MAX_CACHED_USERS:
            self._fresh.clear()
        self._fresh[who] = (now, dataclasses.replace(state, is_new=False))
        return state

    async def chosen_locale(self, user_id: int) -> str | None:
        """The language the person chose with /language (None: follow Telegram's)."""
        for who, (_, state) in self._fresh.items():
            if who.id == user_id:
                return state.locale
        async with self._sessionmaker() as session:
            row = (await session.execute(select(User.locale).where(User.id == user_id))).first()
        return None if row is None else row[0]

    async def language_of(self, user_id: int) -> tuple[str | None, str | None]:
        """The person's chosen locale and Telegram language_code, for texts sent unprompted."""
        async with self._sessionmaker() as session:
            row = (
                await session.execute(
                    select(User.locale, User.language_code).where(User.id == user_id)
                )
            ).first()
        return (None, None) if row is None else (row[0], row[1])

    async def set_chat_model(self, user_id: int, model: str) -> bool:
        """Store the person's model choice; False when they are unknown or blocked."""
        return await self._set(user_id, chat_model=model)

    async def set_locale(self, user_id: int, locale: str) -> bool:
        """Store the person's language choice; False when they are unknown or blocked."""
        return await self._set(user_id, locale=locale)

    async def _set(self, user_id: int, **values: str) -> bool:
        stmt = (
            update(User)
            .where(User.id == user_id, User.is_blocked.is_(False))
            .values(**values)
            .returning(User.id)
        )
        async with self._sessionmaker() as session:
            changed = (await session.execute(stmt)).first() is not None
            await session.commit()
        for identity in [who for who in self._fresh if who.id == user_id]:
            del self._fresh[identity]  # the next message reads the choice
        return changed

    async def _upsert(self, who: TelegramIdentity) -> UserState:
        """Create or refresh the user in one statement; credit the starter balance once."""
        stmt = (
            insert(User)
            .values(
                id=who.id,
                username=who.username,
                first_name=who.first_name,
                language_code=who.language_code,
            )
            .on_conflict_do_update(
                index_elements=[User.id],
                set_={
                    "username": who.username,
                    "first_name": who.first_name,
                    "language_code": who.language_code,
                    "last_seen_at": func.now(),
                },
            )
            .returning(User.is_blocked, _first_sight(who.id), User.chat_model, User.locale)
        )
        async with self._sessionmaker() as session:
            row = (await session.execute(stmt)).one()
            await session.commit()
        is_blocked, is_new = bool(row[0]), bool(row[1])
        if is_new and not is_blocked and self._starter_micros > 0:
            await self._billing.credit_starter(who.id, self._starter_micros)
        return UserState(
            id=who.id, is_blocked=is_blocked, is_new=is_new, chat_model=row[2], locale=row[3]
        )


def _first_sight(user_id: int) -> ColumnElement[bool]:
    """For the upsert's RETURNING: this is the first message of a person who has no starter
    credit yet. Their row is new, or it was made without them (a Stars payment reconciled before
    they ever wrote) and untouched since: created and last seen at once, before this statement
    (a subquery sees the row as it was before the statement changed it)."""
    before = aliased(User)
    untouched = (
        select(before.created_at == before.last_seen_at)
        .where(before.id == user_id)
        .scalar_subquery()
    )
    credited = exists().where(BalanceOperation.idempotency_key == starter_key(user_id))
    return and_(
        or_(User.created_at == User.last_seen_at, func.coalesce(untouched, False)),
        not_(credited),
    )
