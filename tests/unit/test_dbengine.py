"""DatabaseEngine specs and role templates: placeholders are quoted by psycopg, never pasted,
and a template that could mix a value into SQL text is refused before it is ever run."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import pytest

from strongroom.dbengine import EngineInvalidError, EngineSpec, compose, role_name, scram_verifier
from strongroom.dbitem import check_database_keys, parse_database
from strongroom.emergency import Rotation, fingerprint, rotation_patch, still_compromised
from strongroom.policy import SpecRefusedError
from strongroom.sources.database import selects
from strongroom.spec import DataItem

EXPIRY = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
CREATE = "CREATE ROLE \"{{name}}\" LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiry}}'"


def engine(**roles: list[str]) -> EngineSpec:
    return EngineSpec.parse("main", {
        "connection": {"host": "127.0.0.1", "credentialsSecret": "pg-admin"},
        "namespaceSelector": {},
        "roles": [{"name": n, "creation": c} for n, c in (roles or {"app": [CREATE]}).items()],
    })  # fmt: skip


def test_placeholders_become_a_quoted_identifier_and_literals() -> None:
    hostile = 'x"; DROP TABLE canary; --'
    text = compose(CREATE, name=hostile, verifier="v'; DROP TABLE canary; --",
                   expiry=EXPIRY).as_string(None)  # fmt: skip
    assert text == ('CREATE ROLE "x""; DROP TABLE canary; --" LOGIN PASSWORD '
                    "'v''; DROP TABLE canary; --' VALID UNTIL '2030-01-02T03:04:05+00:00'")


@pytest.mark.parametrize("statement", [
    pytest.param("CREATE ROLE {{name}} PASSWORD {{secret}}", id="unknown-placeholder"),
    pytest.param("CREATE ROLE '{{name}}'", id="identifier-in-literal-quotes"),
    pytest.param("CREATE ROLE {{name}} PASSWORD \"{{password}}\"", id="literal-in-identifier-quotes"),
    pytest.param("CREATE ROLE \"{{name}}' LOGIN", id="unbalanced-quotes"),
    pytest.param("CREATE ROLE {{name}} PASSWORD {{ password }", id="malformed"),
    pytest.param("GRANT app_read TO app", id="never-names-the-role"),
])  # fmt: skip
def test_a_template_that_could_paste_a_value_is_refused(statement: str) -> None:
    with pytest.raises(EngineInvalidError):
        engine(app=[statement])


def test_an_engine_needs_a_host_not_a_connection_string_with_options() -> None:
    with pytest.raises(EngineInvalidError, match="host"):
        EngineSpec.parse("main", {"connection": {"host": "db host=evil", "credentialsSecret": "s"},
                                  "roles": [{"name": "app", "creation": [CREATE]}]})  # fmt: skip


def test_role_names_are_the_operators_own() -> None:
    name = role_name("strongroom_", 'ns"x', "app'; drop", "dsn")
    assert name.startswith("strongroom_") and name.replace("_", "").isalnum()
    assert len(role_name("a" * 32, "n" * 63, "m" * 253, "k" * 253, "b")) <= 63


def test_the_scram_verifier_is_what_a_scram_client_proves_knowledge_of() -> None:
    salt = b"0123456789abcdef"
    verifier = scram_verifier("pencil", salt=salt, iterations=4096)
    head, keys = verifier.split("$", 2)[1:]
    assert head == f"4096:{base64.b64encode(salt).decode()}"
    salted = hashlib.pbkdf2_hmac("sha256", b"pencil", salt, 4096)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    assert keys.split(":")[0] == base64.b64encode(hashlib.sha256(client_key).digest()).decode()
    assert "pencil" not in verifier


def test_database_items_are_names_and_a_bounded_ttl() -> None:
    item = parse_database("dsn", {"engine": "main", "role": "app", "ttl": "1h"})
    assert item is not None and item.renew_after == timedelta(minutes=40)
    for bad in ({"engine": "main; DROP", "role": "app"}, {"engine": "main", "role": "A'"},
                {"engine": "main", "role": "app", "ttl": "10s"},
                {"engine": "main", "role": "app", "ttl": "25h"},
                {"engine": "main", "role": "app", "strategy": "swap"}):  # fmt: skip
        with pytest.raises(SpecRefusedError):
            parse_database("dsn", bad)


def test_the_test_only_ttl_floor_is_read_from_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRONGROOM_TEST_MIN_DATABASE_TTL", "2")
    item = parse_database("dsn", {"engine": "main", "role": "app", "ttl": "3s"})
    assert item is not None and item.ttl == timedelta(seconds=3)


def test_a_database_item_owns_its_username_and_password_keys() -> None:
    item = parse_database("dsn", {"engine": "main", "role": "app"})
    with pytest.raises(SpecRefusedError, match="password"):
        check_database_keys([("dsn", item), ("password", None)])


@pytest.mark.parametrize(("selector", "labels", "chosen"), [
    ({}, {}, True),
    ({"matchLabels": {"db": "yes"}}, {"db": "yes"}, True),
    ({"matchLabels": {"db": "yes"}}, {"db": "no"}, False),
    ({"matchExpressions": [{"key": "team", "operator": "In", "values": ["a"]}]}, {"team": "b"}, False),
    ({"matchExpressions": [{"key": "team", "operator": "Exists"}]}, {"team": "b"}, True),
    ({"matchExpressions": [{"key": "team", "operator": "Gt", "values": ["1"]}]}, {"team": "2"}, False),
])  # fmt: skip
def test_namespace_selectors_follow_kubernetes(selector: dict, labels: dict, chosen: bool) -> None:
    assert selects(selector, labels) is chosen


def test_an_emergency_rotation_is_done_once_per_token() -> None:
    patch = rotation_patch(["password"], revoke=True)
    meta = {"annotations": {k: v for k, v in patch["metadata"]["annotations"].items() if v}}
    asked = Rotation.requested(meta, {})
    assert asked is not None and asked.revoke and asked.keys == {"password"}
    assert Rotation.requested(meta, {"rotateToken": asked.token}) is None
    items = [DataItem("password", generate={}), DataItem("api"), DataItem("x"),
             DataItem("sealed", sealed="srs1.AAAA"), DataItem("imported", from_secret={"name": "s"}),
             DataItem("dsn", database=parse_database("dsn", {"engine": "e", "role": "r"}))]  # fmt: skip
    assert Rotation("t", None).renewable(items) == {"password", "dsn"}
    # Only a person can replace these: out-of-band, sealed and imported keys are marked.
    assert Rotation("t", None).marked(items) == {"api", "x", "sealed", "imported"}
    assert Rotation("t", frozenset({"api"})).marked(items) == {"api"}


def test_a_compromised_mark_clears_only_when_the_value_changes() -> None:
    key = b"k" * 32
    marks = {"api": fingerprint(key, "ns", "app", "api", "CANARY-old")}
    assert "CANARY" not in marks["api"]
    assert still_compromised(marks, {"api": "CANARY-old"}, key, "ns", "app") == marks
    assert still_compromised(marks, {"api": "new"}, key, "ns", "app") == {}
