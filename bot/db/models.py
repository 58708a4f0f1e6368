"""Typed SQLAlchemy models. Table and column names are the admin-facing contract (design.md §7)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSONB, list[Any]: JSONB}


def _now() -> Any:
    return func.now()


class User(Base):
    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint("balance_micros >= 0", name="balance_non_negative"),
        CheckConstraint("held_micros >= 0", name="held_non_negative"),
        CheckConstraint("held_micros <= balance_micros", name="held_within_balance"),
        CheckConstraint("daily_limit_micros > 0", name="daily_limit_positive"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    username: Mapped[str | None] = mapped_column(String(64))
    first_name: Mapped[str | None] = mapped_column(String(256))
    language_code: Mapped[str | None] = mapped_column(String(16))
    balance_micros: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    held_micros: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    is_blocked: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    locale: Mapped[str | None] = mapped_column(String(16))
    chat_model: Mapped[str | None] = mapped_column(String(64))
    daily_limit_micros: Mapped[int | None] = mapped_column(BigInteger)
    receipts: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    low_balance_notified: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))


class Conversation(Base):
    __tablename__ = "conversations"
    __table_args__ = (
        Index(
            "uq_conversations_active_per_chat",
            "user_id",
            "chat_id",
            unique=True,
            postgresql_where=text("ended_at IS NULL"),
        ),
        Index(
            "uq_conversations_active_per_topic",
            "chat_id",
            text("coalesce(message_thread_id, 0)"),
            unique=True,
            postgresql_where=text("ended_at IS NULL AND user_id IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    # None in a group: its conversation belongs to the (chat, topic), not to one person.
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    chat_id: Mapped[int] = mapped_column(BigInteger)
    message_thread_id: Mapped[int | None] = mapped_column(BigInteger)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        CheckConstraint("role IN ('user', 'assistant')", name="role_known"),
        Index("ix_messages_conversation_id_id", "conversation_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id"))
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[list[Any]] = mapped_column(JSONB)
    token_estimate: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    update_id: Mapped[int | None] = mapped_column(BigInteger)
    sender_id: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())


class UserFile(Base):
    __tablename__ = "user_files"
    __table_args__ = (
        CheckConstraint("source IN ('user', 'assistant')", name="source_known"),
        CheckConstraint(
            "kind IN ('photo', 'document', 'generated', 'pdf', 'text', 'voice', 'audio')",
            name="kind_known",
        ),
        Index("ix_user_files_user_id_created_at", "user_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    source: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(16))
    filename: Mapped[str] = mapped_column(String(256))
    mime_type: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    claude_file_id: Mapped[str | None] = mapped_column(String(128))
    telegram_file_id: Mapped[str | None] = mapped_column(String(256))
    telegram_file_unique_id: Mapped[str | None] = mapped_column(String(128))
    api_call_id: Mapped[int | None] = mapped_column(ForeignKey("api_calls.id"))
    metadata_: Mapped[dict[str, Any]] = mapped_column(
        "metadata", JSONB, server_default=text("'{}'::jsonb")
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ApiCall(Base):
    __tablename__ = "api_calls"
    __table_args__ = (
        CheckConstraint("provider IN ('anthropic', 'google', 'openai')", name="provider_known"),
        CheckConstraint(
            "purpose IN ('chat', 'analyze_image', 'generate_image', 'transcribe', 'read_document')",
            name="purpose_known",
        ),
        CheckConstraint(
            "status IN ('ok', 'error', 'blocked', 'truncated', 'cancelled')", name="status_known"
        ),
        CheckConstraint("uncollected_micros >= 0", name="uncollected_non_negative"),
        CheckConstraint("image_list_price_micros >= 0", name="image_list_price_non_negative"),
        CheckConstraint("charged_micros >= 0 AND provider_cost_micros >= 0", name="costs_positive"),
        Index("ix_api_calls_user_id_created_at", "user_id", "created_at"),
        Index("ix_api_calls_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    provider: Mapped[str] = mapped_column(String(16))
    model: Mapped[str] = mapped_column(String(64))
    purpose: Mapped[str] = mapped_column(String(32))
    tool_use_id: Mapped[str | None] = mapped_column(String(128))
    input_tokens: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    output_tokens: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    cache_read_tokens: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    cache_write_tokens: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    image_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    image_size: Mapped[str | None] = mapped_column(String(8))
    image_output_tokens: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    # The per-image list price of an image call's size (admin_image_price_drift compares it).
    image_list_price_micros: Mapped[int | None] = mapped_column(BigInteger)
    web_search_requests: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    web_fetch_requests: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    provider_cost_micros: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    charged_micros: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    # What the person could not be charged: the reported cost beyond the hold and the balance.
    uncollected_micros: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    price_version: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    provider_cost_unknown: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    request_id: Mapped[str | None] = mapped_column(String(128))
    duration_ms: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())


class BalanceOperation(Base):
    """The ledger. Append-only: a trigger rejects UPDATE and DELETE."""

    __tablename__ = "balance_operations"
    __table_args__ = (
        CheckConstraint(
            "kind IN ('starter', 'topup', 'charge', 'refund', 'adjustment', 'purchase', "
            "'purchase_refund')",
            name="kind_known",
        ),
        CheckConstraint("balance_after_micros >= 0", name="balance_after_non_negative"),
        Index("ix_balance_operations_user_id_id", "user_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    kind: Mapped[str] = mapped_column(String(16))
    amount_micros: Mapped[int] = mapped_column(BigInteger)
    balance_after_micros: Mapped[int] = mapped_column(BigInteger)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    api_call_id: Mapped[int | None] = mapped_column(ForeignKey("api_calls.id"))
    admin_user_id: Mapped[int | None] = mapped_column(BigInteger)
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())


class BalanceHold(Base):
    __tablename__ = "balance_holds"
    __table_args__ = (
        CheckConstraint(
            "status IN ('held', 'captured', 'released', 'expired')", name="status_known"
        ),
        CheckConstraint("amount_micros > 0", name="amount_positive"),
        CheckConstraint(
            "captured_micros >= 0 AND captured_micros <= amount_micros", name="capture_within_hold"
        ),
        Index(
            "ix_balance_holds_open_expires_at",
            "expires_at",
            postgresql_where=text("status = 'held'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    amount_micros: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), server_default=text("'held'"))
    captured_micros: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    settled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class InboundUpdate(Base):
    __tablename__ = "inbound_updates"
    __table_args__ = (
        CheckConstraint(
            "status IN ('received', 'processing', 'answered', 'failed', 'interrupted', "
            "'ignored', 'notified')",
            name="status_known",
        ),
        Index(
            "ix_inbound_updates_unfinished",
            "status",
            postgresql_where=text("status IN ('received', 'processing', 'interrupted')"),
        ),
    )

    update_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    user_id: Mapped[int | None] = mapped_column(BigInteger)
    chat_id: Mapped[int | None] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), server_default=text("'received'"))
    error: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Payment(Base):
    """One Telegram Stars payment, credited once per `telegram_payment_charge_id`.

    `refunding`: the bot asked Telegram to return the Stars and holds the credit
    (`refund_hold_id`) until it knows the answer; see bot/services/payments.py."""

    __tablename__ = "payments"
    __table_args__ = (
        CheckConstraint("status IN ('paid', 'refunding', 'refunded')", name="status_known"),
        CheckConstraint("stars > 0", name="stars_positive"),
        CheckConstraint("credited_micros >= 0", name="credit_non_negative"),
        Index("ix_payments_user_id_created_at", "user_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    telegram_payment_charge_id: Mapped[str] = mapped_column(String(256), unique=True)
    stars: Mapped[int] = mapped_column(Integer)
    credited_micros: Mapped[int] = mapped_column(BigInteger)
    invoice_payload: Mapped[str | None] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), server_default=text("'paid'"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    refunded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    refund_hold_id: Mapped[int | None] = mapped_column(ForeignKey("balance_holds.id"))
