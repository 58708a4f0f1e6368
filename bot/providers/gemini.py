"""Single attempts at images through google-genai, made in the image worker process
(`image_worker_main`): the answer's usage split by kind, safety outcomes as exceptions the tool
can explain. Retries and deadlines are the gateway's (`image_gateway`).

The worker imports google-genai when it starts, with the first image: the bot itself only imports
it for voice notes (the SDK costs about 30 MB of memory and 0.4 s to import).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import aiohttp
import structlog

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
    import types as builtin_types

    from google import genai
    from google.genai import errors as genai_errors
    from google.genai import types

log = structlog.get_logger(__name__)

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
TEXT_LIMIT = 300
# An answer waiting for its AnswerGate slot buffers at most twice this in the worker (the SDK's
# own session reads 4 MB at a time).
READ_BUFFER_SIZE = 2**18

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


class GeminiImageAttempts:
    """Single attempts at images through google-genai (in the image worker process); the client
    and its session are made with the first attempt and closed in `aclose`."""

    def __init__(self, api_key: str, base_url: str | None, timeout_seconds: float, model: str):
        self._api_key = api_key
        self._base_url = base_url
        self._timeout_seconds = timeout_seconds
        self._model = model
        self._client: genai.Client | None = None
        self._session: aiohttp.ClientSession | None = None

    def _connected(self) -> genai.Client:
        if self._client is None:
            self._session = image_answer_session()
            self._client = create_gemini_client(
                self._api_key, self._base_url, self._timeout_seconds, self._session
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aio.aclose()
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def attempt(self, request: ImageRequest) -> ImageResult:
        from google.genai import errors as genai_errors
        from google.genai import types

        client = self._connected()
        config = types.GenerateContentConfig(
            response_modalities=["TEXT", "IMAGE"],
            image_config=types.ImageConfig(
                aspect_ratio=request.aspect_ratio, image_size=request.image_size
            ),
        )
        try:
            response = await client.aio.models.generate_content(
                model=self._model, contents=_contents(request), config=config
            )
        except genai_errors.APIError as exc:
            raise _classify_api_error(exc) from None
        except aiohttp.ClientConnectorError as exc:
            raise ImageUnavailable("connection", type(exc).__name__) from None
        except (aiohttp.ClientError, ConnectionError) as exc:
            # The request may have reached the provider before the connection broke.
            raise ImageUnavailable("connection", type(exc).__name__, cost_unknown=True) from None
        except TimeoutError:
            raise ImageUnavailable("timeout", "no answer in time", cost_unknown=True) from None
        return _image_from(response)


def _contents(request: ImageRequest) -> list[Any]:
    from google.genai import types

    parts: list[Any] = [
        types.Part.from_bytes(data=data, mime_type=mime) for data, mime in request.references
    ]
    parts.append(request.prompt)
    return parts


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


def _image_from(response: types.GenerateContentResponse) -> ImageResult:
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
        attempts=1,
        duration_ms=0,
        images_in_response=len(images),
    )
