"""The image worker process (`python -m bot.providers.image_worker_main`), started by the bot
(`image_worker.ImageWorker`): it makes the image provider's calls and parses their answers, so
that the bot's event loop never does. A 4K answer is 37 MB of base64 JSON; the SDK's parsing of
it holds the interpreter for about 170 ms in single C calls (a worker thread would stall the
loop just the same), and other people's turns would wait that long.

It reads frames (`image_wire`) on stdin: `setup` first (the provider, its key and model), then
calls, each attempted in a task of its own; an answer arriving waits, at its headers, for the
bot's `go` (the bot's `AnswerGate`). Images go back as raw bytes. Anything the SDKs print goes to
stderr (the bot discards it), never into the frames on stdout. The end of stdin ends it.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from bot.providers.heap import map_large_blocks_separately, return_free_memory
from bot.providers.image_wire import (
    Frame,
    WireError,
    outcome_frame,
    read_frame,
    request_from,
    send_frame,
    widen_pipe,
    write_frame,
)
from bot.providers.images import (
    ImageAttempts,
    ImageBlocked,
    ImageResult,
    ImageUnavailable,
    answers_held_by,
)
from bot.providers.niceness import lower_this_process

READ_LIMIT = 1 << 22


def attempts_for(setup: dict[str, Any]) -> ImageAttempts:
    """The provider's attempts as the bot's `setup` frame describes them, its SDK imported (before
    the worker says it is ready, so that no call waits for the import)."""
    api_key = str(setup["api_key"])
    base_url = setup.get("base_url")
    timeout = float(setup["timeout_seconds"])
    model = str(setup["model"])
    if setup["provider"] == "openai":
        import openai  # noqa: F401

        from bot.providers.openai_images import OpenAIImageAttempts

        standard = setup.get("size_mode") == "standard"
        return OpenAIImageAttempts(
            api_key, base_url, timeout, model, "standard" if standard else "flexible"
        )
    import google.genai  # noqa: F401

    from bot.providers.gemini import GeminiImageAttempts

    return GeminiImageAttempts(api_key, base_url, timeout, model)


class _AskTheBot:
    """An answer's headers have arrived: ask the bot, and wait for its `go`."""

    def __init__(self, calls: _Calls, call_id: int) -> None:
        self._calls = calls
        self._call_id = call_id

    async def hold(self) -> None:
        await self._calls.wait_for_go(self._call_id)


class _Calls:
    """The attempts in progress, one task each, by the bot's call id."""

    def __init__(self, attempts: ImageAttempts, writer: asyncio.StreamWriter) -> None:
        self._attempts = attempts
        self._writer = writer
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._go: dict[int, asyncio.Future[None]] = {}
        self._sending = asyncio.Lock()  # one frame at a time on stdout

    def dispatch(self, frame: Frame) -> None:
        call_id = frame.call_id
        if frame.op == "call":
            task = asyncio.create_task(self._run(frame))
            self._tasks[call_id] = task
            task.add_done_callback(lambda _: self._tasks.pop(call_id, None))
        elif frame.op == "go":
            waiting = self._go.get(call_id)
            if waiting is not None and not waiting.done():
                waiting.set_result(None)
        elif frame.op == "cancel" and call_id in self._tasks:
            self._tasks[call_id].cancel()

    async def wait_for_go(self, call_id: int) -> None:
        waiting = asyncio.get_running_loop().create_future()
        self._go[call_id] = waiting
        try:
            await self._send(Frame({"op": "headers", "id": call_id}))
            await waiting
        finally:
            self._go.pop(call_id, None)

    async def _run(self, frame: Frame) -> None:
        outcome = await self._outcome(frame)
        answer = outcome_frame(frame.call_id, outcome)
        del outcome
        # Shielded: a cancel arriving now must not cut the frame short (the stream would be lost).
        await asyncio.shield(self._send(answer))
        del answer
        return_free_memory()

    async def _send(self, frame: Frame) -> None:
        async with self._sending:
            await send_frame(self._writer, frame)

    async def _outcome(self, frame: Frame) -> ImageResult | ImageBlocked | ImageUnavailable:
        try:
            request = request_from(frame)
            with answers_held_by(_AskTheBot(self, frame.call_id)):
                async with asyncio.timeout(float(frame.header["timeout"])):
                    return await self._attempts.attempt(request)
        except (ImageBlocked, ImageUnavailable) as exc:
            return exc
        except TimeoutError:
            return ImageUnavailable("timeout", "no answer in time", cost_unknown=True)
        except (WireError, KeyError, ValueError) as exc:
            return ImageUnavailable("bad_request", f"malformed call: {type(exc).__name__}")
        except Exception as exc:
            return ImageUnavailable("connection", type(exc).__name__, cost_unknown=True)

    async def aclose(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        await self._attempts.aclose()


async def _pipes() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """stdin as a stream reader; the real stdout, for frames, as a writer (the process's fd 1
    then points at stderr, so that nothing printed lands among the frames)."""
    loop = asyncio.get_running_loop()
    frames_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=0)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    widen_pipe(frames_out.fileno())
    widen_pipe(sys.stdin.fileno())
    reader = asyncio.StreamReader(limit=READ_LIMIT)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    transport, protocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, frames_out
    )
    writer = asyncio.StreamWriter(transport, protocol, None, loop)
    return reader, writer


async def serve() -> None:
    reader, writer = await _pipes()
    setup = await read_frame(reader)
    if setup is None or setup.op != "setup":
        return
    calls = _Calls(attempts_for(setup.header), writer)
    del setup
    write_frame(writer, {"op": "ready", "pid": os.getpid()})
    await writer.drain()
    try:
        while await _dispatch_next(reader, calls):
            pass
    finally:
        await calls.aclose()


async def _dispatch_next(reader: asyncio.StreamReader, calls: _Calls) -> bool:
    """One frame to its call; False at the end of stdin. The frame is not kept here once handed
    on (a request's reference images would otherwise stay until the next frame came)."""
    frame = await read_frame(reader)
    if frame is None:
        return False
    calls.dispatch(frame)
    return True


def main() -> None:
    map_large_blocks_separately()
    lower_this_process()
    try:
        asyncio.run(serve())
    except (WireError, KeyboardInterrupt, BrokenPipeError):
        sys.exit(1)


if __name__ == "__main__":
    main()
