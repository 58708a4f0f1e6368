"""A local fake of Gemini `generateContent` for image models, wire-compatible with google-genai 3.4.

Tests start it in-process (`async with FakeGemini() as fake:`), point `genai.Client` at
`fake.base_url` (`HttpOptions(base_url=..., api_version="v1beta", retry_options=...)`), script
replies with `fake.script(...)` and assert on `fake.requests` (`GeminiRequest`s with decoded images).
Replies carry real images made with Pillow. An unscripted request gets a 500, never a success.

Like the real service, it serves only live model ids (`LIVE_MODELS`): a retired or unknown id is a
404 in Google's own error shape, so a configuration naming a shut-down model fails here as it would
in production. `usageMetadata` is reported as Gemini 3 Pro Image reports it: prompt tokens by
modality, `candidatesTokensDetails` with the IMAGE tokens (1120 at 1K and 2K, 2000 at 4K) and
`thoughtsTokenCount` (thinking is always on).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import io
import json
import math
import os
import secrets
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from PIL import Image

from tests.fakes.anthropic import (
    UNSCRIPTED,
    Delay,
    FakeServer,
    Hang,
    RecordedRequest,
    Responder,
    random_id,
)

__all__ = [
    "DEFAULT_THOUGHTS_TOKENS",
    "LIVE_MODELS",
    "RETIRED_MODELS",
    "UNSCRIPTED",
    "ApiError",
    "CandidateReply",
    "Delay",
    "FakeGemini",
    "GeminiRequest",
    "Hang",
    "ImageReply",
    "InlineImage",
    "PromptBlocked",
    "blocked_prompt",
    "finish",
    "image_reply",
    "no_image",
    "output_size",
    "raw_bytes_reply",
    "text_only",
]

API_VERSIONS = ("v1", "v1beta")
# What Google serves (Nov 2026; reference/apis-next.md section 5.1), and what it shut down.
LIVE_MODELS = (
    "gemini-3-pro-image",
    "gemini-3.1-flash-image",
    "gemini-nano-banana-2.1",
    "gemini-3.5-flash",
)
RETIRED_MODELS = (
    "gemini-3-pro-image-preview",
    "gemini-3.1-flash-image-preview",
    "gemini-2.5-flash-image",
)
# Gemini 3 Pro Image always thinks; a short plan is a couple of hundred tokens.
DEFAULT_THOUGHTS_TOKENS = 184
ASPECT_RATIOS_1K = {
    "1:1": (1024, 1024),
    "2:3": (848, 1264),
    "3:2": (1264, 848),
    "3:4": (896, 1200),
    "4:3": (1200, 896),
    "4:5": (928, 1152),
    "5:4": (1152, 928),
    "9:16": (768, 1376),
    "16:9": (1376, 768),
    "21:9": (1584, 672),
}
IMAGE_SIZES = {"1K": 1, "2K": 2, "4K": 4}
SMALL_LONG_EDGE = 64
MAX_REQUEST_BYTES = 20 * 1024 * 1024
MAX_INPUT_IMAGES = 14
INPUT_IMAGE_TOKENS = 560
OUTPUT_IMAGE_TOKENS = {"1K": 1120, "2K": 1120, "4K": 2000}
MODALITIES = ("TEXT", "IMAGE")
_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_DEFAULT_MESSAGES = {
    429: "Resource has been exhausted (e.g. check quota).",
    500: "An internal error has occurred. Please retry or report in "
    "https://developers.generativeai.google/guide/troubleshooting",
    503: "The model is overloaded. Please try again later.",
    504: "Deadline expired before operation could complete.",
}


# ---------------------------------------------------------------------------------------------
# Recorded requests
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InlineImage:
    data: bytes
    mime_type: str


AUDIO_MIME_TYPES = {
    "audio/wav",
    "audio/mp3",
    "audio/mpeg",
    "audio/aiff",
    "audio/aac",
    "audio/ogg",
    "audio/flac",
    "audio/mp4",
}
AUDIO_TOKENS_PER_SECOND = 32
AUDIO_BYTES_PER_SECOND = 2000  # a guess for formats whose duration the fake does not parse


@dataclass(frozen=True)
class InlineAudio:
    data: bytes
    mime_type: str
    seconds: float

    @property
    def tokens(self) -> int:
        return max(1, math.ceil(self.seconds * AUDIO_TOKENS_PER_SECOND))


@dataclass
class GeminiRequest(RecordedRequest):
    """A generateContent call, with the SDK's quirks already undone (images decoded)."""

    api_version: str = ""
    model: str = ""
    texts: list[str] = field(default_factory=list)
    images: list[InlineImage] = field(default_factory=list)
    audio: list[InlineAudio] = field(default_factory=list)
    generation_config: dict[str, Any] = field(default_factory=dict)
    usage: dict[str, Any] | None = None  # the usageMetadata the fake answered with
    # When the answer's headers went out: the provider's own time ends there; the body's
    # transfer goes at the pace the client reads it.
    time_answered: float | None = None

    @property
    def provider_seconds(self) -> float | None:
        """The provider's time on this request: until its answer started (or ended)."""
        end = self.time_answered or self.time_end
        return None if end is None else end - self.time_start

    @property
    def image_config(self) -> dict[str, Any]:
        config = self.generation_config.get("imageConfig") or self.generation_config.get(
            "image_config"
        )
        return config if isinstance(config, dict) else {}

    @property
    def aspect_ratio(self) -> str | None:
        value = _either(self.image_config, "aspectRatio", "aspect_ratio")
        return str(value) if value is not None else None

    @property
    def image_size(self) -> str | None:
        value = _either(self.image_config, "imageSize", "image_size")
        return str(value) if value is not None else None

    @property
    def response_modalities(self) -> list[str] | None:
        value = _either(self.generation_config, "responseModalities", "response_modalities")
        return [str(v) for v in value] if isinstance(value, list) else None


def _either(mapping: Mapping[str, Any], camel: str, snake: str) -> Any:
    return mapping.get(camel, mapping.get(snake))


# ---------------------------------------------------------------------------------------------
# Replies and builders
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageReply:
    """A successful image generation. Size follows the request's imageConfig unless given."""

    width: int | None = None
    height: int | None = None
    fmt: str = "PNG"
    text: str | None = None
    thought_image: bool = False
    thought_text: str | None = None
    realistic_size: bool = False
    thought_signature: bool = True
    color: tuple[int, int, int] = (220, 60, 40)
    noise: bool = False  # incompressible pixels, for size-limit tests
    data: bytes | None = None  # raw bytes sent as the image instead of a rendered one
    mime_type: str | None = None
    usage: Mapping[str, Any] | None = None
    thoughts_tokens: int = DEFAULT_THOUGHTS_TOKENS
    images: int = 1  # final (non-thought) image parts in the answer
    # "full": as Gemini reports it; "no_details": without candidatesTokensDetails; "none": no
    # usageMetadata at all.
    usage_mode: str = "full"


@dataclass(frozen=True)
class CandidateReply:
    """A candidate without an image: text only, a safety stop, NO_IMAGE..."""

    finish_reason: str
    text: str | None = None
    omit_content: bool = False
    usage: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class TranscriptReply:
    """A transcription: the text of the audio, with usage that counts the AUDIO prompt tokens
    (32 per second) apart from the TEXT ones."""

    text: str
    usage: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class PromptBlocked:
    """The prompt was blocked: promptFeedback.blockReason and no candidates."""

    reason: str = "PROHIBITED_CONTENT"


@dataclass(frozen=True)
class ApiError:
    """A Google API error `{"error": {"code", "message", "status"}}` with HTTP status `code`."""

    code: int
    status: str | None = None
    message: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        status = self.status or _STATUS_NAMES.get(self.code, "UNKNOWN")
        message = self.message or _DEFAULT_MESSAGES.get(self.code, status.replace("_", " ").title())
        return {"error": {"code": self.code, "message": message, "status": status}}


def image_reply(
    width: int | None = None,
    height: int | None = None,
    fmt: str = "PNG",
    text: str | None = None,
    thought_image: bool = False,
    thought_text: str | None = None,
    *,
    realistic_size: bool = False,
    noise: bool = False,
    color: tuple[int, int, int] = (220, 60, 40),
    thoughts_tokens: int = DEFAULT_THOUGHTS_TOKENS,
    images: int = 1,
    usage_mode: str = "full",
) -> ImageReply:
    if fmt not in _FORMATS:
        raise ValueError(f"fmt must be one of {sorted(_FORMATS)}")
    if usage_mode not in ("full", "no_details", "none"):
        raise ValueError("usage_mode must be full, no_details or none")
    return ImageReply(
        width,
        height,
        fmt,
        text,
        thought_image,
        thought_text,
        realistic_size=realistic_size,
        noise=noise,
        color=color,
        thoughts_tokens=thoughts_tokens,
        images=images,
        usage_mode=usage_mode,
    )


def raw_bytes_reply(
    data: bytes, mime: str, *, text: str | None = None, usage_mode: str = "full"
) -> ImageReply:
    """Send arbitrary (possibly hostile) bytes as the final image part."""
    return ImageReply(text=text, data=data, mime_type=mime, usage_mode=usage_mode)


def blocked_prompt(reason: str = "PROHIBITED_CONTENT") -> PromptBlocked:
    return PromptBlocked(reason)


def finish(
    reason: str = "IMAGE_SAFETY", *, text: str | None = None, omit_content: bool = False
) -> CandidateReply:
    return CandidateReply(reason, text, omit_content)


def no_image(text: str | None = None) -> CandidateReply:
    return CandidateReply("NO_IMAGE", text)


def text_only(text: str) -> CandidateReply:
    return CandidateReply("STOP", text)


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------


def output_size(
    aspect_ratio: str | None, image_size: str | None, *, realistic: bool = False
) -> tuple[int, int]:
    """Gemini 3 Pro Image output size; small (long edge 64 px) unless `realistic`."""
    width, height = ASPECT_RATIOS_1K.get(aspect_ratio or "1:1", (1024, 1024))
    factor = IMAGE_SIZES.get(image_size or "1K", 1)
    width, height = width * factor, height * factor
    if realistic:
        return width, height
    scale = SMALL_LONG_EDGE / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


@functools.lru_cache(maxsize=64)
def render_image(width: int, height: int, fmt: str, color: tuple[int, int, int]) -> bytes:
    """A flat-colour image with a contrasting band, cached: cheap even at 4K."""
    image = Image.new("RGB", (width, height), color)
    band = tuple(255 - c for c in color)
    image.paste(band, (0, 0, width, max(1, height // 8)))
    out = io.BytesIO()
    if fmt == "PNG":
        image.save(out, "PNG", compress_level=1)
    else:
        image.save(out, fmt, quality=90)
    return out.getvalue()


def render_noise(width: int, height: int, fmt: str) -> bytes:
    image = Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))
    out = io.BytesIO()
    image.save(out, fmt, **({"compress_level": 1} if fmt == "PNG" else {"quality": 95}))
    return out.getvalue()


class _Base64(str):
    """Base64 text that also keeps its bytes, so a large image answer is written without
    re-encoding it (see `_json_pieces`)."""

    raw: bytes


@functools.lru_cache(maxsize=4)
def _b64(data: bytes) -> str:
    """Base64 of `data`; the last few are kept (the benchmark sends the same large image again
    and again, and encoding 28 MB each time stalled this process's other fake servers)."""
    raw = base64.b64encode(data)
    text = _Base64(raw.decode())
    text.raw = raw
    return text


_LARGE = 1 << 20


def _json_pieces(body: Any) -> list[bytes]:
    """The JSON text of an answer, in pieces: base64 strings over 1 MB appear as their own bytes
    (base64 has no character JSON escapes), which is what json.dumps would write, without
    scanning or copying them (building one 37 MB answer took about 70 ms of this process)."""
    large: list[bytes] = []

    def swap(value: Any) -> Any:
        if isinstance(value, _Base64) and len(value) > _LARGE:
            large.append(value.raw)
            return f"\x00large{len(large) - 1}\x00"
        if isinstance(value, dict):
            return {key: swap(item) for key, item in value.items()}
        if isinstance(value, list):
            return [swap(item) for item in value]
        return value

    rest = json.dumps(swap(body)).encode()
    pieces: list[bytes] = []
    for index, raw in enumerate(large):
        before, _, rest = rest.partition(json.dumps(f"\x00large{index}\x00").encode())
        pieces += [before + b'"', raw, b'"']
    pieces.append(rest)
    return pieces


async def _send_json_pieces(
    request: web.Request, record: GeminiRequest, pieces: list[bytes]
) -> web.StreamResponse:
    """The answer written a MiB at a time, as a server streams a large body: the other fake
    servers in this process are not held up while a 37 MB answer goes out."""
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.content_length = sum(len(piece) for piece in pieces)
    record.time_answered = time.monotonic()
    await response.prepare(request)
    for piece in pieces:
        view = memoryview(piece)
        for start in range(0, len(view), _LARGE):
            await response.write(view[start : start + _LARGE])
    await response.write_eof()
    return response


def _decode_b64(text: str) -> bytes:
    """The SDK sends URL-safe base64; other clients send standard. Accept both, padded or not."""
    normalized = text.replace("-", "+").replace("_", "/")
    normalized += "=" * (-len(normalized) % 4)
    return base64.b64decode(normalized, validate=True)


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


class _InvalidError(Exception):
    def __init__(self, error: ApiError) -> None:
        super().__init__(error.message)
        self.error = error


def _invalid(message: str) -> _InvalidError:
    return _InvalidError(ApiError(400, "INVALID_ARGUMENT", message))


def _keys_anywhere(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, inner in value.items():
            yield key
            yield from _keys_anywhere(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _keys_anywhere(inner)


def _check_generation_config(config: Any) -> dict[str, Any]:
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise _invalid("Invalid value at 'generation_config': expected an object")
    if {"personGeneration", "person_generation"} & set(_keys_anywhere(config)):
        raise _invalid("personGeneration is not supported by the Gemini API.")
    modalities = _either(config, "responseModalities", "response_modalities") or []
    for modality in modalities:
        if str(modality).upper() not in MODALITIES:
            raise _invalid(f"Invalid value at 'generation_config.response_modalities': {modality}")
    image_config = _either(config, "imageConfig", "image_config") or {}
    ratio = _either(image_config, "aspectRatio", "aspect_ratio")
    if ratio is not None and ratio not in ASPECT_RATIOS_1K:
        raise _invalid(
            f"Unsupported aspect ratio: {ratio}. Supported: {', '.join(ASPECT_RATIOS_1K)}"
        )
    size = _either(image_config, "imageSize", "image_size")
    if size is not None and size not in IMAGE_SIZES:
        raise _invalid(f"Unsupported image size: {size}. Supported: 1K, 2K, 4K")
    return config


def ogg_seconds(data: bytes) -> float | None:
    """Duration of an Ogg Opus/Vorbis stream from its last page's granule, or None when the
    bytes are not an Ogg stream that carries audio."""
    if not data.startswith(b"OggS") or len(data) < 28:
        return None
    segments = data[26]
    first = data[27 + segments : 27 + segments + 64]
    if first.startswith(b"OpusHead"):
        rate, pre_skip = 48000, int.from_bytes(first[10:12], "little")
    elif first.startswith(b"\x01vorbis"):
        rate, pre_skip = int.from_bytes(first[12:16], "little") or 48000, 0
    else:
        return None
    last = data.rfind(b"OggS")
    granule = int.from_bytes(data[last + 6 : last + 14], "little", signed=True)
    return max(0.0, (granule - pre_skip) / rate)


def _parse_audio(data: bytes, mime: str, where: str) -> InlineAudio:
    if mime not in AUDIO_MIME_TYPES:
        raise _invalid(f"Unsupported MIME type: {mime}")
    if not data:
        raise _invalid(f"* GenerateContentRequest.{where}.inline_data.data: required")
    if mime == "audio/ogg":
        seconds = ogg_seconds(data)
        if seconds is None:
            raise _invalid("Request contains an invalid argument: unable to process input audio.")
    else:
        seconds = len(data) / AUDIO_BYTES_PER_SECOND
    return InlineAudio(data, mime, seconds)


def _parse_contents(contents: Any) -> tuple[list[str], list[InlineImage]]:
    if not isinstance(contents, list) or not contents:
        raise _invalid("* GenerateContentRequest.contents: contents is not specified")
    texts: list[str] = []
    images: list[InlineImage] = []
    for i, content in enumerate(contents):
        parts = content.get("parts") if isinstance(content, dict) else None
        if not isinstance(parts, list) or not parts:
            raise _invalid(
                f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty."
            )
        for j, part in enumerate(parts):
            where = f"contents[{i}].parts[{j}]"
            if not isinstance(part, dict):
                raise _invalid(f"Invalid value at '{where}': expected an object")
            if isinstance(part.get("text"), str):
                texts.append(part["text"])
            inline = _either(part, "inlineData", "inline_data")
            if inline is not None:
                images.append(_parse_inline(inline, where))
    images = [i for i in images if not i.mime_type.startswith("audio/")]
    if len(images) > MAX_INPUT_IMAGES:
        raise _invalid(f"Too many images in the request: {len(images)} (max {MAX_INPUT_IMAGES})")
    return texts, images


def _audio_parts(contents: Any) -> list[InlineAudio]:
    audio = []
    for i, content in enumerate(contents):
        for j, part in enumerate(content.get("parts") or []):
            inline = _either(part, "inlineData", "inline_data")
            if inline is None:
                continue
            parsed = _parse_inline(inline, f"contents[{i}].parts[{j}]")
            if parsed.mime_type.startswith("audio/"):
                audio.append(
                    _parse_audio(parsed.data, parsed.mime_type, f"contents[{i}].parts[{j}]")
                )
    return audio


def _parse_inline(inline: Any, where: str) -> InlineImage:
    if not isinstance(inline, dict):
        raise _invalid(f"Invalid value at '{where}.inline_data': expected an object")
    mime = _either(inline, "mimeType", "mime_type")
    if not isinstance(mime, str) or not mime:
        raise _invalid(f"* GenerateContentRequest.{where}.inline_data.mime_type: required")
    try:
        data = _decode_b64(str(inline.get("data", "")))
    except (binascii.Error, ValueError):
        raise _invalid(
            f"Invalid value at '{where}.inline_data.data' (TYPE_BYTES), Base64 decoding failed"
        ) from None
    return InlineImage(data, mime)


# ---------------------------------------------------------------------------------------------
# Responses
# ---------------------------------------------------------------------------------------------


def _text_tokens(texts: Sequence[str]) -> int:
    return sum(math.ceil(len(t) / 4) for t in texts)


def _prompt_usage(request: GeminiRequest) -> dict[str, Any]:
    text = max(1, _text_tokens(request.texts))
    image = INPUT_IMAGE_TOKENS * len(request.images)
    audio = sum(a.tokens for a in request.audio)
    details = [{"modality": "TEXT", "tokenCount": text}]
    if image:
        details.append({"modality": "IMAGE", "tokenCount": image})
    if audio:
        details.append({"modality": "AUDIO", "tokenCount": audio})
    return {"promptTokenCount": text + image + audio, "promptTokensDetails": details}


def render_transcript(reply: TranscriptReply, request: GeminiRequest) -> dict[str, Any]:
    candidate = {
        "content": {"role": "model", "parts": [{"text": reply.text}]},
        "finishReason": "STOP",
        "index": 0,
    }
    usage = _usage(request, 0, reply.text, 0, reply.usage)
    return _envelope(request, candidates=[candidate], usageMetadata=usage)


def _usage(
    request: GeminiRequest,
    image_tokens: int,
    text: str | None,
    thoughts: int,
    override: Mapping[str, Any] | None,
) -> dict[str, Any]:
    usage = _prompt_usage(request)
    text_tokens = _text_tokens([text]) if text else 0
    details = []
    if text_tokens:
        details.append({"modality": "TEXT", "tokenCount": text_tokens})
    if image_tokens:
        details.append({"modality": "IMAGE", "tokenCount": image_tokens})
    candidates = text_tokens + image_tokens
    usage["candidatesTokenCount"] = candidates
    if details:
        usage["candidatesTokensDetails"] = details
    if thoughts:
        usage["thoughtsTokenCount"] = thoughts
    usage["totalTokenCount"] = usage["promptTokenCount"] + candidates + thoughts
    usage.update(override or {})
    return usage


def _envelope(request: GeminiRequest, **fields: Any) -> dict[str, Any]:
    return fields | {"modelVersion": request.model, "responseId": random_id("", 20)}


def _image_bytes(reply: ImageReply, request: GeminiRequest) -> tuple[bytes, str, int, int]:
    if reply.data is not None:
        return reply.data, reply.mime_type or "image/png", 0, 0
    width, height = output_size(
        request.aspect_ratio, request.image_size, realistic=reply.realistic_size
    )
    width, height = reply.width or width, reply.height or height
    if reply.noise:
        data = render_noise(width, height, reply.fmt)
    else:
        data = render_image(width, height, reply.fmt, reply.color)
    return data, _FORMATS[reply.fmt], width, height


def render_image_reply(reply: ImageReply, request: GeminiRequest) -> dict[str, Any]:
    data, mime, width, height = _image_bytes(reply, request)
    parts: list[dict[str, Any]] = []
    thoughts = reply.thoughts_tokens
    if reply.thought_text:
        parts.append({"text": reply.thought_text, "thought": True})
        thoughts += _text_tokens([reply.thought_text])
    if reply.thought_image:
        draft_size = (max(1, width // 2), max(1, height // 2)) if width else (32, 32)
        draft = render_image(*draft_size, "PNG", (128, 128, 128))
        parts.append(
            {"inlineData": {"mimeType": "image/png", "data": _b64(draft)}, "thought": True}
        )
        thoughts += OUTPUT_IMAGE_TOKENS["1K"]
    if reply.text:
        parts.append({"text": reply.text})
    for n in range(reply.images):
        # A second image differs from the first (another colour), as a real second take would.
        extra = render_image(width, height, reply.fmt, (10, 200, 90)) if n and width else data
        final: dict[str, Any] = {"inlineData": {"mimeType": mime, "data": _b64(extra)}}
        if reply.thought_signature:
            final["thoughtSignature"] = _b64(secrets.token_bytes(32))
        parts.append(final)
    image_tokens = OUTPUT_IMAGE_TOKENS.get(request.image_size or "1K", 1120) * reply.images
    candidate = {"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}
    usage = _usage(request, image_tokens, reply.text, thoughts, reply.usage)
    if reply.usage_mode == "none":
        return _envelope(request, candidates=[candidate])
    if reply.usage_mode == "no_details":
        usage.pop("candidatesTokensDetails", None)
    return _envelope(request, candidates=[candidate], usageMetadata=usage)


def render_candidate_reply(reply: CandidateReply, request: GeminiRequest) -> dict[str, Any]:
    candidate: dict[str, Any] = {"finishReason": reply.finish_reason, "index": 0}
    if not reply.omit_content:
        parts = [{"text": reply.text}] if reply.text else []
        candidate["content"] = {"role": "model", "parts": parts}
    usage = _usage(request, 0, reply.text, 0, reply.usage)
    return _envelope(request, candidates=[candidate], usageMetadata=usage)


def render_blocked(reply: PromptBlocked, request: GeminiRequest) -> dict[str, Any]:
    usage = _prompt_usage(request)
    usage["totalTokenCount"] = usage["promptTokenCount"]
    return _envelope(request, promptFeedback={"blockReason": reply.reason}, usageMetadata=usage)


# ---------------------------------------------------------------------------------------------
# The fake server
# ---------------------------------------------------------------------------------------------

GeminiReply = (
    ImageReply
    | CandidateReply
    | TranscriptReply
    | PromptBlocked
    | ApiError
    | Delay
    | Hang
    | Responder
)


class FakeGemini(FakeServer[GeminiRequest]):
    """Fake `POST /{v1,v1beta}/models/{model}:generateContent` for the real genai client."""

    def __init__(
        self,
        *,
        latency: float = 0.0,
        default: GeminiReply | None = None,
        api_key: str | None = None,
        models: Sequence[str] = LIVE_MODELS,
    ) -> None:
        super().__init__(default=default)
        self.latency = latency
        self.api_key = api_key
        self.models = set(models)

    def _add_routes(self, app: web.Application) -> None:
        app.router.add_post("/{version}/models/{model_action}", self._on_generate)

    def generate_requests(self) -> list[GeminiRequest]:
        """Recorded generateContent calls (including rejected ones), in arrival order."""
        return list(self.requests)

    async def _on_generate(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        model, _, action = request.match_info["model_action"].partition(":")
        record = GeminiRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers={k.lower(): v for k, v in request.headers.items()},
            raw=raw,
            json=body,
            time_start=time.monotonic(),
            api_version=request.match_info["version"],
            model=model,
        )
        return await self._recorded(record, lambda: self._answer(request, record, action))

    def _gatekeep(
        self, request: web.Request, record: GeminiRequest, action: str
    ) -> ApiError | None:
        key = request.headers.get("x-goog-api-key") or request.query.get("key")
        if not key:
            return ApiError(
                403,
                "PERMISSION_DENIED",
                "Method doesn't allow unregistered callers (callers without established "
                "identity). Please use API Key or other form of API consumer identity to call "
                "this API.",
            )
        if self.api_key is not None and key != self.api_key:
            return ApiError(
                400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key."
            )
        unknown_model = record.model not in self.models
        if record.api_version not in API_VERSIONS or action != "generateContent" or unknown_model:
            return ApiError(
                404,
                "NOT_FOUND",
                f"models/{record.model} is not found for API version {record.api_version}, "
                f"or is not supported for {action}.",
            )
        if len(record.raw) > MAX_REQUEST_BYTES:
            return ApiError(
                400,
                "INVALID_ARGUMENT",
                f"Request payload size exceeds the limit: {MAX_REQUEST_BYTES} bytes.",
            )
        return None

    def _parse(self, record: GeminiRequest) -> ApiError | None:
        body = record.json
        if not isinstance(body, dict):
            return ApiError(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        try:
            record.texts, images = _parse_contents(body.get("contents"))
            record.images = [i for i in images if not i.mime_type.startswith("audio/")]
            record.audio = _audio_parts(body.get("contents"))
            config = body.get("generationConfig", body.get("generation_config"))
            record.generation_config = _check_generation_config(config)
        except _InvalidError as exc:
            return exc.error
        return None

    async def _answer(
        self, request: web.Request, record: GeminiRequest, action: str
    ) -> web.StreamResponse:
        error = self._gatekeep(request, record, action) or self._parse(record)
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
            message = f"FakeGemini: no reply scripted for request #{len(self.requests)}"
            return self._error(record, ApiError(500, "INTERNAL", message), "unscripted")
        if isinstance(reply, ApiError):
            return self._error(record, reply, "error")
        body = self._render(reply, record)
        if body is not None:
            record.usage = body.get("usageMetadata")
        if body is None:
            message = f"FakeGemini: bad scripted reply {reply!r}"
            return self._error(record, ApiError(500, "INTERNAL", message), "unscripted")
        return await _send_json_pieces(request, record, _json_pieces(body))

    @staticmethod
    def _render(reply: Any, record: GeminiRequest) -> dict[str, Any] | None:
        if isinstance(reply, ImageReply):
            return render_image_reply(reply, record)
        if isinstance(reply, CandidateReply):
            return render_candidate_reply(reply, record)
        if isinstance(reply, PromptBlocked):
            return render_blocked(reply, record)
        if isinstance(reply, TranscriptReply):
            return render_transcript(reply, record) if record.audio else None
        return None

    @staticmethod
    def _error(record: GeminiRequest, error: ApiError, outcome: str) -> web.Response:
        record.outcome = outcome
        return web.json_response(error.body(), status=error.code, headers=dict(error.headers))
