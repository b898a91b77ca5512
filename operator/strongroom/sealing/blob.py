"""The sealed-value format: a value encrypted offline, from a public key alone, that only the
store's sealing private key opens, and only for the ManagedSecret key it was sealed for.

Text form (what goes into ``spec.data[].sealed``)::

    "srs1." || base64url-without-padding(blob)

Blob (format version 1)::

    magic      3 bytes  b"SRS"
    version    1 byte   1
    suite      1 byte   1 = ML-KEM-768+X25519 (hybrid, RFC 9180 KEM 0x647a) / HKDF-SHA256 / AES-256-GCM
                        2 = DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / AES-256-GCM
    key id     8 bytes  the sealing key pair's id (16 hex characters when shown)
    enc        the KEM's encapsulated key: 1,120 bytes (suite 1) or 32 bytes (suite 2)
    ciphertext AES-256-GCM of the UTF-8 value, with its 16-byte tag

``enc || ciphertext`` is exactly what HPKE's single-shot base mode (``Suite.encrypt``) returns.
The value is bound to its place through HPKE's ``info`` (mixed into the key schedule, so any
difference makes the tag fail)::

    info = b"strongroom.io/sealed/v1" || for each of (format version, suite id, namespace, name,
           key, key id): uint32_be(len(field)) || utf8(field)

Why these choices:

- **HPKE, not hand-made KEM+AEAD.** RFC 9180 as cryptography ships it; nothing here touches a
  shared secret or a nonce.
- **Hybrid post-quantum by default.** A value sealed into a public Git repository is kept for
  ever; ML-KEM-768+X25519 stays closed if either half holds, so "harvest now, decrypt later"
  with a future quantum computer does not open it. X25519 alone is there for tools that cannot
  do ML-KEM; its blobs are 1,088 bytes smaller.
- **Place bound in ``info``, not in metadata.** Namespace, name and key are those of the
  ManagedSecret the operator is reconciling, never read from the blob or from annotations, so a
  blob copied to another namespace, ManagedSecret or key does not open, whatever the copier
  writes around it (Sealed Secrets' scope annotations could be edited to widen a scope).
- **The key id in the clear and in ``info``.** The operator picks the private key by it, and a
  blob whose id was rewritten to another key's fails like a tampered one.
- **One bare error.** Every failure to open (bad text, unknown suite, unknown or pruned key,
  wrong place, flipped byte) is :class:`SealedInvalid` with the same message, so the condition
  an attacker can read says nothing about which check failed.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import enum
import hashlib
import struct
from collections.abc import Callable
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

from strongroom.errors import IntegrityError

FORMAT_VERSION: Final = 1
MAGIC: Final = b"SRS"
TEXT_PREFIX: Final = "srs1."
KEY_ID_BYTES: Final = 8
TAG_BYTES: Final = 16
HEADER_BYTES: Final = len(MAGIC) + 2 + KEY_ID_BYTES
_INFO_PREFIX: Final = b"strongroom.io/sealed/v1"
_INVALID: Final = "sealed value does not open here"
MAX_TEXT: Final = 1 << 20  # a Secret's whole size: longer text is refused before decoding
_MLKEM768_PUBLIC: Final = 1184
_MLKEM_SEED: Final = 64
_X25519: Final = 32


class SealedInvalid(IntegrityError):  # noqa: N818 - reads as the condition reported
    """A sealed value that does not open here; deliberately without detail."""


class SuiteId(enum.IntEnum):
    """The HPKE suites a sealing key can use (the blob's suite byte)."""

    MLKEM768_X25519 = 1
    X25519 = 2

    @property
    def label(self) -> str:
        """The name used on the command line, in the ConfigMap and in the store."""
        return _LABELS[self]

    @classmethod
    def parse(cls, text: str) -> SuiteId:
        for suite, label in _LABELS.items():
            if text == label:
                return suite
        raise ValueError(f"unknown sealing suite {text!r}; use one of {', '.join(_LABELS.values())}")

    def hpke(self) -> hpke.Suite:
        kem = hpke.KEM.MLKEM768_X25519 if self is SuiteId.MLKEM768_X25519 else hpke.KEM.X25519
        return hpke.Suite(kem, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)

    def enc_length(self) -> int:
        kem = hpke.KEM.MLKEM768_X25519 if self is SuiteId.MLKEM768_X25519 else hpke.KEM.X25519
        return kem.enc_length()


_LABELS: Final = {SuiteId.MLKEM768_X25519: "mlkem768-x25519", SuiteId.X25519: "x25519"}
DEFAULT_SUITE: Final = SuiteId.MLKEM768_X25519

PublicKey = x25519.X25519PublicKey | hpke.MLKEM768X25519PublicKey
PrivateKey = x25519.X25519PrivateKey | hpke.MLKEM768X25519PrivateKey


@dataclasses.dataclass(frozen=True)
class Place:
    """Where a sealed value may be opened: one key of one ManagedSecret."""

    namespace: str
    name: str
    key: str


@dataclasses.dataclass(frozen=True)
class PublicSealingKey:
    """What ``strongroom seal`` needs: a key id, its suite and the public key bytes."""

    key_id: str
    suite: SuiteId
    public: bytes

    def key(self) -> PublicKey:
        """The public key object (ValueError if the bytes do not fit the suite)."""
        return public_key(self.suite, self.public)


def new_key_id(raw: bytes) -> str:
    if len(raw) != KEY_ID_BYTES:
        raise ValueError("a key id is 8 bytes")
    return raw.hex()


def generate(suite: SuiteId) -> tuple[bytes, bytes]:
    """A new key pair as (private bytes, public bytes).

    Private bytes: the ML-KEM-768 seed (64) then the X25519 private key (32) for the hybrid,
    the X25519 private key alone otherwise. Public bytes: the ML-KEM-768 encapsulation key
    (1,184) then the X25519 public key (32), or the X25519 public key alone.
    """
    if suite is SuiteId.MLKEM768_X25519:
        pq, classic = mlkem.MLKEM768PrivateKey.generate(), x25519.X25519PrivateKey.generate()
        return (pq.private_bytes_raw() + classic.private_bytes_raw(),
                pq.public_key().public_bytes_raw() + classic.public_key().public_bytes_raw())  # fmt: skip
    single = x25519.X25519PrivateKey.generate()
    return single.private_bytes_raw(), single.public_key().public_bytes_raw()


def public_key(suite: SuiteId, raw: bytes) -> PublicKey:
    if suite is SuiteId.MLKEM768_X25519:
        if len(raw) != _MLKEM768_PUBLIC + _X25519:
            raise ValueError("an ML-KEM-768+X25519 public key is 1,216 bytes")
        return hpke.MLKEM768X25519PublicKey(
            mlkem.MLKEM768PublicKey.from_public_bytes(raw[:_MLKEM768_PUBLIC]),
            x25519.X25519PublicKey.from_public_bytes(raw[_MLKEM768_PUBLIC:]),
        )
    if len(raw) != _X25519:
        raise ValueError("an X25519 public key is 32 bytes")
    return x25519.X25519PublicKey.from_public_bytes(raw)


def private_key(suite: SuiteId, raw: bytes) -> PrivateKey:
    if suite is SuiteId.MLKEM768_X25519:
        if len(raw) != _MLKEM_SEED + _X25519:
            raise ValueError("an ML-KEM-768+X25519 private key is 96 bytes")
        return hpke.MLKEM768X25519PrivateKey(
            mlkem.MLKEM768PrivateKey.from_seed_bytes(raw[:_MLKEM_SEED]),
            x25519.X25519PrivateKey.from_private_bytes(raw[_MLKEM_SEED:]),
        )
    if len(raw) != _X25519:
        raise ValueError("an X25519 private key is 32 bytes")
    return x25519.X25519PrivateKey.from_private_bytes(raw)


def info(suite: SuiteId, place: Place, key_id: str) -> bytes:
    """HPKE ``info``: binds the blob to its format, suite, place and sealing key."""
    parts = [_INFO_PREFIX]
    for field in (str(FORMAT_VERSION), str(int(suite)), place.namespace, place.name, place.key,
                  key_id):  # fmt: skip
        raw = field.encode("utf-8")
        parts += [struct.pack(">I", len(raw)), raw]
    return b"".join(parts)


def seal(key: PublicSealingKey, place: Place, value: str) -> str:
    """The text to put in ``data[].sealed`` for ``place``; needs the public key only."""
    key_id = bytes.fromhex(key.key_id)
    if len(key_id) != KEY_ID_BYTES:
        raise ValueError("a key id is 16 hex characters")
    body = key.suite.hpke().encrypt(value.encode("utf-8"), key.key(),
                                    info=info(key.suite, place, key.key_id))  # fmt: skip
    raw = MAGIC + bytes((FORMAT_VERSION, int(key.suite))) + key_id + body
    return TEXT_PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@dataclasses.dataclass(frozen=True)
class Header:
    """The clear part of a blob: which key and suite it says it was sealed under."""

    suite: SuiteId
    key_id: str


def _decode(text: str) -> tuple[Header, bytes]:
    if not isinstance(text, str) or len(text) > MAX_TEXT or not text.startswith(TEXT_PREFIX):
        raise SealedInvalid(_INVALID)
    encoded = text[len(TEXT_PREFIX):]
    try:
        raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except (binascii.Error, ValueError):
        raise SealedInvalid(_INVALID) from None
    if len(raw) < HEADER_BYTES or raw[:3] != MAGIC or raw[3] != FORMAT_VERSION:
        raise SealedInvalid(_INVALID)
    try:
        suite = SuiteId(raw[4])
    except ValueError:
        raise SealedInvalid(_INVALID) from None
    if len(raw) < HEADER_BYTES + suite.enc_length() + TAG_BYTES:
        raise SealedInvalid(_INVALID)
    return Header(suite, raw[5:HEADER_BYTES].hex()), raw[HEADER_BYTES:]


def header(text: str) -> Header:
    """The suite and key id a blob names (SealedInvalid if it is not a blob at all)."""
    return _decode(text)[0]


def digest(text: str) -> str:
    """SHA-256 of the blob's text: how the operator knows a blob changed (the blob is public,
    so its digest reveals nothing)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def open_sealed(text: str, place: Place, private: Callable[[Header], tuple[SuiteId, bytes] | None]) -> str:
    """The value sealed in ``text`` for ``place``, or :class:`SealedInvalid`.

    ``private`` returns the (suite, private key bytes) of the key id the header names, or None
    when the store has no such key (never existed, or pruned): that is reported like any other
    failure, so probing key ids learns nothing.
    """
    head, body = _decode(text)
    found = private(head)
    if found is None or found[0] is not head.suite:
        raise SealedInvalid(_INVALID)
    try:
        key = private_key(found[0], found[1])
        plain = head.suite.hpke().decrypt(body, key, info=info(head.suite, place, head.key_id))
        return plain.decode("utf-8")
    except (InvalidTag, ValueError, UnicodeDecodeError):
        raise SealedInvalid(_INVALID) from None
