"""The bot's side of the PDF checker: one long-lived child process (`bot.services.pdf_check`),
started with the first PDF (a bot that is never sent one does not hold its 37 MB), that checks
PDFs one at a time, and ends after PDF_CHECKER_IDLE_SECONDS without one.

Reusing the process saves its start (about 0.5 s of CPU, mostly importing pypdf) on every PDF.
One process, not a pool: a normal check takes milliseconds, so PDFs queue only briefly, and a
PDF bomb can hold at most one of the machine's cores. A check that does not answer before its
deadline, or a process that dies, is killed and replaced by a fresh one with the next PDF; that
PDF is refused with the plain reply, before anything is charged. A cancelled check kills the
process too (its answer would come out of turn). The bot closes it on shutdown; if the bot dies,
the end of its stdin ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from dataclasses import dataclass
from typing import Any

import structlog

from bot.providers.child_env import child_environment, has_exited
from bot.services.pdf_check import LENGTH_BYTES, PDF_CHECK_CPU_SECONDS, PDF_CHECK_MEMORY_BYTES

log = structlog.get_logger(__name__)

PDF_CHECK_SECONDS = 12.0  # wall clock per check, once the process is ready
PDF_CHECKER_START_SECONDS = 30.0  # wall clock for a fresh process to import pypdf
CLOSE_GRACE_SECONDS = 2.0
PDF_CHECKER_IDLE_SECONDS = 600.0  # a checker without a PDF for this long exits (about 37 MB)


@dataclass(frozen=True)
class PdfCheckerLimits:
    check_seconds: float = PDF_CHECK_SECONDS
    start_seconds: float = PDF_CHECKER_START_SECONDS
    cpu_seconds: int = PDF_CHECK_CPU_SECONDS
    memory_bytes: int = PDF_CHECK_MEMORY_BYTES
    idle_seconds: float = PDF_CHECKER_IDLE_SECONDS


class PdfCheckerUnavailable(Exception):
    """No verdict: the checker timed out, died or could not start (the PDF is refused)."""


class _FoundDead(Exception):
    """The child had exited before it was given the PDF."""


class PdfChecker:
    def __init__(self, limits: PdfCheckerLimits | None = None) -> None:
        self._limits = limits or PdfCheckerLimits()
        self._process: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self._closed = False
        self._last_used = time.monotonic()
        self._idle_timer: asyncio.TimerHandle | None = None
        self._retiring: set[asyncio.Task[None]] = set()

    @property
    def pid(self) -> int | None:
        """The running checker's process id (None before it starts and after it is replaced)."""
        return self._process.pid if self._process is not None else None

    async def start(self) -> None:
        """Start the process ahead of the first PDF."""
        async with self._lock:
            if not self._closed:
                await self._running()
                self._used()

    async def check(self, data: bytes) -> dict[str, Any]:
        """The child's verdict on one PDF: `{"pages": n}` or `{"rejected": reason}`."""
        async with self._lock:
            if self._closed:
                raise PdfCheckerUnavailable("closed")
            try:
                line = await self._answer(data)
            except BaseException as exc:
                await asyncio.shield(self._discard(_failure(exc), len(data)))
                if isinstance(exc, Exception):
                    raise PdfCheckerUnavailable(_failure(exc)) from None
                raise
            self._used()
            result = _verdict(line)
            if result is None:
                await self._discard("no_verdict" if line else "exited", len(data))
                raise PdfCheckerUnavailable("no_verdict")
            if result.pop("retire", False):
                await self._retire()
            return result

    async def _answer(self, data: bytes) -> bytes:
        """The child's answer line. A child found dead before it took the PDF (it crashed on an
        earlier one, or was killed from outside) is replaced once."""
        try:
            return await self._exchange(await self._running(), data)
        except _FoundDead:
            await self._discard("found_dead", len(data))
        return await self._exchange(await self._running(), data)

    def _used(self) -> None:
        """A check (or a start) just now: the idle clock starts again."""
        self._last_used = time.monotonic()
        if self._idle_timer is None:
            loop = asyncio.get_running_loop()
            self._idle_timer = loop.call_later(self._limits.idle_seconds, self._idle_check)

    def _idle_check(self) -> None:
        self._idle_timer = None
        idle_for = time.monotonic() - self._last_used
        if idle_for < self._limits.idle_seconds:  # used since: look again when it may be idle
            loop = asyncio.get_running_loop()
            wait = self._limits.idle_seconds - idle_for
            self._idle_timer = loop.call_later(wait, self._idle_check)
            return
        task = asyncio.create_task(self._retire_idle())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _retire_idle(self) -> None:
        """No PDF for a while: the process ends (end of input); the next PDF starts one."""
        async with self._lock:
            process, self._process = self._process, None
            if process is not None:
                await _close(process)
                log.info("pdf_checker_idle_exit", pid=process.pid)

    async def aclose(self) -> None:
        """Stop the process: end of input, then a kill if it has not exited in a moment."""
        self._closed = True
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)
        process, self._process = self._process, None
        if process is not None:
            await _close(process)

    async def _exchange(self, process: asyncio.subprocess.Process, data: bytes) -> bytes:
        assert process.stdin is not None
        assert process.stdout is not None
        if has_exited(process):
            raise _FoundDead
        async with asyncio.timeout(self._limits.check_seconds):
            try:
                process.stdin.write(len(data).to_bytes(LENGTH_BYTES, "big") + data)
                await process.stdin.drain()
            except ConnectionError:
                raise _FoundDead from None
            return await process.stdout.readline()

    async def _running(self) -> asyncio.subprocess.Process:
        if self._process is not None and self._process.returncode is None:
            return self._process
        self._process = None
        process = await self._spawn()
        try:
            assert process.stdout is not None
            async with asyncio.timeout(self._limits.start_seconds):
                ready = await process.stdout.readline()
            if not ready:
                raise ConnectionError("no ready line")
        except BaseException as exc:
            log.error("pdf_checker_start_failed", error=_failure(exc))
            await asyncio.shield(_kill(process))
            if isinstance(exc, Exception):
                raise PdfCheckerUnavailable("start_failed") from None
            raise
        log.info("pdf_checker_started", pid=process.pid)
        self._process = process
        return process

    async def _spawn(self) -> asyncio.subprocess.Process:
        limits = self._limits
        try:
            return await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bot.services.pdf_check",
                str(limits.cpu_seconds),
                str(limits.memory_bytes),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
                env=child_environment(),
            )
        except OSError as exc:
            log.error("pdf_checker_start_failed", error=type(exc).__name__)
            raise PdfCheckerUnavailable("start_failed") from None

    async def _discard(self, reason: str, size: int) -> None:
        process, self._process = self._process, None
        if process is not None:
            await _kill(process)
            log.warning(
                "pdf_check_killed", reason=reason, bytes=size, returncode=process.returncode
            )

    async def _retire(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            await _kill(process)  # it has answered; nothing of its state is needed
            log.info("pdf_checker_retired", pid=process.pid)


def _verdict(line: bytes) -> dict[str, Any] | None:
    try:
        result = json.loads(line)
    except ValueError:
        return None
    return result if isinstance(result, dict) else None


def _failure(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    return type(exc).__name__


async def _close(process: asyncio.subprocess.Process) -> None:
    if process.stdin is not None:
        process.stdin.close()
    try:
        async with asyncio.timeout(CLOSE_GRACE_SECONDS):
            await process.wait()
    except TimeoutError:
        await _kill(process)


async def _kill(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        process.kill()
    await process.wait()
