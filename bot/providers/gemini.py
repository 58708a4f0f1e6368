"""Thin typed gateway over google-genai for image generation: one retry layer (ours), safety
outcomes as exceptions the tool can explain.

google-genai is imported when the first image is asked for, not at start-up: the SDK costs about
30 MB of memory and 0.4 s to import, and many conversations never draw anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
import structlog

from bot.providers.images import (
    IMAGE_BLOCKED,
    NO_IMAGE,
    PROMPT_BLOCKED,
    GeneratedImage,
    ImageBlocked,
    ImageProvider,
    ImageResult,
    ImageUnavailable,
    ImageUsage,
    ModelGoneReporter,
    hold_current_answer,
)

if TYPE_CHECKING:
    import types as builtin_types
    from collections.abc import Callable

    from google import genai
    from google.genai import errors as genai_errors
    from google.genai import types

log = structlog.get_logger(__name__)

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
MAX_BACKOFF_SECONDS = 8.0
TEXT_LIMIT = 300
# An answer waiting for its AnswerGate slot buffers at most twice this in the bot (the SDK's
# own session reads 4 MB at a time).
READ_BUFFER_SIZE = 2**20

MAX_REFERENCES = 14
SAFETY_FINISH_REASONS = frozenset(
    {
        "SAFETY",
        "PROHIBITED_CONTENT",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "BLOCKLIST",
        "SPII",
        "RECITATION",
        "IMAGE_RECITATION",
    }
)


def create_gemini_client(
    api_key: str,
    base_url: str | None,
    timeout_seconds: float,
    session: aiohttp.ClientSession | None = None,
) -> genai.Client:
    """The SDK's own retries are off: the gateway is the single retry layer. `session`: an
    aiohttp session of ours for the SDK's requests (`image_answer_session`)."""
    from google import genai
    from google.genai import types

    return genai.Client(
        api_key=api_key,
        http_options=types.HttpOptions(
            base_url=base_url,
            api_version="v1beta",
            timeout=int(timeout_seconds * 1000),
            retry_options=types.HttpRetryOptions(attempts=1),
            aiohttp_client=session,
        ),
    )


async def _on_response_headers(
    session: aiohttp.ClientSession,
    context: builtin_types.SimpleNamespace,
    params: aiohttp.TraceRequestEndParams,
) -> None:
    if params.response.status == 200:
        await hold_current_answer()


def image_answer_session() -> aiohttp.ClientSession:
    """The SDK's requests through a session (the SDK's own settings) that waits for the
    caller's `AnswerGate` slot when a successful answer's headers arrive, before the SDK reads
    and parses the body: a waiting answer stays in the network buffers, not in memory."""
    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(_on_response_headers)
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),
        trust_env=True,
        read_bufsize=READ_BUFFER_SIZE,
        trace_configs=[trace],
    )


@dataclass(frozen=True)
class GatewayConfig:
    model: str
    retry_attempts: int
    retry_initial_delay: float


__all__ = [
    "IMAGE_BLOCKED",
    "NO_IMAGE",
    "PROMPT_BLOCKED",
    "GatewayConfig",
    "GeminiImageGateway",
    "GeneratedImage",
    "ImageBlocked",
    "ImageUnavailable",
    "create_gemini_client",
]


class GeminiImageGateway:
    """Creates its client with `connect` on the first image and closes it in `aclose`."""

    def __init__(
        self,
        connect: Callable[[aiohttp.ClientSession], genai.Client],
        config: GatewayConfig,
        *,
        concurrency: asyncio.Semaphore | None = None,
    ) -> None:
        self._connect = connect
        self._client: genai.Client | None = None
        self._session: aiohttp.ClientSession | None = None
        self._connecting = asyncio.Lock()
        self._config = config
        self._gone = ModelGoneReporter("google", config.model)
        # One of the shared provider-call slots, held for the length of one HTTP call.
        self._slot: contextlib.AbstractAsyncContextManager[Any] = (
            concurrency if concurrency is not None else contextlib.nullcontext()
        )

    async def _connected(self) -> genai.Client:
        async with self._connecting:
            if self._client is None:
                # Importing the SDK takes about half a second: in a thread, so that other
                # people's turns go on meanwhile.
                self._session = image_answer_session()
                self._client = await asyncio.to_thread(self._connect, self._session)
                log.info("gemini_client_created")
            return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aio.aclose()
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    @property
    def model(self) -> str:
        return self._config.model

    @property
    def provider(self) -> ImageProvider:
        return "google"

    @property
    def max_references(self) -> int:
        return MAX_REFERENCES

    async def generate(
        self,
        prompt: str,
        *,
        aspect_ratio: str,
        image_size: str,
        references: Sequence[tuple[bytes, str]],
        deadline: float,
    ) -> ImageResult:
        """One image. Retries 429/5xx and failed connects with backoff inside `deadline`."""
        started = time.monotonic()
        client = await self._connected()
        from google.genai import types

        contents = self._contents(prompt, references)
        config = types.GenerateContentConfig(
            response_modalities=["TEXT", "IMAGE"],
            image_config=types.ImageConfig(aspect_ratio=aspect_ratio, image_size=image_size),
        )
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self._call_once(client, contents, config, deadline)
            except ImageUnavailable as exc:
                exc.attempts = attempt
                if exc.kind == "model_gone":
                    self._gone.gone(exc.detail)
                delay = self._retry_delay(exc, attempt, deadline)
                if delay is None:
                    raise
                log.warning(
                    "gemini_retry", attempt=attempt, kind=exc.kind, status=exc.status, delay=delay
                )
                await asyncio.sleep(delay)
                continue
            duration_ms = int((time.monotonic() - started) * 1000)
            self._gone.served()
            return _image_from(response, attempt, duration_ms)

    @staticmethod
    def _contents(prompt: str, references: Sequence[tuple[bytes, str]]) -> list[Any]:
        from google.genai import types

        parts: list[Any] = [
            types.Part.from_bytes(data=data, mime_type=mime) for data, mime in references
        ]
        parts.append(prompt)
        return parts

    async def _call_once(
        self,
        client: genai.Client,
        contents: list[Any],
        config: types.GenerateContentConfig,
        deadline: float,
    ) -> types.GenerateContentResponse:
        from google.genai import errors as genai_errors

        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ImageUnavailable("timeout", "no time left in this turn")
        async with self._slot:
            try:
                async with asyncio.timeout(remaining):
                    return await client.aio.models.generate_content(
                        model=self._config.model, contents=contents, config=config
                    )
            except genai_errors.APIError as exc:
                raise _classify_api_error(exc) from None
            except aiohttp.ClientConnectorError as exc:
                raise ImageUnavailable("connection", type(exc).__name__) from None
            except (aiohttp.ClientError, ConnectionError) as exc:
                # The request may have reached the provider before the connection broke.
                raise ImageUnavailable(
                    "connection", type(exc).__name__, cost_unknown=True
                ) from None
            except TimeoutError:
                raise ImageUnavailable("timeout", "no answer in time", cost_unknown=True) from None

    def _retry_delay(self, exc: ImageUnavailable, attempt: int, deadline: float) -> float | None:
        if exc.cost_unknown or exc.kind not in {"busy", "connection"}:
            return None
        if attempt >= self._config.retry_attempts:
            return None
        base = min(self._config.retry_initial_delay * 2.0 ** (attempt - 1), MAX_BACKOFF_SECONDS)
        delay = base * (1 - 0.25 * random.random())
        if time.monotonic() + delay >= deadline:
            return None
        return round(delay, 3)


def _classify_api_error(exc: genai_errors.APIError) -> ImageUnavailable:
    status = int(exc.code) if exc.code else None
    detail = f"status {status} {exc.status or ''}".strip()
    if status in RETRYABLE_STATUS:
        return ImageUnavailable("busy", detail, status=status)
    if status in (401, 403):
        return ImageUnavailable("auth", detail, status=status)
    if status == 404:
        message = str(exc.message or "")[:200]
        return ImageUnavailable("model_gone", f"{detail}: {message}", status=status)
    return ImageUnavailable("bad_request", detail, status=status)


def _tokens(response: types.GenerateContentResponse) -> tuple[int, int]:
    usage = response.usage_metadata
    if usage is None:
        return 0, 0
    output = (usage.candidates_token_count or 0) + (usage.thoughts_token_count or 0)
    return usage.prompt_token_count or 0, output


def _usage(response: types.GenerateContentResponse) -> ImageUsage | None:
    """The reported usage by kind; None without candidatesTokensDetails (design section 6):
    IMAGE candidate tokens at the image-output rate, the other candidate tokens and the thoughts
    at the text-output rate, prompt tokens at the input rate of their modality."""
    usage = response.usage_metadata
    if usage is None or not usage.candidates_tokens_details:
        return None
    image_output = _modality_tokens(usage.candidates_tokens_details, "IMAGE")
    text_output = max(0, (usage.candidates_token_count or 0) - image_output)
    prompt = usage.prompt_token_count or 0
    image_input = min(prompt, _modality_tokens(usage.prompt_tokens_details or [], "IMAGE"))
    return ImageUsage(
        text_input_tokens=prompt - image_input,
        image_input_tokens=image_input,
        text_output_tokens=text_output + (usage.thoughts_token_count or 0),
        image_output_tokens=image_output,
    )


def _modality_tokens(details: Sequence[types.ModalityTokenCount], modality: str) -> int:
    return sum(d.token_count or 0 for d in details if _enum_name(d.modality) == modality)


def _enum_name(value: Any) -> str:
    if value is None:
        return ""
    name = getattr(value, "name", None) or getattr(value, "value", None) or str(value)
    return str(name).upper()


def _answer_text(parts: Sequence[types.Part]) -> str | None:
    texts = [p.text for p in parts if p.text and p.thought is not True]
    text = " ".join(t.strip() for t in texts if t.strip())
    return text[:TEXT_LIMIT] if text else None


def _image_from(
    response: types.GenerateContentResponse, attempts: int, duration_ms: int
) -> ImageResult:
    input_tokens, output_tokens = _tokens(response)
    feedback = response.prompt_feedback
    if not response.candidates:
        reason = _enum_name(feedback.block_reason if feedback else None) or "NO_CANDIDATES"
        user_reason = PROMPT_BLOCKED if feedback and feedback.block_reason else NO_IMAGE
        raise ImageBlocked(
            reason, user_reason, input_tokens=input_tokens, output_tokens=output_tokens
        )
    candidate = response.candidates[0]
    parts = list(candidate.content.parts or []) if candidate.content else []
    images = [
        p.inline_data
        for p in parts
        if p.inline_data is not None and p.inline_data.data and p.thought is not True
    ]
    text = _answer_text(parts)
    if not images:
        finish = _enum_name(candidate.finish_reason) or "NO_IMAGE"
        user_reason = IMAGE_BLOCKED if finish in SAFETY_FINISH_REASONS else NO_IMAGE
        if text and user_reason == NO_IMAGE:
            user_reason = f'{NO_IMAGE}; it said: "{text}"'
        raise ImageBlocked(
            finish if finish != "STOP" else "TEXT_ONLY",
            user_reason,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
        )
    final = images[-1]
    assert final.data is not None
    return ImageResult(
        data=final.data,
        mime_type=final.mime_type or "image/png",
        usage=_usage(response),
        model_version=response.model_version,
        text=text,
        attempts=attempts,
        duration_ms=duration_ms,
        images_in_response=len(images),
    )
