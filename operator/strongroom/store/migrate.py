"""Schema migrations with Alembic, run programmatically (``strongroom db upgrade``)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from strongroom.errors import ConfigError, StoreError
from strongroom.store.engine import describe_db_error

MIGRATIONS = Path(__file__).with_name("migrations")


def _config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def head_revision() -> str:
    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    assert head is not None  # noqa: S101 - the package always ships migrations
    return head


def current_revision(engine: Engine) -> str | None:
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot open the database: {describe_db_error(exc)}") from None


def upgrade(engine: Engine) -> tuple[str | None, str]:
    """Upgrade to head; returns (revision before, revision after)."""
    before = current_revision(engine)
    try:
        command.upgrade(_config(engine), "head")
    except SQLAlchemyError as exc:
        raise StoreError(f"migration failed: {describe_db_error(exc)}") from None
    return before, head_revision()


def ensure_schema(engine: Engine, *, auto_migrate: bool) -> None:
    """Make sure the schema is current, upgrading it when allowed."""
    current = current_revision(engine)
    head = head_revision()
    if current == head:
        return
    if auto_migrate:
        upgrade(engine)
        return
    raise ConfigError(
        f"the database schema is at {current or 'nothing'} but this Strongroom needs {head}: "
        "run `strongroom db upgrade`"
    )
