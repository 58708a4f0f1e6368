"""WorkerImageGateway against the fake Gemini server through the real google-genai client:
image selection, safety outcomes, retries inside the deadline, no retry after a read timeout."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator

import pytest
import structlog.testing
from PIL import Image

from bot.providers.gemini import MAX_REFERENCES
from bot.providers.image_gateway import RetryPolicy, WorkerImageGateway
from bot.providers.image_worker import ImageWorker, WorkerSetup
from bot.providers.images import AnswerGate, ImageBlocked, ImageResult, ImageUnavailable
from tests.fakes.gemini import (
    DEFAULT_THOUGHTS_TOKENS,
    ApiError,
    Delay,
    FakeGemini,
    Hang,
    blocked_prompt,
    finish,
    image_reply,
    no_image,
    text_only,
)

MODEL = "gemini-3-pro-image"


@pytest.fixture
async def gemini() -> AsyncIterator[FakeGemini]:
    async with FakeGemini() as fake:
        yield fake


def make_gateway(
    fake: FakeGemini,
    *,
    timeout: float = 10.0,
    attempts: int = 3,
    initial_delay: float = 0.01,
    model: str = MODEL,
) -> WorkerImageGateway:
    """The gateway as the bot builds it, its calls made by a real image worker process."""
    setup = WorkerSetup("google", "test-key", fake.base_url, timeout, model)
    return WorkerImageGateway(
        ImageWorker(setup),
        provider="google",
        model=model,
        max_references=MAX_REFERENCES,
        retries=RetryPolicy(attempts, initial_delay),
    )


@pytest.fixture
async def gateway(gemini: FakeGemini) -> AsyncIterator[WorkerImageGateway]:
    gw = make_gateway(gemini)
    yield gw
    await gw.aclose()


async def generate(gateway: WorkerImageGateway, deadline_in: float = 10.0) -> object:
    return await gateway.generate(
        "a red cat",
        aspect_ratio="16:9",
        image_size="2K",
        references=[],
        deadline=time.monotonic() + deadline_in,
    )


async def test_the_last_non_thought_image_is_the_result(
    gemini: FakeGemini, gateway: WorkerImageGateway
) -> None:
    gemini.script(image_reply(thought_image=True, thought_text="planning", text="Here it is."))
    image = await gateway.generate(
        "a red cat",
        aspect_ratio="16:9",
        image_size="2K",
        references=[(b"\x89PNG-ref", "image/png")],
        deadline=time.monotonic() + 10,
    )
    with Image.open(io.BytesIO(image.data)) as opened:
        assert opened.getpixel((opened.width // 2, opened.height - 1)) == (220, 60, 40)
    assert image.mime_type == "image/png"
    assert image.text == "Here it is."
    assert image.input_tokens > 0 and image.output_tokens > 0
    [request] = gemini.generate_requests()
    assert request.api_version == "v1beta"
    assert request.images[0].data == b"\x89PNG-ref"
    assert request.texts == ["a red cat"]
    assert request.aspect_ratio == "16:9" and request.image_size == "2K"


@pytest.mark.parametrize(
    ("reply", "reason", "words"),
    [
        (blocked_prompt("PROHIBITED_CONTENT"), "PROHIBITED_CONTENT", "blocked this prompt"),
        (blocked_prompt("SAFETY"), "SAFETY", "blocked this prompt"),
        (finish("IMAGE_SAFETY"), "IMAGE_SAFETY", "blocked the generated image"),
        (finish("IMAGE_PROHIBITED_CONTENT"), "IMAGE_PROHIBITED_CONTENT", "blocked the generated"),
        (finish("SAFETY", omit_content=True), "SAFETY", "blocked the generated image"),
        (no_image(), "NO_IMAGE", "without an image"),
        (text_only("I won't draw that."), "TEXT_ONLY", "I won't draw that."),
    ],
)
async def test_no_image_answers_are_blocked_with_a_reason(
    gemini: FakeGemini, gateway: WorkerImageGateway, reply: object, reason: str, words: str
) -> None:
    gemini.script(reply)
    with pytest.raises(ImageBlocked) as caught:
        await generate(gateway)
    assert caught.value.reason == reason
    assert words in caught.value.user_reason
    assert len(gemini.generate_requests()) == 1


async def test_busy_answers_are_retried_with_backoff(
    gemini: FakeGemini, gateway: WorkerImageGateway
) -> None:
    gemini.script(ApiError(503), ApiError(429), image_reply())
    image = await generate(gateway)
    assert image.attempts == 3  # type: ignore[attr-defined]
    assert len(gemini.generate_requests()) == 3


async def test_retries_are_bounded(gemini: FakeGemini, gateway: WorkerImageGateway) -> None:
    gemini.script(ApiError(500), ApiError(502), ApiError(503), image_reply())
    with pytest.raises(ImageUnavailable) as caught:
        await generate(gateway)
    assert caught.value.kind == "busy"
    assert caught.value.attempts == 3
    assert len(gemini.generate_requests()) == 3


async def test_a_bad_request_is_not_retried(
    gemini: FakeGemini, gateway: WorkerImageGateway
) -> None:
    gemini.script(ApiError(400), image_reply())
    with pytest.raises(ImageUnavailable) as caught:
        await generate(gateway)
    assert caught.value.kind == "bad_request"
    assert len(gemini.generate_requests()) == 1


async def test_a_read_timeout_is_not_retried_and_may_have_cost(gemini: FakeGemini) -> None:
    gateway = make_gateway(gemini, timeout=0.5)
    gemini.script(Hang(), image_reply())
    try:
        with pytest.raises(ImageUnavailable) as caught:
            await generate(gateway)
    finally:
        await gateway.aclose()
    assert caught.value.kind == "timeout"
    assert caught.value.cost_unknown is True
    assert len(gemini.generate_requests()) == 1


async def test_the_turn_deadline_bounds_the_call(
    gemini: FakeGemini, gateway: WorkerImageGateway
) -> None:
    gemini.script(image_reply(), Delay(5.0, image_reply()))
    await generate(gateway)  # the worker started
    started = time.monotonic()
    with pytest.raises(ImageUnavailable) as caught:
        await generate(gateway, deadline_in=0.5)
    assert time.monotonic() - started < 2.0
    assert caught.value.cost_unknown is True


async def test_the_turn_deadline_bounds_the_worker_start(
    gemini: FakeGemini, gateway: WorkerImageGateway
) -> None:
    """A turn with less time left than the worker takes to start (a Python process importing its
    SDK) gets a timeout by its deadline, nothing asked of the provider (nothing to charge); the
    start goes on, and the next image uses the worker."""
    gemini.script(image_reply())
    started = time.monotonic()
    with pytest.raises(ImageUnavailable) as caught:
        await generate(gateway, deadline_in=0.01)
    assert time.monotonic() - started < 0.5
    assert caught.value.kind == "timeout"
    assert caught.value.cost_unknown is False
    assert gemini.generate_requests() == []
    await generate(gateway)
    assert len(gemini.generate_requests()) == 1


async def test_no_retry_when_the_backoff_would_pass_the_deadline(gemini: FakeGemini) -> None:
    gateway = make_gateway(gemini, attempts=5, initial_delay=5.0)
    gemini.script(ApiError(503), image_reply())
    try:
        with pytest.raises(ImageUnavailable):
            await generate(gateway, deadline_in=2.0)
    finally:
        await gateway.aclose()
    assert len(gemini.generate_requests()) == 1


async def test_usage_is_split_by_kind_as_google_bills_it(
    gemini: FakeGemini, gateway: WorkerImageGateway
) -> None:
    """IMAGE candidate tokens are image output; other candidate tokens plus thoughts are text
    output; prompt tokens are input by modality (the thought image counts as thinking)."""
    gemini.script(image_reply(thought_image=True, thought_text="plan it", text="A cat."))
    image = await gateway.generate(
        "a red cat",
        aspect_ratio="1:1",
        image_size="4K",
        references=[(b"\x89PNG-ref", "image/png")],
        deadline=time.monotonic() + 10,
    )
    [request] = gemini.generate_requests()
    usage = request.usage
    assert usage is not None and image.usage is not None
    assert image.usage.image_output_tokens == 2000
    assert image.usage.image_input_tokens == 560
    assert image.usage.text_input_tokens == usage["promptTokenCount"] - 560
    assert image.usage.text_output_tokens == (
        usage["candidatesTokenCount"] - 2000 + usage["thoughtsTokenCount"]
    )
    assert usage["thoughtsTokenCount"] == DEFAULT_THOUGHTS_TOKENS + 2 + 1120
    assert image.image_output_tokens == 2000
    assert image.images_in_response == 1


async def test_a_response_without_candidate_details_reports_no_usage(
    gemini: FakeGemini, gateway: WorkerImageGateway
) -> None:
    gemini.script(image_reply(usage_mode="no_details"), image_reply(usage_mode="none"))
    assert (await generate(gateway)).usage is None  # type: ignore[attr-defined]
    assert (await generate(gateway)).usage is None  # type: ignore[attr-defined]


async def test_a_retired_model_is_model_gone_logged_once(gemini: FakeGemini) -> None:
    gateway = make_gateway(gemini, model="gemini-3-pro-image-preview")
    try:
        with structlog.testing.capture_logs() as logs:
            for _ in range(3):
                with pytest.raises(ImageUnavailable) as caught:
                    await generate(gateway)
                assert caught.value.kind == "model_gone"
                assert caught.value.status == 404
                assert "gemini-3-pro-image-preview is not found" in caught.value.detail
    finally:
        await gateway.aclose()
    assert len(gemini.generate_requests()) == 3  # a 404 is never retried
    errors = [entry for entry in logs if entry["log_level"] == "error"]
    assert [e["event"] for e in errors] == ["image_model_unavailable"]
    assert errors[0]["model"] == "gemini-3-pro-image-preview"


async def test_an_answer_waits_for_a_gate_slot_before_its_body_is_read(
    gemini: FakeGemini, gateway: WorkerImageGateway
) -> None:
    """While another image is being checked (the gate's one slot held), a finished answer stays
    unread at its headers; error answers never wait (the retry's answer does)."""
    gate = AnswerGate(limit=1)
    gemini.script(ApiError(503, "UNAVAILABLE", "overloaded"), image_reply())

    async def draw() -> tuple[object, bool]:
        async with gate.admit() as ticket:
            image = await generate(gateway)
            return image, ticket.held

    async with gate.admit() as checking:
        await checking.hold()
        waiting = asyncio.create_task(draw())
        await gemini.wait_for_requests(2, completed=True)
        await asyncio.sleep(0.3)
        assert not waiting.done()
    image, held = await asyncio.wait_for(waiting, 5)
    assert isinstance(image, ImageResult) and image.data and held
    async with gate.admit() as ticket:  # the slot came back when the block ended
        await asyncio.wait_for(ticket.hold(), 1)
