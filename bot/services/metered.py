"""The one path every paid provider call takes.

`MeteredCalls.run` holds the worst case, runs the call, and returns its result with a
`PendingCharge`; a call that fails is recorded (one `api_calls` row) and its hold released before
the error goes on. `PendingCharge.capture` records the call and captures what it cost (writing
another row in the same transaction when asked); `PendingCharge.release` records it as failed
and charges nothing. `MeteredCalls.call` is both steps at once. Nothing else in the bot creates
`api_calls` rows, and the only other holds are Stars refunds' (kind 'refund'), made by the same
ledger operation (bot/services/ledger/holds.py); tests/unit/test_architecture.py checks both.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Generic, Protocol, TypeVar

from anthropic.types import Message

from bot.services.ledger import (
    Attach,
    CallRecord,
    CallStatus,
    Hold,
    Ledger,
    Provider,
    Purpose,
    Settlement,
)
from bot.services.pricing import TokenPrice, TokenUsage, token_cost_micros

T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)


@dataclass(frozen=True, slots=True)
class Meter:
    """Who pays for a call, what for, and the most it may cost the provider (before markup)."""

    user_id: int
    provider: Provider
    model: str
    purpose: Purpose
    worst_case_micros: int
    key: str  # the hold's idempotency key
    tool_use_id: str | None = None
    image_size: str | None = None


@dataclass(frozen=True, slots=True)
class Report:
    """What the provider reported for one call (or what is known of a failed one)."""

    status: CallStatus = "ok"
    provider_cost_micros: int = 0
    price_version: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    image_count: int = 0
    image_output_tokens: int = 0
    image_list_price_micros: int | None = None
    web_search_requests: int = 0
    web_fetch_requests: int = 0
    request_id: str | None = None
    duration_ms: int = 0
    error: str | None = None
    cost_unknown: bool = False
    charge_key: str | None = None  # the ledger key of the charge; the hold's key when None
    chargeable: bool = True  # False: recorded, never charged (an image the person stopped)


def stopped_report(provider_cost_micros: int = 0, price_version: str | None = None) -> Report:
    """A call abandoned at the person's /stop before it answered: 'cancelled', never charged;
    what the provider may still bill is unknown (or estimated as `provider_cost_micros`)."""
    return Report(
        status="cancelled",
        provider_cost_micros=provider_cost_micros,
        price_version=price_version,
        error="stopped by the person",
        cost_unknown=True,
        chargeable=False,
    )


class Measure(Protocol[T_contra]):
    """Reads a call's result, or its failure, as a Report."""

    def reported(self, result: T_contra) -> Report: ...

    def failed(self, exc: BaseException) -> Report: ...


# Told of every api_calls row the metered path writes (metrics count them; nothing changes).
Recorded = Callable[[CallRecord, Settlement], None]


@dataclass(frozen=True, slots=True)
class Metered(Generic[T]):
    value: T
    settlement: Settlement


@dataclass(frozen=True)
class PendingCharge:
    """A call that succeeded, held but not yet charged."""

    ledger: Ledger
    meter: Meter
    hold: Hold
    report: Report
    on_recorded: Recorded | None = None

    async def capture(self, attach: Attach | None = None) -> Settlement:
        """Record the call and charge what it cost; `attach` writes its row in the same
        transaction. Finishes even when the caller is cancelled."""
        return await self._settle(_record(self.meter, self.report), attach)

    async def release(self, error: str) -> Settlement:
        """Record the call as failed (what it reported is kept) and charge nothing."""
        failed = replace(self.report, status="error", error=error, charge_key=None)
        return await self._settle(_record(self.meter, failed), None)

    async def _settle(self, record: CallRecord, attach: Attach | None) -> Settlement:
        settle = self.ledger.settle(self.hold, record, attach=attach)
        settlement = await asyncio.shield(settle)
        if settlement.applied and self.on_recorded is not None:
            self.on_recorded(record, settlement)
        return settlement


class MeteredCalls:
    def __init__(self, ledger: Ledger, on_recorded: Recorded | None = None) -> None:
        self._ledger = ledger
        self._on_recorded = on_recorded

    @property
    def ledger(self) -> Ledger:
        return self._ledger

    def user_price(self, provider_cost_micros: int) -> int:
        return self._ledger.user_price(provider_cost_micros)

    async def run(
        self, meter: Meter, call: Callable[[], Awaitable[T]], measure: Measure[T]
    ) -> tuple[T, PendingCharge]:
        """Hold, call; a failure is recorded and released, then raised. Raises
        InsufficientBalance (nothing called) when the worst case is not available."""
        amount = self._ledger.user_price(meter.worst_case_micros)
        hold = await self._ledger.hold(
            meter.user_id, amount, key=meter.key, description=meter.purpose
        )
        started = time.monotonic()
        try:
            result = await call()
            report = _timed(measure.reported(result), started)
        except BaseException as exc:
            # A failure charges nothing, except a stream the person stopped ('cancelled'): what
            # it streamed so far is charged, under the key its Report names.
            failed = _timed(measure.failed(exc), started)
            key = failed.charge_key or f"failed:{meter.key}"
            record = _record(meter, replace(failed, charge_key=key))
            await PendingCharge(self._ledger, meter, hold, failed, self._on_recorded)._settle(
                record, None
            )
            raise
        return result, PendingCharge(self._ledger, meter, hold, report, self._on_recorded)

    async def call(
        self, meter: Meter, call: Callable[[], Awaitable[T]], measure: Measure[T]
    ) -> Metered[T]:
        """`run`, then capture at once."""
        value, pending = await self.run(meter, call, measure)
        return Metered(value, await pending.capture())


def claude_report(
    price: TokenPrice, message: Message, *, status: CallStatus = "ok", error: str | None = None
) -> Report:
    """A Claude message's usage, priced."""
    usage = message.usage
    tokens = TokenUsage(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_write_tokens=usage.cache_creation_input_tokens or 0,
        cache_read_tokens=usage.cache_read_input_tokens or 0,
    )
    return Report(
        status=status,
        provider_cost_micros=token_cost_micros(price, tokens),
        price_version=price.price_version,
        input_tokens=tokens.input_tokens,
        output_tokens=tokens.output_tokens,
        cache_read_tokens=tokens.cache_read_tokens,
        cache_write_tokens=tokens.cache_write_tokens,
        request_id=message.id,
        error=error,
    )


def _timed(report: Report, started: float) -> Report:
    if report.duration_ms:
        return report
    return replace(report, duration_ms=int((time.monotonic() - started) * 1000))


def _record(meter: Meter, report: Report) -> CallRecord:
    return CallRecord(
        user_id=meter.user_id,
        provider=meter.provider,
        model=meter.model,
        purpose=meter.purpose,
        status=report.status,
        provider_cost_micros=report.provider_cost_micros,
        price_version=report.price_version,
        tool_use_id=meter.tool_use_id,
        input_tokens=report.input_tokens,
        output_tokens=report.output_tokens,
        cache_write_tokens=report.cache_write_tokens,
        cache_read_tokens=report.cache_read_tokens,
        image_count=report.image_count,
        image_size=meter.image_size,
        image_output_tokens=report.image_output_tokens,
        image_list_price_micros=report.image_list_price_micros,
        web_search_requests=report.web_search_requests,
        web_fetch_requests=report.web_fetch_requests,
        error=report.error,
        provider_cost_unknown=report.cost_unknown,
        request_id=report.request_id,
        duration_ms=report.duration_ms,
        charge_key=report.charge_key,
        chargeable=report.chargeable,
    )
