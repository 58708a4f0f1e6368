"""What a tool is, what it receives, and how it fails."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict

from bot.services.cancellation import StopToken
from bot.services.delivery import ProducedFile


class ToolError(Exception):
    """An expected failure the model should see and can act on (short, sanitized, no internals)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ToolInput(BaseModel):
    """Base of every tool's input model: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


ProgressCallback = Callable[[str], Awaitable[None]]


async def _no_progress(_: str) -> None:
    return None


@dataclass
class ToolContext:
    """Everything a tool may know about the request. The model never names a user: the loop does."""

    user_id: int
    chat_id: int
    update_id: int
    tool_use_id: str
    deadline: float
    report_progress: ProgressCallback = _no_progress
    chat_action: Callable[[str], None] = field(default=lambda _: None)
    message_thread_id: int | None = None  # a group's forum topic: files go there too
    stop: StopToken | None = None  # set when the person sent /stop (the turn is then cancelled)


@dataclass(frozen=True)
class ToolOutput:
    """What a tool returns: JSON for the model, and the files it produced (each with its pending
    charge, captured only when the file reached the chat)."""

    payload: dict[str, Any]
    files: tuple[ProducedFile, ...] = ()


class Tool(Protocol):
    """A model-callable tool: name, description for the model, input model, and `run`."""

    name: ClassVar[str]
    description: ClassVar[str]
    input_model: ClassVar[type[ToolInput]]

    async def run(self, args: Any, ctx: ToolContext) -> ToolOutput:
        """Run with validated `args` (an instance of `input_model`)."""
        ...
