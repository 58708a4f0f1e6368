"""The fakes grow documents, server tools and audio the way the real services take them, driven
by the real anthropic and google-genai SDKs."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import pytest
from anthropic import AsyncAnthropic
from google import genai
from google.genai import errors, types

from tests.fakes.anthropic import (
    FakeAnthropic,
    Reply,
    cited_text_block,
    pause_turn_reply,
    server_tool_use_block,
    text_reply,
    web_fetch_result_block,
    web_search_reply,
)
from tests.fakes.gemini import FakeGemini, TranscriptReply
from tests.media_samples import encrypted_pdf, ogg_not_audio, ogg_opus, pdf

KEY = "sk-ant-test-not-a-real-key"
MODEL = "claude-sonnet-5-5"
WEB_TOOLS: list[Any] = [
    {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},
    {"type": "web_fetch_20250910", "name": "web_fetch", "max_uses": 5},
]


@pytest.fixture
async def fake() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic() as server:
        yield server


@pytest.fixture
async def client(fake: FakeAnthropic) -> AsyncIterator[AsyncAnthropic]:
    sdk = AsyncAnthropic(api_key=KEY, base_url=fake.base_url, max_retries=0, timeout=10)
    yield sdk
    await sdk.close()


def user(*blocks: dict[str, Any]) -> list[Any]:
    return [{"role": "user", "content": [*blocks, {"type": "text", "text": "what is it?"}]}]


async def test_pdf_by_file_id_counts_pages(fake: FakeAnthropic, client: AsyncAnthropic) -> None:
    uploaded = await client.beta.files.upload(file=("doc.pdf", pdf(3), "application/pdf"))
    fake.script(text_reply("A PDF."))
    doc = {"type": "document", "source": {"type": "file", "file_id": uploaded.id}, "title": "doc"}
    message = await client.messages.create(model=MODEL, max_tokens=50, messages=user(doc))
    assert message.usage.input_tokens >= 3 * 1500


async def test_text_and_base64_documents_are_accepted(
    fake: FakeAnthropic, client: AsyncAnthropic
) -> None:
    fake.script(text_reply("ok"), text_reply("ok"))
    text_doc = {
        "type": "document",
        "source": {"type": "text", "media_type": "text/plain", "data": "a,b\n1,2"},
        "title": "t.csv",
    }
    await client.messages.create(model=MODEL, max_tokens=50, messages=user(text_doc))
    b64 = {
        "type": "document",
        "source": {
            "type": "base64",
            "media_type": "application/pdf",
            "data": base64.b64encode(pdf(1)).decode(),
        },
    }
    await client.messages.create(model=MODEL, max_tokens=50, messages=user(b64))


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"type": "document"}, "source: Field required"),
        ({"type": "document", "source": {"type": "zip", "data": "x"}}, "does not match"),
        (
            {
                "type": "document",
                "source": {
                    "type": "base64",
                    "media_type": "application/pdf",
                    "data": "bm90IGEgcGRm",
                },
            },
            "not valid",
        ),
        (
            {
                "type": "document",
                "source": {
                    "type": "base64",
                    "media_type": "application/pdf",
                    "data": base64.b64encode(encrypted_pdf()).decode(),
                },
            },
            "password",
        ),
        (
            {
                "type": "document",
                "source": {"type": "text", "media_type": "text/plain", "data": ""},
            },
            "non-empty",
        ),
        ({"type": "document", "source": {"type": "file", "file_id": "file_nope"}}, "not found"),
        (
            {
                "type": "document",
                "source": {"type": "text", "media_type": "text/plain", "data": "x"},
                "extra": 1,
            },
            "Extra inputs",
        ),
    ],
)
async def test_malformed_documents_get_400(
    client: AsyncAnthropic, block: dict[str, Any], message: str
) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        await client.messages.create(model=MODEL, max_tokens=50, messages=user(block))
    assert caught.value.status_code == 400
    body = caught.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert message in body["error"]["message"]


@pytest.mark.parametrize(
    "tool",
    [
        {"type": "web_search_20990101", "name": "web_search"},
        {"type": "web_search_20250305", "name": "search"},
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 0},
        {"type": "web_search_20250305", "name": "web_search", "bogus": True},
        {
            "type": "web_fetch_20250910",
            "name": "web_fetch",
            "allowed_domains": ["a.com"],
            "blocked_domains": ["b.com"],
        },
    ],
)
async def test_malformed_server_tools_get_400(client: AsyncAnthropic, tool: Any) -> None:
    with pytest.raises(anthropic.BadRequestError):
        await client.messages.create(
            model=MODEL, max_tokens=50, tools=[tool], messages=[{"role": "user", "content": "hi"}]
        )


async def test_web_search_streams_blocks_citations_and_usage(
    fake: FakeAnthropic, client: AsyncAnthropic
) -> None:
    results = [("https://example.com/a", "Page A"), ("https://example.com/b", "Page B")]
    fake.script(web_search_reply("weather", results, "It is sunny.", cite=2), text_reply("ok"))
    question = [{"role": "user", "content": "weather?"}]
    async with client.messages.stream(
        model=MODEL, max_tokens=200, tools=WEB_TOOLS, messages=question
    ) as stream:
        message = await stream.get_final_message()
    kinds = [b.type for b in message.content]
    assert kinds == ["text", "server_tool_use", "web_search_tool_result", "text"]
    assert message.usage.server_tool_use is not None
    assert message.usage.server_tool_use.web_search_requests == 1
    assert message.usage.server_tool_use.web_fetch_requests == 0
    cited = message.content[3]
    assert cited.type == "text" and cited.citations
    assert [c.url for c in cited.citations] == ["https://example.com/a", "https://example.com/b"]  # type: ignore[union-attr]
    # Passed back unchanged, the blocks are accepted.
    back = [b.to_dict() for b in message.content]
    follow = [
        *question,
        {"role": "assistant", "content": back},
        {"role": "user", "content": "thanks"},
    ]
    await client.messages.create(model=MODEL, max_tokens=50, tools=WEB_TOOLS, messages=follow)  # type: ignore[arg-type]
    # Changed, they are refused.
    back[2]["content"][0]["encrypted_content"] = "tampered"
    with pytest.raises(anthropic.BadRequestError, match="unchanged"):
        await client.messages.create(model=MODEL, max_tokens=50, tools=WEB_TOOLS, messages=follow)  # type: ignore[arg-type]


async def test_pause_turn_is_continued_with_the_partial_assistant_message(
    fake: FakeAnthropic, client: AsyncAnthropic
) -> None:
    fake.script(pause_turn_reply("a", "b"), text_reply("done"))
    question = [{"role": "user", "content": "research"}]
    paused = await client.messages.create(
        model=MODEL, max_tokens=200, tools=WEB_TOOLS, messages=question
    )
    assert paused.stop_reason == "pause_turn"
    assert paused.usage.server_tool_use is not None
    assert paused.usage.server_tool_use.web_search_requests == 2
    follow = [*question, {"role": "assistant", "content": [b.to_dict() for b in paused.content]}]
    done = await client.messages.create(
        model=MODEL, max_tokens=200, tools=WEB_TOOLS, messages=follow
    )  # type: ignore[arg-type]
    assert done.stop_reason == "end_turn"
    # A plain trailing assistant message is prefill, which is refused.
    prefill = [*question, {"role": "assistant", "content": "Sure"}]
    with pytest.raises(anthropic.BadRequestError, match="prefill"):
        await client.messages.create(model=MODEL, max_tokens=50, messages=prefill)  # type: ignore[arg-type]


def gemini_client(base_url: str) -> genai.Client:
    return genai.Client(
        api_key="fake-google-key",
        http_options=types.HttpOptions(
            base_url=base_url,
            api_version="v1beta",
            retry_options=types.HttpRetryOptions(attempts=1),
        ),
    )


async def test_gemini_transcribes_ogg_with_audio_usage() -> None:
    async with FakeGemini(default=TranscriptReply("hello there")) as fake:
        client = gemini_client(fake.base_url)
        response = await client.aio.models.generate_content(
            model="gemini-3.5-flash",
            contents=[
                types.Part.from_bytes(data=ogg_opus(3), mime_type="audio/ogg"),
                "Transcribe.",
            ],
        )
        await client.aio.aclose()
    assert response.text == "hello there"
    usage = response.usage_metadata
    assert usage is not None and usage.prompt_tokens_details is not None
    audio = [d for d in usage.prompt_tokens_details if d.modality == types.MediaModality.AUDIO]
    assert audio and audio[0].token_count == 96  # 3 s x 32
    assert fake.requests[0].audio[0].mime_type == "audio/ogg"


@pytest.mark.parametrize(
    ("data", "mime"),
    [(ogg_not_audio(), "audio/ogg"), (b"", "audio/ogg"), (b"x" * 10, "audio/x-unknown")],
)
async def test_gemini_refuses_what_is_not_audio(data: bytes, mime: str) -> None:
    async with FakeGemini(default=TranscriptReply("never")) as fake:
        client = gemini_client(fake.base_url)
        with pytest.raises(errors.ClientError) as caught:
            await client.aio.models.generate_content(
                model="gemini-3.5-flash",
                contents=[types.Part.from_bytes(data=data, mime_type=mime), "Transcribe."],
            )
        await client.aio.aclose()
    assert caught.value.code == 400


async def test_web_fetch_streams_and_counts(fake: FakeAnthropic, client: AsyncAnthropic) -> None:
    use = server_tool_use_block("web_fetch", {"url": "https://example.com/doc"})
    fake.script(
        Reply(
            content=[
                use,
                web_fetch_result_block(use["id"], "https://example.com/doc", "The page text."),
                cited_text_block("The page says hello.", [("https://example.com/doc", "Doc")]),
            ]
        ),
        text_reply("ok"),
    )
    question = [{"role": "user", "content": "read https://example.com/doc"}]
    async with client.messages.stream(
        model=MODEL, max_tokens=200, tools=WEB_TOOLS, messages=question
    ) as stream:
        message = await stream.get_final_message()
    assert [b.type for b in message.content] == ["server_tool_use", "web_fetch_tool_result", "text"]
    assert message.content[0].input == {"url": "https://example.com/doc"}  # type: ignore[union-attr]
    usage = message.usage.server_tool_use
    assert usage is not None and (usage.web_search_requests, usage.web_fetch_requests) == (0, 1)
    back = [b.to_dict() for b in message.content]
    follow = [*question, {"role": "assistant", "content": back}, {"role": "user", "content": "ok"}]
    await client.messages.create(model=MODEL, max_tokens=50, tools=WEB_TOOLS, messages=follow)  # type: ignore[arg-type]
