"""WorkerImageGateway and the fake OpenAI Images server, through the real openai SDK: the wire
format (JSON generations, multipart edits with `image[]` parts, usage, error bodies), sizes, safety
blocks, retries inside the deadline and a model the provider does not serve."""

from __future__ import annotations

import io
import time
from collections.abc import AsyncIterator

import openai
import pytest
import structlog.testing
from PIL import Image

from bot.providers.image_gateway import RetryPolicy, WorkerImageGateway
from bot.providers.image_worker import ImageWorker, WorkerSetup
from bot.providers.images import ImageBlocked, ImageUnavailable, ImageUsage
from bot.providers.openai_images import MAX_REFERENCES, openai_size
from tests.fakes.openai import (
    RETIRED_MODELS,
    ApiError,
    FakeOpenAI,
    Hang,
    check_size,
    image_reply,
    moderation_blocked,
    rate_limited,
    server_error,
)
from tests.image_charges import openai_cost

MODEL = "gpt-image-2.6-sunburst"
KEY = "sk-test-fake-openai-key"


def png(color: tuple[int, int, int] = (1, 2, 3), size: tuple[int, int] = (8, 8)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "PNG")
    return out.getvalue()


def jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (9, 9, 9)).save(out, "JPEG")
    return out.getvalue()


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(api_key=KEY) as server:
        yield server


def make_gateway(
    fake: FakeOpenAI,
    *,
    model: str = MODEL,
    attempts: int = 3,
    timeout: float = 10.0,
    size_mode: str = "flexible",
) -> WorkerImageGateway:
    """The gateway as the bot builds it, its calls made by a real image worker process."""
    setup = WorkerSetup("openai", KEY, fake.base_url, timeout, model, size_mode)
    return WorkerImageGateway(
        ImageWorker(setup),
        provider="openai",
        model=model,
        max_references=MAX_REFERENCES,
        retries=RetryPolicy(attempts, 0.01),
    )


@pytest.fixture
async def gateway(fake: FakeOpenAI) -> AsyncIterator[WorkerImageGateway]:
    gw = make_gateway(fake)
    yield gw
    await gw.aclose()


async def draw(
    gateway: WorkerImageGateway,
    *,
    references: list[tuple[bytes, str]] | None = None,
    aspect_ratio: str = "16:9",
    image_size: str = "2K",
    deadline_in: float = 10.0,
) -> object:
    return await gateway.generate(
        "a lighthouse at dusk",
        aspect_ratio=aspect_ratio,
        image_size=image_size,
        references=references or [],
        deadline=time.monotonic() + deadline_in,
    )


@pytest.mark.parametrize(
    ("ratio", "size", "expected"),
    [
        ("1:1", "1K", "1024x1024"),
        ("16:9", "1K", "1536x1024"),
        ("3:2", "1K", "1536x1024"),
        ("9:16", "1K", "1024x1536"),
        ("4:5", "1K", "1024x1536"),
        ("16:9", "2K", "2048x1152"),
        ("1:1", "2K", "2048x2048"),
        ("21:9", "2K", "2048x864"),
        ("16:9", "4K", "3840x2160"),
        ("9:16", "4K", "2160x3840"),
        ("1:1", "4K", "2880x2880"),
        ("21:9", "4K", "3840x1632"),
        ("4:3", "4K", "3312x2480"),
    ],
)
def test_sizes_are_the_nearest_the_model_takes(ratio: str, size: str, expected: str) -> None:
    assert openai_size(ratio, size) == expected
    assert check_size(MODEL, expected) is None


def test_standard_sizes_only_for_older_models() -> None:
    assert openai_size("16:9", "4K", "standard") == "1536x1024"
    assert openai_size("2:3", "2K", "standard") == "1024x1536"
    assert check_size("gpt-image-1.5", "2048x1152") is not None
    assert check_size("gpt-image-1.5", "1536x1024") is None


async def test_a_new_image_is_a_json_generation_with_usage(
    fake: FakeOpenAI, gateway: WorkerImageGateway
) -> None:
    fake.script(image_reply())
    image = await draw(gateway)
    [request] = fake.image_requests()
    assert (request.method, request.path, request.endpoint) == (
        "POST",
        "/v1/images/generations",
        "generations",
    )
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.json == {
        "model": MODEL,
        "prompt": "a lighthouse at dusk",
        "n": 1,
        "size": "2048x1152",
        "output_format": "png",
    }
    assert request.usage is not None
    assert image.usage == ImageUsage(  # type: ignore[attr-defined]
        text_input_tokens=5, image_input_tokens=0, text_output_tokens=0,
        image_output_tokens=request.usage["output_tokens"],
    )  # fmt: skip
    assert image.mime_type == "image/png"  # type: ignore[attr-defined]
    with Image.open(io.BytesIO(image.data)) as opened:  # type: ignore[attr-defined]
        assert opened.format == "PNG"
        assert opened.size == (64, 36)
    assert openai_cost(request.usage, "2K") == 5 * 5 + request.usage["output_tokens"] * 30


async def test_edits_send_every_reference_as_an_image_part(
    fake: FakeOpenAI, gateway: WorkerImageGateway
) -> None:
    fake.script(image_reply())
    references = [
        (png((1, 1, 1)), "image/png"),
        (jpeg(), "image/jpeg"),
        (png((2, 2, 2)), "image/png"),
    ]
    image = await draw(gateway, references=references, aspect_ratio="1:1", image_size="1K")
    [request] = fake.image_requests()
    assert (request.path, request.endpoint) == ("/v1/images/edits", "edits")
    assert request.headers["content-type"].startswith("multipart/form-data")
    assert [i.field_name for i in request.images] == ["image[]"] * 3
    assert [i.data for i in request.images] == [data for data, _ in references]
    assert [i.filename for i in request.images] == [
        "reference-1.png",
        "reference-2.jpg",
        "reference-3.png",
    ]
    assert [i.content_type for i in request.images] == ["image/png", "image/jpeg", "image/png"]
    assert request.fields == {
        "model": MODEL,
        "prompt": "a lighthouse at dusk",
        "n": "1",
        "size": "1024x1024",
        "output_format": "png",
    }
    assert image.usage is not None  # type: ignore[attr-defined]
    assert image.usage.image_input_tokens == 3 * 765  # type: ignore[attr-defined]
    assert image.usage.image_output_tokens == 4160  # type: ignore[attr-defined]


async def test_more_than_ten_references_are_refused_before_any_call(
    fake: FakeOpenAI, gateway: WorkerImageGateway
) -> None:
    with pytest.raises(ImageUnavailable) as caught:
        await draw(gateway, references=[(png(), "image/png")] * 11)
    assert caught.value.kind == "bad_request"
    assert fake.image_requests() == []


@pytest.mark.parametrize(("stage", "words"), [("input", "this prompt"), ("output", "generated")])
async def test_moderation_blocked_is_a_safety_block(
    fake: FakeOpenAI, gateway: WorkerImageGateway, stage: str, words: str
) -> None:
    fake.script(moderation_blocked(stage))
    with pytest.raises(ImageBlocked) as caught:
        await draw(gateway)
    assert caught.value.reason == "MODERATION_BLOCKED"
    assert words in caught.value.user_reason
    assert len(fake.image_requests()) == 1  # never retried


async def test_rate_limits_and_server_errors_are_retried(
    fake: FakeOpenAI, gateway: WorkerImageGateway
) -> None:
    fake.script(rate_limited(), server_error(503), image_reply())
    image = await draw(gateway)
    assert image.attempts == 3  # type: ignore[attr-defined]
    assert [r.status for r in fake.image_requests()] == [429, 503, 200]


async def test_retries_are_bounded_and_the_deadline_wins(fake: FakeOpenAI) -> None:
    gateway = make_gateway(fake, attempts=2)
    try:
        fake.script(server_error(500), server_error(500), server_error(500))
        with pytest.raises(ImageUnavailable) as caught:
            await draw(gateway)
        assert (caught.value.kind, caught.value.status, caught.value.attempts) == ("busy", 500, 2)
        fake.script(Hang())
        started = time.monotonic()
        with pytest.raises(ImageUnavailable) as caught:
            await draw(gateway, deadline_in=0.5)
        assert caught.value.kind == "timeout" and caught.value.cost_unknown
        assert time.monotonic() - started < 3
    finally:
        await gateway.aclose()


@pytest.mark.parametrize("model", [*RETIRED_MODELS, "gpt-image-9"])
async def test_an_unknown_model_is_model_gone_logged_once(fake: FakeOpenAI, model: str) -> None:
    gateway = make_gateway(fake, model=model)
    try:
        with structlog.testing.capture_logs() as logs:
            for _ in range(2):
                with pytest.raises(ImageUnavailable) as caught:
                    await draw(gateway)
                assert (caught.value.kind, caught.value.status) == ("model_gone", 404)
                assert f"The model '{model}' does not exist" in caught.value.detail
    finally:
        await gateway.aclose()
    assert [r.status for r in fake.image_requests()] == [404, 404]
    errors = [e for e in logs if e["log_level"] == "error"]
    assert [(e["event"], e["model"], e["provider"]) for e in errors] == [
        ("image_model_unavailable", model, "openai")
    ]


async def test_usage_variants(fake: FakeOpenAI, gateway: WorkerImageGateway) -> None:
    fake.script(image_reply(usage_mode="none"), image_reply(usage_mode="no_output_details"))
    assert (await draw(gateway)).usage is None  # type: ignore[attr-defined]
    older = await draw(gateway)
    request = fake.image_requests()[-1]
    assert request.usage is not None and "output_tokens_details" not in request.usage
    assert older.usage.image_output_tokens == request.usage["output_tokens"]  # type: ignore[attr-defined]


async def test_the_fake_speaks_openais_error_shapes_to_the_real_sdk(fake: FakeOpenAI) -> None:
    async with openai.AsyncOpenAI(api_key=KEY, base_url=fake.base_url, max_retries=0) as sdk:
        with pytest.raises(openai.NotFoundError) as missing:
            await sdk.images.generate(model="dall-e-3", prompt="x")
        assert missing.value.code == "model_not_found"
        assert missing.value.type == "invalid_request_error"
        with pytest.raises(openai.BadRequestError) as bad_size:
            await sdk.images.generate(model=MODEL, prompt="x", size="1000x1000")
        assert (bad_size.value.param, bad_size.value.code) == ("size", "invalid_value")
        fake.script(moderation_blocked("output"))
        with pytest.raises(openai.BadRequestError) as blocked:
            await sdk.images.generate(model=MODEL, prompt="x")
        assert blocked.value.code == "moderation_blocked"
        assert blocked.value.type == "image_generation_user_error"
        assert isinstance(blocked.value.body, dict)
        assert blocked.value.body["moderation_details"]["moderation_stage"] == "output"
        fake.script(rate_limited())
        with pytest.raises(openai.RateLimitError) as limited:
            await sdk.images.generate(model=MODEL, prompt="x")
        assert limited.value.response.headers["retry-after-ms"] == "1"
        with pytest.raises(openai.BadRequestError) as corrupt:
            await sdk.images.edit(model=MODEL, prompt="x", image=[("a.png", b"nope", "image/png")])
        assert corrupt.value.code == "invalid_image_file"
        fake.script(image_reply(images=2))
        two = await sdk.images.generate(model=MODEL, prompt="x", n=2, size="1024x1024")
        assert two.data is not None and len(two.data) == 2
        assert two.usage is not None and two.usage.output_tokens == 2 * 4160
    async with openai.AsyncOpenAI(api_key="sk-wrong", base_url=fake.base_url, max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError):
            await bad.images.generate(model=MODEL, prompt="x")
    statuses = [r.status for r in fake.image_requests()]
    assert statuses == [404, 400, 400, 429, 400, 200, 401]


async def test_an_unscripted_request_is_an_error(fake: FakeOpenAI) -> None:
    async with openai.AsyncOpenAI(api_key=KEY, base_url=fake.base_url, max_retries=0) as sdk:
        with pytest.raises(openai.InternalServerError):
            await sdk.images.generate(model=MODEL, prompt="x")
    assert fake.unscripted_count == 1
    assert isinstance(ApiError(500, "x").body()["error"], dict)
