"""The agent loop: Claude streams and tools run; every call goes through the metered path."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
from anthropic.types import Message

from bot.agent.chat_measure import ChatMeasure
from bot.agent.context import system_blocks, with_cache_breakpoints
from bot.agent.tools.base import ToolContext
from bot.agent.tools.registry import ToolCallResult, ToolRegistry
from bot.agent.web_tools import (
    ServerToolUse,
    server_tool_params,
    sources_markdown,
    worst_case_micros,
)
from bot.providers.anthropic import ClaudeGateway, ClaudeUnavailable, StreamedMessage
from bot.providers.anthropic_stream import StreamProgress
from bot.services.cancellation import StopToken
from bot.services.delivery import ProducedFile, Recipient
from bot.services.metered import Meter, MeteredCalls, PendingCharge
from bot.services.money import format_usd
from bot.services.pricing import PriceTable, worst_case_token_cost_micros
from bot.services.tokens import estimate_tokens

log = structlog.get_logger(__name__)


REQUEST_OVERHEAD_TOKENS = 1200
# The hold's input estimate, raised once more: a call that reports more than its hold is rare.
INPUT_ESTIMATE_MARGIN_PERCENT = 125


class TurnUI(Protocol):
    """What the person sees while the loop works (implemented by the Telegram layer)."""

    async def text_delta(self, text: str) -> None: ...

    async def end_message(self, *, cut: bool) -> None: ...

    async def tool_started(self, name: str, args: dict[str, Any]) -> None: ...

    async def progress(self, text: str) -> None: ...

    def chat_action(self, action: str) -> None:
        """Show `action` (typing, upload_photo, ...) until text arrives."""
        ...


class FileSink(Protocol):
    """Stores, records, delivers and charges the files a tool produced."""

    async def deliver(
        self, produced: Sequence[ProducedFile], to: Recipient
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
    files_delivered: int = 0  # files the person received from tools this turn
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
    # Unique per turn: Telegram may reuse an update_id (after a week), a hold key must not repeat.
    turn_id: str = field(default_factory=lambda: uuid.uuid4().hex)


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
        metered: MeteredCalls,
        prices: PriceTable,
        files: FileSink | None,
        config: LoopConfig,
        gate: ToolGate | None = None,
    ) -> None:
        self._gate = gate
        self._claude = claude
        self._registry = registry
        self._metered = metered
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
            cut = message.stop_reason == "max_tokens"
            # A cut message's tool calls are not run, so they are not stored either (a tool_use
            # without its tool_result would break the next request).
            assistant_content = _content_to_store(message, drop_tool_calls=refused or cut)
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
        """Stream one message through the metered path; returns it with its charge under way.

        A failure is recorded and released by the metered path. A success is captured while the
        caller sends the answer: the hold already covers the call, so the order changes nothing
        owed.
        """
        params = with_cache_breakpoints([dict(m) for m in messages])
        model = request.model or self._config.model
        # Server tools first: the last custom tool carries the cache breakpoint.
        tools: list[Any] = [
            *server_tool_params(self._config.web_tools, stats.web),
            *self._registry.params(),
        ]
        progress = StreamProgress()

        async def call() -> StreamedMessage:
            return await self._claude.stream_message(
                model=model,
                max_tokens=self._config.max_tokens,
                system=system_blocks(),
                tools=tools,
                messages=params,
                on_text=ui.text_delta,
                deadline=request.deadline,
                progress=progress,
            )

        meter = self._meter(request, context_tokens, iteration, stats.web)
        measure = ChatMeasure(self._prices.token_price(model), progress, request.stop)
        try:
            streamed, charge = await self._metered.run(meter, call, measure)
        except ClaudeUnavailable as exc:
            raise TurnFailed(f"claude_{exc.kind}", detail=exc.detail) from None
        return streamed.message, asyncio.ensure_future(_capture(charge, stats))

    def _meter(
        self, request: TurnRequest, context_tokens: int, iteration: int, web: ServerToolUse
    ) -> Meter:
        """The worst case: a generous input estimate plus max_tokens of output, and the server
        tools this turn may still use. Their results join the prompt while the call runs, so
        with any left the call can reach a long-prompt band whatever the estimate."""
        model = request.model or self._config.model
        price = self._prices.token_price(model)
        estimate = (context_tokens + self._fixed_tokens) * INPUT_ESTIMATE_MARGIN_PERCENT // 100
        may_grow = bool(server_tool_params(self._config.web_tools, web))
        tokens = worst_case_token_cost_micros(
            price, estimate, self._config.max_tokens, prompt_may_grow=may_grow
        )
        return Meter(
            user_id=request.user_id,
            provider="anthropic",
            model=request.model or self._config.model,
            purpose="chat",
            worst_case_micros=tokens + worst_case_micros(self._config.web_tools, web),
            key=f"hold:llm:{request.update_id}:{request.turn_id}:{iteration}",
        )

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
                chat_action=ui.chat_action,
                message_thread_id=request.message_thread_id,
                stop=request.stop,
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
            if outcome.files:
                outcome = await self._deliver_files(outcome, ctx, stats)
            results.append(_tool_result_block(block.id, outcome))
        return results

    async def _deliver_files(
        self, outcome: ToolCallResult, ctx: ToolContext, stats: TurnStats
    ) -> ToolCallResult:
        if self._files is None:
            log.error("file_sink_missing", tool_use_id=ctx.tool_use_id)
            return ToolCallResult(payload={"error": "internal error"}, is_error=True)
        to = Recipient(
            user_id=ctx.user_id,
            chat_id=ctx.chat_id,
            tool_use_id=ctx.tool_use_id,
            thread_id=ctx.message_thread_id,
        )
        delivered = await self._files.deliver(outcome.files, to)
        stats.files_delivered += sum(1 for item in delivered if item.get("delivered"))
        payload = dict(outcome.payload)
        payload["delivered_files"] = delivered
        if not any(item.get("delivered") for item in delivered):
            # Nothing reached the person, so nothing was charged: the result says so.
            payload["success"] = False
            payload["cost_usd"] = format_usd(0)
            return ToolCallResult(payload=payload, is_error=True)
        return ToolCallResult(payload=payload, is_error=False)


async def _all(*steps: Awaitable[None] | None) -> None:
    """Run the steps concurrently; every step finishes, then the first failure is raised."""
    results = await asyncio.gather(*(s for s in steps if s is not None), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


async def _capture(charge: PendingCharge, stats: TurnStats) -> None:
    settlement = await charge.capture()
    report = charge.report
    stats.web = ServerToolUse(
        stats.web.web_search_requests + report.web_search_requests,
        stats.web.web_fetch_requests + report.web_fetch_requests,
    )
    stats.input_tokens += report.input_tokens
    stats.output_tokens += report.output_tokens
    stats.cache_read_tokens += report.cache_read_tokens
    stats.cache_write_tokens += report.cache_write_tokens
    stats.charged_micros += settlement.charged_micros


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
