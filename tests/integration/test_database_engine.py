"""strongroom.dbengine on a real PostgreSQL that checks passwords: roles from templates, logins,
expiry, and what a hostile name or template can (not) do."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from strongroom.dbengine import EngineConnection, EngineError, EngineSpec
from tests.components.pgauth import ADMIN, ADMIN_PASSWORD, log_text, login, password_postgres, roles
from tests.components.postgres import PostgresServer

pytestmark = pytest.mark.postgres
CREATE = "CREATE ROLE \"{{name}}\" LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiry}}'"
OWNER = ("ns", "app", "dsn")


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    with password_postgres() as server:
        yield server


def spec(pg: PostgresServer, *creation: str) -> EngineSpec:
    return EngineSpec.parse("main", {
        "connection": {"host": "127.0.0.1", "port": pg.port, "sslmode": "disable",
                       "credentialsSecret": "pg-admin"},
        "namespaceSelector": {},
        "roles": [{"name": "app", "creation": list(creation or (CREATE, 'GRANT app_read TO "{{name}}"'))}],
    })  # fmt: skip



def test_a_role_from_a_template_logs_in_until_it_expires_and_is_dropped(pg: PostgresServer) -> None:
    engine = spec(pg)
    now = datetime.now(UTC)
    with EngineConnection.open(engine, user=ADMIN, password=ADMIN_PASSWORD) as conn:
        role = conn.create(engine.roles["app"], username="strongroom_t1_x", password="Pw1CANARYdb",
                           expiry=now + timedelta(hours=1), owner=OWNER, now=now)  # fmt: skip
        expired = conn.create(engine.roles["app"], username="strongroom_t1_y",
                              password="Pw2CANARYdb", expiry=now - timedelta(seconds=1),
                              owner=OWNER, now=now)  # fmt: skip
        tagged = {r.role: r for r in conn.tagged()}
    assert login(pg, role.username, "Pw1CANARYdb")
    assert not login(pg, role.username, "wrong")
    assert not login(pg, expired.username, "Pw2CANARYdb")  # VALID UNTIL is enforced
    assert tagged["strongroom_t1_x"].namespace == "ns" and tagged["strongroom_t1_x"].key == "dsn"
    # The server never saw either password: it got SCRAM verifiers (statements are all logged).
    assert "CANARY" not in log_text(pg)
    with EngineConnection.open(engine, user=ADMIN, password=ADMIN_PASSWORD) as conn:
        conn.drop(role.username, terminate=True)
        conn.drop(expired.username)
    assert not login(pg, role.username, "Pw1CANARYdb")
    assert not {"strongroom_t1_x", "strongroom_t1_y"} & roles(pg)


def test_a_password_change_keeps_the_role_and_ends_the_old_password(pg: PostgresServer) -> None:
    engine = spec(pg)
    now = datetime.now(UTC)
    with EngineConnection.open(engine, user=ADMIN, password=ADMIN_PASSWORD) as conn:
        conn.create(engine.roles["app"], username="strongroom_t2_a", password="first",
                    expiry=now + timedelta(hours=1), owner=OWNER, now=now)  # fmt: skip
        conn.set_password(username="strongroom_t2_a", password="second",
                          expiry=now + timedelta(hours=1), owner=OWNER, now=now)  # fmt: skip
    assert login(pg, "strongroom_t2_a", "second") and not login(pg, "strongroom_t2_a", "first")


def test_injection_in_a_name_or_template_value_does_not_execute(pg: PostgresServer) -> None:
    """The role name and the password are quoted by psycopg: a name built to close the quote
    and run a statement becomes a strange role name, and the canary table stays."""
    engine = spec(pg)
    now = datetime.now(UTC)
    hostile = 'strongroom_x"; DROP TABLE canary; --'
    with EngineConnection.open(engine, user=ADMIN, password=ADMIN_PASSWORD) as conn:
        conn.create(engine.roles["app"], username=hostile, password="p'; DROP TABLE canary; --",
                    expiry=now + timedelta(hours=1), owner=OWNER, now=now)  # fmt: skip
        conn.drop(hostile)
    with psycopg.connect(pg.admin_url) as conn:
        assert conn.execute("SELECT note FROM canary").fetchall() == [("still here",)]


def test_a_failing_template_creates_nothing_and_its_error_quotes_no_statement(
    pg: PostgresServer,
) -> None:
    engine = spec(pg, CREATE, "GRANT no_such_role TO {{name}}")
    now = datetime.now(UTC)
    with EngineConnection.open(engine, user=ADMIN, password=ADMIN_PASSWORD) as conn:
        with pytest.raises(EngineError) as raised:
            conn.create(engine.roles["app"], username="strongroom_t4_a", password="CANARYpw4",
                        expiry=now + timedelta(hours=1), owner=OWNER, now=now)  # fmt: skip
    assert "SCRAM" not in str(raised.value) and "CANARY" not in str(raised.value)
    assert "strongroom_t4_a" not in roles(pg)  # one transaction: the CREATE ROLE is undone


def test_wrong_admin_credentials_are_an_engine_error_without_the_password(
    pg: PostgresServer,
) -> None:
    with pytest.raises(EngineError) as raised:
        with EngineConnection.open(spec(pg), user=ADMIN, password="CANARY-wrong"):
            pass
    assert "CANARY" not in str(raised.value)
