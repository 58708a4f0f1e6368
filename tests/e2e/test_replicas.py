"""Two real bot processes in webhook mode on one Postgres, behind a round-robin proxy.

One person's rapid messages, spread over both replicas, are answered one at a time and in order,
with exact charges; a replica killed (SIGKILL) in the middle of a turn is noticed by the other
within the lease: its hold is released, the person is told to send again, nothing is charged for
the unfinished turn, and nothing is lost or charged twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.db.session import create_engine
from bot.ops.cluster import REPLICA_LOST_NOTICE
from tests.e2e.conftest import assert_no_leaks
from tests.e2e.test_chat import (
    STARTER_MICROS,
    final_texts,
    open_holds,
    poll_until,
    rows,
    scalar,
    wait_update_finished,
)
from tests.fakes.anthropic import Delay, FakeAnthropic, RecordedRequest, text_reply
from tests.fakes.balancer import RoundRobinProxy
from tests.fakes.telegram import FakeTelegram
from tests.harness import BotProcess, bot_env
from tests.netutil import free_port

SECRET = "test-webhook-secret-not-real_77"
LEASE_SECONDS = 6.0


def last_text(record: RecordedRequest | dict[str, Any]) -> str:
    body = record if isinstance(record, dict) else record.json
    blocks = body["messages"][-1]["content"]
    return [b["text"] for b in blocks if b.get("type") == "text"][-1]


def slow_echo(delay: float) -> Any:
    def respond(record: RecordedRequest) -> Delay:
        return Delay(delay, text_reply(f"Answer to: {last_text(record)}"))

    return respond


@dataclass
class Cluster:
    telegram: FakeTelegram
    anthropic: FakeAnthropic
    engine: AsyncEngine
    proxy: RoundRobinProxy
    replicas: list[BotProcess]


@pytest.fixture
async def cluster(
    database_url: str, tmp_path: Path, telegram: FakeTelegram, anthropic_fake: FakeAnthropic
) -> AsyncIterator[Cluster]:
    ports = [free_port(), free_port()]
    engine = create_engine(database_url)
    async with RoundRobinProxy([f"http://127.0.0.1:{p}" for p in ports]) as proxy:
        replicas = []
        for index, port in enumerate(ports):
            env = bot_env(
                database_url=database_url,
                data_dir=tmp_path / f"data{index}",
                telegram_url=telegram.base_url,
                anthropic_url=anthropic_fake.base_url,
                gemini_url="http://127.0.0.1:9",
                BOT_MODE="webhook",
                WEBHOOK_URL=f"{proxy.base_url}/telegram",
                WEBHOOK_LISTEN=f"127.0.0.1:{port}",
                WEBHOOK_SECRET=SECRET,
                REPLICA_LEASE_SECONDS=str(LEASE_SECONDS),
                MERGE_WINDOW_SECONDS="0",
            )
            replica = BotProcess(env)
            replicas.append(replica)
            await replica.start()
        for replica in replicas:
            await replica.wait_for_log("webhook_listening", timeout=60)
        await telegram.wait_for(lambda: telegram.webhook is not None, timeout=20)
        try:
            yield Cluster(telegram, anthropic_fake, engine, proxy, replicas)
        finally:
            for replica in replicas:
                with contextlib.suppress(Exception):
                    await replica.stop()
            await engine.dispose()
    assert_no_leaks(replicas, telegram, anthropic_fake)


async def test_one_persons_rapid_messages_run_in_order_across_replicas(cluster: Cluster) -> None:
    telegram, anthropic = cluster.telegram, cluster.anthropic
    anthropic.set_default(slow_echo(0.3))
    user, words = 91001, [f"message number {n}" for n in range(6)]
    for text in words:
        telegram.push_text(user, text)
    await telegram.wait_for_sent(user, len(words), timeout=60)
    await poll_until(
        lambda: _all_finished(cluster.engine, user), 20, lambda: "updates still unfinished"
    )

    assert final_texts(telegram, user) == [f"Answer to: {text}" for text in words]
    asked = [last_text(r) for r in anthropic.message_requests()]
    assert asked == words  # one turn at a time: each asked after the previous was answered
    claimed_by = await rows(
        cluster.engine,
        "SELECT c.replica_id FROM update_claims c JOIN inbound_updates u USING (update_id) "
        "WHERE u.user_id = :u",
        u=user,
    )
    assert len({row[0] for row in claimed_by}) == 2  # both replicas took some of them
    calls = await assert_books_balanced(cluster.engine, user)
    assert len(calls) == len(words)
    assert all(call[1] == "ok" and call[3] > 0 for call in calls)
    for replica in cluster.replicas:
        assert replica.returncode is None


async def test_a_killed_replicas_turn_is_handed_back_without_loss_or_double_charge(
    cluster: Cluster,
) -> None:
    telegram, anthropic, engine = cluster.telegram, cluster.anthropic, cluster.engine
    user = 91002
    anthropic.set_default(slow_echo(0.2))
    quick = telegram.push_text(user, "a quick one first")
    await telegram.wait_for_sent(user, 1, timeout=30)
    await wait_update_finished(telegram, engine, quick, timeout=20)  # charged, hold closed

    anthropic.set_default(slow_echo(30.0))  # the next turn is still waiting on Claude when killed
    stuck = telegram.push_text(user, "this one is interrupted")
    await telegram.wait_for(lambda: len(anthropic.message_requests()) == 2, timeout=20)
    await poll_until(lambda: _open_holds_of(engine, user), 20, lambda: "the second turn never held")
    owner = await scalar(
        engine, "SELECT replica_id FROM update_claims WHERE update_id = :u", u=stuck
    )
    victim = next(r for r in cluster.replicas if f"-{r.pid}-" in owner)
    survivor = next(r for r in cluster.replicas if r is not victim)
    killed_at = asyncio.get_running_loop().time()
    await victim.stop(signal.SIGKILL)

    await telegram.wait_for_sent(user, 2, timeout=60)
    noticed_after = asyncio.get_running_loop().time() - killed_at
    assert final_texts(telegram, user)[1] == REPLICA_LOST_NOTICE
    assert noticed_after < 60

    async def notified() -> bool:
        sql = "SELECT status FROM inbound_updates WHERE update_id = :u"
        return await scalar(engine, sql, u=stuck) == "notified"

    await poll_until(notified, 10, lambda: "the interrupted update was not marked notified")
    calls = await assert_books_balanced(engine, user)  # the hold was released, nothing charged
    assert len(calls) == 1

    # The person sends it again: the surviving replica answers and charges it once.
    anthropic.set_default(slow_echo(0.1))
    again = telegram.push_text(user, "this one is interrupted, again")
    await telegram.wait_for_sent(user, 3, timeout=30)
    assert final_texts(telegram, user)[2] == "Answer to: this one is interrupted, again"
    await poll_until(lambda: _all_finished(engine, user), 20, lambda: "unfinished")
    calls = await assert_books_balanced(engine, user)
    assert len(calls) == 2
    owner_again = await scalar(
        engine, "SELECT replica_id FROM update_claims WHERE update_id = :u", u=again
    )
    assert f"-{survivor.pid}-" in owner_again
    assert survivor.returncode is None
    print(f"dead replica noticed and its person told after {noticed_after:.1f} s")


async def assert_books_balanced(engine: AsyncEngine, user: int) -> list[Any]:
    """Each ok call charged at its price, every other at 0; balance, ledger and calls agree; one
    ledger charge per charged call; no hold open. Returns the person's api_calls rows."""
    calls = await rows(
        engine,
        "SELECT purpose, status, provider_cost_micros, charged_micros FROM api_calls "
        "WHERE user_id = :u ORDER BY id",
        u=user,
    )
    for purpose, status, cost, charged in calls:
        assert charged == (cost if status == "ok" else 0), (purpose, status, cost, charged)
    balance = await scalar(engine, "SELECT balance_micros FROM users WHERE id = :u", u=user)
    assert balance == STARTER_MICROS - sum(call[3] for call in calls), (balance, calls)
    ledger = await scalar(
        engine, "SELECT sum(amount_micros) FROM balance_operations WHERE user_id = :u", u=user
    )
    assert ledger == balance
    charges = await scalar(
        engine,
        "SELECT count(*) FROM balance_operations WHERE user_id = :u AND kind = 'charge'",
        u=user,
    )
    assert charges == sum(1 for call in calls if call[3] > 0)
    held = await scalar(engine, "SELECT held_micros FROM users WHERE id = :u", u=user)
    assert held == 0
    assert await open_holds(engine) == 0
    return calls


async def _all_finished(engine: AsyncEngine, user: int) -> bool:
    pending = await scalar(
        engine,
        "SELECT count(*) FROM inbound_updates WHERE user_id = :u "
        "AND status IN ('received', 'processing', 'interrupted')",
        u=user,
    )
    return int(pending) == 0


async def _open_holds_of(engine: AsyncEngine, user: int) -> bool:
    held = await scalar(
        engine,
        "SELECT count(*) FROM balance_holds WHERE user_id = :u AND status = 'held'",
        u=user,
    )
    return int(held) > 0
