"""Audit sinks: every committed event, once and in chain order, in a file, on stderr, in syslog.

The syslog tests ship to a real rsyslogd (tests/components/rsyslog.py) and read back what it
parsed. ``require`` is tested by stopping that receiver in the middle of a run.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Connection

from strongroom import AuditError, Settings, Strongroom, StrongroomError
from strongroom.audit import AuditEvent, Outcome
from strongroom.auditsinks import SyslogTcpSink, format_line, parse_line
from strongroom.config import AuditSinkSettings, AuditSinkSpec, Limits
from strongroom.errors import AlreadyExists, NotFound
from strongroom.store import repository as repo
from tests.components.rsyslog import Rsyslog
from tests.conftest import make_settings
from tests.integration.test_cli import KEY, run

CANARY = "CANARY-51nk-7c0d-do-not-leak"


def settings_with(url: str, *specs: str, require: bool = False) -> Settings:
    """A test store's settings with these sinks (and a value limit ``exercise`` runs into)."""
    chosen = AuditSinkSettings(tuple(AuditSinkSpec.parse(spec) for spec in specs), require)
    return make_settings(url, audit_sinks=chosen, limits=Limits(max_value_bytes=1000))


def table_lines(room: Strongroom) -> list[str]:
    return [format_line(event) for event in room.audit_events()]


def exercise(room: Strongroom) -> None:
    """Writes, reads and refusals, with a canary value in everything that can carry one."""
    room.set("ns", "app", {"password": CANARY, "obj": {"k": CANARY + "-in-object"}})
    room.set("ns", "app", {"password": CANARY + "-v2"})
    room.get("ns", "app")
    room.get("ns", "app", "password", version=1)
    room.verify("ns", "app", "password", CANARY + "-wrong")
    room.list()
    refusals = [
        lambda: room.get("ns", "app", "nope"),
        lambda: room.set("ns", "app", {"password": CANARY}, if_absent=True),
        lambda: room.set("ns", "app", {"big": CANARY * 100}),
        lambda: room.set("ns", "app", {"bad key": CANARY}),
    ]
    for refused in refusals:
        with pytest.raises(StrongroomError):
            refused()


def connections(room: Strongroom) -> int:
    assert room.sinks is not None
    (sink,) = room.sinks.sinks
    assert isinstance(sink, SyslogTcpSink)
    return sink.connections


def sink_failures(name: str) -> float:
    return REGISTRY.get_sample_value("strongroom_audit_sink_failures_total", {"sink": name}) or 0.0


def test_a_file_sink_holds_the_tables_chain_line_for_line_and_no_value(
    db_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "audit.jsonl"
    with Strongroom.open(settings_with(db_url, f"file:{path}")) as room:
        exercise(room)
        key = room.audit_key.current()
        assert room.audit_verify().ok
        expected = table_lines(room)
    raw = path.read_bytes()
    lines = raw.decode("ascii").splitlines()
    assert lines == expected  # every event once, in chain order, as the table has it
    assert [parse_line(line).seq for line in lines] == list(range(1, len(lines) + 1))
    outcomes = {parse_line(line).outcome for line in lines}
    assert {Outcome.OK, Outcome.NOT_FOUND, Outcome.MISMATCH, Outcome.ERROR} <= outcomes
    previous = "0" * 64
    for line in lines:  # each line carries everything its MAC covers
        event = parse_line(line)
        assert event.prev_hash == previous
        assert key.link(event.prev_hash, event) == event.hash
        previous = event.hash
    assert CANARY.encode() not in raw
    assert (path.stat().st_mode & 0o777) == 0o600


def test_with_group_commit_sinks_get_each_committed_event_once_in_chain_order(
    tmp_path: Path,
) -> None:
    """Units rolled back to their savepoint take their events out of the shared transaction's
    list; everything else reaches the sink once, in the order of the chain."""
    path = tmp_path / "audit.jsonl"
    with Strongroom.open(
        settings_with(f"sqlite:///{tmp_path / 'store.db'}", f"file:{path}")
    ) as room:
        room.group_commit()
        batcher = room._batcher
        assert batcher is not None
        key = room.audit_key.current()
        room.set("ns", "taken", {"k": "v"})
        errors: list[BaseException] = []

        def half_done(conn: Connection) -> None:
            event = AuditEvent(datetime.now(UTC), "test", "test.half", Outcome.OK)
            repo.append_audit(conn, event, key=key)
            raise RuntimeError("fails after its write")

        def worker(i: int) -> None:
            try:
                for round_ in range(10):
                    room.set("ns", f"w{i}", {"n": round_})
                    room.get("ns", f"w{i}")
                    with pytest.raises(AlreadyExists):
                        room.set("ns", "taken", {"k": "x"}, if_absent=True)
                    with pytest.raises(NotFound):
                        room.get("ns", "missing")
                    with pytest.raises(RuntimeError):
                        batcher.run(half_done)
            except BaseException as exc:  # noqa: BLE001 - reported by the test thread
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not errors, errors
        assert batcher.batches < batcher.units  # transactions were shared
        assert room.audit_verify().ok
        expected = table_lines(room)
    lines = path.read_text().splitlines()
    assert lines == expected
    assert not any('"test.half"' in line for line in lines)


def test_stderr_keeps_the_command_lines_stdout_to_its_output(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    env |= {
        "STRONGROOM_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
        "STRONGROOM_MASTER_KEY": KEY,
        "STRONGROOM_ACTOR": "cli-test",
        "STRONGROOM_AUDIT_SINKS": "stderr",
    }
    assert run(env, "secret", "set", "ns/app", f"pw={CANARY}").returncode == 0
    got = run(env, "secret", "get", "ns/app", "--json")
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["data"] == {"pw": CANARY}  # stdout: the output, nothing else
    lines = got.stderr.splitlines()
    events = [parse_line(line) for line in lines]
    assert [(e.action, e.outcome, e.actor) for e in events] == [("secret.get", "ok", "cli-test")]
    assert CANARY not in got.stderr

    env["STRONGROOM_AUDIT_SINKS"] = "stdout"
    refused = run(env, "secret", "get", "ns/app")
    assert refused.returncode != 0
    assert refused.stdout == ""
    assert "STRONGROOM_AUDIT_SINKS: stdout is the command line's output channel" in refused.stderr


@pytest.mark.parametrize("framing", ["octet-counting", "newline"])
def test_events_reach_a_real_syslog_receiver(
    rsyslog: Rsyslog, sqlite_url: str, framing: str
) -> None:
    since = rsyslog.offset()
    with Strongroom.open(settings_with(sqlite_url, rsyslog.url(framing=framing))) as room:
        exercise(room)
        expected = list(room.audit_events())
        assert connections(room) == 1  # kept, and not mistaken for closed
    got = rsyslog.wait_for(len(expected), since)
    assert [message.msg for message in got] == [format_line(event) for event in expected]
    for message, event in zip(got, expected, strict=True):
        assert message.protocol_version == "1"  # parsed as RFC 5424
        assert (message.app_name, message.msgid) == ("strongroom", event.action)
        assert message.facility == "authpriv"
        assert message.severity == ("info" if event.outcome == Outcome.OK else "notice")
        assert message.structured_data == "-"
    assert all(CANARY not in message.msg for message in got)


@pytest.fixture
def receiver(rsyslog: Rsyslog) -> Iterator[Rsyslog]:
    """The session's receiver, running again after a test that stopped it."""
    try:
        yield rsyslog
    finally:
        if rsyslog.proc is None:
            rsyslog.start()


@pytest.mark.parametrize("backend", ["sqlite", "sqlite-group-commit", "postgres"])
def test_require_fails_the_operation_when_the_receiver_stops_and_loses_nothing(
    receiver: Rsyslog, request: pytest.FixtureRequest, backend: str
) -> None:
    url = request.getfixturevalue("pg_url" if backend == "postgres" else "sqlite_url")
    since = receiver.offset()
    sink = receiver.url()
    with Strongroom.open(settings_with(url, sink, require=True)) as room:
        if backend == "sqlite-group-commit":
            assert room.group_commit()
        room.set("ns", "app", {"pw": "v1"})
        assert room.get("ns", "app").data == {"pw": "v1"}
        before = table_lines(room)
        assert [m.msg for m in receiver.wait_for(len(before), since)] == before

        receiver.stop()
        with pytest.raises(AuditError) as failed:
            room.set("ns", "app", {"pw": "v2"})
        assert str(failed.value) == (
            f"not done: no audit sink took the audit event ({sink}: connection refused) "
            "and STRONGROOM_AUDIT_SINKS_MODE is require"
        )
        with pytest.raises(AuditError):
            room.get("ns", "app")  # a read is an access: not audited, not served
        assert table_lines(room) == before  # nothing of either operation committed
        assert [version for version, *_ in room.history("ns", "app")] == [1]

        receiver.start()
        assert room.set("ns", "app", {"pw": "v2"}) == 2
        assert room.get("ns", "app").data == {"pw": "v2"}
        after = table_lines(room)
        assert room.audit_verify().ok
    assert [m.msg for m in receiver.wait_for(len(after), since)] == after


def test_best_effort_goes_on_without_the_receiver_and_counts_what_it_missed(
    receiver: Rsyslog, sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="strongroom.auditsinks")
    since = receiver.offset()
    sink = receiver.url()
    failures = sink_failures(sink)
    with Strongroom.open(settings_with(sqlite_url, sink)) as room:
        room.set("ns", "app", {"pw": "v1"})
        delivered = table_lines(room)
        receiver.wait_for(len(delivered), since)

        receiver.stop()
        assert room.set("ns", "app", {"pw": "v2"}) == 2
        assert room.get("ns", "app").data == {"pw": "v2"}
        missed = table_lines(room)[len(delivered) :]
        assert len(missed) == 2
        assert sink_failures(sink) == failures + 2
        assert f"audit sink failed: {sink}: connection refused" in caplog.text

        receiver.start()
        room.get("ns", "app")
        after = table_lines(room)
        assert room.audit_verify().ok
    got = [m.msg for m in receiver.wait_for(len(after) - len(missed), since)]
    assert got == [line for line in after if line not in missed]
    assert f"audit sink {sink} takes events again; it missed 2 events" in caplog.text


def test_a_receiver_restarted_between_operations_is_reconnected_to_at_once(
    receiver: Rsyslog, sqlite_url: str
) -> None:
    since = receiver.offset()
    with Strongroom.open(settings_with(sqlite_url, receiver.url(), require=True)) as room:
        room.set("ns", "app", {"pw": "v1"})
        receiver.wait_for(len(table_lines(room)), since)
        receiver.stop()
        receiver.start()
        room.set("ns", "app", {"pw": "v2"})  # the old connection is seen closed: a new one
        expected = table_lines(room)
        assert connections(room) == 2
    assert [m.msg for m in receiver.wait_for(len(expected), since)] == expected
