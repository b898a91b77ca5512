"""Sealing key pairs kept in the store, like every other secret: encrypted under a data key,
so protected by the KEK, rewrapped by ``kek rotate``, audited, and in every database backup.

Stored format: one internal secret, :data:`SEALING_KEYS` (``strongroom.internal/sealing-keys``,
a namespace no ManagedSecret can address, see :mod:`strongroom.validate`), one key per key
pair, named by its key id (16 hex characters), whose value is the JSON object::

    {"suite": "mlkem768-x25519" | "x25519", "created": "2026-12-02T12:00:00.000000Z",
     "public": base64(public key bytes), "private": base64(private key bytes)}

(byte layouts in :mod:`strongroom.sealing.blob`). The newest key is the active one, the one
published and sealed to; older keys stay for opening until an administrator prunes them.
Pruning removes the key and destroys the earlier versions of the record, so the private key's
ciphertext is erased from the database too (what a database backup holds is the backup's).

Which ManagedSecret keys still need each sealing key: the operator records, per ManagedSecret,
the key id and digest of each sealed blob it opened, as the internal secret
``sealed-<first 40 hex of SHA-256(namespace "/" name)>`` whose keys are the ManagedSecret's
data keys and whose values are ``{"namespace", "name", "keyId", "digest"}``. The digest is of
the public blob and says whether the blob changed since it was last opened; it is not secret.
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import dataclasses
import hashlib
import json
import os
import threading
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from strongroom.api import Strongroom
from strongroom.errors import AlreadyExists, IntegrityError, NotFound, ValidationError
from strongroom.sealing.blob import (
    KEY_ID_BYTES,
    Header,
    PublicSealingKey,
    SuiteId,
    generate,
    new_key_id,
)
from strongroom.validate import INTERNAL

SEALING_KEYS = (INTERNAL, "sealing-keys")
USAGE_PREFIX = "sealed-"


@dataclasses.dataclass(frozen=True)
class SealingKeyInfo:
    """A sealing key as listed: never the private part."""

    key_id: str
    suite: SuiteId
    created: datetime
    public: bytes = dataclasses.field(repr=False)

    def public_key(self) -> PublicSealingKey:
        return PublicSealingKey(self.key_id, self.suite, self.public)


@dataclasses.dataclass(frozen=True)
class Use:
    """One ManagedSecret key whose blob was last opened with a given sealing key."""

    namespace: str
    name: str
    key: str
    key_id: str
    digest: str


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(key_id: str, doc: Any) -> tuple[SealingKeyInfo, bytes]:
    """A stored key pair; a malformed record is an IntegrityError naming the key id only."""
    try:
        suite = SuiteId.parse(str(doc.get("suite")))
        created = datetime.fromisoformat(str(doc["created"]).replace("Z", "+00:00"))
        info = SealingKeyInfo(key_id, suite, created, base64.b64decode(doc["public"]))
        return info, base64.b64decode(doc["private"])
    except (AttributeError, KeyError, TypeError, ValueError):
        raise IntegrityError(f"sealing key {key_id} in the store is malformed") from None


def _names(uses: Iterable[Use], limit: int = 5) -> str:
    """``ns/name[key], …`` for a message, at most ``limit`` of them."""
    shown = sorted(f"{u.namespace}/{u.name}[{u.key}]" for u in uses)
    more = f" and {len(shown) - limit} more" if len(shown) > limit else ""
    return ", ".join(shown[:limit]) + more


def usage_name(namespace: str, name: str) -> str:
    """The internal secret recording the sealed blobs of one ManagedSecret."""
    return USAGE_PREFIX + hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()[:40]


class SealingKeys:
    """The store's sealing keys, for the operator and the administrator's commands.

    Private keys are read from the store for each blob opened (the operator opens a blob only
    when it changes), so a key pruned by another process stops opening at once. A one-off
    command opening many blobs (``seal reseal``) may keep them in memory for ``cache_seconds``;
    :meth:`forget` drops them.
    """

    def __init__(self, room: Strongroom, *, actor: str, cache_seconds: float = 0.0) -> None:
        self.room = room
        self.actor = actor
        self.cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._private: dict[str, tuple[SuiteId, bytes]] = {}
        self._loaded = 0.0

    # -- reading ---------------------------------------------------------------------------

    def _all(self) -> dict[str, tuple[SealingKeyInfo, bytes]]:
        namespace, name = SEALING_KEYS
        try:
            stored = self.room.get(namespace, name, actor=self.actor, action="sealing.read").data
        except NotFound:
            return {}
        return {key_id: _parse(key_id, doc) for key_id, doc in stored.items()}

    def list(self) -> list[SealingKeyInfo]:
        """Every key, oldest first (the last is the active one)."""
        keys = [info for info, _private in self._all().values()]
        return sorted(keys, key=lambda k: (k.created, k.key_id))

    def active(self) -> SealingKeyInfo | None:
        keys = self.list()
        return keys[-1] if keys else None

    def private(self, head: Header) -> tuple[SuiteId, bytes] | None:
        """The private key a blob's header names, or None (unknown or pruned)."""
        with self._lock:
            if time.monotonic() - self._loaded < self.cache_seconds:
                return self._private.get(head.key_id)
        loaded = {key_id: (info.suite, private) for key_id, (info, private) in self._all().items()}
        if self.cache_seconds > 0:
            with self._lock:
                self._private, self._loaded = loaded, time.monotonic()
        return loaded.get(head.key_id)

    def forget(self) -> None:
        with self._lock:
            self._private.clear()
            self._loaded = 0.0

    # -- changing --------------------------------------------------------------------------

    def rotate(self, suite: SuiteId, *, first: bool = False) -> SealingKeyInfo:
        """Start a new key pair, which becomes the active one. ``first``: only if there is no
        key at all (create-only, so two replicas starting together make one key)."""
        private, public = generate(suite)
        info = SealingKeyInfo(new_key_id(os.urandom(KEY_ID_BYTES)), suite,
                              datetime.now(UTC), public)  # fmt: skip
        doc = {"suite": suite.label, "created": _iso(info.created),
               "public": base64.b64encode(public).decode(),
               "private": base64.b64encode(private).decode()}  # fmt: skip
        namespace, name = SEALING_KEYS
        self.room.set(namespace, name, {info.key_id: doc}, if_absent=first, actor=self.actor,
                      description="Strongroom's sealing key pairs (not a user secret)")  # fmt: skip
        return info

    def ensure(self, suite: SuiteId, max_age: timedelta) -> tuple[SealingKeyInfo, bool]:
        """The active key, after starting one if there is none or the active one is older than
        ``max_age``; and whether a key was started."""
        active = self.active()
        if active is None:
            with contextlib.suppress(AlreadyExists):  # another replica made the first key
                return self.rotate(suite, first=True), True
            active = self.active()
            assert active is not None  # noqa: S101 - just created by the other replica
            return active, False
        if datetime.now(UTC) - active.created >= max_age:
            return self.rotate(suite), True
        return active, False

    def prune(self, key_ids: Iterable[str], *, force: bool = False) -> builtins.list[str]:
        """Remove keys; refuses the active key, unknown ids, and keys still used by a sealed
        value (unless ``force``). Earlier versions of the record are destroyed, so a pruned
        private key leaves no ciphertext behind in the store."""
        wanted = sorted(set(key_ids))
        keys = {info.key_id: info for info in self.list()}
        if not wanted:
            raise ValidationError("name at least one sealing key id to prune")
        unknown = [k for k in wanted if k not in keys]
        if unknown:
            raise NotFound(f"no sealing key {', '.join(unknown)}")
        active = self.active()
        if active is not None and active.key_id in wanted:
            raise ValidationError(f"sealing key {active.key_id} is the active key; rotate first")
        if not force:
            used = {k: v for k, v in self.usage().items() if k in wanted and v}
            if used:
                shown = "; ".join(f"{k} by {_names(uses)}" for k, uses in sorted(used.items()))
                raise ValidationError(f"still in use: {shown}; reseal them first or use --force")
        namespace, name = SEALING_KEYS
        self.room.set(namespace, name, {}, remove=wanted, actor=self.actor)
        self.room.retire_previous(namespace, name, grace=timedelta(0), actor=self.actor)
        self.forget()
        return wanted

    # -- which sealed values need which key ------------------------------------------------

    def recorded(self, namespace: str, name: str) -> dict[str, Use]:
        """What the operator last opened for one ManagedSecret, by data key."""
        try:
            stored = self.room.get(INTERNAL, usage_name(namespace, name), actor=self.actor,
                                   action="sealing.read").data  # fmt: skip
        except NotFound:
            return {}
        return {key: Use(str(doc["namespace"]), str(doc["name"]), key, str(doc["keyId"]),
                         str(doc["digest"])) for key, doc in stored.items()
                if isinstance(doc, Mapping)}  # fmt: skip

    def record(self, namespace: str, name: str, uses: Mapping[str, Use]) -> None:
        """Replace the record of one ManagedSecret's sealed blobs (none: the record goes)."""
        secret = usage_name(namespace, name)
        if not uses:
            with contextlib.suppress(NotFound):
                self.room.delete(INTERNAL, secret, actor=self.actor)
            return
        data = {key: {"namespace": use.namespace, "name": use.name, "keyId": use.key_id,
                      "digest": use.digest} for key, use in uses.items()}  # fmt: skip
        self.room.set(INTERNAL, secret, data, replace=True, actor=self.actor,
                      description="sealed blobs last opened (not a user secret)")  # fmt: skip

    def usage(self) -> dict[str, builtins.list[Use]]:
        """Sealing key id → the sealed values last opened with it."""
        found: dict[str, builtins.list[Use]] = {info.key_id: [] for info in self.list()}
        for info in self.room.list(INTERNAL, actor=self.actor):
            if not info.name.startswith(USAGE_PREFIX):
                continue
            stored = self.room.get(INTERNAL, info.name, actor=self.actor,
                                   action="sealing.read").data  # fmt: skip
            for key, doc in stored.items():
                if isinstance(doc, Mapping):
                    use = Use(str(doc["namespace"]), str(doc["name"]), key, str(doc["keyId"]),
                              str(doc["digest"]))  # fmt: skip
                    found.setdefault(use.key_id, []).append(use)
        return found


def public_document(keys: Iterable[SealingKeyInfo]) -> dict[str, str]:
    """The ConfigMap data (and the public key file) the operator publishes: ``active`` names
    the key to seal to; ``<key id>.json`` holds each key's suite, creation time and public key."""
    ordered = sorted(keys, key=lambda k: (k.created, k.key_id))
    data = {f"{k.key_id}.json": json.dumps({
        "keyId": k.key_id, "suite": k.suite.label, "created": _iso(k.created),
        "publicKey": base64.b64encode(k.public).decode()}, sort_keys=True) for k in ordered}  # fmt: skip
    if ordered:
        data["active"] = ordered[-1].key_id
    return data


def read_public_document(data: Mapping[str, Any], key_id: str | None = None) -> PublicSealingKey:
    """The public key to seal to from a published document (ConfigMap data or a file): the
    active one, or ``key_id``. ValueError with a clear message when it is not there."""
    chosen = key_id or data.get("active")
    if not isinstance(chosen, str) or not chosen:
        raise ValueError("the public key document names no active sealing key")
    raw = data.get(f"{chosen}.json")
    if not isinstance(raw, str):
        raise ValueError(f"the public key document has no sealing key {chosen}")  # noqa: TRY004
    try:
        doc = json.loads(raw)
        key = PublicSealingKey(str(doc["keyId"]), SuiteId.parse(str(doc["suite"])),
                               base64.b64decode(doc["publicKey"], validate=True))  # fmt: skip
        key.key()
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"sealing key {chosen} in the public key document is malformed") from exc
    if key.key_id != chosen or len(bytes.fromhex(key.key_id)) != KEY_ID_BYTES:
        raise ValueError(f"sealing key {chosen} in the public key document is malformed")
    return key
