"""Several processes (operator replicas, the CLI) writing at once keep one valid audit chain."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from typing import Any

from strongroom import Strongroom
from tests.conftest import MASTER_KEY, make_settings

WORKER = """
import sys
from strongroom import Strongroom, Settings
room = Strongroom.open(Settings.from_env())
worker, rounds = sys.argv[1], int(sys.argv[2])
for i in range(rounds):
    room.set("ns", f"w{worker}", {"n": i})
    room.set("ns", "shared", {f"w{worker}": i})
    room.get("ns", "shared")
room.close()
"""

WORKERS = 4
ROUNDS = 15


def test_concurrent_writers_keep_the_chain_valid(db_url: str) -> None:
    with Strongroom.open(make_settings(db_url)) as room:  # migrate once, as `db upgrade` would
        room.set("ns", "shared", {"seed": 0})
    env = {
        **os.environ,
        "STRONGROOM_DATABASE_URL": db_url,
        "STRONGROOM_MASTER_KEY": MASTER_KEY.hex(),
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(w), str(ROUNDS)], env=env, stderr=subprocess.PIPE
        )
        for w in range(WORKERS)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err.decode()
    with Strongroom.open(make_settings(db_url)) as room:
        report = room.audit_verify()
        assert report.ok, report
        ops = [e for e in room.audit_events() if e.action.startswith("secret.")]
        assert len(ops) == 1 + WORKERS * ROUNDS * 3
        assert all(e.outcome == "ok" for e in ops)
        shared = room.get("ns", "shared")
        assert shared.version == 1 + WORKERS * ROUNDS
        assert dict(shared.data) == {"seed": 0, **{f"w{w}": ROUNDS - 1 for w in range(WORKERS)}}


def generate_absent(
    other: Strongroom, set_meanwhile: dict[str, str], calls: list[dict[str, str]]
) -> Callable[[Mapping[str, Any]], dict[str, str]]:
    """A ManagedSecret's ``produce``: generate ``pw`` when absent. The first time it is asked,
    another writer (a CLI, another replica) commits a value for ``pw`` in the meantime."""

    def produce(current: Mapping[str, Any]) -> dict[str, str]:
        calls.append(dict(current))
        if len(calls) == 1:
            other.set("ns", "app", set_meanwhile)  # commits while the resolve is in flight
        return {} if "pw" in current else {"pw": "generated"}

    return produce


def test_a_value_set_during_resolve_is_not_overwritten_by_a_generated_one(pg_url: str) -> None:
    """PostgreSQL only: on SQLite the resolve holds the write lock and the other writer waits."""
    with Strongroom.open(make_settings(pg_url)) as room, \
            Strongroom.open(make_settings(pg_url)) as other:  # fmt: skip
        # The secret does not exist yet: the other writer creates it.
        calls: list[dict[str, str]] = []
        found = room.resolve("ns", "app", generate_absent(other, {"pw": "from-cli"}, calls))
        assert found is not None and found.data == {"pw": "from-cli"}
        assert calls == [{}, {"pw": "from-cli"}]  # asked again, under the row lock
        assert room.get("ns", "app").version == 1
        # It exists: the other writer adds a version between the read and the write.
        room.set("ns", "app", {"user": "u"}, replace=True)
        calls = []
        found = room.resolve("ns", "app", generate_absent(other, {"pw": "second"}, calls))
        assert found is not None and found.data == {"user": "u", "pw": "second"}
        assert room.get("ns", "app").version == 3
        assert room.audit_verify().ok


def test_readers_beside_writers_of_one_secret_never_see_a_false_integrity_failure(
    pg_url: str,
) -> None:
    """PostgreSQL only: a read compares the manifest with the secret's newest write in the
    audit chain. Read in two statements, a writer could commit between them (under SQLite's
    write lock none can): ``get`` reads both in one statement, and a read that needs more
    (here a version that does not exist) is checked again holding the row lock when it fails.
    Without either, about one read in ten failed here."""
    import contextlib
    import threading

    from strongroom import IntegrityError, NotFound

    rooms = [Strongroom.open(make_settings(pg_url)) for _ in range(4)]
    rooms[0].set("ns", "s", {"k": "0"})
    failures: list[IntegrityError] = []

    def write(room: Strongroom) -> None:
        for i in range(40):
            room.set("ns", "s", {"k": str(i)})

    def read(room: Strongroom) -> None:
        for _ in range(80):
            try:
                room.get("ns", "s")
                room.verify("ns", "s", "k", "guess")
                with contextlib.suppress(NotFound):
                    room.get("ns", "s", version=1000)
            except IntegrityError as exc:
                failures.append(exc)

    threads = [threading.Thread(target=write, args=(rooms[i],)) for i in (0, 1)]
    threads += [threading.Thread(target=read, args=(rooms[i],)) for i in (2, 3)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert failures == []
        assert rooms[0].get("ns", "s").version == 81
    finally:
        for room in rooms:
            room.close()
