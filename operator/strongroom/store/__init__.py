"""The store: SQLAlchemy schema, engines, queries and Alembic migrations. No cryptography."""

from strongroom.store.engine import create_store_engine, transaction
from strongroom.store.migrate import ensure_schema, upgrade

__all__ = ["create_store_engine", "ensure_schema", "transaction", "upgrade"]
