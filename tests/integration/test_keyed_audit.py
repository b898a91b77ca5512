"""A database attacker without the KEK cannot rewrite the audit log so that it still verifies.

Each attack is done the way someone with SQL access but not the KEK would: on the store's
tables, through a connection of their own, recomputing whatever they can compute (plain
SHA-256 links, the link of an event they keep). Then both ``audit_verify()`` and
``strongroom audit verify`` must say no.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, delete, insert, select, text, update

from strongroom import AuditError, Strongroom
from strongroom.audit import GENESIS_HASH, KEY_ACTION, AuditEvent, chain_hash, seal_event
from strongroom.errors import IntegrityError
from strongroom.store.migrate import MIGRATIONS
from strongroom.store.schema import audit_events, audit_head
from tests.conftest import MASTER_KEY, make_settings
from tests.integration.test_cli import STRONGROOM

_EVENT_FIELDS = [f.name for f in dataclasses.fields(AuditEvent)]


def _read(conn: Connection) -> list[AuditEvent]:
    rows = conn.execute(select(audit_events).order_by(audit_events.c.seq)).all()
    return [AuditEvent(**{k: row._mapping[k] for k in _EVENT_FIELDS}) for row in rows]


def _rewrite(conn: Connection, events: list[AuditEvent], *, keep: int) -> None:
    """Replace the log with ``events``: the first ``keep`` as they were, the rest renumbered
    and relinked with plain SHA-256; the head points at the result (its MAC blanked: the
    schema's trigger refuses a head moved with its MAC unchanged, as old versions move it)."""
    forged = events[:keep]
    prev = forged[-1].hash if forged else GENESIS_HASH
    for seq, event in enumerate(events[keep:], start=keep + 1):
        placed = dataclasses.replace(event, seq=seq, prev_hash=prev)
        placed = dataclasses.replace(placed, hash=chain_hash(prev, placed))
        forged.append(placed)
        prev = placed.hash
    conn.execute(delete(audit_events))
    conn.execute(insert(audit_events), [dataclasses.asdict(e) for e in forged])
    conn.execute(update(audit_head).values(seq=len(forged), hash=prev, mac=""))


def _cli_verify(db_url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    env |= {"STRONGROOM_DATABASE_URL": db_url, "STRONGROOM_MASTER_KEY": MASTER_KEY.hex()}
    return subprocess.run(
        [STRONGROOM, "audit", "verify"], env=env, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip


def _history(room: Strongroom) -> None:
    room.set("ns", "db", {"password": "p1"})
    for _ in range(3):
        room.get("ns", "db")
    room.set("ns", "db", {"password": "p2"})
    room.get("ns", "db", "password")


# --- the attacks ---------------------------------------------------------------------------


def _truncate(conn: Connection, mac: Callable[[AuditEvent], str]) -> None:
    """Delete the last 3 events; the head gets the kept last event's number and link."""
    kept = _read(conn)[:-3]
    conn.execute(delete(audit_events).where(audit_events.c.seq > kept[-1].seq))
    conn.execute(
        update(audit_head).values(seq=kept[-1].seq, hash=kept[-1].hash, mac=mac(kept[-1]))
    )


def truncate_and_rewrite_head(conn: Connection) -> None:
    _truncate(conn, lambda last: "")


def truncate_and_copy_a_mac_into_the_head(conn: Connection) -> None:
    """The MAC-looking value the attacker can read for that event: its link."""
    _truncate(conn, lambda last: last.hash)


def truncate_with_the_trigger_dropped(conn: Connection) -> None:
    """The guard against old writers is no guard against an attacker: the head MAC is."""
    conn.execute(text(
        "DROP TRIGGER audit_head_keyed" + (" ON audit_head" if conn.dialect.name != "sqlite"
                                           else "")
    ))  # fmt: skip
    kept = _read(conn)[:-3]
    conn.execute(delete(audit_events).where(audit_events.c.seq > kept[-1].seq))
    conn.execute(update(audit_head).values(seq=kept[-1].seq, hash=kept[-1].hash))


def drop_one_get_and_relink(conn: Connection) -> None:
    """Drop the first `secret.get` and renumber and relink everything after it with SHA-256."""
    events = _read(conn)
    dropped = next(i for i, e in enumerate(events) if e.action == "secret.get")
    _rewrite(conn, events[:dropped] + events[dropped + 1 :], keep=dropped)


def empty_and_reset_the_head(conn: Connection) -> None:
    conn.execute(delete(audit_events))
    conn.execute(update(audit_head).values(seq=0, hash=GENESIS_HASH, mac=""))


def empty_reset_and_delete_the_audit_key(conn: Connection) -> None:
    empty_and_reset_the_head(conn)
    conn.execute(text("DELETE FROM audit_keys"))


def delete_the_head_row(conn: Connection) -> None:
    conn.execute(delete(audit_head))


def delete_the_audit_key(conn: Connection) -> None:
    conn.execute(text("DELETE FROM audit_keys"))


def reorder_two_events(conn: Connection) -> None:
    """Swap the two `secret.get` events that follow the first set, relinking with SHA-256."""
    events = _read(conn)
    i = next(i for i, e in enumerate(events) if e.action == "secret.get")
    events[i], events[i + 1] = events[i + 1], events[i]
    _rewrite(conn, events, keep=i)


def reorder_two_events_keeping_their_links(conn: Connection) -> None:
    """Swap the content of two events, each keeping the seq and links of its new place."""
    events = _read(conn)
    i = next(i for i, e in enumerate(events) if e.action == "secret.set")
    a, b = events[i], events[i + 1]
    conn.execute(delete(audit_events).where(audit_events.c.seq.in_([a.seq, b.seq])))
    swapped = [
        dataclasses.replace(b, seq=a.seq, prev_hash=a.prev_hash, hash=a.hash),
        dataclasses.replace(a, seq=b.seq, prev_hash=b.prev_hash, hash=b.hash),
    ]
    conn.execute(insert(audit_events), [dataclasses.asdict(e) for e in swapped])


ATTACKS: list[tuple[Callable[[Connection], None], str]] = [
    (truncate_and_rewrite_head, "the chain head does not authenticate"),
    (truncate_and_copy_a_mac_into_the_head, "the chain head does not authenticate"),
    (truncate_with_the_trigger_dropped, "the chain head does not authenticate"),
    (drop_one_get_and_relink, "content does not match its MAC"),
    (empty_and_reset_the_head, "events were deleted"),
    (empty_reset_and_delete_the_audit_key, "the log is empty but the store holds data keys"),
    (delete_the_audit_key, "content does not match its hash"),
    (delete_the_head_row, "the chain head row is missing"),
    (reorder_two_events, "content does not match its MAC"),
    (reorder_two_events_keeping_their_links, "content does not match its MAC"),
]


@pytest.mark.parametrize(
    ("attack", "reason"), [pytest.param(a, r, id=a.__name__) for a, r in ATTACKS]
)
def test_a_rewritten_audit_log_does_not_verify(
    db_url: str, attacker: Engine, attack: Callable[[Connection], None], reason: str
) -> None:
    with Strongroom.open(make_settings(db_url)) as room:
        _history(room)
        assert room.audit_verify().ok
        with attacker.begin() as conn:
            attack(conn)
        report = room.audit_verify()
        assert not report.ok, report
        assert reason in report.reason
    with Strongroom.open(make_settings(db_url)) as fresh:  # nothing held over in memory
        assert fresh.audit_verify() == report
    result = _cli_verify(db_url)
    assert result.returncode == 1, result.stdout
    assert result.stderr.startswith("strongroom: audit chain broken at event ")
    assert reason in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_an_untouched_log_verifies_from_the_cli(db_url: str) -> None:
    with Strongroom.open(make_settings(db_url)) as room:
        _history(room)
    result = _cli_verify(db_url)
    assert result.returncode == 0, result.stderr
    assert "audit chain intact: 9 events, keyed from event 1" in result.stdout


def test_kek_rotation_keeps_the_audit_key_and_the_chain(db_url: str) -> None:
    from strongroom.rotation import rekey

    with Strongroom.open(make_settings(db_url)) as room:
        _history(room)
        rekey(room, batch=2)
        assert room.audit_verify().ok
        with room.engine.connect() as conn:
            keys = conn.execute(text("SELECT id, first_seq FROM audit_keys")).all()
    assert len(keys) == 1 and keys[0][1] == 1
    with Strongroom.open(make_settings(db_url)) as fresh:
        assert fresh.audit_verify().ok


# --- an unkeyed chain from before the audit key ---------------------------------------------


def _row(event: AuditEvent) -> dict[str, object]:
    """An event as a row of schema 0001, which has no ``origin`` column (added by 0005)."""
    row = dataclasses.asdict(event)
    del row["origin"]
    return row


def _legacy_store(engine: Engine, n: int) -> list[AuditEvent]:
    """A store at schema 0001 whose log holds ``n`` events in the old unkeyed format."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    command.upgrade(cfg, "0001")
    events: list[AuditEvent] = []
    prev = GENESIS_HASH
    for i in range(n):
        event = AuditEvent(
            time=datetime(2026, 1, 1, 12, 0, i, tzinfo=UTC),
            actor="old@host", action="secret.get", outcome="ok", namespace="ns", name=f"s{i}",
        )  # fmt: skip
        placed = seal_event(event, seq=i + 1, prev_hash=prev, key=None)
        events.append(placed)
        prev = placed.hash
    with engine.begin() as conn:
        conn.execute(insert(audit_events), [_row(e) for e in events])  # 0001: no origin
        conn.execute(text("UPDATE audit_head SET seq = :s, hash = :h"), {"s": n, "h": prev})
    return events


def test_an_unkeyed_chain_upgrades_keeps_verifying_and_the_first_keyed_event_links_to_it(
    db_url: str, attacker: Engine
) -> None:
    old = _legacy_store(attacker, 3)
    with Strongroom.open(make_settings(db_url)) as room:  # migrates to the keyed schema
        report = room.audit_verify()
        assert (report.ok, report.count, report.keyed_from) == (True, 3, None)
        room.set("ns", "s", {"k": "v"})
        events = list(room.audit_events())
        report = room.audit_verify()
    first_keyed = events[3]
    assert (first_keyed.seq, first_keyed.action) == (4, KEY_ACTION)
    assert first_keyed.prev_hash == old[-1].hash
    assert [e.hash for e in events[:3]] == [e.hash for e in old]  # left as they were
    assert (report.ok, report.count, report.keyed_from) == (True, 7, 4)  # key, data key, manifests, set
    result = _cli_verify(db_url)
    assert result.returncode == 0, result.stderr
    assert "keyed from event 4" in result.stdout

    # Cutting the log back to its unkeyed part, head and all, is no longer possible...
    with attacker.begin() as conn:
        conn.execute(delete(audit_events).where(audit_events.c.seq > 3))
        conn.execute(update(audit_head).values(seq=3, hash=old[-1].hash, mac=""))
    assert _cli_verify(db_url).returncode == 1


def test_the_unkeyed_part_cannot_be_rewritten_once_a_keyed_event_follows_it(
    db_url: str, attacker: Engine
) -> None:
    _legacy_store(attacker, 3)
    with Strongroom.open(make_settings(db_url)) as room:
        room.set("ns", "s", {"k": "v"})
    with attacker.begin() as conn:
        events = _read(conn)
        events[1] = dataclasses.replace(events[1], actor="someone-else")
        # Relink the old part with SHA-256 as its format allows, and carry the new old head
        # into the first keyed event's prev_hash: that event's MAC covers the old value.
        prev = GENESIS_HASH
        for i in range(3):
            events[i] = dataclasses.replace(events[i], prev_hash=prev)
            events[i] = dataclasses.replace(events[i], hash=chain_hash(prev, events[i]))
            prev = events[i].hash
        events[3] = dataclasses.replace(events[3], prev_hash=prev)
        conn.execute(delete(audit_events))
        conn.execute(insert(audit_events), [dataclasses.asdict(e) for e in events])
    with Strongroom.open(make_settings(db_url)) as room:
        report = room.audit_verify()
    assert (report.ok, report.first_bad_seq) == (False, 4)


def test_processes_starting_together_create_one_audit_key(db_url: str) -> None:
    """Each Strongroom has its own engine and key cache, as separate processes would."""
    import threading

    rooms = [Strongroom.open(make_settings(db_url)) for _ in range(4)]
    barrier = threading.Barrier(len(rooms))
    errors: list[BaseException] = []

    def first_write(i: int) -> None:
        barrier.wait()
        try:
            rooms[i].set("ns", f"s{i}", {"k": str(i)})
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=first_write, args=(i,)) for i in range(len(rooms))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    try:
        assert errors == []
        assert len({room.audit_key.current().id for room in rooms}) == 1
        with rooms[0].engine.connect() as conn:
            assert conn.execute(text("SELECT COUNT(*) FROM audit_keys")).scalar_one() == 1
        report = rooms[0].audit_verify()
        assert (report.ok, report.keyed_from) == (True, 1)
    finally:
        for room in rooms:
            room.close()


def test_a_writer_from_before_the_keyed_chain_is_refused(db_url: str, attacker: Engine) -> None:
    """What a Strongroom older than schema 0002 does on append: an unkeyed event, and the head
    moved without its MAC. Refused by the database, so the keyed chain is never mixed."""
    from sqlalchemy.exc import DBAPIError

    with Strongroom.open(make_settings(db_url)) as room:
        room.set("ns", "s", {"k": "v"})
        with attacker.begin() as conn:
            head = conn.execute(select(audit_head.c.seq, audit_head.c.hash)).one()
            event = seal_event(
                AuditEvent(datetime.now(UTC), "old@host", "secret.get", "ok", "ns", "s"),
                seq=head.seq + 1, prev_hash=head.hash, key=None,
            )  # fmt: skip
            conn.execute(insert(audit_events), [dataclasses.asdict(event)])
            old_append = update(audit_head).values(seq=event.seq, hash=event.hash)
            with pytest.raises(DBAPIError, match="older than schema 0002"):
                conn.execute(old_append)
            conn.rollback()
        assert room.audit_verify().ok
        room.get("ns", "s")
        assert room.audit_verify().ok


def test_a_deleted_head_row_stops_every_write_with_a_clear_error(
    db_url: str, attacker: Engine
) -> None:
    """Before: "not done: ... (database error: NoResultFound)" (earlier still, "internal error
    (NoResultFound)"): the reason was the driver's, not the store's."""
    with Strongroom.open(make_settings(db_url)) as room:
        room.set("ns", "s", {"k": "v"})
        with attacker.begin() as conn:
            delete_the_head_row(conn)
        for call in (lambda: room.set("ns", "s", {"k": "w"}), lambda: room.get("ns", "s")):
            with pytest.raises(AuditError, match="the audit chain's head row is missing") as info:
                call()
            assert "NoResultFound" not in str(info.value)
        assert room.audit_verify().reason == "the chain head row is missing"


@pytest.mark.parametrize(
    "attack",
    [pytest.param(a, id=a.__name__) for a in (truncate_and_rewrite_head,
                                               truncate_and_copy_a_mac_into_the_head,
                                               truncate_with_the_trigger_dropped)],
)  # fmt: skip
def test_the_next_write_does_not_bless_a_rewritten_head(
    db_url: str, attacker: Engine, attack: Callable[[Connection], None]
) -> None:
    """Before: the next append wrote a fresh head MAC over the cut-back chain, and `audit
    verify` passed again. Now a write refuses a head that does not authenticate."""
    with Strongroom.open(make_settings(db_url)) as room:
        _history(room)
        with attacker.begin() as conn:
            attack(conn)
    with Strongroom.open(make_settings(db_url)) as fresh:
        with pytest.raises(IntegrityError, match="head"):
            fresh.set("ns", "other", {"k": "v"})
        assert not fresh.audit_verify().ok
