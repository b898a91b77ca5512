"""Moving between KEKs and between data keys, without ever rewriting a value in place blindly.

``rotate_kek`` rewraps every data key seed and the audit key under a new KEK: one unwrap and
one wrap per key (a handful of KEK calls, not one per secret), one transaction per key,
idempotent and resumable. The target is admitted to this process's configured set of KEKs for
the purpose. Afterwards the old KEK can be disabled, and it need not stay in
STRONGROOM_KEK_PREVIOUS. The audit key keeps its seed, so the chain needs no re-MACing.

``rekey`` re-encrypts every stored value version under a fresh data key, in batches (one
transaction each), resumable after a kill: the fresh key is created and every other key retired
first, so a re-run simply continues with the versions still under retired keys. Each secret's
manifest (:mod:`strongroom.manifest`) is checked before its rows are touched and rewritten under
the fresh key in the same transaction; a secret whose manifest fails is reported and left as it
is. A version that
fails to decrypt is reported (which, and why) and left untouched; Lightpack's rotateKey
contract ``{"success": n, "fail": m}`` is the summary.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from sqlalchemy import Connection

from strongroom.api import Strongroom
from strongroom.audit import AuditEvent, Outcome
from strongroom.crypto import Identity, Sealed, open_sealed, seal
from strongroom.errors import IntegrityError, KeyringError, ValidationError
from strongroom.keyring import Keyring, WrappedSeed
from strongroom.store import repository as repo
from strongroom.store import transaction


@dataclasses.dataclass(frozen=True)
class RotateReport:
    rewrapped: int
    already: int
    target: str


@dataclasses.dataclass(frozen=True)
class RekeyFailure:
    namespace: str
    name: str
    key: str
    version: int
    reason: str


@dataclasses.dataclass(frozen=True)
class RekeyReport:
    success: int
    fail: int
    data_key_id: str
    failures: tuple[RekeyFailure, ...] = ()

    def summary(self) -> dict[str, object]:
        return {
            "success": self.success,
            "fail": self.fail,
            "failures": [dataclasses.asdict(f) for f in self.failures],
        }


def _event(
    room: Strongroom,
    action: str,
    outcome: str,
    *,
    key: str = "",
    detail: str = "",
    actor: str | None = None,
) -> AuditEvent:
    return AuditEvent(time=datetime.now(UTC), actor=actor or room.settings.actor, action=action,
                      outcome=outcome, key=key, detail=detail[:200])  # fmt: skip


def rotate_kek(room: Strongroom, target: Keyring, *, actor: str | None = None) -> RotateReport:
    """Rewrap every data key under ``target``; safe to run again after an interruption."""
    latest = getattr(target, "latest_version", None)
    latest_version = str(latest()) if callable(latest) else None
    room.keyrings.allow(target)
    chain = room.audit_key.current()
    with transaction(room.engine) as conn:
        rows = repo.all_data_keys(conn)
        audit_rows = repo.audit_key_rows(conn)
    rewrapped = already = 0
    for audit_row in audit_rows:
        on_target = audit_row.provider == target.provider and audit_row.kek_id == target.kek_id
        if on_target and (latest_version is None or audit_row.kek_version == latest_version):
            already += 1
            continue
        wrapped = room.audit_key.wrap_under(target, audit_row)
        with transaction(room.engine) as conn:
            changed = repo.rewrap_audit_key(
                conn, audit_row, provider=wrapped.provider, kek_id=wrapped.kek_id,
                kek_version=wrapped.kek_version, wrapped_seed=wrapped.ciphertext,
            )  # fmt: skip
            if changed:
                repo.append_audit(conn, _event(
                    room, "auditkey.rewrap", Outcome.OK, key=audit_row.id, actor=actor,
                    detail=_moved(audit_row.provider, audit_row.kek_id, audit_row.kek_version,
                                  wrapped),
                ), key=chain)  # fmt: skip
        if changed:
            rewrapped += 1
        else:
            already += 1
    for row in rows:
        on_target = row.provider == target.provider and row.kek_id == target.kek_id
        if on_target and (latest_version is None or row.kek_version == latest_version):
            already += 1
            continue
        seed = room.data_keys.seed(row.id, row)
        wrapped = target.wrap(seed=seed, context={"data_key_id": row.id})
        with transaction(room.engine) as conn:
            changed = repo.rewrap_data_key(
                conn, row, provider=wrapped.provider, kek_id=wrapped.kek_id,
                kek_version=wrapped.kek_version, wrapped_seed=wrapped.ciphertext,
            )  # fmt: skip
            if changed:
                repo.append_audit(conn, _event(
                    room, "datakey.rewrap", Outcome.OK, key=row.id, actor=actor,
                    detail=_moved(row.provider, row.kek_id, row.kek_version, wrapped),
                ), key=chain)  # fmt: skip
        if changed:
            rewrapped += 1
        else:
            already += 1
    return RotateReport(rewrapped, already, f"{target.provider}:{target.kek_id}")


def _rekey_secret(
    room: Strongroom,
    conn: Connection,
    items: list[repo.StaleVersion],
    *,
    new_key: tuple[str, bytes],
    failures: list[RekeyFailure],
    broken: set[int],
) -> int:
    """Re-encrypt one secret's stale rows and move its manifest to the new key; the count done.

    The secret's row is locked and every live row checked against the manifest first, so
    nothing is re-encrypted (or re-authenticated) on top of a tampered secret, and a row a
    writer destroyed or replaced since the batch was listed is left alone.
    """
    first = items[0]
    secret = repo.lock_secret_by_id(conn, first.row.secret_id)
    if secret is None:  # deleted meanwhile
        return 0
    try:
        manifest, rows = room.manifests.check_all(conn, secret)
    except (IntegrityError, KeyringError) as exc:
        broken.add(secret.id)
        failures.extend(
            RekeyFailure(item.namespace, item.name, item.row.key, item.row.version, str(exc))
            for item in items
        )
        return 0
    now = {row.id: row for row in rows}
    done = 0
    for item in items:
        row = now.get(item.row.id)
        if row is None or row.data_key_id != item.row.data_key_id:
            continue
        old = Identity(item.namespace, item.name, row.key, row.version, row.data_key_id)
        try:
            key_row = None if room.data_keys.is_cached(row.data_key_id) else (
                repo.get_data_key(conn, row.data_key_id)
            )  # fmt: skip
            old_seed = room.data_keys.seed(row.data_key_id, key_row)
            sealed_old = Sealed(row.salt or b"", row.nonce or b"", row.ciphertext or b"",
                                row.format)  # fmt: skip
            plain = open_sealed(old_seed, old, sealed_old)
        except (IntegrityError, KeyringError) as exc:
            failures.append(RekeyFailure(item.namespace, item.name, row.key, row.version,
                                         str(exc)))  # fmt: skip
            continue
        sealed = seal(new_key[1], dataclasses.replace(old, data_key_id=new_key[0]), plain)
        if repo.reencrypt_version(
            conn, row, data_key_id=new_key[0], salt=sealed.salt, nonce=sealed.nonce,
            ciphertext=sealed.ciphertext,
        ):  # fmt: skip
            done += 1
    renewed = room.manifests.rekeyed(secret, manifest, repo.live_rows(conn, secret.id), new_key)
    repo.write_manifest(conn, secret.id, renewed, replaces=secret.manifest_mac)
    return done


def _rekey_manifests(
    room: Strongroom,
    new_key: tuple[str, bytes],
    failures: list[RekeyFailure],
    broken: set[int],
    *,
    batch: int,
) -> None:
    """Manifests still under a retired data key whose secret had no stale row (e.g. one whose
    old versions were destroyed after the last rekey): checked, then moved to the new key."""
    after = 0
    while True:
        with transaction(room.engine) as conn:
            ids = repo.secrets_on_retired_manifest_keys(conn, after_id=after, limit=batch)
            for secret_id in ids:
                secret = repo.lock_secret_by_id(conn, secret_id)
                if secret is None or secret_id in broken:
                    continue
                try:
                    manifest, rows = room.manifests.check_all(conn, secret)
                except (IntegrityError, KeyringError) as exc:
                    failures.append(RekeyFailure(secret.namespace, secret.name, "",
                                                 secret.current_version, str(exc)))  # fmt: skip
                    continue
                renewed = room.manifests.rekeyed(secret, manifest, rows, new_key)
                repo.write_manifest(conn, secret.id, renewed, replaces=secret.manifest_mac)
        if not ids:
            return
        after = ids[-1]


def _moved(provider: str, kek_id: str, kek_version: str, wrapped: WrappedSeed) -> str:
    return (f"{provider} {kek_id} v{kek_version or '-'} -> "
            f"{wrapped.provider} {wrapped.kek_id} v{wrapped.kek_version or '-'}")  # fmt: skip


def rekey(room: Strongroom, *, batch: int = 100, actor: str | None = None) -> RekeyReport:
    """Re-encrypt every live version under a fresh data key, ``batch`` versions per commit."""
    if batch <= 0:
        raise ValidationError("--batch must be positive")
    chain = room.audit_key.current()
    room.manifests.ready()
    with transaction(room.engine) as conn:
        resuming = repo.count_stale_versions(conn) > 0 or bool(
            repo.secrets_on_retired_manifest_keys(conn, after_id=0, limit=1)
        )
    if resuming:
        new_id, seed = room.data_keys.for_write()
    else:
        new_id, seed = room.data_keys.start_new()
        with transaction(room.engine) as conn:
            retired = repo.retire_other_data_keys(conn, new_id)
            repo.append_audit(conn, _event(
                room, "rekey.start", Outcome.OK, key=new_id, actor=actor,
                detail=f"{retired} data keys retired",
            ), key=chain)  # fmt: skip
    success = 0
    failures: list[RekeyFailure] = []
    broken: set[int] = set()  # secrets whose manifest failed: reported once, left as they are
    after = 0
    while True:
        with transaction(room.engine) as conn:
            stale = repo.stale_versions(conn, after_id=after, limit=batch)
            if not stale:
                break
            by_secret: dict[int, list[repo.StaleVersion]] = {}
            for item in stale:
                by_secret.setdefault(item.row.secret_id, []).append(item)
            done = 0
            for items in by_secret.values():
                done += _rekey_secret(
                    room, conn, items, new_key=(new_id, seed), failures=failures, broken=broken
                )
            repo.append_audit(conn, _event(
                room, "rekey.batch", Outcome.OK if done == len(stale) else Outcome.ERROR,
                key=new_id, actor=actor,
                detail=f"{done} re-encrypted, {len(stale) - done} left untouched",
            ), key=chain)  # fmt: skip
            success += done
            after = stale[-1].row.id
    _rekey_manifests(room, (new_id, seed), failures, broken, batch=batch)
    return RekeyReport(success, len(failures), new_id, tuple(failures))
