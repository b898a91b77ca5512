"""Group commit (the operator's mode on SQLite): threads share transactions, lose nothing."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Connection

from strongroom import Strongroom
from strongroom.audit import AuditEvent, Outcome
from strongroom.errors import AlreadyExists, NotFound
from strongroom.store import repository as repo
from tests.conftest import make_settings

THREADS = 12
ROUNDS = 20


def hammer(room: Strongroom, worker: int, errors: list[BaseException]) -> None:
    try:
        for i in range(ROUNDS):
            room.set("ns", f"w{worker}", {"n": i})
            assert room.get("ns", f"w{worker}").data == {"n": i}
            room.set("ns", "shared", {f"w{worker}": i})
    except BaseException as exc:  # noqa: BLE001 - reported by the test thread
        errors.append(exc)


def test_concurrent_calls_share_transactions_and_keep_every_version(tmp_path: Path) -> None:
    with Strongroom.open(make_settings(f"sqlite:///{tmp_path / 'store.db'}")) as room:
        assert room.group_commit()
        errors: list[BaseException] = []
        threads = [threading.Thread(target=hammer, args=(room, w, errors)) for w in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not errors, errors
        batcher = room._batcher
        assert batcher is not None
        assert batcher.units == THREADS * ROUNDS * 3
        assert batcher.batches < batcher.units  # transactions were shared
        shared = room.get("ns", "shared")
        assert shared.version == THREADS * ROUNDS
        assert shared.data == {f"w{w}": ROUNDS - 1 for w in range(THREADS)}
        for worker in range(THREADS):
            assert room.get("ns", f"w{worker}").version == ROUNDS
        report = room.audit_verify()
        assert report.ok, report
        sets = [e for e in room.audit_events() if e.action == "secret.set"]
        assert len(sets) == THREADS * ROUNDS * 2


def test_a_failing_call_is_rolled_back_alone_and_audited(tmp_path: Path) -> None:
    with Strongroom.open(make_settings(f"sqlite:///{tmp_path / 'store.db'}")) as room:
        room.group_commit()
        room.set("ns", "taken", {"k": "v"})
        results: dict[str, object] = {}

        def create_again() -> None:
            try:
                room.set("ns", "taken", {"k": "other"}, if_absent=True)
            except AlreadyExists as exc:
                results["again"] = exc

        def remove_missing() -> None:
            try:
                room.set("ns", "taken", {}, remove=["nope"])
            except NotFound as exc:
                results["missing"] = exc

        def good(i: int) -> None:
            results[f"good{i}"] = room.set("ns", f"fresh{i}", {"k": i})

        threads = [threading.Thread(target=create_again), threading.Thread(target=remove_missing)]
        threads += [threading.Thread(target=good, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert isinstance(results["again"], AlreadyExists)
        assert isinstance(results["missing"], NotFound)
        assert all(results[f"good{i}"] == 1 for i in range(8))
        assert room.get("ns", "taken").data == {"k": "v"}
        assert room.get("ns", "taken").version == 1
        outcomes = [(e.name, e.outcome) for e in room.audit_events() if e.action == "secret.set"]
        # Both refusals are in the audit log, in their own (shared) transactions.
        assert sum(1 for name, outcome in outcomes if name == "taken" and outcome != "ok") == 2
        assert sum(1 for name, outcome in outcomes if name.startswith("fresh")) == 8
        assert room.audit_verify().ok


def test_group_commit_stays_off_on_postgresql(pg_url: str) -> None:
    with Strongroom.open(make_settings(pg_url)) as room:
        assert room.group_commit() is False
        room.set("ns", "x", {"k": "v"})
        assert room.get("ns", "x").data == {"k": "v"}


def test_closing_releases_the_writer(tmp_path: Path) -> None:
    room = Strongroom.open(make_settings(f"sqlite:///{tmp_path / 'store.db'}"))
    room.group_commit()
    room.set("ns", "x", {"k": "v"})
    room.close()
    names = [t.name for t in threading.enumerate()]
    assert "strongroom-store-writer" not in names


def test_calls_one_after_another_each_commit_at_once(tmp_path: Path) -> None:
    """The writer never waits for company: a lone call is its own transaction."""
    with Strongroom.open(make_settings(f"sqlite:///{tmp_path / 'store.db'}")) as room:
        room.group_commit()
        for i in range(5):
            assert room.set("ns", "solo", {"i": i}) == i + 1
        batcher = room._batcher
        assert batcher is not None and batcher.batches == batcher.units == 5


def test_a_unit_that_fails_after_writing_is_undone_alone(tmp_path: Path) -> None:
    """Its audit row and its move of the chain's head go; the units beside it in the same
    transaction stay, and the chain runs on from the head as it was before the failed unit."""
    with Strongroom.open(make_settings(f"sqlite:///{tmp_path / 'store.db'}")) as room:
        room.group_commit()
        batcher = room._batcher
        assert batcher is not None
        failures: list[BaseException] = []
        running, release = threading.Event(), threading.Event()
        key = room.audit_key.current()

        def hold(conn: Connection) -> None:
            running.set()
            release.wait(30)

        def kept(conn: Connection) -> None:
            event = AuditEvent(datetime.now(UTC), "test", "test.kept", Outcome.OK)
            repo.append_audit(conn, event, key=key)

        def half_done(conn: Connection) -> None:
            event = AuditEvent(datetime.now(UTC), "test", "test.half", Outcome.OK, detail="undone")
            repo.append_audit(conn, event, key=key)
            raise RuntimeError("fails after its write")

        def failing() -> None:
            try:
                batcher.run(half_done)
            except RuntimeError as exc:
                failures.append(exc)

        # The writer is held by a first unit while the others queue up behind it in a known
        # order (failed, kept, failed, kept, ...), so they all run in the next transaction.
        holder = threading.Thread(target=batcher.run, args=(hold,))
        holder.start()
        assert running.wait(30)
        threads = []
        for i in range(8):
            if i % 2 == 0:
                thread = threading.Thread(target=failing)
            else:
                thread = threading.Thread(target=batcher.run, args=(kept,))
            thread.start()
            threads.append(thread)
            deadline = time.monotonic() + 10
            while batcher._queue.qsize() < i + 1:
                assert time.monotonic() < deadline, "a unit did not queue"
                time.sleep(0.01)
        release.set()
        for thread in [holder, *threads]:
            thread.join(60)
        assert batcher.batches == 2  # the held unit, then all eight together
        assert len(failures) == 4
        actions = [e.action for e in room.audit_events()]
        assert "test.half" not in actions
        assert actions.count("test.kept") == 4
        assert room.audit_verify().ok
