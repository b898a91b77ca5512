"""Manifests: each secret says what it holds, and every read checks the rows against it.

The format (what is authenticated, under which key) is :mod:`strongroom.crypto.manifest`'s.
This module decides when a manifest is written and what a read compares it with.

**Written** in the transaction of every change to a secret: a new version (``set``, the
operator's ``resolve``), destroying previous versions (``retire_previous``), rekey (which
moves it to the new data key, counter unchanged), and once for every secret written before
manifests existed. A deleted secret's manifest goes with its row.

**Checked** by ``get`` (all keys or one, current or ``--version N``), ``resolve``, ``verify``,
``retire_previous``, every write (before it builds on the current version) and ``rekey``:

1. the MAC, over the row's own namespace, name and ``current_version``: a current version set
   back, a manifest copied from another secret, or an edited one fails;
2. the rows of the version read: a live version's rows must give its digest (a row deleted,
   added, or put back from an earlier life of the secret fails); a version the manifest does
   not list must hold no value (a destroyed version restored fails);
3. the counter against the audit chain. Each change to a secret appends its event
   (``SECRET_WRITES``: ``secret.set``, ``secret.destroy``, ``secret.delete``,
   ``secret.manifest``) in the same transaction, and the manifest's counter is that event's
   sequence number, so the secret's newest write in the chain must be exactly the counter.
   An older manifest put back, with or without its rows (one secret restored from a backup),
   names an older event: it fails. So does a deleted secret put back (its ``secret.delete``
   is newer), and a secret whose rows were removed while the chain says it exists is an
   integrity failure, not "not found". ``get``, ``resolve`` and ``verify`` read the newest
   write in the same statement as the secret (one round trip, and on PostgreSQL one snapshot).

Every failure is the same bare :class:`IntegrityError` as a value that fails authentication.

**Where the counter's truth lives.** A counter inside the manifest alone proves nothing: an
older manifest is as authentic as the newest. The audit chain is the store's one keyed record
that only moves forward; the manifest names its place in it, and the read asks the chain
(through an index of each secret's writes) whether anything happened to the secret since. To
hide a rollback from that question, the later events must leave the chain, which
``strongroom audit verify`` reports (an event missing, a link or the head MAC not matching). A
consistent copy of the *whole* database from earlier (a backup restored) has an older chain to
match: only a head recorded outside the database (the checkpoint) shows it.

**Secrets written before manifests.** A migration cannot compute a MAC (it never sees the KEK),
so the first Strongroom to open the store after it gives every secret a manifest, in one
transaction holding the audit head's lock, with a ``secret.manifest`` event each and then one
``manifest.init`` event (also in a fresh store). From that event on there is no way back: a
secret without a manifest is an integrity failure, so deleting a manifest is no bypass. The
event is the keyed record that the migration finished; deleting it to have manifests handed out
again breaks the chain, which ``audit verify`` reports.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from itertools import groupby

from sqlalchemy import Connection, Engine

from strongroom.audit import MANIFEST_ACTION, MANIFESTS_BEGIN, AuditEvent, ChainKey, Outcome
from strongroom.crypto.manifest import (
    BROKEN,
    LiveVersion,
    Manifest,
    manifest_key,
    open_manifest,
    rows_digest,
    sign,
)
from strongroom.datakeys import AuditKey, DataKeys
from strongroom.errors import IntegrityError
from strongroom.store import repository as repo
from strongroom.store import transaction

_DELETE = "secret.delete"

Checked = tuple[repo.SecretRow, list[repo.VersionRow], Manifest, LiveVersion | None]
"""A secret, the rows of the version read, its manifest, and that version's entry (None: the
version holds no value)."""


def _digest(rows: Iterable[repo.VersionRow | repo.NewVersion]) -> str:
    return rows_digest((row.key, row.data_key_id, row.salt, row.nonce) for row in rows)


def _entry(version: int, rows: Sequence[repo.VersionRow | repo.NewVersion]) -> LiveVersion:
    return LiveVersion(version, tuple(sorted(row.key for row in rows)), _digest(rows))


def _placed(event: AuditEvent) -> int:
    """The counter: the sequence number the write's event got in the chain."""
    if not event.seq:
        raise ValueError("a manifest's event must be in the chain before it is signed")
    return event.seq


class Manifests:
    """Checks and writes manifests inside the caller's transaction; thread-safe."""

    def __init__(self, engine: Engine, data_keys: DataKeys, audit: AuditKey, *, actor: str) -> None:
        self._engine = engine
        self._data_keys = data_keys
        self._audit = audit
        self._actor = actor
        self._keys: dict[str, tuple[bytes, hmac.HMAC]] = {}
        self._ready = False
        self._lock = threading.Lock()

    def forget(self) -> None:
        with self._lock:
            self._keys.clear()
            self._ready = False

    # -- reading ----------------------------------------------------------------------------

    def read(
        self, conn: Connection, namespace: str, name: str, version: int | None
    ) -> Checked | None:
        """A secret's version (default: current) checked against its manifest.

        None when there is no such secret and the audit chain agrees. The secret, the rows and
        its newest write come from one statement, so one snapshot; when that finds no rows,
        the rest takes more statements, and on PostgreSQL a writer may commit between them. A
        failed check is therefore made once more holding the secret's row lock, and only that
        one counts. (SQLite's write lock rules the race out.)
        """
        found = repo.read_version(conn, namespace, name, version)  # newest write included
        try:
            return self._read(conn, namespace, name, version, found, lock=False)
        except IntegrityError:
            if conn.dialect.name == "sqlite":
                raise
        return self._read(conn, namespace, name, version, None, lock=True)

    def _read(
        self,
        conn: Connection,
        namespace: str,
        name: str,
        version: int | None,
        found: tuple[repo.SecretRow, list[repo.VersionRow], int | None] | None,
        *,
        lock: bool,
    ) -> Checked | None:
        if found is None:
            secret = repo.find_secret(conn, namespace, name, lock=lock)
            if secret is None or secret.current_version == 0:
                self.check_absent(conn, namespace, name)
                return None
            wanted = secret.current_version if version is None else version
            rows = repo.version_rows(conn, secret.id, wanted)
            manifest = self.open(conn, secret)
        else:
            secret, rows, newest = found
            wanted = secret.current_version if version is None else version
            manifest = self._open(conn, secret, newest)
        return secret, rows, manifest, self.match(manifest, wanted, rows)

    def open(self, conn: Connection, secret: repo.SecretRow) -> Manifest:
        """The secret's manifest, authenticated and checked against the audit chain."""
        newest = repo.newest_write(conn, secret.namespace, secret.name)
        return self._open(conn, secret, None if newest is None else newest.seq)

    def _open(self, conn: Connection, secret: repo.SecretRow, newest: int | None) -> Manifest:
        """``newest``: the sequence number of the secret's newest write in the chain."""
        if (
            secret.manifest is None
            or secret.manifest_counter is None
            or secret.manifest_key is None
            or secret.manifest_mac is None
        ):
            raise IntegrityError(BROKEN)
        manifest = open_manifest(
            self._mac_key(conn, secret.manifest_key), namespace=secret.namespace,
            name=secret.name, version=secret.current_version, data_key_id=secret.manifest_key,
            counter=secret.manifest_counter, body=secret.manifest, mac=secret.manifest_mac,
        )  # fmt: skip
        if newest != manifest.counter:  # written by another event than the secret's newest write
            raise IntegrityError(BROKEN)
        return manifest

    @staticmethod
    def match(
        manifest: Manifest, version: int, rows: Sequence[repo.VersionRow]
    ) -> LiveVersion | None:
        """The manifest's entry for ``version`` if ``rows`` are exactly its rows; None if it
        lists no such version and ``rows`` hold no value (destroyed, or never written)."""
        live = manifest.live(version)
        if live is None:
            if any(row.ciphertext is not None for row in rows):
                raise IntegrityError(BROKEN)
            return None
        if not hmac.compare_digest(_digest(rows), live.digest):
            raise IntegrityError(BROKEN)
        return live

    def check_absent(self, conn: Connection, namespace: str, name: str) -> None:
        """There is no such secret: unless the chain says it exists (its rows were removed)."""
        newest = repo.newest_write(conn, namespace, name)
        if newest is not None and newest.action != _DELETE:
            raise IntegrityError(BROKEN)

    def check_all(
        self, conn: Connection, secret: repo.SecretRow
    ) -> tuple[Manifest, list[repo.VersionRow]]:
        """Every live row of the secret against its manifest (rekey, before rewriting it)."""
        manifest = self.open(conn, secret)
        rows = repo.live_rows(conn, secret.id)
        by_version = {v: list(group) for v, group in groupby(rows, key=lambda row: row.version)}
        for entry in manifest.versions:
            self.match(manifest, entry.version, by_version.pop(entry.version, []))
        if by_version:  # values stored for a version the manifest does not list
            raise IntegrityError(BROKEN)
        return manifest, rows

    # -- writing ----------------------------------------------------------------------------

    def for_version(
        self,
        secret: repo.SecretRow,
        previous: Manifest | None,
        version: int,
        rows: Sequence[repo.NewVersion],
        *,
        event: AuditEvent,
        keep_versions: int,
        write_key: tuple[str, bytes],
    ) -> repo.StoredManifest:
        """The manifest of a new current ``version``: the previous one's kept versions, plus
        it; ``event`` is the write's audit event, already in the chain."""
        kept = repo.kept_from(version, keep_versions)
        entries = [e for e in previous.versions if e.version >= kept] if previous else []
        entries.append(_entry(version, rows))
        manifest = Manifest(tuple(entries), _placed(event))
        return self._sign(secret, manifest, write_key[0], write_key[1])

    def after_destroy(
        self, conn: Connection, secret: repo.SecretRow, manifest: Manifest, *, event: AuditEvent
    ) -> repo.StoredManifest:
        """Only the current version left, under the same data key as before; ``event`` is the
        destroy's audit event, already in the chain."""
        assert secret.manifest_key is not None  # noqa: S101 - opened before
        renewed = Manifest((manifest.current,), _placed(event))
        return self._sign_with(secret, renewed, secret.manifest_key,
                               self._mac_key(conn, secret.manifest_key))  # fmt: skip

    def rekeyed(
        self,
        secret: repo.SecretRow,
        manifest: Manifest,
        rows: Sequence[repo.VersionRow],
        write_key: tuple[str, bytes],
    ) -> repo.StoredManifest:
        """The same versions and counter, rows as they are now, under the new data key."""
        by_version = {v: list(group) for v, group in groupby(rows, key=lambda row: row.version)}
        entries = tuple(
            _entry(entry.version, by_version.get(entry.version, [])) for entry in manifest.versions
        )
        return self._sign(secret, Manifest(entries, manifest.counter), write_key[0], write_key[1])

    def _sign(
        self, secret: repo.SecretRow, manifest: Manifest, data_key_id: str, seed: bytes
    ) -> repo.StoredManifest:
        return self._sign_with(secret, manifest, data_key_id, self._keyed(data_key_id, seed))

    @staticmethod
    def _sign_with(
        secret: repo.SecretRow, manifest: Manifest, data_key_id: str, key: hmac.HMAC
    ) -> repo.StoredManifest:
        body, mac = sign(key, namespace=secret.namespace, name=secret.name,
                         data_key_id=data_key_id, manifest=manifest)  # fmt: skip
        return repo.StoredManifest(body, manifest.counter, data_key_id, mac)

    def _mac_key(self, conn: Connection, data_key_id: str) -> hmac.HMAC:
        row = (
            None if self._data_keys.is_cached(data_key_id) else repo.get_data_key(conn, data_key_id)
        )
        return self._keyed(data_key_id, self._data_keys.seed(data_key_id, row))

    def _keyed(self, data_key_id: str, seed: bytes) -> hmac.HMAC:
        cached = self._keys.get(data_key_id)
        if cached is not None and (cached[0] is seed or cached[0] == seed):
            return cached[1]
        keyed = hmac.new(manifest_key(seed), digestmod=hashlib.sha256)
        self._keys[data_key_id] = (seed, keyed)
        return keyed

    # -- the first open after the migration -------------------------------------------------

    def ready(self) -> None:
        """Make sure the store has begun manifests (call outside a transaction, before any
        read or write of a secret): once per process, a lookup; once per store, the begin."""
        if self._ready:
            return
        with self._lock:
            self._ready = self._ready or self._start()

    def _start(self) -> bool:
        chain = self._audit.current()
        with transaction(self._engine) as conn:
            begun = self._begun(conn)
            waiting = not begun and bool(repo.unmanifested_secrets(conn))
        write_key = self._data_keys.for_write() if waiting else None
        while not begun:
            begun = self._begin(chain, write_key)
            if not begun:  # secrets to give manifests appeared: sign with a data key
                write_key = self._data_keys.for_write()
        return True

    @staticmethod
    def _begun(conn: Connection) -> bool:
        newest = repo.newest_write(conn, "", "")  # the only write without a secret's name
        return newest is not None and newest.action == MANIFESTS_BEGIN

    def _begin(self, chain: ChainKey, write_key: tuple[str, bytes] | None) -> bool:
        """Manifests for every secret written before them, and the event that says so.

        False (nothing written) when there are such secrets but no data key to sign with.
        """
        with transaction(self._engine) as conn:
            repo.lock_audit_head(conn)  # one process begins; the others find it begun
            if self._begun(conn):
                return True
            legacy = repo.unmanifested_secrets(conn)
            if legacy and write_key is None:
                return False
            now = datetime.now(UTC)
            given: list[tuple[repo.SecretRow, tuple[LiveVersion, ...]]] = []
            for secret in legacy:
                rows = repo.live_rows(conn, secret.id)
                entries = tuple(
                    _entry(version, list(group))
                    for version, group in groupby(rows, key=lambda row: row.version)
                )
                if entries and entries[-1].version == secret.current_version:
                    given.append((secret, entries))
                # else its current values are gone: it stays unreadable (no manifest)
            events = [AuditEvent(
                time=now, actor=self._actor, action=MANIFEST_ACTION, outcome=Outcome.OK,
                namespace=secret.namespace, name=secret.name, version=secret.current_version,
                detail="manifest for a secret written before manifests",
            ) for secret, _entries in given]  # fmt: skip
            events.append(AuditEvent(
                time=now, actor=self._actor, action=MANIFESTS_BEGIN, outcome=Outcome.OK,
                detail=f"every secret has a manifest from here on; {len(given)} written "
                       "before were given one",
            ))  # fmt: skip
            placed = repo.append_audits(conn, events, key=chain)
            for (secret, entries), event in zip(given, placed, strict=False):
                assert write_key is not None  # noqa: S101 - checked above
                manifest = Manifest(entries, _placed(event))
                repo.write_manifest(conn, secret.id, self._sign(secret, manifest, *write_key),
                                    replaces=None)  # fmt: skip
        return True
