"""Several replicas on one Postgres (design section 12), coordinated only through the database.

* Each replica holds a lease (`replicas.lease_until`) that a heartbeat renews; the heartbeat also
  counts the live replicas, so each paces to its share of Telegram's global rate.
* The updates a replica took from Telegram are claimed by it (`update_claims`).
* A person's turn runs under a turn lease (`turn_leases`, one row per person): a replica may take
  it only when no earlier update of that person is unfinished and no live replica holds it. So
  one person's turns run one at a time, in update order, whichever replica took each message.
* A replica whose lease ran out is dead. Another releases the holds of the turns it had in
  progress, marks its unfinished updates interrupted and tells those people to send again; the
  unfinished part was never charged (a charge is settled only when a provider call completes).
* Background jobs (hold sweeper, file housekeeping, this recovery) run on one replica at a time,
  the one holding a session-level advisory lock; when it dies its connection closes and the lock
  passes to another.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.db.direct import DirectSQL
from bot.services.incoming import IncomingMessage
from bot.turns.chat import ChatService

log = structlog.get_logger(__name__)

# Advisory lock keys (pg_advisory_lock takes a bigint); arbitrary but fixed.
LEADER_LOCK = 0x7B07_0001
WEBHOOK_LOCK = 0x7B07_0002

_REGISTER = """
    INSERT INTO replicas (id, hostname, lease_until) VALUES ($1, $2, now() + $3::interval)
"""
_HEARTBEAT = """
    WITH renewed AS (
        UPDATE replicas SET lease_until = now() + $2::interval WHERE id = $1 RETURNING id
    )
    SELECT (SELECT count(*) FROM renewed) AS renewed,
           (SELECT count(*) FROM replicas WHERE lease_until > now() AND id <> $1) + 1 AS live
"""
_RETIRE = "UPDATE replicas SET lease_until = now() - interval '1 second' WHERE id = $1"
_CLAIM = """
    INSERT INTO update_claims (update_id, replica_id) SELECT unnest($1::bigint[]), $2
    ON CONFLICT (update_id) DO NOTHING
    RETURNING update_id
"""
# A person's turn lease: taken when free or held by a dead replica, and only when no earlier
# update of the person is unfinished (an earlier turn, queued here or on another replica).
_TAKE_TURN = """
    INSERT INTO turn_leases (user_id, update_id, replica_id)
    SELECT $1, $2, $3
    WHERE NOT EXISTS (
        SELECT 1 FROM inbound_updates
        WHERE user_id = $1 AND update_id < $2 AND NOT (update_id = ANY($4::bigint[]))
          AND status IN ('received', 'processing')
          AND received_at > now() - interval '1 day'
    )
    ON CONFLICT (user_id) DO UPDATE
        SET update_id = EXCLUDED.update_id, replica_id = EXCLUDED.replica_id, started_at = now()
        WHERE turn_leases.replica_id = EXCLUDED.replica_id
           OR NOT EXISTS (
               SELECT 1 FROM replicas r
               WHERE r.id = turn_leases.replica_id AND r.lease_until > now()
           )
    RETURNING update_id
"""
_GIVE_TURN = "DELETE FROM turn_leases WHERE user_id = $1 AND replica_id = $2"
# Everything a dead replica left, in one statement (its data-modifying parts run as one unit).
# The turn leases it held name the people whose turn was in progress there: no other replica can
# have run a turn for them meanwhile, so their open holds are that turn's.
_RECOVER = """
    WITH dead AS (
        SELECT id FROM replicas WHERE lease_until < now() FOR UPDATE SKIP LOCKED
    ), leases AS (
        DELETE FROM turn_leases WHERE replica_id IN (SELECT id FROM dead) RETURNING user_id
    ), released AS (
        UPDATE balance_holds SET status = 'released', settled_at = now()
        WHERE status = 'held' AND user_id IN (SELECT user_id FROM leases)
        RETURNING user_id, amount_micros
    ), unheld AS (
        UPDATE users u SET held_micros = u.held_micros - r.total
        FROM (SELECT user_id, sum(amount_micros) AS total FROM released GROUP BY user_id) r
        WHERE u.id = r.user_id
        RETURNING u.id
    ), lost AS (
        UPDATE inbound_updates i SET status = 'interrupted', error = 'replica_lost'
        FROM update_claims c
        WHERE c.update_id = i.update_id AND c.replica_id IN (SELECT id FROM dead)
          AND i.status IN ('received', 'processing', 'interrupted')
        RETURNING i.update_id, i.chat_id
    ), gone AS (
        DELETE FROM replicas WHERE id IN (SELECT id FROM dead) RETURNING id
    )
    SELECT
        (SELECT count(*) FROM gone) AS replicas,
        (SELECT count(*) FROM released) AS holds,
        (SELECT count(*) FROM unheld) AS people,
        array(SELECT update_id FROM lost ORDER BY update_id) AS update_ids,
        array(SELECT chat_id FROM lost ORDER BY update_id) AS chat_ids
"""
_FORGET_CLAIMS = "DELETE FROM update_claims WHERE claimed_at < now() - interval '8 days'"
_MARK_NOTIFIED = (
    "UPDATE inbound_updates SET status = 'notified', finished_at = now() "
    "WHERE update_id = ANY($1::bigint[]) AND status = 'interrupted'"
)


def _interval(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


@dataclass(frozen=True)
class Recovered:
    replicas: int
    holds_released: int
    update_ids: list[int]
    chat_ids: list[int]


class Replica:
    """This process's lease, its claims on updates and its people's turn leases."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        lease_seconds: float,
        replica_id: str | None = None,
    ) -> None:
        self._sql = DirectSQL.of(sessionmaker)
        self.id = replica_id or f"{socket.gethostname()[:40]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.lease_seconds = lease_seconds
        self.live_replicas = 1

    async def register(self) -> None:
        await self._sql.execute(
            _REGISTER, self.id, socket.gethostname()[:256], _interval(self.lease_seconds)
        )
        log.info("replica_registered", replica_id=self.id, lease_seconds=self.lease_seconds)

    async def heartbeat(self) -> int:
        """Renew the lease; returns the number of live replicas (this one included)."""
        row = await self._sql.fetchrow(_HEARTBEAT, self.id, _interval(self.lease_seconds))
        assert row is not None
        if int(row["renewed"]) == 0:
            # Declared dead while alive (a stall longer than the lease): its turns were already
            # handed back, so start over under the same id.
            log.error("replica_lease_lost", replica_id=self.id)
            await self.register()
        self.live_replicas = int(row["live"])
        return self.live_replicas

    async def retire(self) -> None:
        """At a clean stop: let the others tell this replica's people what was left undone."""
        await self._sql.execute(_RETIRE, self.id)

    async def claim(self, update_ids: Sequence[int]) -> set[int]:
        """Claim recorded updates for this replica; returns those nobody had claimed yet."""
        rows = await self._sql.fetch(_CLAIM, list(update_ids), self.id)
        return {int(row["update_id"]) for row in rows}

    @contextlib.asynccontextmanager
    async def turn(self, incoming: IncomingMessage) -> AsyncIterator[None]:
        """Hold the person's turn lease for the duration of the block, waiting for it in order."""
        waited = await self._take_turn(incoming)
        if waited > 1.0:
            log.info("turn_lease_waited", user_id=incoming.user_id, seconds=round(waited, 2))
        try:
            yield
        finally:
            await asyncio.shield(self._sql.execute(_GIVE_TURN, incoming.user_id, self.id))

    async def _take_turn(self, incoming: IncomingMessage) -> float:
        started = time.monotonic()
        delay = 0.02
        own = [incoming.update_id, *incoming.extra_update_ids]
        while True:
            row = await self._sql.fetchrow(
                _TAKE_TURN, incoming.user_id, incoming.update_id, self.id, own
            )
            if row is not None:
                return time.monotonic() - started
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)

    async def recover_dead(self) -> Recovered:
        row = await self._sql.fetchrow(_RECOVER)
        assert row is not None
        recovered = Recovered(
            replicas=int(row["replicas"]),
            holds_released=int(row["holds"]),
            update_ids=[int(u) for u in row["update_ids"]],
            chat_ids=[int(c) for c in row["chat_ids"] if c is not None],
        )
        if recovered.replicas:
            log.warning(
                "dead_replicas_recovered",
                replicas=recovered.replicas,
                holds_released=recovered.holds_released,
                updates=len(recovered.update_ids),
            )
        return recovered

    async def mark_notified(self, update_ids: Sequence[int]) -> None:
        await self._sql.execute(_MARK_NOTIFIED, list(update_ids))

    async def forget_old_claims(self) -> None:
        await self._sql.execute(_FORGET_CLAIMS)


class ReplicaChatService(ChatService):
    """The chat service, running each turn under the person's turn lease."""

    replica: Replica

    def attach(self, replica: Replica) -> None:
        self.replica = replica

    async def run_turn(self, incoming: IncomingMessage) -> None:
        async with self.replica.turn(incoming):
            await super().run_turn(incoming)


Job = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


class Leadership:
    """Runs `jobs` on the one replica holding the leader advisory lock.

    The lock is session-level, on a connection kept for as long as this replica leads: when the
    process dies, Postgres ends the session and the lock passes to the next replica that asks.
    """

    def __init__(self, engine: AsyncEngine, jobs: Sequence[Job], *, retry_seconds: float) -> None:
        self._engine = engine
        self._jobs = list(jobs)
        self._retry = retry_seconds
        self.leading = False

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self._lead_if_free(stop)
            except Exception as exc:
                log.warning("leadership_lost", error=type(exc).__name__)
            self.leading = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._retry)

    async def _lead_if_free(self, stop: asyncio.Event) -> None:
        async with self._engine.connect() as conn:
            got = await conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": LEADER_LOCK})
            await conn.commit()
            if not got:
                return
            self.leading = True
            log.info("leader_elected")
            finished = asyncio.Event()
            tasks = [asyncio.create_task(job(finished)) for job in self._jobs]
            try:
                while not stop.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=self._retry)
                    await conn.scalar(text("SELECT 1"))  # the session (and the lock) is alive
                    await conn.commit()
            finally:
                finished.set()
                for task in tasks:
                    task.cancel()
                for task in tasks:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
                with contextlib.suppress(Exception):
                    await conn.scalar(text("SELECT pg_advisory_unlock(:k)"), {"k": LEADER_LOCK})
                    await conn.commit()


Notify = Callable[[int], Awaitable[None]]


async def run_recovery(
    replica: Replica, notify: Notify, stop: asyncio.Event, *, interval: float
) -> None:
    """Every `interval`: hand back what dead replicas left and tell their people to resend."""
    rounds = 0
    while not stop.is_set():
        try:
            recovered = await replica.recover_dead()
            for chat_id in dict.fromkeys(recovered.chat_ids):
                try:
                    await notify(chat_id)
                except Exception:
                    log.exception("replica_lost_notice_failed", chat_id=chat_id)
            if recovered.update_ids:
                await replica.mark_notified(recovered.update_ids)
            rounds += 1
            if rounds % 1000 == 1:
                await replica.forget_old_claims()
        except Exception:
            log.exception("replica_recovery_failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)


async def run_heartbeat(
    replica: Replica,
    on_live: Callable[[int], None],
    stop: asyncio.Event,
    *,
    interval: float,
) -> None:
    """Renew this replica's lease every `interval`; `on_live` gets the live replica count."""
    while not stop.is_set():
        try:
            on_live(await replica.heartbeat())
        except Exception as exc:
            log.warning("replica_heartbeat_failed", error=type(exc).__name__)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
