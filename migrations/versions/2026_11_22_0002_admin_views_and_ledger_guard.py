"""admin views and ledger guard

The ledger (balance_operations) becomes append-only, and the admin-facing views are created:
admin_user_costs, admin_daily_costs, admin_image_generations and admin_balance_mismatches
(the reconciliation check: it returns no rows when every balance equals its history).

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

USD = "::numeric / 1000000"

LEDGER_GUARD_FUNCTION = """
CREATE FUNCTION balance_operations_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'balance_operations is append-only: % is not allowed', TG_OP;
END;
$$
"""

LEDGER_GUARD_TRIGGER = """
CREATE TRIGGER balance_operations_append_only
    BEFORE UPDATE OR DELETE ON balance_operations
    FOR EACH ROW EXECUTE FUNCTION balance_operations_append_only();
"""

ADMIN_USER_COSTS = f"""
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
    GREATEST(u.last_seen_at, calls.last_call_at) AS last_activity_at
FROM users u
LEFT JOIN (
    SELECT user_id,
           SUM(amount_micros) FILTER (WHERE kind IN ('topup', 'starter')) AS topups_micros
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

ADMIN_DAILY_COSTS = f"""
CREATE VIEW admin_daily_costs AS
SELECT
    (created_at AT TIME ZONE 'UTC')::date AS day,
    provider,
    model,
    purpose,
    COUNT(*) AS calls,
    COUNT(*) FILTER (WHERE status <> 'ok') AS failed_calls,
    SUM(input_tokens) AS input_tokens,
    SUM(output_tokens) AS output_tokens,
    SUM(cache_read_tokens) AS cache_read_tokens,
    SUM(cache_write_tokens) AS cache_write_tokens,
    SUM(image_count) AS images,
    SUM(provider_cost_micros){USD} AS provider_cost_usd,
    SUM(charged_micros){USD} AS charged_usd,
    (SUM(charged_micros) - SUM(provider_cost_micros)){USD} AS margin_usd
FROM api_calls
GROUP BY 1, 2, 3, 4
"""

ADMIN_IMAGE_GENERATIONS = f"""
CREATE VIEW admin_image_generations AS
SELECT
    f.id AS file_id,
    f.user_id,
    u.username,
    f.metadata ->> 'prompt' AS prompt,
    COALESCE(c.image_size, f.metadata ->> 'image_size') AS image_size,
    f.metadata ->> 'aspect_ratio' AS aspect_ratio,
    COALESCE(c.model, f.metadata ->> 'model') AS model,
    f.width,
    f.height,
    f.size_bytes,
    COALESCE(c.provider_cost_micros, 0){USD} AS provider_cost_usd,
    COALESCE(c.charged_micros, 0){USD} AS charged_usd,
    f.created_at
FROM user_files f
JOIN users u ON u.id = f.user_id
LEFT JOIN api_calls c ON c.id = f.api_call_id
WHERE f.kind = 'generated'
"""

ADMIN_BALANCE_MISMATCHES = """
CREATE VIEW admin_balance_mismatches AS
SELECT
    u.id AS user_id,
    u.balance_micros,
    COALESCE(ops.total, 0) AS ledger_sum_micros,
    u.held_micros,
    COALESCE(holds.open_total, 0) AS open_holds_micros,
    COALESCE(ops.last_after, 0) AS last_balance_after_micros
FROM users u
LEFT JOIN (
    SELECT user_id, SUM(amount_micros) AS total,
           (ARRAY_AGG(balance_after_micros ORDER BY id DESC))[1] AS last_after
    FROM balance_operations GROUP BY user_id
) ops ON ops.user_id = u.id
LEFT JOIN (
    SELECT user_id, SUM(amount_micros) AS open_total
    FROM balance_holds WHERE status = 'held' GROUP BY user_id
) holds ON holds.user_id = u.id
WHERE u.balance_micros <> COALESCE(ops.total, 0)
   OR u.held_micros <> COALESCE(holds.open_total, 0)
   OR u.balance_micros <> COALESCE(ops.last_after, 0)
"""

VIEWS = (
    "admin_balance_mismatches",
    "admin_image_generations",
    "admin_daily_costs",
    "admin_user_costs",
)


def upgrade() -> None:
    op.execute(LEDGER_GUARD_FUNCTION)
    op.execute(LEDGER_GUARD_TRIGGER)
    for ddl in (
        ADMIN_USER_COSTS,
        ADMIN_DAILY_COSTS,
        ADMIN_IMAGE_GENERATIONS,
        ADMIN_BALANCE_MISMATCHES,
    ):
        op.execute(ddl)


def downgrade() -> None:
    for view in VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {view}")
    op.execute("DROP TRIGGER IF EXISTS balance_operations_append_only ON balance_operations")
    op.execute("DROP FUNCTION IF EXISTS balance_operations_append_only()")
