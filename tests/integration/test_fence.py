"""The chart's fence: what the operator's own ServiceAccount may not do to Secrets, whatever
its RBAC says, on the real apiserver.

The chart's cluster-wide RBAC lets the operator write every Secret of the cluster; a compromised
operator (or one fooled by a ManagedSecret) could then mint ServiceAccount tokens, or overwrite
any Secret. Here the chart's RBAC and fence are applied as rendered, and the ServiceAccount's
own raw requests are refused or allowed. A refusal must be the fence's (its message), not
RBAC's: every refused request below is one the RBAC alone would allow.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import urllib.error
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tests.components.chart import Identity, install_fence, install_identity, render
from tests.components.kube import KubeCluster
from tests.components.operator import eventually

MANAGED = {"strongroom.io/managed-by": "strongroom"}
OWNER, OWNER_UID = "fence-owner", "<uid of fence-owner>"
SA_TOKEN = "kubernetes.io/service-account-token"
SA_NAME = {"kubernetes.io/service-account.name": "default"}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@dataclasses.dataclass(frozen=True)
class Fenced:
    kube: KubeCluster
    identity: Identity
    tenant: str  # a namespace the operator works in
    barred: str  # listed in fence.excludedNamespaces
    owner_uid: str  # of the ManagedSecret OWNER in the tenant namespace

    def namespace(self, which: str) -> str:
        return {"tenant": self.tenant, "barred": self.barred, "release": self.identity.namespace,
                "kube-system": "kube-system"}[which]  # fmt: skip


@pytest.fixture(scope="module")
def fenced(helm: str, kube: KubeCluster) -> Fenced:
    home, tenant, barred = (f"{p}-{uuid.uuid4().hex[:6]}" for p in ("sr", "tenant", "barred"))
    for ns in (home, tenant, barred):
        kube.ensure_namespace(ns)
    docs = render(helm, "--set",
                  f"fence.excludedNamespaces={{kube-public,kube-node-lease,{barred}}}",
                  namespace=home)  # fmt: skip
    identity = install_identity(kube, docs)
    install_fence(kube, docs, identity, probe_namespace=tenant)
    owner = kube.request("POST", f"/apis/strongroom.io/v1alpha1/namespaces/{tenant}/managedsecrets",
                         {"apiVersion": "strongroom.io/v1alpha1", "kind": "ManagedSecret",
                          "metadata": {"name": OWNER}, "spec": {"data": [{"key": "k"}]}})  # fmt: skip
    return Fenced(kube, identity, tenant, barred, owner["metadata"]["uid"])


def secret(name: str, *, labels: dict[str, str] | None = None,
           annotations: dict[str, str] | None = None, type_: str = "Opaque") -> dict[str, Any]:  # fmt: skip
    meta: dict[str, Any] = {"name": name}
    if labels:
        meta["labels"] = labels
    if annotations:
        meta["annotations"] = annotations
    return {"metadata": meta, "type": type_, "data": {"k": b64("v")}}


def owned(name: str, *, controller: bool) -> dict[str, Any]:
    """A Secret without Strongroom's labels whose ownerReference names a ManagedSecret (a real
    one, :data:`OWNER` in the tenant namespace, or the garbage collector would delete it)."""
    body = secret(name)
    body["metadata"]["ownerReferences"] = [{
        "apiVersion": "strongroom.io/v1alpha1", "kind": "ManagedSecret", "name": OWNER,
        "uid": OWNER_UID, "controller": controller}]  # fmt: skip
    return body


def add_key(body: dict[str, Any]) -> dict[str, Any]:
    """What the operator's writes look like: a key more, its labels on."""
    body["data"]["new"] = b64("from-strongroom")
    body["metadata"]["labels"] = {**(body["metadata"].get("labels") or {}), **MANAGED}
    return body


def release(body: dict[str, Any]) -> dict[str, Any]:
    """deletionPolicy Retain: the operator's labels come off."""
    body["metadata"]["labels"] = {}
    return body


@dataclasses.dataclass(frozen=True)
class Case:
    operation: str  # CREATE, UPDATE or DELETE, by the operator's identity
    namespace: str  # tenant, barred, release or kube-system
    body: dict[str, Any]  # what is created (CREATE) or what exists before (UPDATE, DELETE)
    change: Callable[[dict[str, Any]], dict[str, Any]] = add_key  # UPDATE: the new object
    refused: str | None = None  # a fragment of the fence's message; None: allowed


CASES = [
    # Tokens: never, labelled or not, whatever the operation.
    pytest.param(Case("CREATE", "tenant", secret("t", labels=MANAGED, annotations=SA_NAME,
                                                 type_=SA_TOKEN), refused=SA_TOKEN),
                 id="create-a-service-account-token"),
    pytest.param(Case("CREATE", "tenant", secret("t", labels=MANAGED,
                                                 type_="bootstrap.kubernetes.io/token"),
                      refused="bootstrap.kubernetes.io/token"),
                 id="create-a-bootstrap-token"),
    pytest.param(Case("UPDATE", "tenant", secret("t", labels=MANAGED, annotations=SA_NAME,
                                                 type_=SA_TOKEN), refused=SA_TOKEN),
                 id="update-a-labelled-service-account-token"),
    pytest.param(Case("DELETE", "tenant", secret("t", annotations=SA_NAME, type_=SA_TOKEN),
                      refused=SA_TOKEN),
                 id="delete-a-service-account-token"),
    # Only Secrets labelled as Strongroom's, or consenting to a Merge.
    pytest.param(Case("CREATE", "tenant", secret("s"), refused="must be labelled"),
                 id="create-an-unlabelled-secret"),
    pytest.param(Case("CREATE", "tenant",
                      secret("s", labels={"strongroom.io/managed-by": "someone-else"}),
                      refused="must be labelled"),
                 id="create-a-secret-labelled-for-someone-else"),
    pytest.param(Case("UPDATE", "tenant", secret("s"), refused="neither labelled"),
                 id="update-an-unlabelled-unannotated-secret"),
    pytest.param(Case("UPDATE", "tenant", secret("s", annotations={"strongroom.io/merge-from": ""}),
                      refused="neither labelled"),
                 id="update-a-secret-whose-consent-is-empty"),
    # Judged on the old object: labelling a Secret in the same update claims nothing.
    pytest.param(Case("UPDATE", "tenant", secret("s"),
                      change=lambda b: {**b, "metadata": {**b["metadata"], "labels": MANAGED}},
                      refused="neither labelled"),
                 id="update-that-adds-the-label-itself"),
    # An ownerReference that is not a ManagedSecret's controller reference claims nothing.
    pytest.param(Case("UPDATE", "tenant", owned("s", controller=False), refused="neither labelled"),
                 id="update-a-secret-a-managedsecret-only-co-owns"),
    # Namespaces fenced off: kube-system always, excludedNamespaces, the release namespace.
    pytest.param(Case("CREATE", "kube-system", secret("s", labels=MANAGED), refused="fenced off"),
                 id="create-in-kube-system"),
    pytest.param(Case("UPDATE", "kube-system", secret("s", labels=MANAGED), refused="fenced off"),
                 id="update-in-kube-system"),
    pytest.param(Case("DELETE", "kube-system", secret("s", labels=MANAGED), refused="fenced off"),
                 id="delete-in-kube-system"),
    pytest.param(Case("CREATE", "barred", secret("s", labels=MANAGED), refused="fenced off"),
                 id="create-in-an-excluded-namespace"),
    pytest.param(Case("DELETE", "release", secret("master-key"), refused="fenced off"),
                 id="delete-in-the-release-namespace"),
    # What the operator does, allowed.
    pytest.param(Case("CREATE", "tenant", secret("s", labels=MANAGED)),
                 id="create-a-labelled-secret"),
    pytest.param(Case("UPDATE", "tenant", secret("s", labels=MANAGED)),
                 id="update-a-managed-secret"),
    pytest.param(Case("UPDATE", "tenant", secret("s", annotations={"strongroom.io/merge-from": "m"})),
                 id="merge-into-a-consenting-secret"),
    pytest.param(Case("UPDATE", "tenant", secret("s", labels=MANAGED), change=release),
                 id="release-a-managed-secret"),
    # Its label removed, a Secret still naming its ManagedSecret is repaired (label put back).
    pytest.param(Case("UPDATE", "tenant", owned("s", controller=True)),
                 id="repair-an-owned-secret-whose-label-was-removed"),
    pytest.param(Case("UPDATE", "tenant", secret("s", annotations={"strongroom.io/owner-uid": "u"})),
                 id="repair-an-orphan-secret-whose-label-was-removed"),
    pytest.param(Case("DELETE", "tenant", secret("s", labels=MANAGED)),
                 id="delete-a-managed-secret"),
    pytest.param(Case("DELETE", "tenant", secret("s")),
                 id="delete-a-fromSecret-source"),
]  # fmt: skip


def send(kube: KubeCluster, token: str, case: Case, namespace: str, name: str,
         owner_uid: str = "") -> Any:  # fmt: skip
    base = f"/api/v1/namespaces/{namespace}/secrets"
    body = json.loads(json.dumps(case.body).replace(OWNER_UID, owner_uid))
    body["metadata"]["name"] = name
    if case.operation == "CREATE":
        return kube.request("POST", base, body, token=token)
    kube.request("POST", base, body)  # the Secret exists before, created by someone else
    if case.operation == "DELETE":
        return kube.request("DELETE", f"{base}/{name}", token=token)
    current = kube.request("GET", f"{base}/{name}")
    return kube.request("PUT", f"{base}/{name}", case.change(current), token=token)


@pytest.mark.parametrize("case", CASES)
def test_the_fence_refuses_the_operator_what_strongroom_never_does(
    fenced: Fenced, case: Case
) -> None:
    namespace = fenced.namespace(case.namespace)
    name = f"{case.body['metadata']['name']}-{uuid.uuid4().hex[:6]}"
    if case.refused is None:
        send(fenced.kube, fenced.identity.token, case, namespace, name, fenced.owner_uid)
        return
    with pytest.raises(urllib.error.HTTPError) as refused:
        send(fenced.kube, fenced.identity.token, case, namespace, name, fenced.owner_uid)
    message = json.loads(refused.value.read())["message"]
    assert refused.value.code == 403, message
    assert "Strongroom fence" in message and case.refused in message, message
    assert f"refused {case.operation} of Secret {namespace}/{name}" in message, message


def test_the_fence_is_only_around_the_operators_identity(fenced: Fenced) -> None:
    """Another ServiceAccount bound to the very same ClusterRole writes what the operator may
    not: the fence narrows one identity, not the cluster's Secrets."""
    kube, home = fenced.kube, fenced.identity.namespace
    other = f"other-{uuid.uuid4().hex[:6]}"
    role = f"sr-strongroom{fenced.identity.suffix}"
    kube.request("POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", {
        "metadata": {"name": f"{other}-{home}"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": other, "namespace": home}],
    })  # fmt: skip
    token = kube.service_account_token(home, other)
    path = f"/api/v1/namespaces/{fenced.tenant}/secrets"
    # The new binding reaches the apiserver's authorizer within moments.
    eventually(lambda: kube.request("POST", path, secret(f"plain-{uuid.uuid4().hex[:6]}"),
                                    token=token), what="an unlabelled Secret written")  # fmt: skip


def test_in_namespaced_mode_the_fence_keeps_the_operator_to_its_namespaces(
    helm: str, kube: KubeCluster
) -> None:
    """RBAC that someone else grants the operator outside its watchNamespaces does not let it
    write Secrets there."""
    home, tenant, other = (f"{p}-{uuid.uuid4().hex[:6]}" for p in ("sr", "tenant", "other"))
    for ns in (home, tenant, other):
        kube.ensure_namespace(ns)
    docs = render(helm, "--set", f"watchNamespaces={{{tenant}}}", namespace=home)
    identity = install_identity(kube, docs)
    install_fence(kube, docs, identity, probe_namespace=tenant)
    rbac = "/apis/rbac.authorization.k8s.io/v1"
    kube.request("POST", f"{rbac}/namespaces/{other}/roles", {
        "metadata": {"name": "extra"},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]}],
    })  # fmt: skip
    kube.request("POST", f"{rbac}/namespaces/{other}/rolebindings", {
        "metadata": {"name": "extra"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "extra"},
        "subjects": [{"kind": "ServiceAccount", "name": identity.service_account,
                      "namespace": home}],
    })  # fmt: skip
    body = secret("s", labels=MANAGED)
    kube.request("POST", f"/api/v1/namespaces/{tenant}/secrets", body, token=identity.token)

    def refusal() -> str:
        try:
            kube.request("POST", f"/api/v1/namespaces/{other}/secrets?dryRun=All", body,
                         token=identity.token)  # fmt: skip
        except urllib.error.HTTPError as exc:
            return f"{exc.code} {json.loads(exc.read())['message']}"
        return "allowed"

    # Until the extra Role reaches the authorizer, RBAC refuses (without the fence's words).
    message = eventually(lambda: "Strongroom fence" in (m := refusal()) and m,
                         what="the fence's refusal")  # fmt: skip
    assert message.startswith("403") and "not one of its watchNamespaces" in message, message
