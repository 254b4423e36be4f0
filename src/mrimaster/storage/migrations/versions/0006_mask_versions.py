"""Mask versions: doctors' corrections of the AI mask (never overwritten) and 2D tumour boxes.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mask_versions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("case_id", sa.Integer, sa.ForeignKey("cases.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("author", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("base_version", sa.Integer, nullable=True),
        sa.Column("digest", sa.String(64), nullable=True),
        sa.Column("label_convention", sa.String(16), nullable=False),
        sa.Column("box", sa.JSON, nullable=True),
        sa.Column("stats", sa.JSON, nullable=False),
        sa.Column("reviewed", sa.Boolean, nullable=False),
        sa.UniqueConstraint("case_id", "number", name="uq_mask_versions_case_number"))
    op.create_index("ix_mask_versions_case_id", "mask_versions", ["case_id"])


def downgrade() -> None:
    op.drop_index("ix_mask_versions_case_id", table_name="mask_versions")
    op.drop_table("mask_versions")
