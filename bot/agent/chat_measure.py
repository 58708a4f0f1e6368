"""How a chat call reads as a Report for the metered path: usage, server tools, a refusal,
a failure, or a stream the person stopped."""

from __future__ import annotations

import asyncio
import math
from dataclasses import replace

from bot.agent.web_tools import server_tool_use
from bot.providers.anthropic import ClaudeUnavailable, StreamedMessage
from bot.providers.anthropic_stream import StreamProgress
from bot.services.cancellation import StopToken
from bot.services.metered import Report, claude_report
from bot.services.pricing import TokenPrice, TokenUsage, token_cost_micros


class ChatMeasure:
    """A streamed chat message as a Report; a refusal is recorded as blocked (not charged), a
    message cut at max_tokens as truncated (charged), a stream the person stopped as cancelled
    (charged for its input and what it streamed)."""

    def __init__(
        self, price: TokenPrice, progress: StreamProgress, stop: StopToken | None = None
    ) -> None:
        self._price = price
        self._progress = progress
        self._stop = stop

    def reported(self, result: StreamedMessage) -> Report:
        message = result.message
        refused = message.stop_reason == "refusal"
        cut = message.stop_reason == "max_tokens"
        report = claude_report(
            self._price,
            message,
            status="blocked" if refused else "truncated" if cut else "ok",
            error="refusal" if refused else None,
        )
        web = server_tool_use(message)
        return replace(
            report,
            provider_cost_micros=report.provider_cost_micros + web.cost_micros,
            web_search_requests=web.web_search_requests,
            web_fetch_requests=web.web_fetch_requests,
            duration_ms=result.duration_ms,
            charge_key=f"llm:{message.id}",
        )

    def failed(self, exc: BaseException) -> Report:
        # (Only reads the token: the chat turn consumes the cancellation when it replies.)
        stopped = self._stop is not None and self._stop.requested
        if isinstance(exc, asyncio.CancelledError) and stopped:
            return self._cancelled()
        started_output = isinstance(exc, ClaudeUnavailable) and exc.response_started
        return Report(
            status="error",
            error=_failure_label(exc),
            cost_unknown=started_output or isinstance(exc, asyncio.CancelledError),
        )

    def _cancelled(self) -> Report:
        usage = _streamed_usage(self._progress)
        return Report(
            status="cancelled",
            provider_cost_micros=token_cost_micros(self._price, usage),
            price_version=self._price.price_version,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            error="stopped by the person",
            cost_unknown=not self._progress.started,
        )


def _streamed_usage(progress: StreamProgress) -> TokenUsage:
    """The provider's own count as far as it reported, else about 4 characters a token."""
    usage = progress.usage
    return TokenUsage(
        input_tokens=int(usage.get("input_tokens") or 0),
        output_tokens=max(
            int(usage.get("output_tokens") or 0), math.ceil(progress.output_chars / 4)
        ),
        cache_write_tokens=int(usage.get("cache_creation_input_tokens") or 0),
        cache_read_tokens=int(usage.get("cache_read_input_tokens") or 0),
    )


def _failure_label(exc: BaseException) -> str:
    if isinstance(exc, ClaudeUnavailable):
        return f"{exc.kind}: {exc.detail}"[:500]
    if isinstance(exc, asyncio.CancelledError):
        return "interrupted"
    return type(exc).__name__
