"""Single attempts at images through the openai SDK's Images API (`IMAGE_PROVIDER=openai`), made
in the image worker process (`image_worker_main`): safety outcomes as exceptions the tool can
explain, the reported `usage` split by kind. Retries and deadlines are the gateway's
(`image_gateway`). Any server speaking the OpenAI Images API works through `OPENAI_BASE_URL`.

New images go to `images.generate` (JSON); edits and compositions to `images.edit` (multipart,
the references as repeated `image[]` parts, at most 10). `aspect_ratio` and `image_size` become
the nearest `WxH` the model takes. The SDK is imported when the first image is asked for.
"""

from __future__ import annotations

import base64
import binascii
import functools
import math
from typing import TYPE_CHECKING, Any, Literal

from bot.providers.images import (
    IMAGE_BLOCKED,
    NO_IMAGE,
    PROMPT_BLOCKED,
    ImageBlocked,
    ImageRequest,
    ImageResult,
    ImageUnavailable,
    ImageUsage,
    hold_current_answer,
)

if TYPE_CHECKING:
    from openai import AsyncOpenAI
    from openai.types import ImagesResponse

MAX_REFERENCES = 10
RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
SizeMode = Literal["flexible", "standard"]
# Sizes every GPT image model takes; gpt-image-2 and later also take any WxH (see openai_size).
STANDARD_SIZES = ((1024, 1024), (1536, 1024), (1024, 1536))
LONG_EDGE = {"1K": 1024, "2K": 2048, "4K": 3840}
MAX_PIXELS = 3840 * 2160
MAX_LONG_EDGE = 3840
SIDE_STEP = 16
MAX_RATIO = 3.0
MIME_BY_FORMAT = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
EXTENSION_BY_MIME = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
MODERATION_BLOCKED = "moderation_blocked"


def create_openai_client(api_key: str, base_url: str | None, timeout_seconds: float) -> AsyncOpenAI:
    """The SDK's own retries are off: the gateway is the single retry layer. Its requests wait,
    when a successful answer's headers arrive, for the caller's `AnswerGate` slot before the
    body is read (an httpx response hook, called before the body is read)."""
    from openai import AsyncOpenAI, DefaultAsyncHttpx2Client

    http_client = DefaultAsyncHttpx2Client(event_hooks={"response": [_on_response_headers]})
    return AsyncOpenAI(
        api_key=api_key,
        base_url=base_url,
        timeout=timeout_seconds,
        max_retries=0,
        http_client=http_client,
    )


async def _on_response_headers(response: Any) -> None:
    if response.status_code == 200:
        await hold_current_answer()


def _ratio(aspect_ratio: str) -> float:
    width, _, height = aspect_ratio.partition(":")
    try:
        value = int(width) / int(height)
    except (ValueError, ZeroDivisionError):
        return 1.0
    return value if value > 0 else 1.0


def openai_size(aspect_ratio: str, image_size: str, mode: SizeMode = "flexible") -> str:
    """The nearest `WxH` the model takes for a Gemini-style aspect ratio and size.

    1K (and every size in `standard` mode): the standard size nearest in aspect ratio. 2K and 4K
    with flexible sizes: the long edge 2048 or 3840, both sides multiples of 16, the ratio held
    within 1:3..3:1, at most 3840x2160 pixels in all."""
    ratio = min(max(_ratio(aspect_ratio), 1 / MAX_RATIO), MAX_RATIO)
    if mode == "standard" or image_size not in ("2K", "4K"):
        standard = min(STANDARD_SIZES, key=lambda s: abs(math.log(s[0] / s[1]) - math.log(ratio)))
        return f"{standard[0]}x{standard[1]}"
    long_edge = float(min(LONG_EDGE[image_size], MAX_LONG_EDGE))
    width, height = (long_edge, long_edge / ratio) if ratio >= 1 else (long_edge * ratio, long_edge)
    if width * height > MAX_PIXELS:
        scale = math.sqrt(MAX_PIXELS / (width * height))
        width, height = width * scale, height * scale
    w = max(SIDE_STEP, int(width) // SIDE_STEP * SIDE_STEP)
    h = max(SIDE_STEP, int(height) // SIDE_STEP * SIDE_STEP)
    return f"{w}x{h}"


class OpenAIImageAttempts:
    """Single attempts at images through the openai SDK (in the image worker process); the
    client is made with the first attempt and closed in `aclose`."""

    def __init__(
        self,
        api_key: str,
        base_url: str | None,
        timeout_seconds: float,
        model: str,
        size_mode: SizeMode = "flexible",
    ) -> None:
        self._connect = functools.partial(create_openai_client, api_key, base_url, timeout_seconds)
        self._client: AsyncOpenAI | None = None
        self._model = model
        self._size_mode = size_mode

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    async def attempt(self, request: ImageRequest) -> ImageResult:
        if len(request.references) > MAX_REFERENCES:
            raise ImageUnavailable("bad_request", f"at most {MAX_REFERENCES} reference images")
        if self._client is None:
            self._client = self._connect()
        size = openai_size(request.aspect_ratio, request.image_size, self._size_mode)
        return _image_from(await self._call(self._client, request, size), self._model)

    async def _call(self, client: AsyncOpenAI, request: ImageRequest, size: str) -> ImagesResponse:
        import httpx2
        import openai

        try:
            if request.references:
                files = [
                    (f"reference-{n}.{EXTENSION_BY_MIME.get(mime, 'png')}", data, mime)
                    for n, (data, mime) in enumerate(request.references, start=1)
                ]
                return await client.images.edit(
                    model=self._model,
                    prompt=request.prompt,
                    image=files,
                    n=1,
                    size=size,
                    output_format="png",
                )
            return await client.images.generate(
                model=self._model, prompt=request.prompt, n=1, size=size, output_format="png"
            )
        except openai.APIStatusError as exc:
            raise _classify(exc) from None
        except openai.APITimeoutError:
            raise ImageUnavailable("timeout", "no answer in time", cost_unknown=True) from None
        except openai.APIConnectionError as exc:
            # A refused connect never reached the provider; anything later may have.
            refused = isinstance(exc.__cause__, httpx2.ConnectError)
            raise ImageUnavailable(
                "connection", "connection error", cost_unknown=not refused
            ) from None
        except TimeoutError:
            raise ImageUnavailable("timeout", "no answer in time", cost_unknown=True) from None


def _retry_after(headers: Any) -> float | None:
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name) if headers is not None else None
        if value:
            try:
                return max(0.0, float(value) * scale)
            except ValueError:
                continue
    return None


def _classify(exc: Any) -> ImageBlocked | ImageUnavailable:
    """An SDK status error as ImageBlocked (moderation) or ImageUnavailable."""
    status = int(exc.status_code)
    code = str(exc.code or "")
    body = exc.body if isinstance(exc.body, dict) else {}
    detail = f"status {status} {code or exc.type or ''}".strip()
    if code == MODERATION_BLOCKED:
        details = body.get("moderation_details")
        stage = details.get("moderation_stage") if isinstance(details, dict) else None
        reason = PROMPT_BLOCKED if stage == "input" else IMAGE_BLOCKED
        return ImageBlocked("MODERATION_BLOCKED", reason)
    if status in RETRYABLE_STATUS:
        retry_after = _retry_after(getattr(exc.response, "headers", None))
        return ImageUnavailable("busy", detail, status=status, retry_after=retry_after)
    if status in (401, 403):
        return ImageUnavailable("auth", detail, status=status)
    if status == 404:
        message = str(body.get("message") or "")[:200]
        return ImageUnavailable("model_gone", f"{detail}: {message}", status=status)
    return ImageUnavailable("bad_request", detail, status=status)


def _usage(response: ImagesResponse) -> ImageUsage | None:
    usage = response.usage
    if usage is None:
        return None
    inputs = usage.input_tokens_details
    text_input = inputs.text_tokens if inputs else usage.input_tokens
    image_input = inputs.image_tokens if inputs else 0
    outputs = usage.output_tokens_details
    if outputs is None:
        return ImageUsage(text_input, image_input, 0, usage.output_tokens)
    return ImageUsage(text_input, image_input, outputs.text_tokens, outputs.image_tokens)


def _image_from(response: ImagesResponse, model: str) -> ImageResult:
    encoded = [item.b64_json for item in response.data or [] if item.b64_json]
    if not encoded:
        raise ImageBlocked("NO_IMAGE", NO_IMAGE)
    try:
        data = base64.b64decode(encoded[0], validate=True)
    except (binascii.Error, ValueError):
        data = b""
    if not data:
        raise ImageBlocked("NO_IMAGE", NO_IMAGE)
    return ImageResult(
        data=data,
        mime_type=MIME_BY_FORMAT.get(str(response.output_format or "png"), "image/png"),
        usage=_usage(response),
        model_version=model,
        text=None,
        attempts=1,
        duration_ms=0,
        images_in_response=len(encoded),
    )
