"""Builds what Claude sees: cache breakpoints, a repaired history, trimming, the files note."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from anthropic.types import MessageParam, TextBlockParam

from bot.agent.prompts import SYSTEM_PROMPT
from bot.services.tokens import StoredMessage

EPHEMERAL: dict[str, str] = {"type": "ephemeral"}
INTERRUPTED_TOOL_RESULT = "The tool call was interrupted before it finished; nothing was delivered."


def system_blocks() -> list[TextBlockParam]:
    return [{"type": "text", "text": SYSTEM_PROMPT, "cache_control": {"type": "ephemeral"}}]


def is_tool_result_message(message: StoredMessage) -> bool:
    return (
        message.role == "user"
        and bool(message.content)
        and message.content[0].get("type") == "tool_result"
    )


def trim_to_budget(messages: Sequence[StoredMessage], budget: int) -> list[StoredMessage]:
    """Drop the oldest whole turns until the rest fits.

    Cut points sit at fixed multiples of half the budget, so the kept prefix stays identical from
    one turn to the next (cache friendly) and moves only in large steps.
    """
    starts = [
        i for i, m in enumerate(messages) if m.role == "user" and not is_tool_result_message(m)
    ]
    if not starts:
        return list(messages)
    cumulative = [0]
    for message in messages:
        cumulative.append(cumulative[-1] + message.token_estimate)
    total = cumulative[-1]
    if total <= budget:
        return list(messages)
    step = max(1, budget // 2)
    threshold = step
    while True:
        cut = next((s for s in starts if cumulative[s] >= threshold), starts[-1])
        if total - cumulative[cut] <= budget or cut == starts[-1]:
            return list(messages[cut:])
        threshold += step


def repair_history(messages: Sequence[StoredMessage]) -> list[dict[str, Any]]:
    """Make a stored history acceptable to the API.

    It starts with a user message and roles alternate (consecutive messages of one role are
    merged); every tool_use is answered, in order, at the start of the next user message (an
    interrupted turn gets error results); tool results that answer nothing are dropped.
    """
    repaired: list[dict[str, Any]] = []
    for message in messages:
        content = list(message.content)  # blocks are never modified in place, only lists
        if message.role == "assistant":
            _add_assistant(repaired, content)
        else:
            _add_user(repaired, content)
    if repaired and repaired[-1]["role"] == "assistant":
        pending = _tool_results_for(repaired[-1]["content"], [])
        if pending:
            repaired.append({"role": "user", "content": pending})
    return repaired


def _add_assistant(repaired: list[dict[str, Any]], content: list[dict[str, Any]]) -> None:
    if not repaired or not content:
        return  # a history never starts with an assistant message
    last = repaired[-1]
    if last["role"] == "assistant":
        pending = _tool_results_for(last["content"], [])
        if not pending:
            last["content"].extend(content)
            return
        repaired.append({"role": "user", "content": pending})
    repaired.append({"role": "assistant", "content": content})


def _add_user(repaired: list[dict[str, Any]], content: list[dict[str, Any]]) -> None:
    if repaired and repaired[-1]["role"] == "assistant":
        content = _tool_results_for(repaired[-1]["content"], content)
    else:
        content = [b for b in content if b.get("type") != "tool_result"]
    if not content:
        return
    if repaired and repaired[-1]["role"] == "user":
        repaired[-1]["content"].extend(content)
    else:
        repaired.append({"role": "user", "content": content})


def _tool_results_for(
    assistant_content: list[dict[str, Any]], content: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """`content` led by one result per tool_use of the assistant message, in tool_use order."""
    wanted = [b["id"] for b in assistant_content if b.get("type") == "tool_use"]
    results: dict[str, dict[str, Any]] = {}
    rest: list[dict[str, Any]] = []
    for block in content:
        if block.get("type") != "tool_result":
            rest.append(block)
        elif block.get("tool_use_id") in wanted:
            results.setdefault(block["tool_use_id"], block)
    ordered = [results.get(tid) or _interrupted_result(tid) for tid in wanted]
    return ordered + rest


def _interrupted_result(tool_use_id: str) -> dict[str, Any]:
    return {
        "type": "tool_result",
        "tool_use_id": tool_use_id,
        "content": INTERRUPTED_TOOL_RESULT,
        "is_error": True,
    }


def with_cache_breakpoints(messages: list[dict[str, Any]]) -> list[MessageParam]:
    """Mark the last block of the last two user messages: the previous request's end and this one's."""
    marked = 0
    for message in reversed(messages):
        if message["role"] != "user" or not message["content"]:
            continue
        last = dict(message["content"][-1])
        last["cache_control"] = EPHEMERAL
        message["content"] = [*message["content"][:-1], last]
        marked += 1
        if marked == 2:
            break
    return messages  # type: ignore[return-value]


def replace_missing_files(messages: list[dict[str, Any]], gone: set[str]) -> None:
    """Image blocks whose Files API copy is gone become a text placeholder (in place)."""
    if not gone:
        return
    for message in messages:
        for index, block in enumerate(message["content"]):
            if block.get("type") not in ("image", "document"):
                continue
            source = block.get("source") or {}
            if source.get("type") == "file" and source.get("file_id") in gone:
                what = "An image" if block["type"] == "image" else "A document"
                message["content"][index] = {
                    "type": "text",
                    "text": f"[{what} was here; it is no longer available to view.]",
                }
