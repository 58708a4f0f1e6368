"""A streamed Claude message, built from its events; and what a stream delivered so far."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from anthropic.types import Message


@dataclass
class StreamProgress:
    """What a stream delivered so far, for charging a stream we cut (/stop)."""

    usage: dict[str, Any] = field(default_factory=dict)  # as last reported by the provider
    output_chars: int = 0  # characters of text, tool input and thinking streamed
    started: bool = False  # message_start arrived: the provider is billing the input


class MessageBuilder:
    """Accumulates the stream's events (parsed JSON) into the final Message.

    Cheaper than the SDK's stream helper, which rebuilds typed snapshots on every delta, and than
    typed events: nothing is validated or converted per delta. The Message is built the way the
    SDK builds every response, without validation (``construct``).
    """

    def __init__(self, progress: StreamProgress) -> None:
        self._progress = progress
        self._message: dict[str, Any] = {}
        self._blocks: dict[int, dict[str, Any]] = {}
        self._json: dict[int, list[str]] = {}
        self._cut: set[int] = set()  # tool calls whose input JSON was cut off (max_tokens)
        self._stopped = False

    @property
    def complete(self) -> bool:
        return self._stopped and self._message.get("stop_reason") is not None

    def apply(self, event: Any) -> str | None:
        """Take one event; returns the text it added, if any."""
        kind = event["type"]
        if kind == "content_block_delta":
            delta = event["delta"]
            self._progress.output_chars += len(
                delta.get("text") or delta.get("partial_json") or delta.get("thinking") or ""
            )
            return self._delta(event["index"], delta)
        if kind == "message_start":
            self._message = event["message"]
            self._progress.usage = dict(self._message.get("usage") or {})
            self._progress.output_chars = 0
            self._progress.started = True
        elif kind == "content_block_start":
            block = event["content_block"]
            if block.get("type") in {"tool_use", "server_tool_use"}:
                self._json[event["index"]] = []
            self._blocks[event["index"]] = block
        elif kind == "content_block_stop":
            parts = self._json.pop(event["index"], None)
            if parts is not None:
                raw = "".join(parts)
                try:
                    self._blocks[event["index"]]["input"] = json.loads(raw) if raw else {}
                except ValueError:
                    # Only a message cut at max_tokens may end with it; `build` decides.
                    self._cut.add(event["index"])
        elif kind == "message_delta":
            delta = event["delta"]
            self._message["stop_reason"] = delta.get("stop_reason")
            self._message["stop_sequence"] = delta.get("stop_sequence")
            usage = self._message.setdefault("usage", {})
            usage.update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
            self._progress.usage = dict(usage)
        elif kind == "message_stop":
            self._stopped = True
        return None

    def _delta(self, index: int, delta: dict[str, Any]) -> str | None:
        block = self._blocks[index]
        kind = delta["type"]
        if kind == "text_delta":
            text = str(delta["text"])
            block["text"] = block.get("text", "") + text
            return text
        if kind == "input_json_delta":
            self._json[index].append(delta["partial_json"])
        elif kind == "thinking_delta":
            block["thinking"] = block.get("thinking", "") + delta["thinking"]
        elif kind == "signature_delta":
            block["signature"] = delta["signature"]
        elif kind == "citations_delta":
            block.setdefault("citations", []).append(delta["citation"])
        return None

    def build(self) -> Message:
        """The message; a tool call cut off by max_tokens is left out (it cannot be run, nor
        sent back). Raises ValueError for unparsable tool input in any other message."""
        if self._cut and self._message.get("stop_reason") != "max_tokens":
            raise ValueError("a tool call's input is not valid JSON")
        self._message["content"] = [
            self._blocks[i] for i in sorted(self._blocks) if i not in self._cut
        ]
        return Message.construct(**self._message)
