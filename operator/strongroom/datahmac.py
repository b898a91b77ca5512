"""The data HMAC: how the operator knows a Secret already holds what it should without keeping
or revealing the values.

Format (``v2``), written to ``status.dataHMAC`` and the Secret's ``strongroom.io/data-hmac``
annotation, hex of::

    HMAC-SHA256(K_ns, JSON{"ns": namespace, "name": ManagedSecret name, "uid": its UID,
                           "type": Secret type, "data": {key: base64 value, sorted}})
    K_ns = HMAC-SHA256(K, "strongroom.io/data-hmac/v2\\0" + namespace)

``K`` is 32 random bytes kept as a value in the store under :data:`HMAC_SECRET`, whose
namespace (:data:`strongroom.validate.INTERNAL`, ``strongroom.internal``) contains a dot and so
is no Kubernetes namespace: no ManagedSecret can address it, so no tenant can have it projected
into a Secret. The validator refuses that namespace to every caller that does not hold the
``INTERNAL`` object itself (this module does), so the command line cannot read or write it
either. Anyone can read a ManagedSecret's status in their own namespace; with a key per
namespace and the ManagedSecret's identity inside the MAC, equal values in two namespaces (or
two objects) give unrelated HMACs, and a tenant cannot test guesses of another tenant's value
by comparing them.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import json
import secrets as pysecrets
from collections.abc import Mapping

from strongroom.api import Strongroom
from strongroom.errors import AlreadyExists, NotFound
from strongroom.validate import INTERNAL

HMAC_SECRET = (INTERNAL, "sync-hmac-key")
_LABEL = b"strongroom.io/data-hmac/v2\0"


@functools.lru_cache(maxsize=4096)
def namespace_key(key: bytes, namespace: str) -> bytes:
    """The per-namespace key (cached: one derivation per namespace, not per reconcile)."""
    return hmac.new(key, _LABEL + namespace.encode(), hashlib.sha256).digest()


def data_hmac(key: bytes, *, namespace: str, name: str, uid: str, secret_type: str,
              data: Mapping[str, str]) -> str:  # fmt: skip
    """HMAC of a Secret's type and base64 data, bound to the ManagedSecret it belongs to."""
    doc = json.dumps({"ns": namespace, "name": name, "uid": uid, "type": secret_type,
                      "data": dict(sorted(data.items()))}, separators=(",", ":"))  # fmt: skip
    return hmac.new(namespace_key(key, namespace), doc.encode(), hashlib.sha256).hexdigest()


def load_hmac_key(room: Strongroom, actor: str) -> bytes:
    """The store-held key for data HMACs, created once (create-only, so replicas agree)."""
    namespace, name = HMAC_SECRET
    try:
        return bytes.fromhex(room.get(namespace, name, "key", actor=actor).data["key"])
    except NotFound:
        pass
    with contextlib.suppress(AlreadyExists):  # another replica created it first: use theirs
        room.set(namespace, name, {"key": pysecrets.token_hex(32)}, if_absent=True, actor=actor,
                 description="HMAC key for Strongroom's sync (not a user secret)")  # fmt: skip
    return bytes.fromhex(room.get(namespace, name, "key", actor=actor).data["key"])
