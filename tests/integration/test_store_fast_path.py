"""SQLite's fast path (store/prepared.py, the kept connection in store/engine.py) changes
nothing a user sees: errors, what is written, and the database file let go on close."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select, text

from strongroom import AuditError, Strongroom
from strongroom.store import repository as repo
from strongroom.store import transaction
from strongroom.store.schema import secret_versions, secrets
from tests.conftest import make_settings


def _open_files(path: Path) -> list[str]:
    """This process's descriptors on the database file or its WAL."""
    names = []
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = str(fd.readlink())
        except OSError:
            continue
        if target.startswith(str(path)):
            names.append(target)
    return names


def test_closing_the_store_lets_go_of_the_database_file(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    with Strongroom.open(make_settings(f"sqlite:///{path}")) as room:
        room.set("ns", "db", {"password": "p1"})
        assert room.get("ns", "db").data == {"password": "p1"}
        assert _open_files(path)
    assert _open_files(path) == []


def test_a_write_the_database_refuses_is_not_done_and_names_no_value(sqlite_url: str) -> None:
    with Strongroom.open(make_settings(sqlite_url)) as room:
        room.set("ns", "db", {"password": "first-value"})
        with room.engine.begin() as conn:
            conn.execute(text("CREATE TRIGGER full BEFORE INSERT ON secret_versions "
                              "BEGIN SELECT RAISE(ABORT, 'disk quota'); END"))  # fmt: skip
        with pytest.raises(AuditError, match="disk quota") as refused:
            room.set("ns", "db", {"password": "second-value"})
        assert "second-value" not in str(refused.value)
        assert "parameters" not in str(refused.value)
        with room.engine.begin() as conn:
            conn.execute(text("DROP TRIGGER full"))
        # The kept connection was dropped with the failed transaction; the next one works.
        assert room.get("ns", "db").data == {"password": "first-value"}
        room.set("ns", "db", {"password": "third-value"})
        assert room.get("ns", "db").version == 2
        assert room.audit_verify().ok


def test_rows_written_on_the_fast_path_read_the_same_through_sqlalchemy(sqlite_url: str) -> None:
    before = datetime.now(UTC).replace(tzinfo=None)
    with Strongroom.open(make_settings(sqlite_url)) as room:
        room.set("ns", "db", {"password": "p1"})
        with room.engine.connect() as conn:
            row = conn.execute(select(secrets).where(secrets.c.name == "db")).one()
            created = conn.execute(select(secret_versions.c.created_at)).scalar_one()
        listed = room.list("ns")[0]
        written = [e for e in room.audit_events() if e.action == "secret.set"][-1]
    assert isinstance(row.updated_at, datetime)
    assert before <= row.updated_at <= datetime.now(UTC).replace(tzinfo=None)
    assert listed.updated_at == row.updated_at
    assert created == row.updated_at  # one clock reading, written by two statements
    assert (row.current_version, row.manifest_counter) == (1, written.seq)


def test_a_value_the_statement_would_drop_is_refused(sqlite_url: str) -> None:
    """A column a hot-path INSERT does not write is an error, never silently left out."""
    now = datetime.now(UTC)
    with Strongroom.open(make_settings(sqlite_url)) as room, transaction(room.engine) as conn:
        with pytest.raises(ValueError, match="no parameter 'not_a_column'"):
            repo._INSERT_SECRET.insert(conn, {
                "namespace": "ns", "name": "x", "description": "", "current_version": 0,
                "created_at": now, "updated_at": now, "namespace_uid": None,
                "not_a_column": "dropped?",
            })  # fmt: skip
