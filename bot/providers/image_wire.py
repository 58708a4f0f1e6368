"""The messages between the bot and its image worker process (`image_worker_main`), on the
worker's stdin and stdout.

A frame is a 4-byte big-endian length, a JSON header of that length, then the binary parts the
header lists in `parts` (their sizes), back to back: images travel as raw bytes, never as
base64 or JSON strings, so neither side parses them.

Bot to worker: `setup` (once, first), `call` (one attempt at one image; the references as
parts), `go` (the caller has its answer slot: read the answer), `cancel`.
Worker to bot: `ready` (once), `headers` (an answer is arriving: may it be read?), and `image`,
`blocked` or `unavailable` (the attempt's outcome; an image as its one part).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from bot.providers.images import (
    ImageBlocked,
    ImageRequest,
    ImageResult,
    ImageUnavailable,
    ImageUsage,
)

HEADER_LENGTH_BYTES = 4
MAX_HEADER_BYTES = 1 << 20
PIPE_BYTES = 1 << 20


def widen_pipe(fd: int) -> None:
    """Gives the pipe on `fd` 1 MiB of room instead of Linux's 64 KiB: a 28 MB image crosses in
    about 110 reads of the bot's event loop instead of 440. Nothing where the system does not
    allow it (`/proc/sys/fs/pipe-max-size`, or not a pipe)."""
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)


class WireError(Exception):
    """The other side sent something that is not a frame."""


async def _read_part(reader: asyncio.StreamReader, size: int, piece_bytes: int = 1 << 20) -> bytes:
    """`size` bytes, read a piece at a time: the stream's buffer stays small, and a 28 MB image
    exists twice only while its pieces are joined (read whole, the buffer, its slice and the
    bytes made from it were three copies).

    The pieces are joined on a worker thread: `bytes.join` copies without the GIL, but into fresh
    memory whose pages the kernel maps as they are first written, about 15 ms for 28 MB, during
    which the event loop (another person's text turn) would wait."""
    if size <= piece_bytes:
        return await reader.readexactly(size)
    pieces = []
    while size > 0:
        piece = await reader.readexactly(min(size, piece_bytes))
        pieces.append(piece)
        size -= len(piece)
    return await asyncio.to_thread(b"".join, pieces)


@dataclass(frozen=True)
class Frame:
    header: dict[str, Any]
    parts: list[bytes] = field(default_factory=list)

    @property
    def op(self) -> str:
        return str(self.header.get("op", ""))

    @property
    def call_id(self) -> int:
        return int(self.header.get("id", 0))


def write_frame(
    writer: asyncio.StreamWriter,
    header: dict[str, Any],
    parts: Sequence[bytes] = (),
    *,
    sizes: Sequence[int] | None = None,
) -> None:
    """Queues one whole frame (no await between its pieces, so frames never interleave); with
    `sizes`, only the header, the parts to follow (`send_frame`)."""
    listed = [len(p) for p in parts] if sizes is None else list(sizes)
    body = json.dumps({**header, "parts": listed}).encode()
    writer.write(len(body).to_bytes(HEADER_LENGTH_BYTES, "big") + body)
    for part in parts:
        writer.write(part)


async def send_frame(
    writer: asyncio.StreamWriter, frame: Frame, *, piece_bytes: int = 1 << 20
) -> None:
    """One frame, its parts a piece at a time, each piece sent before the next is queued: a
    28 MB image is never copied whole into the pipe's buffer. The caller keeps other frames out
    until this one is sent (pieces of two frames must not mix)."""
    write_frame(writer, frame.header, sizes=[len(p) for p in frame.parts])
    for part in frame.parts:
        view = memoryview(part)
        for start in range(0, len(view), piece_bytes):
            writer.write(view[start : start + piece_bytes])
            await writer.drain()
    await writer.drain()


async def read_frame(reader: asyncio.StreamReader) -> Frame | None:
    """The next frame, or None at the end of the stream."""
    try:
        length = int.from_bytes(await reader.readexactly(HEADER_LENGTH_BYTES), "big")
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise WireError("the stream ended inside a frame") from None
        return None
    if length > MAX_HEADER_BYTES:
        raise WireError(f"header of {length} bytes")
    try:
        header = json.loads(await reader.readexactly(length))
        sizes = [int(n) for n in header.get("parts", [])]
        parts = [await _read_part(reader, n) for n in sizes]
    except (asyncio.IncompleteReadError, ValueError, TypeError, AttributeError) as exc:
        raise WireError(type(exc).__name__) from None
    if not isinstance(header, dict):
        raise WireError("header is not an object")
    return Frame(header, parts)


def request_frame(call_id: int, timeout: float, request: ImageRequest) -> Frame:
    """One attempt at `request`, to be answered within `timeout` seconds."""
    header = {
        "op": "call",
        "id": call_id,
        "timeout": timeout,
        "prompt": request.prompt,
        "aspect_ratio": request.aspect_ratio,
        "image_size": request.image_size,
        "mime_types": [mime for _, mime in request.references],
    }
    return Frame(header, [data for data, _ in request.references])


def request_from(frame: Frame) -> ImageRequest:
    header = frame.header
    mimes = [str(m) for m in header.get("mime_types", [])]
    if len(mimes) != len(frame.parts):
        raise WireError("references and their types differ in number")
    return ImageRequest(
        prompt=str(header["prompt"]),
        aspect_ratio=str(header["aspect_ratio"]),
        image_size=str(header["image_size"]),
        references=list(zip(frame.parts, mimes, strict=True)),
    )


def outcome_frame(call_id: int, outcome: ImageResult | ImageBlocked | ImageUnavailable) -> Frame:
    """The attempt's outcome as the worker sends it."""
    if isinstance(outcome, ImageResult):
        header: dict[str, Any] = {
            "op": "image",
            "mime_type": outcome.mime_type,
            "usage": asdict(outcome.usage) if outcome.usage is not None else None,
            "model_version": outcome.model_version,
            "text": outcome.text,
            "images_in_response": outcome.images_in_response,
        }
        return Frame({**header, "id": call_id}, [outcome.data])
    if isinstance(outcome, ImageBlocked):
        header = {
            "op": "blocked",
            "reason": outcome.reason,
            "user_reason": outcome.user_reason,
            "input_tokens": outcome.input_tokens,
            "output_tokens": outcome.output_tokens,
        }
        return Frame({**header, "id": call_id})
    header = {
        "op": "unavailable",
        "kind": outcome.kind,
        "detail": outcome.detail,
        "status": outcome.status,
        "cost_unknown": outcome.cost_unknown,
        "retry_after": outcome.retry_after,
    }
    return Frame({**header, "id": call_id})


def outcome_from(frame: Frame) -> ImageResult:
    """The image a worker's outcome frame carries; its failures raised as the gateway's
    exceptions (attempts and duration are the caller's to fill in)."""
    h = frame.header
    try:
        if frame.op == "image" and len(frame.parts) == 1:
            usage = h.get("usage")
            return ImageResult(
                data=frame.parts[0],
                mime_type=str(h["mime_type"]),
                usage=ImageUsage(**usage) if isinstance(usage, dict) else None,
                model_version=h.get("model_version"),
                text=h.get("text"),
                attempts=1,
                duration_ms=0,
                images_in_response=int(h.get("images_in_response", 1)),
            )
        if frame.op == "blocked":
            raise ImageBlocked(
                str(h["reason"]),
                str(h["user_reason"]),
                input_tokens=int(h.get("input_tokens", 0)),
                output_tokens=int(h.get("output_tokens", 0)),
            )
        if frame.op == "unavailable":
            raise ImageUnavailable(
                str(h["kind"]),
                str(h["detail"]),
                status=h.get("status"),
                cost_unknown=bool(h.get("cost_unknown")),
                retry_after=h.get("retry_after"),
            )
    except (KeyError, TypeError, ValueError) as exc:
        raise WireError(f"bad {frame.op} frame: {type(exc).__name__}") from None
    raise WireError(f"unexpected {frame.op!r} frame")
