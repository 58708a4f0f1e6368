"""The image worker process: a worker killed mid-call fails that call as cost-unknown and is
replaced with the next one; a cancelled call leaves the worker serving; the key never appears on
the worker's command line or in its environment; OpenAI answers wait for the AnswerGate too; the
bot stops the worker when it closes."""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import time
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import structlog.testing

from bot.providers.gemini import MAX_REFERENCES
from bot.providers.image_gateway import RetryPolicy, WorkerImageGateway
from bot.providers.image_wire import PIPE_BYTES, WireError, read_frame
from bot.providers.image_worker import ImageWorker, WorkerSetup
from bot.providers.images import AnswerGate, ImageResult, ImageUnavailable
from bot.providers.openai_images import MAX_REFERENCES as OPENAI_MAX_REFERENCES
from tests.fakes.anthropic import Delay, Hang
from tests.fakes.gemini import FakeGemini, image_reply, raw_bytes_reply
from tests.fakes.openai import FakeOpenAI
from tests.fakes.openai import image_reply as openai_image_reply
from tests.traced import bytes_held_by

MODEL = "gemini-3-pro-image"
KEY = "test-key-not-a-real-one-4f1c"


def gemini_gateway(fake: FakeGemini, *, timeout: float = 10.0) -> WorkerImageGateway:
    return WorkerImageGateway(
        ImageWorker(WorkerSetup("google", KEY, fake.base_url, timeout, MODEL)),
        provider="google",
        model=MODEL,
        max_references=MAX_REFERENCES,
        retries=RetryPolicy(3, 0.01),
    )


@pytest.fixture
async def gemini() -> AsyncIterator[FakeGemini]:
    async with FakeGemini(api_key=KEY) as fake:
        yield fake


@pytest.fixture
async def gateway(gemini: FakeGemini) -> AsyncIterator[WorkerImageGateway]:
    gw = gemini_gateway(gemini)
    yield gw
    await gw.aclose()


async def draw(gateway: WorkerImageGateway, deadline_in: float = 10.0) -> ImageResult:
    return await gateway.generate(
        "a red cat",
        aspect_ratio="1:1",
        image_size="1K",
        references=[],
        deadline=time.monotonic() + deadline_in,
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()


async def test_a_killed_worker_fails_its_call_and_is_replaced(
    gemini: FakeGemini, gateway: WorkerImageGateway
) -> None:
    gemini.script(image_reply(), Hang(), image_reply())
    assert (await draw(gateway)).data
    first = gateway.worker_pid
    assert first is not None
    call = asyncio.create_task(draw(gateway))
    await gemini.wait_for_requests(2)
    with structlog.testing.capture_logs() as logs:
        os.kill(first, signal.SIGKILL)
        with pytest.raises(ImageUnavailable) as caught:
            await asyncio.wait_for(call, 5)
    # The provider may have started on it (and billed it): never retried, never assumed free.
    assert caught.value.kind == "connection"
    assert caught.value.cost_unknown is True
    assert len(gemini.generate_requests()) == 2
    stopped = [e for e in logs if e["event"] == "image_worker_stopped"]
    assert len(stopped) == 1
    assert stopped[0]["log_level"] == "error"
    assert stopped[0]["in_flight"] == 1
    assert (await draw(gateway)).data
    assert gateway.worker_pid not in (None, first)


async def test_a_cancelled_call_leaves_the_worker_serving(
    gemini: FakeGemini, gateway: WorkerImageGateway
) -> None:
    gemini.script(Delay(30.0, image_reply()), image_reply())
    call = asyncio.create_task(draw(gateway))
    await gemini.wait_for_requests(1)
    pid = gateway.worker_pid
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    image = await draw(gateway)
    assert image.data
    assert gateway.worker_pid == pid
    # The worker dropped the cancelled request: the fake saw its client go away.
    await gemini.wait_for_requests(2, completed=True)
    assert gemini.generate_requests()[0].outcome == "cancelled"


async def test_an_image_is_not_kept_once_its_call_has_taken_it(
    gemini: FakeGemini, gateway: WorkerImageGateway
) -> None:
    # While the next answer is awaited (a 4K one takes half a second to parse), the bot holds
    # nothing of the image it already handed on: eight 4K images in a row had kept one 28 MB
    # image in memory throughout.
    payload = b"\x89PNG\r\n\x1a\n" + os.urandom(8 << 20)
    gemini.script(image_reply(), raw_bytes_reply(payload, "image/png"), Delay(30.0, image_reply()))
    await draw(gateway)  # the worker started outside the measurement
    tracemalloc.start()
    try:
        image = await draw(gateway)
        assert image.data == payload
        waiting = asyncio.create_task(draw(gateway, deadline_in=60.0))
        await gemini.wait_for_requests(3)
        del image
        # What the bot's side still holds (the fake Gemini shares this process).
        held = bytes_held_by("*/bot/providers/*")
    finally:
        tracemalloc.stop()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert held < len(payload) // 4


async def worker_after_one_image(gemini: FakeGemini, gateway: WorkerImageGateway) -> int:
    """The worker's process id, once it has made one image."""
    gemini.script(image_reply())
    await draw(gateway)
    pid = gateway.worker_pid
    assert pid is not None
    return pid


async def test_the_pipes_to_the_worker_hold_a_mebibyte(
    gemini: FakeGemini, gateway: WorkerImageGateway
) -> None:
    # A 28 MB image crosses in about 110 reads of the bot's event loop, not 440 (Linux's
    # default pipe holds 64 KiB).
    pid = await worker_after_one_image(gemini, gateway)
    sizes = [size for fd in Path(f"/proc/{pid}/fd").iterdir() if (size := pipe_size(fd))]
    max_size = int(Path("/proc/sys/fs/pipe-max-size").read_text())
    assert len(sizes) >= 2  # its stdin and the frames to the bot
    assert sizes == [min(PIPE_BYTES, max_size)] * len(sizes)


def pipe_size(fd: Path) -> int | None:
    """The capacity of the pipe behind one of a process's /proc fd links; None for anything else
    (or an fd closed meanwhile, such as an idle connection's socket)."""
    try:
        if not fd.readlink().name.startswith("pipe:"):
            return None
        opened = os.open(fd, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    try:
        return fcntl.fcntl(opened, fcntl.F_GETPIPE_SZ)
    finally:
        os.close(opened)


async def test_the_key_is_not_on_the_command_line_or_in_the_environment(
    gemini: FakeGemini, gateway: WorkerImageGateway
) -> None:
    pid = await worker_after_one_image(gemini, gateway)
    assert KEY.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
    assert KEY.encode() not in Path(f"/proc/{pid}/environ").read_bytes()
    assert [r.outcome for r in gemini.generate_requests()] == ["ok"]  # the key reached it


async def test_closing_the_gateway_stops_the_worker(gemini: FakeGemini) -> None:
    gateway = gemini_gateway(gemini)
    gemini.script(image_reply())
    await draw(gateway)
    pid = gateway.worker_pid
    assert pid is not None
    assert alive(pid)
    await gateway.aclose()
    assert not alive(pid)
    with pytest.raises(ImageUnavailable):
        await draw(gateway)


async def test_an_openai_answer_waits_for_a_gate_slot_before_its_body_is_read() -> None:
    async with FakeOpenAI(api_key=KEY) as fake:
        gateway = WorkerImageGateway(
            ImageWorker(WorkerSetup("openai", KEY, fake.base_url, 10.0, "gpt-image-2.6-sunburst")),
            provider="openai",
            model="gpt-image-2.6-sunburst",
            max_references=OPENAI_MAX_REFERENCES,
            retries=RetryPolicy(3, 0.01),
        )
        gate = AnswerGate(limit=1)
        fake.script(openai_image_reply())

        async def draw_in_turn() -> tuple[ImageResult, bool]:
            async with gate.admit() as ticket:
                return await draw(gateway), ticket.held

        try:
            async with gate.admit() as checking:
                await checking.hold()
                waiting = asyncio.create_task(draw_in_turn())
                await fake.wait_for_requests(1, completed=True)
                await asyncio.sleep(0.3)
                assert not waiting.done()
            image, held = await asyncio.wait_for(waiting, 5)
        finally:
            await gateway.aclose()
    assert image.data
    assert held


async def test_a_frame_cut_short_is_a_wire_error() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data((20).to_bytes(4, "big") + b'{"op": "im')
    reader.feed_eof()
    with pytest.raises(WireError):
        await read_frame(reader)
    empty = asyncio.StreamReader()
    empty.feed_eof()
    assert await read_frame(empty) is None


async def test_an_idle_worker_exits_and_the_next_image_starts_one(gemini: FakeGemini) -> None:
    gateway = WorkerImageGateway(
        ImageWorker(WorkerSetup("google", KEY, gemini.base_url, 10.0, MODEL), idle_seconds=0.3),
        provider="google",
        model=MODEL,
        max_references=MAX_REFERENCES,
        retries=RetryPolicy(3, 0.01),
    )
    gemini.script(image_reply(), image_reply())
    try:
        with structlog.testing.capture_logs() as logs:
            await draw(gateway)
            first = gateway.worker_pid
            assert first is not None
            for _ in range(50):
                if gateway.worker_pid is None and not alive(first):
                    break
                await asyncio.sleep(0.1)
            assert gateway.worker_pid is None
            assert not alive(first)
            assert (await draw(gateway)).data
        assert gateway.worker_pid not in (None, first)
        assert [e["event"] for e in logs if e["event"].startswith("image_worker_")] == [
            "image_worker_started",
            "image_worker_retired",
            "image_worker_started",
        ]
    finally:
        await gateway.aclose()


async def test_a_hung_worker_is_replaced(gemini: FakeGemini) -> None:
    """A worker that does not answer by its own deadline (stopped here with SIGSTOP) is killed
    once the bot's grace is over; the call fails as cost-unknown and the next gets a new one."""
    gateway = WorkerImageGateway(
        ImageWorker(
            WorkerSetup("google", KEY, gemini.base_url, 10.0, MODEL), answer_grace_seconds=0.5
        ),
        provider="google",
        model=MODEL,
        max_references=MAX_REFERENCES,
        retries=RetryPolicy(3, 0.01),
    )
    gemini.script(image_reply(), image_reply())
    try:
        await draw(gateway)
        hung = gateway.worker_pid
        assert hung is not None
        os.kill(hung, signal.SIGSTOP)
        with structlog.testing.capture_logs() as logs:
            with pytest.raises(ImageUnavailable) as caught:
                await draw(gateway, deadline_in=1.0)
            assert caught.value.kind == "timeout"
            assert caught.value.cost_unknown is True
            assert "image_worker_unresponsive" in [e["event"] for e in logs]
            for _ in range(50):
                if not alive(hung):
                    break
                await asyncio.sleep(0.1)
            assert not alive(hung)
            assert (await draw(gateway)).data
        assert gateway.worker_pid not in (None, hung)
    finally:
        await gateway.aclose()


async def test_the_worker_starts_without_the_bots_secrets(
    gemini: FakeGemini, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Secrets the bot was given in its environment are not passed on to the worker."""
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "FAKE-TELEGRAM-TOKEN-for-this-test")
    monkeypatch.setenv("DATABASE_URL", "postgresql://bot:fake-password@db/bot")
    gateway = gemini_gateway(gemini)
    gemini.script(image_reply())
    try:
        await draw(gateway)
        pid = gateway.worker_pid
        assert pid is not None
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    finally:
        await gateway.aclose()
    assert b"FAKE-TELEGRAM-TOKEN-for-this-test" not in environ
    assert b"fake-password" not in environ
    assert b"PATH=" in environ


async def test_a_call_cancelled_while_the_worker_starts_leaves_it_starting(
    gemini: FakeGemini,
) -> None:
    """A turn that ends while the worker is still starting (its deadline on a busy machine) does
    not throw the start away: the next image uses that worker."""
    gateway = gemini_gateway(gemini)
    gemini.script(image_reply())
    try:
        with structlog.testing.capture_logs() as logs:
            first = asyncio.create_task(draw(gateway))
            await asyncio.sleep(0.05)  # the worker is importing its SDK
            first.cancel()
            with pytest.raises(asyncio.CancelledError):
                await first
            assert (await draw(gateway)).data
        assert "image_worker_start_failed" not in [e["event"] for e in logs]
        started = [e for e in logs if e["event"] == "image_worker_started"]
        assert len(started) == 1
        assert started[0]["pid"] == gateway.worker_pid
        assert len(gemini.generate_requests()) == 1
    finally:
        await gateway.aclose()
