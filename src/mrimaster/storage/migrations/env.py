"""Alembic environment: runs on the connection :func:`mrimaster.storage.database.upgrade`
passes in ``config.attributes``."""

from alembic import context

from mrimaster.storage import mask_tables, pacs_tables  # noqa: F401  (their tables)
from mrimaster.storage.tables import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
