"""moto's server (AWS API emulator) on a free loopback port, reached over HTTP by boto3."""

from __future__ import annotations

import dataclasses
import importlib.util
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

from tests.components.base import free_port, missing, stop, wait_until


@dataclasses.dataclass
class MotoServer:
    root: Path
    port: int = dataclasses.field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    region: str = "us-east-1"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = self.root / "moto.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=log.open("ab"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_until(
            lambda: urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1).status == 200,  # noqa: S310
            timeout=30, what="moto server", proc=self.proc, log=log,
        )  # fmt: skip

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None

    def restart(self) -> None:
        """moto keeps its state in memory: a restart loses every key."""
        self.stop()
        self.start()

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": self.region,
        }


def start_moto() -> MotoServer:
    if importlib.util.find_spec("moto.server") is None or importlib.util.find_spec("flask") is None:
        missing("moto server", "pip install 'moto[server]' (scripts/bootstrap installs it)")
    server = MotoServer(Path(tempfile.mkdtemp(prefix="strongroom-moto-")))
    server.start()
    return server
