"""The Anthropic fake speaks the wire format the real anthropic SDK expects."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anthropic
import httpx2
import pytest
from anthropic import AsyncAnthropic
from PIL import Image

from tests.fakes.anthropic import (
    ApiError,
    Delay,
    FakeAnthropic,
    Hang,
    RecordedRequest,
    Reply,
    corrupt_chunk,
    dropped_connection,
    max_tokens_reply,
    midstream_error,
    overloaded,
    rate_limited,
    refusal_reply,
    spend_limit_reached,
    text_block,
    text_reply,
    thinking_block,
    tool_use_block,
    tool_use_reply,
    truncated_stream,
)
from tests.fakes.canonical import canonical_bytes, canonical_text

KEY = "sk-ant-test-not-a-real-key"
MODEL = "claude-sonnet-5-5"
TOOLS = [
    {
        "name": "generate_image",
        "description": "Generate an image",
        "input_schema": {
            "type": "object",
            "properties": {"prompt": {"type": "string"}, "aspect_ratio": {"type": "string"}},
            "required": ["prompt"],
        },
    }
]
HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture
async def fake() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic() as server:
        yield server


@pytest.fixture
async def client(fake: FakeAnthropic) -> AsyncIterator[AsyncAnthropic]:
    sdk = AsyncAnthropic(api_key=KEY, base_url=fake.base_url, max_retries=0, timeout=10)
    yield sdk
    await sdk.close()


def png_bytes(width: int = 8, height: int = 6) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


async def collect_text(client: AsyncAnthropic, into: list[str]) -> None:
    async with client.messages.stream(model=MODEL, max_tokens=100, messages=HELLO) as stream:
        async for piece in stream.text_stream:
            into.append(piece)


async def test_non_streaming_text_reply(fake: FakeAnthropic, client: AsyncAnthropic) -> None:
    fake.script(text_reply("Hi there!"))

    msg = await client.messages.create(model=MODEL, max_tokens=100, messages=HELLO)

    assert msg.content[0].type == "text"
    assert msg.content[0].text == "Hi there!"
    assert msg.stop_reason == "end_turn"
    assert msg.model == MODEL
    assert msg.id.startswith("msg_01")
    assert msg.usage.input_tokens > 0
    assert msg.usage.output_tokens > 0
    assert msg.usage.cache_creation is not None
    [record] = fake.requests
    assert record.headers["authorization"] == f"Bearer {KEY}"
    assert record.status == 200
    assert record.time_end is not None
    assert record.time_end >= record.time_start
    assert fake.message_requests() == [{"max_tokens": 100, "messages": HELLO, "model": MODEL}]


async def test_streamed_text_arrives_in_several_deltas(
    fake: FakeAnthropic, client: AsyncAnthropic
) -> None:
    text = "Once upon a time there was a very small red cat."
    fake.script(text_reply(text))

    async with client.messages.stream(model=MODEL, max_tokens=100, messages=HELLO) as stream:
        pieces = [piece async for piece in stream.text_stream]
        msg = await stream.get_final_message()

    assert len(pieces) > 2
    assert "".join(pieces) == text
    assert msg.content[0].text == text
    assert msg.stop_reason == "end_turn"
    assert msg.usage.output_tokens == -(-len(text) // 4)
    assert fake.requests[0].outcome == "stream"


async def test_sse_bytes_name_every_event(fake: FakeAnthropic) -> None:
    fake.script(tool_use_reply("generate_image", {"prompt": "a red cat"}, text="Drawing."))
    body = {"model": MODEL, "max_tokens": 50, "messages": HELLO, "tools": TOOLS, "stream": True}
    headers = {"x-api-key": KEY, "anthropic-version": "2026-10-21"}

    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{fake.base_url}/v1/messages", json=body, headers=headers) as resp,
    ):
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        assert resp.headers["request-id"].startswith("req_")
        raw = (await resp.read()).decode()

    chunks = [c for c in raw.split("\n\n") if c]
    names = [c.split("\n")[0].removeprefix("event: ") for c in chunks]
    for chunk in chunks:
        event_line, data_line = chunk.split("\n")
        assert event_line.startswith("event: ")
        assert json.loads(data_line.removeprefix("data: "))["type"] == event_line[7:]
    assert names[0] == "message_start"
    assert names[1:3] == ["content_block_start", "ping"]
    assert names[-2:] == ["message_delta", "message_stop"]
    assert names.count("content_block_start") == names.count("content_block_stop") == 2
    delta = json.loads(chunks[-2].split("\n")[1][6:])
    assert delta["delta"]["stop_reason"] == "tool_use"
    assert delta["usage"]["output_tokens"] > 1
    assert delta["usage"]["input_tokens"] > 0


async def test_streamed_tool_use_input_is_parsed_by_the_sdk(
    fake: FakeAnthropic, client: AsyncAnthropic
) -> None:
    args = {"prompt": "a red cat on a windowsill", "aspect_ratio": "16:9"}
    fake.script(tool_use_reply("generate_image", args, id="toolu_01Fixed", text="Let me draw."))

    async with client.messages.stream(
        model=MODEL, max_tokens=100, messages=HELLO, tools=TOOLS
    ) as stream:
        kinds = [event.type async for event in stream]
        msg = await stream.get_final_message()

    assert kinds.count("input_json") > 2
    assert msg.stop_reason == "tool_use"
    tool = msg.content[1]
    assert tool.type == "tool_use"
    assert (tool.id, tool.name, tool.input) == ("toolu_01Fixed", "generate_image", args)


async def test_thinking_blocks_round_trip_unchanged(
    fake: FakeAnthropic, client: AsyncAnthropic
) -> None:
    thinking = thinking_block("The user wants a cat picture.")
    call = tool_use_block("generate_image", {"prompt": "cat"})
    fake.script(Reply([thinking, call], stop_reason="tool_use"), text_reply("Done!"))

    async with client.messages.stream(
        model=MODEL, max_tokens=100, messages=HELLO, tools=TOOLS
    ) as stream:
        first = await stream.get_final_message()
    history: list[Any] = [*HELLO, first.to_param()]
    result = {"type": "tool_result", "tool_use_id": call["id"], "content": "image sent"}
    history.append({"role": "user", "content": [result]})
    second = await client.messages.create(
        model=MODEL, max_tokens=100, messages=history, tools=TOOLS
    )

    assert first.content[0].type == "thinking"
    assert first.content[0].thinking == thinking["thinking"]
    emitted = fake.sent_messages()[0]["content"][0]
    assert first.content[0].signature == emitted["signature"]
    assert second.content[0].text == "Done!"
    sent_back = fake.message_requests()[1]["messages"][1]["content"][0]
    assert sent_back == emitted


async def test_refusal_and_max_tokens(fake: FakeAnthropic, client: AsyncAnthropic) -> None:
    fake.script(refusal_reply(category="cyber"), max_tokens_reply("This is cut"))

    refused = await client.messages.create(model=MODEL, max_tokens=100, messages=HELLO)
    async with client.messages.stream(model=MODEL, max_tokens=100, messages=HELLO) as stream:
        cut = await stream.get_final_message()

    assert refused.stop_reason == "refusal"
    assert refused.stop_details is not None
    assert refused.stop_details.category == "cyber"
    assert cut.stop_reason == "max_tokens"
    assert cut.content[0].text == "This is cut"


async def test_rate_limit_maps_to_rate_limit_error(
    fake: FakeAnthropic, client: AsyncAnthropic
) -> None:
    fake.script(rate_limited())

    with pytest.raises(anthropic.RateLimitError) as caught:
        await client.messages.create(model=MODEL, max_tokens=10, messages=HELLO)

    assert caught.value.status_code == 429
    assert caught.value.type == "rate_limit_error"
    assert caught.value.request_id is not None
    assert caught.value.request_id.startswith("req_")


async def test_overloaded_is_retried_then_raised(fake: FakeAnthropic) -> None:
    fake.script(overloaded(), overloaded(), overloaded())
    sdk = AsyncAnthropic(api_key=KEY, base_url=fake.base_url, max_retries=2)
    started = time.monotonic()

    with pytest.raises(anthropic.OverloadedError):
        await sdk.messages.create(model=MODEL, max_tokens=10, messages=HELLO)
    await sdk.close()

    assert time.monotonic() - started < 2
    retry_counts = [r.headers["x-stainless-retry-count"] for r in fake.requests]
    assert retry_counts == ["0", "1", "2"]


async def test_retry_then_success(fake: FakeAnthropic) -> None:
    fake.script(overloaded(), ApiError(500), text_reply("finally"))
    sdk = AsyncAnthropic(api_key=KEY, base_url=fake.base_url, max_retries=2)

    msg = await sdk.messages.create(model=MODEL, max_tokens=10, messages=HELLO)
    await sdk.close()

    assert msg.content[0].text == "finally"
    assert [r.outcome for r in fake.requests] == ["error", "error", "ok"]


async def test_spend_limit_is_not_retried(fake: FakeAnthropic) -> None:
    fake.script(spend_limit_reached(), text_reply("never sent"))
    sdk = AsyncAnthropic(api_key=KEY, base_url=fake.base_url, max_retries=2)

    with pytest.raises(anthropic.RateLimitError) as caught:
        await sdk.messages.create(model=MODEL, max_tokens=10, messages=HELLO)
    await sdk.close()

    assert caught.value.error_code == "enforced_spend_limit_reached"
    assert len(fake.requests) == 1
    assert fake.pending_replies == 1


async def test_midstream_error_raises_status_error(
    fake: FakeAnthropic, client: AsyncAnthropic
) -> None:
    fake.script(midstream_error(after_deltas=2))
    seen: list[str] = []

    with pytest.raises(anthropic.APIStatusError) as caught:
        await collect_text(client, seen)

    assert not isinstance(caught.value, anthropic.OverloadedError)
    assert caught.value.status_code == 200
    assert caught.value.type == "overloaded_error"
    assert len(seen) == 2


async def test_truncated_stream_has_no_stop_reason(
    fake: FakeAnthropic, client: AsyncAnthropic
) -> None:
    fake.script(truncated_stream(reply=text_reply("All of this text arrives.")))

    async with client.messages.stream(model=MODEL, max_tokens=100, messages=HELLO) as stream:
        msg = await stream.get_final_message()

    assert msg.content[0].text == "All of this text arrives."
    assert msg.stop_reason is None


async def test_corrupt_chunk_fails_the_stream(fake: FakeAnthropic, client: AsyncAnthropic) -> None:
    fake.script(corrupt_chunk(after_deltas=1))

    with pytest.raises(json.JSONDecodeError):
        async with client.messages.stream(model=MODEL, max_tokens=100, messages=HELLO) as stream:
            await stream.get_final_message()


async def test_dropped_connection_mid_stream(fake: FakeAnthropic, client: AsyncAnthropic) -> None:
    fake.script(dropped_connection(after_deltas=1))

    with pytest.raises(httpx2.RemoteProtocolError) as caught:
        async with client.messages.stream(model=MODEL, max_tokens=100, messages=HELLO) as stream:
            await stream.get_final_message()

    assert "message_stop" not in str(caught.value)
    assert fake.requests[0].outcome == "fault:drop"


async def test_dropped_connection_before_response_is_retried(fake: FakeAnthropic) -> None:
    fake.script(dropped_connection(), text_reply("second try"))
    sdk = AsyncAnthropic(api_key=KEY, base_url=fake.base_url, max_retries=1)

    msg = await sdk.messages.create(model=MODEL, max_tokens=10, messages=HELLO)
    await sdk.close()

    assert msg.content[0].text == "second try"
    assert len(fake.requests) == 2


async def test_missing_tool_result_is_rejected(fake: FakeAnthropic, client: AsyncAnthropic) -> None:
    fake.script(text_reply("not used"))
    history = [
        *HELLO,
        {"role": "assistant", "content": [tool_use_block("generate_image", {}, id="toolu_01Abc")]},
        {"role": "user", "content": "and?"},
    ]

    with pytest.raises(anthropic.BadRequestError) as caught:
        await client.messages.create(model=MODEL, max_tokens=10, messages=history, tools=TOOLS)

    assert caught.value.type == "invalid_request_error"
    assert caught.value.api_message.startswith(
        "messages.1: `tool_use` ids were found without `tool_result` blocks immediately after: "
        "toolu_01Abc."
    )
    assert fake.pending_replies == 1
    assert fake.requests[0].outcome == "invalid"


async def test_partial_and_unexpected_tool_results_are_rejected(
    fake: FakeAnthropic, client: AsyncAnthropic
) -> None:
    calls = [tool_use_block("generate_image", {}, id=f"toolu_01N{i}") for i in range(2)]
    assistant = {"role": "assistant", "content": calls}
    only_one = [{"type": "tool_result", "tool_use_id": "toolu_01N0", "content": "ok"}]
    stranger = [*only_one, {"type": "tool_result", "tool_use_id": "toolu_01N1", "content": "x"}]
    stranger.append({"type": "tool_result", "tool_use_id": "toolu_01Zz", "content": "x"})
    text_first = [{"type": "text", "text": "results:"}, *stranger[:2]]

    for content, expected in [
        (only_one, "toolu_01N1"),
        (stranger, "unexpected `tool_use_id`"),
        (text_first, "toolu_01N0, toolu_01N1"),
    ]:
        history = [*HELLO, assistant, {"role": "user", "content": content}]
        with pytest.raises(anthropic.BadRequestError, match=expected):
            await client.messages.create(model=MODEL, max_tokens=10, messages=history)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"extra_body": {"temperature": 0.2}}, "temperature"),
        ({"extra_body": {"top_k": 5}}, "top_k"),
        ({"tool_choice": {"type": "any"}, "tools": TOOLS}, "tool_choice"),
        (
            {"tool_choice": {"type": "tool", "name": "generate_image"}, "tools": TOOLS},
            "tool_choice",
        ),
        ({"messages": [{"role": "assistant", "content": "hi"}, *HELLO]}, "first message"),
        ({"messages": [*HELLO, *HELLO]}, "alternate"),
        ({"messages": [*HELLO, {"role": "assistant", "content": "Sure"}]}, "prefill"),
        ({"messages": [{"role": "user", "content": " "}]}, "non-whitespace"),
        ({"thinking": {"type": "enabled", "budget_tokens": 2000}}, "thinking"),
        ({"tools": [*TOOLS, *TOOLS]}, "unique"),
    ],
)
async def test_invalid_requests_get_400(
    fake: FakeAnthropic, client: AsyncAnthropic, change: dict[str, Any], expected: str
) -> None:
    fake.set_default(text_reply("should not be reached"))
    kwargs: dict[str, Any] = {"model": MODEL, "max_tokens": 10, "messages": HELLO} | change

    with pytest.raises(anthropic.BadRequestError, match=expected):
        await client.messages.create(**kwargs)


async def test_files_upload_reference_and_delete(
    fake: FakeAnthropic, client: AsyncAnthropic
) -> None:
    image = png_bytes()
    fake.script(text_reply("A red square."))

    meta = await client.files.upload(file=("photo.png", image, "image/png"))
    content: list[Any] = [
        {"type": "image", "source": {"type": "file", "file_id": meta.id}},
        {"type": "text", "text": "Describe this image"},
    ]
    msg = await client.messages.create(
        model=MODEL, max_tokens=50, messages=[{"role": "user", "content": content}]
    )
    listed = [f.id async for f in client.files.list()]
    deleted = await client.files.delete(meta.id)

    assert meta.id.startswith("file_011")
    assert (meta.filename, meta.mime_type, meta.size_bytes) == (
        "photo.png",
        "image/png",
        len(image),
    )
    assert fake.files[meta.id].data == image
    assert msg.content[0].text == "A red square."
    assert listed == [meta.id]
    assert (deleted.id, deleted.type) == (meta.id, "file_deleted")
    assert fake.files[meta.id].deleted
    assert fake.live_files() == []
    with pytest.raises(anthropic.BadRequestError, match="File not found"):
        await client.messages.create(
            model=MODEL, max_tokens=50, messages=[{"role": "user", "content": content}]
        )
    with pytest.raises(anthropic.NotFoundError):
        await client.files.retrieve_metadata(meta.id)


async def test_uploaded_files_are_not_downloadable(
    fake: FakeAnthropic, client: AsyncAnthropic
) -> None:
    meta = await client.files.upload(file=("photo.png", png_bytes(), "image/png"))

    with pytest.raises(anthropic.BadRequestError) as caught:
        await client.files.download(meta.id)

    assert caught.value.error_code == "file_not_downloadable"
    assert (await client.files.retrieve_metadata(meta.id)).downloadable is False


async def test_upload_failures_are_injected(fake: FakeAnthropic) -> None:
    fake.fail_uploads(times=2, status=500)
    sdk = AsyncAnthropic(api_key=KEY, base_url=fake.base_url, max_retries=1)

    with pytest.raises(anthropic.InternalServerError):
        await sdk.files.upload(file=("a.png", png_bytes(), "image/png"))
    meta = await sdk.files.upload(file=("b.png", png_bytes(), "image/png"))
    await sdk.close()

    assert [r.status for r in fake.requests] == [500, 500, 200]
    assert list(fake.files) == [meta.id]


async def test_base64_image_must_match_its_media_type(
    fake: FakeAnthropic, client: AsyncAnthropic
) -> None:
    data = base64.b64encode(png_bytes()).decode()
    source = {"type": "base64", "media_type": "image/jpeg", "data": data}
    messages: Any = [{"role": "user", "content": [{"type": "image", "source": source}]}]

    with pytest.raises(anthropic.BadRequestError, match="media type"):
        await client.messages.create(model=MODEL, max_tokens=10, messages=messages)


async def test_prompt_cache_reads_a_shared_prefix(
    fake: FakeAnthropic, client: AsyncAnthropic
) -> None:
    fake.set_default(text_reply("ok"))
    system: Any = [
        {
            "type": "text",
            "text": "You are a helpful bot. " * 50,
            "cache_control": {"type": "ephemeral"},
        }
    ]
    turn: list[Any] = [{"role": "user", "content": "first question"}]

    first = await client.messages.create(model=MODEL, max_tokens=10, system=system, messages=turn)
    turn = [{"role": "user", "content": "a different question"}]
    second = await client.messages.create(model=MODEL, max_tokens=10, system=system, messages=turn)

    assert first.usage.cache_read_input_tokens == 0
    assert first.usage.cache_creation_input_tokens is not None
    assert first.usage.cache_creation_input_tokens > 250
    assert first.usage.cache_creation is not None
    assert first.usage.cache_creation.ephemeral_5m_input_tokens == (
        first.usage.cache_creation_input_tokens
    )
    assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens
    assert second.usage.cache_creation_input_tokens == 0
    assert second.usage.input_tokens < 20


async def test_prompt_cache_follows_a_growing_conversation(
    fake: FakeAnthropic, client: AsyncAnthropic
) -> None:
    fake.set_default(text_reply("An answer that is long enough to matter."))
    marker = {"type": "ephemeral"}
    history: list[Any] = []
    reads: list[int] = []
    for question in ["one", "two", "three"]:
        for message in history:
            for block in message["content"]:
                block.pop("cache_control", None)
        history.append(
            {
                "role": "user",
                "content": [{"type": "text", "text": question, "cache_control": marker}],
            }
        )
        msg = await client.messages.create(model=MODEL, max_tokens=10, messages=history)
        reads.append(msg.usage.cache_read_input_tokens or 0)
        history.append({"role": "assistant", "content": [text_block(msg.content[0].text)]})

    assert reads[0] == 0
    assert 0 < reads[1] < reads[2]


async def test_unscripted_request_fails_loudly(fake: FakeAnthropic) -> None:
    sdk = AsyncAnthropic(api_key=KEY, base_url=fake.base_url, max_retries=2)

    with pytest.raises(anthropic.InternalServerError, match="no reply scripted"):
        await sdk.messages.create(model=MODEL, max_tokens=10, messages=HELLO)
    await sdk.close()

    assert fake.unscripted_count == 1
    assert len(fake.requests) == 1


async def test_callable_replies_see_the_request(
    fake: FakeAnthropic, client: AsyncAnthropic
) -> None:
    def echo(request: RecordedRequest) -> Reply:
        return text_reply("echo: " + request.json["messages"][-1]["content"])

    async def slow_echo(request: RecordedRequest) -> Reply:
        await asyncio.sleep(0)
        return echo(request)

    fake.script(echo, slow_echo)

    first = await client.messages.create(model=MODEL, max_tokens=10, messages=HELLO)
    second = await client.messages.create(
        model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "again"}]
    )

    assert first.content[0].text == "echo: hello"
    assert second.content[0].text == "echo: again"


async def test_latency_is_simulated_and_measured(
    client: AsyncAnthropic, fake: FakeAnthropic
) -> None:
    fake.ttft = 0.05
    fake.script(
        Reply([text_block("x" * 80)], tokens_per_second=200.0),
        Delay(0.1, text_reply("late")),
    )
    started = time.monotonic()

    async with client.messages.stream(model=MODEL, max_tokens=100, messages=HELLO) as stream:
        first_piece_at = None
        async for _ in stream.text_stream:
            first_piece_at = first_piece_at or time.monotonic()
    streamed = time.monotonic()
    await client.messages.create(model=MODEL, max_tokens=10, messages=HELLO)
    done = time.monotonic()

    assert first_piece_at is not None
    assert first_piece_at - started >= 0.05
    assert streamed - started >= 0.05 + 20 / 200 - 0.01
    assert done - streamed >= 0.15
    assert fake.time_in_provider >= 0.3
    assert len(fake.intervals()) == 2


async def test_wait_for_requests_and_hang(fake: FakeAnthropic, client: AsyncAnthropic) -> None:
    fake.script(Hang())
    call = asyncio.create_task(
        client.with_options(timeout=5).messages.create(model=MODEL, max_tokens=10, messages=HELLO)
    )

    [record] = await fake.wait_for_requests(1, timeout=2)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    with pytest.raises(TimeoutError, match="expected 2 requests"):
        await fake.wait_for_requests(2, timeout=0.05)

    assert record.json["messages"] == HELLO
    done = await fake.wait_for_requests(1, timeout=2, completed=True)
    assert done[0].outcome in ("hang", "cancelled")


async def test_auth_headers(fake: FakeAnthropic) -> None:
    fake.set_default(text_reply("ok"))
    body = {"model": MODEL, "max_tokens": 5, "messages": HELLO}
    version = {"anthropic-version": "2026-10-21"}
    url = f"{fake.base_url}/v1/messages"

    async with aiohttp.ClientSession() as http:
        async with http.post(url, json=body, headers=version | {"x-api-key": KEY}) as ok:
            assert ok.status == 200
        beta = version | {"x-api-key": KEY, "anthropic-beta": "files-api-2025-04-14"}
        async with http.post(url, json=body, headers=beta) as ok_beta:
            assert ok_beta.status == 200
        async with http.post(url, json=body, headers=version) as missing:
            assert missing.status == 401
            error = await missing.json()

    assert error["type"] == "error"
    assert error["error"]["type"] == "authentication_error"
    assert error["request_id"].startswith("req_")


def test_remembered_canonical_json_is_json_dumps_and_tells_types_apart() -> None:
    """The fake remembers the canonical JSON of flat blocks by their content: the remembered form
    must be exactly what json.dumps writes, and a string "1" must never stand for the number 1
    or True (equal as cache keys, different JSON)."""
    block = {"type": "text", "text": 'héllo "quoted"\n', "z": "last"}
    expected = json.dumps(block, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical_text(block) == expected
    assert canonical_text(dict(reversed(list(block.items())))) == expected
    assert canonical_bytes(block) == expected.encode()
    assert canonical_text({"a": "1"}) == '{"a":"1"}'
    assert canonical_text({"a": 1}) == '{"a":1}'
    assert canonical_text({"a": True}) == '{"a":true}'
    assert canonical_text({"a": "1", "b": {"c": "d"}}) == '{"a":"1","b":{"c":"d"}}'
