"""`strongroom run` as a real process against the test apiserver, its log kept for scanning."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.components.kube import KubeCluster

STRONGROOM = shutil.which("strongroom", path=str(Path(sys.executable).parent)) or "strongroom"


@dataclasses.dataclass
class OperatorProcess:
    kube: KubeCluster
    namespace: str
    env: dict[str, str]
    log_path: Path
    kubeconfig: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    args: tuple[str, ...] = ()
    # Watch every namespace (as the chart's default Deployment does); ``namespace`` then only
    # says where the API shortcuts below look.
    all_namespaces: bool = False

    def start(self) -> None:
        env = {**self.env, "KUBECONFIG": str(self.kubeconfig or self.kube.kubeconfig)}
        handle = self.log_path.open("ab")
        scope = ("--all-namespaces",) if self.all_namespaces else ("--namespace", self.namespace)
        self.proc = subprocess.Popen(
            [STRONGROOM, "run", *scope, "--verbose", *self.args],
            env=env, stdout=handle, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def cli(self, *args: str, stdin: str | None = None) -> str:
        out = subprocess.run([STRONGROOM, *args], env=self.env, input=stdin, capture_output=True,
                             text=True, check=True, timeout=60)  # fmt: skip
        return out.stdout

    # -- API shortcuts ----------------------------------------------------------------------

    def msec_path(self, name: str = "") -> str:
        base = f"/apis/strongroom.io/v1alpha1/namespaces/{self.namespace}/managedsecrets"
        return f"{base}/{name}" if name else base

    def apply(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        body = {"apiVersion": "strongroom.io/v1alpha1", "kind": "ManagedSecret",
                "metadata": {"name": name, "namespace": self.namespace}, "spec": spec}  # fmt: skip
        return dict(self.kube.request("POST", self.msec_path(), body))

    def msec(self, name: str) -> dict[str, Any]:
        return dict(self.kube.request("GET", self.msec_path(name)))

    def secret(self, name: str) -> dict[str, Any] | None:
        import urllib.error

        try:
            return dict(
                self.kube.request("GET", f"/api/v1/namespaces/{self.namespace}/secrets/{name}")
            )
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def delete_and_wait(self, name: str, timeout: float = 45.0) -> None:
        """Delete a ManagedSecret and wait until it is gone (its finalizer released)."""
        import urllib.error

        self.kube.request("DELETE", self.msec_path(name))

        def gone() -> bool:
            try:
                self.msec(name)
            except urllib.error.HTTPError as exc:
                return exc.code == 404
            return False

        eventually(gone, timeout=timeout, what=f"ManagedSecret {name} deleted")

    def events(self) -> list[dict[str, Any]]:
        return list(
            self.kube.request("GET", f"/api/v1/namespaces/{self.namespace}/events")["items"]
        )

    def event_reasons(self) -> set[str]:
        return {event["reason"] for event in self.events()}


def eventually(check: Callable[[], Any], *, timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll until ``check`` returns something truthy; fail with the last value otherwise."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as exc:  # noqa: BLE001 - keep polling through transient API errors
            last = exc
        else:
            if last:
                return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def child_env(db_url: str, master_key: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    env.update({"STRONGROOM_DATABASE_URL": db_url, "STRONGROOM_MASTER_KEY": master_key,
**extra})  # fmt: skip
    return env
