"""payments: the refund-in-progress state, admin_payments, and purchases in admin_user_costs

A refund the bot has asked Telegram for is `refunding` until Telegram's answer is known, with the
credit held (`refund_hold_id`), so a crash between the steps resumes to one state. The view
`admin_payments` counts Stars income per UTC day (purchases on the day paid, refunds on the day
refunded); `admin_user_costs` gains `total_purchased_usd` (Stars purchases net of refunds).

Revision ID: 0017
Revises: 0016
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

USD = "::numeric / 1000000"

ADMIN_PAYMENTS = f"""
CREATE VIEW admin_payments AS
WITH paid AS (
    SELECT (created_at AT TIME ZONE 'UTC')::date AS day,
           COUNT(*) AS payments, SUM(stars) AS stars, SUM(credited_micros) AS credited_micros
    FROM payments GROUP BY 1
), refunded AS (
    SELECT (p.refunded_at AT TIME ZONE 'UTC')::date AS day,
           COUNT(*) AS refunds, SUM(p.stars) AS stars,
           SUM(-COALESCE(o.amount_micros, 0)) AS refunded_micros
    FROM payments p
    LEFT JOIN balance_operations o
        ON o.idempotency_key = 'stars-refund:' || p.telegram_payment_charge_id
    WHERE p.status = 'refunded' GROUP BY 1
)
SELECT COALESCE(paid.day, refunded.day) AS day,
       COALESCE(paid.payments, 0) AS payments,
       COALESCE(paid.stars, 0) AS stars,
       COALESCE(paid.credited_micros, 0){USD} AS credited_usd,
       COALESCE(refunded.refunds, 0) AS refunds,
       COALESCE(refunded.stars, 0) AS refunded_stars,
       COALESCE(refunded.refunded_micros, 0){USD} AS refunded_usd
FROM paid FULL JOIN refunded ON refunded.day = paid.day
"""


def admin_user_costs(with_purchases: bool) -> str:
    """The view of revision 0002, with `total_purchased_usd` last when `with_purchases`."""
    purchased_column = (
        f",\n    COALESCE(ops.purchased_micros, 0){USD} AS total_purchased_usd"
        if with_purchases
        else ""
    )
    purchased_sum = (
        ",\n           SUM(amount_micros) FILTER (WHERE kind IN ('purchase', 'purchase_refund'))"
        "\n               AS purchased_micros"
        if with_purchases
        else ""
    )
    return f"""
CREATE VIEW admin_user_costs AS
SELECT
    u.id AS user_id,
    u.username,
    u.first_name,
    u.balance_micros{USD} AS balance_usd,
    u.held_micros{USD} AS held_usd,
    COALESCE(ops.topups_micros, 0){USD} AS total_topups_usd,
    COALESCE(calls.charged_micros, 0){USD} AS total_charged_usd,
    COALESCE(calls.provider_cost_micros, 0){USD} AS total_provider_cost_usd,
    (COALESCE(calls.charged_micros, 0) - COALESCE(calls.provider_cost_micros, 0)){USD}
        AS margin_usd,
    COALESCE(calls.images_generated, 0) AS images_generated,
    COALESCE(calls.calls, 0) AS api_calls,
    u.is_blocked,
    u.created_at,
    GREATEST(u.last_seen_at, calls.last_call_at) AS last_activity_at{purchased_column}
FROM users u
LEFT JOIN (
    SELECT user_id,
           SUM(amount_micros) FILTER (WHERE kind IN ('topup', 'starter'))
               AS topups_micros{purchased_sum}
    FROM balance_operations GROUP BY user_id
) ops ON ops.user_id = u.id
LEFT JOIN (
    SELECT user_id,
           COUNT(*) AS calls,
           SUM(charged_micros) AS charged_micros,
           SUM(provider_cost_micros) AS provider_cost_micros,
           SUM(image_count) FILTER (WHERE purpose = 'generate_image' AND status = 'ok')
               AS images_generated,
           MAX(created_at) AS last_call_at
    FROM api_calls GROUP BY user_id
) calls ON calls.user_id = u.id
"""


def upgrade() -> None:
    op.drop_constraint(op.f("ck_payments_status_known"), "payments", type_="check")
    op.create_check_constraint(
        op.f("ck_payments_status_known"), "payments", "status IN ('paid', 'refunding', 'refunded')"
    )
    op.add_column("payments", sa.Column("refund_hold_id", sa.BigInteger(), nullable=True))
    op.create_foreign_key(
        op.f("fk_payments_refund_hold_id_balance_holds"),
        "payments",
        "balance_holds",
        ["refund_hold_id"],
        ["id"],
    )
    op.execute("DROP VIEW admin_user_costs")
    op.execute(admin_user_costs(with_purchases=True))
    op.execute(ADMIN_PAYMENTS)


def downgrade() -> None:
    op.execute("DROP VIEW admin_payments")
    op.execute("DROP VIEW admin_user_costs")
    op.execute(admin_user_costs(with_purchases=False))
    op.drop_constraint(
        op.f("fk_payments_refund_hold_id_balance_holds"), "payments", type_="foreignkey"
    )
    op.drop_column("payments", "refund_hold_id")
    op.drop_constraint(op.f("ck_payments_status_known"), "payments", type_="check")
    op.create_check_constraint(
        op.f("ck_payments_status_known"), "payments", "status IN ('paid', 'refunded')"
    )
