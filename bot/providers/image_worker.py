"""The bot's side of the image worker: one long-lived child process (`image_worker_main`) that
makes the image provider's calls and parses their answers, started with the first image.

Many calls run in it at once (generation takes seconds to minutes at the provider). When an
answer's headers arrive the worker asks, and the call waits here for its `AnswerGate` slot
(`hold_current_answer`) before the worker reads the body: the gate still bounds how many image
answers are in memory at once, across both processes. The image comes back as raw bytes, which
the bot reads from the pipe in pieces, so its event loop never holds for an answer.

A worker that dies or sends garbage fails the calls in flight (their cost unknown: the provider
may have billed them) and is replaced with the next call. The bot closes it on shutdown; if the
bot dies, the end of its stdin ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sys
import time
from dataclasses import dataclass, field

import structlog

from bot.providers.child_env import child_environment, has_exited
from bot.providers.image_wire import (
    Frame,
    WireError,
    outcome_from,
    read_frame,
    request_frame,
    write_frame,
)
from bot.providers.images import (
    ImageProvider,
    ImageRequest,
    ImageResult,
    ImageUnavailable,
    hold_current_answer,
)

log = structlog.get_logger(__name__)

START_SECONDS = 30.0  # a fresh worker imports its SDK (about 0.5 s of CPU)
# A worker with nothing to do for this long exits (it holds 50-60 MB); the next image starts one.
IDLE_SECONDS = 600.0
CLOSE_GRACE_SECONDS = 2.0
# The worker's own deadline comes first; a worker that has not answered this much later is
# taken for hung, and replaced.
ANSWER_GRACE_SECONDS = 5.0
READ_LIMIT = 1 << 22
STOPPED = Frame(
    {
        "op": "unavailable",
        "kind": "connection",
        "detail": "the image worker stopped",
        "cost_unknown": True,
    }
)


@dataclass(frozen=True)
class WorkerSetup:
    """What the worker needs to reach the provider; sent on its stdin, never on its command
    line or in its environment."""

    provider: ImageProvider
    api_key: str = field(repr=False)
    base_url: str | None
    timeout_seconds: float
    model: str
    size_mode: str = "flexible"

    def frame(self) -> Frame:
        return Frame(
            {
                "op": "setup",
                "provider": self.provider,
                "api_key": self.api_key,
                "base_url": self.base_url,
                "timeout_seconds": self.timeout_seconds,
                "model": self.model,
                "size_mode": self.size_mode,
            }
        )


class _Running:
    """One worker process, its frames sorted to the calls waiting for them."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdin is not None
        assert process.stdout is not None
        self.process = process
        self.writer = process.stdin
        self.reader = process.stdout
        self.inboxes: dict[int, asyncio.Queue[Frame]] = {}
        self.sorting: asyncio.Task[None] | None = None
        self.closing = False
        self.stopped = False

    @property
    def alive(self) -> bool:
        return not self.stopped and not has_exited(self.process)

    async def sort_frames(self) -> None:
        """Every frame to its call's inbox, until the worker stops or says something wrong."""
        reason = "exited"
        try:
            while await self._sort_next():
                pass
        except WireError as exc:
            reason = f"garbled: {exc}"
        finally:
            self.stopped = True
            for inbox in self.inboxes.values():
                inbox.put_nowait(STOPPED)
        if not self.closing:
            log.error(
                "image_worker_stopped",
                reason=reason,
                pid=self.process.pid,
                in_flight=len(self.inboxes),
            )
            await _kill(self.process)

    async def _sort_next(self) -> bool:
        """One frame to its call's inbox; False at the end of the stream. The frame is not kept
        here once handed on: held until the next frame came, a 28 MB image stayed in memory while
        the next answer was parsed."""
        frame = await read_frame(self.reader)
        if frame is None:
            return False
        inbox = self.inboxes.get(frame.call_id)
        if inbox is not None:
            inbox.put_nowait(frame)
        return True


class ImageWorker:
    def __init__(
        self,
        setup: WorkerSetup,
        *,
        start_seconds: float = START_SECONDS,
        idle_seconds: float = IDLE_SECONDS,
        answer_grace_seconds: float = ANSWER_GRACE_SECONDS,
    ) -> None:
        self._setup = setup
        self._start_seconds = start_seconds
        self._answer_grace = answer_grace_seconds
        self._idle_seconds = idle_seconds
        self._running: _Running | None = None
        self._starting = asyncio.Lock()
        self._ids = itertools.count(1)
        self._closed = False
        self._in_flight = 0
        self._idle_timer: asyncio.TimerHandle | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        self._start_task: asyncio.Task[_Running] | None = None

    @property
    def pid(self) -> int | None:
        """The running worker's process id (None before it starts)."""
        return self._running.process.pid if self._running is not None else None

    async def attempt(self, request: ImageRequest, timeout: float) -> ImageResult:
        """One attempt at `request` within `timeout` seconds: the image, or ImageBlocked /
        ImageUnavailable as the provider's answer gave them."""
        started = time.monotonic()
        self._busy()
        try:
            try:
                # The worker's start counts toward the turn's time too (the start itself goes
                # on for the next image): on a loaded machine it can take seconds.
                async with asyncio.timeout(timeout):
                    worker = await self._worker()
            except TimeoutError:
                raise ImageUnavailable("timeout", "the image worker is still starting") from None
            remaining = timeout - (time.monotonic() - started)
            if remaining <= 0:
                raise ImageUnavailable("timeout", "no time left in this turn")
            return await self._attempt(worker, request, remaining)
        finally:
            self._done()

    async def _attempt(
        self, worker: _Running, request: ImageRequest, timeout: float
    ) -> ImageResult:
        call_id = next(self._ids)
        inbox: asyncio.Queue[Frame] = asyncio.Queue()
        worker.inboxes[call_id] = inbox
        finished = False
        try:
            call = request_frame(call_id, timeout, request)
            write_frame(worker.writer, call.header, call.parts)
            del call
            async with asyncio.timeout(timeout + self._answer_grace):
                result = await self._answer(worker, call_id, inbox)
            finished = True
            return result
        except TimeoutError:
            # Past its own deadline and the grace: the worker is stuck, not the provider slow.
            self._replace_hung(worker)
            raise ImageUnavailable("timeout", "no answer in time", cost_unknown=True) from None
        except ConnectionError:
            raise ImageUnavailable(
                "connection", "the image worker stopped", cost_unknown=True
            ) from None
        finally:
            del worker.inboxes[call_id]
            if not finished:
                _cancel(worker, call_id)

    async def _answer(
        self, worker: _Running, call_id: int, inbox: asyncio.Queue[Frame]
    ) -> ImageResult:
        await worker.writer.drain()
        while True:
            frame = await inbox.get()
            if frame.op != "headers":
                return outcome_from(frame)
            await hold_current_answer()
            write_frame(worker.writer, {"op": "go", "id": call_id})
            await worker.writer.drain()

    async def _worker(self) -> _Running:
        """The running worker, started if need be. The start runs in a task of its own: a caller
        cancelled meanwhile (a turn at its deadline) leaves it starting for the next image."""
        async with self._starting:
            if self._closed:
                raise ImageUnavailable("connection", "the bot is stopping")
            if self._running is None or not self._running.alive:
                self._running = None
                starting = self._start_task
                if starting is None or (starting.done() and not _started(starting)):
                    starting = self._start_task = asyncio.create_task(self._start())
                    starting.add_done_callback(_retrieve_failure)
                self._running = await asyncio.shield(starting)
                self._start_task = None
            return self._running

    async def _start(self) -> _Running:
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bot.providers.image_worker_main",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
                limit=READ_LIMIT,
                env=child_environment(),
            )
        except OSError as exc:
            log.error("image_worker_start_failed", error=type(exc).__name__)
            raise ImageUnavailable("connection", "the image worker did not start") from None
        worker = _Running(process)
        try:
            await self._handshake(worker)
        except BaseException as exc:
            log.error("image_worker_start_failed", error=type(exc).__name__)
            await asyncio.shield(_kill(process))
            if isinstance(exc, Exception):
                raise ImageUnavailable("connection", "the image worker did not start") from None
            raise
        worker.sorting = asyncio.create_task(worker.sort_frames())
        log.info("image_worker_started", pid=process.pid, provider=self._setup.provider)
        return worker

    async def _handshake(self, worker: _Running) -> None:
        setup = self._setup.frame()
        write_frame(worker.writer, setup.header)
        async with asyncio.timeout(self._start_seconds):
            await worker.writer.drain()
            ready = await read_frame(worker.reader)
        if ready is None or ready.op != "ready":
            raise WireError("no ready frame")

    def _replace_hung(self, worker: _Running) -> None:
        """Kill a worker that did not answer by its own deadline (its calls in flight fail as
        cost-unknown); the next call starts a fresh one."""
        if worker.alive:
            log.error("image_worker_unresponsive", pid=worker.process.pid)
            worker.stopped = True
            with contextlib.suppress(ProcessLookupError):
                worker.process.kill()

    def _busy(self) -> None:
        self._in_flight += 1
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _done(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0 and not self._closed:
            loop = asyncio.get_running_loop()
            self._idle_timer = loop.call_later(self._idle_seconds, self._retire_soon)

    def _retire_soon(self) -> None:
        task = asyncio.create_task(self._retire_if_idle())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _retire_if_idle(self) -> None:
        async with self._starting:
            self._adopt_started()
            if self._in_flight == 0 and self._running is not None:
                worker, self._running = self._running, None
                log.info("image_worker_retired", pid=worker.process.pid, idle=self._idle_seconds)
                await _stop(worker)

    def _adopt_started(self) -> None:
        """A worker whose start finished after its caller had gone is the running one."""
        starting = self._start_task
        if self._running is None and starting is not None and _started(starting):
            self._running, self._start_task = starting.result(), None

    async def aclose(self) -> None:
        """Stop the worker: end of its input, then a kill if it has not exited in a moment."""
        self._closed = True
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)
        if self._start_task is not None:
            await asyncio.gather(self._start_task, return_exceptions=True)
            self._adopt_started()
        worker, self._running = self._running, None
        if worker is not None:
            await _stop(worker)


async def _stop(worker: _Running) -> None:
    worker.closing = True
    worker.writer.close()
    try:
        async with asyncio.timeout(CLOSE_GRACE_SECONDS):
            await worker.process.wait()
    except TimeoutError:
        await _kill(worker.process)
    if worker.sorting is not None:
        worker.sorting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker.sorting


def _started(task: asyncio.Task[_Running]) -> bool:
    return task.done() and not task.cancelled() and task.exception() is None


def _retrieve_failure(task: asyncio.Task[_Running]) -> None:
    """A start that failed with nobody waiting for it any more is not an unhandled error."""
    if not task.cancelled():
        task.exception()


def _cancel(worker: _Running, call_id: int) -> None:
    """Tell the worker to drop a call the bot no longer waits for (nothing if it is gone)."""
    if worker.alive and not worker.writer.is_closing():
        with contextlib.suppress(ConnectionError, RuntimeError):
            write_frame(worker.writer, {"op": "cancel", "id": call_id})


async def _kill(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        process.kill()
    await process.wait()
