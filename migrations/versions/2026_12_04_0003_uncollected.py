"""uncollected

A call whose reported cost exceeds its hold is charged as far as the available balance allows;
`api_calls.uncollected_micros` records the shortfall, so it is never dropped silently.

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "api_calls",
        sa.Column("uncollected_micros", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
    )
    op.create_check_constraint(
        op.f("ck_api_calls_uncollected_positive"), "api_calls", "uncollected_micros >= 0"
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_api_calls_uncollected_positive"), "api_calls", type_="check")
    op.drop_column("api_calls", "uncollected_micros")
