"""image price drift: the per-image list price on each image call, and a view against usage cost

Images are charged from the usage the provider reported (design section 6). So that a price table
that drifted from the provider's bill is visible, each image call also records the per-image list
price of its size (`api_calls.image_list_price_micros`, null for other calls and for rows written
before this revision), and `admin_image_price_drift` sets the usage-based cost against it, per day
(UTC), provider, model, size and price version.

Revision ID: 0016
Revises: 0010
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

USD = "::numeric / 1000000"

ADMIN_IMAGE_PRICE_DRIFT = f"""
CREATE VIEW admin_image_price_drift AS
SELECT
    (created_at AT TIME ZONE 'UTC')::date AS day,
    provider,
    model,
    image_size,
    price_version,
    COUNT(*) AS images,
    COUNT(*) FILTER (WHERE image_output_tokens > 0) AS images_with_usage,
    SUM(image_output_tokens) AS image_output_tokens,
    ROUND(AVG(image_output_tokens) FILTER (WHERE image_output_tokens > 0), 1)
        AS avg_image_output_tokens,
    SUM(provider_cost_micros){USD} AS usage_cost_usd,
    SUM(image_list_price_micros){USD} AS list_price_usd,
    (SUM(provider_cost_micros) - SUM(image_list_price_micros)){USD} AS drift_usd,
    ROUND(
        100.0 * (SUM(provider_cost_micros) - SUM(image_list_price_micros))
        / NULLIF(SUM(image_list_price_micros), 0),
        2
    ) AS drift_pct
FROM api_calls
WHERE purpose = 'generate_image' AND status = 'ok' AND image_count > 0
  AND image_list_price_micros IS NOT NULL
GROUP BY 1, 2, 3, 4, 5
"""


def upgrade() -> None:
    op.add_column("api_calls", sa.Column("image_list_price_micros", sa.BigInteger(), nullable=True))
    op.create_check_constraint(
        op.f("ck_api_calls_image_list_price_non_negative"),
        "api_calls",
        "image_list_price_micros >= 0",
    )
    op.execute(ADMIN_IMAGE_PRICE_DRIFT)


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS admin_image_price_drift")
    op.drop_constraint(
        op.f("ck_api_calls_image_list_price_non_negative"), "api_calls", type_="check"
    )
    op.drop_column("api_calls", "image_list_price_micros")
