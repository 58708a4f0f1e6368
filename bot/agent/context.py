"""Builds what Claude sees: cache breakpoints, a repaired history, trimming, the files note."""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from anthropic.types import MessageParam, TextBlockParam

from bot.agent.prompts import SYSTEM_PROMPT

EPHEMERAL: dict[str, str] = {"type": "ephemeral"}
CHARS_PER_TOKEN = 3
IMAGE_TOKENS = 1600
INTERRUPTED_TOOL_RESULT = "The tool call was interrupted before it finished; nothing was delivered."


def system_blocks() -> list[TextBlockParam]:
    return [{"type": "text", "text": SYSTEM_PROMPT, "cache_control": {"type": "ephemeral"}}]


@dataclass(frozen=True)
class StoredMessage:
    role: str
    content: list[dict[str, Any]]
    token_estimate: int


def estimate_tokens(content: Any) -> int:
    """A deliberately generous estimate (used for holds and trimming, never for charging)."""
    images = _count_images(content)
    text = json.dumps(content, ensure_ascii=False, separators=(",", ":"))
    return len(text) // CHARS_PER_TOKEN + images * IMAGE_TOKENS + 4


def _count_images(content: Any) -> int:
    if isinstance(content, dict):
        own = 1 if content.get("type") == "image" else 0
        return own + sum(_count_images(v) for v in content.values())
    if isinstance(content, list):
        return sum(_count_images(v) for v in content)
    return 0


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

    Consecutive messages of one role are merged; a tool_use left without results (an interrupted
    turn) gets error results; a history never starts with an assistant message.
    """
    repaired: list[dict[str, Any]] = []
    for message in messages:
        content = copy.deepcopy(message.content)
        if not repaired and message.role != "user":
            continue
        if repaired and repaired[-1]["role"] == "assistant":
            content = _with_missing_tool_results(repaired[-1]["content"], content, message.role)
        if repaired and repaired[-1]["role"] == message.role:
            repaired[-1]["content"].extend(content)
        else:
            repaired.append({"role": message.role, "content": content})
    if repaired and repaired[-1]["role"] == "assistant":
        pending = _with_missing_tool_results(repaired[-1]["content"], [], "user")
        if pending:
            repaired.append({"role": "user", "content": pending})
    return repaired


def _with_missing_tool_results(
    assistant_content: list[dict[str, Any]], content: list[dict[str, Any]], role: str
) -> list[dict[str, Any]]:
    wanted = [b["id"] for b in assistant_content if b.get("type") == "tool_use"]
    if not wanted:
        return content
    if role != "user":
        content = []
    present = {b.get("tool_use_id") for b in content if b.get("type") == "tool_result"}
    others = [
        b for b in content if b.get("type") != "tool_result" or b.get("tool_use_id") in wanted
    ]
    results = [b for b in others if b.get("type") == "tool_result"]
    rest = [b for b in others if b.get("type") != "tool_result"]
    missing = [
        {
            "type": "tool_result",
            "tool_use_id": tid,
            "content": INTERRUPTED_TOOL_RESULT,
            "is_error": True,
        }
        for tid in wanted
        if tid not in present
    ]
    ordered = sorted(results + missing, key=lambda b: wanted.index(b["tool_use_id"]))
    return ordered + rest


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
            if block.get("type") != "image":
                continue
            source = block.get("source") or {}
            if source.get("type") == "file" and source.get("file_id") in gone:
                message["content"][index] = {
                    "type": "text",
                    "text": "[An image was here; it is no longer available to view.]",
                }
