"""The audit checkpoint catches what the keyed chain alone cannot: an older database.

A database administrator without the KEK cannot forge the chain, but can put back a copy of the
database taken earlier (a backup, or a head row saved earlier restored after cutting the log to
it), empty it, or replace the keyed chain by an unkeyed one: each is a chain that verifies. The
operator publishes the head outside the store (a ConfigMap), ``strongroom audit verify
--checkpoint``/``--expect`` compare with it, and an operator started on such a database says so
(a Warning Event on the ConfigMap, a metric, /healthz failing) and does not reconcile until an
administrator accepts the store's head (``strongroom audit checkpoint reset``, audited).

Each attack runs on SQLite and on the real PostgreSQL server: a backup is a copy of the SQLite
file (sqlite3's backup API) or ``CREATE DATABASE … TEMPLATE``, swapped in under the same URL.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import shutil
import sqlite3
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import create_engine, delete, insert, select, text, update
from sqlalchemy.engine import make_url

from strongroom import Strongroom
from strongroom.audit import GENESIS_HASH, AuditEvent, Checkpoint, seal_event
from strongroom.store.engine import normalize_url
from strongroom.store.schema import audit_events, audit_head
from tests.components.base import free_port
from tests.components.kube import KubeCluster
from tests.components.operator import STRONGROOM, OperatorProcess, child_env, eventually
from tests.conftest import MASTER_KEY, make_settings

INTERVAL = "1"  # seconds between checks in these tests (the floor; 30 s by default)


# -- the database, as its administrator handles it ------------------------------------------


@dataclasses.dataclass
class Database:
    """The store's database at a fixed URL: backed up, swapped back in, emptied."""

    url: str
    tmp: Path

    @property
    def sqlite_path(self) -> Path | None:
        parsed = make_url(self.url)
        return Path(str(parsed.database)) if parsed.get_backend_name() == "sqlite" else None

    def _admin(self) -> tuple[psycopg.Connection[Any], str]:
        parsed = make_url(self.url)
        admin = f"postgresql://{parsed.username}@{parsed.host}:{parsed.port}/postgres"
        return psycopg.connect(admin, autocommit=True), str(parsed.database)

    def backup(self) -> str:
        """A consistent copy of the database as it is now; its name."""
        name = f"backup-{uuid.uuid4().hex[:8]}"
        path = self.sqlite_path
        if path is not None:
            with sqlite3.connect(path) as src, sqlite3.connect(self.tmp / name) as dst:
                src.backup(dst)
            return name
        conn, live = self._admin()
        with conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{live}"')
        return name

    def restore(self, backup: str) -> None:
        """Put the copy back in place of the live database (nothing may hold it open)."""
        path = self.sqlite_path
        if path is not None:
            self._remove_sqlite(path)
            shutil.copyfile(self.tmp / backup, path)
            return
        conn, live = self._admin()
        with conn:
            conn.execute(f'DROP DATABASE "{live}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{live}" TEMPLATE "{backup}"')

    def empty(self) -> None:
        """A fresh, empty database at the same URL."""
        path = self.sqlite_path
        if path is not None:
            self._remove_sqlite(path)
            return
        conn, live = self._admin()
        with conn:
            conn.execute(f'DROP DATABASE "{live}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{live}"')

    @staticmethod
    def _remove_sqlite(path: Path) -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


@pytest.fixture
def database(db_url: str, tmp_path: Path) -> Database:
    return Database(db_url, tmp_path)


def history(url: str, name: str = "db", rounds: int = 2) -> None:
    with Strongroom.open(make_settings(url)) as room:
        for i in range(rounds):
            room.set("ns", name, {"password": f"p{i}"})
            room.get("ns", name)


def store_checkpoint(url: str) -> Checkpoint:
    with Strongroom.open(make_settings(url)) as room:
        checkpoint = room.audit_checkpoint()
    assert checkpoint is not None
    return checkpoint


def cli(url: str, *args: str, kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = child_env(url, MASTER_KEY.hex())
    env.pop("KUBECONFIG", None)
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    return subprocess.run([STRONGROOM, *args], env=env, capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip


def refused(result: subprocess.CompletedProcess[str], needle: str) -> None:
    """Exit 1 and one clear line on stderr."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("strongroom: audit checkpoint "), lines
    assert needle in lines[0], lines


# -- the attacks, without Kubernetes: `audit verify --expect SEQ:MAC` ------------------------


Attack = Callable[[Database, str, dict[str, Any], Checkpoint], Checkpoint]


def restore_an_older_backup(db: Database, backup: str, _: dict[str, Any],
                            cp: Checkpoint) -> Checkpoint:  # fmt: skip
    db.restore(backup)
    return cp


def restore_an_older_backup_and_write_past_the_checkpoint(
    db: Database, backup: str, _: dict[str, Any], cp: Checkpoint
) -> Checkpoint:
    db.restore(backup)
    with Strongroom.open(make_settings(db.url)) as room:
        while store_head(db.url)[0] <= cp.seq:
            room.list("ns")
    return cp


def empty_the_database(db: Database, _b: str, _h: dict[str, Any], cp: Checkpoint) -> Checkpoint:
    db.empty()
    return cp


def truncate_to_a_head_row_saved_earlier(
    db: Database, _: str, saved: dict[str, Any], cp: Checkpoint
) -> Checkpoint:
    """The head row read when the store was younger, put back after cutting the log to it:
    every link and the head MAC are the key's own."""
    engine = create_engine(normalize_url(db.url))
    with engine.begin() as conn:
        conn.execute(delete(audit_events).where(audit_events.c.seq > saved["seq"]))
        conn.execute(update(audit_head).values(**saved))
    engine.dispose()
    return cp


def replace_the_keyed_chain_by_an_unkeyed_one(
    db: Database, _: str, _h: dict[str, Any], cp: Checkpoint
) -> Checkpoint:
    """Audit key and keyed events deleted; as many plain SHA-256 events forged in their place:
    it looks like a store from before schema 0002 (``audit verify`` alone passes)."""
    engine = create_engine(normalize_url(db.url))
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_keys"))
        conn.execute(delete(audit_events))
        prev, forged = GENESIS_HASH, []
        for seq in range(1, cp.seq + 3):
            event = AuditEvent(time=datetime(2026, 1, 1), actor="old@host",
                               action="secret.get", outcome="ok", namespace="ns", name="db")  # fmt: skip
            placed = seal_event(event, seq=seq, prev_hash=prev, key=None)
            forged.append(dataclasses.asdict(placed))
            prev = placed.hash
        conn.execute(insert(audit_events), forged)
        conn.execute(update(audit_head).values(seq=len(forged), hash=prev, mac=""))
    engine.dispose()
    return cp


def forge_a_checkpoint_ahead(_d: Database, _b: str, _h: dict[str, Any],
                             cp: Checkpoint) -> Checkpoint:  # fmt: skip
    """Not the database: the checkpoint, moved ahead of the store. Never adopted."""
    return Checkpoint(cp.seq + 1000, cp.mac)


def forge_a_checkpoint_mac(_d: Database, _b: str, _h: dict[str, Any],
                           cp: Checkpoint) -> Checkpoint:  # fmt: skip
    return Checkpoint(cp.seq, "0" * 64)


# Each leaves a chain that `audit verify` alone accepts; the checkpoint says why it is not the one.
ATTACKS: list[tuple[Attack, str]] = [
    (restore_an_older_backup, "behind the checkpoint"),
    (restore_an_older_backup_and_write_past_the_checkpoint, "differs from the checkpoint"),
    (empty_the_database, "head is event 0, behind the checkpoint"),
    (truncate_to_a_head_row_saved_earlier, "behind the checkpoint"),
    (replace_the_keyed_chain_by_an_unkeyed_one, "has no audit key"),
    (forge_a_checkpoint_ahead, "behind the checkpoint"),
    (forge_a_checkpoint_mac, "differs from the checkpoint"),
]


def store_head(url: str) -> tuple[int, str, str]:
    engine = create_engine(normalize_url(url))
    with engine.connect() as conn:
        row = conn.execute(select(audit_head.c.seq, audit_head.c.hash, audit_head.c.mac)).one()
    engine.dispose()
    return int(row.seq), str(row.hash), str(row.mac)


@pytest.mark.parametrize(("attack", "needle"), [pytest.param(a, n, id=a.__name__) for a, n in ATTACKS])
def test_verify_expect_catches_an_older_emptied_or_replaced_database(
    database: Database, attack: Attack, needle: str
) -> None:
    url = database.url
    history(url)
    seq, link, mac = store_head(url)
    saved = {"seq": seq, "hash": link, "mac": mac}  # what a DBA can read and keep
    backup = database.backup()
    history(url, "other", rounds=3)
    checkpoint = store_checkpoint(url)
    assert checkpoint.seq > seq
    passed = cli(url, "audit", "verify", "--expect", str(checkpoint))
    assert passed.returncode == 0, passed.stderr
    assert f"audit checkpoint {checkpoint}: reached (event {checkpoint.seq})" in passed.stdout

    expected = attack(database, backup, saved, checkpoint)

    with Strongroom.open(make_settings(url)) as room:
        assert room.audit_verify().ok  # the chain alone cannot tell
        problem = room.audit_check_checkpoint(expected)
    assert problem is not None and needle in problem
    refused(cli(url, "audit", "verify", "--expect", str(expected)), needle)


def test_verify_expect_refuses_a_malformed_expectation(sqlite_url: str) -> None:
    result = cli(sqlite_url, "audit", "verify", "--expect", "12:nothex")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "strongroom: error: --expect: a checkpoint's MAC is 64 lowercase hex characters"
    )


def test_the_head_published_is_never_one_that_does_not_authenticate(database: Database) -> None:
    history(database.url)
    engine = create_engine(normalize_url(database.url))
    with engine.begin() as conn:
        conn.execute(update(audit_head).values(mac="1" * 64))
    engine.dispose()
    with Strongroom.open(make_settings(database.url)) as room:
        with pytest.raises(Exception, match="head does not authenticate"):
            room.audit_checkpoint()


# -- the operator -----------------------------------------------------------------------------


@dataclasses.dataclass
class Setup:
    kube: KubeCluster
    home: str  # the operator's namespace, where the checkpoint is kept
    tenant: str  # the namespace it watches
    url: str
    tmp: Path
    name: str = "audit-checkpoint"

    @property
    def ref(self) -> str:
        return f"{self.home}/{self.name}"

    def operator(self, *args: str, log: str = "operator.log") -> OperatorProcess:
        env = child_env(self.url, MASTER_KEY.hex(), STRONGROOM_AUDIT_CHECKPOINT_SECONDS=INTERVAL)
        op = OperatorProcess(self.kube, self.tenant, env, self.tmp / log,
                             args=("--audit-checkpoint", self.ref, *args))  # fmt: skip
        op.start()
        return op

    def configmap(self) -> dict[str, Any] | None:
        try:
            return dict(self.kube.request(
                "GET", f"/api/v1/namespaces/{self.home}/configmaps/{self.name}"))  # fmt: skip
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def published(self) -> Checkpoint | None:
        cm = self.configmap()
        data = (cm or {}).get("data") or {}
        return Checkpoint(int(data["seq"]), data["mac"]) if "seq" in data else None

    def events(self, reason: str) -> list[dict[str, Any]]:
        items = self.kube.request("GET", f"/api/v1/namespaces/{self.home}/events")["items"]
        return [e for e in items if e["reason"] == reason]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return cli(self.url, *args, kubeconfig=self.kube.kubeconfig)


@pytest.fixture
def setup(kube: KubeCluster, db_url: str, tmp_path: Path) -> Setup:
    home, tenant = (f"{p}-{uuid.uuid4().hex[:6]}" for p in ("sr", "cp"))
    for ns in (home, tenant):
        kube.ensure_namespace(ns)
    return Setup(kube, home, tenant, db_url, tmp_path)


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body = response.read().decode()
    return {line.split(" ")[0]: float(line.split(" ")[1]) for line in body.splitlines()
            if line.startswith("strongroom_audit_checkpoint")}  # fmt: skip


def health(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=15) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def synced(op: OperatorProcess, name: str, key: str, value: str) -> bool:
    secret = op.secret(name)
    return secret is not None and base64.b64decode(secret["data"][key]).decode() == value


def test_the_operator_publishes_the_head_and_on_shutdown_the_final_one(setup: Setup) -> None:
    metrics = free_port()
    assert setup.configmap() is None
    op = setup.operator("--metrics-port", str(metrics))
    try:
        first = eventually(setup.published, timeout=30, what="the checkpoint created")
        assert setup.configmap()["data"]["format"] == "strongroom.io/audit-checkpoint/v1"
        # A value set with the CLI moves the head; the checkpoint follows within the interval.
        op.cli("secret", "set", f"{setup.tenant}/app", "k=v1")
        moved = eventually(lambda: (p := setup.published()) and p.seq > first.seq and p,
                           timeout=10, what="the checkpoint moved")  # fmt: skip
        op.apply("app", {"data": [{"key": "k"}]})
        eventually(lambda: synced(op, "app", "k", "v1"), timeout=30, what="the Secret synced")
        eventually(lambda: setup.published().seq > moved.seq, timeout=10,
                   what="the checkpoint moved with the sync's audit events")  # fmt: skip
        values = eventually(lambda: (m := scrape(metrics)).get(
            "strongroom_audit_checkpoint_seq", 0) > moved.seq and m, what="the metric")  # fmt: skip
        assert values["strongroom_audit_checkpoint_mismatch"] == 0.0
        assert values["strongroom_audit_checkpoint_checked_timestamp_seconds"] > 0
    finally:
        op.stop()
    assert op.proc is None
    # After SIGTERM: the checkpoint is the store's final head, and it verifies.
    assert setup.published() == store_checkpoint(setup.url)
    result = setup.cli("audit", "verify", "--checkpoint", setup.ref)
    assert result.returncode == 0, result.stderr
    assert f"audit checkpoint {setup.ref}: reached" in result.stdout


def test_an_operator_on_an_older_database_reports_it_and_waits_for_a_reset(
    setup: Setup, database: Database
) -> None:
    op = setup.operator()
    try:
        op.cli("secret", "set", f"{setup.tenant}/app", "k=v1")
        op.apply("app", {"data": [{"key": "k"}]})
        eventually(lambda: synced(op, "app", "k", "v1"), timeout=30, what="the Secret synced")
    finally:
        op.stop()
    backup = database.backup()  # the backup an administrator took, or an attacker kept
    op = setup.operator(log="operator-2.log")
    try:
        op.cli("secret", "set", f"{setup.tenant}/app", "k=v2")  # rotated since the backup
        eventually(lambda: synced(op, "app", "k", "v2"), timeout=30, what="the rotation synced")
    finally:
        op.stop()
    final = setup.published()
    assert final == store_checkpoint(setup.url)
    passed = setup.cli("audit", "verify", "--checkpoint", setup.ref)
    assert passed.returncode == 0, passed.stderr

    # (b) the whole database emptied: a fresh store.
    database.empty()
    refused(setup.cli("audit", "verify", "--checkpoint", setup.ref), "head is event 0, behind")
    # (a) the older copy swapped in: the chain alone verifies, the checkpoint does not.
    database.restore(backup)
    assert cli(setup.url, "audit", "verify").returncode == 0
    refused(setup.cli("audit", "verify", "--checkpoint", setup.ref), "behind the checkpoint")

    # An operator started on it says so, and does not roll the Secret back to v1.
    metrics, probe = free_port(), free_port()
    op = setup.operator("--metrics-port", str(metrics),
                        "--liveness", f"http://127.0.0.1:{probe}/healthz", log="operator-3.log")  # fmt: skip
    try:
        warning = eventually(lambda: setup.events("AuditCheckpointMismatch"), timeout=30,
                             what="a Warning Event on the checkpoint")[0]  # fmt: skip
        assert warning["type"] == "Warning"
        assert warning["involvedObject"]["kind"] == "ConfigMap"
        assert warning["involvedObject"]["name"] == setup.name
        assert "behind the checkpoint" in warning["message"]
        assert scrape(metrics)["strongroom_audit_checkpoint_mismatch"] == 1.0
        status, body = eventually(lambda: (h := health(probe))[0] != 200 and h, timeout=30,
                                  what="/healthz failing")  # fmt: skip
        assert status == 500, body
        op.apply("new", {"data": [{"key": "g", "generate": {}}]})
        op.kube.request("DELETE", f"/api/v1/namespaces/{setup.tenant}/secrets/app")
        assert not _becomes(lambda: op.secret("new") or op.secret("app"), seconds=6)
        assert setup.published() == final  # the evidence is kept, never overwritten
        assert op.proc is not None and op.proc.poll() is None  # waiting, not crashing

        # The administrator accepts the restored head, with a reason the audit log keeps.
        reset = setup.cli("audit", "checkpoint", "reset", setup.ref,
                          "--reason", "restored the backup of last night")  # fmt: skip
        assert reset.returncode == 0, reset.stderr
        assert "reset to event" in reset.stdout and f"was event {final.seq}" in reset.stdout
        eventually(lambda: synced(op, "app", "k", "v1") and op.secret("new"), timeout=45,
                   what="reconciling from the accepted store")  # fmt: skip
        eventually(lambda: setup.events("AuditCheckpointReached"), timeout=30,
                   what="a Normal Event once the store reaches the checkpoint")  # fmt: skip
        eventually(lambda: health(probe)[0] == 200, timeout=30, what="/healthz passing again")
        assert scrape(metrics)["strongroom_audit_checkpoint_mismatch"] == 0.0
    finally:
        op.stop()
    tail = cli(setup.url, "audit", "tail", "--json", "-n", "200").stdout.splitlines()
    resets = [e for e in map(json.loads, tail) if e["action"] == "audit.checkpoint.reset"]
    assert len(resets) == 1
    assert (resets[0]["namespace"], resets[0]["name"]) == (setup.home, setup.name)
    assert "reason: restored the backup of last night" in resets[0]["detail"]
    assert f"was event {final.seq}, which the store does not reach" in resets[0]["detail"]
    assert setup.cli("audit", "verify", "--checkpoint", setup.ref).returncode == 0


def _becomes(check: Callable[[], Any], *, seconds: float) -> bool:
    """Whether ``check`` turns truthy within ``seconds`` (for what must not happen)."""
    try:
        eventually(check, timeout=seconds, what="")
    except AssertionError:
        return False
    return True


def test_a_database_rolled_back_under_a_running_operator_stops_it(
    setup: Setup, database: Database
) -> None:
    op = setup.operator()
    try:
        op.cli("secret", "set", f"{setup.tenant}/app", "k=v1")
        first = eventually(setup.published, timeout=30, what="the checkpoint created")
        seq, link, mac = store_head(setup.url)  # the DBA keeps the head row of this moment
        op.cli("secret", "set", f"{setup.tenant}/app", "k=v2")
        eventually(lambda: setup.published().seq > seq, timeout=10,
                   what="the checkpoint past the saved head")  # fmt: skip
        truncate_to_a_head_row_saved_earlier(database, "", {"seq": seq, "hash": link, "mac": mac},
                                             first)  # fmt: skip
        assert op.proc is not None
        assert op.proc.wait(timeout=30) == 1
    finally:
        op.stop()
    log = op.log()
    assert "behind the checkpoint" in log and "stopped reconciling and exiting" in log
    assert eventually(lambda: setup.events("AuditCheckpointMismatch"), timeout=10,
                      what="the Warning Event")  # fmt: skip
    refused(setup.cli("audit", "verify", "--checkpoint", setup.ref), "behind the checkpoint")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_checkpoint_forged_ahead_is_a_mismatch_and_never_adopted(setup: Setup) -> None:
    """Whoever may write the ConfigMap can make the check fail, not pass."""
    op = setup.operator()
    try:
        op.cli("secret", "set", f"{setup.tenant}/app", "k=v1")
        eventually(setup.published, timeout=30, what="the checkpoint created")
    finally:
        op.stop()
    cm = setup.configmap()
    assert cm is not None
    cm["data"]["seq"] = str(int(cm["data"]["seq"]) + 1000)
    setup.kube.request("PUT", f"/api/v1/namespaces/{setup.home}/configmaps/{setup.name}", cm)
    forged = setup.published()
    refused(setup.cli("audit", "verify", "--checkpoint", setup.ref), "behind the checkpoint")
    op = setup.operator(log="operator-2.log")
    try:
        eventually(lambda: setup.events("AuditCheckpointMismatch"), timeout=30,
                   what="a Warning Event on the checkpoint")  # fmt: skip
        op.apply("new", {"data": [{"key": "g", "generate": {}}]})
        assert not _becomes(lambda: op.secret("new"), seconds=4)
        assert setup.published() == forged  # not adopted, not overwritten
    finally:
        op.stop()
    assert setup.published() == forged  # not even on shutdown
