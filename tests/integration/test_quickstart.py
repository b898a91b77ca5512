"""The README's first command takes a new user from nothing to a synced Secret."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.components.base import CACHE

REPO = Path(__file__).resolve().parents[2]


def test_quickstart_once_syncs_the_example(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("STRONGROOM_") and k != "KUBECONFIG"}  # fmt: skip
    env.update({
        "HOME": str(tmp_path),  # no ~/.kube/config: the local apiserver is started
        "STRONGROOM_CACHE": str(CACHE),
        "STRONGROOM_QUICKSTART_DIR": str(tmp_path / "state"),
    })  # fmt: skip
    result = subprocess.run([str(REPO / "scripts" / "quickstart"), "--once"], env=env,
                            capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "True    Synced" in result.stdout
    assert "username from the Secret: app" in result.stdout
    assert "audit chain intact" in result.stdout
    assert (tmp_path / "state" / "master.key").stat().st_mode & 0o077 == 0
    assert not (tmp_path / "state" / "kubeconfig").exists()  # the local cluster was stopped
    kubectl = tmp_path / "state" / "bin" / "kubectl"  # where the closing message's PATH points
    version = subprocess.run([str(kubectl), "version", "--client"], capture_output=True,
                             text=True, check=True).stdout  # fmt: skip
    assert "Client Version" in version
