"""The store through its public Python API, on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from strongroom import NotFound, Strongroom, UnwrapError, ValidationError
from strongroom.audit import AuditEvent, Outcome
from strongroom.config import Limits
from tests.conftest import make_settings


def test_set_then_get_returns_the_values(room: Strongroom) -> None:
    version = room.set("team-a", "db", {"password": "hunter2", "port": 5432})
    secret = room.get("team-a", "db")
    assert version == 1
    assert secret.version == 1
    assert dict(secret.data) == {"password": "hunter2", "port": 5432}


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("plain string", id="string"),
        pytest.param(42, id="integer"),
        pytest.param(3.25, id="float"),
        pytest.param({"client_email": "a@b", "private_key": "-----BEGIN-----\n…"}, id="object"),
        pytest.param(["a", 1, {"b": [True]}], id="list"),
        pytest.param("ünïcødé ✓", id="unicode"),
    ],
)
def test_json_values_round_trip(room: Strongroom, value: object) -> None:
    room.set("ns", "s", {"k": value})
    assert room.get("ns", "s", "k").data["k"] == value


def test_a_set_keeps_other_keys_and_makes_a_new_version(room: Strongroom) -> None:
    room.set("ns", "app", {"user": "admin", "password": "one"})
    room.set("ns", "app", {"password": "two"})
    current = room.get("ns", "app")
    assert current.version == 2
    assert dict(current.data) == {"user": "admin", "password": "two"}
    assert dict(room.get("ns", "app", version=1).data) == {"user": "admin", "password": "one"}


def test_replace_and_unset(room: Strongroom) -> None:
    room.set("ns", "app", {"a": "1", "b": "2"})
    room.set("ns", "app", {"c": "3"}, replace=True)
    assert dict(room.get("ns", "app").data) == {"c": "3"}
    room.set("ns", "app", {"d": "4"})
    room.set("ns", "app", {}, remove=["c"])
    assert dict(room.get("ns", "app").data) == {"d": "4"}
    with pytest.raises(NotFound):
        room.set("ns", "app", {}, remove=["nope"])
    with pytest.raises(ValidationError, match="at least one key"):
        room.set("ns", "app", {}, remove=["d"])
    assert dict(room.get("ns", "app").data) == {"d": "4"}


def test_previous_versions_stay_readable_until_pruned(db_url: str) -> None:
    with Strongroom.open(make_settings(db_url, keep_versions=2)) as room:
        for i in range(4):
            room.set("ns", "s", {"k": f"v{i}"})
        assert room.get("ns", "s", version=3).data["k"] == "v2"
        with pytest.raises(NotFound, match="destroyed"):
            room.get("ns", "s", version=2)
        states = {version: state for version, state, _, _ in room.history("ns", "s")}
        assert states == {4: "current", 3: "previous", 2: "destroyed", 1: "destroyed"}


def test_retiring_previous_versions_destroys_them_and_keeps_the_secret_usable(
    room: Strongroom,
) -> None:
    from datetime import timedelta

    room.set("ns", "s", {"k": "v1"})
    room.set("ns", "s", {"k": "v2"})
    assert room.retire_previous("ns", "s", grace=timedelta(hours=1)) == 0  # not yet
    assert room.retire_previous("ns", "s", grace=timedelta(0)) == 1
    assert room.retire_previous("ns", "s", grace=timedelta(0)) == 0  # nothing left to destroy
    with pytest.raises(NotFound, match="destroyed"):
        room.get("ns", "s", version=1)
    room.set("ns", "s", {"k2": "x"})
    assert room.get("ns", "s").data == {"k": "v2", "k2": "x"}
    assert room.get("ns", "s", version=2).data == {"k": "v2"}
    assert [e.action for e in room.audit_events()].count("secret.destroy") == 1
    assert room.audit_verify().ok


def test_list_shows_names_and_keys_only(room: Strongroom) -> None:
    room.set("a", "one", {"k1": "v"})
    room.set("b", "two", {"k2": "v", "k3": "v"}, description="billing")
    infos = room.list()
    assert [(i.namespace, i.name, i.keys) for i in infos] == [
        ("a", "one", ("k1",)),
        ("b", "two", ("k2", "k3")),
    ]
    assert [i.name for i in room.list("b")] == ["two"]
    assert infos[1].description == "billing"


def test_delete_removes_every_version(room: Strongroom) -> None:
    room.set("ns", "gone", {"k": "v"})
    room.set("ns", "gone", {"k": "w"})
    assert room.delete("ns", "gone") == 2
    with pytest.raises(NotFound):
        room.get("ns", "gone")
    with pytest.raises(NotFound):
        room.get("ns", "gone", version=1)
    with pytest.raises(NotFound):
        room.delete("ns", "gone")


def test_missing_things_are_not_found(room: Strongroom) -> None:
    room.set("ns", "s", {"k": "v"})
    with pytest.raises(NotFound, match="no key 'x'"):
        room.get("ns", "s", "x")
    with pytest.raises(NotFound, match="no version 9"):
        room.get("ns", "s", version=9)
    with pytest.raises(NotFound, match="not found"):
        room.get("ns", "absent")


def test_verify_compares_without_revealing(room: Strongroom) -> None:
    room.set("ns", "s", {"token": "abc", "n": 7})
    assert room.verify("ns", "s", "token", "abc") is True
    assert room.verify("ns", "s", "token", "abd") is False
    assert room.verify("ns", "s", "n", 7) is True
    assert room.verify("ns", "s", "n", "7") is False


@pytest.mark.parametrize(
    ("namespace", "name", "data", "needle"),
    [
        pytest.param("Bad", "s", {"k": "v"}, "namespace", id="uppercase-namespace"),
        pytest.param("ns", "has/slash", {"k": "v"}, "name", id="slash-in-name"),
        pytest.param("ns", "", {"k": "v"}, "empty", id="empty-name"),
        pytest.param("ns", "s", {"bad key": "v"}, "key", id="space-in-key"),
        pytest.param("ns", "s", {"k": None}, "null", id="null-value"),
        pytest.param("ns", "s", {"k": float("nan")}, "finite", id="nan"),
        pytest.param("ns", "s", {}, "nothing to set", id="no-keys"),
    ],
)
def test_bad_input_is_refused_and_writes_nothing(
    room: Strongroom, namespace: str, name: str, data: dict[str, object], needle: str
) -> None:
    with pytest.raises(ValidationError, match=needle):
        room.set(namespace, name, data)
    assert room.list() == []


def test_limits_are_configurable_with_clear_errors(db_url: str) -> None:
    limits = Limits(max_name_length=10, max_key_length=5, max_value_bytes=32)
    with Strongroom.open(make_settings(db_url, limits=limits)) as room:
        with pytest.raises(ValidationError, match="limit is 10"):
            room.set("ns", "a" * 11, {"k": "v"})
        with pytest.raises(ValidationError, match="limit is 5"):
            room.set("ns", "s", {"kkkkkk": "v"})
        with pytest.raises(ValidationError, match="limit is 32"):
            room.set("ns", "s", {"k": "x" * 40})
        room.set("ns", "s", {"k": "x" * 20})
        assert room.list()[0].version == 1


def test_a_wrong_master_key_is_one_clear_error_and_writes_nothing(db_url: str) -> None:
    with Strongroom.open(make_settings(db_url)) as room:
        room.set("ns", "s", {"k": "v"})
    wrong = make_settings(db_url, master_key=bytes(32))
    with Strongroom.open(wrong) as room:
        with pytest.raises(UnwrapError, match="wrong STRONGROOM_MASTER_KEY"):
            room.get("ns", "s")
        with pytest.raises(UnwrapError, match="wrong STRONGROOM_MASTER_KEY"):
            room.set("ns", "other", {"k": "v"})
    with Strongroom.open(make_settings(db_url)) as room:
        assert [i.name for i in room.list()] == ["s"]


def test_a_new_seed_starts_after_max_uses(db_url: str) -> None:
    settings = make_settings(db_url)
    settings = dataclasses.replace(
        settings, data_keys=dataclasses.replace(settings.data_keys, max_uses=3)
    )
    with Strongroom.open(settings) as room:
        for i in range(7):
            room.set("ns", f"s{i}", {"k": str(i)})
        with room.engine.connect() as conn:
            from sqlalchemy import text

            used = conn.execute(
                text("SELECT COUNT(DISTINCT data_key_id) FROM secret_versions")
            ).scalar_one()
        assert used == 3
        assert [room.get("ns", f"s{i}", "k").data["k"] for i in range(7)] == [
            str(i) for i in range(7)
        ]


def test_a_fresh_process_reuses_the_active_seed(db_url: str) -> None:
    with Strongroom.open(make_settings(db_url)) as room:
        room.set("ns", "a", {"k": "1"})
    with Strongroom.open(make_settings(db_url)) as room:
        room.set("ns", "b", {"k": "2"})
        with room.engine.connect() as conn:
            from sqlalchemy import text

            assert conn.execute(text("SELECT COUNT(*) FROM data_keys")).scalar_one() == 1


def test_every_operation_is_audited_without_values(room: Strongroom) -> None:
    room.set("ns", "s", {"k": "canary-audit-value"})
    room.get("ns", "s")
    room.list()
    room.verify("ns", "s", "k", "nope")
    with pytest.raises(NotFound):
        room.get("ns", "missing")
    room.delete("ns", "s")
    events = list(room.audit_events())
    assert [(e.action, e.outcome) for e in events] == [
        ("audit.key", "ok"),
        ("datakey.create", "ok"),
        ("manifest.init", "ok"),
        ("secret.set", "ok"),
        ("secret.get", "ok"),
        ("secret.list", "ok"),
        ("secret.verify", "mismatch"),
        ("secret.get", "not_found"),
        ("secret.delete", "ok"),
    ]
    assert all(e.actor == "tester@test" for e in events)
    assert "canary-audit-value" not in repr(events)
    assert room.audit_verify().ok


@pytest.fixture
def open_umask() -> Iterator[None]:
    """umask 0: SQLite alone would then create a world-writable 0666 database... and -wal."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_sqlite_files_are_created_private(tmp_path: Path, open_umask: None) -> None:
    """Before: strongroom.db, -wal and -shm were created 0644 (0666 under umask 0)."""
    path = tmp_path / "store.db"
    with Strongroom.open(make_settings(f"sqlite:///{path}")) as room:
        room.set("ns", "s", {"k": "v"})
        files = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
        assert all(f.exists() for f in files)
        assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}


def test_an_existing_database_file_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    path.touch(mode=0o640)
    path.chmod(0o640)  # the administrator's choice (a backup group, say) is left alone
    with Strongroom.open(make_settings(f"sqlite:///{path}")) as room:
        room.set("ns", "s", {"k": "v"})
    assert mode(path) == 0o640


def test_a_deletion_recorded_before_a_restart_is_found_and_no_other(room: Strongroom) -> None:
    """The operator asks this before recording a deletion a second time (after a restart)."""
    deleted_at = datetime.now(UTC).replace(microsecond=0)  # a deletionTimestamp's precision
    room.record(AuditEvent(time=datetime.now(UTC), actor="op", action="operator.finalize",
                           outcome=Outcome.OK, namespace="ns", name="db",
                           detail="Secret db retained"))  # fmt: skip
    room.set("ns", "db", {"k": "v"})  # later events do not hide it
    found = room.audit_recorded("operator.finalize", "ns", "db", since=deleted_at)
    assert found is not None and found.detail == "Secret db retained"
    later = deleted_at + timedelta(seconds=2)  # the next object of that name, deleted later
    assert room.audit_recorded("operator.finalize", "ns", "db", since=later) is None
    assert room.audit_recorded("operator.finalize", "ns", "other", since=deleted_at) is None
    assert room.audit_recorded("operator.sync", "ns", "db", since=deleted_at) is None
