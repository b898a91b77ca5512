"""Audit sinks: every audit event, besides its row, as a JSON line in a file, on stderr or syslog.

Vault's audit devices are the model: the table is the record, and a copy that leaves the
machine as each event happens lets someone who does not trust the database (or its
administrator) see what was done. ``STRONGROOM_AUDIT_SINKS`` lists the sinks (parsed in
:class:`strongroom.config.AuditSinkSpec`)::

    file:/var/log/strongroom/audit.jsonl,stderr,syslog+tcp://logs.example:514

**The line** (one event, one JSON object, always the same keys in the same order)::

    {"type":"strongroom.audit","seq":42,"time":"2025-06-01T12:00:00.123456Z",
     "actor":"system:serviceaccount:strongroom:strongroom","action":"secret.get",
     "outcome":"ok","namespace":"payments","name":"db","key":"password","version":3,
     "detail":"","prev_hash":"<64 hex>","hash":"<64 hex>"}

(shown wrapped; a line never is). An event of the values API ends with one more key,
``"origin"``: the caller's UID, groups, source address and authorization decision as a JSON
string (schema 0005, :mod:`strongroom.audit`). The fields are the event's row in ``audit_events``: ``seq``
its place in the chain, ``hash`` its link (HMAC-SHA256 under the audit key, see
:mod:`strongroom.audit`) and ``prev_hash`` the previous event's, so consecutive lines chain and
a line can be matched with the table, or checked on its own by whoever holds the audit key:
``time`` without its ``Z`` is the canonical form's time. An event has no value to carry (who,
when, what, outcome; ``detail`` is an error message, which never quotes a value), and neither
does its line. Lines are ASCII: JSON escapes control characters, and everything that is not
ASCII is escaped as ``\\uXXXX`` (DEL too), so no field can break a line or forge another.

**Sinks.** ``file:PATH`` appends (``O_APPEND``, one ``write`` per transaction, created 0600,
never through a symlink nor into a file of another user);
the file is reopened when it was moved or removed (logrotate), as Python's WatchedFileHandler
does, and a write cut short (a full disk) is followed by a newline before the next line. It is
not fsynced: the table is the durable record; the copy survives the process, not a
power cut. ``stderr``, one ``write`` per line (atomic on a pipe up to 4 KiB, so log lines from
other threads cannot split one): standard output is the command line's output channel
(``secret get`` prints values there, scripts parse it), and container runtimes collect stderr
just the same; stdout is refused. ``syslog+tcp://HOST[:PORT]`` sends RFC 5424 messages::

    <PRI>1 TIMESTAMP HOSTNAME strongroom PID ACTION - LINE

PRI = facility (``authpriv`` unless ``?facility=`` says otherwise) * 8 + severity (info for
``ok``, notice for any other outcome), TIMESTAMP the event's time, MSGID its action, no
structured data, MSG the line; framed by octet counting (RFC 6587 3.4.1: ``LEN SP MSG``, what
rsyslog's imtcp and syslog-ng's syslog() source take) or ``?framing=newline`` (``MSG LF``). One
connection is kept; before each send it is checked for the receiver having closed it (a
restarted receiver is reconnected to at once, a stopped one is refused there), and a send that
fails is not retried on a new connection (part of it may have arrived: sinks see each event at
most once). TCP has no acknowledgement: "took" means the kernel accepted the bytes on a live
connection; what is in flight when a receiver dies can still be lost (RELP, or a local relay
with a disk queue, closes that gap).

**When.** The store publishes a transaction's events once they are sealed, after the head row
is written and just before COMMIT (:func:`strongroom.store.repository.publish_audit_to`), with
the chain's lock held: every sink sees each committed event once and in chain order, whatever
the number of threads, and with group commit, every unit of a shared transaction in order (a
unit rolled back to its savepoint takes its events out first). Each sink gets the whole
transaction at once.

**Modes.** ``best-effort`` (default): a sink that fails is logged (once, then at most once a
minute while it keeps failing, and when it recovers, naming the events it missed) and counted
(``strongroom_audit_sink_failures_total{sink}``); the operation goes on, and those events are
in the table only. ``require``: as Vault does, when no sink took a transaction's events the
operation fails with an :class:`AuditError` and its transaction rolls back, so the table never
holds an event that no sink has. A sink is a copy for one who does not trust the database,
so the ordering favours it: if COMMIT itself fails after the send (the database went away at
that instant), a sink holds events the table lacks, and the next events reuse their sequence
numbers with other links. That is the lesser evil: an audit copy showing an attempted access
that did not complete (Vault logs requests before it serves them, for the same reason) is
visible and explained by the table, whose chain is the authority on what committed; the
opposite order would let accesses commit that no sink ever saw. The send is bounded
(``SEND_TIMEOUT_SECONDS``), and on SQLite it holds the write lock meanwhile: a slow receiver
slows every writer, a dead one fails them fast.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Protocol

from strongroom.audit import AuditEvent, Outcome, utc_naive
from strongroom.config import SYSLOG_FACILITIES, AuditSinkSettings, AuditSinkSpec
from strongroom.errors import AuditError
from strongroom.metrics import AUDIT_SINK_EVENTS, AUDIT_SINK_FAILURES

log = logging.getLogger("strongroom.auditsinks")

LINE_TYPE = "strongroom.audit"
SEND_TIMEOUT_SECONDS = 2.0
"""Longest a syslog connect or send may take before the sink counts as failed."""
WARN_EVERY_SECONDS = 60.0

_SEVERITY_INFO = 6
_SEVERITY_NOTICE = 5

Batch = Sequence[tuple[AuditEvent, str]]
"""A transaction's events, each with its line."""


def format_line(event: AuditEvent) -> str:
    """The event as one ASCII JSON line, without the newline (format in the module docstring)."""
    record = {
        "type": LINE_TYPE,
        "seq": event.seq,
        "time": _timestamp(event.time),
        "actor": event.actor,
        "action": event.action,
        "outcome": event.outcome,
        "namespace": event.namespace,
        "name": event.name,
        "key": event.key,
        "version": event.version,
        "detail": event.detail,
        "prev_hash": event.prev_hash,
        "hash": event.hash,
    }
    if event.origin:  # only the values API's events have one (schema 0005)
        record["origin"] = event.origin
    return json.dumps(record, separators=(",", ":")).replace("\x7f", "\\u007f")


def parse_line(line: str) -> AuditEvent:
    """The event a line carries (to match it with the table, or check its link with the key)."""
    record = json.loads(line)
    if not isinstance(record, dict) or record.get("type") != LINE_TYPE:
        raise ValueError("not a Strongroom audit line")
    return AuditEvent(
        time=datetime.fromisoformat(record["time"].removesuffix("Z")),
        actor=record["actor"],
        action=record["action"],
        outcome=record["outcome"],
        namespace=record["namespace"],
        name=record["name"],
        key=record["key"],
        version=record["version"],
        detail=record["detail"],
        seq=record["seq"],
        prev_hash=record["prev_hash"],
        hash=record["hash"],
        origin=record.get("origin", ""),
    )


def _timestamp(moment: datetime) -> str:
    return utc_naive(moment).isoformat(timespec="microseconds") + "Z"


class Sink(Protocol):
    """One destination; ``write`` raises :class:`OSError` when it did not take the batch."""

    name: str

    def write(self, batch: Batch) -> None: ...

    def close(self) -> None: ...


def _write_all(fd: int, data: bytes) -> None:
    """Write everything (a pipe may take less per call)."""
    view, done = memoryview(data), 0
    while done < len(data):
        done += os.write(fd, view[done:])


class FileSink:
    """Appends lines to a file; reopens it when it was rotated away."""

    def __init__(self, path: str) -> None:
        self.name = f"file:{path}"
        self.path = path
        self._fd: int | None = None
        self._identity: tuple[int, int] | None = None
        self._cut_line = False  # a failed write may have left half a line

    def write(self, batch: Batch) -> None:
        data = "".join(line + "\n" for _event, line in batch).encode("ascii")
        if self._cut_line:
            data = b"\n" + data
        fd = self._open()
        view, done = memoryview(data), 0
        try:
            while done < len(data):  # a full disk takes part of it, then refuses the rest
                done += os.write(fd, view[done:])
        except OSError:
            self._cut_line = self._cut_line or done > 0
            raise
        self._cut_line = False

    def _open(self) -> int:
        try:
            stat = Path(self.path).stat()
            current: tuple[int, int] | None = (stat.st_dev, stat.st_ino)
        except FileNotFoundError:
            current = None
        if self._fd is not None and current == self._identity:
            return self._fd
        self.close()
        # Not through a symlink, and not into a file someone else made: a local user who
        # pre-created the path (or a link there) would read every event, or redirect them.
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        fd = os.open(self.path, flags, 0o600)
        stat = os.fstat(fd)
        if stat.st_uid != os.geteuid():
            os.close(fd)
            raise OSError(errno.EPERM, f"belongs to another user (uid {stat.st_uid})", self.path)
        self._fd, self._identity = fd, (stat.st_dev, stat.st_ino)
        self._cut_line = False  # a new file starts clean
        return fd

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.close(fd)


class StderrSink:
    """Lines on file descriptor 2, one ``write`` each."""

    name = "stderr"

    def write(self, batch: Batch) -> None:
        for _event, line in batch:
            _write_all(2, (line + "\n").encode("ascii"))

    def close(self) -> None:
        pass


class SyslogTcpSink:
    """RFC 5424 messages over one kept TCP connection (framing in the module docstring)."""

    def __init__(self, spec: AuditSinkSpec, *, timeout: float = SEND_TIMEOUT_SECONDS) -> None:
        self.name = str(spec)
        self.host, self.port = spec.host, spec.port
        self.octet_counting = spec.framing == "octet-counting"
        self.facility = SYSLOG_FACILITIES[spec.facility]
        self.timeout = timeout
        self.hostname = _printable(socket.gethostname(), 255)
        self._sock: socket.socket | None = None
        self.connections = 0
        """Connections opened so far (one while the receiver stays up)."""

    def write(self, batch: Batch) -> None:
        data = b"".join(self.frame(event, line) for event, line in batch)
        sock = self._connected()
        try:
            sock.sendall(data)
        except OSError:
            self.close()  # the next write starts on a new connection
            raise

    def frame(self, event: AuditEvent, line: str) -> bytes:
        severity = _SEVERITY_INFO if event.outcome == Outcome.OK else _SEVERITY_NOTICE
        message = (
            f"<{self.facility * 8 + severity}>1 {_timestamp(event.time)} {self.hostname} "
            f"strongroom {os.getpid()} {_printable(event.action, 32)} - {line}"
        ).encode("ascii")
        if self.octet_counting:
            return b"%d %s" % (len(message), message)
        return message + b"\n"

    def _connected(self) -> socket.socket:
        if self._sock is not None and _closed_by_peer(self._sock):
            self.close()
        if self._sock is None:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            self._sock = sock
            self.connections += 1
        return self._sock

    def close(self) -> None:
        if self._sock is not None:
            sock, self._sock = self._sock, None
            with contextlib.suppress(OSError):
                sock.close()


def _closed_by_peer(sock: socket.socket) -> bool:
    """Whether the receiver closed or reset the connection (a receiver never sends).

    Polled without waiting (``recv`` on a socket with a timeout would wait for it first).
    """
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    if not poller.poll(0):
        return False  # nothing to read: still open
    try:
        return not sock.recv(4096)  # end of stream; anything else is not ours to read
    except OSError:
        return True  # reset


def _printable(text: str, limit: int) -> str:
    """RFC 5424 header fields are printable US-ASCII without spaces; ``-`` when empty."""
    kept = "".join(ch for ch in text if 33 <= ord(ch) <= 126)[:limit]
    return kept or "-"


def open_sink(spec: AuditSinkSpec) -> Sink:
    if spec.kind == "file":
        return FileSink(spec.path)
    if spec.kind == "stderr":
        return StderrSink()
    return SyslogTcpSink(spec)


class _Health:
    """What a sink has missed since it last took events, for the log."""

    __slots__ = ("first_missed", "last_missed", "last_warned", "missed")

    def __init__(self) -> None:
        self.missed = 0
        self.first_missed = self.last_missed = 0
        self.last_warned = 0.0


class AuditSinks:
    """The configured sinks, as the store's :class:`strongroom.audit.AuditPublisher`."""

    def __init__(self, sinks: Sequence[Sink], *, require: bool = False) -> None:
        self.sinks = tuple(sinks)
        self.require = require
        self._lock = threading.Lock()
        self._health = {sink.name: _Health() for sink in self.sinks}
        self._metrics = {
            sink.name: (AUDIT_SINK_EVENTS.labels(sink.name), AUDIT_SINK_FAILURES.labels(sink.name))
            for sink in self.sinks
        }

    @classmethod
    def from_settings(cls, settings: AuditSinkSettings) -> AuditSinks | None:
        if not settings.sinks:
            return None
        return cls([open_sink(spec) for spec in settings.sinks], require=settings.require)

    def publish(self, events: Sequence[AuditEvent]) -> None:
        """Write a transaction's events to every sink; in require mode, fail if none took them."""
        if not events:
            return
        batch = [(event, format_line(event)) for event in events]
        failures: list[str] = []
        with self._lock:
            for sink in self.sinks:
                took, failed = self._metrics[sink.name]
                try:
                    sink.write(batch)
                except OSError as exc:
                    failed.inc(len(batch))
                    failures.append(f"{sink.name}: {_reason(exc)}")
                    self._failed(sink.name, failures[-1], events)
                else:
                    took.inc(len(batch))
                    self._recovered(sink.name)
        if self.require and len(failures) == len(self.sinks):
            raise AuditError(
                f"not done: no audit sink took the audit event ({'; '.join(failures)}) and "
                "STRONGROOM_AUDIT_SINKS_MODE is require"
            )

    def _failed(self, name: str, problem: str, events: Sequence[AuditEvent]) -> None:
        health = self._health[name]
        if not health.missed:
            health.first_missed = events[0].seq
        health.missed += len(events)
        health.last_missed = events[-1].seq
        now = time.monotonic()
        if health.missed == len(events) or now - health.last_warned >= WARN_EVERY_SECONDS:
            health.last_warned = now
            consequence = (
                "the operation fails unless another sink took it"
                if self.require
                else "the table has them (best-effort)"
            )
            log.warning(
                "audit sink failed: %s; %d events missed it since event %d; %s",
                problem, health.missed, health.first_missed, consequence,
            )  # fmt: skip

    def _recovered(self, name: str) -> None:
        health = self._health[name]
        if health.missed:
            log.warning(
                "audit sink %s takes events again; it missed %d events between %d and %d "
                "(in the table only, or not committed)",
                name, health.missed, health.first_missed, health.last_missed,
            )  # fmt: skip
            health.missed = 0

    def close(self) -> None:
        with self._lock:
            for sink in self.sinks:
                sink.close()


def _reason(exc: OSError) -> str:
    """A short cause: the OS's words for it, never more (no addresses beyond the sink's name)."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {SEND_TIMEOUT_SECONDS:g}s"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host ({exc.strerror})"
    return (exc.strerror or type(exc).__name__).lower()
