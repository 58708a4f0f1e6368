"""Voice and audio to text through Gemini (audio as inline data), with the usage it reports.

One attempt per call plus one retry on 429/5xx when time allows; the SDK's own retries are off.
google-genai is imported on the first voice note, not at start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
import structlog

if TYPE_CHECKING:
    from google import genai

log = structlog.get_logger(__name__)

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
TRANSCRIBE_PROMPT = (
    "Transcribe this voice message verbatim, in the language it is spoken in. Output only the "
    "transcript, without comments or timestamps. If there is no speech, output nothing."
)
MAX_TRANSCRIPT_TOKENS = 8192


@dataclass(frozen=True)
class Transcript:
    text: str
    input_tokens: int
    output_tokens: int
    audio_tokens: int
    duration_ms: int
    model_version: str | None


class TranscriptionFailed(Exception):
    """No transcript. `cost_unknown` when the provider may have billed although nothing came back;
    `kind` is busy | connection | timeout | bad_audio | bad_request | auth."""

    def __init__(self, kind: str, detail: str, *, cost_unknown: bool = False) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail
        self.cost_unknown = cost_unknown


class GeminiTranscriber:
    """Creates its client with `connect` on the first call and closes it in `aclose`."""

    def __init__(
        self,
        connect: Callable[[], genai.Client],
        *,
        model: str,
        concurrency: asyncio.Semaphore | None = None,
    ) -> None:
        self._connect = connect
        self._client: genai.Client | None = None
        self._connecting = asyncio.Lock()
        self.model = model
        self._slot: contextlib.AbstractAsyncContextManager[Any] = (
            concurrency if concurrency is not None else contextlib.nullcontext()
        )

    async def _connected(self) -> genai.Client:
        async with self._connecting:
            if self._client is None:
                self._client = await asyncio.to_thread(self._connect)
            return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aio.aclose()

    async def transcribe(self, audio: bytes, mime_type: str, *, deadline: float) -> Transcript:
        started = time.monotonic()
        for attempt in (1, 2):
            try:
                return await self._call(audio, mime_type, deadline, started)
            except TranscriptionFailed as exc:
                delay = 0.5 + random.random() * 0.5
                if exc.kind != "busy" or attempt == 2 or time.monotonic() + delay >= deadline:
                    raise
                log.warning("transcribe_retry", detail=exc.detail)
                await asyncio.sleep(delay)
        raise TranscriptionFailed("busy", "retries exhausted")

    async def _call(
        self, audio: bytes, mime_type: str, deadline: float, started: float
    ) -> Transcript:
        client = await self._connected()
        from google.genai import errors as genai_errors
        from google.genai import types

        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TranscriptionFailed("timeout", "no time left in this turn")
        contents: list[Any] = [
            types.Part.from_bytes(data=audio, mime_type=mime_type),
            TRANSCRIBE_PROMPT,
        ]
        config = types.GenerateContentConfig(max_output_tokens=MAX_TRANSCRIPT_TOKENS)
        async with self._slot:
            try:
                async with asyncio.timeout(remaining):
                    response = await client.aio.models.generate_content(
                        model=self.model, contents=contents, config=config
                    )
            except genai_errors.APIError as exc:
                raise _classify(exc) from None
            except aiohttp.ClientConnectorError as exc:
                raise TranscriptionFailed("connection", type(exc).__name__) from None
            except (aiohttp.ClientError, ConnectionError) as exc:
                raise TranscriptionFailed(
                    "connection", type(exc).__name__, cost_unknown=True
                ) from None
            except TimeoutError:
                raise TranscriptionFailed(
                    "timeout", "no answer in time", cost_unknown=True
                ) from None
        return _transcript(response, self.model, int((time.monotonic() - started) * 1000))


def _classify(exc: Any) -> TranscriptionFailed:
    status = int(exc.code) if exc.code else 0
    detail = f"status {status} {exc.status or ''}".strip()
    if status in RETRYABLE_STATUS:
        return TranscriptionFailed("busy", detail)
    if status in (401, 403):
        return TranscriptionFailed("auth", detail)
    if status == 400:
        return TranscriptionFailed("bad_audio", detail)
    return TranscriptionFailed("bad_request", detail)


def _transcript(response: Any, model: str, duration_ms: int) -> Transcript:
    usage = response.usage_metadata
    input_tokens = output_tokens = audio_tokens = 0
    if usage is not None:
        input_tokens = usage.prompt_token_count or 0
        output_tokens = (usage.candidates_token_count or 0) + (usage.thoughts_token_count or 0)
        for detail in usage.prompt_tokens_details or []:
            if str(getattr(detail.modality, "value", detail.modality)).upper() == "AUDIO":
                audio_tokens += detail.token_count or 0
    texts: list[str] = []
    for candidate in response.candidates or []:
        for part in (candidate.content.parts or []) if candidate.content else []:
            if part.text and part.thought is not True:
                texts.append(part.text)
        break
    return Transcript(
        text=" ".join(t.strip() for t in texts if t.strip()),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        audio_tokens=audio_tokens,
        duration_ms=duration_ms,
        model_version=response.model_version or model,
    )
