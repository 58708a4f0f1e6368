"""Conversations and their messages (Anthropic content blocks; files by reference only)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.agent.context import StoredMessage, estimate_tokens
from bot.db.models import Conversation, Message, UserFile

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


class ConversationStore:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker

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
        stmt = (
            select(Message.role, Message.content, Message.token_estimate)
            .where(Message.conversation_id == conversation_id)
            .order_by(Message.id)
        )
        async with self._sessionmaker() as session:
            rows = (await session.execute(stmt)).all()
        return [StoredMessage(role=r[0], content=r[1], token_estimate=r[2]) for r in rows]

    async def append(
        self, conversation_id: int, role: str, content: list[dict[str, Any]], update_id: int
    ) -> None:
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
        stmt = select(UserFile.claude_file_id).where(
            UserFile.user_id == user_id,
            UserFile.claude_file_id.is_not(None),
            (UserFile.deleted_at.is_not(None)) | (UserFile.expires_at < func.now()),
        )
        async with self._sessionmaker() as session:
            return {str(fid) for fid in (await session.execute(stmt)).scalars()}
