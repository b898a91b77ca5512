"""Attacks on data[].fromManagedSecret and ManagedSecretGrant (issue 17), through the real
apiserver and operator: what a tenant of one namespace can get out of another, what a revoked
grant leaves behind, and what a spec with many references costs the operator.

Each test failed before its guard (the review committed them as strict xfails).
"""

from __future__ import annotations

import json
import urllib.error
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from strongroom import Strongroom
from strongroom.namespaceids import NamespaceIdentities
from strongroom.sources.composed import Composer
from strongroom.spec import Spec
from tests.components.kube import KubeCluster
from tests.components.operator import OperatorProcess, eventually
from tests.conftest import make_settings
from tests.integration.test_composition import CANARY, GRANTS, composed, grant
from tests.integration.test_composition import shared as shared  # noqa: PLC0414 - the fixture
from tests.integration.test_operator import decoded, ready
from tests.integration.test_templates import condition

MSECS = "/apis/strongroom.io/v1alpha1/namespaces/{ns}/managedsecrets"


def managed_secret(kube: KubeCluster, namespace: str, name: str, spec: dict[str, Any]) -> None:
    kube.request("POST", MSECS.format(ns=namespace),
                 {"apiVersion": "strongroom.io/v1alpha1", "kind": "ManagedSecret",
                  "metadata": {"name": name}, "spec": spec})  # fmt: skip


def ready_in(kube: KubeCluster, namespace: str, name: str) -> bool:
    status = kube.request("GET", f"{MSECS.format(ns=namespace)}/{name}").get("status") or {}
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in status.get("conditions") or [])  # fmt: skip


# -- cost: a sync lists a namespace's grants once ----------------------------------------------


class CountedCustomObjects(k8s.CustomObjectsApi):  # type: ignore[misc]
    """The real client, counting the grant listings it makes (what the attack costs)."""

    def __init__(self, api: k8s.ApiClient) -> None:
        super().__init__(api)
        self.lists = 0

    def list_namespaced_custom_object(self, *args: Any, **kwargs: Any) -> Any:
        self.lists += 1
        return super().list_namespaced_custom_object(*args, **kwargs)


def test_many_references_to_another_namespace_list_its_grants_once_a_sync(
    kube: KubeCluster, tmp_path: Path
) -> None:
    """A tenant's spec of 256 keys, each eight hops through another namespace, made a sync ask
    the apiserver for that namespace's grants once per key and hop (2048 listings, again at
    every grant event of that namespace); one listing per namespace is enough."""
    reader, platform = f"reader-{uuid.uuid4().hex[:6]}", f"platform-{uuid.uuid4().hex[:6]}"
    kube.ensure_namespace(reader)
    kube.ensure_namespace(platform)
    managed_secret(kube, platform, "db-root", {"data": [{"key": "password"}]})
    grant(kube, platform, "readers", [reader], ["db-root"])
    api = kube.api_client()
    custom = CountedCustomObjects(api)
    spec = Spec.parse("app", {"data": [
        {"key": f"k{i}", "fromManagedSecret": composed("db-root", "password", platform)}
        for i in range(40)
    ]})  # fmt: skip
    with Strongroom.open(make_settings(f"sqlite:///{tmp_path / 'store.db'}")) as room:
        room.set(platform, "db-root", {"password": CANARY}, actor="test")
        composer = Composer(room, custom, NamespaceIdentities(k8s.CoreV1Api(api)), actor="test")
        found = composer.values(reader, "app", spec.data)
    assert found == {f"k{i}": CANARY for i in range(40)}
    assert custom.lists == 1, f"{custom.lists} grant listings for one sync of one namespace"


# -- revocation --------------------------------------------------------------------------------


ITEM_FROM_PLATFORM = "DB_PASSWORD"

# Ways a tenant (or plain bad luck) makes every later sync of the reader stop before its
# composed keys are resolved: (extra spec at creation, merge patch after the first sync, the
# reason the reader then shows, or None when it stays Ready).
BREAKS: dict[str, tuple[dict[str, Any], dict[str, Any] | None, str | None]] = {
    "a-fromSecret-import-that-fails": (
        {}, {"data": [{"key": "extra", "fromSecret": {"name": "absent", "key": "x"}}]},
        "SourceNotFound"),
    "a-spec-the-crd-admits-and-the-operator-refuses": (
        {}, {"target": {"template": {"preset": "basic-auth", "presetKeys": {"bogus": "x"}}}},
        "InvalidSpec"),
    "refreshPolicy-CreatedOnce": (
        {"refreshPolicy": "CreatedOnce", "data": [{"key": "own", "generate": {"length": 16}}]},
        None, None),
}  # fmt: skip


@pytest.mark.parametrize("how", list(BREAKS))
def test_attack_a_revoked_grant_withdraws_the_value_whatever_else_the_spec_holds(
    kube: KubeCluster, shared: tuple[OperatorProcess, str], how: str
) -> None:
    op, platform = shared
    extra, edit, reason = BREAKS[how]
    grant(kube, platform, "right", [op.namespace], ["db-root"])
    item = {"key": ITEM_FROM_PLATFORM,
            "fromManagedSecret": composed("db-root", "password", platform)}  # fmt: skip
    op.apply("app", {**extra, "data": [item, *extra.get("data", [])]})
    ready(op, "app")
    assert decoded(op.secret("app"))[ITEM_FROM_PLATFORM] == CANARY
    if edit is not None:
        data = [item, *edit.get("data", [])]
        op.kube.request("PATCH", op.msec_path("app"), {"spec": {**edit, "data": data}},
                        content_type="application/merge-patch+json")  # fmt: skip
    if reason is not None:
        condition(op, "app", reason)
    kube.request("DELETE", f"{GRANTS.format(ns=platform)}/right")

    def withdrawn() -> bool:
        secret = op.secret("app")
        return secret is None or CANARY not in json.dumps(decoded(secret))

    eventually(withdrawn, timeout=30, what="the revoked value withdrawn from the Secret")


def test_attack_a_namespaced_operator_withdraws_a_value_whose_grant_is_revoked(
    kube: KubeCluster, op: OperatorProcess
) -> None:
    """An operator run with --namespace watches grants of its own namespaces only, so it could
    not notice a revocation elsewhere: it refuses references outside the namespaces it
    watches, whatever grant they have."""
    platform = f"platform-{uuid.uuid4().hex[:6]}"
    kube.ensure_namespace(platform)
    op.cli("secret", "set", f"{platform}/db-root", f"password={CANARY}")
    managed_secret(kube, platform, "db-root", {"data": [{"key": "password"}]})
    grant(kube, platform, "right", [op.namespace], ["db-root"])
    op.apply("app", {"data": [{"key": "pw", "fromManagedSecret": composed("db-root", "password",
                                                                          platform)}]})  # fmt: skip
    cond = condition(op, "app", "GrantMissing")
    assert f"namespace {platform} is not watched by this operator" in cond["message"]
    assert op.secret("app") is None


# -- who a grant shares with: transitive, audited ------------------------------------------


def test_a_value_shared_onward_does_not_reach_a_namespace_the_source_never_granted(
    kube: KubeCluster, shared: tuple[OperatorProcess, str]
) -> None:
    """Platform grants only middle; middle composes platform's value into its relay and grants
    the relay to the tenant. A grant shares a ManagedSecret's stored keys, not what it reads
    from elsewhere: the tenant's reference to the relay's composed key is refused, and
    platform's value never reaches a namespace platform did not name."""
    op, platform = shared
    middle = f"middle-{uuid.uuid4().hex[:6]}"
    kube.ensure_namespace(middle)
    grant(kube, platform, "to-middle", [middle], ["db-root"])
    managed_secret(kube, middle, "relay", {"data": [
        {"key": "pw", "fromManagedSecret": composed("db-root", "password", platform)}]})  # fmt: skip
    eventually(lambda: ready_in(kube, middle, "relay"), timeout=45, what="relay synced in middle")
    grant(kube, middle, "to-tenant", [op.namespace], ["relay"])
    op.apply("app", {"data": [{"key": "pw", "fromManagedSecret": composed("relay", "pw", middle)}]})
    cond = condition(op, "app", "SourceInvalid")
    assert f"{middle}/relay.pw is itself composed there" in cond["message"]
    assert op.secret("app") is None


# -- inside a namespace: the author's right, asked by the admission policy ---------------------


def test_attack_a_tenant_reads_a_private_value_through_a_readable_managedsecret_composing_it(
    kube: KubeCluster, op: OperatorProcess
) -> None:
    ns = op.namespace
    op.cli("secret", "set", f"{ns}/private", f"pw={CANARY}")
    op.apply("private", {"data": [{"key": "pw"}]})
    # The administrator composes private's value into `shared`, whose values the tenant may read.
    op.cli("secret", "set", f"{ns}/shared", "host=db.internal")
    op.apply("shared", {"data": [{"key": "host"},
                                 {"key": "pw", "fromManagedSecret": composed("private", "pw")}]})  # fmt: skip
    kube.grant(ns, "tenant", [
        {"apiGroups": ["strongroom.io"], "resources": ["managedsecrets"],
         "verbs": ["get", "list", "create", "update", "patch"]},
        {"apiGroups": ["strongroom.io"], "resources": ["managedsecrets/values"],
         "resourceNames": ["shared"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["mine"],
         "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
    ])  # fmt: skip
    token = kube.service_account_token(ns, "tenant", create=False)
    # Asking for private directly is refused by the policy.
    direct = {"apiVersion": "strongroom.io/v1alpha1", "kind": "ManagedSecret",
              "metadata": {"name": "mine"},
              "spec": {"data": [{"key": "x", "fromManagedSecret": composed("private", "pw")}]}}  # fmt: skip
    with pytest.raises(urllib.error.HTTPError) as refused:
        kube.request("POST", f"{MSECS.format(ns=ns)}?dryRun=All", direct, token=token)
    assert refused.value.code in {403, 422}
    # Through shared.pw it is admitted, and the operator follows the chain to private.
    body = {**direct, "spec": {"data": [{"key": "x",
                                         "fromManagedSecret": composed("shared", "pw")}]}}  # fmt: skip
    try:
        kube.request("POST", MSECS.format(ns=ns), body, token=token)
    except urllib.error.HTTPError as exc:
        assert exc.code in {403, 422}, exc
        return  # refused at admission: the guard holds
    eventually(lambda: op.msec("mine").get("status", {}).get("conditions"), timeout=45,
               what="mine reconciled")  # fmt: skip
    secret = op.secret("mine")
    assert secret is None or CANARY not in json.dumps(decoded(secret)), (
        "the tenant's Secret holds private's value")


def test_attack_the_admission_policies_hold_on_every_path_a_tenant_can_take(
    kube: KubeCluster, op: OperatorProcess
) -> None:
    """The namespace written out as this one, twice the same name, a name in capitals, an
    UPDATE (merge patch and replace) of an admitted object, and a grant widened by an edit:
    each refused for a tenant who may read the values of ``shared`` only."""
    ns = op.namespace
    for name in ("private", "shared"):
        op.apply(name, {"data": [{"key": "pw", "generate": {}}]})
    kube.grant(ns, "tenant", [
        {"apiGroups": ["strongroom.io"], "resources": ["managedsecrets", "managedsecretgrants"],
         "verbs": ["get", "list", "create", "update", "patch"]},
        {"apiGroups": ["strongroom.io"], "resources": ["managedsecrets/values"],
         "resourceNames": ["shared"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
    ])  # fmt: skip
    token = kube.service_account_token(ns, "tenant", create=False)

    def msec(*refs: dict[str, Any]) -> dict[str, Any]:
        return {"apiVersion": "strongroom.io/v1alpha1", "kind": "ManagedSecret",
                "metadata": {"name": "mine"},
                "spec": {"data": [{"key": f"k{i}", "fromManagedSecret": ref}
                                  for i, ref in enumerate(refs)]}}  # fmt: skip

    def refused(method: str, path: str, body: dict[str, Any], **kw: str) -> bool:
        try:
            kube.request(method, path, body, token=token, **kw)
        except urllib.error.HTTPError as exc:
            return exc.code in {403, 422}
        return False

    dry = f"{MSECS.format(ns=ns)}?dryRun=All"
    assert not refused("POST", dry, msec(composed("shared", "pw"))), "the allowed case refused"
    assert refused("POST", dry, msec(composed("private", "pw", ns))), "namespace written out"
    assert refused("POST", dry, msec(composed("shared", "pw"), composed("private", "pw"))), "two"
    assert refused("POST", dry, msec(composed("shared", "pw"), composed("private", "pw", ns)))
    assert refused("POST", dry, msec(composed("private", "pw", ns.upper()))), "capitals"
    kube.request("POST", MSECS.format(ns=ns), msec(composed("shared", "pw")), token=token)
    path = f"{MSECS.format(ns=ns)}/mine"
    assert refused("PATCH", path, {"spec": msec(composed("private", "pw"))["spec"]},
                   content_type="application/merge-patch+json"), "merge patch"  # fmt: skip
    current = kube.request("GET", path)
    assert refused("PUT", path, {**current, "spec": msec(composed("private", "pw", ns))["spec"]})
    # Grants: sharing shared is allowed; widening that grant to private by an edit is not.
    grants = GRANTS.format(ns=ns)
    body = {"apiVersion": "strongroom.io/v1alpha1", "kind": "ManagedSecretGrant",
            "metadata": {"name": "g"},
            "spec": {"from": [{"namespace": "elsewhere"}], "to": [{"name": "shared"}]}}  # fmt: skip
    kube.request("POST", grants, body, token=token)
    assert refused("PATCH", f"{grants}/g", {"spec": {"to": [{"name": "shared"}, {"name": "private"}]}},
                   content_type="application/merge-patch+json"), "grant widened"  # fmt: skip
    assert refused("POST", f"{grants}?dryRun=All",
                   {**body, "metadata": {"name": "h"}, "spec": {**body["spec"],
                                                                "to": [{"name": "private"}]}})  # fmt: skip
