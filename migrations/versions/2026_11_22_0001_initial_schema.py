"""initial schema

Revision ID: 0001
Revises: 
All tables of the admin-facing contract (design.md section 7).

"""
from collections.abc import Sequence
from typing import Union

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = '0001'
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('inbound_updates',
    sa.Column('update_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('user_id', sa.BigInteger(), nullable=True),
    sa.Column('chat_id', sa.BigInteger(), nullable=True),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=16), server_default=sa.text("'received'"), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('received_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('received', 'processing', 'answered', 'failed', 'interrupted', 'ignored', 'notified')", name=op.f('ck_inbound_updates_status_known')),
    sa.PrimaryKeyConstraint('update_id', name=op.f('pk_inbound_updates'))
    )
    op.create_index('ix_inbound_updates_unfinished', 'inbound_updates', ['status'], unique=False, postgresql_where=sa.text("status IN ('received', 'processing', 'interrupted')"))
    op.create_table('users',
    sa.Column('id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('username', sa.String(length=64), nullable=True),
    sa.Column('first_name', sa.String(length=256), nullable=True),
    sa.Column('language_code', sa.String(length=16), nullable=True),
    sa.Column('balance_micros', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('held_micros', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('is_blocked', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('balance_micros >= 0', name=op.f('ck_users_balance_non_negative')),
    sa.CheckConstraint('held_micros <= balance_micros', name=op.f('ck_users_held_within_balance')),
    sa.CheckConstraint('held_micros >= 0', name=op.f('ck_users_held_non_negative')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users'))
    )
    op.create_table('api_calls',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('user_id', sa.BigInteger(), nullable=False),
    sa.Column('provider', sa.String(length=16), nullable=False),
    sa.Column('model', sa.String(length=64), nullable=False),
    sa.Column('purpose', sa.String(length=32), nullable=False),
    sa.Column('tool_use_id', sa.String(length=128), nullable=True),
    sa.Column('input_tokens', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('output_tokens', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('cache_read_tokens', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('cache_write_tokens', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('image_count', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('image_size', sa.String(length=8), nullable=True),
    sa.Column('provider_cost_micros', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('charged_micros', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('price_version', sa.String(length=64), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('provider_cost_unknown', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('request_id', sa.String(length=128), nullable=True),
    sa.Column('duration_ms', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("provider IN ('anthropic', 'google')", name=op.f('ck_api_calls_provider_known')),
    sa.CheckConstraint("purpose IN ('chat', 'analyze_image', 'generate_image')", name=op.f('ck_api_calls_purpose_known')),
    sa.CheckConstraint("status IN ('ok', 'error', 'blocked')", name=op.f('ck_api_calls_status_known')),
    sa.CheckConstraint('charged_micros >= 0 AND provider_cost_micros >= 0', name=op.f('ck_api_calls_costs_positive')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_api_calls_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_calls'))
    )
    op.create_index('ix_api_calls_created_at', 'api_calls', ['created_at'], unique=False)
    op.create_index('ix_api_calls_user_id_created_at', 'api_calls', ['user_id', 'created_at'], unique=False)
    op.create_table('balance_holds',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('user_id', sa.BigInteger(), nullable=False),
    sa.Column('amount_micros', sa.BigInteger(), nullable=False),
    sa.Column('status', sa.String(length=16), server_default=sa.text("'held'"), nullable=False),
    sa.Column('captured_micros', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('idempotency_key', sa.String(length=200), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('settled_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('held', 'captured', 'released', 'expired')", name=op.f('ck_balance_holds_status_known')),
    sa.CheckConstraint('amount_micros > 0', name=op.f('ck_balance_holds_amount_positive')),
    sa.CheckConstraint('captured_micros >= 0 AND captured_micros <= amount_micros', name=op.f('ck_balance_holds_capture_within_hold')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_balance_holds_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_balance_holds')),
    sa.UniqueConstraint('idempotency_key', name=op.f('uq_balance_holds_idempotency_key'))
    )
    op.create_index('ix_balance_holds_open_expires_at', 'balance_holds', ['expires_at'], unique=False, postgresql_where=sa.text("status = 'held'"))
    op.create_index(op.f('ix_balance_holds_user_id'), 'balance_holds', ['user_id'], unique=False)
    op.create_table('conversations',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('user_id', sa.BigInteger(), nullable=False),
    sa.Column('chat_id', sa.BigInteger(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_conversations_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_conversations'))
    )
    op.create_index(op.f('ix_conversations_user_id'), 'conversations', ['user_id'], unique=False)
    op.create_index('uq_conversations_active_per_chat', 'conversations', ['user_id', 'chat_id'], unique=True, postgresql_where=sa.text('ended_at IS NULL'))
    op.create_table('balance_operations',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('user_id', sa.BigInteger(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('amount_micros', sa.BigInteger(), nullable=False),
    sa.Column('balance_after_micros', sa.BigInteger(), nullable=False),
    sa.Column('idempotency_key', sa.String(length=200), nullable=False),
    sa.Column('api_call_id', sa.BigInteger(), nullable=True),
    sa.Column('admin_user_id', sa.BigInteger(), nullable=True),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("kind IN ('starter', 'topup', 'charge', 'refund', 'adjustment')", name=op.f('ck_balance_operations_kind_known')),
    sa.CheckConstraint('balance_after_micros >= 0', name=op.f('ck_balance_operations_balance_after_non_negative')),
    sa.ForeignKeyConstraint(['api_call_id'], ['api_calls.id'], name=op.f('fk_balance_operations_api_call_id_api_calls')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_balance_operations_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_balance_operations')),
    sa.UniqueConstraint('idempotency_key', name=op.f('uq_balance_operations_idempotency_key'))
    )
    op.create_index('ix_balance_operations_user_id_id', 'balance_operations', ['user_id', 'id'], unique=False)
    op.create_table('messages',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('conversation_id', sa.BigInteger(), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('content', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('token_estimate', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('update_id', sa.BigInteger(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("role IN ('user', 'assistant')", name=op.f('ck_messages_role_known')),
    sa.ForeignKeyConstraint(['conversation_id'], ['conversations.id'], name=op.f('fk_messages_conversation_id_conversations')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_messages'))
    )
    op.create_index('ix_messages_conversation_id_id', 'messages', ['conversation_id', 'id'], unique=False)
    op.create_table('user_files',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('user_id', sa.BigInteger(), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('filename', sa.String(length=256), nullable=False),
    sa.Column('mime_type', sa.String(length=64), nullable=False),
    sa.Column('size_bytes', sa.BigInteger(), nullable=False),
    sa.Column('width', sa.Integer(), nullable=True),
    sa.Column('height', sa.Integer(), nullable=True),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('claude_file_id', sa.String(length=128), nullable=True),
    sa.Column('telegram_file_id', sa.String(length=256), nullable=True),
    sa.Column('telegram_file_unique_id', sa.String(length=128), nullable=True),
    sa.Column('api_call_id', sa.BigInteger(), nullable=True),
    sa.Column('metadata', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("kind IN ('photo', 'document', 'generated')", name=op.f('ck_user_files_kind_known')),
    sa.CheckConstraint("source IN ('user', 'assistant')", name=op.f('ck_user_files_source_known')),
    sa.ForeignKeyConstraint(['api_call_id'], ['api_calls.id'], name=op.f('fk_user_files_api_call_id_api_calls')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_user_files_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_user_files'))
    )
    op.create_index('ix_user_files_user_id_created_at', 'user_files', ['user_id', 'created_at'], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index('ix_user_files_user_id_created_at', table_name='user_files')
    op.drop_table('user_files')
    op.drop_index('ix_messages_conversation_id_id', table_name='messages')
    op.drop_table('messages')
    op.drop_index('ix_balance_operations_user_id_id', table_name='balance_operations')
    op.drop_table('balance_operations')
    op.drop_index('uq_conversations_active_per_chat', table_name='conversations', postgresql_where=sa.text('ended_at IS NULL'))
    op.drop_index(op.f('ix_conversations_user_id'), table_name='conversations')
    op.drop_table('conversations')
    op.drop_index(op.f('ix_balance_holds_user_id'), table_name='balance_holds')
    op.drop_index('ix_balance_holds_open_expires_at', table_name='balance_holds', postgresql_where=sa.text("status = 'held'"))
    op.drop_table('balance_holds')
    op.drop_index('ix_api_calls_user_id_created_at', table_name='api_calls')
    op.drop_index('ix_api_calls_created_at', table_name='api_calls')
    op.drop_table('api_calls')
    op.drop_table('users')
    op.drop_index('ix_inbound_updates_unfinished', table_name='inbound_updates', postgresql_where=sa.text("status IN ('received', 'processing', 'interrupted')"))
    op.drop_table('inbound_updates')
