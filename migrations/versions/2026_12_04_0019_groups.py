"""groups: one conversation per group chat and forum topic, owned by no single person

Design section 11: a group's conversation has no `user_id` (everyone addressing the bot there
shares it; `messages.sender_id` says who wrote what), and there is at most one active
conversation per (chat, topic). Private conversations keep their index on (user_id, chat_id).

Revision ID: 0019
Revises: 0020
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GROUP_INDEX = "uq_conversations_active_per_topic"


def upgrade() -> None:
    op.alter_column("conversations", "user_id", existing_type=sa.BigInteger(), nullable=True)
    op.create_index(
        GROUP_INDEX,
        "conversations",
        ["chat_id", sa.text("coalesce(message_thread_id, 0)")],
        unique=True,
        postgresql_where=sa.text("ended_at IS NULL AND user_id IS NULL"),
    )


def downgrade() -> None:
    op.drop_index(GROUP_INDEX, table_name="conversations")
    op.execute(
        "DELETE FROM messages WHERE conversation_id IN "
        "(SELECT id FROM conversations WHERE user_id IS NULL)"
    )
    op.execute("DELETE FROM conversations WHERE user_id IS NULL")
    op.alter_column("conversations", "user_id", existing_type=sa.BigInteger(), nullable=False)
