"""An operation whose audit event cannot be written does not happen (fail closed).

The audit write is made to fail by the database itself: a trigger on SQLite, a role without
INSERT on audit_events on PostgreSQL. No test double is involved.
"""

from __future__ import annotations

import dataclasses

import psycopg
import pytest
from sqlalchemy import text

from strongroom import AuditError, Strongroom
from tests.components.postgres import PostgresServer
from tests.conftest import make_settings


def test_sqlite_refusing_the_audit_row_blocks_set_and_get(sqlite_url: str) -> None:
    with Strongroom.open(make_settings(sqlite_url)) as room:
        room.set("ns", "s", {"k": "v1"})
        with room.engine.begin() as conn:
            conn.execute(
                text(
                    "CREATE TRIGGER no_audit BEFORE INSERT ON audit_events "
                    "BEGIN SELECT RAISE(ABORT, 'audit volume full'); END"
                )
            )
        with pytest.raises(AuditError, match="not done"):
            room.set("ns", "s", {"k": "v2"})
        with pytest.raises(AuditError):
            room.get("ns", "s")
        with room.engine.begin() as conn:
            conn.execute(text("DROP TRIGGER no_audit"))
        current = room.get("ns", "s")
        assert (current.version, current.data["k"]) == (1, "v1")
        assert room.audit_verify().ok


def test_postgres_role_without_audit_insert_cannot_read_or_write(
    postgres: PostgresServer, pg_url: str
) -> None:
    with Strongroom.open(make_settings(pg_url)) as room:
        room.set("ns", "s", {"k": "v1"})
    dbname = pg_url.rsplit("/", 1)[1]
    with psycopg.connect(
        postgres.admin_url.rsplit("/", 1)[0] + f"/{dbname}", autocommit=True
    ) as conn:
        conn.execute("DROP ROLE IF EXISTS no_audit")
        conn.execute("CREATE ROLE no_audit LOGIN")
        conn.execute(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO no_audit"
        )
        conn.execute("GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO no_audit")
        conn.execute("REVOKE INSERT ON audit_events FROM no_audit")
    limited_url = pg_url.replace(f"{postgres.user}@", "no_audit@")
    limited = dataclasses.replace(make_settings(limited_url), auto_migrate=False)
    with Strongroom.open(limited) as room:
        with pytest.raises(AuditError):
            room.set("ns", "s", {"k": "v2"})
        with pytest.raises(AuditError):
            room.get("ns", "s")
    with Strongroom.open(make_settings(pg_url)) as room:
        current = room.get("ns", "s")
        assert (current.version, current.data["k"]) == (1, "v1")
        assert room.audit_verify().ok
