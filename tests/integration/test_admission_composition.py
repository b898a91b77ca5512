"""The admission policies for composition and grants, on the real apiserver: a ManagedSecret may
compose from another of its namespace only if its author may read that one's values, and a
ManagedSecretGrant may share only values its author may read (crds/admission-policy.yaml)."""

from __future__ import annotations

import urllib.error
from typing import Any

from tests.components.base import wait_until
from tests.components.kube import KubeCluster
from tests.integration.test_admission import MSECS, author, create, ns, outcome  # noqa: F401

COMPOSITION = "strongroom-managedsecret-composition"
GRANTS_POLICY = "strongroom-managedsecret-grants"
GRANTS = "/apis/strongroom.io/v1alpha1/namespaces/{ns}/managedsecretgrants"
GRANT_RIGHTS = {"apiGroups": ["strongroom.io"], "resources": ["managedsecretgrants"],
                "verbs": ["create", "update"]}  # fmt: skip


def values(verb: str, *names: str) -> dict[str, Any]:
    """A Role rule: ``verb`` on managedsecrets/values of ``names`` (all if none)."""
    rule: dict[str, Any] = {"apiGroups": ["strongroom.io"], "resources": ["managedsecrets/values"],
                            "verbs": [verb]}  # fmt: skip
    if names:
        rule["resourceNames"] = list(names)
    return rule


def composing(*names: str, namespace: str | None = None) -> dict[str, Any]:
    return {"data": [{"key": f"k{i}", "fromManagedSecret": {
        "name": n, "key": "password", **({"namespace": namespace} if namespace else {})}}
        for i, n in enumerate(names)]}  # fmt: skip


def grant_body(names: list[str]) -> dict[str, Any]:
    return {"apiVersion": "strongroom.io/v1alpha1", "kind": "ManagedSecretGrant",
            "metadata": {"generateName": "share-"},
            "spec": {"from": [{"namespace": "team-a"}], "to": [{"name": n} for n in names]}}  # fmt: skip


def refused_eventually(call: Any, policy: str) -> tuple[int, str, str]:
    """The outcome of ``call`` once ``policy`` has reached the admission plugin (policies are
    picked up by informers a moment after they are stored); ``call`` must be a dry run."""
    last: list[tuple[int, str, str]] = []

    def refused() -> bool:
        last[:] = [outcome(call)]
        return policy in last[0][2]

    wait_until(refused, timeout=60, what=f"{policy} in effect")
    return last[0]


def test_composing_needs_get_on_the_sources_values(kube: KubeCluster, ns: str) -> None:  # noqa: F811
    token = author(kube, ns, values("get", "other"))
    path = f"{MSECS.format(ns=ns)}?dryRun=All"
    body = {"apiVersion": "strongroom.io/v1alpha1", "kind": "ManagedSecret",
            "metadata": {"name": "app"}, "spec": composing("db")}  # fmt: skip
    code, reason, message = refused_eventually(
        lambda: kube.request("POST", path, body, token=token), COMPOSITION)
    assert (code, reason) == (403, "Forbidden")
    assert f"fromManagedSecret needs get on managedsecrets/values of db in namespace {ns}" in message
    # The right by name, or namespace-wide, lets the same author through.
    assert create(kube, ns, composing("db"), token=author(kube, ns, values("get", "db"))) == (
        200, "", "")  # fmt: skip
    assert create(kube, ns, composing(*(f"s{i}" for i in range(12))), name="many",
                  token=author(kube, ns, values("get"))) == (200, "", "")  # fmt: skip


def test_composing_from_another_namespace_is_left_to_the_grant(kube: KubeCluster,
                                                                ns: str) -> None:  # noqa: F811
    """A policy cannot read another namespace's grant: the reference passes admission and the
    operator checks the grant at every sync (test_composition.py)."""
    token = author(kube, ns)
    assert create(kube, ns, composing("db-root", namespace="platform"), token=token) == (
        200, "", "")  # fmt: skip


def test_a_grant_can_share_only_values_its_author_may_read(kube: KubeCluster,
                                                          ns: str) -> None:  # noqa: F811
    token = author(kube, ns, GRANT_RIGHTS, values("get", "public"))
    path = f"{GRANTS.format(ns=ns)}?dryRun=All"
    code, reason, message = refused_eventually(
        lambda: kube.request("POST", path, grant_body(["public", "db-root"]), token=token),
        GRANTS_POLICY)  # fmt: skip
    assert (code, reason) == (403, "Forbidden")
    assert f"sharing db-root needs get on its managedsecrets/values in namespace {ns}" in message
    created = kube.request("POST", GRANTS.format(ns=ns), grant_body(["public"]), token=token)
    assert created["spec"]["to"] == [{"name": "public"}]
    # Widening it afterwards is an UPDATE: checked the same way.
    grown = {**created, "spec": {**created["spec"], "to": [{"name": "public"}, {"name": "db-root"}]}}
    try:
        kube.request("PUT", f"{GRANTS.format(ns=ns)}/{created['metadata']['name']}", grown,
                     token=token)  # fmt: skip
    except urllib.error.HTTPError as exc:
        assert exc.code == 403 and GRANTS_POLICY in exc.read().decode()
    else:
        raise AssertionError("a grant widened to values its author may not read was admitted")
