"""Conversations and their messages (Anthropic content blocks; files by reference only)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.agent.context import StoredMessage, estimate_tokens
from bot.db.models import Conversation, Message, UserFile
from bot.services.file_catalog import CatalogEntry, recent_files

ContentBuilder = Callable[[list[StoredMessage], list[CatalogEntry]], list[dict[str, Any]]]


@dataclass(frozen=True)
class OpenedTurn:
    """What a turn starts from, read and written in one transaction."""

    conversation_id: int
    messages: list[StoredMessage]  # the conversation so far, ending with the new user message
    unavailable_files: set[str]


_ACTIVE_CONVERSATION = text(
    """
    WITH existing AS (
        SELECT id FROM conversations
        WHERE user_id = :user_id AND chat_id = :chat_id AND ended_at IS NULL
    ), created AS (
        INSERT INTO conversations (user_id, chat_id)
        SELECT :user_id, :chat_id WHERE NOT EXISTS (SELECT 1 FROM existing)
        ON CONFLICT DO NOTHING
        RETURNING id
    )
    SELECT id FROM existing UNION ALL SELECT id FROM created
    """
)


@dataclass
class _CachedConversation:
    last_id: int
    messages: list[StoredMessage]
    tokens: int


class ConversationCache:
    """Recently used conversations in memory, so a turn reads only the messages added since.

    Messages never change once written, and one user's turns run one at a time, so the cached
    list plus the rows with a higher id is the whole conversation. Bounded by estimated tokens.
    """

    def __init__(self, max_tokens: int) -> None:
        self._max_tokens = max_tokens
        self._entries: OrderedDict[int, _CachedConversation] = OrderedDict()
        self._tokens = 0

    def take(self, conversation_id: int) -> _CachedConversation | None:
        entry = self._entries.pop(conversation_id, None)
        if entry is not None:
            self._tokens -= entry.tokens
        return entry

    def put(self, conversation_id: int, entry: _CachedConversation) -> None:
        self._entries[conversation_id] = entry
        self._tokens += entry.tokens
        while self._tokens > self._max_tokens and self._entries:
            _, evicted = self._entries.popitem(last=False)
            self._tokens -= evicted.tokens


class ConversationStore:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        recent_files_limit: int = 12,
        cache_tokens: int = 2_000_000,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._recent_files_limit = recent_files_limit
        self._cache = ConversationCache(cache_tokens)

    async def open_turn(
        self, user_id: int, chat_id: int, update_id: int, build_content: ContentBuilder
    ) -> OpenedTurn:
        """Find or start the conversation, load it, and append the user's message: one transaction."""
        async with self._sessionmaker() as session:
            conversation_id = int(
                (
                    await session.execute(
                        _ACTIVE_CONVERSATION, {"user_id": user_id, "chat_id": chat_id}
                    )
                ).scalar_one()
            )
            cached = self._cache.take(conversation_id)
            last_id, messages = (cached.last_id, cached.messages) if cached else (0, [])
            newer = await _load_after(session, conversation_id, last_id)
            messages = [*messages, *(m for _, m in newer)]
            files = await recent_files(session, user_id, self._recent_files_limit)
            gone = await _unavailable_files(session, user_id)
            content = jsonb_safe(build_content(messages, files))
            message = StoredMessage(
                role="user", content=content, token_estimate=estimate_tokens(content)
            )
            row = Message(
                conversation_id=conversation_id,
                role="user",
                content=content,
                token_estimate=message.token_estimate,
                update_id=update_id,
            )
            session.add(row)
            await session.flush()
            new_id = row.id
            await session.commit()
        messages.append(message)
        tokens = sum(m.token_estimate for m in messages)
        self._cache.put(conversation_id, _CachedConversation(new_id, messages, tokens))
        return OpenedTurn(conversation_id, list(messages), gone)

    async def active(self, user_id: int, chat_id: int) -> int:
        async with self._sessionmaker() as session:
            conversation_id = (
                await session.execute(
                    _ACTIVE_CONVERSATION, {"user_id": user_id, "chat_id": chat_id}
                )
            ).scalar_one()
            await session.commit()
        return int(conversation_id)

    async def end_active(self, user_id: int, chat_id: int) -> bool:
        async with self._sessionmaker() as session:
            result = await session.execute(
                update(Conversation)
                .where(
                    Conversation.user_id == user_id,
                    Conversation.chat_id == chat_id,
                    Conversation.ended_at.is_(None),
                )
                .values(ended_at=func.now())
                .returning(Conversation.id)
            )
            ended = result.first() is not None
            await session.commit()
        return ended

    async def load(self, conversation_id: int) -> list[StoredMessage]:
        async with self._sessionmaker() as session:
            return [m for _, m in await _load_after(session, conversation_id, 0)]

    async def append(
        self, conversation_id: int, role: str, content: list[dict[str, Any]], update_id: int
    ) -> None:
        content = jsonb_safe(content)
        async with self._sessionmaker() as session:
            session.add(
                Message(
                    conversation_id=conversation_id,
                    role=role,
                    content=content,
                    token_estimate=estimate_tokens(content),
                    update_id=update_id,
                )
            )
            await session.commit()

    async def unavailable_claude_files(self, user_id: int) -> set[str]:
        async with self._sessionmaker() as session:
            return await _unavailable_files(session, user_id)


def jsonb_safe(value: Any) -> Any:
    """Postgres JSONB cannot hold NUL characters (a model may still produce them): drop them."""
    if isinstance(value, str):
        return value.replace("\x00", "") if "\x00" in value else value
    if isinstance(value, list):
        return [jsonb_safe(v) for v in value]
    if isinstance(value, dict):
        return {jsonb_safe(k): jsonb_safe(v) for k, v in value.items()}
    return value


async def _load_after(
    session: AsyncSession, conversation_id: int, after_id: int
) -> list[tuple[int, StoredMessage]]:
    stmt = (
        select(Message.id, Message.role, Message.content, Message.token_estimate)
        .where(Message.conversation_id == conversation_id, Message.id > after_id)
        .order_by(Message.id)
    )
    rows = (await session.execute(stmt)).all()
    return [(r[0], StoredMessage(role=r[1], content=r[2], token_estimate=r[3])) for r in rows]


async def _unavailable_files(session: AsyncSession, user_id: int) -> set[str]:
    """Files API ids of this user's files that were deleted at Anthropic or have expired."""
    stmt = select(UserFile.claude_file_id).where(
        UserFile.user_id == user_id,
        UserFile.claude_file_id.is_not(None),
        (UserFile.deleted_at.is_not(None)) | (UserFile.expires_at < func.now()),
    )
    return {str(fid) for fid in (await session.execute(stmt)).scalars()}
