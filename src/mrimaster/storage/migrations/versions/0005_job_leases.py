"""Job leases: the worker that owns a running job (a token per claim) and until when its
lease holds; a job whose lease expired is taken over by another worker.

Revision ID: 0005
Revises: 0004_pacs_links
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004_pacs_links"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("jobs", sa.Column("owner", sa.String(128), nullable=True))
    op.add_column("jobs", sa.Column("lease_until", TS, nullable=True))
    op.add_column("jobs", sa.Column("claimed_at", TS, nullable=True))
    # a job an older version left running has no lease: it expired with its last news
    op.execute("UPDATE jobs SET lease_until = updated_at WHERE state = 'running'")
    op.create_index("ix_jobs_state_lease", "jobs", ["state", "lease_until"])


def downgrade() -> None:
    op.drop_index("ix_jobs_state_lease", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("claimed_at")
        batch.drop_column("lease_until")
        batch.drop_column("owner")
