"""What the person sees during a turn: a chat action, a streamed draft, then the final messages."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import structlog
from aiogram import Bot

from bot.i18n import N_, _
from bot.telegram.rendering import render_draft
from bot.telegram.sending import MessageSender

log = structlog.get_logger(__name__)

CHAT_ACTION_REFRESH_SECONDS = 4.5
CUT_NOTE = N_(
    "\n\n_(The answer was cut here: it reached the length limit. Ask for less, or for one part at a time.)_"
)
CUT_REPLY = N_(
    "The answer was too long and was cut before any of it could be shown. Ask for less, or for one part at a time."
)


def describe_tool(name: str, args: dict[str, Any]) -> tuple[str, str]:
    """A progress line and a chat action for a tool call the model just made."""
    if name == "generate_image":
        size = str(args.get("image_size") or "2K")
        ratio = str(args.get("aspect_ratio") or "1:1")
        if args.get("reference_file_ids"):
            line = _("Editing a {size} image, {ratio}…")
        else:
            line = _("Generating a {size} image, {ratio}…")
        return line.format(size=size, ratio=ratio), "upload_photo"
    if name == "analyze_image":
        return _("Looking at the image…"), "typing"
    return _("Working…"), "typing"


class TelegramTurnUI:
    """Streams text with sendMessageDraft (throttled, in the background) and sends final messages."""

    def __init__(
        self,
        bot: Bot,
        sender: MessageSender,
        *,
        chat_id: int,
        draft_id: int,
        draft_interval: float,
        thread_id: int | None = None,
        reply_to: int | None = None,
        drafts: bool = True,
    ) -> None:
        self._bot = bot
        self._thread_id = thread_id  # a forum topic: everything goes there
        self._reply_to = reply_to  # groups: the first answer replies to the addressing message
        self._sender = sender
        self._chat_id = chat_id
        self._draft_id = draft_id or 1
        self._interval = draft_interval
        self._buffer = ""
        self._last_draft = 0.0
        self._draft_task: asyncio.Task[None] | None = None
        self._streaming = False  # an answer's text is arriving and a draft was scheduled
        self._drafts_enabled = drafts  # drafts are private-chat only; groups see a chat action
        self._action = "typing"
        self._action_task: asyncio.Task[None] | None = None
        self._kick_task: asyncio.Task[None] | None = None
        self._action_failed = False
        self._text_visible = False
        self.messages_sent = 0

    def start(self) -> None:
        self._action_task = asyncio.create_task(self._keep_chat_action())

    async def close(self) -> None:
        for task in (self._draft_task, self._action_task, self._kick_task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def text_delta(self, text: str) -> None:
        self._buffer += text
        self._text_visible = self._drafts_enabled  # without drafts, "typing" goes on
        self._maybe_draft(self._buffer)

    async def end_message(self, *, cut: bool) -> None:
        text = self._buffer.strip()
        self._buffer = ""
        self._streaming = False
        await self._cancel_draft()
        if not text and cut:
            text = _(CUT_REPLY)
        elif not text:
            return
        elif cut:
            text += _(CUT_NOTE)
        self.messages_sent += await self._sender.send_markdown(
            self._chat_id, text, thread_id=self._thread_id, reply_to=self._reply_to
        )

    async def discard(self) -> None:
        """Drop text that was streamed but not finished: a broken answer is never sent as final."""
        self._buffer = ""
        self._streaming = False
        await self._cancel_draft()

    async def tool_started(self, name: str, args: dict[str, Any]) -> None:
        line, action = describe_tool(name, args)
        self._action = action
        self._text_visible = False
        await self.progress(line)

    async def progress(self, text: str) -> None:
        self._maybe_draft(text, force=True)

    def chat_action(self, action: str) -> None:
        """Show `action` now, and keep showing it until text arrives."""
        self._action = action
        self._text_visible = False
        if self._kick_task is None or self._kick_task.done():
            self._kick_task = asyncio.create_task(self._send_chat_action())

    def _maybe_draft(self, text: str, *, force: bool = False) -> None:
        if not self._drafts_enabled:
            return
        now = time.monotonic()
        busy = self._draft_task is not None and not self._draft_task.done()
        if busy or (not force and now - self._last_draft < self._interval):
            return
        if force:
            self._draft_task = asyncio.create_task(self._send_draft(text))
        else:
            # The first draft of an answer waits half an interval: an answer that arrives whole
            # in that time goes out as one message, without a draft just before it.
            delay = 0.0 if self._streaming else self._interval / 2
            self._streaming = True
            self._draft_task = asyncio.create_task(self._send_streamed_draft(delay))
        self._last_draft = now

    async def _send_streamed_draft(self, delay: float) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        if self._buffer:
            await self._send_draft(self._buffer)

    async def _send_draft(self, text: str) -> None:
        chunk = render_draft(text)
        try:
            await self._bot.send_message_draft(
                chat_id=self._chat_id,
                draft_id=self._draft_id,
                text=chunk.text,
                entities=chunk.entities or None,
                parse_mode=None,
            )
        except Exception as exc:
            # Any failure, of any shape: no more drafts in this turn; the answer still goes out
            # as a message.
            self._drafts_enabled = False
            log.info("drafts_disabled", chat_id=self._chat_id, error=type(exc).__name__)

    async def _cancel_draft(self) -> None:
        task = self._draft_task
        self._draft_task = None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _keep_chat_action(self) -> None:
        while True:
            if not self._text_visible:
                await self._send_chat_action()
            await asyncio.sleep(CHAT_ACTION_REFRESH_SECONDS)

    async def _send_chat_action(self) -> None:
        """Any failure is logged (once a turn) and the loop goes on: the action is cosmetic."""
        try:
            await self._bot.send_chat_action(
                chat_id=self._chat_id, action=self._action, message_thread_id=self._thread_id
            )
        except Exception as exc:
            if not self._action_failed:
                self._action_failed = True
                log.info("chat_action_failed", chat_id=self._chat_id, error=type(exc).__name__)
