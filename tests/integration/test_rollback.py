"""A database writer without the KEK can neither roll a secret back nor take part of it away.

Each attack is done the way someone with SQL access but not the KEK would: through a
connection of their own, on the store's tables, after dropping the trigger that only guards
against old Strongroom versions. Then every read of the secret (``get`` of all keys or one,
``--version N``, ``verify``, the operator's ``resolve``) and every write that builds on it
fail with the same bare IntegrityError as a value that fails authentication, audited as an
error, in this process, a fresh one, and the CLI. What the database alone cannot show (a
consistent copy of the whole database from earlier) is left to the checkpoint outside it;
see docs/security.md.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, delete, insert, select, text, update
from sqlalchemy.exc import DBAPIError

from strongroom import IntegrityError, Strongroom, values
from strongroom.audit import AuditEvent
from strongroom.crypto import Identity, seal
from strongroom.datakeys import AuditKey, DataKeys
from strongroom.keyring import build_keyring
from strongroom.rotation import rekey
from strongroom.store import repository as repo
from strongroom.store import transaction
from strongroom.store.engine import normalize_url
from strongroom.store.migrate import MIGRATIONS
from strongroom.store.schema import audit_events, secret_versions, secrets
from tests.conftest import MASTER_KEY, make_settings
from tests.integration.test_cli import STRONGROOM
from tests.integration.test_tamper import drop_old_writer_guard

BARE = "stored value failed authentication"
MANIFEST_COLUMNS = ("manifest", "manifest_counter", "manifest_key", "manifest_mac")

Snapshot = tuple[dict[str, Any], list[dict[str, Any]]]


def _secret_id(conn: Connection, name: str) -> int:
    return int(conn.execute(select(secrets.c.id).where(secrets.c.name == name)).scalar_one())


def _snapshot(conn: Connection, name: str) -> Snapshot:
    """The secret's row and all its version rows, as a backup would hold them."""
    row = conn.execute(select(secrets).where(secrets.c.name == name)).one()._asdict()
    rows = conn.execute(select(secret_versions).where(secret_versions.c.secret_id == row["id"]))
    return row, [r._asdict() for r in rows]


def _put_back(conn: Connection, snapshot: Snapshot, *, rows: bool = True) -> None:
    """Restore one secret from a snapshot: its row, and (``rows``) exactly its version rows."""
    drop_old_writer_guard(conn)
    secret, versions = snapshot
    if conn.execute(select(secrets.c.id).where(secrets.c.id == secret["id"])).first():
        conn.execute(update(secrets).where(secrets.c.id == secret["id"]).values(**secret))
    else:
        conn.execute(insert(secrets).values(**secret))
    if rows:
        conn.execute(delete(secret_versions).where(secret_versions.c.secret_id == secret["id"]))
        conn.execute(insert(secret_versions), versions)


def _cli_get(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    env |= {"STRONGROOM_DATABASE_URL": db_url, "STRONGROOM_MASTER_KEY": MASTER_KEY.hex()}
    return subprocess.run(
        [STRONGROOM, "secret", "get", *args], env=env, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip


def _refused(read: Callable[[], object]) -> None:
    with pytest.raises(IntegrityError) as info:
        read()
    assert str(info.value) == BARE  # never which part was wrong


def _all_reads_refused(room: Strongroom, name: str, key: str) -> None:
    """Every way of reading the current version, and a write building on it."""
    _refused(lambda: room.get("ns", name))
    last = list(room.audit_events())[-1]
    assert (last.action, last.outcome, last.name, last.detail) == (
        "secret.get",
        "error",
        name,
        BARE,
    )
    _refused(lambda: room.get("ns", name, key))
    _refused(lambda: room.verify("ns", name, key, "guess"))
    _refused(lambda: room.resolve("ns", name, lambda current: {}))
    _refused(lambda: room.resolve("ns", name, lambda current: {"generated": "x"}))
    _refused(lambda: room.set("ns", name, {"other": "x"}))  # no new version on top of it
    _refused(lambda: room.set("ns", name, {key: "x"}, replace=True))


# --- the attacks ---------------------------------------------------------------------------


def test_a_current_version_set_back_is_refused(db_url: str, attacker: Engine) -> None:
    with Strongroom.open(make_settings(db_url)) as room:
        room.set("ns", "db", {"password": "old"})
        room.set("ns", "db", {"password": "new"})
        with attacker.begin() as conn:
            drop_old_writer_guard(conn)
            conn.execute(update(secrets).where(secrets.c.name == "db").values(current_version=1))
        _all_reads_refused(room, "db", "password")
        _refused(lambda: room.get("ns", "db", version=1))
        _refused(lambda: room.get("ns", "db", version=2))
        assert room.audit_verify().ok  # the chain is intact; it records the refusals
    with Strongroom.open(make_settings(db_url)) as fresh:
        _refused(lambda: fresh.get("ns", "db"))
    result = _cli_get(db_url, "ns/db", "password")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"strongroom: error: {BARE}\n"


@pytest.mark.parametrize("version", [pytest.param(2, id="current"), pytest.param(1, id="previous")])
def test_a_removed_key_row_is_refused(db_url: str, attacker: Engine, version: int) -> None:
    with Strongroom.open(make_settings(db_url)) as room:
        room.set("ns", "db", {"user": "app", "password": "p1"})
        room.set("ns", "db", {"password": "p2"})
        with attacker.begin() as conn:
            conn.execute(
                delete(secret_versions).where(
                    secret_versions.c.secret_id == _secret_id(conn, "db"),
                    secret_versions.c.version == version,
                    secret_versions.c.key == "password",
                )
            )
        _refused(lambda: room.get("ns", "db", version=version))
        _refused(lambda: room.get("ns", "db", "user", version=version))  # the key left is too
        if version == 2:
            _all_reads_refused(room, "db", "user")
        else:  # the current version is untouched and still reads
            assert room.get("ns", "db").data == {"user": "app", "password": "p2"}


def test_manifests_swapped_between_two_secrets_are_refused(db_url: str, attacker: Engine) -> None:
    with Strongroom.open(make_settings(db_url)) as room:
        room.set("ns", "a", {"k": "a-1"})
        room.set("ns", "b", {"k": "b-1"})
        with attacker.begin() as conn:
            drop_old_writer_guard(conn)
            columns = [secrets.c[c] for c in MANIFEST_COLUMNS]
            a = conn.execute(select(*columns).where(secrets.c.name == "a")).one()._asdict()
            b = conn.execute(select(*columns).where(secrets.c.name == "b")).one()._asdict()
            conn.execute(update(secrets).where(secrets.c.name == "a").values(**b))
            conn.execute(update(secrets).where(secrets.c.name == "b").values(**a))
        _all_reads_refused(room, "a", "k")
        _all_reads_refused(room, "b", "k")


@pytest.mark.parametrize(
    "rows", [pytest.param(True, id="with-its-rows"), pytest.param(False, id="row-only")]
)
def test_an_older_manifest_put_back_is_refused_and_hiding_that_breaks_the_chain(
    db_url: str, attacker: Engine, rows: bool
) -> None:
    """One secret restored from a backup (its row, and its version rows as they were then):
    every MAC and digest fits, but the audit chain holds a write of the secret after the
    manifest's counter. Removing that event gets past ``get``, and is what ``audit verify``
    reports. (Restoring the *whole* database, chain and all, is for the checkpoint.)"""
    with Strongroom.open(make_settings(db_url)) as room:
        room.set("ns", "db", {"password": "old"})
        with attacker.begin() as conn:
            backup = _snapshot(conn, "db")
        room.set("ns", "db", {"password": "new"})
        room.get("ns", "db")
        with attacker.begin() as conn:
            _put_back(conn, backup, rows=rows)
        _all_reads_refused(room, "db", "password")
        _refused(lambda: room.get("ns", "db", version=1))
        assert room.audit_verify().ok

        with attacker.begin() as conn:
            conn.execute(
                delete(audit_events).where(
                    audit_events.c.name == "db",
                    audit_events.c.action == "secret.set",
                    audit_events.c.version == 2,
                )
            )
        report = room.audit_verify()
        assert not report.ok
        assert "missing" in report.reason


def test_a_deleted_secret_put_back_is_refused(db_url: str, attacker: Engine) -> None:
    with Strongroom.open(make_settings(db_url)) as room:
        room.set("ns", "db", {"password": "revoked"})
        with attacker.begin() as conn:
            backup = _snapshot(conn, "db")
        room.delete("ns", "db")
        with attacker.begin() as conn:
            _put_back(conn, backup)
        _all_reads_refused(room, "db", "password")


def test_a_row_from_an_earlier_life_of_the_secret_is_refused(db_url: str, attacker: Engine) -> None:
    """Deleted and set again, the secret has a version 1 again, with the same AAD: the row of
    the first version 1 decrypts there, and only the manifest's digest tells them apart."""
    with Strongroom.open(make_settings(db_url)) as room:
        room.set("ns", "db", {"password": "revoked"})
        with attacker.begin() as conn:
            _, (earlier,) = _snapshot(conn, "db")
        room.delete("ns", "db")
        room.set("ns", "db", {"password": "fresh"})
        with attacker.begin() as conn:
            conn.execute(
                update(secret_versions)
                .where(secret_versions.c.secret_id == _secret_id(conn, "db"))
                .values({c: earlier[c] for c in ("data_key_id", "salt", "nonce", "ciphertext")})
            )
        _all_reads_refused(room, "db", "password")


def test_a_destroyed_version_put_back_is_refused(db_url: str, attacker: Engine) -> None:
    with Strongroom.open(make_settings(db_url)) as room:
        room.set("ns", "db", {"password": "p1"})
        room.set("ns", "db", {"password": "p2"})
        with attacker.begin() as conn:
            _, versions = _snapshot(conn, "db")
        (first,) = [v for v in versions if v["version"] == 1]
        assert room.retire_previous("ns", "db", grace=timedelta(0)) == 1
        with attacker.begin() as conn:
            conn.execute(
                update(secret_versions)
                .where(secret_versions.c.id == first["id"])
                .values({c: first[c] for c in ("state", "salt", "nonce", "ciphertext")})
            )
        _refused(lambda: room.get("ns", "db", version=1))
        assert room.get("ns", "db").data == {"password": "p2"}


def test_a_secret_whose_rows_were_removed_is_refused_until_deleted(
    db_url: str, attacker: Engine
) -> None:
    """Not "not found": the audit chain says the secret exists, so its absence is tampering,
    and neither the CLI nor the operator silently starts it again at version 1."""
    with Strongroom.open(make_settings(db_url)) as room:
        room.set("ns", "db", {"password": "p1"})
        with attacker.begin() as conn:
            secret_id = _secret_id(conn, "db")
            conn.execute(delete(secret_versions).where(secret_versions.c.secret_id == secret_id))
            conn.execute(delete(secrets).where(secrets.c.id == secret_id))
        _all_reads_refused(room, "db", "password")
        # An administrator who has seen this records the deletion; then the name is free.
        assert room.delete("ns", "db") == 0
        room.set("ns", "db", {"password": "p2"})
        assert room.get("ns", "db").data == {"password": "p2"}
        assert room.audit_verify().ok


def test_a_deleted_manifest_is_no_bypass(db_url: str, attacker: Engine) -> None:
    with Strongroom.open(make_settings(db_url)) as room:
        room.set("ns", "db", {"password": "old"})
        room.set("ns", "db", {"password": "new"})
        with attacker.begin() as conn:
            drop_old_writer_guard(conn)
            conn.execute(
                update(secrets)
                .where(secrets.c.name == "db")
                .values(current_version=1, **dict.fromkeys(MANIFEST_COLUMNS))
            )
        _all_reads_refused(room, "db", "password")
    with Strongroom.open(make_settings(db_url)) as fresh:  # no second hand-out of manifests
        _all_reads_refused(fresh, "db", "password")
        actions = [e.action for e in fresh.audit_events()]
    assert actions.count("manifest.init") == 1
    assert _cli_get(db_url, "ns/db").returncode == 1


def test_rekey_reports_a_rolled_back_secret_and_moves_the_other_manifests(
    db_url: str, attacker: Engine
) -> None:
    with Strongroom.open(make_settings(db_url)) as room:
        for name in ("a", "b", "c"):
            room.set("ns", name, {"k": f"{name}-1"})
        room.set("ns", "b", {"k": "b-2"})
        with attacker.begin() as conn:
            drop_old_writer_guard(conn)
            conn.execute(update(secrets).where(secrets.c.name == "b").values(current_version=1))
        report = rekey(room, batch=2)
        assert (report.success, report.fail) == (2, 2)  # b's two versions: reported, untouched
        assert {(f.name, f.reason) for f in report.failures} == {("b", BARE)}
        with room.engine.connect() as conn:
            keys = dict(conn.execute(select(secrets.c.name, secrets.c.manifest_key)).all())
        assert keys["a"] == keys["c"] == report.data_key_id != keys["b"]
        assert room.get("ns", "a").data == {"k": "a-1"}
        assert room.get("ns", "c").data == {"k": "c-1"}
        _refused(lambda: room.get("ns", "b"))


# --- upgrading a store written before manifests --------------------------------------------


def _store_from_before_manifests(db_url: str) -> None:
    """A store at schema 0002 with secrets written as Strongroom wrote them then: values
    sealed under a data key, each write with its keyed audit event, no manifest."""
    engine = create_engine(normalize_url(db_url))
    try:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["engine"] = engine
        command.upgrade(cfg, "0002")
        settings = make_settings(db_url)
        ring = build_keyring(settings)
        audit = AuditKey(engine, ring, actor="old@host")
        chain = audit.current()
        data_key_id, seed = DataKeys(
            engine, ring, settings.data_keys, actor="old@host", audit=audit
        ).for_write()
        history = {"db": [{"password": "p1"}, {"password": "p2", "user": "app"}],
                   "api": [{"token": "t1"}]}  # fmt: skip
        now = datetime.now(UTC)
        with transaction(engine) as conn:
            for name, writes in history.items():
                secret_id = conn.execute(
                    text("INSERT INTO secrets (namespace, name, description, current_version, "
                         "created_at, updated_at) VALUES ('ns', :n, '', :v, :t, :t) RETURNING id"),
                    {"n": name, "v": len(writes), "t": now},
                ).scalar_one()  # fmt: skip
                for version, data in enumerate(writes, start=1):
                    for key, value in data.items():
                        identity = Identity("ns", name, key, version, data_key_id)
                        sealed = seal(seed, identity, values.encode(value))
                        conn.execute(insert(secret_versions).values(
                            secret_id=secret_id, version=version, key=key,
                            data_key_id=data_key_id, format=1, salt=sealed.salt,
                            nonce=sealed.nonce, ciphertext=sealed.ciphertext,
                            state="current" if version == len(writes) else "previous",
                            created_by="old@host", created_at=now,
                        ))  # fmt: skip
                    repo.append_audit(conn, AuditEvent(
                        time=now, actor="old@host", action="secret.set", outcome="ok",
                        namespace="ns", name=name, key=",".join(sorted(data)), version=version,
                    ), key=chain)  # fmt: skip
    finally:
        engine.dispose()


def test_secrets_written_before_manifests_get_one_and_are_protected_from_then_on(
    db_url: str, attacker: Engine
) -> None:
    _store_from_before_manifests(db_url)
    with Strongroom.open(make_settings(db_url)) as room:  # migrates to 0003
        assert room.get("ns", "db").data == {"password": "p2", "user": "app"}
        assert room.get("ns", "db", version=1).data == {"password": "p1"}
        assert room.get("ns", "api", "token").data == {"token": "t1"}
        events = list(room.audit_events())
        assert room.audit_verify().ok
    begun = [(e.action, e.name) for e in events if e.action.startswith("manifest")
             or e.action == "secret.manifest"]  # fmt: skip
    assert begun == [("secret.manifest", "db"), ("secret.manifest", "api"), ("manifest.init", "")]

    with attacker.begin() as conn:
        drop_old_writer_guard(conn)
        conn.execute(update(secrets).where(secrets.c.name == "db").values(current_version=1))
        conn.execute(
            update(secrets).where(secrets.c.name == "api").values(**dict.fromkeys(MANIFEST_COLUMNS))
        )
    with Strongroom.open(make_settings(db_url)) as room:
        _all_reads_refused(room, "db", "password")
        _all_reads_refused(room, "api", "token")


def test_a_downgrade_below_manifests_keeps_every_value(db_url: str, attacker: Engine) -> None:
    """The downgrade drops the manifest columns in place (a copy of the secrets table, on
    SQLite, would have cascaded to every version row). Upgrading again cannot tell the
    manifests' absence from an attacker's deletion: the secrets are refused, as documented."""
    with Strongroom.open(make_settings(db_url)) as room:
        room.set("ns", "db", {"password": "p1"})
        room.set("ns", "db", {"password": "p2"})
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = attacker
    command.downgrade(cfg, "0002")
    with attacker.connect() as conn:
        count = conn.execute(text("SELECT COUNT(*) FROM secret_versions")).scalar_one()
        assert count == 2
    command.upgrade(cfg, "head")
    with Strongroom.open(make_settings(db_url)) as room:
        _refused(lambda: room.get("ns", "db"))


def test_a_writer_from_before_manifests_is_refused(db_url: str, attacker: Engine) -> None:
    """What a Strongroom older than schema 0003 does: move the version, manifest untouched."""
    with Strongroom.open(make_settings(db_url)) as room:
        room.set("ns", "db", {"password": "p1"})
        with attacker.begin() as conn, pytest.raises(DBAPIError, match="older than schema 0003"):
            conn.execute(update(secrets).where(secrets.c.name == "db").values(current_version=2))
        assert room.get("ns", "db").data == {"password": "p1"}


@pytest.mark.parametrize(
    ("statement", "params"),
    [
        pytest.param("_NEWEST_WRITE", {}, id="newest-write"),
        pytest.param("_READ_VERSION", {"version": None}, id="read-with-newest-write"),
    ],
)
def test_the_check_reads_an_index_of_writes_not_the_whole_log(
    sqlite_url: str, statement: str, params: dict[str, object]
) -> None:
    """The per-read question to the chain must stay cheap however long the log grows."""
    with Strongroom.open(make_settings(sqlite_url)) as room:
        room.set("ns", "db", {"password": "p1"})
        with room.engine.connect() as conn:
            compiled = getattr(repo, statement).statement.compile(conn)
            bound = compiled.construct_params({"namespace": "ns", "name": "db", **params})
            positional = tuple(bound[name] for name in compiled.positiontup or ())
            plan = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", positional).all()
    steps = " | ".join(str(row[-1]) for row in plan)
    assert "audit_events USING" in steps and "INDEX ix_audit_events_writes" in steps, steps
    assert "SCAN audit_events" not in steps, steps
