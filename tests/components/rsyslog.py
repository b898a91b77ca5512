"""A real syslog receiver: Debian's rsyslogd in the foreground, imtcp on a free loopback port.

It writes every message it parses to one file, as RFC 5424 fields it took apart itself
(protocol version, facility, severity, hostname, app name, procid, msgid, structured data, then
the message), so a test sees what a real receiver understood, not what was sent. ``stop`` and
``start`` again on the same port stand for a receiver going away and coming back.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.components.base import free_port, missing, port_open, stop, wait_until

_TEMPLATE = (
    "%protocol-version% %syslogfacility-text% %syslogseverity-text% %hostname% %app-name% "
    "%procid% %msgid% %structured-data% %msg%\\n"
)

_CONFIG = """\
global(workDirectory="{root}" maxMessageSize="64k")
module(load="imtcp")
template(name="fields" type="string" string="{template}")
ruleset(name="audit") {{
  action(type="omfile" file="{output}" template="fields")
}}
input(type="imtcp" address="127.0.0.1" port="{port}" ruleset="audit")
"""


def rsyslogd_path() -> str | None:
    explicit = os.environ.get("STRONGROOM_TEST_RSYSLOGD")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    found = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
    return found if os.access(found, os.X_OK) else None


@dataclasses.dataclass(frozen=True)
class Received:
    """One message as rsyslog parsed it."""

    protocol_version: str
    facility: str
    severity: str
    hostname: str
    app_name: str
    procid: str
    msgid: str
    structured_data: str
    msg: str


@dataclasses.dataclass
class Rsyslog:
    binary: str
    root: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def output(self) -> Path:
        return self.root / "received.log"

    def url(self, **options: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in options.items())
        return f"syslog+tcp://127.0.0.1:{self.port}" + (f"?{query}" if query else "")

    def start(self) -> None:
        config = self.root / "rsyslog.conf"
        config.write_text(
            _CONFIG.format(root=self.root, template=_TEMPLATE, output=self.output, port=self.port)
        )
        log = self.root / "rsyslogd.log"
        with log.open("ab") as handle:
            self.proc = subprocess.Popen(
                [self.binary, "-n", "-f", str(config), "-i", str(self.root / "rsyslogd.pid")],
                stdout=handle,
                stderr=subprocess.STDOUT,
            )
        wait_until(lambda: port_open(self.port), timeout=30, what="rsyslogd", proc=self.proc,
                   log=log)  # fmt: skip

    def stop(self) -> None:
        """SIGTERM, as a receiver shutting down; its connections are closed."""
        if self.proc is not None:
            stop(self.proc)
            self.proc = None

    def offset(self) -> int:
        """Where the output ends now: pass it to :meth:`received` to see only what follows."""
        return self.output.stat().st_size if self.output.exists() else 0

    def received(self, since: int = 0) -> list[Received]:
        if not self.output.exists():
            return []
        with self.output.open("rb") as handle:
            handle.seek(since)
            text = handle.read().decode()
        return [Received(*line.split(" ", 8)) for line in text.splitlines()]

    def wait_for(self, count: int, since: int = 0, timeout: float = 15.0) -> list[Received]:
        """The messages after ``since`` once there are ``count`` of them (rsyslog writes async)."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.received(since)
            if len(got) >= count or time.monotonic() > deadline:
                return got
            time.sleep(0.05)


def start_rsyslog() -> Rsyslog:
    binary = rsyslogd_path()
    if binary is None:
        missing("rsyslog", "run scripts/testenv rsyslog (installs Debian's rsyslog)")
        raise AssertionError("unreachable")
    server = Rsyslog(binary, Path(tempfile.mkdtemp(prefix="strongroom-rsyslog-")), free_port())
    server.start()
    return server
