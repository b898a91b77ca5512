"""Hot-path statements on SQLite: compiled once, run on the driver's own cursor.

Why: measured on SQLite (``python -m bench.store``, profiled), SQLAlchemy Core's ``execute``
costs ≈ 30 µs of Python per statement (execution context, parameter processing, result
metadata, events) where ``sqlite3``'s own ``execute`` of a statement it has already prepared
costs ≈ 2 µs. A ``set`` runs eight statements and a ``get`` four: before this module that was
half the CPU of every call.

What it keeps. The statement is still a SQLAlchemy Core construct built from
:mod:`strongroom.store.schema` (one source of truth), compiled by SQLAlchemy for the
connection's dialect, with the same bind and result processors SQLAlchemy applies (SQLite keeps
datetimes as text). It runs inside the :class:`~sqlalchemy.Connection`'s own transaction, so
``BEGIN IMMEDIATE``, savepoints (group commit), before-commit hooks (the audit head) and the
commit are SQLAlchemy's as before. A driver error is raised as SQLAlchemy's own
:class:`~sqlalchemy.exc.DBAPIError` subclass, without parameters, so every caller handles it as
it did (``transaction`` turns it into a :class:`~strongroom.errors.StoreError`). ``sqlite3``
keeps a cache of prepared statements per connection keyed by the SQL text, so each statement
is parsed and planned once per connection.

What it skips: SQLAlchemy's execution events (``before_cursor_execute``; nothing in Strongroom
listens) and its statement logging (``echo``).

Where: SQLite only, and only inside a transaction. On PostgreSQL the statement goes through
``Connection.execute`` as before: a server round trip costs more than SQLAlchemy does there,
and SQLAlchemy's handling of a dropped connection (invalidating it in the pool) is worth
keeping. Rows come back as plain tuples either way, so callers read them by position.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from sqlalchemy import Connection, Delete, Insert, Select, Update
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, StatementError

Statement = Select[Any] | Insert | Update | Delete
Params = Mapping[str, Any]
_Processor = Callable[[Any], Any]


@dataclasses.dataclass(frozen=True)
class _Compiled:
    """One statement as the driver takes it: SQL text, where each parameter comes from."""

    sql: str
    names: tuple[str, ...]  # the positional parameters, in order
    accepted: frozenset[str]  # the parameters a caller may give (the names, less literals)
    literals: Mapping[str, Any]  # values bound in the statement itself (``id == 1``)
    binds: tuple[tuple[int, _Processor], ...]  # (position, processor) where one applies
    results: tuple[tuple[int, _Processor], ...]  # (column, processor) where one applies
    error: type[Exception]  # the driver's base exception class

    def parameters(self, params: Params) -> list[Any]:
        if not params.keys() <= self.accepted:  # a value the statement would silently drop
            unknown = sorted(set(params) - self.accepted)
            raise ValueError(f"the statement takes no parameter {unknown[0]!r}: {self.sql}")
        literals = self.literals
        if literals:
            values = [params[n] if n in params else literals[n] for n in self.names]
        else:
            values = [params[n] for n in self.names]
        for position, process in self.binds:
            values[position] = process(values[position])
        return values

    def row(self, raw: tuple[Any, ...]) -> tuple[Any, ...]:
        if not self.results:
            return raw  # sqlite3 rows are tuples already
        values = list(raw)
        for column, process in self.results:
            values[column] = process(values[column])
        return tuple(values)


_NONE: Params = {}


class Prepared:
    """A Core statement run on SQLite's cursor inside a transaction (``Connection.execute``
    elsewhere). ``column_keys``: the columns an INSERT sets (all of them given on each call)."""

    def __init__(self, statement: Statement, *, column_keys: Sequence[str] | None = None) -> None:
        self.statement = statement
        self._column_keys = list(column_keys) if column_keys is not None else None
        self._compiled: _Compiled | None = None
        self._lock = threading.Lock()

    # -- the calls ------------------------------------------------------------------------

    def all(self, conn: Connection, params: Params = _NONE) -> list[tuple[Any, ...]]:
        compiled = self._fast(conn)
        if compiled is None:
            return [tuple(row) for row in conn.execute(self.statement, dict(params))]
        rows = self._run(conn, compiled, params).fetchall()
        return [compiled.row(row) for row in rows] if compiled.results else rows

    def first(self, conn: Connection, params: Params = _NONE) -> tuple[Any, ...] | None:
        compiled = self._fast(conn)
        if compiled is None:
            found = conn.execute(self.statement, dict(params)).first()
            return None if found is None else tuple(found)
        row = self._run(conn, compiled, params).fetchone()
        return None if row is None else compiled.row(row)

    def execute(self, conn: Connection, params: Params) -> int:
        """An INSERT, UPDATE or DELETE; returns the number of rows it matched."""
        compiled = self._fast(conn)
        if compiled is None:
            return int(conn.execute(self.statement, dict(params)).rowcount)
        return int(self._run(conn, compiled, params).rowcount)

    def insert(self, conn: Connection, params: Params) -> int:
        """An INSERT of one row; returns its integer primary key."""
        compiled = self._fast(conn)
        if compiled is None:
            key = conn.execute(self.statement, dict(params)).inserted_primary_key
            assert key is not None  # noqa: S101 - an INSERT always yields a key
            return int(key[0])
        rowid = self._run(conn, compiled, params).lastrowid
        assert rowid is not None  # noqa: S101 - SQLite always assigns one
        return int(rowid)

    def execute_many(self, conn: Connection, rows: Sequence[Params]) -> None:
        """The same INSERT for each of ``rows``."""
        if not rows:
            return
        compiled = self._fast(conn)
        if compiled is None:
            conn.execute(self.statement, [dict(row) for row in rows])
            return
        driver = cast(sqlite3.Connection, conn.connection.dbapi_connection)
        try:
            driver.executemany(compiled.sql, [compiled.parameters(row) for row in rows])
        except compiled.error as exc:
            raise _translated(conn.dialect, compiled, exc) from None

    # -- internals --------------------------------------------------------------------------

    def _fast(self, conn: Connection) -> _Compiled | None:
        """The compiled form when this connection can take it; None: use SQLAlchemy's path."""
        if conn.dialect.name != "sqlite" or not conn.in_transaction():
            return None
        compiled = self._compiled  # SQLite's dialect compiles the same text for every engine
        if compiled is None:
            with self._lock:
                compiled = self._compiled = self._compiled or self._compile(conn.dialect)
        return compiled

    def _compile(self, dialect: Dialect) -> _Compiled:
        compiled = self.statement.compile(dialect=dialect, column_keys=self._column_keys)
        names = tuple(compiled.positiontup or ())
        literals = {name: bind.value for name, bind in compiled.binds.items() if not bind.required}
        binds = []
        for position, name in enumerate(names):
            process = compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                binds.append((position, process))
        results = []
        selected_columns = self.statement.selected_columns if isinstance(self.statement, Select) else ()
        for column, selected in enumerate(selected_columns):
            process = selected.type.dialect_impl(dialect).result_processor(dialect, None)
            if process is not None:
                results.append((column, process))
        accepted = frozenset(names) - literals.keys()
        return _Compiled(compiled.string, names, accepted, literals, tuple(binds),
                         tuple(results), dialect.loaded_dbapi.Error)  # fmt: skip

    @staticmethod
    def _run(conn: Connection, compiled: _Compiled, params: Params) -> sqlite3.Cursor:
        driver = cast(sqlite3.Connection, conn.connection.dbapi_connection)
        try:
            return driver.execute(compiled.sql, compiled.parameters(params))
        except compiled.error as exc:
            raise _translated(conn.dialect, compiled, exc) from None


def _translated(dialect: Dialect, compiled: _Compiled, exc: Exception) -> StatementError:
    """The exception SQLAlchemy would have raised (IntegrityError, OperationalError, …),
    without the parameters: they may hold ciphertext."""
    return DBAPIError.instance(
        compiled.sql, None, exc, compiled.error, hide_parameters=True, dialect=dialect
    )
