"""The image gateway the `generate_image` tool uses, whichever provider is configured: the
provider's attempts run in the image worker process (`image_worker`); here are the retries
(429/5xx and failed connects, with backoff, inside the turn's deadline), the shared limit on
provider calls in flight, and the operator's one log line when the model is gone."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from bot.providers.image_worker import ImageWorker
from bot.providers.images import (
    ImageProvider,
    ImageRequest,
    ImageResult,
    ImageUnavailable,
    retry_delay,
)
from bot.providers.model_gone import ModelGoneReporter

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int
    initial_delay: float


class WorkerImageGateway:
    """One provider's images through the image worker; `aclose` stops the worker."""

    def __init__(
        self,
        worker: ImageWorker,
        *,
        provider: ImageProvider,
        model: str,
        max_references: int,
        retries: RetryPolicy,
        concurrency: asyncio.Semaphore | None = None,
    ) -> None:
        self._worker = worker
        self._provider: ImageProvider = provider
        self._model = model
        self._max_references = max_references
        self._retries = retries
        self._gone = ModelGoneReporter(
            provider,
            model,
            event="image_model_unavailable",
            fix="set IMAGE_MODEL to a model the provider serves (and price it in PRICES_FILE)",
        )
        # One of the shared provider-call slots, held for the length of one attempt.
        self._slot: contextlib.AbstractAsyncContextManager[Any] = (
            concurrency if concurrency is not None else contextlib.nullcontext()
        )

    @property
    def provider(self) -> ImageProvider:
        return self._provider

    @property
    def model(self) -> str:
        return self._model

    @property
    def max_references(self) -> int:
        return self._max_references

    @property
    def worker_pid(self) -> int | None:
        return self._worker.pid

    async def aclose(self) -> None:
        await self._worker.aclose()

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
        if len(references) > self._max_references:
            raise ImageUnavailable(
                "bad_request", f"at most {self._max_references} reference images"
            )
        request = ImageRequest(prompt, aspect_ratio, image_size, references)
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                result = await self._attempt(request, deadline)
            except ImageUnavailable as exc:
                exc.attempts = attempt
                await self._pause_before_retry(exc, attempt, deadline)
                continue
            self._gone.served()
            duration_ms = int((time.monotonic() - started) * 1000)
            return dataclasses.replace(result, attempts=attempt, duration_ms=duration_ms)

    async def _attempt(self, request: ImageRequest, deadline: float) -> ImageResult:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ImageUnavailable("timeout", "no time left in this turn")
        async with self._slot:
            return await self._worker.attempt(request, remaining)

    async def _pause_before_retry(
        self, exc: ImageUnavailable, attempt: int, deadline: float
    ) -> None:
        """Waits before the next attempt, or raises `exc` when there is none."""
        if exc.kind == "model_gone":
            self._gone.gone(exc.detail)
        delay = retry_delay(
            exc,
            attempt,
            deadline,
            attempts=self._retries.attempts,
            initial_delay=self._retries.initial_delay,
            retry_after=exc.retry_after,
        )
        if delay is None:
            raise exc
        log.warning(
            "image_retry",
            provider=self._provider,
            attempt=attempt,
            kind=exc.kind,
            status=exc.status,
            delay=delay,
        )
        await asyncio.sleep(delay)
