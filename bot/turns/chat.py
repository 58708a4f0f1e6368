"""One chat turn: the user's message in, Claude's answer (and files) out, every outcome recorded."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
from aiogram.utils.i18n import I18n

from bot.agent.context import (
    repair_history,
    replace_missing_files,
    trim_to_budget,
)
from bot.agent.loop import AgentLoop, TurnFailed, TurnRequest, TurnStats, TurnUI
from bot.i18n import _, locale_scope
from bot.services.cancellation import RunningTurns, StopToken, stopped_by_person
from bot.services.controls import TurnEnd
from bot.services.conversations import ConversationStore
from bot.services.file_catalog import CatalogEntry, files_note
from bot.services.inbox import Inbox
from bot.services.incoming import (
    Attachment,
    AttachmentIntake,
    IncomingMessage,
    IntakeResult,
    UserFacingError,
)
from bot.services.ledger import InsufficientBalance
from bot.services.tokens import StoredMessage
from bot.services.transcripts import shown_transcript
from bot.turns.content import UNPROCESSED_ATTACHMENT_NOTE, last_files_note, user_content
from bot.turns.replies import (
    EMPTY_REPLY,
    GROUP_NO_BALANCE_REPLY,
    INTERNAL_ERROR_REPLY,
    NO_ANSWER_REPLY,
    OUTCOME_NOTES,
    TIMEOUT_REPLY,
    UNSUPPORTED_REPLY,
    insufficient_balance_reply,
    reply_for_failure,
    stopped_note,
    with_turn_charge,
)

log = structlog.get_logger(__name__)


class TurnView(TurnUI, Protocol):
    """The person's view of a turn (the Telegram layer fills it)."""

    messages_sent: int

    def start(self) -> None: ...

    async def close(self) -> None: ...

    async def discard(self) -> None: ...


UIFactory = Callable[[IncomingMessage], TurnView]


@dataclass
class ChatConfig:
    context_token_budget: int
    turn_timeout: float


@dataclass
class TurnLog:
    started: float = field(default_factory=time.monotonic)
    outcome: str = "answered"
    stats: TurnStats = field(default_factory=TurnStats)


class TurnNotices(Protocol):
    """What is said after a turn besides the answer (receipts, the low-balance notice); neither
    method raises (`begin` gives None when it could not take its mark)."""

    async def begin(self, user_id: int) -> int | None: ...

    async def charged(self, user_id: int, mark: int) -> int | None:
        """What the ledger charged the user since `mark`; None when it could not be read."""
        ...

    async def settle(self, user_id: int, mark: int) -> TurnEnd | None:
        """The turn's charges and the balance after it, in one read; None when unreadable."""
        ...

    async def tell(self, user_id: int, chat_id: int, end: TurnEnd) -> None:
        """The receipt and the low-balance notice, as `end` calls for them."""
        ...


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
            await self._say_stopped(ui, incoming, turn, mark)
        except TimeoutError:
            status, turn.outcome = "failed", "timeout"
            await self._reply(ui, incoming, TIMEOUT_REPLY, turn, mark)
        except TurnFailed as exc:
            status, turn.outcome = "failed", exc.reason
            await self._reply(ui, incoming, reply_for_failure(exc.reason), turn, mark)
        except InsufficientBalance as exc:
            status, turn.outcome = "failed", "insufficient_balance"
            reply = GROUP_NO_BALANCE_REPLY if incoming.in_group else insufficient_balance_reply(exc)
            await self._reply(ui, incoming, reply, turn, mark)
        except UserFacingError as exc:
            status, turn.outcome = "failed", exc.reason
            await self._reply(ui, incoming, exc.reply, turn, mark)
        except Exception:
            status, turn.outcome = "failed", "internal_error"
            log.exception("turn_crashed", update_id=incoming.update_id)
            await self._reply(ui, incoming, INTERNAL_ERROR_REPLY, turn, mark)
        finally:
            await ui.close()
            end = await asyncio.shield(self._finish(incoming, status, turn, mark))
        if self._notices is not None and end is not None:
            await self._notices.tell(incoming.user_id, incoming.chat_id, end)

    async def _answer(
        self, incoming: IncomingMessage, ui: TurnView, stop: StopToken | None
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

    async def _explain_outcome(self, ui: TurnView, stats: TurnStats) -> None:
        extra = OUTCOME_NOTES.get(stats.outcome)
        if stats.outcome == "refused" and ui.messages_sent:
            return  # Claude already said why
        if stats.outcome == "answered" and not ui.messages_sent and not stats.files_delivered:
            extra = NO_ANSWER_REPLY  # Claude said nothing: the person still gets a reply
        if extra:
            await ui.progress("")
            await ui.text_delta(_(extra))
            await ui.end_message(cut=False)

    async def _say_stopped(
        self, ui: TurnView, incoming: IncomingMessage, turn: TurnLog, mark: int | None
    ) -> None:
        """What was streamed stays visible, marked as stopped, with what the turn was charged."""
        try:
            note = stopped_note(await self._charged(incoming, turn, mark))
            await ui.text_delta(note)
            await ui.end_message(cut=False)
        except Exception:
            log.exception("reply_failed", update_id=incoming.update_id)

    async def _charged(self, incoming: IncomingMessage, turn: TurnLog, mark: int | None) -> int:
        """What the turn was charged: the ledger's figure, or (unreadable) what the turn counted."""
        if self._notices is not None and mark is not None:
            charged = await self._notices.charged(incoming.user_id, mark)
            if charged is not None:
                return charged
        return turn.stats.charged_micros + self._intake_charged.get(incoming.update_id, 0)

    async def _reply(
        self,
        ui: TurnView,
        incoming: IncomingMessage,
        reply: str,
        turn: TurnLog,
        mark: int | None,
    ) -> None:
        """Send the failure reply `reply` (a msgid), saying what the turn was charged."""
        intake = self._intake_charged.get(incoming.update_id, 0)
        text = with_turn_charge(reply, await self._charged(incoming, turn, mark), intake)
        try:
            await ui.discard()
            await ui.text_delta(text)
            await ui.end_message(cut=False)
        except Exception:
            log.exception("reply_failed", update_id=incoming.update_id)

    async def _finish(
        self, incoming: IncomingMessage, status: str, turn: TurnLog, mark: int | None
    ) -> TurnEnd | None:
        """The update marked, the turn logged with the ledger's charge for it; what the turn's
        notices need (one read serves both). The read and the marks are independent statements,
        sent together: the person's next message waits for the end of this turn."""
        error = None if status == "answered" else turn.outcome
        ending = asyncio.ensure_future(self._turn_end(incoming.user_id, mark))
        try:
            await asyncio.gather(
                *(
                    self._inbox.mark(update_id, status, error=error)
                    for update_id in (incoming.update_id, *incoming.extra_update_ids)
                )
            )
        finally:
            end = await ending
        if end is not None:
            turn.stats.charged_micros = end.charged_micros
        else:
            turn.stats.charged_micros += self._intake_charged.get(incoming.update_id, 0)
        self._intake_charged.pop(incoming.update_id, None)
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
        return end

    async def _turn_end(self, user_id: int, mark: int | None) -> TurnEnd | None:
        if self._notices is None or mark is None:
            return None
        return await self._notices.settle(user_id, mark)
