"""Conversations and their messages (Anthropic content blocks; files by reference only)."""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, func, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.direct import DirectSQL, Row
from bot.db.models import Conversation
from bot.services.file_catalog import CatalogEntry
from bot.services.tokens import StoredMessage, estimate_tokens

ContentBuilder = Callable[[list[StoredMessage], list[CatalogEntry]], list[dict[str, Any]]]


@dataclass(frozen=True)
class OpenedTurn:
    """What a turn starts from: one statement read it, one stored the new message."""

    conversation_id: int
    messages: list[StoredMessage]  # the conversation so far, ending with the new user message
    unavailable_files: set[str]


# Everything a turn starts from, in one statement: the active conversation (started if there is
# none), its messages (only those after $4 when it is the conversation $3 this process has
# cached), the user's newest files (for the note to Claude) and the Files API ids that are gone.
# In a group ($6 is the forum topic, 0 outside topics) the conversation is the (chat, topic)'s,
# with no user; the files are still the addressing person's.
_OPEN_TURN_TEMPLATE = """
    WITH existing AS (
        SELECT id FROM conversations
        WHERE {match} AND ended_at IS NULL
    ), created AS (
        INSERT INTO conversations (user_id, chat_id, message_thread_id)
        SELECT {values} WHERE NOT EXISTS (SELECT 1 FROM existing)
        ON CONFLICT DO NOTHING
        RETURNING id
    ), conversation AS (
        SELECT id FROM existing UNION ALL SELECT id FROM created
    )
    SELECT
        (SELECT id FROM conversation) AS conversation_id,
        (
            SELECT json_agg(json_build_array(m.role, m.content, m.token_estimate) ORDER BY m.id)
            FROM messages AS m
            WHERE m.conversation_id = (SELECT id FROM conversation)
              AND m.id > CASE WHEN m.conversation_id = $3 THEN $4 ELSE 0 END
        ) AS messages,
        (
            SELECT json_agg(f ORDER BY f.id) FROM (
                SELECT id, kind, source, mime_type, size_bytes, width, height,
                       metadata ->> 'prompt' AS prompt, filename,
                       left(metadata ->> 'transcript', 120) AS transcript,
                       metadata ->> 'pages' AS pages,
                       extract(epoch FROM created_at) AS created_at
                FROM user_files
                WHERE user_id = $1 AND deleted_at IS NULL
                ORDER BY id DESC
                LIMIT $5
            ) AS f
        ) AS files,
        (
            SELECT array_agg(claude_file_id) FROM user_files
            WHERE user_id = $1 AND claude_file_id IS NOT NULL
              AND (deleted_at IS NOT NULL OR expires_at < now())
        ) AS unavailable
"""
_OPEN_TURN = _OPEN_TURN_TEMPLATE.format(
    match="user_id = $1 AND chat_id = $2", values="$1, $2, NULL"
)
_OPEN_GROUP_TURN = _OPEN_TURN_TEMPLATE.format(
    match="user_id IS NULL AND chat_id = $2 AND coalesce(message_thread_id, 0) = $6",
    values="NULL, $2, nullif($6, 0)",
)
_INSERT_MESSAGE = """
    INSERT INTO messages (conversation_id, role, content, token_estimate, update_id, sender_id)
    VALUES ($1, $2, $3, $4, $5, $6)
    RETURNING id
"""


@dataclass
class _CachedConversation:
    conversation_id: int
    last_id: int
    messages: list[StoredMessage]
    tokens: int


ChatKey = tuple[int, int, int]  # (user_id, chat_id, 0) in private; (0, chat_id, topic) in groups


class ConversationCache:
    """Recently used conversations in memory, so a turn reads only the messages added since.

    Messages never change once written, and one user's turns run one at a time, so the cached
    list plus the rows with a higher id is the whole conversation, as long as it is still the
    chat's active one. Bounded by estimated tokens.
    """

    def __init__(self, max_tokens: int) -> None:
        self._max_tokens = max_tokens
        self._entries: OrderedDict[ChatKey, _CachedConversation] = OrderedDict()
        self._tokens = 0

    def take(self, chat: ChatKey) -> _CachedConversation | None:
        entry = self._entries.pop(chat, None)
        if entry is not None:
            self._tokens -= entry.tokens
        return entry

    def put(self, chat: ChatKey, entry: _CachedConversation) -> None:
        self._entries[chat] = entry
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
        self._sql = DirectSQL.of(sessionmaker)
        self._recent_files_limit = recent_files_limit
        self._cache = ConversationCache(cache_tokens)

    async def open_turn(
        self,
        user_id: int,
        chat_id: int,
        update_id: int,
        build_content: ContentBuilder,
        *,
        group_topic: int | None = None,
    ) -> OpenedTurn:
        """Find or start the conversation, load it, and append the user's message.

        `group_topic` (0 outside forum topics) makes it the group's shared conversation; the
        person's files are not listed there (the note would show them to the whole group).
        """
        key = (user_id, chat_id, 0) if group_topic is None else (0, chat_id, group_topic)
        cached = self._cache.take(key)
        params: list[Any] = [
            user_id,
            chat_id,
            cached.conversation_id if cached else 0,
            cached.last_id if cached else 0,
            self._recent_files_limit if group_topic is None else 0,
        ]
        if group_topic is not None:
            params.append(group_topic)
        sql = _OPEN_TURN if group_topic is None else _OPEN_GROUP_TURN
        found = await self._sql.fetchrow(sql, *params)
        if found is None or found["conversation_id"] is None:
            raise RuntimeError("no active conversation could be found or started")
        conversation_id = int(found["conversation_id"])
        reusable = cached is not None and cached.conversation_id == conversation_id
        messages = [*cached.messages] if cached and reusable else []
        messages.extend(_stored_messages(found["messages"]))
        content = jsonb_safe(build_content(messages, _catalog_entries(found["files"])))
        message = StoredMessage(
            role="user", content=content, token_estimate=estimate_tokens(content)
        )
        new_id = await self._insert(conversation_id, message, update_id, sender_id=user_id)
        messages.append(message)
        self._cache.put(
            key,
            _CachedConversation(
                conversation_id, new_id, messages, sum(m.token_estimate for m in messages)
            ),
        )
        return OpenedTurn(conversation_id, list(messages), set(found["unavailable"] or ()))

    async def end_active(
        self, user_id: int, chat_id: int, *, group_topic: int | None = None
    ) -> bool:
        """End the person's conversation in a private chat, or the group topic's (`group_topic`)."""
        owner = (
            Conversation.user_id == user_id
            if group_topic is None
            else and_(
                Conversation.user_id.is_(None),
                func.coalesce(Conversation.message_thread_id, 0) == group_topic,
            )
        )
        async with self._sessionmaker() as session:
            result = await session.execute(
                update(Conversation)
                .where(owner, Conversation.chat_id == chat_id, Conversation.ended_at.is_(None))
                .values(ended_at=func.now())
                .returning(Conversation.id)
            )
            ended = result.first() is not None
            await session.commit()
        return ended

    async def append(
        self, conversation_id: int, role: str, content: list[dict[str, Any]], update_id: int
    ) -> None:
        content = jsonb_safe(content)
        message = StoredMessage(role=role, content=content, token_estimate=estimate_tokens(content))
        await self._insert(conversation_id, message, update_id)

    async def _insert(
        self,
        conversation_id: int,
        message: StoredMessage,
        update_id: int,
        *,
        sender_id: int | None = None,
    ) -> int:
        return int(
            await self._sql.fetchval(
                _INSERT_MESSAGE,
                conversation_id,
                message.role,
                json.dumps(message.content),
                message.token_estimate,
                update_id,
                sender_id,
            )
        )


def jsonb_safe(value: Any) -> Any:
    """Postgres JSONB cannot hold NUL characters (a model may still produce them): drop them."""
    if isinstance(value, str):
        return value.replace("\x00", "") if "\x00" in value else value
    if isinstance(value, list):
        return [jsonb_safe(v) for v in value]
    if isinstance(value, dict):
        return {jsonb_safe(k): jsonb_safe(v) for k, v in value.items()}
    return value


def _stored_messages(rows: list[list[Any]] | None) -> list[StoredMessage]:
    """Rows of ``json_agg(json_build_array(role, content, token_estimate))``."""
    return [StoredMessage(role=r[0], content=r[1], token_estimate=r[2]) for r in rows or ()]


def _catalog_entries(rows: list[Row] | None) -> list[CatalogEntry]:
    """Rows of ``json_agg`` over the user's newest files, oldest first."""
    return [
        CatalogEntry(
            file_id=r["id"],
            kind=r["kind"],
            source=r["source"],
            mime_type=r["mime_type"],
            size_bytes=r["size_bytes"],
            width=r["width"],
            height=r["height"],
            prompt=r["prompt"] or None,
            filename=r.get("filename"),
            transcript=r.get("transcript"),
            pages=int(r["pages"]) if r.get("pages") else None,
            created_at=datetime.fromtimestamp(r["created_at"], UTC),
        )
        for r in rows or ()
    ]
