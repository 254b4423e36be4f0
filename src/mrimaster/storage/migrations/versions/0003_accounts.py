"""Accounts: one-time passwords, password change time, session idle time, shared log-in
failures (the rate limit of every server process).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    # plain ADD COLUMN (a constant default, or nullable): SQLite needs no table rebuild
    op.add_column("users", sa.Column("must_change_password", sa.Boolean, nullable=False,
                                     server_default=sa.false()))
    op.add_column("users", sa.Column("password_changed_at", TS, nullable=True))
    # accounts made before chose their passwords as far as we know: no forced change
    op.execute("UPDATE users SET password_changed_at = created_at")
    op.add_column("login_sessions", sa.Column("last_seen_at", TS, nullable=True))
    op.create_table(
        "login_failures",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("at", TS, nullable=False))
    op.create_index("ix_login_failures_key", "login_failures", ["key"])
    op.create_index("ix_login_failures_at", "login_failures", ["at"])


def downgrade() -> None:
    op.drop_table("login_failures")
    with op.batch_alter_table("login_sessions") as batch:
        batch.drop_column("last_seen_at")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("password_changed_at")
        batch.drop_column("must_change_password")
