"""Values bound to their namespace's identity (strongroom.bindings).

The attack: a tenant's namespace is deleted; someone else creates a namespace of the same name
and a ManagedSecret of the same name, and asks the operator for the first tenant's values. The
store records the namespace UID at the first sync and refuses another one until an
administrator rebinds (audited); ``--trust-namespace-names`` trusts names, and says so.
"""

from __future__ import annotations

import base64
import sqlite3
import subprocess
import urllib.error
from pathlib import Path

import pytest

from strongroom.api import Strongroom
from strongroom.audit import Outcome
from strongroom.errors import NamespaceMismatch, NotFound
from tests.components.kube import KubeCluster
from tests.components.operator import STRONGROOM, OperatorProcess, eventually
from tests.conftest import make_settings

OLD, NEW = "11111111-aaaa-4aaa-8aaa-000000000001", "22222222-bbbb-4bbb-8bbb-000000000002"


def generate(current: object) -> dict[str, str]:
    return {} if current else {"pw": "first-tenant-canary-7d1f"}


def test_values_go_only_to_the_namespace_they_were_bound_to(room: Strongroom) -> None:
    first = room.resolve("payments", "db", generate, namespace_uid=OLD)
    assert first is not None and first.data == {"pw": "first-tenant-canary-7d1f"}
    created = [e for e in room.audit_events() if e.action == "secret.set"][-1]
    assert created.detail == f"bound to namespace uid {OLD}"

    with pytest.raises(NamespaceMismatch, match="strongroom secret rebind payments/db") as caught:
        room.resolve("payments", "db", lambda _: {"pw": "second-tenant"}, namespace_uid=NEW)
    assert "canary" not in str(caught.value)
    refused = room.audit_tail(1)[0]
    assert (refused.action, refused.outcome) == ("operator.read", Outcome.DENIED)
    assert "canary" not in refused.detail
    # Nothing the refused call produced was written; the first tenant's value is intact.
    assert room.get("payments", "db").data == {"pw": "first-tenant-canary-7d1f"}
    assert room.get("payments", "db").version == 1

    # The same namespace reads on; trusting names (None) checks nothing and binds nothing.
    assert room.resolve("payments", "db", generate, namespace_uid=OLD) is not None
    assert room.resolve("payments", "db", generate, namespace_uid=None) is not None


def test_rebind_hands_the_values_to_the_next_namespace_and_is_audited(room: Strongroom) -> None:
    room.resolve("payments", "db", generate, namespace_uid=OLD)
    assert room.rebind("payments", "db", actor="admin@ops") == OLD
    rebound = room.audit_tail(1)[0]
    assert (rebound.action, rebound.actor, rebound.detail) == (
        "secret.rebind", "admin@ops", f"was bound to namespace uid {OLD}")
    handed = room.resolve("payments", "db", generate, namespace_uid=NEW)
    assert handed is not None and handed.data["pw"] == "first-tenant-canary-7d1f"
    bind = room.audit_tail(2)[-1]
    assert (bind.action, bind.detail) == ("secret.bind", f"bound to namespace uid {NEW}")
    with pytest.raises(NamespaceMismatch):  # and now the old namespace is the stranger
        room.resolve("payments", "db", generate, namespace_uid=OLD)
    with pytest.raises(NotFound):
        room.rebind("payments", "nothing-here")
    assert room.audit_tail(1)[0].outcome == Outcome.NOT_FOUND


def test_values_set_before_any_sync_bind_at_the_first(room: Strongroom) -> None:
    room.set("payments", "api", {"token": "set-by-admin"})
    room.resolve("payments", "api", lambda _: {}, namespace_uid=OLD)
    events = [e for e in room.audit_events() if e.action == "secret.bind"]
    assert [(e.name, e.detail) for e in events] == [("api", f"bound to namespace uid {OLD}")]
    room.resolve("payments", "api", lambda _: {}, namespace_uid=OLD)  # bound once, not again
    assert len([e for e in room.audit_events() if e.action == "secret.bind"]) == 1
    with pytest.raises(NamespaceMismatch):
        room.resolve("payments", "api", lambda _: {}, namespace_uid=NEW)


def test_the_cli_rebinds(sqlite_url: str, tmp_path: Path) -> None:
    with Strongroom.open(make_settings(sqlite_url)) as room:
        room.resolve("payments", "db", generate, namespace_uid=OLD)
    env = {"STRONGROOM_DATABASE_URL": sqlite_url, "STRONGROOM_MASTER_KEY": "6b" * 32,
           "PATH": "/usr/bin:/bin"}  # fmt: skip
    done = subprocess.run([STRONGROOM, "secret", "rebind", "payments/db"], env=env,
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"was bound to namespace uid {OLD}" in done.stdout
    path = sqlite_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT namespace_uid FROM secrets").fetchall() == [(None,)]
    missing = subprocess.run([STRONGROOM, "secret", "rebind", "payments/none"], env=env,
                             capture_output=True, text=True, check=False)  # fmt: skip
    assert missing.returncode == 1 and "not found" in missing.stderr


# -- through the operator and a real apiserver ------------------------------------------------


def ready(op: OperatorProcess, name: str) -> dict[str, str]:
    conditions = (op.msec(name).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == "Ready"), {})


def namespace_gone(kube: KubeCluster, namespace: str) -> bool:
    try:
        kube.request("GET", f"/api/v1/namespaces/{namespace}")
    except urllib.error.HTTPError as exc:
        return exc.code == 404
    return False


@pytest.mark.slow
def test_a_namespace_created_again_does_not_inherit_the_values(
    op: OperatorProcess, kube: KubeCluster
) -> None:
    spec = {"data": [{"key": "pw", "generate": {"length": 24}}]}
    op.apply("db", spec)
    eventually(lambda: ready(op, "db").get("status") == "True", timeout=45, what="first sync")
    secret = op.secret("db")
    assert secret is not None
    first = base64.b64decode(secret["data"]["pw"]).decode()

    # The first tenant's namespace goes (the namespace controller deletes its objects, the
    # operator releases its finalizer); a second tenant creates one of the same name and asks
    # for the same ManagedSecret. The operator keeps running: nothing it cached may answer.
    kube.request("DELETE", f"/api/v1/namespaces/{op.namespace}")
    eventually(lambda: namespace_gone(kube, op.namespace), timeout=90, what="namespace deleted")
    kube.ensure_namespace(op.namespace)
    op.apply("db", spec)
    condition = eventually(lambda: ready(op, "db").get("reason") == "NamespaceMismatch"
                           and ready(op, "db"), timeout=45, what="NamespaceMismatch")  # fmt: skip
    assert condition["status"] == "False"
    assert f"strongroom secret rebind {op.namespace}/db" in condition["message"]
    assert first not in str(op.msec("db")) and first not in op.log()
    assert op.secret("db") is None
    eventually(lambda: "NamespaceMismatch" in op.event_reasons(), timeout=30,
               what="a NamespaceMismatch Event")  # fmt: skip
    audit = op.cli("audit", "tail", "-n", "50")
    assert "denied" in audit and first not in audit

    # The administrator decides the values are the new namespace's: rebind, synced within
    # seconds (the store watch), the old value handed over.
    op.cli("secret", "rebind", f"{op.namespace}/db")
    eventually(lambda: ready(op, "db").get("status") == "True", timeout=45, what="rebound sync")
    handed = op.secret("db")
    assert handed is not None and base64.b64decode(handed["data"]["pw"]).decode() == first


@pytest.mark.slow
def test_trusting_names_is_a_flag_and_says_so(op: OperatorProcess, kube: KubeCluster) -> None:
    op.cli("secret", "set", f"{op.namespace}/shared", "token=from-the-old-cluster")
    # The store was bound elsewhere (a restored cluster: every namespace UID differs).
    path = op.env["STRONGROOM_DATABASE_URL"].removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE secrets SET namespace_uid = ? WHERE name = 'shared'", (OLD,))
    op.apply("shared", {"data": [{"key": "token"}]})
    eventually(lambda: ready(op, "shared").get("reason") == "NamespaceMismatch", timeout=45,
               what="NamespaceMismatch")  # fmt: skip
    op.stop()
    op.args = ("--trust-namespace-names",)
    op.start()
    eventually(lambda: ready(op, "shared").get("status") == "True", timeout=45,
               what="synced by name")  # fmt: skip
    assert "namespace identity not checked (--trust-namespace-names)" in op.log()
    with sqlite3.connect(path) as conn:  # trusting names binds nothing either
        rows = conn.execute("SELECT namespace_uid FROM secrets WHERE name = 'shared'").fetchall()
        assert rows == [(OLD,)]
