"""Database engines that behave alike on SQLite and PostgreSQL.

SQLite: WAL journal, foreign keys on, a generous busy timeout, and every transaction opened
with ``BEGIN IMMEDIATE`` so that concurrent writers (operator replicas, the CLI) queue for the
write lock instead of failing mid-transaction. pysqlite's own transaction handling is turned off
for that (the SQLAlchemy-documented recipe).

PostgreSQL: psycopg 3; ``postgresql://`` URLs are mapped to the psycopg driver.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError

from strongroom.errors import ConfigError, StoreError

SQLITE_BUSY_TIMEOUT_S = 30.0


def normalize_url(url: str) -> str:
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


_URL_HELP = "e.g. sqlite:////var/lib/strongroom/strongroom.db or postgresql://user@host/db"


def create_store_engine(url: str) -> Engine:
    """An engine for the store at ``url``, which must name a SQLite file or a PostgreSQL server.

    Refused with a :class:`ConfigError`: an empty or unparsable URL, another database, and an
    in-memory SQLite store (``sqlite://``, ``sqlite:///:memory:``), which would forget every
    secret and its audit trail when the process ends.
    """
    if not url or not url.strip():
        raise ConfigError(f"the database URL is empty ({_URL_HELP})")
    try:
        parsed = make_url(normalize_url(url.strip()))
    except ArgumentError:
        raise ConfigError(
            f"STRONGROOM_DATABASE_URL is not a database URL ({_URL_HELP})"
        ) from None
    backend = parsed.get_backend_name()
    if backend not in {"sqlite", "postgresql"}:
        raise ConfigError(f"STRONGROOM_DATABASE_URL: unsupported database {backend!r}")
    if backend == "sqlite" and _in_memory(parsed.database, parsed.query):
        raise ConfigError(
            "STRONGROOM_DATABASE_URL names an in-memory SQLite database, which loses every "
            f"secret when the process ends: give a file ({_URL_HELP})"
        )
    try:
        if backend == "sqlite":
            engine = create_engine(
                parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S}, pool_pre_ping=False
            )
            _configure_sqlite(engine, None if parsed.query.get("uri") else parsed.database)
        else:
            engine = create_engine(parsed, pool_pre_ping=True, pool_size=5, max_overflow=5)
    except NoSuchModuleError:
        raise ConfigError(f"STRONGROOM_DATABASE_URL: no driver for {parsed.drivername}") from None
    return engine


def _in_memory(database: str | None, query: Mapping[str, Any]) -> bool:
    if not database or database == ":memory:":
        return True
    return bool(query.get("uri")) and "mode=memory" in database


def create_private_file(path: str) -> None:
    """Create ``path`` empty with mode 0600 unless it exists (it is then left as it is).

    SQLite would create the database with 0644 (less the umask): readable by every local user,
    and the ciphertext, the wrapped data keys and the audit log with it. Its ``-wal`` and
    ``-shm`` files take the database file's mode, so they are private too. An empty file is an
    empty SQLite database.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0),
                     0o600)  # fmt: skip
    except FileExistsError:
        return
    except OSError:
        return  # SQLite reports the same failure (no such directory, read-only) in its words
    os.close(fd)


def _configure_sqlite(engine: Engine, path: str | None) -> None:
    writer = _SQLITE_WRITERS[id(engine)] = _Writer()

    @event.listens_for(engine, "engine_disposed")
    def _on_dispose(_engine: Engine) -> None:
        with writer.lock:
            writer.drop(close=True)

    if path is not None:

        @event.listens_for(engine, "do_connect")
        def _before_connect(*_args: Any) -> None:
            create_private_file(path)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Straight to the driver: this runs on every transaction, and the write lock is what
        # we want from it, not a result.
        conn.connection.dbapi_connection.execute("BEGIN IMMEDIATE")  # type: ignore[union-attr]


def describe_db_error(exc: SQLAlchemyError) -> str:
    """One line about a database failure, without SQL parameters (they may hold ciphertext)."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        text = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else ""
        return f"{type(exc.orig).__name__}: {text}"[:300]
    return type(exc).__name__


class _Writer:
    """SQLite: the lock this process's transactions on one engine queue on, and the
    connection they run on.

    Threads queue on a Python lock before ``BEGIN IMMEDIATE``: SQLite's own busy handler sleeps
    in growing steps (up to 100 ms) while it waits for the write lock, which under a burst of
    concurrent reconciles costs far more than the work. Other processes still meet at SQLite's
    lock. As only the thread holding the lock runs a transaction, one connection serves them
    all, kept between transactions: checking one out of the pool and back (with the pool's
    reset) and building a :class:`Connection` cost ≈ 27 µs a transaction, as much as the SQLite
    work of a ``get``. It is an ordinary pooled connection, held: it sees other connections'
    commits as any would, and is dropped after a database error (the next transaction takes
    a fresh one) and when the engine is disposed.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.conn: Connection | None = None

    def connection(self, engine: Engine) -> Connection:
        """The kept connection (call holding ``lock``)."""
        if self.conn is None:
            self.conn = engine.connect()
        return self.conn

    def failed(self, exc: BaseException) -> None:
        """After a transaction raised (call holding ``lock``): a database error, or a rollback
        that did not finish, leaves the connection suspect, so the next one starts afresh."""
        if self.conn is not None and (
            isinstance(exc, SQLAlchemyError) or self.conn.in_transaction()
        ):
            self.drop()

    def drop(self, *, close: bool = False) -> None:
        """Give the connection back to the pool, or (``close``: the engine's pool was disposed,
        and would keep it open) close it (call holding ``lock``)."""
        if self.conn is not None:
            conn, self.conn = self.conn, None
            try:
                if close:
                    conn.invalidate()  # closes the driver's connection at once
                conn.close()
            except SQLAlchemyError:
                conn.invalidate()


_SQLITE_WRITERS: dict[int, _Writer] = {}
_BEFORE_COMMIT = "strongroom.before_commit"


def before_commit(conn: Connection, key: str, hook: Callable[[Connection], None]) -> None:
    """Run ``hook(conn)`` once, just before this transaction commits (by :func:`transaction`).

    Keyed, so that work that many statements share (moving the audit head) is done once per
    transaction; a transaction that rolls back runs nothing.
    """
    root = conn.get_transaction()
    hooks = conn.info.get(_BEFORE_COMMIT)
    if hooks is None or hooks[0] is not root:
        fresh: dict[str, Callable[[Connection], None]] = {}
        hooks = (root, fresh)
        conn.info[_BEFORE_COMMIT] = hooks
    hooks[1][key] = hook


def _run_before_commit(conn: Connection) -> None:
    hooks = conn.info.pop(_BEFORE_COMMIT, None)
    if hooks is not None and hooks[0] is conn.get_transaction():
        for hook in hooks[1].values():
            hook(conn)


@contextlib.contextmanager
def transaction(engine: Engine, held: Connection | None = None) -> Iterator[Connection]:
    """One transaction; database failures become a :class:`StoreError` with a clean message.

    On SQLite, one at a time per process and engine, on the connection :class:`_Writer` keeps.
    ``held``: a connection the caller keeps between transactions (the group-commit writer),
    instead of one from the pool (or the writer's) for this one.
    """
    writer = _SQLITE_WRITERS.get(id(engine)) if engine.dialect.name == "sqlite" else None
    try:
        with writer.lock if writer is not None else contextlib.nullcontext():
            if held is not None:
                conn = held
            else:
                conn = writer.connection(engine) if writer is not None else engine.connect()
            try:
                with conn.begin():
                    yield conn
                    _run_before_commit(conn)
            except BaseException as exc:
                if writer is not None and held is None:
                    writer.failed(exc)
                raise
            finally:
                if writer is None and held is None:
                    conn.close()
    except SQLAlchemyError as exc:
        raise StoreError(f"database error: {describe_db_error(exc)}") from None
