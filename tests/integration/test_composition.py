"""data[].fromManagedSecret through the real apiserver and operator: a value kept once and read
by other ManagedSecrets, in the same namespace freely (the admission policy asks the author's
rights, test_admission_composition.py) and across namespaces only while a ManagedSecretGrant
allows it; always from the key where it is stored, never through another composed key."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.components.kube import KubeCluster
from tests.components.operator import OperatorProcess, child_env, eventually
from tests.conftest import MASTER_KEY
from tests.integration.test_operator import decoded, ready
from tests.integration.test_templates import condition

CANARY = "CANARY-shared-5f1c-never-log-me"
GRANTS = "/apis/strongroom.io/v1alpha1/namespaces/{ns}/managedsecretgrants"


def composed(name: str, key: str, namespace: str | None = None) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": name, "key": key}
    if namespace:
        ref["namespace"] = namespace
    return ref


def test_a_composed_value_reaches_every_dependant_when_the_source_changes(
    op: OperatorProcess,
) -> None:
    ns = op.namespace
    op.cli("secret", "set", f"{ns}/db", "user=app", "password=first")
    op.apply("db", {"data": [{"key": "user"}, {"key": "password"}]})
    dsn = "postgres://{{ user }}:{{ password | urlquote }}@db:5432/app"
    op.apply("api", {"data": [{"key": "user", "fromManagedSecret": composed("db", "user")},
                              {"key": "password", "fromManagedSecret": composed("db", "password")}],
                     "target": {"template": {"data": {"DATABASE_URL": dsn}}}})  # fmt: skip
    op.apply("worker", {"data": [{"key": "DB_PASSWORD",
                                  "fromManagedSecret": composed("db", "password")},
                                 {"key": "queue", "generate": {"length": 16}}]})  # fmt: skip
    ready(op, "api")
    ready(op, "worker")
    assert decoded(op.secret("api")) == {"DATABASE_URL": "postgres://app:first@db:5432/app"}
    assert decoded(op.secret("worker"))["DB_PASSWORD"] == "first"
    # Out-of-band, on the source only: both dependants follow within seconds.
    op.cli("secret", "set", f"{ns}/db", "password=sec/ond")
    eventually(lambda: decoded(op.secret("api")).get("DATABASE_URL")
               == "postgres://app:sec%2Fond@db:5432/app", timeout=30, what="api re-rendered")  # fmt: skip
    eventually(lambda: decoded(op.secret("worker")).get("DB_PASSWORD") == "sec/ond",
               timeout=30, what="worker re-synced")  # fmt: skip
    # The value is kept once: the dependants' own records hold no copy of it.
    assert "DB_PASSWORD" not in op.cli("secret", "get", f"{ns}/worker", "--json")
    # A key composed in its own ManagedSecret is no source: compose from where it is stored.
    op.apply("chained", {"data": [{"key": "pw",
                                   "fromManagedSecret": composed("worker", "DB_PASSWORD")}]})  # fmt: skip
    cond = condition(op, "chained", "SourceInvalid")
    assert f"{ns}/worker.DB_PASSWORD is itself composed there (from {ns}/db.password)" in (
        cond["message"])  # fmt: skip
    assert op.secret("chained") is None


def test_a_cycle_is_refused_with_a_clear_condition(op: OperatorProcess) -> None:
    op.apply("left", {"data": [{"key": "a", "fromManagedSecret": composed("right", "b")}]})
    op.apply("right", {"data": [{"key": "b", "fromManagedSecret": composed("left", "a")}]})
    for name in ("left", "right"):
        cond = condition(op, name, "CompositionCycle")
        assert cond["status"] == "False"
        assert "cycle" in cond["message"]
        assert f"{op.namespace}/left.a" in cond["message"]
        assert op.secret(name) is None


def test_a_missing_source_says_so_and_syncs_once_it_exists(op: OperatorProcess) -> None:
    op.apply("late", {"data": [{"key": "token", "fromManagedSecret": composed("later", "t")}]})
    cond = condition(op, "late", "SourceNotFound")
    assert "later" in cond["message"]
    op.cli("secret", "set", f"{op.namespace}/later", "t=there")
    op.apply("later", {"data": [{"key": "t"}]})
    eventually(lambda: decoded(op.secret("late") or {}) == {"token": "there"}, timeout=60,
               what="the dependant synced once its source exists")  # fmt: skip


# -- across namespaces, by grant only --------------------------------------------------------


@pytest.fixture
def shared(kube: KubeCluster, tmp_path: Path) -> Iterator[tuple[OperatorProcess, str]]:
    """An operator watching every namespace; its ``namespace`` is the tenant's, and a platform
    namespace holds the shared value (a canary) in the ManagedSecret ``db-root``."""
    tenant, platform = f"tenant-{uuid.uuid4().hex[:6]}", f"platform-{uuid.uuid4().hex[:6]}"
    kube.ensure_namespace(tenant)
    kube.ensure_namespace(platform)
    env = child_env(f"sqlite:///{tmp_path / 'store.db'}", MASTER_KEY.hex())
    proc = OperatorProcess(kube, tenant, env, tmp_path / "operator.log", all_namespaces=True)
    proc.start()
    try:
        proc.cli("secret", "set", f"{platform}/db-root", f"password={CANARY}")
        proc.cli("secret", "set", f"{platform}/other", "password=other")
        for name in ("db-root", "other"):
            kube.request("POST", f"/apis/strongroom.io/v1alpha1/namespaces/{platform}/managedsecrets",
                         {"apiVersion": "strongroom.io/v1alpha1", "kind": "ManagedSecret",
                          "metadata": {"name": name},
                          "spec": {"data": [{"key": "password"}]}})  # fmt: skip
        yield proc, platform
    finally:
        proc.stop()


def grant(kube: KubeCluster, platform: str, name: str, readers: list[str], names: list[str]) -> None:
    body = {"apiVersion": "strongroom.io/v1alpha1", "kind": "ManagedSecretGrant",
            "metadata": {"name": name},
            "spec": {"from": [{"namespace": n} for n in readers],
                     "to": [{"name": n} for n in names]}}  # fmt: skip
    kube.request("POST", GRANTS.format(ns=platform), body)


def test_another_namespaces_value_needs_a_grant_for_this_namespace_and_name(
    kube: KubeCluster, shared: tuple[OperatorProcess, str]
) -> None:
    op, platform = shared
    spec = {"data": [{"key": "DB_PASSWORD",
                      "fromManagedSecret": composed("db-root", "password", platform)}]}  # fmt: skip
    # No grant at all.
    op.apply("app", spec)
    cond = condition(op, "app", "GrantMissing")
    assert platform in cond["message"] and "db-root" in cond["message"]
    assert op.secret("app") is None
    # A grant for this namespace but another name, and one for this name but another namespace.
    grant(kube, platform, "wrong-name", [op.namespace], ["other"])
    grant(kube, platform, "wrong-ns", ["somebody-else"], ["db-root"])
    op.kube.request("PATCH", op.msec_path("app"), {"metadata": {"annotations": {"poke": "1"}},
                    "spec": {"refreshInterval": "10s"}},
                    content_type="application/merge-patch+json")  # fmt: skip
    eventually(lambda: op.msec("app")["status"].get("observedGeneration") == 2, timeout=30,
               what="the edited spec reconciled")  # fmt: skip
    assert condition(op, "app", "GrantMissing")
    assert op.secret("app") is None
    # The grant that names both: the value arrives without any edit of the ManagedSecret.
    grant(kube, platform, "right", [op.namespace], ["db-root"])
    ready(op, "app")
    assert decoded(op.secret("app")) == {"DB_PASSWORD": CANARY}
    # Revoked: the Secret is withdrawn within seconds and the status says why.
    kube.request("DELETE", f"{GRANTS.format(ns=platform)}/right")
    eventually(lambda: op.secret("app") is None, timeout=30, what="the Secret withdrawn")
    assert condition(op, "app", "GrantMissing")
    eventually(lambda: any(e["reason"] == "GrantMissing" and "Secret app deleted" in e["message"]
                           for e in op.events()), what="a Warning saying the Secret was withdrawn")  # fmt: skip
    op.stop()
    haystack = op.log() + json.dumps(op.events()) + json.dumps(op.msec("app"))
    assert CANARY not in haystack


def test_every_read_of_a_shared_value_is_audited_on_the_source_with_its_reader(
    kube: KubeCluster, shared: tuple[OperatorProcess, str]
) -> None:
    op, platform = shared
    grant(kube, platform, "right", [op.namespace], ["db-root"])
    op.apply("app", {"data": [{"key": "pw",
                               "fromManagedSecret": composed("db-root", "password", platform)}]})  # fmt: skip
    ready(op, "app")
    audit = op.cli("audit", "tail", "--count", "200")
    assert "operator.compose" in audit and f"for {op.namespace}/app" in audit
