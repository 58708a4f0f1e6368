"""A local fake of the OpenAI Images API (generations and edits), wire-compatible with openai 3.63.

Tests start it in-process (`async with FakeOpenAI() as fake:`), point `AsyncOpenAI` at
`fake.base_url` (which includes `/v1`), script replies with `fake.script(...)` and assert on
`fake.requests` (`ImagesRequest`s with the decoded fields and reference images).

What it speaks, as the real API does (reference/apis-next.md section 4):
- `POST /v1/images/generations`, JSON; `POST /v1/images/edits`, multipart with the references as
  `image` (one) or repeated `image[]` parts, an optional `mask`, and scalars as text parts;
- `Authorization: Bearer <key>`; a missing key is 401;
- only live model ids (`LIVE_MODELS`): anything else is 404 `model_not_found`;
- sizes: `auto`, the three standard sizes, and for gpt-image-2 and later any WxH with sides
  divisible by 16, ratio within 1:3..3:1 and at most 3840x2160 pixels;
- answers `{"created", "data": [{"b64_json"}], "size", "output_format", "usage": {...}}` with a real
  image, and errors as `{"error": {"message", "type", "param", "code"}}`.
An unscripted request gets a 500, never a success.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import BodyPartReader, web

from tests.fakes.anthropic import UNSCRIPTED, Delay, FakeServer, Hang, RecordedRequest
from tests.fakes.gemini import render_image, render_noise

__all__ = [
    "FLEXIBLE_SIZE_MODELS",
    "LIVE_MODELS",
    "RETIRED_MODELS",
    "ApiError",
    "Delay",
    "FakeOpenAI",
    "Hang",
    "ImageReply",
    "ImagesRequest",
    "ReferenceImage",
    "image_reply",
    "moderation_blocked",
    "rate_limited",
    "server_error",
]

LIVE_MODELS = (
    "gpt-image-2.6-sunburst",
    "gpt-image-2.6-flare",
    "gpt-image-2.5-sunburst",
    "gpt-image-2.5-flare",
    "gpt-image-2",
    "gpt-image-1.5",
    "gpt-image-1-mini",
)
RETIRED_MODELS = ("gpt-image-1", "dall-e-2", "dall-e-3")
FLEXIBLE_SIZE_MODELS = frozenset(LIVE_MODELS) - {"gpt-image-1.5", "gpt-image-1-mini"}
STANDARD_SIZES = ("1024x1024", "1536x1024", "1024x1536")
MAX_PIXELS = 3840 * 2160
MAX_REFERENCE_IMAGES = 16
MAX_REFERENCE_BYTES = 50 * 1024 * 1024
SMALL_LONG_EDGE = 64
# Input image tokens per reference, and output tokens of a 1024x1024 image (high quality).
INPUT_IMAGE_TOKENS = 765
OUTPUT_TOKENS_1MP = 4160
OUTPUT_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
_MAGIC = ((b"\x89PNG\r\n\x1a\n", "png"), (b"\xff\xd8\xff", "jpeg"), (b"RIFF", "webp"))


@dataclass(frozen=True)
class ReferenceImage:
    field_name: str  # "image" or "image[]"
    filename: str | None
    content_type: str | None
    data: bytes


@dataclass
class ImagesRequest(RecordedRequest):
    """One images call, decoded (multipart edits included)."""

    endpoint: str = ""  # generations | edits
    fields: dict[str, Any] = field(default_factory=dict)
    images: list[ReferenceImage] = field(default_factory=list)
    mask: bytes | None = None
    usage: dict[str, Any] | None = None  # the usage the fake answered with

    @property
    def model(self) -> str | None:
        value = self.fields.get("model")
        return str(value) if value is not None else None

    @property
    def prompt(self) -> str | None:
        value = self.fields.get("prompt")
        return str(value) if value is not None else None

    @property
    def size(self) -> str | None:
        value = self.fields.get("size")
        return str(value) if value is not None else None


@dataclass(frozen=True)
class ImageReply:
    """A successful answer. The image has the requested size (scaled down to a 64 px long edge
    unless `realistic_size`) unless `width`/`height` or raw `data` are given."""

    width: int | None = None
    height: int | None = None
    fmt: str = "png"
    data: bytes | None = None  # raw bytes sent as b64_json instead of a rendered image
    images: int = 1
    realistic_size: bool = False
    noise: bool = False
    color: tuple[int, int, int] = (40, 90, 220)
    # "full"; "no_output_details" (no output_tokens_details, as older models answer); "none".
    usage_mode: str = "full"


@dataclass(frozen=True)
class ApiError:
    """An OpenAI error `{"error": {"message", "type", "param", "code", ...}}` with HTTP `status`."""

    status: int
    message: str
    type: str = "invalid_request_error"
    code: str | None = None
    param: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        error = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        return {"error": error | dict(self.extra)}


def image_reply(
    width: int | None = None,
    height: int | None = None,
    fmt: str = "png",
    *,
    data: bytes | None = None,
    images: int = 1,
    realistic_size: bool = False,
    noise: bool = False,
    usage_mode: str = "full",
) -> ImageReply:
    if fmt not in OUTPUT_FORMATS:
        raise ValueError(f"fmt must be one of {sorted(OUTPUT_FORMATS)}")
    if usage_mode not in ("full", "no_output_details", "none"):
        raise ValueError("usage_mode must be full, no_output_details or none")
    return ImageReply(
        width,
        height,
        fmt,
        data,
        images,
        realistic_size=realistic_size,
        noise=noise,
        usage_mode=usage_mode,
    )


def moderation_blocked(stage: str = "output", category: str = "sexual") -> ApiError:
    """The body OpenAI sends when its safety system rejects a prompt or an image."""
    return ApiError(
        400,
        "Your request was rejected by the safety system. If you believe this is an error, "
        "contact us at help.openai.com and include the request ID req_0123456789abcdef. "
        f"safety_violations=[{category}].",
        type="image_generation_user_error",
        code="moderation_blocked",
        extra={"moderation_details": {"moderation_stage": stage, "categories": [category]}},
    )


def rate_limited(retry_after_ms: int = 1) -> ApiError:
    return ApiError(
        429,
        "Rate limit reached for gpt-image in organization org-fake on images per minute "
        "(IPM): Limit 5, Used 5, Requested 1. Please try again in 12s.",
        type="requests",
        code="rate_limit_exceeded",
        headers={"retry-after-ms": str(retry_after_ms)},
    )


def server_error(status: int = 500) -> ApiError:
    return ApiError(
        status,
        "The server had an error while processing your request. Sorry about that!",
        type="server_error",
    )


def _invalid(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def _parse_size(size: str) -> tuple[int, int] | None:
    width, sep, height = size.partition("x")
    if not sep or not width.isdigit() or not height.isdigit():
        return None
    return int(width), int(height)


def check_size(model: str, size: str) -> ApiError | None:
    """None when `model` takes `size`, else the 400 the API answers."""
    if size == "auto" or size in STANDARD_SIZES:
        return None
    invalid = _invalid(
        f"Invalid value: '{size}'. Supported values are: 'auto', "
        + ", ".join(f"'{s}'" for s in STANDARD_SIZES)
        + (" or WIDTHxHEIGHT" if model in FLEXIBLE_SIZE_MODELS else "")
        + ".",
        param="size",
        code="invalid_value",
    )
    parsed = _parse_size(size)
    if parsed is None or model not in FLEXIBLE_SIZE_MODELS:
        return invalid
    width, height = parsed
    if width % 16 or height % 16 or not width or not height:
        return invalid
    if not 1 / 3 <= width / height <= 3 or width * height > MAX_PIXELS:
        return invalid
    if max(width, height) > 3840:
        return invalid
    return None


def _sniff(data: bytes) -> str | None:
    for magic, name in _MAGIC:
        if data.startswith(magic) and (name != "webp" or data[8:12] == b"WEBP"):
            return name
    return None


def output_tokens(width: int, height: int) -> int:
    """Image output tokens, growing with the pixel count (4160 at 1024x1024)."""
    return math.ceil(OUTPUT_TOKENS_1MP * ((width * height) / (1024 * 1024)) ** 0.4)


class FakeOpenAI(FakeServer[ImagesRequest]):
    """Fake `POST /v1/images/generations` and `POST /v1/images/edits` for the real openai SDK."""

    def __init__(
        self,
        *,
        latency: float = 0.0,
        default: Any = None,
        api_key: str | None = None,
        models: Sequence[str] = LIVE_MODELS,
    ) -> None:
        super().__init__(default=default)
        self.latency = latency
        self.api_key = api_key
        self.models = set(models)

    @property
    def base_url(self) -> str:  # type: ignore[override]
        return super().base_url + "/v1"

    @property
    def root_url(self) -> str:
        return super().base_url

    def _add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/images/generations", self._on_generations)
        app.router.add_post("/v1/images/edits", self._on_edits)

    def image_requests(self) -> list[ImagesRequest]:
        return list(self.requests)

    # parsing ---------------------------------------------------------------------------------

    def _record(self, request: web.Request, raw: bytes, endpoint: str) -> ImagesRequest:
        return ImagesRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers={k.lower(): v for k, v in request.headers.items()},
            raw=raw,
            json=None,
            time_start=time.monotonic(),
            endpoint=endpoint,
        )

    async def _on_generations(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        record = self._record(request, raw, "generations")
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        record.json = body

        async def handle() -> web.StreamResponse:
            if not isinstance(body, dict):
                return self._error(
                    record,
                    _invalid(
                        "We could not parse the JSON body of your request. (HINT: This likely "
                        "means you aren't using your HTTP library correctly.)"
                    ),
                    "invalid",
                )
            record.fields = dict(body)
            return await self._answer(request, record)

        return await self._recorded(record, handle)

    async def _on_edits(self, request: web.Request) -> web.StreamResponse:
        record = self._record(request, b"", "edits")

        async def handle() -> web.StreamResponse:
            if not request.content_type.startswith("multipart/form-data"):
                return self._error(
                    record,
                    _invalid("Invalid Content-Type header (expected multipart/form-data)."),
                    "invalid",
                )
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                assert isinstance(part, BodyPartReader)
                name = part.name or ""
                if name in ("image", "image[]", "mask"):
                    data = bytes(await part.read(decode=False))
                    if name == "mask":
                        record.mask = data
                    else:
                        content_type = part.headers.get("Content-Type")
                        record.images.append(
                            ReferenceImage(name, part.filename, content_type, data)
                        )
                else:
                    record.fields[name] = await part.text()
            return await self._answer(request, record)

        return await self._recorded(record, handle)

    # answering -------------------------------------------------------------------------------

    def _gatekeep(self, request: web.Request, record: ImagesRequest) -> ApiError | None:
        auth = request.headers.get("Authorization", "")
        key = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else ""
        if not key:
            return ApiError(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            )
        if self.api_key is not None and key != self.api_key:
            return ApiError(401, "Incorrect API key provided.", code="invalid_api_key", param=None)
        model = record.model or "gpt-image-1"
        if model not in self.models:
            return ApiError(
                404,
                f"The model '{model}' does not exist or you do not have access to it.",
                code="model_not_found",
            )
        return None

    def _validate(self, record: ImagesRequest) -> ApiError | None:
        fields = record.fields
        prompt = fields.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            return _invalid(
                "Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter"
            )
        if len(prompt) > 32_000:
            return _invalid("Prompt is too long. Maximum length is 32000 characters.", "prompt")
        for unsupported in ("response_format", "style"):
            if unsupported in fields:
                return _invalid(
                    f"Unknown parameter: '{unsupported}'.", unsupported, "unknown_parameter"
                )
        try:
            n = int(fields.get("n", 1))
        except (TypeError, ValueError):
            n = 0
        if not 1 <= n <= 10:
            return _invalid("Invalid 'n': integer must be between 1 and 10.", "n")
        output_format = str(fields.get("output_format", "png"))
        if output_format not in OUTPUT_FORMATS:
            return _invalid(f"Invalid value: '{output_format}'.", "output_format", "invalid_value")
        size_error = check_size(str(record.model), str(fields.get("size", "auto")))
        if size_error is not None:
            return size_error
        if record.endpoint == "edits":
            if not record.images:
                return _invalid(
                    "Missing required parameter: 'image'.", "image", "missing_required_parameter"
                )
            if len(record.images) > MAX_REFERENCE_IMAGES:
                return _invalid(
                    f"Too many images: {len(record.images)} (at most {MAX_REFERENCE_IMAGES}).",
                    "image",
                )
            if len(record.images) > 1 and any(i.field_name != "image[]" for i in record.images):
                return _invalid("Several images must be sent as 'image[]'.", "image")
            for number, image in enumerate(record.images, start=1):
                if len(image.data) > MAX_REFERENCE_BYTES or _sniff(image.data) is None:
                    return _invalid(
                        f"Invalid image file or mode for image {number}, please check your "
                        "image file.",
                        "image",
                        "invalid_image_file",
                    )
        return None

    async def _answer(self, request: web.Request, record: ImagesRequest) -> web.StreamResponse:
        error = self._gatekeep(request, record) or self._validate(record)
        if error is not None:
            return self._error(record, error, "invalid")
        reply = await self._next_reply(record)
        if isinstance(reply, Hang):
            record.outcome = "hang"
            return await self._hang(request)
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        if reply is UNSCRIPTED:
            self.unscripted_count += 1
            message = f"FakeOpenAI: no reply scripted for request #{len(self.requests)}"
            return self._error(record, ApiError(500, message, "server_error"), "unscripted")
        if isinstance(reply, ApiError):
            return self._error(record, reply, "error")
        if not isinstance(reply, ImageReply):
            message = f"FakeOpenAI: bad scripted reply {reply!r}"
            return self._error(record, ApiError(500, message, "server_error"), "unscripted")
        body = self._render(reply, record)
        record.usage = body.get("usage")
        return web.json_response(body, headers={"x-request-id": f"req_fake{len(self.requests)}"})

    def _render(self, reply: ImageReply, record: ImagesRequest) -> dict[str, Any]:
        size = str(record.fields.get("size", "auto"))
        parsed = _parse_size(size) or (1024, 1024)
        width, height = parsed
        if not reply.realistic_size:
            scale = SMALL_LONG_EDGE / max(width, height)
            width, height = max(1, round(width * scale)), max(1, round(height * scale))
        width, height = reply.width or width, reply.height or height
        fmt = str(record.fields.get("output_format", reply.fmt))
        if reply.data is not None:
            images = [reply.data] * reply.images
        elif reply.noise:
            images = [render_noise(width, height, OUTPUT_FORMATS[fmt])] * reply.images
        else:
            colours = [reply.color, (200, 180, 20), (10, 200, 90)]
            images = [
                render_image(width, height, OUTPUT_FORMATS[fmt], colours[n % len(colours)])
                for n in range(reply.images)
            ]
        body: dict[str, Any] = {
            "created": int(time.time()),
            "background": "opaque",
            "output_format": fmt,
            "quality": "high",
            "size": f"{parsed[0]}x{parsed[1]}",
            "data": [{"b64_json": base64.b64encode(data).decode()} for data in images],
        }
        if reply.usage_mode != "none":
            body["usage"] = self._usage(record, parsed, reply)
        return body

    @staticmethod
    def _usage(record: ImagesRequest, size: tuple[int, int], reply: ImageReply) -> dict[str, Any]:
        text_tokens = max(1, math.ceil(len(record.prompt or "") / 4))
        image_tokens = INPUT_IMAGE_TOKENS * len(record.images)
        out = output_tokens(*size) * reply.images
        usage: dict[str, Any] = {
            "input_tokens": text_tokens + image_tokens,
            "input_tokens_details": {"image_tokens": image_tokens, "text_tokens": text_tokens},
            "output_tokens": out,
            "total_tokens": text_tokens + image_tokens + out,
        }
        if reply.usage_mode == "full":
            usage["output_tokens_details"] = {"image_tokens": out, "text_tokens": 0}
        return usage

    @staticmethod
    def _error(record: ImagesRequest, error: ApiError, outcome: str) -> web.Response:
        record.outcome = outcome
        return web.json_response(error.body(), status=error.status, headers=dict(error.headers))
