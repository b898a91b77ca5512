"""Tampering with the database is detected: moved ciphertext, flipped bits, edited audit rows."""

from __future__ import annotations

import pytest
from sqlalchemy import Connection, text

from strongroom import IntegrityError, Strongroom, UnwrapError
from tests.conftest import make_settings


def drop_old_writer_guard(conn: Connection) -> None:
    """What an attacker does first: drop the trigger that refuses versions moved without their
    manifest (schema 0003). It guards against a Strongroom older than the schema, not them."""
    on = " ON secrets" if conn.dialect.name == "postgresql" else ""
    conn.execute(text(f"DROP TRIGGER IF EXISTS secrets_manifested{on}"))


def _exec(room: Strongroom, sql: str, **params: object) -> None:
    with room.engine.begin() as conn:
        drop_old_writer_guard(conn)
        conn.execute(text(sql), params)


def test_a_version_row_copied_onto_another_secret_does_not_decrypt(room: Strongroom) -> None:
    room.set("tenant-a", "api", {"token": "tenant-a-token"})
    room.set("tenant-b", "api", {"token": "tenant-b-token"})
    # Mallory copies tenant A's ciphertext over tenant B's row, keeping B's identity.
    _exec(
        room,
        """
        UPDATE secret_versions SET salt = src.salt, nonce = src.nonce, ciphertext = src.ciphertext
        FROM (SELECT v.salt, v.nonce, v.ciphertext FROM secret_versions v
              JOIN secrets s ON s.id = v.secret_id WHERE s.namespace = 'tenant-a') AS src
        WHERE secret_versions.secret_id = (SELECT id FROM secrets WHERE namespace = 'tenant-b')
        """,
    )
    with pytest.raises(IntegrityError) as info:
        room.get("tenant-b", "api")
    assert "tenant-a-token" not in str(info.value)
    assert room.get("tenant-a", "api", "token").data["token"] == "tenant-a-token"


def test_a_version_moved_to_another_version_number_does_not_decrypt(room: Strongroom) -> None:
    room.set("ns", "s", {"k": "old"})
    room.set("ns", "s", {"k": "new"})
    # Roll back by relabelling version 1 as the current one.
    _exec(room, "UPDATE secret_versions SET version = 3 WHERE version = 1")
    _exec(room, "UPDATE secrets SET current_version = 3")
    with pytest.raises(IntegrityError):
        room.get("ns", "s")


def test_a_flipped_ciphertext_bit_is_an_integrity_error(room: Strongroom) -> None:
    room.set("ns", "s", {"k": "value"})
    with room.engine.begin() as conn:
        blob = bytearray(conn.execute(text("SELECT ciphertext FROM secret_versions")).scalar_one())
        blob[3] ^= 0x80
        conn.execute(text("UPDATE secret_versions SET ciphertext = :c"), {"c": bytes(blob)})
    with pytest.raises(IntegrityError):
        room.get("ns", "s")
    events = list(room.audit_events())
    assert (events[-1].action, events[-1].outcome) == ("secret.get", "error")


def test_a_tampered_wrapped_seed_is_refused(db_url: str) -> None:
    with Strongroom.open(make_settings(db_url)) as room:
        room.set("ns", "s", {"k": "value"})
        with room.engine.begin() as conn:
            seed = bytearray(conn.execute(text("SELECT wrapped_seed FROM data_keys")).scalar_one())
            seed[-1] ^= 1
            conn.execute(text("UPDATE data_keys SET wrapped_seed = :s"), {"s": bytes(seed)})
    with (
        Strongroom.open(make_settings(db_url)) as fresh,
        pytest.raises(UnwrapError, match="altered"),
    ):
        fresh.get("ns", "s")


def _three_events(room: Strongroom) -> None:
    room.set("ns", "s", {"k": "v"})
    room.get("ns", "s")
    room.get("ns", "s", "k")


@pytest.mark.parametrize(
    ("sql", "bad_seq"),
    [
        pytest.param(
            "UPDATE audit_events SET actor = 'someone-else' WHERE seq = 3", 3, id="edited-actor"
        ),
        pytest.param(
            "UPDATE audit_events SET outcome = 'denied' WHERE seq = 2", 2, id="edited-outcome"
        ),
        pytest.param("DELETE FROM audit_events WHERE seq = 2", 2, id="deleted-middle"),
        pytest.param("DELETE FROM audit_events WHERE seq = 6", 6, id="deleted-last"),
    ],
)
def test_an_edited_or_deleted_audit_row_is_found(room: Strongroom, sql: str, bad_seq: int) -> None:
    _three_events(room)
    assert room.audit_verify().ok
    _exec(room, sql)
    report = room.audit_verify()
    assert not report.ok
    assert report.first_bad_seq == bad_seq
