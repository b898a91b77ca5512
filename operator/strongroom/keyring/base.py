"""The keyring interface: what a key-encryption key (KEK) provider must do.

A keyring wraps and unwraps 32-byte data key seeds. It never sees secret values: those are
encrypted under per-version DEKs derived from a seed (see :mod:`strongroom.crypto.envelope`),
so a KEK is called once per data key, not once per secret.

Beside every wrapped seed the store records ``provider``, ``kek_id`` and ``kek_version`` as
returned in :class:`WrappedSeed`, so a seed can be unwrapped later whatever KEK is configured
for new writes by then.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from collections.abc import Callable, Mapping
from typing import Protocol, TypeVar, runtime_checkable

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class WrappedSeed:
    """A data key seed as the KEK left it, plus which KEK that was."""

    provider: str
    kek_id: str
    kek_version: str
    ciphertext: bytes = dataclasses.field(repr=False)


@runtime_checkable
class Keyring(Protocol):
    """A KEK provider. Methods are keyword-only so call sites read unambiguously."""

    @property
    def provider(self) -> str:
        """``local``, ``awskms`` or ``vault``."""

    @property
    def kek_id(self) -> str:
        """Stable, non-secret identifier of the KEK (a fingerprint, ARN or transit key)."""

    def wrap(self, *, seed: bytes, context: Mapping[str, str]) -> WrappedSeed:
        """Encrypt ``seed`` under the KEK, bound to ``context`` (raises WrapError)."""

    def unwrap(self, *, wrapped: WrappedSeed, context: Mapping[str, str]) -> bytes:
        """Recover the seed; the same ``context`` must be given (raises UnwrapError)."""


def context_bytes(context: Mapping[str, str]) -> bytes:
    """Canonical encoding of an encryption context, for providers that take raw AAD."""
    return json.dumps(dict(context), sort_keys=True, separators=(",", ":")).encode("utf-8")


def retry_transient(
    call: Callable[[], T],
    *,
    is_transient: Callable[[BaseException], bool],
    attempts: int = 5,
    base_delay: float = 0.2,
    max_delay: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``call``, retrying transient failures with full-jitter exponential backoff."""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as exc:
            if attempt == attempts or not is_transient(exc):
                raise
            sleep(random.uniform(0, min(max_delay, base_delay * 2 ** (attempt - 1))))  # noqa: S311
    raise AssertionError("unreachable")  # pragma: no cover
