"""Duplicates are detected on update_id within a 7-day window only, and older rows are purged:
after a week without updates Telegram may hand out ids again, and those are new updates."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.services.inbox import InboundRecord, Inbox


def _record(update_id: int) -> InboundRecord:
    return InboundRecord(update_id=update_id, user_id=42, chat_id=42, kind="message")


async def _age(engine: AsyncEngine, update_id: int, days: float) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE inbound_updates SET received_at = now() - make_interval(secs => :s), "
                "status = 'answered', finished_at = now() WHERE update_id = :u"
            ),
            {"s": days * 86400, "u": update_id},
        )


async def test_an_id_is_a_duplicate_within_seven_days_only(
    sessionmaker: async_sessionmaker[AsyncSession], engine: AsyncEngine
) -> None:
    inbox = Inbox(sessionmaker)
    assert await inbox.record([_record(1), _record(2), _record(2)]) == {1, 2}
    await _age(engine, 1, 6.9)
    await _age(engine, 2, 7.1)
    # Seen 6.9 days ago: a duplicate. Seen 7.1 days ago: a new update, recorded afresh.
    assert await inbox.record([_record(1), _record(2), _record(3)]) == {2, 3}
    async with engine.connect() as conn:
        status = (
            await conn.execute(
                text(
                    "SELECT status, finished_at IS NULL, received_at > now() - interval '1 minute'"
                    " FROM inbound_updates WHERE update_id = 2"
                )
            )
        ).one()
    assert tuple(status) == ("received", True, True)


async def test_rows_older_than_the_window_are_purged(
    sessionmaker: async_sessionmaker[AsyncSession], engine: AsyncEngine
) -> None:
    inbox = Inbox(sessionmaker)
    await inbox.record([_record(10), _record(11), _record(12)])
    await _age(engine, 10, 8)
    await _age(engine, 11, 30)
    assert await inbox.purge() == 2
    async with engine.connect() as conn:
        left = (await conn.execute(text("SELECT update_id FROM inbound_updates"))).scalars().all()
    assert list(left) == [12]
    assert await inbox.purge() == 0
