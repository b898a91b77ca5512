"""The README's first command takes a new user from nothing to a synced Secret, and leaves an
operator that serves every namespace."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
from pathlib import Path

from tests.components.base import CACHE
from tests.components.operator import eventually

REPO = Path(__file__).resolve().parents[2]


def quickstart_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("STRONGROOM_") and k != "KUBECONFIG"}  # fmt: skip
    env.update({
        "HOME": str(tmp_path),  # no ~/.kube/config: the local apiserver is started
        "STRONGROOM_CACHE": str(CACHE),
        "STRONGROOM_QUICKSTART_DIR": str(tmp_path / "state"),
    })  # fmt: skip
    return env


def test_quickstart_syncs_the_example_then_serves_every_namespace(tmp_path: Path) -> None:
    """Run twice on one state directory, as a user does: the second run's local cluster is a
    new one (new namespace UIDs), the store is the same."""
    once(tmp_path)
    keeps_running(tmp_path)


def once(tmp_path: Path) -> None:
    result = subprocess.run([str(REPO / "scripts" / "quickstart"), "--once"],
                            env=quickstart_env(tmp_path), capture_output=True, text=True,
                            timeout=600, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "True    Synced" in result.stdout
    assert "username from the Secret: app" in result.stdout
    assert "audit chain intact" in result.stdout
    assert "quickstart: waiting for the operator to sync demo/app-db ..." in result.stderr
    assert (tmp_path / "state" / "master.key").stat().st_mode & 0o077 == 0
    assert not (tmp_path / "state" / "kubeconfig").exists()  # the local cluster was stopped
    kubectl = tmp_path / "state" / "bin" / "kubectl"  # where the closing message's PATH points
    version = subprocess.run([str(kubectl), "version", "--client"], capture_output=True,
                             text=True, check=True).stdout  # fmt: skip
    assert "Client Version" in version


def keeps_running(tmp_path: Path) -> None:
    """Without --once: the closing message's exports work, and a user's first ManagedSecret in
    a namespace of their own (not demo) syncs; Ctrl-C stops everything."""
    state = tmp_path / "state"
    out, err = (tmp_path / "out.log").open("w"), (tmp_path / "err.log").open("w")
    proc = subprocess.Popen([str(REPO / "scripts" / "quickstart")], env=quickstart_env(tmp_path),
                            stdout=out, stderr=err, start_new_session=True)  # fmt: skip
    try:
        eventually(lambda: "Press Ctrl-C to stop." in (tmp_path / "out.log").read_text()
                   or proc.poll() is not None, timeout=600, what="the closing message")  # fmt: skip
        message = (tmp_path / "out.log").read_text()
        assert proc.poll() is None, message + (tmp_path / "err.log").read_text()
        assert f"export PATH={state}/bin:$PATH" in message
        env = {**os.environ, "PATH": f"{state / 'bin'}:{os.environ['PATH']}",
               "KUBECONFIG": str(state / "kubeconfig"),
               "STRONGROOM_MASTER_KEY_FILE": str(state / "master.key"),
               "STRONGROOM_DATABASE_URL": f"sqlite:///{state / 'strongroom.db'}"}  # fmt: skip
        env.pop("STRONGROOM_MASTER_KEY", None)

        def run(*args: str, stdin: str | None = None) -> str:
            return subprocess.run(list(args), env=env, input=stdin, capture_output=True,
                                  text=True, check=True, timeout=60).stdout  # fmt: skip

        run("kubectl", "create", "namespace", "payments")
        run(str(REPO / ".venv" / "bin" / "strongroom"), "secret", "set", "payments/stripe",
            "api_key=sk_test_quickstart")  # fmt: skip
        run("kubectl", "apply", "-f", "-", stdin=json.dumps({
            "apiVersion": "strongroom.io/v1alpha1", "kind": "ManagedSecret",
            "metadata": {"name": "stripe", "namespace": "payments"},
            "spec": {"data": [{"key": "api_key"}]}}))  # fmt: skip

        def synced() -> str:
            data = json.loads(run("kubectl", "get", "secret", "stripe", "-n", "payments",
                                  "-o", "json"))["data"]  # fmt: skip
            return base64.b64decode(data["api_key"]).decode()

        assert eventually(synced, timeout=60, what="payments/stripe synced") == (
            "sk_test_quickstart")
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C, to the whole foreground group
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        out.close()
        err.close()
    deadline = time.monotonic() + 30
    while (state / "kubeconfig").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not (state / "kubeconfig").exists()  # the local cluster was stopped
