"""The ``local`` KEK: a 32-byte master key held by the operator (env var or mounted file).

Wrapped seed format: ``nonce (12 bytes) || AES-256-GCM(master, nonce, seed, AAD)`` with
``AAD = b"strongroom/kek/local/v1" || canonical JSON of the context`` (the data key id).

``kek_id`` is a fingerprint (``local:`` + 16 hex chars of HMAC-SHA256(master, label)), so a
wrong master key is reported as such before any decryption is tried, and the key itself never
appears anywhere.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from strongroom.errors import ConfigError, UnwrapError
from strongroom.keyring.base import WrappedSeed, context_bytes
from strongroom.metrics import kek_call

PROVIDER = "local"
_AAD_PREFIX = b"strongroom/kek/local/v1"
_NONCE = 12


def fingerprint(master_key: bytes) -> str:
    digest = hmac.new(master_key, b"strongroom/kek-fingerprint/v1", hashlib.sha256).hexdigest()
    return f"local:{digest[:16]}"


class LocalKeyring:
    """AES-256-GCM under a master key that never leaves this process."""

    def __init__(self, master_key: bytes) -> None:
        if len(master_key) != 32:
            raise ConfigError("the local master key must be 32 bytes (64 hex characters)")
        self._aead = AESGCM(master_key)
        self._kek_id = fingerprint(master_key)

    def __repr__(self) -> str:
        return f"LocalKeyring(kek_id={self._kek_id!r})"

    @property
    def provider(self) -> str:
        return PROVIDER

    @property
    def kek_id(self) -> str:
        return self._kek_id

    def wrap(self, *, seed: bytes, context: Mapping[str, str]) -> WrappedSeed:
        nonce = os.urandom(_NONCE)
        with kek_call(PROVIDER, "wrap"):
            sealed = self._aead.encrypt(nonce, seed, _AAD_PREFIX + context_bytes(context))
        return WrappedSeed(PROVIDER, self._kek_id, "", nonce + sealed)

    def unwrap(self, *, wrapped: WrappedSeed, context: Mapping[str, str]) -> bytes:
        if wrapped.kek_id != self._kek_id:
            raise UnwrapError(
                f"data key {context.get('data_key_id', '?')} was wrapped by local KEK "
                f"{wrapped.kek_id}, but the configured master key is {self._kek_id}: "
                "wrong STRONGROOM_MASTER_KEY"
            )
        blob = wrapped.ciphertext
        try:
            with kek_call(PROVIDER, "unwrap"):
                return self._aead.decrypt(
                    blob[:_NONCE], blob[_NONCE:], _AAD_PREFIX + context_bytes(context)
                )
        except InvalidTag:
            raise UnwrapError(
                f"data key {context.get('data_key_id', '?')} does not unwrap under local KEK "
                f"{self._kek_id}: the wrapped seed was altered"
            ) from None
