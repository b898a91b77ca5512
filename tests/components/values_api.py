"""The values API as a real process (`strongroom serve`), and a raw HTTPS client for it.

The client sends the path exactly as given (http.client does not normalise it), so tests can
try the spellings an attacker would: ``..``, ``%2F``, upper case.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import http.client
import json
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.components.base import free_port, stop, wait_until
from tests.components.kube import KubeCluster
from tests.components.operator import STRONGROOM

AUDIENCE = "strongroom"


@dataclasses.dataclass
class Reply:
    status: int
    body: Any
    text: str
    headers: dict[str, str]


def token_for(kube: KubeCluster, namespace: str, name: str, *, audience: str = AUDIENCE,
              seconds: int = 3600) -> str:  # fmt: skip
    """A TokenRequest token of ServiceAccount ``namespace/name`` for ``audience``."""
    review = kube.request(
        "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
         "spec": {"audiences": [audience], "expirationSeconds": seconds}},
    )  # fmt: skip
    return str(review["status"]["token"])


def tls_ca(kube: KubeCluster, namespace: str, name: str, into: Path) -> Path:
    """The API's certificate (from its TLS Secret's ca.crt) as a CA file for clients."""
    secret = kube.request("GET", f"/api/v1/namespaces/{namespace}/secrets/{name}")
    into.write_bytes(base64.b64decode(secret["data"]["ca.crt"]))
    return into


@dataclasses.dataclass
class ApiClient:
    port: int
    ca_file: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        raw: bytes | None = None,
        content_type: str = "application/json",
    ) -> Reply:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=context, timeout=30)
        headers = {"Content-Type": content_type}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        try:
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            text = response.read().decode("utf-8", "replace")
            reply_headers = dict(response.getheaders())
        finally:
            conn.close()
        try:
            parsed = json.loads(text) if text else None
        except json.JSONDecodeError:
            parsed = None
        return Reply(response.status, parsed, text, reply_headers)


@dataclasses.dataclass
class ServerProcess:
    """``strongroom serve`` on loopback, its certificate self-signed into a Secret."""

    kube: KubeCluster
    env: dict[str, str]
    root: Path
    tls_namespace: str = "strongroom-api"
    extra: tuple[str, ...] = ()
    # The server's own credentials (default: the admin's) and certificate files (default: a
    # self-signed one it generates into a Secret, which needs Secret rights).
    kubeconfig: Path | None = None
    tls_files: tuple[Path, Path] | None = None
    port: int = dataclasses.field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    def start(self) -> ApiClient:
        self.kube.ensure_namespace(self.tls_namespace)
        secret = f"api-tls-{self.port}"
        if self.tls_files is None:
            tls = ["--tls-secret", f"{self.tls_namespace}/{secret}", "--tls-san", "127.0.0.1"]
        else:
            tls = ["--tls-cert-file", str(self.tls_files[0]), "--tls-key-file",
                   str(self.tls_files[1])]  # fmt: skip
        env = {**self.env, "KUBECONFIG": str(self.kubeconfig or self.kube.kubeconfig)}
        self.proc = subprocess.Popen(
            [STRONGROOM, "serve", "--address", "127.0.0.1", "--port", str(self.port), *tls,
             *self.extra],
            env=env, stdout=self.log_path.open("ab"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        ca: list[ApiClient] = []

        def ready() -> bool:
            if not ca:
                ca_file = (self.tls_files[0] if self.tls_files is not None else
                           tls_ca(self.kube, self.tls_namespace, secret, self.root / "api-ca.crt"))  # fmt: skip
                ca.append(ApiClient(self.port, ca_file))
            return ca[0].call("GET", "/healthz").status == 200

        wait_until(ready, timeout=60, what="strongroom serve", proc=self.proc, log=self.log_path)
        return ca[0]

    @contextlib.contextmanager
    def running(self) -> Iterator[ApiClient]:
        """Started for the block (a module fixture's whole life), then stopped."""
        client = self.start()
        try:
            yield client
        finally:
            self.stop()

    def stop(self) -> None:
        """SIGTERM, as a pod is stopped: the server finishes its requests and exits."""
        if self.proc is not None:
            stop(self.proc, timeout=30)
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
