"""PACS link: the encrypted original identifiers of a case pulled from the PACS, and the
record of each send of its results.

Revision ID: 0004_pacs_links
Revises: 0003
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_pacs_links"
down_revision = "0003"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "pacs_links",
        sa.Column("case_id", sa.Integer, sa.ForeignKey("cases.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("blob", sa.LargeBinary, nullable=False),
        sa.Column("created_at", TS, nullable=False))
    op.create_table(
        "pacs_sends",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("case_id", sa.Integer, sa.ForeignKey("cases.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("by", sa.String(64), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text, nullable=False))
    op.create_index("ix_pacs_sends_case_id", "pacs_sends", ["case_id"])


def downgrade() -> None:
    op.drop_table("pacs_sends")
    op.drop_table("pacs_links")
