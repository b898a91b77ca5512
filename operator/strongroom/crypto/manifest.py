"""The manifest format: what a secret holds, authenticated under a data key.

A value's AAD binds it to its namespace, name, key, version and data key, so a row cannot be
moved. It cannot say that the row is the one that *should* be there: a database writer could
set ``secrets.current_version`` back (the previous value is still a valid row), delete one
key's row (the others still decrypt), or put back the rows a deleted secret once had under the
same version numbers. The manifest says what should be there, and is authenticated like a
value.

Stored format (version 1), four columns of the secret's ``secrets`` row::

    manifest          body = canonical JSON [[version, [key, ...], rows_digest], ...]
                      one entry per live version (its values still stored), ascending; the
                      last is the current version
    manifest_counter  counter: the sequence number, in the audit chain, of the event that
                      recorded the write of this manifest
    manifest_key      data_key_id: the data key the MAC is under
    manifest_mac      hex HMAC-SHA256(K, MSG)

    rows_digest = hex SHA-256(for each row of the version, by key:
                              lp(key) || lp(data_key_id) || lp(salt) || lp(nonce))
    K   = HKDF-SHA256(ikm=seed, salt=none, info=b"strongroom/manifest/v1", length=32)
    MSG = b"strongroom/manifest/v1" || lp(format) || lp(namespace) || lp(name)
          || lp(current_version) || lp(data_key_id) || lp(counter) || lp(body)
    lp(x) = uint32_be(len(x)) || x   (text as UTF-8, numbers in decimal)

``seed`` is the data key seed named by ``data_key_id`` (see :mod:`strongroom.crypto.envelope`);
``namespace``, ``name`` and ``current_version`` are read from the row's own columns, so a
manifest copied onto another secret, or a current version set back, fails authentication.

Why a digest of the rows: it commits to the exact rows of each version, not only their key
names. A row's salt and nonce are random and its ciphertext only opens under the DEK its salt
derives, so no one without the seed can make another valid row with the same digest; a row
from an earlier life of the secret (deleted, then created again, so the same version numbers
and AAD) has a different salt. Hashing the salt rather than the ciphertext keeps the digest's
cost independent of the value's size.

Why HMAC and not AES-GCM: nothing in the manifest is secret (key names are already visible in
``secret_versions``), it only needs to be authentic. Why HKDF with a label: the seed is never
used directly as a key, and a MAC key can never serve as a DEK (those use the salt and
``strongroom/dek/v1``).

What the counter is for is :mod:`strongroom.manifest`'s business: this module only binds it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import struct
from collections.abc import Iterable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from strongroom.errors import IntegrityError

MANIFEST_FORMAT = 1
_LABEL = b"strongroom/manifest/v1"
BROKEN = "stored value failed authentication"
"""The one message of every manifest failure, the same as a value's: it never says what."""


def _lp(field: str | bytes) -> bytes:
    raw = field.encode("utf-8") if isinstance(field, str) else field
    return struct.pack(">I", len(raw)) + raw


@dataclasses.dataclass(frozen=True)
class LiveVersion:
    """A version whose values are stored: its key names and the digest of its rows."""

    version: int
    keys: tuple[str, ...]
    digest: str


@dataclasses.dataclass(frozen=True)
class Manifest:
    """A secret's live versions (the last is the current one) and the counter it was written at."""

    versions: tuple[LiveVersion, ...]
    counter: int

    @property
    def current(self) -> LiveVersion:
        return self.versions[-1]

    def live(self, version: int) -> LiveVersion | None:
        for entry in self.versions:
            if entry.version == version:
                return entry
        return None

    def body(self) -> str:
        return json.dumps(
            [[v.version, list(v.keys), v.digest] for v in self.versions],
            separators=(",", ":"),
            ensure_ascii=True,
        )


def rows_digest(rows: Iterable[tuple[str, str, bytes | None, bytes | None]]) -> str:
    """Digest of one version's rows, given as (key, data_key_id, salt, nonce)."""
    digest = hashlib.sha256(_LABEL + b" rows")
    for key, data_key_id, salt, nonce in sorted(rows, key=lambda row: row[0]):
        digest.update(_lp(key) + _lp(data_key_id) + _lp(salt or b"") + _lp(nonce or b""))
    return digest.hexdigest()


def manifest_key(seed: bytes) -> bytes:
    """The MAC key derived from a data key seed (K above)."""
    if len(seed) != 32:
        raise IntegrityError("data key seed has the wrong length")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_LABEL).derive(seed)


def _message(
    *, namespace: str, name: str, version: int, data_key_id: str, counter: int, body: str
) -> bytes:
    return b"".join((
        _LABEL, _lp(str(MANIFEST_FORMAT)), _lp(namespace), _lp(name), _lp(str(version)),
        _lp(data_key_id), _lp(str(counter)), _lp(body),
    ))  # fmt: skip


def sign(
    key: hmac.HMAC, *, namespace: str, name: str, data_key_id: str, manifest: Manifest
) -> tuple[str, str]:
    """(body, mac) to store for ``manifest``; ``key`` is an HMAC object keyed with K."""
    body = manifest.body()
    mac = key.copy()
    mac.update(_message(namespace=namespace, name=name, version=manifest.current.version,
                        data_key_id=data_key_id, counter=manifest.counter, body=body))  # fmt: skip
    return body, mac.hexdigest()


def open_manifest(
    key: hmac.HMAC,
    *,
    namespace: str,
    name: str,
    version: int,
    data_key_id: str,
    counter: int,
    body: str,
    mac: str,
) -> Manifest:
    """Authenticate a stored manifest against its row's identity; any mismatch: IntegrityError."""
    check = key.copy()
    check.update(_message(namespace=namespace, name=name, version=version,
                          data_key_id=data_key_id, counter=counter, body=body))  # fmt: skip
    if not hmac.compare_digest(check.hexdigest(), mac):
        raise IntegrityError(BROKEN)
    try:
        entries = tuple(
            LiveVersion(int(v), tuple(str(k) for k in keys), str(d))
            for v, keys, d in json.loads(body)
        )
    except (ValueError, TypeError):  # authentic yet unreadable: only a bug writes that
        raise IntegrityError(BROKEN) from None
    if not entries or entries[-1].version != version:
        raise IntegrityError(BROKEN)
    return Manifest(entries, counter)
