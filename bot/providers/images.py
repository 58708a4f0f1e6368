"""What every image provider gateway offers the `generate_image` tool, whichever SDK is behind it:
one call that returns an image with the usage the provider reported, and the two failures the tool
explains (no image; no useful answer). Provider-neutral: no SDK is imported here."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import random
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import structlog

log = structlog.get_logger(__name__)

ImageProvider = Literal["google", "openai"]
MAX_BACKOFF_SECONDS = 8.0

# Why an answer has no image, in words the model can pass on to the person.
PROMPT_BLOCKED = "the image model's safety filter blocked this prompt"
IMAGE_BLOCKED = "the image model's safety filter blocked the generated image"
NO_IMAGE = "the image model answered without an image"


@dataclass(frozen=True, slots=True)
class ImageUsage:
    """What an image provider reported, split by the kinds it bills differently."""

    text_input_tokens: int = 0
    image_input_tokens: int = 0
    text_output_tokens: int = 0
    image_output_tokens: int = 0

    @property
    def input_tokens(self) -> int:
        return self.text_input_tokens + self.image_input_tokens

    @property
    def output_tokens(self) -> int:
        return self.text_output_tokens + self.image_output_tokens


@dataclass(frozen=True)
class ImageResult:
    """One generated image and what the provider reported for it. `usage` is None when the
    response reported no usage (it is then charged at the per-image price)."""

    data: bytes = field(repr=False)
    mime_type: str
    usage: ImageUsage | None
    model_version: str | None
    text: str | None
    attempts: int
    duration_ms: int
    images_in_response: int = 1

    @property
    def input_tokens(self) -> int:
        return self.usage.input_tokens if self.usage else 0

    @property
    def output_tokens(self) -> int:
        return self.usage.output_tokens if self.usage else 0

    @property
    def image_output_tokens(self) -> int:
        return self.usage.image_output_tokens if self.usage else 0


@dataclass(frozen=True)
class ImageRequest:
    """One image as the `generate_image` tool asks for it: the references as (bytes, MIME type)."""

    prompt: str
    aspect_ratio: str
    image_size: str
    references: Sequence[tuple[bytes, str]] = ()


class ImageAttempts(Protocol):
    """One provider's single attempt at one image (in the image worker process): the image, or
    ImageBlocked / ImageUnavailable. Retries, deadlines and the operator's log are the gateway's."""

    async def attempt(self, request: ImageRequest) -> ImageResult: ...

    async def aclose(self) -> None: ...


class ImageBlocked(Exception):
    """No image: a safety block, NO_IMAGE or a text-only answer. Nothing is charged for it."""

    def __init__(
        self, reason: str, user_reason: str, *, input_tokens: int = 0, output_tokens: int = 0
    ) -> None:
        super().__init__(f"{reason}: {user_reason}")
        self.reason = reason
        self.user_reason = user_reason
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens


class ImageUnavailable(Exception):
    """The provider did not answer usefully. `cost_unknown` is True when the request may have
    been processed (and billed by the provider) although no answer arrived.

    Kinds: busy | connection | timeout | bad_request | auth | model_gone (the provider does not
    serve the configured model: 404). `retry_after`: the wait the provider asked for, if any."""

    def __init__(
        self,
        kind: str,
        detail: str,
        *,
        status: int | None = None,
        cost_unknown: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail
        self.status = status
        self.cost_unknown = cost_unknown
        self.retry_after = retry_after
        self.attempts = 1


class ImageGateway(Protocol):
    """A provider of images for the `generate_image` tool."""

    @property
    def provider(self) -> ImageProvider: ...

    @property
    def model(self) -> str: ...

    @property
    def max_references(self) -> int: ...

    async def generate(
        self,
        prompt: str,
        *,
        aspect_ratio: str,
        image_size: str,
        references: Sequence[tuple[bytes, str]],
        deadline: float,
    ) -> ImageResult: ...

    async def aclose(self) -> None: ...


def retry_delay(
    exc: ImageUnavailable,
    attempt: int,
    deadline: float,
    *,
    attempts: int,
    initial_delay: float,
    retry_after: float | None = None,
) -> float | None:
    """How long to wait before trying again, or None to give up: only busy and connection
    failures whose cost is known, within `attempts` and before `deadline`."""
    if exc.cost_unknown or exc.kind not in {"busy", "connection"}:
        return None
    if attempt >= attempts:
        return None
    base = min(initial_delay * 2.0 ** (attempt - 1), MAX_BACKOFF_SECONDS)
    delay = base * (1 - 0.25 * random.random())
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_BACKOFF_SECONDS))
    if time.monotonic() + delay >= deadline:
        return None
    return round(delay, 3)


class AnswerTicket:
    """One image call's claim on the `AnswerGate`: held from the moment its answer starts to
    arrive until the caller has its image checked (or gives up)."""

    def __init__(self, slots: asyncio.Semaphore) -> None:
        self._slots = slots
        self.held = False

    async def hold(self) -> None:
        """Wait for a slot (nothing when this ticket already has one)."""
        if not self.held:
            await self._slots.acquire()
            self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self._slots.release()


class AnswerHolder(Protocol):
    """Whoever decides when an arriving image answer may be read."""

    async def hold(self) -> None: ...


_CURRENT_HOLDER: contextvars.ContextVar[AnswerHolder | None] = contextvars.ContextVar(
    "image_answer_holder", default=None
)


@contextlib.contextmanager
def answers_held_by(holder: AnswerHolder) -> Iterator[None]:
    """The image answers arriving inside this block wait for `holder`."""
    token = _CURRENT_HOLDER.set(holder)
    try:
        yield
    finally:
        _CURRENT_HOLDER.reset(token)


class AnswerGate:
    """At most `limit` image answers being read, parsed or checked at once, across the bot and
    its image worker. A 4K answer is about 37 MB of base64 JSON that the SDK holds several times
    over while parsing it (about 125 MB above the worker's idle size at its peak), then about
    130 MB in the bot while its pixels are checked; eight at once would need over a gigabyte.
    When an answer's headers arrive the worker asks, and the call waits here for a slot
    (`hold_current_answer`) before the body is read, so the bodies still waiting stay in the
    network buffers; the caller releases the slot once the image is checked. Generation itself
    (seconds to minutes at the provider) is not limited."""

    def __init__(self, limit: int = 1) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self._slots = asyncio.Semaphore(limit)

    @contextlib.asynccontextmanager
    async def admit(self) -> AsyncIterator[AnswerTicket]:
        """The ticket of the image calls made inside this block; released when it ends."""
        ticket = AnswerTicket(self._slots)
        try:
            with answers_held_by(ticket):
                yield ticket
        finally:
            ticket.release()


async def hold_current_answer() -> None:
    """Called by a provider's transport when a successful answer's headers arrive: waits for the
    caller's `AnswerGate` slot before the body is read (nothing outside `AnswerGate.admit`)."""
    holder = _CURRENT_HOLDER.get()
    if holder is not None:
        await holder.hold()
