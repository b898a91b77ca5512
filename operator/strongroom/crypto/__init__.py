"""Envelope encryption primitives; no I/O, no knowledge of the store."""

from strongroom.crypto.envelope import (
    FORMAT_VERSION,
    Identity,
    Sealed,
    derive_dek,
    new_seed,
    open_sealed,
    seal,
)

__all__ = ["FORMAT_VERSION", "Identity", "Sealed", "derive_dek", "new_seed", "open_sealed", "seal"]
