"""The agent loop: Claude streams, tools run, money is held before and settled after every call."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
from anthropic.types import Message

from bot.agent.context import estimate_tokens, system_blocks, with_cache_breakpoints
from bot.agent.tools.base import ToolContext
from bot.agent.tools.registry import ToolCallResult, ToolRegistry
from bot.agent.web_tools import (
    ServerToolUse,
    server_tool_params,
    server_tool_use,
    sources_markdown,
    worst_case_micros,
)
from bot.integrations.anthropic import ClaudeGateway, ClaudeUnavailable, StreamProgress
from bot.services.billing import BillingService, CallRecord, Hold
from bot.services.cancellation import StopToken
from bot.services.pricing import (
    PriceTable,
    TokenUsage,
    token_cost_micros,
    worst_case_token_cost_micros,
)

log = structlog.get_logger(__name__)


REQUEST_OVERHEAD_TOKENS = 1200


class TurnUI(Protocol):
    """What the person sees while the loop works (implemented by the Telegram layer)."""

    async def text_delta(self, text: str) -> None: ...

    async def end_message(self, *, cut: bool) -> None: ...

    async def tool_started(self, name: str, args: dict[str, Any]) -> None: ...

    async def progress(self, text: str) -> None: ...


class FileSink(Protocol):
    """Stores, records, delivers and settles the files a tool produced."""

    async def deliver(
        self, files: list[dict[str, Any]], ctx: ToolContext
    ) -> list[dict[str, Any]]: ...


Persist = Callable[[str, list[dict[str, Any]]], Awaitable[None]]


class TurnFailed(Exception):
    """The turn could not finish; `reason` is a short code for logs and the user reply."""

    def __init__(
        self, reason: str, *, detail: str = "", data: dict[str, Any] | None = None
    ) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.data = data or {}


class ToolGate(Protocol):
    """Asked before each tool call: None to run it, or why it is not run (the tool's error)."""

    async def check(self, name: str, args: dict[str, Any], ctx: ToolContext) -> str | None: ...


@dataclass
class TurnStats:
    iterations: int = 0
    tools: list[str] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    charged_micros: int = 0
    outcome: str = "answered"
    web: ServerToolUse = field(default_factory=ServerToolUse)  # server tool uses this turn


@dataclass(frozen=True)
class TurnRequest:
    user_id: int
    chat_id: int
    update_id: int
    history: list[dict[str, Any]]
    deadline: float
    history_tokens: int = 0  # estimate for `history`; computed when 0
    model: str | None = None  # the person's chosen chat model; None = the configured default
    stop: StopToken | None = None  # set by /stop; the turn's task is then cancelled
    message_thread_id: int | None = None  # a group's forum topic


@dataclass(frozen=True)
class LoopConfig:
    model: str
    max_tokens: int
    max_iterations: int
    web_tools: bool = False


class AgentLoop:
    def __init__(
        self,
        *,
        claude: ClaudeGateway,
        registry: ToolRegistry,
        billing: BillingService,
        prices: PriceTable,
        files: FileSink | None,
        config: LoopConfig,
        gate: ToolGate | None = None,
    ) -> None:
        self._gate = gate
        self._claude = claude
        self._registry = registry
        self._billing = billing
        self._prices = prices
        self._files = files
        self._config = config
        self._fixed_tokens = (
            estimate_tokens([*server_tool_params(config.web_tools), *registry.params()])
            + estimate_tokens(system_blocks())
            + REQUEST_OVERHEAD_TOKENS
        )

    async def run(self, request: TurnRequest, ui: TurnUI, persist: Persist) -> TurnStats:
        """Run one turn on `request.history` (which ends with the new user message)."""
        stats = TurnStats()
        messages = request.history
        context_tokens = request.history_tokens or estimate_tokens(messages)
        for iteration in range(1, self._config.max_iterations + 1):
            stats.iterations = iteration
            message, settle = await self._call_claude(
                request, messages, context_tokens, ui, stats, iteration
            )
            refused = message.stop_reason == "refusal"
            assistant_content = _content_to_store(message, drop_tool_calls=refused)
            sources = sources_markdown(message)
            if sources:
                await ui.text_delta(sources)
            # The answer goes out while the call is charged and the message is stored.
            await _all(
                settle,
                ui.end_message(cut=message.stop_reason == "max_tokens"),
                persist("assistant", assistant_content) if assistant_content else None,
            )
            if assistant_content:
                if messages and messages[-1]["role"] == "assistant":  # after a pause_turn
                    previous = list(messages[-1]["content"])
                    messages[-1] = {"role": "assistant", "content": previous + assistant_content}
                else:
                    messages.append({"role": "assistant", "content": assistant_content})
                context_tokens += estimate_tokens(assistant_content)
            if refused:
                stats.outcome = "refused"
                return stats
            if message.stop_reason == "pause_turn":
                continue  # a long server-tool turn: resend with the partial answer to go on
            if message.stop_reason != "tool_use":
                stats.outcome = "cut" if message.stop_reason == "max_tokens" else "answered"
                return stats
            results = await self._run_tools(message, request, ui, stats)
            await persist("user", results)
            messages.append({"role": "user", "content": results})
            context_tokens += estimate_tokens(results)
        stats.outcome = "max_iterations"
        return stats

    async def _call_claude(
        self,
        request: TurnRequest,
        messages: list[dict[str, Any]],
        context_tokens: int,
        ui: TurnUI,
        stats: TurnStats,
        iteration: int,
    ) -> tuple[Message, asyncio.Future[None]]:
        """Stream one message, holding before; returns it with its settlement under way.

        Failures are settled here. A success is settled while the caller sends the answer: the
        hold already covers the call, so the order changes nothing owed.
        """
        params = with_cache_breakpoints([dict(m) for m in messages])
        hold = await self._hold_for_call(request, context_tokens, iteration, stats.web)
        # Server tools first: the last custom tool carries the cache breakpoint.
        tools: list[Any] = [
            *server_tool_params(self._config.web_tools, stats.web),
            *self._registry.params(),
        ]
        started = time.monotonic()
        progress = StreamProgress()
        try:
            streamed = await self._claude.stream_message(
                model=request.model or self._config.model,
                max_tokens=self._config.max_tokens,
                system=system_blocks(),
                tools=tools,
                messages=params,
                on_text=ui.text_delta,
                deadline=request.deadline,
                progress=progress,
            )
        except ClaudeUnavailable as exc:
            await self._settle_failure(hold, request, exc, started)
            raise TurnFailed(f"claude_{exc.kind}", detail=exc.detail) from None
        except asyncio.CancelledError as exc:
            if request.stop is not None and request.stop.requested:
                await self._settle_cancelled(hold, request, progress, started, stats)
            else:
                await self._settle_failure(hold, request, exc, started)
            raise
        except BaseException as exc:
            await self._settle_failure(hold, request, exc, started)
            raise
        message = streamed.message
        settle = self._settle_success(hold, request, message, streamed.duration_ms, stats)
        return message, asyncio.ensure_future(settle)

    async def _hold_for_call(
        self, request: TurnRequest, context_tokens: int, iteration: int, web: ServerToolUse
    ) -> Hold:
        """Hold the worst case: a generous input estimate plus max_tokens of output."""
        price = self._prices.token_price(request.model or self._config.model)
        estimate = context_tokens + self._fixed_tokens
        amount = self._billing.user_price(
            worst_case_token_cost_micros(price, estimate, self._config.max_tokens)
            + worst_case_micros(self._config.web_tools, web)
        )
        key = f"hold:llm:{request.update_id}:{iteration}"
        return await self._billing.hold(request.user_id, amount, key=key, description="chat")

    async def _settle_success(
        self, hold: Hold, request: TurnRequest, message: Message, duration_ms: int, stats: TurnStats
    ) -> None:
        usage = _usage(message)
        price = self._prices.token_price(request.model or self._config.model)
        web = server_tool_use(message)
        cost = token_cost_micros(price, usage) + web.cost_micros
        refused = message.stop_reason == "refusal"
        record = CallRecord(
            user_id=request.user_id,
            provider="anthropic",
            model=request.model or self._config.model,
            purpose="chat",
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            web_search_requests=web.web_search_requests,
            web_fetch_requests=web.web_fetch_requests,
            provider_cost_micros=cost,
            price_version=price.price_version,
            status="blocked" if refused else "ok",
            error="refusal" if refused else None,
            request_id=message.id,
            duration_ms=duration_ms,
            charge_key=f"llm:{message.id}",
        )
        settlement = await asyncio.shield(self._billing.settle(hold, record))
        stats.input_tokens += usage.input_tokens
        stats.output_tokens += usage.output_tokens
        stats.cache_read_tokens += usage.cache_read_tokens
        stats.cache_write_tokens += usage.cache_write_tokens
        stats.charged_micros += settlement.charged_micros
        stats.web = ServerToolUse(
            stats.web.web_search_requests + web.web_search_requests,
            stats.web.web_fetch_requests + web.web_fetch_requests,
        )

    async def _settle_failure(
        self, hold: Hold, request: TurnRequest, exc: BaseException, started: float
    ) -> None:
        started_output = isinstance(exc, ClaudeUnavailable) and exc.response_started
        record = CallRecord(
            user_id=request.user_id,
            provider="anthropic",
            model=request.model or self._config.model,
            purpose="chat",
            status="error",
            error=_failure_label(exc),
            provider_cost_unknown=started_output or isinstance(exc, asyncio.CancelledError),
            duration_ms=int((time.monotonic() - started) * 1000),
            charge_key=f"llm:failed:{hold.key}",
        )
        await asyncio.shield(self._billing.settle(hold, record))

    async def _settle_cancelled(
        self,
        hold: Hold,
        request: TurnRequest,
        progress: StreamProgress,
        started: float,
        stats: TurnStats,
    ) -> None:
        """A stream the person stopped: charge the input and the output streamed so far."""
        model = request.model or self._config.model
        price = self._prices.token_price(model)
        usage = _streamed_usage(progress)
        record = CallRecord(
            user_id=request.user_id,
            provider="anthropic",
            model=model,
            purpose="chat",
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            provider_cost_micros=token_cost_micros(price, usage),
            price_version=price.price_version,
            status="cancelled",
            error="stopped by the person",
            provider_cost_unknown=not progress.started,
            duration_ms=int((time.monotonic() - started) * 1000),
            charge_key=f"llm:cancelled:{hold.key}",
        )
        settlement = await asyncio.shield(self._billing.settle(hold, record))
        stats.input_tokens += usage.input_tokens
        stats.output_tokens += usage.output_tokens
        stats.charged_micros += settlement.charged_micros

    async def _run_tools(
        self, message: Message, request: TurnRequest, ui: TurnUI, stats: TurnStats
    ) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        for block in message.content:
            if block.type != "tool_use":
                continue
            stats.tools.append(block.name)
            args = block.input if isinstance(block.input, dict) else {}
            await ui.tool_started(block.name, args)
            ctx = ToolContext(
                user_id=request.user_id,
                chat_id=request.chat_id,
                update_id=request.update_id,
                tool_use_id=block.id,
                deadline=request.deadline,
                report_progress=ui.progress,
                message_thread_id=request.message_thread_id,
            )
            declined = await self._gate.check(block.name, args, ctx) if self._gate else None
            if declined is not None:  # not run, so nothing is charged for it
                results.append(
                    _tool_result_block(
                        block.id, ToolCallResult(payload={"error": declined}, is_error=True)
                    )
                )
                continue
            outcome = await self._registry.execute(block.name, block.input, ctx)
            if outcome.file_contents:
                outcome = await self._deliver_files(outcome, ctx)
            results.append(_tool_result_block(block.id, outcome))
        return results

    async def _deliver_files(self, outcome: ToolCallResult, ctx: ToolContext) -> ToolCallResult:
        if self._files is None:
            log.error("file_sink_missing", tool_use_id=ctx.tool_use_id)
            return ToolCallResult(payload={"error": "internal error"}, is_error=True)
        delivered = await self._files.deliver(outcome.file_contents, ctx)
        payload = dict(outcome.payload)
        payload["delivered_files"] = delivered
        if not any(item.get("delivered") for item in delivered):
            payload["success"] = False
            return ToolCallResult(payload=payload, is_error=True)
        return ToolCallResult(payload=payload, is_error=False)


async def _all(*steps: Awaitable[None] | None) -> None:
    """Run the steps concurrently; every step finishes, then the first failure is raised."""
    results = await asyncio.gather(*(s for s in steps if s is not None), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


def _content_to_store(message: Message, *, drop_tool_calls: bool) -> list[dict[str, Any]]:
    """Content blocks as the API takes them back (thinking blocks unchanged, no null fields)."""
    blocks = []
    for block in message.content:
        if drop_tool_calls and block.type == "tool_use":
            continue
        if block.type == "text" and not block.text.strip():
            continue  # the API refuses empty text blocks in a later request
        blocks.append({k: v for k, v in block.to_dict().items() if v is not None})
    return blocks


def _tool_result_block(tool_use_id: str, outcome: ToolCallResult) -> dict[str, Any]:
    if outcome.is_error and "delivered_files" not in outcome.payload:
        text = outcome.as_text()
    else:
        text = json.dumps(outcome.payload, ensure_ascii=False, separators=(",", ":"))
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_use_id, "content": text}
    if outcome.is_error:
        block["is_error"] = True
    return block


def _usage(message: Message) -> TokenUsage:
    usage = message.usage
    return TokenUsage(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_write_tokens=usage.cache_creation_input_tokens or 0,
        cache_read_tokens=usage.cache_read_input_tokens or 0,
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
