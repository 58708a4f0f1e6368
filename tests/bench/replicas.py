"""Benchmark: one replica against two in webhook mode, on one Postgres.

    uv run python -m tests.bench.replicas [--updates 2000] [--people 200] [--lease 30]

Starts a throwaway Postgres, the fake Telegram and Anthropic servers (in this process) and real bot
processes in webhook mode, then measures:

* acks/s: updates posted straight to the webhook endpoints (the inbox insert and claim path; the
  updates are `edited_message`s, which the dispatcher ignores, so no turn runs), 32 at a time,
  spread over the replicas as a load balancer would;
* turns/s: `--people` people each send one message at once through the fake Telegram's webhook
  delivery (round-robin proxy in front of the replicas), Telegram's limits lifted (the fake has none;
  the bot's pacing is raised to 10,000 messages/s), Claude answering
  at once; from the first post to the last answer; every answer checked, and order per person;
* burst: `--burst` people x 2 messages at once with Telegram's limits on (the fake's 1/s per chat
  and 30/s overall, with 429s), one replica and two; against the limit-bound time;
* takeover: one of two replicas is SIGKILLed in the middle of a turn; seconds until the other has
  told the person to send it again (bounded by the lease plus a third of it).

Everything runs on this machine, so the replicas, Postgres and the fakes share its cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.fakes.anthropic import Delay, FakeAnthropic, RecordedRequest, text_reply
from tests.fakes.balancer import RoundRobinProxy
from tests.fakes.telegram import FakeTelegram
from tests.harness import FAKE_BOT_TOKEN, BotProcess, bot_env
from tests.netutil import free_port
from tests.pg import TestPostgres

SECRET = "bench-webhook-secret"


def last_text(record: RecordedRequest) -> str:
    blocks = record.json["messages"][-1]["content"]
    return [b["text"] for b in blocks if b.get("type") == "text"][-1]


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.pg = TestPostgres()
        self.results: dict[str, Any] = {}
        self.data = Path(tempfile.mkdtemp(prefix="bench-replicas-"))

    async def start_replicas(
        self,
        count: int,
        telegram: FakeTelegram,
        anthropic: FakeAnthropic,
        url: str | None = None,
        **extra: str,
    ) -> tuple[list[BotProcess], list[int], str]:
        database = await self.pg.create_database()
        ports = [free_port() for _ in range(count)]
        processes = []
        for index, port in enumerate(ports):
            env = bot_env(
                database_url=self.pg.url_for(database),
                data_dir=self.data / f"{database}-{index}",
                telegram_url=telegram.base_url,
                anthropic_url=anthropic.base_url,
                gemini_url="http://127.0.0.1:9",
                BOT_MODE="webhook",
                WEBHOOK_URL=url or f"http://127.0.0.1:{ports[0]}/hook",
                WEBHOOK_LISTEN=f"127.0.0.1:{port}",
                WEBHOOK_SECRET=SECRET,
                REPLICA_LEASE_SECONDS=str(self.args.lease),
                MERGE_WINDOW_SECONDS="0",
                LOG_LEVEL="WARNING",
                RATE_LIMIT_MESSAGES_PER_MINUTE="1000",
                **extra,
            )
            process = BotProcess(env)
            processes.append(process)
            await process.start()
        deadline = time.monotonic() + 90
        for port in ports:
            while not await _listening(port):
                if time.monotonic() > deadline:
                    raise RuntimeError("a replica did not start listening")
                await asyncio.sleep(0.2)
        return processes, ports, database

    async def acks(self, replicas: int) -> float:
        async with FakeTelegram(token=FAKE_BOT_TOKEN) as telegram, FakeAnthropic() as anthropic:
            processes, ports, database = await self.start_replicas(replicas, telegram, anthropic)
            try:
                total, next_id = self.args.updates, iter(range(5_000_000, 5_000_000 + 10**7))
                headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
                async with aiohttp.ClientSession() as http:

                    async def worker(worker_id: int) -> None:
                        url = f"http://127.0.0.1:{ports[worker_id % len(ports)]}/hook"
                        while (update_id := next(next_id)) < 5_000_000 + total:
                            body = {
                                "update_id": update_id,
                                "edited_message": {
                                    "message_id": 1,
                                    "date": 0,
                                    "edit_date": 0,
                                    "chat": {"id": 1 + update_id % 500, "type": "private"},
                                    "text": "x",
                                },
                            }
                            async with http.post(url, json=body, headers=headers) as response:
                                assert response.status == 200, response.status

                    started = time.perf_counter()
                    await asyncio.gather(*(worker(n) for n in range(32)))
                    elapsed = time.perf_counter() - started
            finally:
                for process in processes:
                    await process.stop()
                await self.pg.drop_database(database)
        return round(total / elapsed, 1)

    async def turns(self, replicas: int) -> dict[str, float]:
        async with FakeTelegram(token=FAKE_BOT_TOKEN) as telegram, FakeAnthropic() as anthropic:
            anthropic.set_default(lambda r: text_reply(f"Answer to: {last_text(r)}"))
            async with RoundRobinProxy([]) as proxy:
                processes, _, database = await self._start_behind(
                    replicas,
                    telegram,
                    anthropic,
                    proxy,
                    TELEGRAM_GLOBAL_RATE="10000",
                    TELEGRAM_CHAT_RATE="1000",
                )
                try:
                    await telegram.wait_for(lambda: telegram.webhook is not None, timeout=30)
                    people = list(range(700_000, 700_000 + self.args.people))
                    started = time.perf_counter()
                    for person in people:
                        telegram.push_text(person, f"hello from {person}")
                    await telegram.wait_for(
                        lambda: all(len(telegram.sent(p)) >= 1 for p in people), timeout=600
                    )
                    elapsed = time.perf_counter() - started
                    wrong = [
                        p
                        for p in people
                        if telegram.sent(p)[0].text != f"Answer to: hello from {p}"
                    ]
                    assert not wrong, wrong[:5]
                finally:
                    for process in processes:
                        await process.stop()
                    await self.pg.drop_database(database)
        return {"turns_per_second": round(len(people) / elapsed, 1), "seconds": round(elapsed, 2)}

    async def burst(self, replicas: int) -> dict[str, Any]:
        """`--burst` people x 2 messages at once, Telegram's limits on (1/s per chat, 30/s overall,
        429s from the fake); no answer lost, each person's answers in order."""
        people_count, per_person = self.args.burst, 2
        async with (
            FakeTelegram(
                token=FAKE_BOT_TOKEN, per_chat_rate=1.0, global_rate=30.0, global_burst=30
            ) as telegram,
            FakeAnthropic() as anthropic,
        ):
            anthropic.set_default(lambda r: text_reply(f"Answer to: {last_text(r)}"))
            async with RoundRobinProxy([]) as proxy:
                processes, _, database = await self._start_behind(
                    replicas, telegram, anthropic, proxy
                )
                try:
                    await telegram.wait_for(lambda: telegram.webhook is not None, timeout=30)
                    await asyncio.sleep(2 * self.args.lease / 3)  # the replicas counted each other
                    people = list(range(900_000, 900_000 + people_count))
                    started = time.perf_counter()
                    for index in range(per_person):
                        for person in people:
                            telegram.push_text(person, f"m{index} from {person}")
                    await telegram.wait_for(
                        lambda: all(len(_finals(telegram, p)) >= per_person for p in people),
                        timeout=900,
                    )
                    elapsed = time.perf_counter() - started
                    out_of_order = [
                        p
                        for p in people
                        if _finals(telegram, p)
                        != [f"Answer to: m{i} from {p}" for i in range(per_person)]
                    ]
                finally:
                    for process in processes:
                        await process.stop()
                    await self.pg.drop_database(database)
        floor = people_count * per_person / 30.0
        return {
            "seconds": round(elapsed, 1),
            "limit_bound_seconds": round(floor, 1),
            "vs_limit": round(elapsed / floor, 2),
            "out_of_order_or_lost": len(out_of_order),
            "telegram_429s": telegram.rate_limited_count,
        }

    async def _start_behind(
        self,
        replicas: int,
        telegram: FakeTelegram,
        anthropic: FakeAnthropic,
        proxy: RoundRobinProxy,
        **extra: str,
    ) -> tuple[list[BotProcess], list[int], str]:
        processes, ports, database = await self.start_replicas(
            replicas, telegram, anthropic, url=f"{proxy.base_url}/hook", **extra
        )
        proxy.backends = [f"http://127.0.0.1:{p}" for p in ports]
        return processes, ports, database

    async def takeover(self) -> float:
        async with FakeTelegram(token=FAKE_BOT_TOKEN) as telegram, FakeAnthropic() as anthropic:
            anthropic.set_default(lambda r: Delay(300, text_reply("late")))
            async with RoundRobinProxy([]) as proxy:
                processes, _, database = await self._start_behind(2, telegram, anthropic, proxy)
                try:
                    await telegram.wait_for(lambda: telegram.webhook is not None, timeout=30)
                    await asyncio.sleep(1.0)
                    telegram.push_text(800_001, "interrupted")
                    await telegram.wait_for(lambda: len(anthropic.message_requests()) == 1, 30)
                    victim = await self._owner(processes, database)
                    killed = time.perf_counter()
                    await victim.stop(signal.SIGKILL)
                    await telegram.wait_for(
                        lambda: len(telegram.sent(800_001)) >= 1, timeout=4 * self.args.lease
                    )
                    return round(time.perf_counter() - killed, 1)
                finally:
                    for process in processes:
                        await process.stop()
                    await self.pg.drop_database(database)

    async def _owner(self, processes: list[BotProcess], database: str) -> BotProcess:
        import asyncpg
        from sqlalchemy.engine import make_url

        url = make_url(self.pg.url_for(database))
        conn = await asyncpg.connect(
            user=url.username,
            password=url.password,
            database=url.database,
            host=url.query.get("host") or url.host,
            port=url.port,
        )
        try:
            replica = await conn.fetchval("SELECT replica_id FROM turn_leases LIMIT 1")
        finally:
            await conn.close()
        return next(p for p in processes if f"-{p.pid}-" in replica)

    async def run(self) -> int:
        self.pg.start()
        try:
            await self.pg.create_template()
            if self.args.only_burst:
                for replicas in (1, 2):
                    self.results[f"burst_{replicas}"] = await self.burst(replicas)
                    print(json.dumps(self.results), flush=True)
                return 0
            for replicas in (1, 2):
                self.results[f"acks_per_second_{replicas}"] = await self.acks(replicas)
                print(json.dumps(self.results), flush=True)
            for replicas in (1, 2):
                self.results[f"turns_{replicas}"] = await self.turns(replicas)
                print(json.dumps(self.results), flush=True)
            self.results["takeover_seconds"] = await self.takeover()
            print(json.dumps(self.results), flush=True)
            if self.args.burst:
                for replicas in (1, 2):
                    self.results[f"burst_{replicas}"] = await self.burst(replicas)
                    print(json.dumps(self.results), flush=True)
        finally:
            self.pg.stop()
        print(json.dumps(self.results, indent=2))
        return 0


def _finals(telegram: FakeTelegram, person: int) -> list[str]:
    return [i.text or "" for i in telegram.sent(person) if i.method == "sendMessage"]


async def _listening(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    return True


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--updates", type=int, default=2000)
    parser.add_argument("--people", type=int, default=200)
    parser.add_argument("--lease", type=float, default=30.0)
    parser.add_argument(
        "--burst", type=int, default=500, help="people in the limited burst; 0: skip"
    )
    parser.add_argument("--only-burst", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    return asyncio.run(Bench(args).run())


if __name__ == "__main__":
    sys.exit(main())
