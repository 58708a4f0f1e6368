"""Benchmark: the ledger's one-statement hold and capture against the same work in a transaction.

    uv run python -m tests.bench.ledger_paths [N]

Prints database round trips (statements sent, BEGIN and COMMIT included), wall time and CPU per
operation. The one-statement paths run on asyncpg directly (bot/db/direct.py); the transactional
ones are what the ledger does otherwise (`hold_within` in a session, `settle_locked`, forced here
by an `attach` that writes nothing). Wall time depends on the machine's load; round trips do not.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.db.session import create_engine, create_sessionmaker
from bot.services.ledger import CallRecord, Ledger, Settlement, hold_within
from tests.billing.conftest import HOLD_TTL
from tests.pg import TestPostgres

Step = Callable[[int], Awaitable[object]]


def count_statements(engine: AsyncEngine, sent: list[str]) -> None:
    """Every statement the engine's connections send: through SQLAlchemy, or asyncpg directly."""

    @event.listens_for(engine.sync_engine, "connect")
    def on_connect(connection: Any, _: object) -> None:
        connection._connection.add_query_logger(lambda record: sent.append(record.query))

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def on_execute(*args: Any) -> None:
        sent.append(args[2])


async def measure(label: str, step: Step, n: int, sent: list[str]) -> None:
    sent.clear()
    cpu, wall = time.process_time(), time.perf_counter()
    for index in range(n):
        await step(index)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print(
        f"{label:22s} {len(sent) / n:5.2f} round trips  {wall * 1000 / n:7.3f} ms wall  "
        f"{cpu * 1000 / n:6.3f} ms CPU"
    )


def chat_call(user_id: int) -> CallRecord:
    return CallRecord(
        user_id=user_id,
        provider="anthropic",
        model="claude",
        purpose="chat",
        status="ok",
        provider_cost_micros=12_345,
        input_tokens=1_000,
        output_tokens=200,
    )


async def nothing_attached(session: AsyncSession, settlement: Settlement) -> int:
    return 0


async def compare(sessions: async_sessionmaker[AsyncSession], n: int, sent: list[str]) -> None:
    ledger = Ledger(sessions, markup=Decimal("1.0"), hold_ttl=HOLD_TTL)
    async with sessions() as session:
        await session.execute(text("INSERT INTO users (id, first_name) VALUES (1, 'a')"))
        await session.commit()
    await ledger.topup(1, 10**12, key="bench")

    async def hold_alone(index: int) -> object:
        return await ledger.hold(1, 20_000, key=f"alone:{index}")

    async def hold_in_session(index: int) -> object:
        async with sessions() as session:
            hold = await hold_within(session, 1, 20_000, key=f"session:{index}", description="-")
            await session.commit()
        return hold

    await measure("hold, one statement", hold_alone, n, sent)
    await measure("hold, transaction", hold_in_session, n, sent)
    for label, attach in (
        ("capture, one statement", None),
        ("capture, transaction", nothing_attached),
    ):
        holds = [await ledger.hold(1, 20_000, key=f"{label}:{index}") for index in range(n)]

        async def settle(index: int, attach: Any = attach, holds: list[Any] = holds) -> object:
            return await ledger.settle(holds[index], chat_call(1), attach=attach)

        await measure(label, settle, n, sent)


async def main(n: int) -> None:
    server = TestPostgres()
    server.start()
    try:
        await server.create_template()
        engine = create_engine(server.url_for(await server.create_database()))
        sent: list[str] = []
        count_statements(engine, sent)
        await compare(create_sessionmaker(engine), n, sent)
        await engine.dispose()
    finally:
        server.stop()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 300))
