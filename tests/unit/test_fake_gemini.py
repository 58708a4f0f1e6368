"""The Gemini fake speaks the wire format the real google-genai SDK expects."""

from __future__ import annotations

import asyncio
import base64
import io
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from google import genai
from google.genai import errors, types
from PIL import Image

from tests.fakes.gemini import (
    DEFAULT_THOUGHTS_TOKENS,
    LIVE_MODELS,
    RETIRED_MODELS,
    ApiError,
    Delay,
    FakeGemini,
    GeminiRequest,
    Hang,
    ImageReply,
    blocked_prompt,
    finish,
    image_reply,
    no_image,
    output_size,
    raw_bytes_reply,
    text_only,
)

KEY = "fake-google-key-for-tests"
MODEL = "gemini-3-pro-image"


def make_client(
    base_url: str, *, api_version: str | None = "v1beta", timeout: int | None = None
) -> genai.Client:
    return genai.Client(
        api_key=KEY,
        http_options=types.HttpOptions(
            base_url=base_url,
            api_version=api_version,
            timeout=timeout,
            retry_options=types.HttpRetryOptions(attempts=1),
        ),
    )


@pytest.fixture
async def fake() -> AsyncIterator[FakeGemini]:
    async with FakeGemini() as server:
        yield server


@pytest.fixture
async def client(fake: FakeGemini) -> AsyncIterator[genai.Client]:
    gclient = make_client(fake.base_url)
    yield gclient
    await gclient.aio.aclose()


def image_config(aspect_ratio: str = "16:9", image_size: str = "2K") -> types.GenerateContentConfig:
    return types.GenerateContentConfig(
        response_modalities=["TEXT", "IMAGE"],
        image_config=types.ImageConfig(aspect_ratio=aspect_ratio, image_size=image_size),
    )


def final_image(resp: types.GenerateContentResponse) -> bytes:
    assert resp.candidates
    content = resp.candidates[0].content
    assert content is not None
    assert content.parts is not None
    images = [p.inline_data for p in content.parts if p.inline_data and not p.thought]
    assert images
    assert images[-1].data is not None
    return images[-1].data


def png(width: int = 10, height: int = 10) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (1, 2, 3)).save(out, "PNG")
    return out.getvalue()


async def test_image_reply_is_a_real_image(fake: FakeGemini, client: genai.Client) -> None:
    fake.script(image_reply(text="Here is a red cat."))

    resp = await client.aio.models.generate_content(
        model=MODEL, contents="draw a red cat", config=image_config("16:9", "2K")
    )

    data = final_image(resp)
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        assert image.size == output_size("16:9", "2K") == (64, 36)
    assert resp.candidates is not None
    assert resp.candidates[0].finish_reason == types.FinishReason.STOP
    assert resp.text == "Here is a red cat."
    assert resp.usage_metadata is not None
    assert resp.usage_metadata.candidates_token_count == 1120 + len("Here is a red cat.") // 4 + 1
    assert resp.usage_metadata.prompt_token_count == 4
    [record] = fake.requests
    assert isinstance(record, GeminiRequest)
    assert (record.api_version, record.model) == ("v1beta", MODEL)
    assert record.texts == ["draw a red cat"]
    assert record.aspect_ratio == "16:9"
    assert record.image_size == "2K"
    assert record.response_modalities == ["TEXT", "IMAGE"]
    assert record.headers["x-goog-api-key"] == KEY
    assert record.status == 200


async def test_realistic_4k_image(fake: FakeGemini, client: genai.Client) -> None:
    fake.script(image_reply(realistic_size=True), image_reply(fmt="JPEG", width=300, height=200))

    big = await client.aio.models.generate_content(
        model=MODEL, contents="a wide landscape", config=image_config("16:9", "4K")
    )
    jpeg = await client.aio.models.generate_content(model=MODEL, contents="x")

    data = final_image(big)
    with Image.open(io.BytesIO(data)) as image:
        assert image.size == (5504, 3072)
    assert len(data) < 2_000_000
    assert big.usage_metadata is not None
    assert big.usage_metadata.candidates_token_count == 2000
    with Image.open(io.BytesIO(final_image(jpeg))) as image:
        assert (image.format, image.size) == ("JPEG", (300, 200))


async def test_reference_images_round_trip(fake: FakeGemini, client: genai.Client) -> None:
    reference = png()
    # These bytes encode differently in URL-safe and standard base64.
    awkward = b"\xfb\xff\xfe>?\x00" * 10
    fake.script(image_reply())

    await client.aio.models.generate_content(
        model=MODEL,
        contents=[
            types.Part.from_bytes(data=reference, mime_type="image/png"),
            types.Part.from_bytes(data=awkward, mime_type="image/jpeg"),
            "Make the cat blue",
        ],
        config=image_config(),
    )

    [record] = fake.requests
    assert [(i.data, i.mime_type) for i in record.images] == [
        (reference, "image/png"),
        (awkward, "image/jpeg"),
    ]
    assert record.texts == ["Make the cat blue"]
    inline = record.json["contents"][0]["parts"][1]["inlineData"]
    assert "-" in inline["data"] or "_" in inline["data"]


async def test_standard_base64_and_camel_case_are_accepted(fake: FakeGemini) -> None:
    fake.script(image_reply())
    data = b"\xfb\xff\xfe>?\x00"
    part = {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(data).decode()}}
    body = {"contents": [{"role": "user", "parts": [part, {"text": "hi"}]}]}

    status, _ = await post_raw(fake, body)

    assert status == 200
    assert fake.requests[0].images[0].data == data


async def test_blocked_prompt(fake: FakeGemini, client: genai.Client) -> None:
    fake.script(blocked_prompt())

    resp = await client.aio.models.generate_content(model=MODEL, contents="something bad")

    assert resp.candidates is None
    assert resp.prompt_feedback is not None
    assert resp.prompt_feedback.block_reason == types.BlockedReason.PROHIBITED_CONTENT


async def test_output_blocks_and_missing_images(fake: FakeGemini, client: genai.Client) -> None:
    fake.script(
        finish("IMAGE_SAFETY"),
        finish("IMAGE_PROHIBITED_CONTENT", omit_content=True),
        no_image("I could not draw that."),
        text_only("Just words."),
    )

    results = [
        await client.aio.models.generate_content(model=MODEL, contents=f"try {i}") for i in range(4)
    ]

    safety, prohibited, missing, words = [r.candidates[0] for r in results if r.candidates]
    assert safety.finish_reason == types.FinishReason.IMAGE_SAFETY
    assert safety.content is not None
    assert safety.content.parts == []
    assert prohibited.finish_reason == types.FinishReason.IMAGE_PROHIBITED_CONTENT
    assert prohibited.content is None
    assert missing.finish_reason == types.FinishReason.NO_IMAGE
    assert words.finish_reason == types.FinishReason.STOP
    assert results[3].text == "Just words."
    assert words.content is not None
    assert words.content.parts is not None
    assert all(p.inline_data is None for p in words.content.parts)


async def test_thought_parts_precede_the_final_image(
    fake: FakeGemini, client: genai.Client
) -> None:
    fake.script(image_reply(thought_text="Planning the scene", thought_image=True, text="Done"))

    resp = await client.aio.models.generate_content(model=MODEL, contents="cat")

    assert resp.candidates is not None
    content = resp.candidates[0].content
    assert content is not None
    assert content.parts is not None
    parts = content.parts
    assert [bool(p.thought) for p in parts] == [True, True, False, False]
    assert parts[1].inline_data is not None
    assert parts[-1].thought_signature
    assert resp.text == "Done"
    with Image.open(io.BytesIO(final_image(resp))) as image:
        assert image.size == (64, 64)
    assert resp.usage_metadata is not None
    assert resp.usage_metadata.thoughts_token_count is not None
    assert resp.usage_metadata.thoughts_token_count > 0


async def test_raw_bytes_reply_delivers_hostile_bytes(
    fake: FakeGemini, client: genai.Client
) -> None:
    hostile = b"<?php system($_GET['x']); ?>" + bytes(range(256))
    fake.script(raw_bytes_reply(hostile, "image/png"))

    resp = await client.aio.models.generate_content(model=MODEL, contents="x")

    assert final_image(resp) == hostile


@pytest.mark.parametrize(
    ("error", "exc_type", "status"),
    [
        (ApiError(429), errors.ClientError, "RESOURCE_EXHAUSTED"),
        (ApiError(503), errors.ServerError, "UNAVAILABLE"),
        (ApiError(400, message="bad prompt"), errors.ClientError, "INVALID_ARGUMENT"),
    ],
)
async def test_errors_map_to_sdk_exceptions(
    fake: FakeGemini,
    client: genai.Client,
    error: ApiError,
    exc_type: type[errors.APIError],
    status: str,
) -> None:
    fake.script(error)

    with pytest.raises(exc_type) as caught:
        await client.aio.models.generate_content(model=MODEL, contents="x")

    assert caught.value.code == error.code
    assert caught.value.status == status
    assert len(fake.requests) == 1


@pytest.mark.parametrize("model", [*RETIRED_MODELS, "gemini-9-imaginary", "gpt-image-2.6-sunburst"])
async def test_retired_and_unknown_models_are_404_in_googles_shape(
    fake: FakeGemini, model: str
) -> None:
    fake.script(image_reply())  # never used: the model check comes first
    async with aiohttp.ClientSession() as http:
        response = await http.post(
            f"{fake.base_url}/v1beta/models/{model}:generateContent",
            headers={"x-goog-api-key": KEY},
            json={"contents": [{"parts": [{"text": "x"}]}]},
        )
        body = await response.json()
    assert response.status == 404
    assert body == {
        "error": {
            "code": 404,
            "message": f"models/{model} is not found for API version v1beta, "
            "or is not supported for generateContent.",
            "status": "NOT_FOUND",
        }
    }
    sdk = make_client(fake.base_url)
    try:
        with pytest.raises(errors.ClientError) as caught:
            await sdk.aio.models.generate_content(model=model, contents="x")
    finally:
        await sdk.aio.aclose()
    assert (caught.value.code, caught.value.status) == (404, "NOT_FOUND")
    assert f"models/{model} is not found" in str(caught.value.message)


async def test_every_live_model_is_served(fake: FakeGemini, client: genai.Client) -> None:
    fake.script(*(image_reply() for _ in LIVE_MODELS))
    for model in LIVE_MODELS:
        resp = await client.aio.models.generate_content(model=model, contents="x")
        assert resp.model_version == model


@pytest.mark.parametrize(("size", "image_tokens"), [("1K", 1120), ("2K", 1120), ("4K", 2000)])
async def test_usage_metadata_is_realistic(
    fake: FakeGemini, client: genai.Client, size: str, image_tokens: int
) -> None:
    fake.script(image_reply(text="A fox."))
    reference = types.Part.from_bytes(data=b"\x89PNG-not-checked", mime_type="image/png")
    resp = await client.aio.models.generate_content(
        model=MODEL, contents=[reference, "draw a fox"], config=image_config("1:1", size)
    )
    usage = resp.usage_metadata
    assert usage is not None
    assert usage.prompt_token_count == 3 + 560
    assert [(d.modality, d.token_count) for d in usage.prompt_tokens_details or []] == [
        (types.MediaModality.TEXT, 3),
        (types.MediaModality.IMAGE, 560),
    ]
    assert [(d.modality, d.token_count) for d in usage.candidates_tokens_details or []] == [
        (types.MediaModality.TEXT, 2),
        (types.MediaModality.IMAGE, image_tokens),
    ]
    assert usage.candidates_token_count == 2 + image_tokens
    assert usage.thoughts_token_count == DEFAULT_THOUGHTS_TOKENS
    assert usage.total_token_count == 563 + 2 + image_tokens + DEFAULT_THOUGHTS_TOKENS
    assert fake.requests[-1].usage is not None


async def test_usage_can_be_left_out(fake: FakeGemini, client: genai.Client) -> None:
    fake.script(
        image_reply(usage_mode="no_details"), image_reply(usage_mode="none"), image_reply(images=2)
    )
    no_details = await client.aio.models.generate_content(model=MODEL, contents="x")
    none = await client.aio.models.generate_content(model=MODEL, contents="x")
    two = await client.aio.models.generate_content(model=MODEL, contents="x", config=image_config())
    assert no_details.usage_metadata is not None
    assert no_details.usage_metadata.candidates_tokens_details is None
    assert no_details.usage_metadata.candidates_token_count == 1120
    assert none.usage_metadata is None
    assert two.candidates and two.candidates[0].content and two.candidates[0].content.parts
    images = [p for p in two.candidates[0].content.parts if p.inline_data and not p.thought]
    assert len(images) == 2
    assert images[0].inline_data and images[1].inline_data
    assert images[0].inline_data.data != images[1].inline_data.data
    assert two.usage_metadata and two.usage_metadata.candidates_token_count == 2240


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (image_config(aspect_ratio="7:3"), "aspect ratio"),
        (image_config(image_size="8K"), "image size"),
    ],
)
async def test_invalid_image_config_is_rejected(
    fake: FakeGemini, client: genai.Client, config: types.GenerateContentConfig, expected: str
) -> None:
    fake.set_default(image_reply())

    with pytest.raises(errors.ClientError, match=expected) as caught:
        await client.aio.models.generate_content(model=MODEL, contents="x", config=config)

    assert caught.value.code == 400
    assert fake.requests[0].outcome == "invalid"


async def post_raw(
    fake: FakeGemini, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    url = f"{fake.base_url}/v1beta/models/{MODEL}:generateContent"
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            url, json=body, headers={"x-goog-api-key": KEY} if headers is None else headers
        ) as resp,
    ):
        return resp.status, await resp.json()


async def test_person_generation_and_missing_key_are_rejected(fake: FakeGemini) -> None:
    fake.set_default(image_reply())
    contents = [{"role": "user", "parts": [{"text": "a portrait"}]}]
    config = {"imageConfig": {"aspectRatio": "1:1", "personGeneration": "ALLOW_ALL"}}

    person_status, person_body = await post_raw(
        fake, {"contents": contents, "generationConfig": config}
    )
    key_status, key_body = await post_raw(fake, {"contents": contents}, headers={})

    assert person_status == 400
    assert person_body["error"]["status"] == "INVALID_ARGUMENT"
    assert "personGeneration" in person_body["error"]["message"]
    assert key_status == 403
    assert key_body["error"]["code"] == 403


async def test_default_api_version_is_recorded(fake: FakeGemini) -> None:
    fake.script(text_only("ok"))
    gclient = make_client(fake.base_url, api_version=None)

    await gclient.aio.models.generate_content(model=MODEL, contents="x")
    await gclient.aio.aclose()

    assert fake.requests[0].api_version == "v1"
    assert fake.requests[0].path == f"/v1/models/{MODEL}:generateContent"


async def test_unscripted_request_is_an_error(fake: FakeGemini, client: genai.Client) -> None:
    with pytest.raises(errors.ServerError, match="no reply scripted"):
        await client.aio.models.generate_content(model=MODEL, contents="x")

    assert fake.unscripted_count == 1


async def test_callable_reply_sees_the_request(fake: FakeGemini, client: genai.Client) -> None:
    async def by_ratio(request: GeminiRequest) -> ImageReply:
        await asyncio.sleep(0)
        return image_reply(text=f"ratio {request.aspect_ratio}")

    fake.set_default(by_ratio)

    resp = await client.aio.models.generate_content(
        model=MODEL, contents="x", config=image_config("9:16", "1K")
    )

    assert resp.text == "ratio 9:16"
    with Image.open(io.BytesIO(final_image(resp))) as image:
        assert image.size == output_size("9:16", "1K") == (36, 64)


async def test_delay_latency_and_wait_helpers(fake: FakeGemini, client: genai.Client) -> None:
    fake.latency = 0.05
    fake.script(Delay(0.1), text_only("late"))
    started = time.monotonic()

    call = asyncio.create_task(client.aio.models.generate_content(model=MODEL, contents="x"))
    [arrived] = await fake.wait_for_requests(1, timeout=2)
    assert arrived.time_end is None
    resp = await call

    assert resp.text == "late"
    assert time.monotonic() - started >= 0.15
    [done] = await fake.wait_for_requests(1, timeout=1, completed=True)
    assert done.duration is not None
    assert done.duration >= 0.15
    assert fake.time_in_provider >= 0.15


async def test_hang_until_the_client_times_out(fake: FakeGemini) -> None:
    fake.script(Hang())
    gclient = make_client(fake.base_url, timeout=200)
    started = time.monotonic()

    with pytest.raises(TimeoutError):
        await gclient.aio.models.generate_content(model=MODEL, contents="x")
    await gclient.aio.aclose()

    assert 0.15 < time.monotonic() - started < 3
    [record] = await fake.wait_for_requests(1, timeout=2, completed=True)
    assert record.outcome == "hang"
