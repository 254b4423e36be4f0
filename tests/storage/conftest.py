"""The app tests' database fixtures (SQLite and a real PostgreSQL) and served models, for the
storage tests that run the app's start-up and store."""

from tests.serving.conftest import db_url, postgres_url, served_models

__all__ = ["db_url", "postgres_url", "served_models"]
