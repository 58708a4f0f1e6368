"""several replicas on one Postgres: replica leases, update claims and per-person turn leases

Design section 12. Each replica holds a lease (`replicas.lease_until`, renewed by a heartbeat);
the updates a replica took from Telegram are claimed by it (`update_claims`); a person's turn in
progress is held by one replica at a time (`turn_leases`, one row per person). A replica whose
lease ran out is dead: another releases its turns' holds and tells its people to resend.

Revision ID: 0020
Revises: 0017
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "replicas",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("hostname", sa.String(length=256), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_replicas")),
    )
    op.create_table(
        "update_claims",
        sa.Column("update_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("replica_id", sa.String(length=64), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("update_id", name=op.f("pk_update_claims")),
    )
    op.create_index("ix_update_claims_replica_id", "update_claims", ["replica_id"], unique=False)
    op.create_table(
        "turn_leases",
        sa.Column("user_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("update_id", sa.BigInteger(), nullable=False),
        sa.Column("replica_id", sa.String(length=64), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_turn_leases")),
    )
    op.create_index("ix_turn_leases_replica_id", "turn_leases", ["replica_id"], unique=False)
    op.create_index(
        "ix_inbound_updates_user_unfinished",
        "inbound_updates",
        ["user_id", "update_id"],
        unique=False,
        postgresql_where=sa.text("status IN ('received', 'processing')"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_inbound_updates_user_unfinished",
        table_name="inbound_updates",
        postgresql_where=sa.text("status IN ('received', 'processing')"),
    )
    op.drop_index("ix_turn_leases_replica_id", table_name="turn_leases")
    op.drop_table("turn_leases")
    op.drop_index("ix_update_claims_replica_id", table_name="update_claims")
    op.drop_table("update_claims")
    op.drop_table("replicas")
