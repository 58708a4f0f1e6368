"""Benchmark: the bot's own overhead, throughput, memory, start-up and prompt-cache efficiency.

    uv run python -m tests.bench [--quick] [--images-only] [--inputs-only] [--json results.json]

Starts a throwaway Postgres, the fake Telegram/Anthropic/Gemini servers (in this process) and the
real bot process, drives simulated users through the fake Telegram, and prints the figures. Exits
non-zero if a turn was lost. Overhead = time from the update being handed to getUpdates until the
final reply reaches the fake Telegram, minus the time spent inside the fake providers. CPU and
memory are those of the bot's whole process tree, the bot and its child processes (the PDF
checker, the image worker): see tests/bench/meter.py.

The image phases use photo-like images (gradients and noise; a 4K PNG is 20-30 MB): overhead per
image turn beyond the providers' time (decode, strip, re-encode for the photo, Files API upload,
sendPhoto and sendDocument), p50/p99 at 2K and 4K, and peak RSS with 8 concurrent 4K generations
while another person chats. `--images-only` runs just those.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import io
import itertools
import json
import os
import random
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from PIL import Image
from sqlalchemy.engine import make_url

from tests.bench.meter import ProcessMeter
from tests.fakes.anthropic import FakeAnthropic, RecordedRequest, Reply, prompt_segments, text_reply
from tests.fakes.anthropic import tool_use_block as _tool_use_block
from tests.fakes.gemini import (
    FakeGemini,
    GeminiRequest,
    ImageReply,
    TranscriptReply,
    image_reply,
    output_size,
    raw_bytes_reply,
)
from tests.fakes.telegram import FakeTelegram
from tests.harness import FAKE_BOT_TOKEN, BotProcess, bot_env
from tests.media_samples import ogg_opus, pdf
from tests.pg import TestPostgres

ANSWER = (
    "Here is a short answer with **bold** text, a list:\n\n- one\n- two\n\n"
    "and some `inline code`. " + "Words to stream. " * 20
)
# A simulated person reads the answer before writing again: on average this long (uniformly
# 0.5x to 1.5x), first messages spread over the same span. With 50 users the offered load is about
# 12 replies/s, well under the 30 messages/s the bot paces itself to, so the figures show the bot's
# own overhead rather than queueing for Telegram's limit (the limited phases measure that; at 2 s,
# 25 replies/s, the pacer's queue shows in the p99). One person alone writes again after 1 s.
THINK_SECONDS = 4.0
THINK_SECONDS_ALONE = 1.0
SONNET = {"input": 2_000_000, "output": 10_000_000, "cache_write": 2_500_000, "cache_read": 100_000}


@dataclass
class Turn:
    user: int
    index: int
    sent_at: float
    replied_at: float | None = None
    provider_seconds: float = 0.0
    kind: str = "text"
    replies_from: int = 0  # the chat's sent items before this turn: its reply comes later

    @property
    def latency(self) -> float:
        assert self.replied_at is not None
        return self.replied_at - self.sent_at

    @property
    def overhead_ms(self) -> float:
        return (self.latency - self.provider_seconds) * 1000


@dataclass
class PhaseResult:
    name: str
    turns: int
    lost: int
    wall_seconds: float
    overhead_ms: dict[str, float] = field(default_factory=dict)
    cpu_ms_per_turn: float = 0.0
    db_transactions_per_turn: float = 0.0
    db_round_trips_per_turn: float | None = None
    telegram_calls_per_turn: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


class ProviderTimes:
    """Time inside the fake Anthropic per turn tag. Each finished request is read once: the phase
    with a chatter asks after every turn, and re-reading every request each time (hundreds, each
    conversation re-serialized) grew quadratically, on the two cores the bot runs on."""

    def __init__(self) -> None:
        self._read = 0
        self._unfinished: list[RecordedRequest] = []
        self._seconds: dict[str, float] = {}

    def of(self, anthropic: FakeAnthropic, needle: str) -> float:
        requests = anthropic.requests
        if len(requests) < self._read:  # the fake's record was cleared
            self._read, self._unfinished, self._seconds = 0, [], {}
        waiting = self._unfinished + requests[self._read :]
        self._read, self._unfinished = len(requests), []
        for request in waiting:
            if not request.path.endswith("/v1/messages"):
                continue
            if request.duration is None:
                self._unfinished.append(request)
                continue
            key = turn_tag(request.json or {})
            self._seconds[key] = self._seconds.get(key, 0.0) + request.duration
        return self._seconds.get(needle, 0.0)


async def loop_lag_while_decoding(images: int) -> dict[str, float]:
    """`tests.bench.decode_lag` in a process of its own (set up as the bot's is)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.bench.decode_lag",
        str(images),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"tests.bench.decode_lag exited with {process.returncode}")
    figures: dict[str, float] = json.loads(out.decode().strip().splitlines()[-1])
    return figures


@contextlib.contextmanager
def harness_gc_paused() -> Iterator[None]:
    """The fakes run in this process and keep every request they saw; a collection here would
    stall them for tens of milliseconds and count as the bot's overhead. Collect between phases."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {"p50": pick(0.50), "p95": pick(0.95), "p99": pick(0.99), "max": round(ordered[-1], 2)}


def tag(user: int, index: int) -> str:
    return f"[u{user}-t{index}]"


def last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        texts = [b.get("text", "") for b in content if isinstance(b, dict)]
        results = [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]
        return "TOOL_RESULT" if results else " ".join(texts)
    return ""


TAG = re.compile(r"\[u\d+-t\d+\]")


def turn_tag(body: dict[str, Any]) -> str:
    """The tag of the latest user message that carries one (tool results carry none)."""
    for message in reversed(body.get("messages") or []):
        found = TAG.findall(json.dumps(message.get("content")))
        if message.get("role") == "user" and found:
            return str(found[-1])
    return ""


def responder(request: RecordedRequest) -> Reply:
    """Text answers that echo the turn's tag; a "draw" message first calls generate_image (at the
    size the message names: "draw ... 4K"; 1K otherwise)."""
    body = request.json or {}
    text = last_user_text(body)
    if text == "TOOL_RESULT":
        return text_reply(f"{turn_tag(body)} Here is your image. " + ANSWER[:80])
    if "draw" in text:
        size = next((s for s in ("4K", "2K") if s in text), "1K")
        ratio = "16:9" if size != "1K" else "1:1"
        return Reply(
            content=[
                {"type": "text", "text": "Drawing it now."},
                _tool_use_block(
                    "generate_image",
                    {"prompt": "a small red cat", "image_size": size, "aspect_ratio": ratio},
                ),
            ],
            stop_reason="tool_use",
        )
    return text_reply(f"{turn_tag(body)} " + ANSWER)


def photo_png(width: int, height: int) -> bytes:
    """A photo-like PNG: colour gradients under per-pixel noise, which compresses as badly as a
    photograph does (about 6 MB at 2K and 25 MB at 4K), unlike a flat test colour."""
    gx = Image.linear_gradient("L").resize((width, height))
    gy = Image.linear_gradient("L").rotate(90).resize((width, height))
    base = Image.merge("RGB", (gx, gy, Image.blend(gx, gy, 0.5)))
    noise = Image.merge("RGB", tuple(Image.effect_noise((width, height), 14) for _ in range(3)))
    out = io.BytesIO()
    Image.blend(base, noise, 0.25).save(out, "PNG", compress_level=6)
    return out.getvalue()


VOICE_NOTE = ogg_opus(8)  # an 8-second voice note, about 25 KB


def voice_note(user: int, index: int) -> bytes:
    """The 8-second voice note with a few bytes of filler unique to the turn (under 1 KB), so
    that the fake Gemini's request for it can be told apart from the others in flight."""
    return ogg_opus(8, padding=1 + (user % 100) * 10 + index % 10)


GEMINI_IMAGE_LATENCY = 2.0  # seconds the fake Gemini takes per image in the concurrent phase
CHAT_PAUSE = 0.25  # seconds a person chatting during the images waits after each reply
PDF_FILE = pdf(5, "A page of the benchmark report with some words on it")
TRANSCRIPT = "tell me something about this voice note"


def gemini_responder(request: GeminiRequest) -> TranscriptReply | ImageReply:
    """Transcripts for audio, images for everything else."""
    return TranscriptReply(TRANSCRIPT) if request.audio else image_reply()


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.results: list[PhaseResult] = []
        self.figures: dict[str, Any] = {}
        self.pg = TestPostgres()
        self.statement_log: Path | None = None
        self.last_turns: list[Turn] = []
        self._provider_times: tuple[FakeAnthropic, ProviderTimes] | None = None

    async def _connect(self, database: str) -> asyncpg.Connection:
        url = make_url(self.pg.url_for(database))
        return await asyncpg.connect(
            user=url.username,
            password=url.password,
            database=database,
            host=url.query.get("host") or url.host,
            port=url.port,
        )

    async def enable_statement_log(self) -> None:
        """The throwaway server logs every statement with its database, so that a phase can count
        the bot's round trips: each logged statement is one request the bot sent and waited for."""
        if os.environ.get("TEST_DATABASE_URL"):
            return  # not our server to reconfigure
        conn = await self._connect("postgres")
        try:
            await conn.execute("ALTER SYSTEM SET log_statement = 'all'")
            await conn.execute("ALTER SYSTEM SET log_line_prefix = '%d '")
            await conn.execute("SELECT pg_reload_conf()")
            log = Path(await conn.fetchval("SHOW data_directory")) / "log"
        finally:
            await conn.close()
        self.statement_log = log if log.is_file() else None

    def db_round_trips(self, database: str) -> int | None:
        """Statements `database` has received so far (BEGIN and COMMIT included)."""
        if self.statement_log is None:
            return None
        markers = (f"{database} LOG:  statement: ", f"{database} LOG:  execute ")
        with self.statement_log.open(errors="replace") as log:
            return sum(1 for line in log if line.startswith(markers))

    async def db_transactions(self, database: str) -> int:
        conn = await self._connect("postgres")
        try:
            row = await conn.fetchrow(
                "SELECT xact_commit + xact_rollback AS n FROM pg_stat_database WHERE datname = $1",
                database,
            )
            return int(row["n"]) if row else 0
        finally:
            await conn.close()

    async def run(self) -> int:
        self.pg.start()
        await self.pg.create_template()
        await self.enable_statement_log()
        if self.args.images_only:
            try:
                await self.image_phases()
            finally:
                self.pg.stop()
            self.report()
            return 1 if any(r.lost for r in self.results) else 0
        try:
            if not self.args.inputs_only:
                await self.measure_startup()
            async with (
                FakeTelegram(token=FAKE_BOT_TOKEN) as telegram,
                FakeAnthropic(default=responder) as anthropic,
                FakeGemini(default=gemini_responder) as gemini,
            ):
                if self.args.inputs_only:
                    await self.inputs_phase(telegram, anthropic, gemini)
                    self.report()
                    return 1 if any(r.lost for r in self.results) else 0
                await self.overhead_phases(telegram, anthropic, gemini)
                await self.inputs_phase(telegram, anthropic, gemini)
                await self.long_conversation(telegram, anthropic, gemini)
                await self.memory_over_waves(telegram, anthropic, gemini)
                await self.cache_efficiency(telegram, anthropic, gemini)
            await self.limited_phases()
            await self.image_phases()
        finally:
            self.pg.stop()
        self.report()
        return 1 if any(r.lost for r in self.results) else 0

    async def start_bot(
        self, telegram: FakeTelegram, anthropic: FakeAnthropic, gemini: FakeGemini, **env: str
    ) -> tuple[BotProcess, str]:
        database = await self.pg.create_database()
        settings = bot_env(
            database_url=self.pg.url_for(database),
            data_dir=Path(tempfile.mkdtemp(prefix="bench-data-")),
            telegram_url=telegram.base_url,
            anthropic_url=anthropic.base_url,
            gemini_url=gemini.base_url,
            **{
                "LOG_LEVEL": "WARNING",
                "STARTER_BALANCE_USD": "1000",
                "RATE_LIMIT_MESSAGES_PER_MINUTE": "100000",
                "RATE_LIMIT_IMAGES_PER_HOUR": "100000",
                "DRAFT_INTERVAL_SECONDS": "0.5",
                **env,
            },
        )
        bot = BotProcess(settings)
        await bot.start_polling(telegram, timeout=60)
        return bot, database

    async def measure_startup(self) -> None:
        """Time from process start to the first getUpdates, with an existing embedded Postgres."""
        data_dir = Path(tempfile.mkdtemp(prefix="bench-embedded-"))
        times = []
        async with FakeTelegram(token=FAKE_BOT_TOKEN) as telegram, FakeAnthropic() as anthropic:
            env = bot_env(
                database_url="",
                data_dir=data_dir,
                telegram_url=telegram.base_url,
                anthropic_url=anthropic.base_url,
                gemini_url=anthropic.base_url,
                LOG_LEVEL="WARNING",
            )
            env.pop("DATABASE_URL")
            for _ in range(3):
                bot = BotProcess(env)
                polls = len(telegram.get_updates_times)
                started = time.monotonic()
                await bot.start()
                await telegram.wait_for(
                    lambda n=polls: len(telegram.get_updates_times) > n, timeout=90
                )
                times.append(telegram.get_updates_times[polls] - started)
                await bot.stop()
        self.figures["startup_first_run_seconds"] = round(times[0], 2)
        self.figures["startup_existing_postgres_seconds"] = round(min(times[1:]), 2)

    async def drive(
        self,
        telegram: FakeTelegram,
        anthropic: FakeAnthropic,
        users: list[int],
        turns_per_user: int,
        *,
        kind_of: Callable[[int, int], str] = lambda u, t: "text",
        gap: float = 0.0,
        think: float = 0.0,
        timeout: float = 120.0,
        first_index: int = 0,
        image_size: str = "1K",
    ) -> list[Turn]:
        """Each user sends `turns_per_user` messages; waits for each final reply unless `gap` > 0.

        `think` is how long a user reads a reply before writing again. Turns are numbered from
        `first_index`: a user who comes back must not reuse a number (replies are matched by it).
        """
        done: list[Turn] = []

        async def one_user(user: int) -> None:
            pending: list[Turn] = []
            rng = random.Random(user)
            if think:
                # People do not all write at the same instant.
                await asyncio.sleep(rng.uniform(0, think))
            for index in range(first_index, first_index + turns_per_user):
                kind = kind_of(user, index)
                words = (
                    f"please draw a cat {image_size}" if kind == "image" else "tell me something"
                )
                turn = Turn(
                    user=user,
                    index=index,
                    sent_at=time.monotonic(),
                    kind=kind,
                    replies_from=telegram.sent_count(user),
                )
                if kind == "voice":
                    telegram.push_voice(
                        user, voice_note(user, index), duration=8, caption=tag(user, index)
                    )
                elif kind == "pdf":
                    telegram.push_document(
                        user,
                        PDF_FILE,
                        filename="report.pdf",
                        mime_type="application/pdf",
                        caption=f"{tag(user, index)} what is this?",
                    )
                else:
                    telegram.push_text(user, f"{tag(user, index)} {words}")
                pending.append(turn)
                if gap > 0:
                    await asyncio.sleep(gap)
                    continue
                await self._await_reply(telegram, user, turn, timeout)
                if think and index + 1 < first_index + turns_per_user:
                    await asyncio.sleep(rng.uniform(0.5, 1.5) * think)
            for turn in pending:
                if turn.replied_at is None:
                    await self._await_reply(telegram, user, turn, timeout)
            done.extend(pending)

        await asyncio.gather(*(one_user(u) for u in users))
        for turn in done:
            turn.provider_seconds = self._provider_time(anthropic, turn)
        return done

    async def _await_reply(
        self, telegram: FakeTelegram, user: int, turn: Turn, timeout: float
    ) -> None:
        needle = tag(user, turn.index)

        def reply() -> Any:
            for item in telegram.sent_since(user, turn.replies_from):
                if item.method == "sendMessage" and needle in (item.text or ""):
                    return item
            return None

        try:
            await telegram.wait_for(lambda: reply() is not None, timeout=timeout)
        except AssertionError:
            return
        turn.replied_at = reply().time

    def _provider_time(self, anthropic: FakeAnthropic, turn: Turn) -> float:
        if self._provider_times is None or self._provider_times[0] is not anthropic:
            self._provider_times = (anthropic, ProviderTimes())
        return self._provider_times[1].of(anthropic, tag(turn.user, turn.index))

    def summarize(
        self, name: str, turns: list[Turn], wall: float, cpu: float, xacts: int, tg_calls: int
    ) -> PhaseResult:
        answered = [t for t in turns if t.replied_at is not None]
        text_turns = [t for t in answered if t.kind == "text"]
        result = PhaseResult(
            name=name,
            turns=len(answered),
            lost=len(turns) - len(answered),
            wall_seconds=round(wall, 2),
            overhead_ms=percentiles([t.overhead_ms for t in text_turns]),
            cpu_ms_per_turn=round(cpu * 1000 / max(1, len(answered)), 2),
            db_transactions_per_turn=round(xacts / max(1, len(answered)), 2),
            telegram_calls_per_turn=round(tg_calls / max(1, len(answered)), 2),
        )
        result.extra["turns_per_second"] = round(len(answered) / wall, 2) if wall else 0
        self.results.append(result)
        return result

    async def phase(
        self,
        name: str,
        telegram: FakeTelegram,
        anthropic: FakeAnthropic,
        gemini: FakeGemini,
        users: int,
        turns: int,
        *,
        ttft: float,
        kind_of: Callable[[int, int], str] = lambda u, t: "text",
        gap: float = 0.0,
        think: float = 0.0,
        env: dict[str, str] | None = None,
        user_base: int = 10_000,
        warmup_kind_of: Callable[[int, int], str] = lambda u, t: "text",
    ) -> PhaseResult:
        anthropic.ttft = ttft
        bot, database = await self.start_bot(telegram, anthropic, gemini, **(env or {}))
        meter = ProcessMeter(bot.pid)
        ids = [user_base + i for i in range(users)]
        # Warm-up turn per process, not measured (first-use costs of the bot's own code paths).
        await self.drive(telegram, anthropic, [user_base - 1], 2, kind_of=warmup_kind_of)
        cpu0, x0 = meter.cpu_seconds(), await self.db_transactions(database)
        trips0 = self.db_round_trips(database)
        tg0 = len([r for r in telegram.requests if r.method != "getUpdates"])
        with harness_gc_paused():
            started = time.monotonic()
            result_turns = await self.drive(
                telegram, anthropic, ids, turns, kind_of=kind_of, gap=gap, think=think, timeout=300
            )
            wall = time.monotonic() - started
        cpu = meter.cpu_seconds() - cpu0
        xacts = await self.db_transactions(database) - x0
        tg_calls = len([r for r in telegram.requests if r.method != "getUpdates"]) - tg0
        self.last_turns = result_turns
        result = self.summarize(name, result_turns, wall, cpu, xacts, tg_calls)
        trips = self.db_round_trips(database)
        if trips is not None and trips0 is not None:
            result.db_round_trips_per_turn = round((trips - trips0) / max(1, result.turns), 2)
        result.extra.update(meter.peaks())
        result.extra["ordered"] = all_in_order(telegram, ids)
        meter.close()
        await bot.stop()
        return result

    async def overhead_phases(
        self, telegram: FakeTelegram, anthropic: FakeAnthropic, gemini: FakeGemini
    ) -> None:
        quick = self.args.quick
        for ttft in (0.0, 1.0):
            for users in (1, 50):
                turns = (10 if users == 50 else 30) if not quick else 4
                if ttft:
                    turns = max(3, turns // 3)
                await self.phase(
                    f"text, {users} user(s), Anthropic latency {ttft:.0f} s",
                    telegram,
                    anthropic,
                    gemini,
                    users,
                    turns,
                    ttft=ttft,
                    think=THINK_SECONDS if users > 1 else THINK_SECONDS_ALONE,
                    user_base=100_000 * (1 + len(self.results)),
                )
        await self.phase(
            "mixed (10% image generations), 20 users",
            telegram,
            anthropic,
            gemini,
            20,
            5 if not quick else 2,
            ttft=0.0,
            kind_of=lambda u, t: "image" if (u + t) % 10 == 0 else "text",
            think=THINK_SECONDS,
            user_base=900_000,
        )

    async def inputs_phase(
        self, telegram: FakeTelegram, anthropic: FakeAnthropic, gemini: FakeGemini
    ) -> None:
        """Voice notes and PDFs among text turns: the overhead of each kind beyond the providers'
        time (the fake Gemini's time on a turn's voice note is subtracted as Claude's is), and
        peak memory against the text phases."""
        kinds = ("text", "voice", "pdf", "text")
        result = await self.phase(
            "inputs (voice notes and 5-page PDFs among text), 20 users",
            telegram,
            anthropic,
            gemini,
            20,
            8 if not self.args.quick else 4,
            ttft=0.0,
            kind_of=lambda u, t: kinds[(u + t) % len(kinds)],
            think=THINK_SECONDS,
            user_base=800_000,
            # First use of google-genai (0.5 s import) and pypdf is not the steady state.
            warmup_kind_of=lambda u, t: ("voice", "pdf")[t % 2],
        )
        turns = self.last_turns
        transcribing = {
            len(r.audio[0].data): r.provider_seconds or 0.0 for r in gemini.requests if r.audio
        }
        for turn in turns:
            if turn.kind == "voice":
                turn.provider_seconds += transcribing.get(len(voice_note(turn.user, turn.index)), 0)
        for kind in ("voice", "pdf"):
            done = [t for t in turns if t.kind == kind and t.replied_at is not None]
            result.extra[f"overhead_ms_{kind}"] = percentiles([t.overhead_ms for t in done])
        result.extra["file_bytes"] = {"voice": len(VOICE_NOTE), "pdf": len(PDF_FILE)}

    async def long_conversation(
        self, telegram: FakeTelegram, anthropic: FakeAnthropic, gemini: FakeGemini
    ) -> None:
        anthropic.ttft = 0.0
        turns = 200 if not self.args.quick else 40
        # One person writing back to back (a turn every ~15 ms): the bot's pacing (1 message/s per
        # chat, 30/s overall) is lifted so the figure shows how the bot's own work grows with the
        # conversation, not Telegram's limits (the limited phases measure those).
        bot, _ = await self.start_bot(
            telegram, anthropic, gemini, TELEGRAM_CHAT_RATE="1000", TELEGRAM_GLOBAL_RATE="1000"
        )
        user = 2_000_000
        with harness_gc_paused():
            result = await self.drive(telegram, anthropic, [user], turns, timeout=120)
        await bot.stop()
        answered = [t for t in result if t.replied_at is not None]
        first = [t.overhead_ms for t in answered[:10]]
        last = [t.overhead_ms for t in answered[-11:]]
        self.figures["long_conversation_turns"] = len(answered)
        self.figures["long_conversation_lost"] = len(result) - len(answered)
        self.figures["overhead_turn_1_10_median_ms"] = round(statistics.median(first), 2)
        self.figures["overhead_last_10_median_ms"] = round(statistics.median(last), 2)
        self.figures["overhead_growth_ratio"] = round(
            statistics.median(last) / max(0.01, statistics.median(first)), 2
        )

    async def memory_over_waves(
        self, telegram: FakeTelegram, anthropic: FakeAnthropic, gemini: FakeGemini
    ) -> None:
        """The same 50 people come back in waves: memory must not grow with the turns served."""
        anthropic.ttft = 0.0
        bot, _ = await self.start_bot(telegram, anthropic, gemini)
        meter = ProcessMeter(bot.pid)
        users = [7_000_000 + i for i in range(50)]
        rss = []
        for wave in range(4 if not self.args.quick else 2):
            turns = await self.drive(telegram, anthropic, users, 3, first_index=3 * wave)
            assert all(t.replied_at is not None for t in turns), "a turn of a wave was lost"
            rss.append(round(meter.rss_mb(), 1))
        meter.close()
        await bot.stop()
        self.figures["rss_mb_after_each_wave_of_50_users_x_3"] = rss

    async def cache_efficiency(
        self, telegram: FakeTelegram, anthropic: FakeAnthropic, gemini: FakeGemini
    ) -> None:
        """A scripted 10-turn conversation: how much of each request a prefix cache could serve."""
        anthropic.ttft = 0.0
        anthropic.cache.clear()  # a cold cache, as for a new deployment's first conversation
        bot, database = await self.start_bot(telegram, anthropic, gemini)
        user = 3_000_000
        first_request = len(anthropic.requests)
        await self.drive(telegram, anthropic, [user], 10)
        await bot.stop()
        bodies = [
            r.json
            for r in anthropic.requests[first_request:]
            if r.path.endswith("/v1/messages") and tag(user, 0)[:-3] in json.dumps(r.json)
        ]
        segments = [prompt_segments(body, anthropic.files) for body in bodies]
        sizes = [sum(seg.tokens for seg in request) for request in segments]
        common = [0] + [common_prefix_tokens(a, b) for a, b in itertools.pairwise(segments)]
        shared = sum(common[1:])
        total = sum(sizes[1:])
        # The ideal: a clairvoyant cache that reads every repeated prefix, writes exactly the new
        # tokens the next request will repeat, and sends the rest as plain input.
        ideal = 0
        for i, size in enumerate(sizes):
            reused = common[i]
            kept = max(reused, common[i + 1] if i + 1 < len(sizes) else 0)
            ideal += (
                reused * SONNET["cache_read"]
                + (kept - reused) * SONNET["cache_write"]
                + (size - kept) * SONNET["input"]
            )
        actual = await self._actual_prompt_cost(database)
        self.figures["cache_requests"] = len(bodies)
        self.figures["cacheable_input_share_turn_2_on"] = round(shared / max(1, total), 4)
        self.figures["cache_read_share_turn_2_on"] = actual["read_share"]
        self.figures["conversation_prompt_cost_vs_ideal"] = round(
            actual["prompt_micros_x1m"] / max(1, ideal), 3
        )

    async def _actual_prompt_cost(self, database: str) -> dict[str, Any]:
        conn = await self._connect(database)
        try:
            rows = await conn.fetch(
                "SELECT input_tokens, cache_read_tokens, cache_write_tokens FROM api_calls "
                "WHERE purpose = 'chat' ORDER BY id"
            )
        finally:
            await conn.close()
        cost = sum(
            r["input_tokens"] * SONNET["input"]
            + r["cache_read_tokens"] * SONNET["cache_read"]
            + r["cache_write_tokens"] * SONNET["cache_write"]
            for r in rows
        )
        later = rows[1:]
        reads = sum(r["cache_read_tokens"] for r in later)
        everything = sum(
            r["input_tokens"] + r["cache_read_tokens"] + r["cache_write_tokens"] for r in later
        )
        return {"prompt_micros_x1m": cost, "read_share": round(reads / max(1, everything), 4)}

    async def image_phases(self) -> None:
        """Photo-like 2K and 4K images: the bot's overhead per image turn beyond the providers'
        time, and peak memory with 8 concurrent 4K generations while another person chats.

        Telegram pacing is lifted (as in the long conversation) so the figures show the bot's own
        work on the image, not the 1 message/s per chat an image turn's several messages wait for.
        """
        quick = self.args.quick
        photos = {
            size: photo_png(*output_size("16:9", size, realistic=True)) for size in ("2K", "4K")
        }
        self.figures["image_png_mb"] = {k: round(len(v) / 1e6, 1) for k, v in photos.items()}
        self.figures["loop_lag_ms_while_decoding_4k"] = await loop_lag_while_decoding(
            4 if quick else 12
        )
        fast = {"TELEGRAM_CHAT_RATE": "1000", "TELEGRAM_GLOBAL_RATE": "1000"}
        async with (
            FakeTelegram(token=FAKE_BOT_TOKEN) as telegram,
            FakeAnthropic(default=responder) as anthropic,
            FakeGemini() as gemini,
        ):
            anthropic.ttft = 0.0
            for size, turns in (("2K", 4 if quick else 20), ("4K", 3 if quick else 10)):
                gemini.set_default(raw_bytes_reply(photos[size], "image/png"))
                bot, _ = await self.start_bot(telegram, anthropic, gemini, **fast)
                meter = ProcessMeter(bot.pid)
                user = 8_000_000 + len(self.results)
                image = lambda u, t: "image"  # noqa: E731
                await self.drive(telegram, anthropic, [user - 1], 1, kind_of=image, image_size=size)
                cpu0 = meter.cpu_seconds()
                with harness_gc_paused():
                    done = await self.drive(
                        telegram, anthropic, [user], turns, kind_of=image, image_size=size
                    )
                cpu = meter.cpu_seconds() - cpu0
                answered = [t for t in done if t.replied_at is not None]
                overhead = [
                    (t.latency - t.provider_seconds - self._gemini_time(gemini, t)) * 1000
                    for t in answered
                ]
                result = PhaseResult(
                    name=f"image turns at {size} (photo-like PNG), 1 user",
                    turns=len(answered),
                    lost=len(done) - len(answered),
                    wall_seconds=round(sum(t.latency for t in answered), 2),
                    overhead_ms=percentiles(overhead),
                    cpu_ms_per_turn=round(cpu * 1000 / max(1, len(answered)), 1),
                )
                result.extra.update(meter.peaks())
                result.extra["provider_ms_p50"] = percentiles(
                    [(t.latency * 1000 - o) for t, o in zip(answered, overhead, strict=True)]
                ).get("p50")
                self.results.append(result)
                self.figures[f"image_{size}_overhead_ms"] = result.overhead_ms
                meter.close()
                await bot.stop()

            # 8 people draw a 4K image at once; a ninth chats while the answers are processed.
            gemini.set_default(raw_bytes_reply(photos["4K"], "image/png"))
            gemini.latency = GEMINI_IMAGE_LATENCY  # the images are in progress together
            bot, _ = await self.start_bot(telegram, anthropic, gemini, **fast)
            meter = ProcessMeter(bot.pid)
            await self.drive(telegram, anthropic, [8_500_000], 2)
            rss_before, cpu0 = meter.rss_mb(), meter.cpu_seconds()
            # A person reading a moment between messages, then a chatter sending back to back
            # (about 30 turns/s, a load of its own on the two cores).
            for n, (label, pause) in enumerate((("a person", CHAT_PAUSE), ("back to back", 0.0))):
                drawers = [8_600_000 + 100 * n + i for i in range(8)]
                chatter = 8_700_000 + n
                with harness_gc_paused():
                    started = time.monotonic()
                    done, chat = await self._chat_while_drawing(
                        telegram, anthropic, drawers, chatter, pause
                    )
                    wall = time.monotonic() - started
                result = self.summarize(
                    f"8 concurrent 4K generations + {label} chatting meanwhile",
                    [*done, *chat],
                    wall,
                    0,
                    0,
                    0,
                )
                result.extra["chat_turns_while_images_processed"] = len(chat)
                key = "" if pause else "_back_to_back"
                self.figures[f"chat_overhead_ms_during_4k_images{key}"] = result.overhead_ms
            cpu = meter.cpu_seconds() - cpu0
            gemini.latency = 0.0
            result.extra.update(meter.peaks())
            result.extra["rss_before_mb"] = round(rss_before, 1)
            result.extra["cpu_seconds_all_turns_both_runs"] = round(cpu, 2)
            self.figures["peak_rss_mb_8_concurrent_4k"] = result.extra["peak_rss_mb"]
            self.figures["peak_rss_mb_upper_8_concurrent_4k"] = result.extra["peak_rss_mb_upper"]
            self.figures["bot_peak_rss_mb_8_concurrent_4k"] = result.extra["bot_peak_rss_mb"]
            meter.close()
            await bot.stop()

    async def _chat_while_drawing(
        self,
        telegram: FakeTelegram,
        anthropic: FakeAnthropic,
        drawers: list[int],
        chatter: int,
        pause: float,
    ) -> tuple[list[Turn], list[Turn]]:
        """The drawers ask for their images at once; once the answers start to arrive (the fake
        Gemini's latency), the chatter sends one text turn after another, `pause` seconds after
        each reply, until the last image is delivered: each of those turns runs while the bot
        receives, checks and sends images."""
        drawing = asyncio.create_task(
            self.drive(
                telegram,
                anthropic,
                drawers,
                1,
                kind_of=lambda u, t: "image",
                image_size="4K",
                timeout=300,
            )
        )
        await asyncio.sleep(GEMINI_IMAGE_LATENCY)
        chat: list[Turn] = []
        while not drawing.done():
            chat += await self.drive(telegram, anthropic, [chatter], 1, first_index=len(chat))
            await asyncio.sleep(pause)
        return await drawing, chat

    @staticmethod
    def _gemini_time(gemini: FakeGemini, turn: Turn) -> float:
        """Time inside the fake Gemini during a turn (one person, so nothing overlaps)."""
        end = turn.replied_at or turn.sent_at
        return sum(
            r.provider_seconds or 0.0
            for r in gemini.requests
            if turn.sent_at <= r.time_start <= end
        )

    async def limited_phases(self) -> None:
        """Telegram's limits on: ~1 message/s per chat, ~30/s overall, 429 with retry_after."""
        async with (
            FakeTelegram(
                token=FAKE_BOT_TOKEN, per_chat_rate=1.0, global_rate=30.0, global_burst=30
            ) as telegram,
            FakeAnthropic(default=responder) as anthropic,
            FakeGemini(default=image_reply()) as gemini,
        ):
            users = 500 if not self.args.quick else 60
            ttft = 0.5
            result = await self.phase(
                f"{users} users x 3 messages, Telegram limits on",
                telegram,
                anthropic,
                gemini,
                users,
                3,
                ttft=ttft,
                user_base=5_000_000,
            )
            floor = max(users * 3 / 30.0, 3 * ttft)
            result.extra["ideal_seconds"] = round(floor, 1)
            result.extra["vs_ideal"] = round(result.wall_seconds / floor, 2)
            result.extra["telegram_429s"] = telegram.rate_limited_count
            writer = await self.phase(
                "one user writing every 0.3 s (15 messages), Telegram limits on",
                telegram,
                anthropic,
                gemini,
                1,
                15,
                ttft=0.2,
                gap=0.3,
                user_base=6_000_000,
            )
            writer.extra["telegram_429s"] = telegram.rate_limited_count

    def report(self) -> None:
        print("\n== Bot benchmark ==")
        print(f"machine: {os.cpu_count()} cores, python {sys.version.split()[0]}")
        for key, value in self.figures.items():
            print(f"{key}: {value}")
        for r in self.results:
            print(f"\n-- {r.name}")
            print(f"turns completed: {r.turns}, lost: {r.lost}, wall: {r.wall_seconds} s")
            if r.overhead_ms:
                print(f"bot overhead per text turn (ms): {r.overhead_ms}")
            print(
                f"bot CPU per turn (with its child processes): {r.cpu_ms_per_turn} ms; DB transactions per turn "
                f"(a lone statement is one): {r.db_transactions_per_turn}; "
                f"DB round trips per turn: "
                f"{r.db_round_trips_per_turn}; Telegram calls per turn: {r.telegram_calls_per_turn}"
            )
            print(f"other: {r.extra}")
        if self.args.json:
            Path(self.args.json).write_text(
                json.dumps(
                    {"figures": self.figures, "phases": [asdict(r) for r in self.results]}, indent=2
                )
            )


def common_prefix_tokens(first: list[Any], second: list[Any]) -> int:
    """Tokens of the longest run of identical leading segments (content, not cache markers)."""
    total = 0
    for a, b in zip(first, second, strict=False):
        if a.key != b.key:
            break
        total += a.tokens
    return total


def all_in_order(telegram: FakeTelegram, users: list[int]) -> bool:
    """Each user's replies came back in the order their messages were sent."""
    for user in users:
        indexes = [
            int(found.split("-t")[1].rstrip("]"))
            for item in telegram.sent(user)
            if item.method == "sendMessage"
            for found in TAG.findall(item.text or "")
        ]
        if indexes != sorted(indexes):
            return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer turns (a smoke run)")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument(
        "--images-only", action="store_true", help="only the image phases (photo-like 2K/4K)"
    )
    parser.add_argument(
        "--inputs-only", action="store_true", help="only the voice and PDF phase (and no start-up)"
    )
    return asyncio.run(Bench(parser.parse_args()).run())


if __name__ == "__main__":
    sys.exit(main())
