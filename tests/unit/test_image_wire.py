"""The frames between the bot and its image worker: what one side writes the other reads back
whole, images as raw bytes, the failures as the gateway's own exceptions."""

from __future__ import annotations

import asyncio
import os

import pytest

from bot.providers.image_wire import (
    Frame,
    WireError,
    outcome_frame,
    outcome_from,
    read_frame,
    request_frame,
    request_from,
    send_frame,
    write_frame,
)
from bot.providers.images import (
    ImageBlocked,
    ImageRequest,
    ImageResult,
    ImageUnavailable,
    ImageUsage,
)


class _Sink:
    """A write end that feeds what is written into a StreamReader (the other end of a pipe)."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader

    def write(self, data: bytes | memoryview) -> None:
        self._reader.feed_data(bytes(data))

    async def drain(self) -> None:
        await asyncio.sleep(0)


async def through_a_pipe(frame: Frame, *, pieces: bool = False) -> Frame:
    reader = asyncio.StreamReader(limit=1 << 16)
    sink = _Sink(reader)
    if pieces:
        await send_frame(sink, frame, piece_bytes=1000)  # type: ignore[arg-type]
    else:
        write_frame(sink, frame.header, frame.parts)  # type: ignore[arg-type]
    reader.feed_eof()
    received = await read_frame(reader)
    assert received is not None
    assert await read_frame(reader) is None
    return received


@pytest.mark.parametrize("pieces", [False, True])
async def test_an_image_comes_back_byte_for_byte(pieces: bool) -> None:
    data = os.urandom(3_000_000)
    sent = ImageResult(
        data=data,
        mime_type="image/png",
        usage=ImageUsage(10, 560, 42, 2000),
        model_version="gemini-3-pro-image",
        text="Here it is.",
        attempts=1,
        duration_ms=0,
        images_in_response=2,
    )
    received = outcome_from(await through_a_pipe(outcome_frame(7, sent), pieces=pieces))
    assert received.data == data
    assert received.usage == ImageUsage(10, 560, 42, 2000)
    assert (received.mime_type, received.text, received.images_in_response) == (
        "image/png",
        "Here it is.",
        2,
    )


async def test_a_request_keeps_its_references_in_order() -> None:
    request = ImageRequest(
        "combine these",
        "16:9",
        "4K",
        [(b"\x89PNG-one", "image/png"), (b"\xff\xd8-two", "image/jpeg")],
    )
    frame = await through_a_pipe(request_frame(3, 12.5, request))
    assert frame.call_id == 3
    assert frame.header["timeout"] == 12.5
    assert request_from(frame) == ImageRequest(
        "combine these",
        "16:9",
        "4K",
        [(b"\x89PNG-one", "image/png"), (b"\xff\xd8-two", "image/jpeg")],
    )


async def test_failures_come_back_as_the_gateways_exceptions() -> None:
    blocked = ImageBlocked("IMAGE_SAFETY", "blocked", input_tokens=5, output_tokens=6)
    with pytest.raises(ImageBlocked) as caught_blocked:
        outcome_from(await through_a_pipe(outcome_frame(1, blocked)))
    assert (caught_blocked.value.reason, caught_blocked.value.output_tokens) == ("IMAGE_SAFETY", 6)
    busy = ImageUnavailable("busy", "status 429", status=429, retry_after=1.5)
    with pytest.raises(ImageUnavailable) as caught:
        outcome_from(await through_a_pipe(outcome_frame(2, busy)))
    assert (caught.value.kind, caught.value.status, caught.value.retry_after) == ("busy", 429, 1.5)
    assert caught.value.cost_unknown is False


async def test_a_frame_the_bot_does_not_expect_is_a_wire_error() -> None:
    with pytest.raises(WireError):
        outcome_from(Frame({"op": "image", "id": 1}))  # an image frame without its image
    with pytest.raises(WireError):
        outcome_from(Frame({"op": "hello", "id": 1}))
    with pytest.raises(WireError):
        request_from(Frame({"op": "call", "prompt": "x", "mime_types": ["image/png"]}))
