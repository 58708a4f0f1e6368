"""this release's schema: payments, per-person choices, new kinds, purposes and usage fields

Design sections 6, 7, 10 and 11: a `payments` table for Telegram Stars, the person's own choices on
`users` (locale, chat model, daily limit, receipts, the low-balance notice), forum topics and
senders for groups, the new file kinds, providers, purposes and statuses of `api_calls` with the
usage fields they report, and the ledger kinds of Stars purchases and their refunds.

Revision ID: 0010
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHECKS_NEW = {
    ("user_files", "kind_known"): (
        "kind IN ('photo', 'document', 'generated', 'pdf', 'text', 'voice', 'audio')"
    ),
    ("api_calls", "provider_known"): "provider IN ('anthropic', 'google', 'openai')",
    ("api_calls", "purpose_known"): (
        "purpose IN ('chat', 'analyze_image', 'generate_image', 'transcribe', 'read_document')"
    ),
    ("api_calls", "status_known"): (
        "status IN ('ok', 'error', 'blocked', 'truncated', 'cancelled')"
    ),
    ("balance_operations", "kind_known"): (
        "kind IN ('starter', 'topup', 'charge', 'refund', 'adjustment', 'purchase', "
        "'purchase_refund')"
    ),
}

CHECKS_OLD = {
    ("user_files", "kind_known"): "kind IN ('photo', 'document', 'generated')",
    ("api_calls", "provider_known"): "provider IN ('anthropic', 'google')",
    ("api_calls", "purpose_known"): "purpose IN ('chat', 'analyze_image', 'generate_image')",
    ("api_calls", "status_known"): "status IN ('ok', 'error', 'blocked')",
    ("balance_operations", "kind_known"): (
        "kind IN ('starter', 'topup', 'charge', 'refund', 'adjustment')"
    ),
}


def _replace_checks(checks: dict[tuple[str, str], str]) -> None:
    for (table, name), condition in checks.items():
        op.drop_constraint(op.f(f"ck_{table}_{name}"), table, type_="check")
        op.create_check_constraint(op.f(f"ck_{table}_{name}"), table, condition)


def _bigint_zero(name: str) -> sa.Column[int]:
    return sa.Column(name, sa.BigInteger(), server_default=sa.text("0"), nullable=False)


def upgrade() -> None:
    op.add_column("users", sa.Column("locale", sa.String(length=16), nullable=True))
    op.add_column("users", sa.Column("chat_model", sa.String(length=64), nullable=True))
    op.add_column("users", sa.Column("daily_limit_micros", sa.BigInteger(), nullable=True))
    op.add_column(
        "users",
        sa.Column("receipts", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )
    op.add_column(
        "users",
        sa.Column(
            "low_balance_notified", sa.Boolean(), server_default=sa.text("false"), nullable=False
        ),
    )
    op.create_check_constraint(
        op.f("ck_users_daily_limit_positive"), "users", "daily_limit_micros > 0"
    )
    op.add_column("conversations", sa.Column("message_thread_id", sa.BigInteger(), nullable=True))
    op.add_column("messages", sa.Column("sender_id", sa.BigInteger(), nullable=True))
    for column in (
        "image_output_tokens",
        "web_search_requests",
        "web_fetch_requests",
        "uncollected_micros",
    ):
        op.add_column("api_calls", _bigint_zero(column))
    op.create_check_constraint(
        op.f("ck_api_calls_uncollected_non_negative"), "api_calls", "uncollected_micros >= 0"
    )
    _replace_checks(CHECKS_NEW)
    op.create_table(
        "payments",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("telegram_payment_charge_id", sa.String(length=256), nullable=False),
        sa.Column("stars", sa.Integer(), nullable=False),
        sa.Column("credited_micros", sa.BigInteger(), nullable=False),
        sa.Column("invoice_payload", sa.String(length=128), nullable=True),
        sa.Column("status", sa.String(length=16), server_default=sa.text("'paid'"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("refunded_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("status IN ('paid', 'refunded')", name=op.f("ck_payments_status_known")),
        sa.CheckConstraint("stars > 0", name=op.f("ck_payments_stars_positive")),
        sa.CheckConstraint("credited_micros >= 0", name=op.f("ck_payments_credit_non_negative")),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_payments_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payments")),
        sa.UniqueConstraint(
            "telegram_payment_charge_id", name=op.f("uq_payments_telegram_payment_charge_id")
        ),
    )
    op.create_index("ix_payments_user_id_created_at", "payments", ["user_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_payments_user_id_created_at", table_name="payments")
    op.drop_table("payments")
    _replace_checks(CHECKS_OLD)
    op.drop_constraint(op.f("ck_api_calls_uncollected_non_negative"), "api_calls", type_="check")
    for column in (
        "uncollected_micros",
        "web_fetch_requests",
        "web_search_requests",
        "image_output_tokens",
    ):
        op.drop_column("api_calls", column)
    op.drop_column("messages", "sender_id")
    op.drop_column("conversations", "message_thread_id")
    op.drop_constraint(op.f("ck_users_daily_limit_positive"), "users", type_="check")
    for column in (
        "low_balance_notified",
        "receipts",
        "daily_limit_micros",
        "chat_model",
        "locale",
    ):
        op.drop_column("users", column)
