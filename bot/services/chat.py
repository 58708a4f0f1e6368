"""One chat turn: the user's message in, Claude's answer (and files) out, every outcome recorded."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
from aiogram.utils.i18n import I18n

from bot.agent.context import (
    StoredMessage,
    repair_history,
    replace_missing_files,
    trim_to_budget,
)
from bot.agent.loop import AgentLoop, TurnFailed, TurnRequest, TurnStats
from bot.services.billing import DailyLimitReached, InsufficientBalance
from bot.services.cancellation import RunningTurns, StopToken, stopped_by_person
from bot.services.controls import daily_limit_reply
from bot.services.conversations import ConversationStore
from bot.services.file_catalog import NOTE_HEADER, CatalogEntry, files_note
from bot.services.inbox import Inbox
from bot.services.transcripts import shown_transcript, spoken_text
from bot.telegram.i18n import N_, _, format_money, locale_scope
from bot.telegram.ui import TelegramTurnUI

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Attachment:
    """A Telegram file reference; nothing is downloaded until the turn runs."""

    telegram_file_id: str
    telegram_file_unique_id: str
    kind: str  # photo | document | voice | audio
    file_size: int | None
    filename: str | None = None
    mime_type: str | None = None
    width: int | None = None
    height: int | None = None
    duration: int | None = None  # seconds, for voice and audio


@dataclass(frozen=True)
class IncomingMessage:
    user_id: int
    chat_id: int
    update_id: int
    text: str
    attachments: Sequence[Attachment] = ()
    extra_update_ids: Sequence[int] = ()
    chat_model: str | None = None  # the sender's chosen model; None = the default
    # Groups (design section 11): the forum topic (0 outside topics; None = a private chat), the
    # addressing message the answer replies to, and the sender's name shown to Claude.
    group_topic: int | None = None
    reply_to_message_id: int | None = None
    sender_name: str | None = None
    locale: str = "en"  # the sender's language, for everything the turn says

    @property
    def in_group(self) -> bool:
        return self.group_topic is not None

    @property
    def topic_thread_id(self) -> int | None:
        """The message_thread_id to send in: only for a real forum topic."""
        return self.group_topic or None


@dataclass(frozen=True)
class IntakeResult:
    """An attachment, stored (and uploaded), ready to be shown to Claude. `blocks`, when given,
    replace the image block (documents, text files, voice notes); `transcript` is what a voice
    note or audio file said, which becomes the person's text."""

    file_id: int
    claude_file_id: str | None
    blocks: tuple[dict[str, Any], ...] = ()
    transcript: str | None = None
    charged_micros: int = 0  # what taking it cost (a transcription), charged already


class AttachmentIntake(Protocol):
    async def intake(self, user_id: int, attachment: Attachment) -> IntakeResult: ...


class UserFacingError(Exception):
    """A failure with a reply already worded for the person."""

    def __init__(self, reply: str, reason: str) -> None:
        super().__init__(reason)
        self.reply = reply
        self.reason = reason


UIFactory = Callable[[IncomingMessage], TelegramTurnUI]


@dataclass
class ChatConfig:
    context_token_budget: int
    turn_timeout: float


@dataclass
class TurnLog:
    started: float = field(default_factory=time.monotonic)
    outcome: str = "answered"
    stats: TurnStats = field(default_factory=TurnStats)


def user_content(
    text: str,
    images: Sequence[IntakeResult],
    files_note_text: str | None,
    sender_name: str | None = None,
) -> list[dict[str, Any]]:
    """The new user message: the files note (when it changed), attached images, then the text.

    In a group the message first says who wrote it, since several people share the conversation.
    """
    blocks: list[dict[str, Any]] = []
    if sender_name:
        blocks.append({"type": "text", "text": f"[Message from {sender_name}]"})
    if files_note_text:
        blocks.append({"type": "text", "text": files_note_text})
    for image in images:
        if image.blocks:
            blocks.extend(image.blocks)
            continue
        if image.claude_file_id:
            blocks.append(
                {"type": "image", "source": {"type": "file", "file_id": image.claude_file_id}}
            )
        blocks.append(
            {"type": "text", "text": f"[The user attached an image: file_id {image.file_id}]"}
        )
    text = spoken_text([i.transcript for i in images if i.transcript], text)
    blocks.append({"type": "text", "text": text.strip() or "(The user sent only the attachment.)"})
    return blocks


def last_files_note(messages: Sequence[StoredMessage]) -> str | None:
    """The most recent "Available files" note still in the context, if any."""
    for message in reversed(messages):
        if message.role != "user":
            continue
        for block in message.content:
            text = block.get("text")
            if (
                block.get("type") == "text"
                and isinstance(text, str)
                and text.startswith(NOTE_HEADER)
            ):
                return text
    return None


UNPROCESSED_ATTACHMENT_NOTE = (
    "[The user attached a file that could not be processed; they were told why.]"
)


class TurnNotices(Protocol):
    """What is said after a turn besides the answer (receipts, the low-balance notice); neither
    method raises (`begin` gives None when it could not take its mark)."""

    async def begin(self, user_id: int) -> int | None: ...

    async def end(self, user_id: int, chat_id: int, mark: int) -> None: ...


class ChatService:
    def __init__(
        self,
        *,
        loop: AgentLoop,
        conversations: ConversationStore,
        inbox: Inbox,
        intake: AttachmentIntake | None,
        ui_factory: UIFactory,
        config: ChatConfig,
        notices: TurnNotices | None = None,
        on_finished: Callable[[str, float], None] | None = None,
        running: RunningTurns | None = None,
        i18n: I18n | None = None,
    ) -> None:
        self._notices = notices
        self._on_finished = on_finished
        self._i18n = i18n
        self._running = running if running is not None else RunningTurns()
        self._loop = loop
        self._conversations = conversations
        self._inbox = inbox
        self._intake = intake
        self._ui_factory = ui_factory
        self._config = config
        # What intake charged per running turn (transcriptions), for the failure replies.
        self._intake_charged: dict[int, int] = {}

    async def run_turn(self, incoming: IncomingMessage) -> None:
        """Run the turn in the sender's language (it runs outside the handler's context)."""
        if self._i18n is None:
            await self._run_turn(incoming)
            return
        with locale_scope(self._i18n, incoming.locale):
            await self._run_turn(incoming)

    async def _run_turn(self, incoming: IncomingMessage) -> None:
        turn = TurnLog()
        mark = await self._notices.begin(incoming.user_id) if self._notices else None
        ui = self._ui_factory(incoming)
        ui.start()
        status = "answered"
        stop: StopToken | None = None
        try:
            with self._running.running(incoming.user_id, incoming.chat_id) as stop:
                async with asyncio.timeout(self._config.turn_timeout):
                    turn.stats = await self._answer(incoming, ui, stop)
            turn.outcome = turn.stats.outcome
            await self._explain_outcome(ui, turn.stats)
        except asyncio.CancelledError:
            if not stopped_by_person(stop):
                status, turn.outcome = "interrupted", "interrupted"
                raise
            turn.outcome = "stopped"
            await self._say_stopped(ui, incoming)
        except TimeoutError:
            status, turn.outcome = "failed", "timeout"
            await self._reply(ui, incoming, TIMEOUT_REPLY)
        except TurnFailed as exc:
            status, turn.outcome = "failed", exc.reason
            await self._reply(ui, incoming, reply_for_failure(exc.reason))
        except InsufficientBalance as exc:
            status, turn.outcome = "failed", "insufficient_balance"
            reply = GROUP_NO_BALANCE_REPLY if incoming.in_group else insufficient_balance_reply(exc)
            await self._reply(ui, incoming, reply)
        except UserFacingError as exc:
            status, turn.outcome = "failed", exc.reason
            await self._reply(ui, incoming, exc.reply)
        except Exception:
            status, turn.outcome = "failed", "internal_error"
            log.exception("turn_crashed", update_id=incoming.update_id)
            await self._reply(ui, incoming, INTERNAL_ERROR_REPLY)
        finally:
            await ui.close()
            await asyncio.shield(self._finish(incoming, status, turn))
        if self._notices is not None and mark is not None:
            await self._notices.end(incoming.user_id, incoming.chat_id, mark)

    async def _answer(
        self, incoming: IncomingMessage, ui: TelegramTurnUI, stop: StopToken
    ) -> TurnStats:
        if not incoming.text.strip() and not incoming.attachments:
            raise UserFacingError(EMPTY_REPLY, "empty_message")
        try:
            images = [await self._take(incoming.user_id, a) for a in incoming.attachments]
        except UserFacingError:
            await self._keep_unprocessed(incoming)
            raise
        for taken in images:
            if taken.transcript:
                await ui.text_delta(shown_transcript(taken.transcript))
        charged = sum(taken.charged_micros for taken in images)
        if charged:
            self._intake_charged[incoming.update_id] = charged
        budget = self._config.context_token_budget

        def build_content(
            earlier: list[StoredMessage], files: list[CatalogEntry]
        ) -> list[dict[str, Any]]:
            note = files_note(files)
            if note is not None and note == last_files_note(trim_to_budget(earlier, budget)):
                note = None
            return user_content(incoming.text, images, note, incoming.sender_name)

        opened = await self._conversations.open_turn(
            incoming.user_id,
            incoming.chat_id,
            incoming.update_id,
            build_content,
            group_topic=incoming.group_topic,
        )

        async def persist(role: str, blocks: list[dict[str, Any]]) -> None:
            await self._conversations.append(
                opened.conversation_id, role, blocks, incoming.update_id
            )

        kept = trim_to_budget(opened.messages, budget)
        history = repair_history(kept)
        replace_missing_files(history, opened.unavailable_files)
        request = TurnRequest(
            user_id=incoming.user_id,
            chat_id=incoming.chat_id,
            update_id=incoming.update_id,
            history=history,
            deadline=time.monotonic() + self._config.turn_timeout,
            history_tokens=sum(m.token_estimate for m in kept),
            model=incoming.chat_model,
            stop=stop,
            message_thread_id=incoming.topic_thread_id,
        )
        return await self._loop.run(request, ui, persist)

    async def _keep_unprocessed(self, incoming: IncomingMessage) -> None:
        """The message stays in the conversation even when its attachment could not be taken."""

        def build_content(_: list[StoredMessage], __: list[CatalogEntry]) -> list[dict[str, Any]]:
            blocks = user_content(incoming.text, [], None, incoming.sender_name)
            blocks.insert(0, {"type": "text", "text": UNPROCESSED_ATTACHMENT_NOTE})
            return blocks

        await self._conversations.open_turn(
            incoming.user_id,
            incoming.chat_id,
            incoming.update_id,
            build_content,
            group_topic=incoming.group_topic,
        )

    async def _take(self, user_id: int, attachment: Attachment) -> IntakeResult:
        if self._intake is None:
            raise UserFacingError(UNSUPPORTED_REPLY, "unsupported")
        return await self._intake.intake(user_id, attachment)

    async def _explain_outcome(self, ui: TelegramTurnUI, stats: TurnStats) -> None:
        extra = OUTCOME_NOTES.get(stats.outcome)
        if stats.outcome == "refused" and ui.messages_sent:
            return  # Claude already said why
        if extra:
            await ui.progress("")
            await ui.text_delta(_(extra))
            await ui.end_message(cut=False)

    async def _say_stopped(self, ui: TelegramTurnUI, incoming: IncomingMessage) -> None:
        """What was streamed stays visible, marked as stopped."""
        try:
            await ui.text_delta(_(STOPPED_NOTE))
            await ui.end_message(cut=False)
        except Exception:
            log.exception("reply_failed", update_id=incoming.update_id)

    async def _reply(self, ui: TelegramTurnUI, incoming: IncomingMessage, text: str) -> None:
        text = _(text)  # first: the intake-charge note replaces words of the translated reply
        charged = self._intake_charged.get(incoming.update_id, 0)
        if charged:
            text = with_intake_charge(text, charged)
        try:
            await ui.discard()
            await ui.text_delta(text)
            await ui.end_message(cut=False)
        except Exception:
            log.exception("reply_failed", update_id=incoming.update_id)

    async def _finish(self, incoming: IncomingMessage, status: str, turn: TurnLog) -> None:
        turn.stats.charged_micros += self._intake_charged.pop(incoming.update_id, 0)
        for update_id in (incoming.update_id, *incoming.extra_update_ids):
            await self._inbox.mark(
                update_id, status, error=None if status == "answered" else turn.outcome
            )
        s = turn.stats
        duration = time.monotonic() - turn.started
        if self._on_finished is not None:
            self._on_finished(turn.outcome, duration)
        log.info(
            "turn_completed",
            update_id=incoming.update_id,
            user_id=incoming.user_id,
            outcome=turn.outcome,
            iterations=s.iterations,
            tools=s.tools,
            input_tokens=s.input_tokens,
            output_tokens=s.output_tokens,
            cache_read_tokens=s.cache_read_tokens,
            cache_write_tokens=s.cache_write_tokens,
            charged_micros=s.charged_micros,
            duration_ms=int(duration * 1000),
        )


TIMEOUT_REPLY = N_(
    "Sorry, that took too long and I stopped. Nothing was charged for the unfinished part. Please try again."
)
INTERNAL_ERROR_REPLY = N_(
    "Sorry, something went wrong on my side. Nothing was charged for it. Please try again."
)
EMPTY_REPLY = N_(
    "Your message was empty. Send me some text, a voice message, a photo, a PDF or a text file."
)
UNSUPPORTED_REPLY = N_(
    "I can't handle this kind of message. Send text, a photo, or an image file (JPEG, PNG, WebP or GIF)."
)
GROUP_NO_BALANCE_REPLY = N_(
    "Your balance is too low for this. Open a private chat with me and use /buy to add funds."
)
STOPPED_NOTE = N_("\n\n_(Stopped.)_")
OUTCOME_NOTES = {
    "refused": N_("I can't help with that request."),
    "max_iterations": N_(
        "I stopped here because this request needed too many steps. Tell me how to continue if you want more."
    ),
}
FAILURE_REPLIES = {
    "claude_busy": N_(
        "Claude is busy right now. Please try again in a minute; nothing was charged."
    ),
    "claude_connection": N_(
        "I couldn't reach Claude just now. Please try again in a minute; nothing was charged."
    ),
    "claude_timeout": N_("Claude took too long to answer. Please try again; nothing was charged."),
    "claude_stream_broken": N_(
        "The answer was interrupted by a connection problem. Please try again; nothing was charged."
    ),
    "claude_spend_limit": N_(
        "The assistant is temporarily unavailable. The administrators have been notified; please try again later."
    ),
    "claude_auth": N_("The assistant is temporarily unavailable. Please try again later."),
    "claude_bad_request": N_(
        "Sorry, I couldn't process that message. Try /new to start a fresh conversation."
    ),
}


def with_intake_charge(text: str, charged_micros: int) -> str:
    """A failure reply after a voice message was transcribed: that was charged, so the reply
    says so instead of "nothing was charged"."""
    note = _("only the transcription of your voice message was charged ({price})").format(
        price=format_money(charged_micros)
    )
    for phrase in (_("nothing was charged"), _("Nothing was charged")):
        if phrase in text:
            return text.replace(phrase, note[0].upper() + note[1:] if phrase[0].isupper() else note)
    return _("{text} (The transcription of your voice message cost {price}.)").format(
        text=text, price=format_money(charged_micros)
    )


def reply_for_failure(reason: str) -> str:
    return _(FAILURE_REPLIES.get(reason, INTERNAL_ERROR_REPLY))


def insufficient_balance_reply(exc: InsufficientBalance) -> str:
    if isinstance(exc, DailyLimitReached):
        return daily_limit_reply(exc.needed_micros, exc.limit_micros, exc.available_micros)
    return _(
        "Your balance is too low for this: it needs about {needed} "
        "and you have {available} available. "
        "You can top up with Telegram Stars: /buy"
    ).format(needed=format_money(exc.needed_micros), available=format_money(exc.available_micros))
