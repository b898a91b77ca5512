"""OpenBao (the open-source fork of Vault, same HTTP API) in dev mode, transit enabled.

Dev mode keeps everything in memory, is unsealed at start and has a known root token; it can
still be sealed on demand (``sys/seal``) for the tests of a sealed server.
"""

from __future__ import annotations

import dataclasses
import subprocess
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from tests.components.base import find_binary, free_port, missing, stop, wait_until


@dataclasses.dataclass
class OpenBao:
    binary: str
    root: Path
    port: int = dataclasses.field(default_factory=free_port)
    token: str = "strongroom-root"
    proc: subprocess.Popen[bytes] | None = None

    @property
    def addr(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = self.root / "openbao.log"
        self.proc = subprocess.Popen(
            [
                self.binary, "server", "-dev",
                f"-dev-root-token-id={self.token}",
                f"-dev-listen-address=127.0.0.1:{self.port}",
                "-dev-no-store-token",
            ],
            stdout=log.open("ab"), stderr=subprocess.STDOUT,
            env={"HOME": str(self.root), "PATH": "/usr/bin:/bin"},
        )  # fmt: skip
        wait_until(
            lambda: urllib.request.urlopen(f"{self.addr}/v1/sys/health", timeout=1).status == 200,  # noqa: S310
            timeout=30, what="OpenBao", proc=self.proc, log=log,
        )  # fmt: skip
        self.enable_transit()

    def enable_transit(self, path: str = "transit") -> None:
        request = urllib.request.Request(  # noqa: S310
            f"{self.addr}/v1/sys/mounts/{path}",
            data=b'{"type": "transit"}',
            method="POST",
            headers={"X-Vault-Token": self.token},
        )
        try:
            urllib.request.urlopen(request, timeout=10)  # noqa: S310
        except urllib.error.HTTPError as exc:
            if exc.code != 400:  # already mounted
                raise

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None

    def restart(self) -> None:
        """A dev server restarts empty: transit keys are gone, like a lost Vault."""
        self.stop()
        self.start()


def start_openbao() -> OpenBao:
    binary = find_binary("STRONGROOM_TEST_OPENBAO", "openbao-*/bao")
    if binary is None:
        missing("OpenBao", "run scripts/testenv openbao (builds it with Go, ~4 minutes once)")
        raise AssertionError("unreachable")
    server = OpenBao(binary, Path(tempfile.mkdtemp(prefix="strongroom-bao-")))
    server.start()
    return server
