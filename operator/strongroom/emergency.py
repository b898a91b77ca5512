"""Emergency rotation: "this secret leaked, replace it now", for every kind of key.

Asked for with an annotation on the ManagedSecret (what ``strongroom secret rotate`` writes, and
what anyone with ``patch`` on the ManagedSecret may write, as ESO's ``force-sync``)::

    strongroom.io/rotate: <any token not used before>     # a new token asks again
    strongroom.io/rotate-keys: "password,db"              # optional: these keys only
    strongroom.io/rotate-revoke: "true"                   # optional: old database roles at once

The operator remembers the last token it acted on in ``status.rotateToken``; a token it has
seen does nothing, so an annotation left in place is not a rotation at every sync. Then:

- ``generate`` keys get new values and ``database`` keys new roles (with ``revoke``, the old role
  is dropped and its sessions ended at once, not after ``keepPrevious``); the Secret, rollout
  restarts and the audit follow as for any change;
- keys the operator cannot make anew (set out-of-band, ``fromSecret``, sealed) are recorded in
  ``status.compromised`` with a keyed fingerprint of the value (an HMAC under the operator's
  data-HMAC key: it tells "the same value" without revealing it), and the ManagedSecret is
  ``Ready=False Compromised`` until each holds a different value.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import os
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from strongroom.spec import DataItem

__all__ = ["COMPROMISED", "KEYS_ANNOTATION", "REVOKE_ANNOTATION", "ROTATE_ANNOTATION",
           "Concluded", "Rotation", "conclude", "fingerprint", "rotation_patch",
           "still_compromised"]  # fmt: skip

ROTATE_ANNOTATION = "strongroom.io/rotate"
KEYS_ANNOTATION = "strongroom.io/rotate-keys"
REVOKE_ANNOTATION = "strongroom.io/rotate-revoke"
COMPROMISED = "Compromised"
MAX_TOKEN = 128


@dataclasses.dataclass(frozen=True)
class Rotation:
    """An emergency rotation asked for and not yet done."""

    token: str
    keys: frozenset[str] | None  # None: every key
    revoke: bool = False

    @classmethod
    def requested(cls, metadata: Mapping[str, Any], status: Mapping[str, Any]) -> Rotation | None:
        annotations = metadata.get("annotations") or {}
        token = annotations.get(ROTATE_ANNOTATION)
        if not isinstance(token, str) or not token or token == status.get("rotateToken"):
            return None
        listed = annotations.get(KEYS_ANNOTATION)
        keys = (frozenset(k.strip() for k in listed.split(",") if k.strip())
                if isinstance(listed, str) and listed.strip() else None)  # fmt: skip
        return cls(token[:MAX_TOKEN], keys, annotations.get(REVOKE_ANNOTATION) == "true")

    def covers(self, key: str) -> bool:
        return self.keys is None or key in self.keys

    def renewable(self, items: Iterable[DataItem]) -> set[str]:
        """The keys the operator makes anew: generated and database ones."""
        return {i.key for i in items if self.covers(i.key)
                and (i.generate is not None or i.database is not None)}  # fmt: skip

    def marked(self, items: Iterable[DataItem]) -> set[str]:
        """The keys only a person can replace: out-of-band, fromSecret (and sealed)."""
        return {i.key for i in items if self.covers(i.key) and i.generate is None
                and i.database is None and i.from_managed_secret is None}  # fmt: skip


def fingerprint(hmac_key: bytes, namespace: str, name: str, key: str, value: Any) -> str:
    """A keyed fingerprint of one stored value, bound to where it is stored."""
    message = json.dumps([namespace, name, key, value], sort_keys=True).encode()
    return hmac.new(hmac_key, b"strongroom/compromised\0" + message, hashlib.sha256).hexdigest()


def still_compromised(recorded: Mapping[str, str], stored: Mapping[str, Any], hmac_key: bytes,
                      namespace: str, name: str) -> dict[str, str]:  # fmt: skip
    """The recorded keys whose stored value is still the one that was compromised."""
    return {k: mark for k, mark in recorded.items() if k in stored
            and hmac.compare_digest(mark, fingerprint(hmac_key, namespace, name, k, stored[k]))}  # fmt: skip


@dataclasses.dataclass
class Concluded:
    """What a sync reports of emergency rotation: the keys still compromised (their marks, for
    ``status.compromised``), the status fields, an event and an audit detail (if it rotated)."""

    marks: dict[str, str]
    status: dict[str, Any]
    events: list[tuple[str, str, str]]
    audit: str | None


def conclude(rotation: Rotation | None, renewed: Iterable[str], status: Mapping[str, Any],
             items: Iterable[DataItem], stored: Mapping[str, Any], *, hmac_key: bytes,
             namespace: str, name: str) -> Concluded:  # fmt: skip
    """After the Secret is written: mark what this rotation could not renew, clear the marks
    of keys that now hold another value."""
    marks = dict(status.get("compromised") or {})
    events: list[tuple[str, str, str]] = []
    audit = None
    if rotation is not None:
        marks.update({k: fingerprint(hmac_key, namespace, name, k, stored[k])
                      for k in rotation.marked(items) if k in stored})  # fmt: skip
        shown = ", ".join(sorted(renewed)) or "nothing"
        events.append(("Normal", "EmergencyRotation",
                       f"emergency rotation {rotation.token}: renewed {shown}"))  # fmt: skip
        audit = f"emergency rotation {rotation.token}: renewed {shown}; marked {sorted(marks)}"
    marks = still_compromised(marks, stored, hmac_key, namespace, name)
    fields: dict[str, Any] = {"rotateToken": rotation.token} if rotation is not None else {}
    fields["compromised"] = marks or None  # null removes the field
    return Concluded(marks, fields, events, audit)


def rotation_patch(keys: Iterable[str] = (), *, revoke: bool = False) -> dict[str, Any]:
    """The metadata patch ``strongroom secret rotate`` sends: a fresh token (time + random)."""
    token = f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-{os.urandom(4).hex()}"
    listed = ",".join(sorted(set(keys)))
    return {"metadata": {"annotations": {
        ROTATE_ANNOTATION: token,
        KEYS_ANNOTATION: listed or None,  # null removes a list left by an earlier rotation
        REVOKE_ANNOTATION: "true" if revoke else None,
    }}}  # fmt: skip
