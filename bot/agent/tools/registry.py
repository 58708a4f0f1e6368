"""The tool registry: schemas for the model, and safe dispatch of its tool calls."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from anthropic.types import ToolParam
from pydantic import ValidationError

from bot.agent.tools.base import Tool, ToolContext, ToolError
from bot.services.delivery import ProducedFile

log = structlog.get_logger(__name__)

INTERNAL_ERROR = "internal error"


@dataclass
class ToolCallResult:
    """The outcome of one tool call, before the loop turns it into a tool_result block."""

    payload: dict[str, Any]
    is_error: bool
    files: tuple[ProducedFile, ...] = ()

    def as_text(self) -> str:
        if self.is_error:
            return str(self.payload.get("error", INTERNAL_ERROR))
        return json.dumps(self.payload, ensure_ascii=False, separators=(",", ":"))


class ToolRegistry:
    """Tools by name. Built once in the composition root from a list."""

    def __init__(self, tools: Iterable[Tool]) -> None:
        self._tools: dict[str, Tool] = {}
        for tool in tools:
            if tool.name in self._tools:
                raise ValueError(f"duplicate tool name: {tool.name}")
            self._tools[tool.name] = tool
        self._params = self._build_params()

    @property
    def names(self) -> Sequence[str]:
        return list(self._tools)

    def params(self) -> list[ToolParam]:
        """Tool definitions, stable byte for byte, with a cache breakpoint on the last one."""
        return self._params

    def _build_params(self) -> list[ToolParam]:
        params: list[ToolParam] = []
        for tool in self._tools.values():
            schema = tool.input_model.model_json_schema()
            schema.pop("title", None)
            params.append(
                {"name": tool.name, "description": tool.description, "input_schema": schema}
            )
        if params:
            params[-1]["cache_control"] = {"type": "ephemeral"}
        return params

    async def execute(self, name: str, raw_input: object, ctx: ToolContext) -> ToolCallResult:
        tool = self._tools.get(name)
        if tool is None:
            return _error(f"Unknown tool '{name[:64]}'. Available tools: {', '.join(self._tools)}.")
        try:
            args = tool.input_model.model_validate(raw_input)
        except ValidationError as exc:
            return _error(f"Invalid arguments: {_describe_validation(exc)}")
        try:
            output = await tool.run(args, ctx)
        except ToolError as exc:
            log.info("tool_failed", tool=name, reason=exc.message)
            return _error(exc.message)
        except Exception:
            log.exception("tool_crashed", tool=name)
            return _error(INTERNAL_ERROR)
        return ToolCallResult(payload=output.payload, is_error=False, files=output.files)


def _error(message: str) -> ToolCallResult:
    return ToolCallResult(payload={"error": message}, is_error=True)


def _describe_validation(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "input"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)
