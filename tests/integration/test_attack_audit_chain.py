"""Attacks on the keyed audit chain and the audit checkpoint by a database administrator.

The attacker has SQL on the store (the ``attacker`` engine) and no KEK. Each test asserts what
docs/security.md promises; each passed on the code before its guard (found by a review).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, delete, insert, select, update

from strongroom import Strongroom
from strongroom.audit import GENESIS_HASH, SECRET_WRITES, AuditEvent, chain_hash
from strongroom.errors import IntegrityError
from strongroom.store import schema
from tests.conftest import make_settings

audit_events, audit_head, audit_keys = schema.audit_events, schema.audit_head, schema.audit_keys
secrets, secret_versions = schema.secrets, schema.secret_versions
_TABLES = (audit_keys, schema.data_keys, secrets, secret_versions, audit_events, audit_head)


@pytest.fixture
def store(db_url: str) -> Iterator[Strongroom]:
    with Strongroom.open(make_settings(db_url)) as opened:
        yield opened


def _reopen(db_url: str) -> Strongroom:
    """A fresh process's view (nothing cached): the CLI, or an operator starting."""
    return Strongroom.open(make_settings(db_url))


def _snapshot(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    """What a backup holds: every row of the store's tables (a pg_dump, a copy of the file)."""
    with engine.connect() as conn:
        return {t.name: [dict(r._mapping) for r in conn.execute(select(t))] for t in _TABLES}


def _restore(engine: Engine, backup: dict[str, list[dict[str, Any]]]) -> None:
    with engine.begin() as conn:
        for table in reversed(_TABLES):
            conn.execute(delete(table))
        for table in _TABLES:
            if backup[table.name]:
                conn.execute(insert(table), backup[table.name])


def _rolled_back_unkeyed(engine: Engine, backup: dict[str, list[dict[str, Any]]],
                         namespace: str, name: str) -> None:  # fmt: skip
    """Put one secret's rows back from ``backup``; drop its later writes from the log; forge the
    whole log as a chain of unkeyed SHA-256 links (no key needed) and delete the audit key."""
    (old,) = [r for r in backup["secrets"] if (r["namespace"], r["name"]) == (namespace, name)]
    old_rows = [r for r in backup["secret_versions"] if r["secret_id"] == old["id"]]
    with engine.begin() as conn:
        conn.execute(delete(secret_versions).where(secret_versions.c.secret_id == old["id"]))
        conn.execute(update(secrets).where(secrets.c.id == old["id"]).values(**old))
        conn.execute(insert(secret_versions), old_rows)
        events = [dict(r._mapping) for r in conn.execute(
            select(audit_events).order_by(audit_events.c.seq))]  # fmt: skip
        kept = [e for e in events if not (
            (e["namespace"], e["name"]) == (namespace, name)
            and e["action"] in SECRET_WRITES and e["seq"] > old["manifest_counter"]
        )]  # fmt: skip
        conn.execute(delete(audit_events))
        conn.execute(delete(audit_keys))
        prev = GENESIS_HASH
        for seq, row in enumerate(kept, 1):
            fields = {k: row[k] for k in ("time", "actor", "action", "outcome", "namespace",
                                          "name", "key", "version", "detail")}  # fmt: skip
            event = AuditEvent(**fields, seq=seq, prev_hash=prev)
            link = chain_hash(prev, event)
            conn.execute(insert(audit_events).values(**fields, seq=seq, prev_hash=prev, hash=link))
            prev = link
        conn.execute(update(audit_head).values(seq=len(kept), hash=prev, mac=""))


def test_attack_a_forged_unkeyed_chain_hides_a_rolled_back_secret(
    store: Strongroom, attacker: Engine, db_url: str
) -> None:
    """DBA deletes the audit key, re-forges the log as unkeyed SHA-256 minus one secret's later writes and puts its old rows back: `get` serves the old value and `audit verify` passes, keyed, after the next operation."""
    store.set("pay", "db", {"pw": "old-password"})
    backup = _snapshot(attacker)
    store.set("pay", "db", {"pw": "rotated-password"})
    store.close()

    _rolled_back_unkeyed(attacker, backup, "pay", "db")

    with _reopen(db_url) as room:
        try:
            served = room.get("pay", "db", "pw").data["pw"]
        except IntegrityError:
            served = None
        report = room.audit_verify()
    # security.md: a rollback fails at the secret's next read, or breaks the chain; deleting
    # the audit key row is reported by `audit verify`.
    assert served != "old-password" or not report.ok, (
        f"the rolled-back value was served and audit verify passed: {report}"
    )


def _restored_with_copied_head(engine: Engine, backup: dict[str, list[dict[str, Any]]]) -> None:
    """Restore ``backup``, then copy the live log's later events (their secret writes renamed,
    so that no restored manifest looks stale) and the live head row over it."""
    with engine.connect() as conn:
        head = dict(conn.execute(select(audit_head)).one()._mapping)
        backup_seq = backup["audit_head"][0]["seq"]
        later = [dict(r._mapping) for r in conn.execute(
            select(audit_events).where(audit_events.c.seq > backup_seq))]  # fmt: skip
    _restore(engine, backup)
    for event in later:
        if event["action"] in SECRET_WRITES:
            event["action"] = "secret.get"
    with engine.begin() as conn:
        conn.execute(insert(audit_events), later)
        conn.execute(update(audit_head).values(**head))


def test_attack_d_a_restored_backup_passes_the_operators_checkpoint_check(
    store: Strongroom, attacker: Engine, db_url: str
) -> None:
    """DBA restores an older backup, copies the live head row and later event rows (writes renamed) over it: the check the operator runs at start and every interval says the published checkpoint is reached, and the old value is served."""
    store.set("pay", "db", {"pw": "old-password"})
    backup = _snapshot(attacker)
    store.set("pay", "db", {"pw": "rotated-password"})
    store.get("pay", "db")
    checkpoint = store.audit_checkpoint()  # what the operator publishes to its ConfigMap
    assert checkpoint is not None
    store.close()

    _restored_with_copied_head(attacker, backup)

    with _reopen(db_url) as room:
        assert room.get("pay", "db", "pw").data["pw"] == "old-password"  # the rollback
        assert not room.audit_verify().ok  # a full walk of the chain does see it
        # security.md: with the checkpoint, an older copy of the database is refused by the
        # operator ("no reconcile ... until an administrator accepts the store's head").
        problem = room.audit_check_checkpoint(checkpoint)  # the operator's check
    assert problem is not None, "the operator would reconcile the restored backup's values"
