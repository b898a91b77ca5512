"""The Helm chart rendered by the real helm binary, and the parts of it that act on the
apiserver (the operator's ServiceAccount, its RBAC, the fence) applied to the test cluster.

Cluster-scoped objects (ClusterRoles and their bindings, the fence's ValidatingAdmissionPolicy
and binding) get a per-test suffix, so that tests sharing one apiserver do not overwrite each
other's; namespaced ones live in the test's own release namespace.
"""

from __future__ import annotations

import dataclasses
import subprocess
import urllib.error
import uuid
from pathlib import Path
from typing import Any

import yaml

from tests.components.kube import KubeCluster
from tests.components.operator import eventually

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "strongroom"

RBAC_KINDS = {"ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}
FENCE_KINDS = {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}


def run_helm(helm_bin: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [helm_bin, *args], capture_output=True, text=True, check=check, timeout=120
    )


def render(helm_bin: str, *args: str, namespace: str = "strongroom") -> list[dict[str, Any]]:
    out = run_helm(helm_bin, "template", "sr", str(CHART), "--namespace", namespace, *args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def of_kind(docs: list[dict[str, Any]], *kinds: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] in kinds]


def fence_of(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The fence's ValidatingAdmissionPolicy and binding (the chart may render other policies)."""
    return [doc for doc in of_kind(docs, *FENCE_KINDS)
            if doc["metadata"]["name"].endswith("-fence")]  # fmt: skip


def deployment_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    """The operator container's plain env values (those not taken from a Secret or a field)."""
    deployment = of_kind(docs, "Deployment")[0]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


@dataclasses.dataclass(frozen=True)
class Identity:
    """The chart's ServiceAccount, installed with its RBAC, and a token for it."""

    namespace: str
    service_account: str
    token: str
    suffix: str

    @property
    def username(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"


def suffixed(docs: list[dict[str, Any]], suffix: str) -> list[dict[str, Any]]:
    """Copies of ``docs`` whose cluster-scoped names (and references to them) end in suffix."""
    out = []
    for doc in yaml.safe_load(yaml.safe_dump(docs)):  # a deep copy
        kind = doc["kind"]
        if kind.startswith("Cluster") or kind in FENCE_KINDS:
            doc["metadata"]["name"] += suffix
        if kind == "ClusterRoleBinding" or (
            kind == "RoleBinding" and doc["roleRef"]["kind"] == "ClusterRole"
        ):
            doc["roleRef"]["name"] += suffix
        if kind == "ValidatingAdmissionPolicyBinding":
            doc["spec"]["policyName"] += suffix
        out.append(doc)
    return out


def install_identity(kube: KubeCluster, docs: list[dict[str, Any]]) -> Identity:
    """Apply the rendered ServiceAccount and RBAC (release namespace and watched namespaces
    must exist); a token for the ServiceAccount."""
    namespace = of_kind(docs, "Deployment")[0]["metadata"]["namespace"]
    suffix = f"-{uuid.uuid4().hex[:6]}"
    kube.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(suffixed(of_kind(docs, *RBAC_KINDS),
                                                                       suffix)))  # fmt: skip
    sa = of_kind(docs, "ServiceAccount")[0]["metadata"]["name"]
    token = kube.service_account_token(namespace, sa, create=False)
    return Identity(namespace, sa, token, suffix)


def install_fence(kube: KubeCluster, docs: list[dict[str, Any]], identity: Identity,
                  probe_namespace: str) -> str:  # fmt: skip
    """Apply the fence (named with the identity's suffix) and wait until it refuses; its name.

    A new ValidatingAdmissionPolicy takes a moment to be enforced: until a refusal is seen, an
    allowed write proves nothing. The probe is a server-side dry run (nothing is stored, and the
    audit log marks it ``dryRun=All``): the identity creating an unlabelled Secret in
    ``probe_namespace``, which its RBAC allows and the fence refuses.
    """
    fence = suffixed(fence_of(docs), identity.suffix)
    assert len(fence) == 2, "the chart renders a ValidatingAdmissionPolicy and its binding"
    kube.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(fence))
    probe = {"metadata": {"name": f"fence-probe-{identity.suffix[1:]}"}}

    def refused() -> bool:
        try:
            kube.request("POST", f"/api/v1/namespaces/{probe_namespace}/secrets?dryRun=All",
                         probe, token=identity.token)  # fmt: skip
        except urllib.error.HTTPError as exc:
            return exc.code == 403 and "Strongroom fence" in exc.read().decode()
        return False

    eventually(refused, timeout=60, what="the fence to be enforced")
    return str(fence[0]["metadata"]["name"])
