"""Audit sink lines and frames, files that rotate or fill up, and what each mode does on failure."""

from __future__ import annotations

import errno
import logging
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from strongroom.audit import AuditEvent, Outcome
from strongroom.auditsinks import (
    AuditSinks,
    Batch,
    FileSink,
    SyslogTcpSink,
    format_line,
    parse_line,
)
from strongroom.config import AuditSinkSpec
from strongroom.errors import AuditError


def event(
    seq: int = 7, *, outcome: str = Outcome.OK, detail: str = "", action: str = "secret.get"
) -> AuditEvent:
    return AuditEvent(
        time=datetime(2025, 6, 1, 12, 0, 0, 123456, tzinfo=UTC),
        actor="system:serviceaccount:strongroom:strongroom",
        action=action,
        outcome=outcome,
        namespace="payments",
        name="db",
        key="password",
        version=3,
        detail=detail,
        seq=seq,
        prev_hash="a" * 64,
        hash="b" * 64,
    )


def test_a_line_is_the_events_row_as_one_json_object() -> None:
    assert format_line(event()) == (
        '{"type":"strongroom.audit","seq":7,"time":"2025-06-01T12:00:00.123456Z",'
        '"actor":"system:serviceaccount:strongroom:strongroom","action":"secret.get",'
        '"outcome":"ok","namespace":"payments","name":"db","key":"password","version":3,'
        f'"detail":"","prev_hash":"{"a" * 64}","hash":"{"b" * 64}"}}'
    )


def test_no_field_can_break_a_line_or_forge_another() -> None:
    nasty = 'x"\n{"type":"strongroom.audit"}\r\x00\x1b[31m\x7f\u0085\u2028é\U0001f600'
    line = format_line(event(detail=nasty))
    assert all(0x20 <= ord(ch) < 0x7F for ch in line)  # printable ASCII only
    assert parse_line(line).detail == nasty


def test_a_line_parses_back_to_the_event_its_mac_covers() -> None:
    original = event(outcome=Outcome.DENIED, detail="refused")
    parsed = parse_line(format_line(original))
    assert parsed.canonical() == original.canonical()
    assert (parsed.seq, parsed.prev_hash, parsed.hash) == (7, "a" * 64, "b" * 64)
    with pytest.raises(ValueError, match="not a Strongroom audit line"):
        parse_line('{"type":"something else"}')


@pytest.mark.parametrize(
    ("url", "outcome", "start"),
    [
        pytest.param("syslog+tcp://h", Outcome.OK, b"<86>1 ", id="authpriv-info"),
        pytest.param(
            "syslog+tcp://h?facility=local0", Outcome.DENIED, b"<133>1 ", id="local0-notice"
        ),
    ],
)
def test_syslog_frames_are_rfc5424_with_octet_counting(
    url: str, outcome: str, start: bytes
) -> None:
    sink = SyslogTcpSink(AuditSinkSpec.parse(url))
    sink.hostname = "node-1"
    one = event(outcome=outcome)
    frame = sink.frame(one, format_line(one))
    length, _, message = frame.partition(b" ")
    assert int(length) == len(message)
    assert message.startswith(start)
    assert (
        message
        == start
        + (
            f"2025-06-01T12:00:00.123456Z node-1 strongroom {os.getpid()} secret.get - "
            + format_line(one)
        ).encode()
    )


def test_newline_framing_ends_each_message_with_lf() -> None:
    sink = SyslogTcpSink(AuditSinkSpec.parse("syslog+tcp://h?framing=newline"))
    one = event(action="a" * 40)  # MSGID is at most 32 characters
    frame = sink.frame(one, format_line(one))
    assert frame.startswith(b"<86>1 ") and frame.endswith(b"}\n") and frame.count(b"\n") == 1
    assert f" {'a' * 32} - ".encode() in frame


def test_a_file_sink_follows_rotation_and_creates_files_0600(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sink = FileSink(str(path))
    sink.write([(event(1), "one")])
    path.rename(tmp_path / "audit.jsonl.1")  # logrotate
    sink.write([(event(2), "two"), (event(3), "three")])
    sink.close()
    assert (tmp_path / "audit.jsonl.1").read_text() == "one\n"
    assert path.read_text() == "two\nthree\n"
    assert (path.stat().st_mode & 0o777) == 0o600


def test_a_file_sink_writes_neither_through_a_link_nor_into_another_users_file(
    tmp_path: Path,
) -> None:
    """A local user who pre-creates the sink's path (or a link there) must not get the events."""
    theirs = tmp_path / "theirs.jsonl"
    theirs.write_text("")
    link = tmp_path / "linked.jsonl"
    link.symlink_to(theirs)
    with pytest.raises(OSError) as refused:
        FileSink(str(link)).write([(event(1), "one")])
    assert refused.value.errno == errno.ELOOP
    assert theirs.read_text() == ""
    if os.geteuid() != 0:
        pytest.skip("handing a file to another user needs root (the suite runs as root in CI)")
    os.chown(theirs, 65534, 65534)
    with pytest.raises(OSError, match="belongs to another user"):
        FileSink(str(theirs)).write([(event(1), "one")])
    assert theirs.read_text() == ""


def test_after_a_write_cut_short_the_next_line_starts_on_a_line_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "audit.jsonl"
    sink = FileSink(str(path))
    real_write = os.write
    calls = {"n": 0}

    def disk_fills_up(fd: int, data: bytes) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            return real_write(fd, bytes(data)[:3])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", disk_fills_up)
    with pytest.raises(OSError, match="No space"):
        sink.write([(event(1), "first")])
    monkeypatch.setattr(os, "write", real_write)
    sink.write([(event(2), "second")])
    sink.close()
    assert path.read_text() == "fir\nsecond\n"


class FakeSink:
    def __init__(self, name: str, *, fails: bool = False) -> None:
        self.name = name
        self.fails = fails
        self.got: list[list[str]] = []

    def write(self, batch: Batch) -> None:
        if self.fails:
            raise ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
        self.got.append([line for _event, line in batch])

    def close(self) -> None:
        pass


def failures(name: str) -> float:
    return REGISTRY.get_sample_value("strongroom_audit_sink_failures_total", {"sink": name}) or 0.0


def test_require_is_satisfied_by_any_one_sink() -> None:
    down, up = FakeSink("unit-down-1", fails=True), FakeSink("unit-up-1")
    sinks = AuditSinks([down, up], require=True)
    sinks.publish([event(1), event(2)])
    assert up.got == [[format_line(event(1)), format_line(event(2))]]  # one batch, in order
    assert failures("unit-down-1") == 2


def test_require_fails_when_no_sink_took_the_events_and_names_each() -> None:
    sinks = AuditSinks(
        [FakeSink("unit-a", fails=True), FakeSink("unit-b", fails=True)], require=True
    )
    with pytest.raises(AuditError) as failed:
        sinks.publish([event()])
    assert str(failed.value) == (
        "not done: no audit sink took the audit event (unit-a: connection refused; "
        "unit-b: connection refused) and STRONGROOM_AUDIT_SINKS_MODE is require"
    )


def test_best_effort_logs_a_failing_sink_once_and_its_recovery(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="strongroom.auditsinks")
    sink = FakeSink("unit-flaky", fails=True)
    sinks = AuditSinks([sink])
    before = failures("unit-flaky")
    for seq in (5, 6, 7):
        sinks.publish([event(seq)])  # never raises
    assert failures("unit-flaky") == before + 3
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == [
        "audit sink failed: unit-flaky: connection refused; 1 events missed it since event 5; "
        "the table has them (best-effort)"
    ]
    sink.fails = False
    sinks.publish([event(8)])
    assert caplog.records[-1].getMessage() == (
        "audit sink unit-flaky takes events again; it missed 3 events between 5 and 7 "
        "(in the table only, or not committed)"
    )
