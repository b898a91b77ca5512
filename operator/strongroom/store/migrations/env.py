"""Alembic environment: runs against the engine Strongroom hands over in ``attributes``."""

from alembic import context
from sqlalchemy import text

from strongroom.store.schema import metadata

config = context.config
engine = config.attributes["engine"]

with engine.begin() as connection:
    if connection.dialect.name == "postgresql":
        # Replicas starting together must not race each other through the same migration.
        connection.execute(text("SELECT pg_advisory_xact_lock(7204115512)"))
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    context.run_migrations()
