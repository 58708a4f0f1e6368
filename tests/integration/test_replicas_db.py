"""Replica coordination on a real Postgres, in-process: leases, the live count each replica paces
by, per-person turn leases in update order, dead-replica recovery and single leadership."""

from __future__ import annotations

import asyncio
import contextlib

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.ops.replicas import Leadership, Replica
from bot.services.inbox import InboundRecord, Inbox
from bot.services.incoming import IncomingMessage
from bot.telegram.flood import OutgoingPacer


def incoming(user_id: int, update_id: int) -> IncomingMessage:
    return IncomingMessage(user_id=user_id, chat_id=user_id, update_id=update_id, text="hi")


async def execute(engine: AsyncEngine, sql: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(text(sql))


async def test_heartbeat_counts_live_replicas(
    sessionmaker: async_sessionmaker[AsyncSession], engine: AsyncEngine
) -> None:
    first = Replica(sessionmaker, lease_seconds=30, replica_id="r1")
    second = Replica(sessionmaker, lease_seconds=30, replica_id="r2")
    await first.register()
    await second.register()
    assert await first.heartbeat() == 2
    await second.retire()
    assert await first.heartbeat() == 1


def test_pacer_takes_its_share_of_the_global_rate() -> None:
    now = [0.0]
    pacer = OutgoingPacer(global_rate=30.0, global_burst=30, clock=lambda: now[0])
    pacer.set_global_rate(15.0, 15)
    waits = [asyncio.run(pacer.acquire(None)) for _ in range(15)]
    assert waits == [0.0] * 15  # the burst is this replica's half


async def test_turn_leases_run_one_persons_turns_in_update_order(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    inbox = Inbox(sessionmaker)
    a = Replica(sessionmaker, lease_seconds=30, replica_id="a")
    b = Replica(sessionmaker, lease_seconds=30, replica_id="b")
    await a.register()
    await b.register()
    await inbox.record([InboundRecord(u, 7, 7, "message") for u in (10, 11)])
    order: list[str] = []

    async def run(replica: Replica, update_id: int) -> None:
        async with replica.turn(incoming(7, update_id)):
            order.append(f"start {update_id}")
            await asyncio.sleep(0.3)
            order.append(f"end {update_id}")
        await inbox.mark(update_id, "answered")

    later = asyncio.create_task(run(b, 11))  # the later message reaches its replica first
    await asyncio.sleep(0.1)
    assert order == []  # waits: update 10 is unfinished
    await run(a, 10)
    await later
    assert order == ["start 10", "end 10", "start 11", "end 11"]


async def test_dead_replicas_turn_is_handed_back(
    sessionmaker: async_sessionmaker[AsyncSession], engine: AsyncEngine
) -> None:
    inbox = Inbox(sessionmaker)
    dead = Replica(sessionmaker, lease_seconds=30, replica_id="dead")
    alive = Replica(sessionmaker, lease_seconds=30, replica_id="alive")
    await dead.register()
    await alive.register()
    await execute(
        engine, "INSERT INTO users (id, balance_micros, held_micros) VALUES (8, 1000, 300)"
    )
    await execute(
        engine,
        "INSERT INTO balance_holds (user_id, amount_micros, idempotency_key, expires_at) "
        "VALUES (8, 300, 'hold:llm:20:0', now() + interval '15 minutes')",
    )
    await inbox.record([InboundRecord(u, 8, 8, "message") for u in (20, 21)])
    await dead.claim([20, 21])
    lease = dead.turn(incoming(8, 20))
    await lease.__aenter__()  # the turn in progress when the process died (never exited)

    assert (await alive.recover_dead()).replicas == 0  # its lease is still running
    await execute(
        engine, "UPDATE replicas SET lease_until = now() - interval '1 s' WHERE id = 'dead'"
    )
    recovered = await alive.recover_dead()
    assert recovered.replicas == 1
    assert recovered.holds_released == 1
    assert recovered.update_ids == [20, 21]
    assert recovered.chat_ids == [8, 8]
    async with engine.connect() as conn:
        row = (
            await conn.execute(text("SELECT balance_micros, held_micros FROM users WHERE id = 8"))
        ).one()
        statuses = (
            (await conn.execute(text("SELECT status FROM inbound_updates ORDER BY update_id")))
            .scalars()
            .all()
        )
        hold = await conn.scalar(text("SELECT status FROM balance_holds"))
    assert tuple(row) == (1000, 0)  # nothing charged, nothing held
    assert statuses == ["interrupted", "interrupted"]
    assert hold == "released"
    # The person's next message takes the turn at once.
    await inbox.record([InboundRecord(22, 8, 8, "message")])
    async with asyncio.timeout(2):
        async with alive.turn(incoming(8, 22)):
            pass
    assert (await alive.recover_dead()).replicas == 0


async def test_one_leader_runs_the_background_jobs(engine: AsyncEngine) -> None:
    running: list[str] = []

    def job(name: str):  # type: ignore[no-untyped-def]
        async def run(stop: asyncio.Event) -> None:
            running.append(name)
            with contextlib.suppress(asyncio.CancelledError):
                await stop.wait()
            running.remove(name)

        return run

    stop_first, stop_second = asyncio.Event(), asyncio.Event()
    first = Leadership(engine, [job("first")], retry_seconds=0.1)
    second = Leadership(engine, [job("second")], retry_seconds=0.1)
    tasks = [asyncio.create_task(first.run(stop_first))]
    await asyncio.sleep(0.3)
    tasks.append(asyncio.create_task(second.run(stop_second)))
    await asyncio.sleep(0.5)
    assert running == ["first"]
    assert first.leading and not second.leading
    stop_first.set()  # the leader stops: the other takes over
    await tasks[0]
    for _ in range(50):
        if running == ["second"]:
            break
        await asyncio.sleep(0.05)
    assert running == ["second"]
    stop_second.set()
    await tasks[1]
    assert running == []
