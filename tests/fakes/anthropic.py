"""A local fake of the Anthropic Messages and Files APIs, wire-compatible with anthropic 2.12.

Tests start it in-process (`async with FakeAnthropic() as fake:`), point the real SDK at
`fake.base_url`, script replies with `fake.script(...)` and assert on `fake.requests`.
A request that nothing was scripted for gets an error, so no test passes by accident.

The generic pieces (`FakeServer`, `RecordedRequest`, `Delay`, `Hang`) are shared with
the Gemini fake.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import inspect
import io
import json
import math
import re
import secrets
import string
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, Literal, Self, TypeVar

from aiohttp import BodyPartReader, web
from PIL import Image, UnidentifiedImageError

from tests.fakes.canonical import canonical_text, flat_items
from tests.fakes.thinking_binding import BindingError, ThinkingCheck, check_thinking, sign_content

# ---------------------------------------------------------------------------------------------
# Shared server machinery
# ---------------------------------------------------------------------------------------------

MAX_BODY_BYTES = 100 * 1024 * 1024
_ID_ALPHABET = string.ascii_letters + string.digits


def random_id(prefix: str, length: int = 22) -> str:
    """An id shaped like the provider's (`msg_01...`, `toolu_01...`, `file_011...`)."""
    return prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


@dataclass
class RecordedRequest:
    """One HTTP request the fake received, with timing and how it was answered."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    raw: bytes
    json: Any
    time_start: float  # time.monotonic()
    time_end: float | None = None
    status: int | None = None
    response: Any = None  # the body answered with, when the fake built one (a message)
    outcome: str = (
        "pending"  # ok | stream | error | invalid | unscripted | fault:* | hang | cancelled
    )

    @property
    def duration(self) -> float | None:
        return None if self.time_end is None else self.time_end - self.time_start


@dataclass(frozen=True)
class Delay:
    """Wait `seconds`, then answer with `reply` (or with the next scripted reply when None)."""

    seconds: float
    reply: Any = None


@dataclass(frozen=True)
class Hang:
    """Never answer: the request lasts until the client gives up or the fake stops."""


class _Unscripted:
    """Marker: the script queue is empty and there is no default responder."""


UNSCRIPTED = _Unscripted()

Responder = Callable[[Any], Any]


R = TypeVar("R", bound=RecordedRequest)


class FakeServer(Generic[R]):
    """aiohttp server on 127.0.0.1 with an ephemeral port, a reply queue and a request log."""

    def __init__(self, *, default: Any = None) -> None:
        self.requests: list[R] = []
        self.unscripted_count = 0
        self._queue: deque[Any] = deque()
        self._default = default
        self._waiters: set[asyncio.Event] = set()
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None

    # lifecycle -------------------------------------------------------------------------------

    async def start(self) -> Self:
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        self._add_routes(app)
        runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            handler_cancellation=True,
            shutdown_timeout=0.2,
        )
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=2048)
        await site.start()
        host, port = runner.addresses[0][:2]
        self._runner = runner
        self._base_url = f"http://{host}:{port}"
        self._closing.clear()
        return self

    async def stop(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("fake server is not started")
        return self._base_url

    def _add_routes(self, app: web.Application) -> None:
        raise NotImplementedError

    # scripting -------------------------------------------------------------------------------

    def script(self, *replies: Any) -> None:
        """Queue replies; each request takes the next one."""
        self._queue.extend(replies)

    def set_default(self, responder: Any) -> None:
        """Answer with this (a reply or a callable) whenever the queue is empty; None disables."""
        self._default = responder

    @property
    def pending_replies(self) -> int:
        return len(self._queue)

    def _take_reply(self) -> Any:
        if self._queue:
            return self._queue.popleft()
        if self._default is not None:
            return self._default
        return UNSCRIPTED

    async def _next_reply(self, record: R) -> Any:
        """Resolve the next scripted item: run Delays and callables until a concrete reply."""
        item = self._take_reply()
        while True:
            if isinstance(item, Delay):
                await asyncio.sleep(item.seconds)
                item = item.reply if item.reply is not None else self._take_reply()
            elif callable(item):
                result = item(record)
                item = await result if inspect.isawaitable(result) else result
            else:
                return item

    async def _hang(self, request: web.Request) -> web.StreamResponse:
        await self._closing.wait()
        return self._drop(request)

    @staticmethod
    def _drop(request: web.Request) -> web.StreamResponse:
        """Close the TCP connection without a proper HTTP ending."""
        if request.transport is not None:
            request.transport.abort()
        raise asyncio.CancelledError

    # recording -------------------------------------------------------------------------------

    def _new_record(
        self, request: web.Request, raw: bytes, body: Any, started: float | None = None
    ) -> RecordedRequest:
        return RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers={k.lower(): v for k, v in request.headers.items()},
            raw=raw,
            json=body,
            time_start=started if started is not None else time.monotonic(),
        )

    async def _recorded(
        self,
        record: R,
        handle: Callable[[], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        """Log `record`, run the handler, stamp the end time and status, wake waiters."""
        self.requests.append(record)
        self._wake()
        try:
            response = await handle()
            record.status = response.status
            return response
        except asyncio.CancelledError:
            if record.outcome == "pending":
                record.outcome = "cancelled"
            raise
        finally:
            record.time_end = time.monotonic()
            if record.outcome == "pending":
                record.outcome = "ok"
            self._wake()

    def _wake(self) -> None:
        for waiter in self._waiters:
            waiter.set()

    async def wait_for_requests(
        self,
        n: int,
        timeout: float = 5.0,
        *,
        path: str | None = None,
        completed: bool = False,
    ) -> list[R]:
        """Wait until at least `n` matching requests arrived (or finished, with `completed`)."""

        def matching() -> list[R]:
            return [
                r
                for r in self.requests
                if (path is None or r.path == path) and (not completed or r.time_end is not None)
            ]

        try:
            async with asyncio.timeout(timeout):
                while len(matching()) < n:
                    waiter = asyncio.Event()
                    self._waiters.add(waiter)
                    try:
                        await waiter.wait()
                    finally:
                        self._waiters.discard(waiter)
        except TimeoutError:
            raise TimeoutError(
                f"expected {n} requests (path={path}), got {len(matching())} in {timeout}s"
            ) from None
        return matching()

    # benchmark figures -----------------------------------------------------------------------

    @property
    def time_in_provider(self) -> float:
        """Sum of the durations of all finished requests, in seconds."""
        return sum(r.duration for r in self.requests if r.duration is not None)

    def intervals(self) -> list[tuple[float, float]]:
        """(start, end) monotonic times of the finished requests."""
        return [(r.time_start, r.time_end) for r in self.requests if r.time_end is not None]

    def clear_requests(self) -> None:
        self.requests.clear()


# ---------------------------------------------------------------------------------------------
# Anthropic replies and their builders
# ---------------------------------------------------------------------------------------------

Block = Mapping[str, Any]


@dataclass(frozen=True)
class Reply:
    """A model turn: content blocks in wire format, stop reason, optional usage/latency override."""

    content: Sequence[Block]
    stop_reason: str | None = "end_turn"
    usage: Mapping[str, Any] | None = None  # merged over the computed usage
    model: str | None = None  # defaults to the requested model
    stop_details: Mapping[str, Any] | None = None
    ttft: float | None = None
    tokens_per_second: float | None = None


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}

_ERROR_MESSAGES = {
    "overloaded_error": "Overloaded",
    "rate_limit_error": "Number of request tokens has exceeded your per-minute rate limit",
    "api_error": "Internal server error",
}


@dataclass(frozen=True)
class ApiError:
    """An Anthropic error body; 429/529/5xx carry `retry-after-ms: 1` so SDK retries are instant."""

    status: int
    type: str | None = None
    message: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    details: Mapping[str, Any] | None = None
    retry_after_ms: int | None = 1
    should_retry: bool | None = None

    @property
    def error_type(self) -> str:
        if self.type is not None:
            return self.type
        return _ERROR_TYPES.get(
            self.status, "api_error" if self.status >= 500 else "invalid_request_error"
        )

    def body(self, request_id: str) -> dict[str, Any]:
        error: dict[str, Any] = {
            "type": self.error_type,
            "message": self.message or _ERROR_MESSAGES.get(self.error_type, "Error"),
        }
        if self.details is not None:
            error["details"] = dict(self.details)
        return {"type": "error", "error": error, "request_id": request_id}

    def response_headers(self, request_id: str) -> dict[str, str]:
        headers = {"request-id": request_id}
        retryable = self.status in (408, 409, 429) or self.status >= 500
        if retryable and self.retry_after_ms is not None:
            headers["retry-after-ms"] = str(self.retry_after_ms)
        if self.should_retry is not None:
            headers["x-should-retry"] = "true" if self.should_retry else "false"
        headers.update(self.headers)
        return headers


FaultKind = Literal["error_event", "truncate", "corrupt", "drop"]


@dataclass(frozen=True)
class StreamFault:
    """A stream that goes wrong after `after_deltas` content deltas.

    `after_deltas=None` means after all content blocks, just before `message_delta`.
    Kinds: `error_event` (an SSE `event: error`), `truncate` (clean EOF, no message_stop),
    `corrupt` (a data line with invalid JSON), `drop` (the TCP connection is cut).
    Sent to a non-streaming request: error_event -> the same error as HTTP 529, truncate -> a cut
    JSON body, corrupt -> invalid JSON with status 200, drop -> connection cut before any byte.
    """

    kind: FaultKind
    after_deltas: int | None = 2
    reply: Reply | None = None
    error_type: str = "overloaded_error"
    error_message: str = "Overloaded"


def text_block(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def tool_use_block(name: str, input: Mapping[str, Any], *, id: str | None = None) -> dict[str, Any]:
    return {
        "type": "tool_use",
        "id": id or random_id("toolu_01"),
        "name": name,
        "input": dict(input),
    }


def thinking_block(
    thinking: str = "Let me work out what the user needs.", *, signature: str | None = None
) -> dict[str, Any]:
    """A thinking block to script. The fake signs it again when it sends it (the signature binds
    the model and the conversation, see `tests.fakes.thinking_binding`); compare what came back
    with what the fake sent (`RecordedRequest.response`), not with this dict."""
    sig = signature or base64.b64encode(secrets.token_bytes(48)).decode()
    return {"type": "thinking", "thinking": thinking, "signature": sig}


def redacted_thinking_block(data: str | None = None) -> dict[str, Any]:
    """Like `thinking_block`: the fake replaces `data` with its signed form when it sends it."""
    return {
        "type": "redacted_thinking",
        "data": data or base64.b64encode(secrets.token_bytes(32)).decode(),
    }


def _with_thinking(thinking: str | None, blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [thinking_block(thinking), *blocks] if thinking is not None else blocks


def text_reply(text: str, *, stop_reason: str = "end_turn", thinking: str | None = None) -> Reply:
    return Reply(content=_with_thinking(thinking, [text_block(text)]), stop_reason=stop_reason)


def tool_use_reply(
    name: str,
    input: Mapping[str, Any],
    *,
    id: str | None = None,
    text: str | None = None,
    thinking: str | None = None,
) -> Reply:
    """One tool call (optionally preceded by text and/or thinking), stop_reason tool_use."""
    blocks = [text_block(text)] if text is not None else []
    blocks.append(tool_use_block(name, input, id=id))
    return Reply(content=_with_thinking(thinking, blocks), stop_reason="tool_use")


def tool_uses_reply(*calls: tuple[str, Mapping[str, Any]], text: str | None = None) -> Reply:
    """Several parallel tool calls in one turn."""
    blocks = [text_block(text)] if text is not None else []
    blocks.extend(tool_use_block(name, args) for name, args in calls)
    return Reply(content=blocks, stop_reason="tool_use")


def refusal_reply(text: str = "I can't help with that.", *, category: str | None = None) -> Reply:
    details = {"type": "refusal", "category": category, "explanation": None}
    return Reply(content=[text_block(text)], stop_reason="refusal", stop_details=details)


def max_tokens_reply(text: str) -> Reply:
    return Reply(content=[text_block(text)], stop_reason="max_tokens")


def cut_tool_use_reply(
    name: str,
    input: Mapping[str, Any],
    *,
    keep_chars: int = 20,
    text: str | None = None,
    usage: Mapping[str, Any] | None = None,
) -> Reply:
    """A tool call cut off by max_tokens, as the API streams it: the input JSON stops after
    `keep_chars` characters, the block is closed, then message_delta (stop_reason max_tokens,
    with usage) and message_stop."""
    blocks = [text_block(text)] if text is not None else []
    block = tool_use_block(name, input)
    block[_CUT_JSON] = json.dumps(dict(input), ensure_ascii=False)[:keep_chars]
    blocks.append(block)
    return Reply(content=blocks, stop_reason="max_tokens", usage=usage)


_CUT_JSON = "_cut_partial_json"  # a tool_use block's input JSON as far as it streamed


# Server tools (web_search / web_fetch): blocks as the API returns them. `encrypted_content` and
# `encrypted_index` are opaque tokens the API checks when they come back (see `issued_tokens`).


def server_tool_use_block(
    name: str, input: Mapping[str, Any], *, id: str | None = None
) -> dict[str, Any]:
    return {
        "type": "server_tool_use",
        "id": id or random_id("srvtoolu_01"),
        "name": name,
        "input": dict(input),
    }


def web_search_result_block(tool_use_id: str, results: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """`results` are (url, title) pairs."""
    return {
        "type": "web_search_tool_result",
        "tool_use_id": tool_use_id,
        "content": [
            {
                "type": "web_search_result",
                "url": url,
                "title": title,
                "encrypted_content": "EqgfCioIARgBIiQ" + random_id("", 40),
                "page_age": "April 30, 2026",
            }
            for url, title in results
        ],
    }


def web_search_error_block(tool_use_id: str, error_code: str) -> dict[str, Any]:
    return {
        "type": "web_search_tool_result",
        "tool_use_id": tool_use_id,
        "content": {"type": "web_search_tool_result_error", "error_code": error_code},
    }


def web_fetch_result_block(tool_use_id: str, url: str, text: str) -> dict[str, Any]:
    return {
        "type": "web_fetch_tool_result",
        "tool_use_id": tool_use_id,
        "content": {
            "type": "web_fetch_result",
            "url": url,
            "content": {
                "type": "document",
                "source": {"type": "text", "media_type": "text/plain", "data": text},
                "title": url,
                "citations": {"enabled": True},
            },
            "retrieved_at": _now_rfc3339(),
        },
    }


def cited_text_block(text: str, sources: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """Text with `web_search_result_location` citations; `sources` are (url, title) pairs."""
    return {
        "type": "text",
        "text": text,
        "citations": [
            {
                "type": "web_search_result_location",
                "url": url,
                "title": title,
                "encrypted_index": "Eo8BCioIAhgBIiQ" + random_id("", 30),
                "cited_text": text[:150],
            }
            for url, title in sources
        ],
    }


def web_search_reply(
    query: str,
    results: Sequence[tuple[str, str]],
    answer: str,
    *,
    cite: int = 1,
    stop_reason: str = "end_turn",
) -> Reply:
    """One search, its results, and an answer citing the first `cite` results."""
    use = server_tool_use_block("web_search", {"query": query})
    return Reply(
        content=[
            text_block(f"Let me search for {query}."),
            use,
            web_search_result_block(use["id"], results),
            cited_text_block(answer, results[:cite]),
        ],
        stop_reason=stop_reason,
    )


def pause_turn_reply(*queries: str) -> Reply:
    """A long server-tool turn paused after some searches; the client resends to continue."""
    blocks: list[dict[str, Any]] = []
    for query in queries:
        use = server_tool_use_block("web_search", {"query": query})
        blocks += [
            use,
            web_search_result_block(use["id"], [(f"https://example.org/{len(blocks)}", query)]),
        ]
    return Reply(content=blocks, stop_reason="pause_turn")


def overloaded() -> ApiError:
    return ApiError(529, "overloaded_error", "Overloaded")


def rate_limited(message: str | None = None) -> ApiError:
    return ApiError(429, "rate_limit_error", message)


def spend_limit_reached() -> ApiError:
    """The organisation hit its monthly spend limit: 429 that must not be retried."""
    return ApiError(
        429,
        "rate_limit_error",
        "You have reached your specified API usage limits. You will regain access on the 1st.",
        details={"error_code": "enforced_spend_limit_reached"},
        retry_after_ms=None,
        should_retry=False,
    )


_DEFAULT_FAULT_REPLY = Reply(
    content=[text_block("This answer is going to be cut off somewhere in the middle, sorry.")]
)


def midstream_error(
    after_deltas: int | None = 2, reply: Reply | None = None, error_type: str = "overloaded_error"
) -> StreamFault:
    return StreamFault("error_event", after_deltas, reply, error_type=error_type)


def truncated_stream(after_deltas: int | None = None, reply: Reply | None = None) -> StreamFault:
    return StreamFault("truncate", after_deltas, reply)


def corrupt_chunk(after_deltas: int | None = 1, reply: Reply | None = None) -> StreamFault:
    return StreamFault("corrupt", after_deltas, reply)


def dropped_connection(after_deltas: int | None = 1, reply: Reply | None = None) -> StreamFault:
    return StreamFault("drop", after_deltas, reply)


# ---------------------------------------------------------------------------------------------
# Request validation (the 400s the real API gives)
# ---------------------------------------------------------------------------------------------


class _RejectedError(Exception):
    def __init__(self, error: ApiError) -> None:
        super().__init__(error.message)
        self.error = error


def _invalid(message: str, details: Mapping[str, Any] | None = None) -> _RejectedError:
    return _RejectedError(ApiError(400, "invalid_request_error", message, details=details))


@dataclass
class StoredFile:
    id: str
    data: bytes
    filename: str
    mime_type: str
    created_at: str
    deleted: bool = False

    def metadata(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "file",
            "filename": self.filename,
            "mime_type": self.mime_type,
            "size_bytes": len(self.data),
            "created_at": self.created_at,
            "downloadable": False,
            "expires_at": None,
        }


_SAMPLING_PARAMS = ("temperature", "top_p", "top_k")
_THINKING_TYPES = ("adaptive", "between_tools")
_IMAGE_MEDIA_TYPES = {
    "image/jpeg": "JPEG",
    "image/png": "PNG",
    "image/gif": "GIF",
    "image/webp": "WEBP",
}
_MAX_IMAGE_SIDE = 8000
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
_USER_BLOCKS = {"text", "image", "document", "tool_result", "search_result", "container_upload"}
_ASSISTANT_BLOCKS = {
    "text",
    "thinking",
    "redacted_thinking",
    "tool_use",
    "server_tool_use",
    "web_search_tool_result",
    "web_fetch_tool_result",
    "code_execution_tool_result",
}


def _image_size(source: Any, files: Mapping[str, StoredFile], where: str) -> tuple[int, int] | None:
    """Validate an image source like the API does; return (width, height) when known."""
    if not isinstance(source, dict):
        raise _invalid(f"{where}.source: Field required")
    kind = source.get("type")
    if kind == "url":
        return None
    if kind == "file":
        stored = files.get(str(source.get("file_id")))
        if stored is None or stored.deleted:
            raise _invalid(f"{where}.source.file_id: File not found: {source.get('file_id')}")
        return _decode_image(stored.data, None, where)
    if kind == "base64":
        media_type = source.get("media_type")
        if media_type not in _IMAGE_MEDIA_TYPES:
            raise _invalid(
                f"{where}.source.media_type: Input should be 'image/jpeg', 'image/png', "
                "'image/gif' or 'image/webp'"
            )
        try:
            data = base64.b64decode(str(source.get("data", "")), validate=True)
        except (binascii.Error, ValueError):
            raise _invalid(f"{where}.source.data: invalid base64 data") from None
        return _decode_image(data, media_type, where)
    raise _invalid(
        f"{where}.source.type: Input tag '{kind}' does not match any of the expected tags"
    )


def _decode_image(data: bytes, media_type: str | None, where: str) -> tuple[int, int]:
    try:
        with Image.open(io.BytesIO(data)) as image:
            fmt, size = image.format, image.size
    except (UnidentifiedImageError, OSError, ValueError):
        raise _invalid(f"{where}: Could not process image") from None
    if media_type is not None and _IMAGE_MEDIA_TYPES[media_type] != fmt:
        raise _invalid(f"{where}: Image does not match the provided media type {media_type}")
    if fmt not in _IMAGE_MEDIA_TYPES.values():
        raise _invalid(f"{where}: Could not process image")
    if max(size) > _MAX_IMAGE_SIDE:
        raise _invalid(
            f"{where}: image dimensions exceed max allowed size: {_MAX_IMAGE_SIDE} pixels",
            details={
                "error_code": "image_dimensions_too_large",
                "max_side_length_pixels": _MAX_IMAGE_SIDE,
                "paths": [where],
            },
        )
    return size


def _content_blocks(message: Mapping[str, Any]) -> list[Any]:
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return list(content) if isinstance(content, list) else []


def _tool_use_ids(message: Mapping[str, Any]) -> list[str]:
    return [
        str(b.get("id"))
        for b in _content_blocks(message)
        if isinstance(b, dict) and b.get("type") == "tool_use"
    ]


def _leading_tool_result_ids(message: Mapping[str, Any]) -> list[str]:
    ids = []
    for block in _content_blocks(message):
        if not (isinstance(block, dict) and block.get("type") == "tool_result"):
            break
        ids.append(str(block.get("tool_use_id")))
    return ids


def _check_block(block: Any, role: str, files: Mapping[str, StoredFile], where: str) -> None:
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        raise _invalid(f"{where}.type: Field required")
    kind = block["type"]
    allowed = _USER_BLOCKS if role == "user" else _ASSISTANT_BLOCKS
    if kind not in allowed:
        raise _invalid(f"{where}: content block type '{kind}' is not allowed in a {role} message")
    if kind == "text" and not (isinstance(block.get("text"), str) and block["text"].strip()):
        raise _invalid("messages: text content blocks must contain non-whitespace text")
    if kind == "image":
        _image_size(block.get("source"), files, where)
    if kind == "document":
        _check_document(block, files, where)
    if kind in _SERVER_RESULT_BLOCKS or kind == "server_tool_use":
        _check_server_block(block, where)
    if kind == "text" and block.get("citations") is not None:
        _check_citations(block["citations"], where)
    if kind == "tool_use" and not (
        isinstance(block.get("id"), str)
        and isinstance(block.get("name"), str)
        and isinstance(block.get("input"), dict)
    ):
        raise _invalid(f"{where}: tool_use blocks need string `id`, `name` and an object `input`")
    if kind == "thinking" and not (
        isinstance(block.get("thinking"), str) and block.get("signature")
    ):
        raise _invalid(f"{where}.signature: Field required")
    if kind == "tool_result":
        _check_tool_result(block, files, where)


_SERVER_RESULT_BLOCKS = {"web_search_tool_result", "web_fetch_tool_result"}
_SERVER_TOOL_NAMES = {"web_search", "web_fetch", "code_execution"}
_DOCUMENT_KEYS = {"type", "source", "title", "context", "citations", "cache_control"}
_PDF_TOKENS_PER_PAGE = 1500
_PAGE_OBJECT = re.compile(rb"/Type\s*/Page(?![a-zA-Z])")
_MAX_PDF_PAGES = 100

# Opaque tokens the fake issued (encrypted_content, encrypted_index); one that comes back
# changed or invented is refused, as the API does. Filled per server by FakeAnthropic.
_issued: ContextVar[set[str] | None] = ContextVar("_issued", default=None)


def _pdf_pages(data: bytes, where: str) -> int:
    if not data.startswith(b"%PDF-"):
        raise _invalid(f"{where}.source: The PDF specified was not valid.")
    if b"/Encrypt" in data:
        raise _invalid(f"{where}.source: The PDF specified is password protected.")
    pages = len(_PAGE_OBJECT.findall(data))
    if pages == 0:
        raise _invalid(f"{where}.source: The PDF specified was not valid.")
    if pages > _MAX_PDF_PAGES:
        raise _invalid(f"{where}: A maximum of {_MAX_PDF_PAGES} PDF pages may be provided.")
    return pages


def _check_document(block: Mapping[str, Any], files: Mapping[str, StoredFile], where: str) -> int:
    """Validate a document block like the API; return its input tokens."""
    extra = set(block) - _DOCUMENT_KEYS
    if extra:
        raise _invalid(f"{where}.{sorted(extra)[0]}: Extra inputs are not permitted")
    for name in ("title", "context"):
        if block.get(name) is not None and not isinstance(block[name], str):
            raise _invalid(f"{where}.{name}: Input should be a valid string")
    citations = block.get("citations")
    if citations is not None and not (
        isinstance(citations, dict) and isinstance(citations.get("enabled"), bool)
    ):
        raise _invalid(f"{where}.citations.enabled: Input should be a valid boolean")
    source = block.get("source")
    if not isinstance(source, dict):
        raise _invalid(f"{where}.source: Field required")
    kind = source.get("type")
    if kind == "base64":
        if source.get("media_type") != "application/pdf":
            raise _invalid(f"{where}.source.base64.media_type: Input should be 'application/pdf'")
        try:
            data = base64.b64decode(str(source.get("data", "")), validate=True)
        except (binascii.Error, ValueError):
            raise _invalid(f"{where}.source.base64.data: invalid base64 data") from None
        return _pdf_pages(data, where) * _PDF_TOKENS_PER_PAGE
    if kind == "text":
        if source.get("media_type") != "text/plain":
            raise _invalid(f"{where}.source.text.media_type: Input should be 'text/plain'")
        data = source.get("data")
        if not isinstance(data, str) or not data.strip():
            raise _invalid(f"{where}.source.text.data: text must be non-empty")
        return _text_tokens(data)
    if kind == "file":
        stored = files.get(str(source.get("file_id")))
        if stored is None or stored.deleted:
            raise _invalid(f"{where}.source.file_id: File not found: {source.get('file_id')}")
        if stored.mime_type == "application/pdf":
            return _pdf_pages(stored.data, where) * _PDF_TOKENS_PER_PAGE
        if stored.mime_type == "text/plain":
            return _text_tokens(stored.data.decode("utf-8", "replace"))
        raise _invalid(
            f"{where}.source.file_id: File type {stored.mime_type} is not supported as a "
            "document; use application/pdf or text/plain"
        )
    if kind == "url":
        if not isinstance(source.get("url"), str):
            raise _invalid(f"{where}.source.url.url: Field required")
        return _PDF_TOKENS_PER_PAGE
    if kind == "content":
        content = source.get("content")
        if not isinstance(content, list | str) or not content:
            raise _invalid(f"{where}.source.content.content: Field required")
        return _text_tokens(_canonical(content))
    raise _invalid(
        f"{where}.source: Input tag '{kind}' found using 'type' does not match any of the "
        "expected tags: 'base64', 'content', 'file', 'text', 'url'"
    )


def _check_issued(token: Any, where: str) -> None:
    issued = _issued.get()
    if issued is not None and token not in issued:
        raise _invalid(
            f"{where}: Invalid encrypted content; pass server tool blocks back unchanged"
        )


def _check_server_block(block: Mapping[str, Any], where: str) -> None:
    kind = block["type"]
    if kind == "server_tool_use":
        if not (
            isinstance(block.get("id"), str)
            and block["id"].startswith("srvtoolu_")
            and block.get("name") in _SERVER_TOOL_NAMES
            and isinstance(block.get("input"), dict)
        ):
            raise _invalid(
                f"{where}: server_tool_use blocks need `id`, a server tool `name`, `input`"
            )
        return
    if not isinstance(block.get("tool_use_id"), str):
        raise _invalid(f"{where}.tool_use_id: Field required")
    content = block.get("content")
    if kind == "web_search_tool_result" and isinstance(content, list):
        for k, result in enumerate(content):
            if not (isinstance(result, dict) and result.get("type") == "web_search_result"):
                raise _invalid(f"{where}.content.{k}: Input should be a web_search_result")
            _check_issued(result.get("encrypted_content"), f"{where}.content.{k}.encrypted_content")
    elif not isinstance(content, dict):
        raise _invalid(f"{where}.content: Field required")


def _check_citations(citations: Any, where: str) -> None:
    if not isinstance(citations, list):
        raise _invalid(f"{where}.citations: Input should be a valid list")
    for k, citation in enumerate(citations):
        if isinstance(citation, dict) and citation.get("type") == "web_search_result_location":
            _check_issued(citation.get("encrypted_index"), f"{where}.citations.{k}.encrypted_index")


def _server_tool_pairing(message: Mapping[str, Any], i: int) -> None:
    """Every server tool result answers a server_tool_use earlier in the same message."""
    seen: set[str] = set()
    for j, block in enumerate(_content_blocks(message)):
        if not isinstance(block, dict):
            continue
        if block.get("type") == "server_tool_use":
            seen.add(str(block.get("id")))
        elif block.get("type") in _SERVER_RESULT_BLOCKS and block.get("tool_use_id") not in seen:
            raise _invalid(
                f"messages.{i}.content.{j}: `{block.get('type')}` block with no matching "
                "`server_tool_use` before it"
            )


def _check_tool_result(
    block: Mapping[str, Any], files: Mapping[str, StoredFile], where: str
) -> None:
    if not isinstance(block.get("tool_use_id"), str):
        raise _invalid(f"{where}.tool_use_id: Field required")
    content = block.get("content")
    if content is None or isinstance(content, str):
        return
    if not isinstance(content, list):
        raise _invalid(f"{where}.content: Input should be a valid list")
    for k, inner in enumerate(content):
        if not isinstance(inner, dict) or inner.get("type") not in ("text", "image", "document"):
            raise _invalid(f"{where}.content.{k}: tool_result content must be text/image/document")
        _check_block(inner, "user", files, f"{where}.content.{k}")


def _check_tool_pairing(messages: Sequence[Mapping[str, Any]]) -> None:
    for i, message in enumerate(messages):
        if message["role"] == "assistant":
            ids = _tool_use_ids(message)
            following = messages[i + 1] if i + 1 < len(messages) else {}
            answered = _leading_tool_result_ids(following)
            missing = [tid for tid in ids if tid not in answered]
            if missing:
                raise _invalid(
                    f"messages.{i}: `tool_use` ids were found without `tool_result` blocks "
                    f"immediately after: {', '.join(missing)}. Each `tool_use` block must have a "
                    "corresponding `tool_result` block in the next message."
                )
            continue
        previous_ids = _tool_use_ids(messages[i - 1]) if i > 0 else []
        for j, block in enumerate(_content_blocks(message)):
            is_result = isinstance(block, dict) and block.get("type") == "tool_result"
            if is_result and block.get("tool_use_id") not in previous_ids:
                raise _invalid(
                    f"messages.{i}.content.{j}: unexpected `tool_use_id` found in "
                    f"`tool_result` blocks: {block.get('tool_use_id')}. Each `tool_result` "
                    "block must have a corresponding `tool_use` block in the previous message."
                )


def _check_messages(messages: Any, files: Mapping[str, StoredFile]) -> None:
    if not isinstance(messages, list) or not messages:
        raise _invalid("messages: at least one message is required")
    previous_role = None
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise _invalid(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        role = message["role"]
        if i == 0 and role != "user":
            raise _invalid('messages: first message must use the "user" role')
        if role == previous_role:
            raise _invalid(
                'messages: roles must alternate between "user" and "assistant", '
                f'but found multiple "{role}" roles in a row'
            )
        previous_role = role
        content = message.get("content")
        if isinstance(content, str):
            if not content.strip():
                raise _invalid("messages: text content blocks must contain non-whitespace text")
        elif isinstance(content, list) and content:
            for j, block in enumerate(content):
                _check_block(block, role, files, f"messages.{i}.content.{j}")
        else:
            raise _invalid(f"messages.{i}.content: must be a string or a non-empty list of blocks")
    if messages[-1]["role"] != "user" and not _continues_server_turn(messages[-1]):
        raise _invalid(
            "This model does not support assistant message prefill. "
            "The conversation must end with a user message."
        )
    _check_tool_pairing(messages)
    for i, message in enumerate(messages):
        if message["role"] == "assistant":
            _server_tool_pairing(message, i)


def _continues_server_turn(message: Mapping[str, Any]) -> bool:
    """A trailing assistant message is a `pause_turn` continuation when it ends with server tool
    activity (the API then carries on); anything else is prefill, which is refused."""
    blocks = _content_blocks(message)
    last = blocks[-1] if blocks else None
    return isinstance(last, dict) and (
        last.get("type") == "server_tool_use" or last.get("type") in _SERVER_RESULT_BLOCKS
    )


_SERVER_TOOL_TYPES = {
    "web_search": ("web_search_20250305", "web_search_20260209", "web_search_20260318"),
    "web_fetch": (
        "web_fetch_20250910",
        "web_fetch_20260209",
        "web_fetch_20260309",
        "web_fetch_20260318",
    ),
}
_SERVER_TOOL_KEYS = {
    "type",
    "name",
    "max_uses",
    "allowed_domains",
    "blocked_domains",
    "user_location",
    "cache_control",
    "defer_loading",
    "strict",
    "allowed_callers",
}
_FETCH_KEYS = {"citations", "max_content_tokens", "use_cache", "url_sources"}


def _check_server_tool(tool: Mapping[str, Any], i: int) -> None:
    kind = tool.get("type")
    family = next((n for n, types in _SERVER_TOOL_TYPES.items() if kind in types), None)
    if family is None:
        raise _invalid(
            f"tools.{i}: Input tag '{kind}' found using 'type' does not match any of the "
            "expected tags"
        )
    if tool.get("name") != family:
        raise _invalid(f"tools.{i}.{kind}.name: Input should be '{family}'")
    allowed = _SERVER_TOOL_KEYS | (_FETCH_KEYS if family == "web_fetch" else set())
    extra = set(tool) - allowed
    if extra:
        raise _invalid(f"tools.{i}.{kind}.{sorted(extra)[0]}: Extra inputs are not permitted")
    max_uses = tool.get("max_uses")
    if max_uses is not None and (
        not isinstance(max_uses, int) or isinstance(max_uses, bool) or max_uses < 1
    ):
        raise _invalid(f"tools.{i}.{kind}.max_uses: Input should be greater than 0")
    if tool.get("allowed_domains") is not None and tool.get("blocked_domains") is not None:
        raise _invalid(f"tools.{i}: Cannot specify both allowed_domains and blocked_domains")


def _check_tools(tools: Any) -> None:
    if tools is None:
        return
    if not isinstance(tools, list):
        raise _invalid("tools: Input should be a valid list")
    names = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise _invalid(f"tools.{i}.name: Field required")
        if not _TOOL_NAME.match(tool["name"]):
            raise _invalid(
                f"tools.{i}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'"
            )
        is_custom = tool.get("type") in (None, "custom")
        if not is_custom:
            _check_server_tool(tool, i)
        schema = tool.get("input_schema")
        if is_custom and not (isinstance(schema, dict) and schema.get("type") == "object"):
            raise _invalid(f"tools.{i}.custom.input_schema: Input should be an object schema")
        names.append(tool["name"])
    if len(names) != len(set(names)):
        raise _invalid("tools: Tool names must be unique.")


def _check_system(system: Any) -> None:
    if system is None or isinstance(system, str):
        return
    blocks_ok = isinstance(system, list) and all(
        isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
        for b in system
    )
    if not blocks_ok:
        raise _invalid("system: Input should be a string or a list of text blocks")


def validate_messages_body(body: Any, files: Mapping[str, StoredFile]) -> None:
    """Raise `_RejectedError` with the API's 400 for anything the real Messages API refuses."""
    if not isinstance(body, dict):
        raise _invalid("Request body must be a JSON object")
    for name in _SAMPLING_PARAMS:
        if name in body:
            raise _invalid(f"{name}: sampling parameters are not supported for this model")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise _invalid("model: Field required")
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise _invalid("max_tokens: Input should be a positive integer")
    tool_choice = body.get("tool_choice")
    if isinstance(tool_choice, dict) and tool_choice.get("type") in ("any", "tool"):
        raise _invalid("tool_choice: forced tool use is not supported for this model")
    thinking = body.get("thinking")
    if thinking is not None and (
        not isinstance(thinking, dict) or thinking.get("type") not in _THINKING_TYPES
    ):
        raise _invalid("thinking.type: Input should be 'adaptive' or 'between_tools'")
    _check_system(body.get("system"))
    _check_tools(body.get("tools"))
    _check_messages(body.get("messages"), files)


# ---------------------------------------------------------------------------------------------
# Token accounting and the prompt-cache simulation
# ---------------------------------------------------------------------------------------------

_CACHE_LOOKBACK = 20
# How the API sizes an image before counting it (tokens = width x height / 750): Claude Opus 4.7
# and later models read images up to 2576 px on the long edge and about 4784 tokens; earlier
# models scale an image down to 1568 px on the long edge and about 1600 tokens.
_HIGH_RESOLUTION = (2576, 4784)
_STANDARD_RESOLUTION = (1568, 1600)
_MODEL_VERSION = re.compile(r"^claude-(?:[a-z]+-)?(\d+)-(\d+)")


def vision_limits(model: str) -> tuple[int, int]:
    """(long edge in px, tokens) an image is scaled down to fit for `model`."""
    found = _MODEL_VERSION.match(model)
    if found is None:
        return _STANDARD_RESOLUTION
    version = (int(found.group(1)), int(found.group(2)))
    return _HIGH_RESOLUTION if version >= (4, 7) else _STANDARD_RESOLUTION


def image_tokens(width: int, height: int, model: str) -> int:
    """The tokens an image of this size counts for `model`, after the API's own downscaling."""
    long_edge, most_tokens = vision_limits(model)
    scale = min(
        1.0, long_edge / max(width, height), math.sqrt(most_tokens * 750 / (width * height))
    )
    return min(most_tokens, math.ceil(width * scale * height * scale / 750))


def _canonical(value: Any) -> str:
    return canonical_text(value)


def _text_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


def _image_tokens(source: Any, files: Mapping[str, StoredFile], model: str) -> int:
    try:
        size = _image_size(source, files, "image")
    except _RejectedError:
        size = None
    if size is None:
        return vision_limits(model)[1]
    return image_tokens(size[0], size[1], model)


def _block_tokens(block: Any, files: Mapping[str, StoredFile], model: str) -> int:
    if isinstance(block, dict) and block.get("type") == "image":
        return _image_tokens(block.get("source"), files, model)
    if isinstance(block, dict) and block.get("type") == "document":
        try:
            return _check_document(block, files, "document")
        except _RejectedError:
            return _PDF_TOKENS_PER_PAGE
    if isinstance(block, dict) and isinstance(block.get("content"), list):
        rest = {k: v for k, v in block.items() if k != "content"}
        return _text_tokens(_canonical(rest)) + sum(
            _block_tokens(b, files, model) for b in block["content"]
        )
    return _text_tokens(_canonical(block))


@dataclass(frozen=True)
class _Segment:
    key: str  # canonical JSON without the cache_control marker
    tokens: int
    ttl: str | None  # "5m" / "1h" when this segment carries a cache breakpoint


def _segment(element: Any, tokens: int, extra: str = "") -> _Segment:
    marker = element.get("cache_control") if isinstance(element, dict) else None
    plain = {k: v for k, v in element.items() if k != "cache_control"}
    ttl = None
    if isinstance(marker, dict):
        ttl = "1h" if marker.get("ttl") == "1h" else "5m"
    return _Segment(extra + _canonical(plain), tokens, ttl)


_FLAT_KINDS = frozenset({"text", "thinking", "redacted_thinking"})


def _block_segment(
    block: dict[str, Any], files: Mapping[str, StoredFile], model: str, extra: str
) -> _Segment:
    items = flat_items(block)
    if items is None or block.get("type") not in _FLAT_KINDS:
        return _segment(block, _block_tokens(block, files, model), extra)
    return _flat_segment(items, extra)


@functools.lru_cache(maxsize=1 << 15)
def _flat_segment(items: tuple[tuple[str, str], ...], extra: str) -> _Segment:
    """The segment of a block whose values are all strings (text, thinking): no files, no cache
    marker, its tokens from its text. Remembered, as the conversation repeats it every request."""
    block = dict(items)
    return _segment(block, _block_tokens(block, {}, ""), extra)


def prompt_segments(body: Mapping[str, Any], files: Mapping[str, StoredFile]) -> list[_Segment]:
    """The cacheable prefix elements in the API's order: tools, then system, then messages."""
    segments = [
        _segment(tool, _text_tokens(_canonical(tool)))
        for tool in body.get("tools") or []
        if isinstance(tool, dict)
    ]
    model = str(body.get("model", ""))
    system = body.get("system")
    system_blocks = [{"type": "text", "text": system}] if isinstance(system, str) else system or []
    segments += [_segment(b, _block_tokens(b, files, model), "system:") for b in system_blocks]
    for message in body.get("messages") or []:
        role = str(message.get("role"))
        for block in _content_blocks(message):
            if isinstance(block, dict):
                segments.append(_block_segment(block, files, model, role + ":"))
    if isinstance(body.get("cache_control"), dict) and segments:
        last = segments[-1]
        ttl = "1h" if body["cache_control"].get("ttl") == "1h" else "5m"
        segments[-1] = _Segment(last.key, last.tokens, last.ttl or ttl)
    return segments


@dataclass(frozen=True)
class PromptUsage:
    input_tokens: int
    cache_read_input_tokens: int
    cache_creation_5m: int
    cache_creation_1h: int


class PromptCache:
    """Deterministic model of Anthropic prompt caching, keyed by hashes of prompt prefixes."""

    def __init__(self, min_tokens: int = 0) -> None:
        self.min_tokens = min_tokens
        self._prefixes: set[str] = set()

    def clear(self) -> None:
        self._prefixes.clear()

    def account(self, model: str, segments: Sequence[_Segment]) -> PromptUsage:
        """Split the prompt into read / written / uncached tokens and remember new prefixes."""
        hashes, totals = self._prefix_hashes(model, segments)
        breakpoints = [i for i, s in enumerate(segments) if s.ttl is not None]
        hit = self._longest_hit(hashes, breakpoints)
        read = totals[hit] if hit >= 0 else 0
        written_5m = written_1h = 0
        covered = hit
        for bp in breakpoints:
            if bp > covered:
                tokens = totals[bp] - (totals[covered] if covered >= 0 else 0)
                if segments[bp].ttl == "1h":
                    written_1h += tokens
                else:
                    written_5m += tokens
                covered = bp
        for bp in breakpoints:
            if totals[bp] >= self.min_tokens:
                self._prefixes.add(hashes[bp])
        cached_end = totals[covered] if covered >= 0 else 0
        total = totals[-1] if totals else 0
        return PromptUsage(total - cached_end, read, written_5m, written_1h)

    @staticmethod
    def _prefix_hashes(model: str, segments: Sequence[_Segment]) -> tuple[list[str], list[int]]:
        digest = hashlib.sha256(model.encode()).digest()
        hashes, totals, running = [], [], 0
        for seg in segments:
            digest = hashlib.sha256(digest + seg.key.encode()).digest()
            running += seg.tokens
            hashes.append(digest.hex())
            totals.append(running)
        return hashes, totals

    def _longest_hit(self, hashes: Sequence[str], breakpoints: Sequence[int]) -> int:
        best = -1
        for bp in breakpoints:
            for pos in range(bp, max(-1, bp - _CACHE_LOOKBACK), -1):
                if pos > best and hashes[pos] in self._prefixes:
                    best = pos
                    break
        return best


def output_tokens(content: Sequence[Block]) -> int:
    total = 0
    for block in content:
        kind = block.get("type")
        if kind == "text":
            total += _text_tokens(str(block.get("text", "")))
        elif kind == "tool_use":
            total += _text_tokens(str(block.get("name", "")) + _canonical(block.get("input", {})))
        elif kind == "thinking":
            total += _text_tokens(str(block.get("thinking", "")))
        else:
            total += _text_tokens(_canonical(block))
    return max(1, total)


def usage_dict(
    prompt: PromptUsage,
    output: int,
    override: Mapping[str, Any] | None,
    server_tools: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "input_tokens": prompt.input_tokens,
        "output_tokens": output,
        "cache_creation_input_tokens": prompt.cache_creation_5m + prompt.cache_creation_1h,
        "cache_read_input_tokens": prompt.cache_read_input_tokens,
        "cache_creation": {
            "ephemeral_5m_input_tokens": prompt.cache_creation_5m,
            "ephemeral_1h_input_tokens": prompt.cache_creation_1h,
        },
        "service_tier": "standard",
    }
    if server_tools is not None and any(server_tools.values()):
        usage["server_tool_use"] = {
            "web_search_requests": server_tools.get("web_search", 0),
            "web_fetch_requests": server_tools.get("web_fetch", 0),
        }
    usage.update(override or {})
    return usage


def server_tool_counts(content: Sequence[Block]) -> dict[str, int]:
    counts = {"web_search": 0, "web_fetch": 0}
    for block in content:
        if block.get("type") == "server_tool_use" and block.get("name") in counts:
            counts[str(block["name"])] += 1
    return counts


# ---------------------------------------------------------------------------------------------
# SSE encoding
# ---------------------------------------------------------------------------------------------

_TEXT_CHUNK = 12
_JSON_CHUNK = 10


def _chunks(text: str, size: int) -> list[str]:
    """Split into several deltas, like the API does (at least two for any text over one char)."""
    if len(text) > 1:
        size = min(size, math.ceil(len(text) / 2))
    return [text[i : i + size] for i in range(0, len(text), max(1, size))] or [""]


def _sse(event: Mapping[str, Any]) -> bytes:
    data = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
    return f"event: {event['type']}\ndata: {data}\n\n".encode()


def _block_start(block: Block) -> dict[str, Any]:
    kind = block["type"]
    if kind == "text":
        return {"type": "text", "text": ""}
    if kind in ("tool_use", "server_tool_use"):
        return {"type": kind, "id": block["id"], "name": block["name"], "input": {}}
    if kind == "text" and block.get("citations") is not None:
        return {"type": "text", "text": "", "citations": []}
    if kind == "thinking":
        return {"type": "thinking", "thinking": "", "signature": ""}
    return dict(block)


def _block_deltas(block: Block) -> Iterator[dict[str, Any]]:
    kind = block["type"]
    if kind == "text":
        for citation in block.get("citations") or []:
            yield {"type": "citations_delta", "citation": dict(citation)}
        for piece in _chunks(block["text"], _TEXT_CHUNK):
            yield {"type": "text_delta", "text": piece}
    elif kind in ("tool_use", "server_tool_use"):
        yield {"type": "input_json_delta", "partial_json": ""}
        raw = block.get(_CUT_JSON)
        if raw is None:
            raw = json.dumps(block["input"], ensure_ascii=False)
        for piece in _chunks(raw, _JSON_CHUNK):
            yield {"type": "input_json_delta", "partial_json": piece}
    elif kind == "thinking":
        for piece in _chunks(block["thinking"], _TEXT_CHUNK):
            yield {"type": "thinking_delta", "thinking": piece}
        yield {"type": "signature_delta", "signature": block["signature"]}


def _delta_tokens(delta: Mapping[str, Any]) -> int:
    text = delta.get("text") or delta.get("partial_json") or delta.get("thinking") or ""
    return math.ceil(len(text) / 4)


@dataclass(frozen=True)
class _Event:
    payload: dict[str, Any]
    tokens: int = 0  # output tokens this event represents, for pacing

    @property
    def is_delta(self) -> bool:
        return bool(self.payload["type"] == "content_block_delta")


def stream_events(message: Mapping[str, Any]) -> list[_Event]:
    """The full SSE sequence for a finished message, as the API streams it."""
    usage = message["usage"]
    start_usage = {k: v for k, v in usage.items() if k != "output_tokens"} | {"output_tokens": 1}
    shell = dict(message) | {"content": [], "stop_reason": None, "stop_sequence": None}
    shell["stop_details"] = None
    shell["usage"] = start_usage
    events = [_Event({"type": "message_start", "message": shell})]
    for index, block in enumerate(message["content"]):
        start = {
            "type": "content_block_start",
            "index": index,
            "content_block": _block_start(block),
        }
        events.append(_Event(start))
        if index == 0:
            events.append(_Event({"type": "ping"}))
        for delta in _block_deltas(block):
            payload = {"type": "content_block_delta", "index": index, "delta": delta}
            events.append(_Event(payload, _delta_tokens(delta)))
        events.append(_Event({"type": "content_block_stop", "index": index}))
    final_usage = {
        key: usage[key]
        for key in (
            "input_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
            "output_tokens",
            "server_tool_use",
        )
        if key in usage
    }
    delta = {
        "stop_reason": message["stop_reason"],
        "stop_sequence": None,
        "stop_details": message.get("stop_details"),
    }
    events.append(_Event({"type": "message_delta", "delta": delta, "usage": final_usage}))
    events.append(_Event({"type": "message_stop"}))
    return events


def _fault_cut(events: Sequence[_Event], after_deltas: int | None) -> int:
    """Index of the first event not sent before the fault."""
    if after_deltas is not None:
        seen = 0
        for i, event in enumerate(events):
            if seen >= after_deltas and event.is_delta:
                return i
            seen += event.is_delta
    return next(i for i, e in enumerate(events) if e.payload["type"] == "message_delta")


# ---------------------------------------------------------------------------------------------
# The fake server
# ---------------------------------------------------------------------------------------------


# The model ids the Messages API serves today (the SDK's Model literal, apis.md 1.9): any other
# id, a retired one included, is a 404 not_found_error as from the real API. claude-sonnet-4-5
# (-20250929) reached its end of life on 2026-11-30.
SERVED_MODELS = frozenset(
    {
        "claude-fable-5-2",
        "claude-mythos-5-2",
        "claude-haiku-5-5",
        "claude-sonnet-5-5",
        "claude-fable-5-1",
        "claude-opus-5-5",
        "claude-mythos-5-1",
        "claude-sonnet-5",
        "claude-fable-5",
        "claude-mythos-5",
        "claude-opus-5",
        "claude-opus-4-8",
        "claude-opus-4-7",
        "claude-mythos-preview",
        "claude-opus-4-6",
        "claude-sonnet-4-6",
        "claude-haiku-4-5",
        "claude-haiku-4-5-20251001",
        "claude-opus-4-5",
        "claude-opus-4-5-20251101",
    }
)


class FakeAnthropic(FakeServer[RecordedRequest]):
    """Fake `POST /v1/messages` (JSON and SSE) and `/v1/files` for the real AsyncAnthropic."""

    def __init__(
        self,
        *,
        ttft: float = 0.0,
        tokens_per_second: float | None = None,
        default: Reply | ApiError | StreamFault | Responder | None = None,
        api_key: str | None = None,
        models: Sequence[str] | None = None,
        cache_min_tokens: int = 0,
        thinking_readers: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        """`models`: the ids served (default SERVED_MODELS; any other is a 404).
        `thinking_readers` maps a model to the other models whose thinking blocks it may
        read (each model reads its own); blocks of any other model are dropped silently."""
        super().__init__(default=default)
        self.thinking_readers = {k: tuple(v) for k, v in (thinking_readers or {}).items()}
        self._thinking_checks: dict[int, ThinkingCheck] = {}
        self.ttft = ttft
        self.tokens_per_second = tokens_per_second
        self.api_key = api_key
        self.models = set(models if models is not None else SERVED_MODELS)
        self.cache = PromptCache(cache_min_tokens)
        self.files: dict[str, StoredFile] = {}
        self.issued_tokens: set[str] = set()
        self._upload_failures: deque[int] = deque()
        self._delete_failures: deque[int] = deque()

    def _add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages", self._on_messages)
        app.router.add_post("/v1/files", self._on_upload)
        app.router.add_get("/v1/files", self._on_list_files)
        app.router.add_get("/v1/files/{file_id}", self._on_file_metadata)
        app.router.add_get("/v1/files/{file_id}/content", self._on_file_content)
        app.router.add_delete("/v1/files/{file_id}", self._on_delete_file)

    # helpers for tests -----------------------------------------------------------------------

    def message_requests(self) -> list[dict[str, Any]]:
        """Bodies of all `/v1/messages` calls, in arrival order."""
        return [r.json for r in self.requests if r.path == "/v1/messages"]

    def sent_messages(self) -> list[dict[str, Any]]:
        """The messages the fake answered with (as sent: thinking blocks signed), in order."""
        return [r.response for r in self.requests if r.response is not None]

    def live_files(self) -> list[StoredFile]:
        return [f for f in self.files.values() if not f.deleted]

    def fail_uploads(self, times: int = 1, status: int = 500) -> None:
        """The next `times` uploads answer with an error of `status`."""
        self._upload_failures.extend([status] * times)

    def fail_deletes(self, times: int = 1, status: int = 500) -> None:
        self._delete_failures.extend([status] * times)

    def add_file(self, data: bytes, filename: str, mime_type: str) -> StoredFile:
        """Put a file in the store directly, as if it had been uploaded."""
        stored = StoredFile(random_id("file_011"), data, filename, mime_type, _now_rfc3339())
        self.files[stored.id] = stored
        return stored

    # request plumbing ------------------------------------------------------------------------

    def _gatekeep(self, request: web.Request) -> ApiError | None:
        key = request.headers.get("x-api-key") or ""
        auth = request.headers.get("authorization") or ""
        if not key and auth.lower().startswith("bearer "):
            key = auth[7:].strip()
        if not key or (self.api_key is not None and key != self.api_key):
            return ApiError(401, "authentication_error", "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return ApiError(400, "invalid_request_error", "anthropic-version: header is required")
        return None

    @staticmethod
    def _error(record: RecordedRequest, error: ApiError, outcome: str) -> web.Response:
        record.outcome = outcome
        request_id = random_id("req_011C", 20)
        return web.json_response(
            error.body(request_id), status=error.status, headers=error.response_headers(request_id)
        )

    # messages --------------------------------------------------------------------------------

    async def _on_messages(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()  # reading and parsing the body is the provider's time
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        record = self._new_record(request, raw, body, started)
        return await self._recorded(record, lambda: self._answer_messages(request, record))

    async def _answer_messages(
        self, request: web.Request, record: RecordedRequest
    ) -> web.StreamResponse:
        rejected = self._gatekeep(request)
        if rejected is not None:
            return self._error(record, rejected, "invalid")
        if record.json is None:
            return self._error(
                record, ApiError(400, message="There was an error parsing the body"), "invalid"
            )
        token = _issued.set(self.issued_tokens)
        try:
            validate_messages_body(record.json, self.files)
        except _RejectedError as exc:
            return self._error(record, exc.error, "invalid")
        finally:
            _issued.reset(token)
        body = record.json
        if body["model"] not in self.models:
            return self._error(record, ApiError(404, message=f"model: {body['model']}"), "invalid")
        betas = {b.strip() for b in request.headers.get("anthropic-beta", "").split(",")}
        try:
            check = check_thinking(body, betas, self.thinking_readers)
        except BindingError as exc:
            return self._error(record, ApiError(400, message=str(exc)), "invalid")
        self._thinking_checks[id(record)] = check
        try:
            reply = await self._next_reply(record)
            return await self._send_reply(request, record, reply)
        finally:
            del self._thinking_checks[id(record)]

    async def _send_reply(
        self, request: web.Request, record: RecordedRequest, reply: Any
    ) -> web.StreamResponse:
        if isinstance(reply, Hang):
            record.outcome = "hang"
            return await self._hang(request)
        if isinstance(reply, _Unscripted):
            self.unscripted_count += 1
            message = f"FakeAnthropic: no reply scripted for request #{len(self.requests)}"
            error = ApiError(500, "api_error", message, should_retry=False)
            return self._error(record, error, "unscripted")
        ttft = reply.ttft if isinstance(reply, Reply) and reply.ttft is not None else self.ttft
        if ttft > 0:
            await asyncio.sleep(ttft)
        if isinstance(reply, ApiError):
            return self._error(record, reply, "error")
        if isinstance(reply, StreamFault):
            return await self._send_fault(request, record, reply)
        if isinstance(reply, Reply):
            return await self._send_message(request, record, reply)
        error = ApiError(500, "api_error", f"FakeAnthropic: bad scripted reply {reply!r}")
        return self._error(record, error, "unscripted")

    def _build_message(self, record: RecordedRequest, reply: Reply) -> dict[str, Any]:
        """The message for `reply`: usage from the prompt the model was shown (thinking blocks
        the binding check dropped do not count), its thinking blocks signed."""
        body = record.json
        check = self._thinking_checks[id(record)]
        model = reply.model or str(body["model"])
        shown = {**body, "messages": check.messages}
        prompt = self.cache.account(model, prompt_segments(shown, self.files))
        content = sign_content(check, model, reply.content)
        self._remember_tokens(content)
        message = {
            "id": random_id("msg_01"),
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": reply.stop_reason,
            "stop_sequence": None,
            "stop_details": dict(reply.stop_details) if reply.stop_details else None,
            "usage": usage_dict(
                prompt, output_tokens(content), reply.usage, server_tool_counts(content)
            ),
        }
        if check.report:
            message["input_transformations"] = check.transformations
        record.response = message
        return message

    def _remember_tokens(self, content: Sequence[Block]) -> None:
        for block in content:
            results = block.get("content") if block.get("type") in _SERVER_RESULT_BLOCKS else None
            for result in results if isinstance(results, list) else []:
                self.issued_tokens.add(str(result.get("encrypted_content")))
            for citation in block.get("citations") or []:
                self.issued_tokens.add(str(citation.get("encrypted_index")))

    def _tps(self, reply: Reply) -> float | None:
        return (
            reply.tokens_per_second
            if reply.tokens_per_second is not None
            else self.tokens_per_second
        )

    async def _send_message(
        self, request: web.Request, record: RecordedRequest, reply: Reply
    ) -> web.StreamResponse:
        message = self._build_message(record, reply)
        tps = self._tps(reply)
        if not record.json.get("stream"):
            if tps:
                await asyncio.sleep(message["usage"]["output_tokens"] / tps)
            return web.json_response(message, headers={"request-id": random_id("req_011C", 20)})
        record.outcome = "stream"
        response = await self._open_stream(request)
        await self._write_events(response, stream_events(message), tps)
        await response.write_eof()
        return response

    @staticmethod
    async def _open_stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "request-id": random_id("req_011C", 20),
            }
        )
        await response.prepare(request)
        return response

    @staticmethod
    async def _write_events(
        response: web.StreamResponse, events: Sequence[_Event], tps: float | None
    ) -> None:
        if not tps:
            await response.write(b"".join(_sse(e.payload) for e in events))
            return
        loop = asyncio.get_running_loop()
        started, tokens = loop.time(), 0
        for event in events:
            tokens += event.tokens
            wait = started + tokens / tps - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            await response.write(_sse(event.payload))

    async def _send_fault(
        self, request: web.Request, record: RecordedRequest, fault: StreamFault
    ) -> web.StreamResponse:
        record.outcome = f"fault:{fault.kind}"
        reply = fault.reply or _DEFAULT_FAULT_REPLY
        message = self._build_message(record, reply)
        if not record.json.get("stream"):
            return await self._fault_without_stream(request, record, fault, message)
        events = stream_events(message)
        cut = _fault_cut(events, fault.after_deltas)
        response = await self._open_stream(request)
        await self._write_events(response, events[:cut], self._tps(reply))
        if fault.kind == "drop":
            return self._drop(request)
        if fault.kind == "error_event":
            error = ApiError(529, fault.error_type, fault.error_message)
            await response.write(_sse(error.body(random_id("req_011C", 20))))
        elif fault.kind == "corrupt":
            await response.write(b'event: content_block_delta\ndata: {"type": "content_blo\n\n')
        await response.write_eof()
        return response

    async def _fault_without_stream(
        self,
        request: web.Request,
        record: RecordedRequest,
        fault: StreamFault,
        message: Mapping[str, Any],
    ) -> web.StreamResponse:
        if fault.kind == "drop":
            return self._drop(request)
        if fault.kind == "error_event":
            return self._error(
                record, ApiError(529, fault.error_type, fault.error_message), record.outcome
            )
        text = json.dumps(message)
        if fault.kind == "corrupt":
            return web.Response(text=text[: len(text) // 2], content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = len(text.encode())
        await response.prepare(request)
        await response.write(text.encode()[: len(text) // 2])
        return self._drop(request)

    # files -----------------------------------------------------------------------------------

    async def _on_upload(self, request: web.Request) -> web.StreamResponse:
        record = self._new_record(request, b"", None)
        return await self._recorded(record, lambda: self._answer_upload(request, record))

    async def _answer_upload(self, request: web.Request, record: RecordedRequest) -> web.Response:
        rejected = self._gatekeep(request)
        if rejected is not None:
            return self._error(record, rejected, "invalid")
        if self._upload_failures:
            return self._error(record, ApiError(self._upload_failures.popleft()), "error")
        if not request.content_type.startswith("multipart/"):
            return self._error(record, ApiError(400, message="file: Field required"), "invalid")
        reader = await request.multipart()
        async for part in reader:
            if isinstance(part, BodyPartReader) and part.name == "file":
                data = await part.read()
                filename = part.filename or "upload"
                mime = part.headers.get("Content-Type", "application/octet-stream")
                stored = self.add_file(bytes(data), filename, mime)
                record.json = {"filename": filename, "mime_type": mime, "size_bytes": len(data)}
                return web.json_response(stored.metadata())
        return self._error(record, ApiError(400, message="file: Field required"), "invalid")

    def _live_file(self, request: web.Request) -> StoredFile | None:
        stored = self.files.get(request.match_info["file_id"])
        return None if stored is None or stored.deleted else stored

    def _file_not_found(self, request: web.Request, record: RecordedRequest) -> web.Response:
        message = f"File not found: {request.match_info['file_id']}"
        return self._error(record, ApiError(404, "not_found_error", message), "invalid")

    async def _on_file_metadata(self, request: web.Request) -> web.StreamResponse:
        record = self._new_record(request, b"", None)

        async def answer() -> web.Response:
            rejected = self._gatekeep(request)
            if rejected is not None:
                return self._error(record, rejected, "invalid")
            stored = self._live_file(request)
            if stored is None:
                return self._file_not_found(request, record)
            return web.json_response(stored.metadata())

        return await self._recorded(record, answer)

    async def _on_file_content(self, request: web.Request) -> web.StreamResponse:
        """Uploaded files have `downloadable: false`, so the API refuses their content."""
        record = self._new_record(request, b"", None)

        async def answer() -> web.Response:
            rejected = self._gatekeep(request)
            if rejected is not None:
                return self._error(record, rejected, "invalid")
            stored = self._live_file(request)
            if stored is None:
                return self._file_not_found(request, record)
            error = ApiError(
                400,
                message=f"File {stored.id} is not downloadable",
                details={"error_code": "file_not_downloadable"},
            )
            return self._error(record, error, "invalid")

        return await self._recorded(record, answer)

    async def _on_delete_file(self, request: web.Request) -> web.StreamResponse:
        record = self._new_record(request, b"", None)

        async def answer() -> web.Response:
            rejected = self._gatekeep(request)
            if rejected is not None:
                return self._error(record, rejected, "invalid")
            if self._delete_failures:
                return self._error(record, ApiError(self._delete_failures.popleft()), "error")
            stored = self._live_file(request)
            if stored is None:
                return self._file_not_found(request, record)
            stored.deleted = True
            return web.json_response({"id": stored.id, "type": "file_deleted"})

        return await self._recorded(record, answer)

    async def _on_list_files(self, request: web.Request) -> web.StreamResponse:
        record = self._new_record(request, b"", None)

        async def answer() -> web.Response:
            rejected = self._gatekeep(request)
            if rejected is not None:
                return self._error(record, rejected, "invalid")
            live = list(reversed(self.live_files()))
            limit = int(request.query.get("limit", "20"))
            offset = int(request.query.get("page", "page_0").removeprefix("page_"))
            page = live[offset : offset + limit]
            more = offset + limit < len(live)
            return web.json_response(
                {
                    "data": [f.metadata() for f in page],
                    "next_page": f"page_{offset + limit}" if more else None,
                }
            )

        return await self._recorded(record, answer)


def _now_rfc3339() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")
