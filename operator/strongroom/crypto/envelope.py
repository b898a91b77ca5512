"""The envelope format: how one value version is encrypted.

Stored format (version 1), one row of ``secret_versions`` per key and version::

    salt        32 random bytes
    nonce       12 random bytes (96-bit AES-GCM nonce)
    ciphertext  AES-256-GCM(DEK, nonce, plaintext, AAD) including the 16-byte tag

    DEK = HKDF-SHA256(ikm=seed, salt=salt, info=b"strongroom/dek/v1", length=32)
    AAD = b"strongroom/v1" || for each of (format, namespace, name, key, version, data_key_id):
          uint32_be(len(field)) || utf8(field)

``seed`` is the 32-byte data key seed of the ``data_keys`` row named by ``data_key_id``; it
is wrapped by the KEK at rest and only ever unwrapped into memory.

Why a DEK per version: a random 96-bit nonce under one key is only safe for about 2**32
messages; deriving a fresh key per version from a random 256-bit salt removes that bound, so a
seed can be used for millions of writes and KEK calls stay rare (the Kubernetes KMS v2 idea).

Why the AAD: the ciphertext is bound to where it lives. A row copied onto another secret, key,
version or tenant fails authentication, which is reported as a bare :class:`IntegrityError`
that never says which part differed.
"""

from __future__ import annotations

import dataclasses
import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from strongroom.errors import IntegrityError

FORMAT_VERSION = 1
SEED_BYTES = 32
SALT_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
_AAD_PREFIX = b"strongroom/v1"
_HKDF_INFO = b"strongroom/dek/v1"


@dataclasses.dataclass(frozen=True)
class Identity:
    """Where a value lives; bound into the ciphertext as associated data."""

    namespace: str
    name: str
    key: str
    version: int
    data_key_id: str

    def aad(self, format_version: int = FORMAT_VERSION) -> bytes:
        fields = (
            str(format_version),
            self.namespace,
            self.name,
            self.key,
            str(self.version),
            self.data_key_id,
        )
        parts = [_AAD_PREFIX]
        for field in fields:
            raw = field.encode("utf-8")
            parts.append(struct.pack(">I", len(raw)))
            parts.append(raw)
        return b"".join(parts)


@dataclasses.dataclass(frozen=True)
class Sealed:
    """The stored pieces of one encrypted value."""

    salt: bytes
    nonce: bytes
    ciphertext: bytes
    format_version: int = FORMAT_VERSION


def new_seed() -> bytes:
    """32 random bytes from the OS CSPRNG: the secret behind one ``data_keys`` row."""
    return os.urandom(SEED_BYTES)


def derive_dek(seed: bytes, salt: bytes) -> bytes:
    if len(seed) != SEED_BYTES:
        raise IntegrityError("data key seed has the wrong length")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=_HKDF_INFO).derive(seed)


def seal(seed: bytes, identity: Identity, plaintext: bytes) -> Sealed:
    salt = os.urandom(SALT_BYTES)
    nonce = os.urandom(NONCE_BYTES)
    dek = derive_dek(seed, salt)
    ciphertext = AESGCM(dek).encrypt(nonce, plaintext, identity.aad())
    return Sealed(salt=salt, nonce=nonce, ciphertext=ciphertext)


def open_sealed(seed: bytes, identity: Identity, sealed: Sealed) -> bytes:
    """Decrypt and authenticate; any mismatch is one bare IntegrityError."""
    if (
        sealed.format_version != FORMAT_VERSION
        or len(sealed.salt) != SALT_BYTES
        or len(sealed.nonce) != NONCE_BYTES
        or len(sealed.ciphertext) < TAG_BYTES
    ):
        raise IntegrityError("stored value is malformed")
    dek = derive_dek(seed, sealed.salt)
    try:
        return AESGCM(dek).decrypt(sealed.nonce, sealed.ciphertext, identity.aad())
    except InvalidTag:
        raise IntegrityError("stored value failed authentication") from None
