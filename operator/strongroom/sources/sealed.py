"""The ``sealed`` source: ``data[].sealed`` holds a blob of :mod:`strongroom.sealing.blob`,
sealed offline to the store's public sealing key, which the operator opens for the
ManagedSecret's own namespace, name and key.

When a blob is opened: when its SHA-256 differs from the one the status recorded
(``status.sealed[key].digest``), i.e. on the first sync and whenever the blob in the spec
changes; never when the same spec is merely applied again. A blob that opens to the value
already stored writes no version (a reseal under a new key changes the blob, not the value).
The digest lives in the status, which tenants cannot write (the status subresource); a status
lost or forged costs one more opening, never a wrong value, since the blob itself is what is
opened. The administrator's view of which sealed values need which sealing key is kept in the
store (:meth:`strongroom.sealing.keys.SealingKeys.record`), written only when it changes.

A blob that does not open (another place's, a pruned or unknown key, a flipped byte, not a
blob at all) makes the whole reconcile ``SealedInvalid`` naming only the key; nothing is
written, and the Secret keeps its last good data.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from strongroom.api import Strongroom
from strongroom.metrics import SEALED_KEY_OLD, SEALED_OPENED
from strongroom.sealing.blob import Place, SealedInvalid, digest, header, open_sealed
from strongroom.sealing.keys import SealingKeyInfo, SealingKeys, Use
from strongroom.spec import DataItem

KEY_LIST_SECONDS = 30.0  # how long the list of sealing keys (public part) is reused


@dataclasses.dataclass
class SealedOutcome:
    """What the sealed items of one ManagedSecret need."""

    opened_values: dict[str, str] = dataclasses.field(default_factory=dict, repr=False)
    """What the blobs opened in this pass hold (memory only; never printed)."""
    values: dict[str, str] = dataclasses.field(default_factory=dict, repr=False)
    """Keys whose opened value differs from the stored one: to write as a new version."""
    invalid: list[str] = dataclasses.field(default_factory=list)
    """Keys whose blob does not open here."""
    old: list[str] = dataclasses.field(default_factory=list)
    """Keys sealed under a key older than the configured age: to reseal."""
    status: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)
    """``status.sealed``: per key, the sealing key id and the blob's digest."""
    opened: list[str] = dataclasses.field(default_factory=list)
    """Keys whose blob was opened in this pass (audited)."""

    def changed(self, current: Mapping[str, Any]) -> dict[str, str]:
        """The opened values that differ from ``current`` (also kept as :attr:`values`); for
        the reconcile's ``produce``, so they are written in the same version as generated
        ones. May be called more than once."""
        self.values = {k: v for k, v in self.opened_values.items() if current.get(k) != v}
        return dict(self.values)

    def merge(self, other: SealedOutcome) -> None:
        self.opened_values.update(other.opened_values)
        self.values.update(other.values)
        self.invalid += other.invalid
        self.old += [key for key in other.old if key not in self.old]
        self.status.update(other.status)
        self.opened += other.opened

    def invalid_message(self) -> str:
        return (f"data[{', '.join(self.invalid)}].sealed does not open for this ManagedSecret; "
                "seal the value again with `strongroom seal value`")  # fmt: skip

    def old_message(self) -> str:
        if not self.old:
            return "every sealed value uses a current sealing key"
        return (f"data[{', '.join(self.old)}].sealed uses a sealing key older than the set "
                "age; run `strongroom seal reseal` on the file")  # fmt: skip


class SealedSource:
    """Opens sealed items for :class:`strongroom.sync.Syncer`; one per operator."""

    def __init__(self, room: Strongroom, *, actor: str, max_age: timedelta) -> None:
        self.keys = SealingKeys(room, actor=actor)
        self.max_age = max_age
        self._lock = threading.Lock()
        self._listed: tuple[float, dict[str, SealingKeyInfo]] = (0.0, {})
        self._old: dict[tuple[str, str], int] = {}  # for the gauge: old-key values per object
        SEALED_KEY_OLD.set_function(lambda: float(sum(self._old.values())))

    def _key_infos(self, *, fresh: bool = False) -> dict[str, SealingKeyInfo]:
        with self._lock:
            at, infos = self._listed
        if fresh or time.monotonic() - at > KEY_LIST_SECONDS:
            infos = {info.key_id: info for info in self.keys.list()}
            with self._lock:
                self._listed = (time.monotonic(), infos)
        return infos

    def opened(self, namespace: str, name: str, items: tuple[DataItem, ...],
               status: Mapping[str, Any]) -> SealedOutcome | None:  # fmt: skip
        """The spec's sealed items opened where their blob changed (None: it has none). Called
        before the reconcile's transaction: opening reads the private key from the store."""
        if not any(item.sealed is not None for item in items):
            return None
        return self.open(namespace, name, items, status.get("sealed") or {})

    def reopen_lost(self, namespace: str, name: str, items: tuple[DataItem, ...],
                    stored: Mapping[str, Any], sealed: SealedOutcome) -> dict[str, str]:  # fmt: skip
        """Values the store lost since their blob was opened (deleted out-of-band), opened
        again; merged into ``sealed`` (check its ``invalid`` after)."""
        lost = frozenset(i.key for i in items if i.sealed is not None and i.key not in stored)
        if not lost:
            return {}
        more = self.open(namespace, name, items, {}, only=lost)
        again = more.changed(stored)
        sealed.merge(more)
        return again

    def settle(self, namespace: str, name: str, status: Mapping[str, Any],
               sealed: SealedOutcome | None, *, version: int,
               audit: Callable[[str, str, str, int | None, str], None],
               ) -> list[tuple[str, str, str]]:  # fmt: skip
        """After the values are written: audit the openings, keep the store's record of which
        sealing key each value needs, and return the Events to post."""
        events = []
        if sealed is not None and sealed.opened:
            opened = ", ".join(sealed.opened)
            audit("operator.unseal", namespace, name, version,
                  f"opened sealed {opened}; {len(sealed.values)} changed")
            events.append(("Normal", "Unsealed", f"opened sealed {opened}"[:240]))
        if sealed is not None or status.get("sealed"):
            self.record(namespace, name, status.get("sealed") or {}, sealed or SealedOutcome())
        return events

    def open(
        self, namespace: str, name: str, items: Iterable[DataItem], recorded: Mapping[str, Any],
        *, only: frozenset[str] | None = None,
    ) -> SealedOutcome:  # fmt: skip
        """Open the blobs whose digest differs from ``recorded`` (``status.sealed`` as the
        status has it now); ``only``: open just these keys, whatever was recorded (values the
        store lost)."""
        out = SealedOutcome()
        now = datetime.now(UTC)
        for item in items:
            if item.sealed is None or (only is not None and item.key not in only):
                continue
            blob, key = item.sealed, item.key
            seen = recorded.get(key) if isinstance(recorded.get(key), Mapping) else None
            blob_digest = digest(blob)
            if only is None and seen is not None and seen.get("digest") == blob_digest:
                key_id = str(seen.get("keyId", ""))
            else:
                try:
                    value = open_sealed(blob, Place(namespace, name, key), self.keys.private)
                    key_id = header(blob).key_id
                except SealedInvalid:
                    SEALED_OPENED.labels("invalid").inc()
                    out.invalid.append(key)
                    continue
                SEALED_OPENED.labels("ok").inc()
                out.opened.append(key)
                out.opened_values[key] = value
            out.status[key] = {"keyId": key_id, "digest": blob_digest}
            info = self._key_infos().get(key_id) or self._key_infos(fresh=True).get(key_id)
            if info is not None and now - info.created >= self.max_age:
                out.old.append(key)
        with self._lock:
            if out.old:
                self._old[(namespace, name)] = len(out.old)
            else:
                self._old.pop((namespace, name), None)
        return out

    def forget(self, namespace: str, name: str) -> None:
        """A ManagedSecret gone: it no longer counts in the gauge."""
        with self._lock:
            self._old.pop((namespace, name), None)

    def record(self, namespace: str, name: str, before: Mapping[str, Any],
               outcome: SealedOutcome) -> None:  # fmt: skip
        """Keep the store's record of sealing key use in step with ``status.sealed``."""
        if dict(before) == outcome.status:
            return
        self.keys.record(namespace, name, {
            key: Use(namespace, name, key, entry["keyId"], entry["digest"])
            for key, entry in outcome.status.items()})  # fmt: skip


def status_outcome(sealed: SealedOutcome | None,
                   status: Mapping[str, Any]) -> SealedOutcome | None:  # fmt: skip
    """What to put in status.sealed: this pass's, or nothing (emptied if it held some)."""
    if sealed is not None:
        return sealed
    return SealedOutcome() if status.get("sealed") else None
