"""Group commit: many threads' units of work share one transaction.

Why: the operator reconciles many ManagedSecrets at once, and each reconcile is a few small
audited transactions. On SQLite every writer of the database is serialised, so a burst of
reconciles queues on the write lock, and each hand-over costs more than the work itself (a
BEGIN, a COMMIT with its fsync, the audit chain's head row, a thread waking up). One writer
thread that takes whatever has queued up and runs it in a single transaction removes that
cost without changing what each unit does or what the audit log records.

Under load the writer lingers a moment (``linger``, 8 ms) for more units before it begins: a
burst of reconciles otherwise arrives two units at a time (a reconcile's units come ≈ 3 ms
apart at 1,000 objects in 6 s), and each transaction's fixed cost (BEGIN, the head row, COMMIT
and its fsync) was paid a thousand times per thousand objects. 2 ms took the writer's CPU from
1.3 to 1.05 s per thousand objects, 8 ms to 0.8 s; a reconcile already takes ≈ 100 ms under
such a burst. A lone unit (the CLI, an idle operator) never waits: the writer lingers only
after a batch of more than one.

Each unit runs inside a SAVEPOINT: a unit that raises is rolled back alone and its caller gets
the exception; the others commit. A caller returns only after the transaction holding its unit
has committed, so nothing is reported done before it is durable. If the transaction itself
fails (BEGIN or COMMIT), every unit in it gets that :class:`StoreError`.
"""

from __future__ import annotations

import contextvars
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar, cast

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from strongroom.errors import StoreError
from strongroom.store.engine import describe_db_error, transaction
from strongroom.store.repository import AuditHeadMark, audit_head_mark, restore_audit_head

T = TypeVar("T")

MAX_BATCH = 64
LINGER_SECONDS = 0.008


class _Unit(Generic[T]):
    __slots__ = ("context", "done", "error", "result", "work")

    def __init__(self, work: Callable[[Connection], T]) -> None:
        self.work = work
        # The submitter's context variables (the audit origin: strongroom.audit.ORIGIN), so the
        # unit's events say what they would have said in the submitter's own transaction.
        self.context = contextvars.copy_context()
        self.done = threading.Event()
        self.result: T | None = None
        self.error: BaseException | None = None


class TransactionBatcher:
    """A writer thread that runs queued units of work in shared transactions."""

    def __init__(
        self, engine: Engine, *, max_batch: int = MAX_BATCH, linger: float = LINGER_SECONDS
    ) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self.linger = linger
        self._queue: queue.SimpleQueue[_Unit[Any] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        # The writer's own connection, kept between batches (checking one out of the pool and
        # back, with its reset, cost a tenth of the writer's time); dropped after any failure,
        # so a database restart costs one failed batch, not a broken writer.
        self._conn: Connection | None = None
        self._start_lock = threading.Lock()
        self.batches = 0
        self.units = 0

    def run(self, work: Callable[[Connection], T]) -> T:
        """Run ``work(conn)`` in a shared transaction; return its result once committed."""
        self._ensure_started()
        unit: _Unit[T] = _Unit(work)
        self._queue.put(unit)
        unit.done.wait()
        if unit.error is not None:
            raise unit.error
        return cast(T, unit.result)  # set whenever error is None

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=30)
            self._thread = None

    def _ensure_started(self) -> None:
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._loop, name="strongroom-store-writer", daemon=True
                    )
                    self._thread.start()

    def _loop(self) -> None:
        busy = False  # the last batch had company: more units are probably on their way
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            until = time.monotonic() + self.linger if busy else 0.0
            while len(batch) < self.max_batch:
                wait = until - time.monotonic()
                try:
                    unit = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if unit is None:
                    stop = True
                    break
                batch.append(unit)
            busy = len(batch) > 1
            self._execute(batch)
            if stop:
                self._drop_connection()
                return

    def _execute(self, batch: list[_Unit[Any]]) -> None:
        try:
            if self._conn is None:
                self._conn = self.engine.connect()
            with transaction(self.engine, self._conn) as conn:
                for unit in batch:
                    self._one(conn, unit)
        except BaseException as exc:  # noqa: BLE001 - every waiting caller must be released
            # Nothing of the batch committed (a StoreError from BEGIN/COMMIT, usually).
            self._drop_connection()
            for unit in batch:
                unit.result, unit.error = None, exc
        self.batches += 1
        self.units += len(batch)
        for unit in batch:
            unit.done.set()

    def _drop_connection(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                conn.close()
            except SQLAlchemyError:
                conn.invalidate()

    @staticmethod
    def _one(conn: Connection, unit: _Unit[Any]) -> None:
        # The savepoint is issued on the driver connection: SQLAlchemy's begin_nested()
        # compiles its SAVEPOINT and RELEASE clauses afresh every time, which cost more than
        # the unit's own statements. SQLAlchemy does not need to know: a unit never sees it.
        driver = conn.connection.dbapi_connection
        assert driver is not None  # noqa: S101 - a connection inside a transaction
        mark = audit_head_mark(conn)
        driver.execute("SAVEPOINT strongroom_unit")
        try:
            unit.result = unit.context.run(unit.work, conn)
        except SQLAlchemyError as exc:
            _undo(conn, driver, mark)
            unit.error = StoreError(f"database error: {describe_db_error(exc)}")
            return
        except Exception as exc:  # noqa: BLE001 - handed to the unit's caller
            _undo(conn, driver, mark)
            unit.error = exc
            return
        driver.execute("RELEASE SAVEPOINT strongroom_unit")


def _undo(conn: Connection, driver: Any, mark: AuditHeadMark) -> None:
    """Roll one unit back to its savepoint, and the audit head to where it was then."""
    driver.execute("ROLLBACK TO SAVEPOINT strongroom_unit")
    driver.execute("RELEASE SAVEPOINT strongroom_unit")
    restore_audit_head(conn, mark)
