"""A private PostgreSQL cluster from Debian's packages, on a free loopback port.

PostgreSQL refuses to run as root, so when the tests run as root the cluster belongs to the
``postgres`` system user and is started through ``runuser``.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg

from tests.components.base import free_port, missing, stop, wait_until


def pg_bin() -> Path | None:
    explicit = os.environ.get("STRONGROOM_TEST_PG_BIN")
    if explicit:
        return Path(explicit)
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@dataclasses.dataclass
class PostgresServer:
    bin_dir: Path
    data_dir: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    user: str = "postgres"

    @property
    def admin_url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"

    def _cmd(self, *argv: str) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *argv]
        return list(argv)

    def init(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.data_dir.parent, "postgres")
        subprocess.run(
            self._cmd(
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.data_dir),
                "-A",
                "trust",
                "-U",
                self.user,
                "--no-sync",
                "-E",
                "UTF8",
            ),
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        log = self.data_dir.parent / "postgres.log"
        handle = log.open("ab")
        self.proc = subprocess.Popen(
            self._cmd(
                str(self.bin_dir / "postgres"),
                "-D",
                str(self.data_dir),
                "-p",
                str(self.port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"unix_socket_directories={self.data_dir.parent}",
                "-c",
                "fsync=off",
                "-c",
                "max_connections=200",
            ),
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
        wait_until(self._ready, timeout=30, what="postgres", proc=self.proc, log=log)

    def _ready(self) -> bool:
        with psycopg.connect(self.admin_url, connect_timeout=1) as conn:
            conn.execute("SELECT 1")
        return True

    def stop(self) -> None:
        """Fast shutdown (clients are disconnected, as in a real restart), then reap."""
        if self.proc is not None:
            subprocess.run(
                self._cmd(str(self.bin_dir / "pg_ctl"), "stop", "-D", str(self.data_dir),
                          "-m", "fast", "-w", "-t", "30"),
                capture_output=True, check=False,
            )  # fmt: skip
            stop(self.proc)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def new_database(self) -> str:
        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{name}"

    def dump(self, url: str) -> bytes:
        dbname = url.rsplit("/", 1)[1]
        return subprocess.run(
            [
                str(self.bin_dir / "pg_dump"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                self.user,
                dbname,
            ],
            check=True,
            capture_output=True,
        ).stdout


def start_postgres() -> PostgresServer:
    bin_dir = pg_bin()
    if bin_dir is None or not (bin_dir / "initdb").exists():
        missing("PostgreSQL", "run scripts/testenv postgres (installs Debian's postgresql)")
        raise AssertionError("unreachable")
    root = Path(tempfile.mkdtemp(prefix="strongroom-pg-"))
    root.chmod(0o755)
    server = PostgresServer(bin_dir, root / "data", free_port())
    server.init()
    server.start()
    return server
