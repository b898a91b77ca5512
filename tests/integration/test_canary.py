"""Canary values never reach the database in clear, a pg_dump, logs, audit rows or errors."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

import pytest

from strongroom import Strongroom, StrongroomError
from strongroom.config import Limits
from tests.components.postgres import PostgresServer
from tests.conftest import MASTER_KEY, make_settings
from tests.integration.test_cli import STRONGROOM

CANARY = "CANARY-7f3e9b2a-do-not-leak"
CANARY_OBJECT = {"private_key": CANARY + "-in-object", "n": 1}


def _exercise(room: Strongroom) -> None:
    room.set("ns", "app", {"password": CANARY, "sa": CANARY_OBJECT}, description="payments")
    room.set("ns", "app", {"password": CANARY + "-v2"})
    room.get("ns", "app")
    room.get("ns", "app", "password", version=1)
    room.verify("ns", "app", "password", CANARY + "-wrong")
    room.list()


def _assert_clean(blob: bytes, where: str) -> None:
    for needle in (CANARY, CANARY + "-in-object"):
        assert needle.encode() not in blob, f"plaintext found in {where}"


def test_sqlite_files_hold_no_plaintext(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"sqlite:///{tmp_path / 'canary.db'}"
    with Strongroom.open(make_settings(url)) as room:
        _exercise(room)
        files = sorted(tmp_path.glob("canary.db*"))
        assert files
        for path in files:
            _assert_clean(path.read_bytes(), path.name)
        events = list(room.audit_events())
    _assert_clean(repr(events).encode(), "audit rows")
    _assert_clean(caplog.text.encode(), "logs")


def test_postgres_dump_holds_no_plaintext(
    postgres: PostgresServer, pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with Strongroom.open(make_settings(pg_url)) as room:
        _exercise(room)
    dump = postgres.dump(pg_url)
    assert b"secret_versions" in dump
    assert b"audit_events" in dump
    _assert_clean(dump, "pg_dump")
    _assert_clean(caplog.text.encode(), "logs")


def test_error_messages_never_carry_the_value(db_url: str) -> None:
    limits = Limits(max_value_bytes=64)
    messages: list[str] = []
    with Strongroom.open(make_settings(db_url, limits=limits)) as room:
        room.set("ns", "s", {"k": "short"})
        attempts = [
            lambda: room.set("ns", "s", {"k": CANARY * 10}),  # too large
            lambda: room.set("ns", "s", {"k": {CANARY: float("inf")}}),  # not finite
            lambda: room.set("ns", "s", {"k": {CANARY: object()}}),  # not JSON
            lambda: room.set("NS", "s", {"k": CANARY}),  # bad namespace
        ]
        for attempt in attempts:
            with pytest.raises(StrongroomError) as info:
                attempt()
            messages.append(str(info.value))
        events = list(room.audit_events())
    assert len(messages) == 4
    _assert_clean("\n".join(messages).encode(), "error messages")
    _assert_clean(repr(events).encode(), "audit rows of failures")


def test_cli_output_and_errors_carry_no_value_except_get(tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")},
        "STRONGROOM_DATABASE_URL": f"sqlite:///{tmp_path / 'c.db'}",
        "STRONGROOM_MASTER_KEY": MASTER_KEY.hex(),
        "STRONGROOM_MAX_VALUE_BYTES": "64",
    }
    outputs = []
    for args in (
        ["secret", "set", "ns/s", f"k={CANARY}"],
        ["secret", "set", "ns/s", f"k={CANARY * 5}"],
        ["secret", "set", "ns/s", f"k:={{{CANARY}"],
        ["secret", "set", "ns/s", f"bad key={CANARY}"],
        ["secret", "list"],
        ["secret", "list", "--json"],
        ["secret", "history", "ns/s"],
        ["audit", "tail", "--json"],
    ):
        result = subprocess.run(
            [STRONGROOM, *args], env=env, capture_output=True, text=True, check=False
        )
        outputs.append(result.stdout + result.stderr)
    _assert_clean("\n".join(outputs).encode(), "CLI output")
