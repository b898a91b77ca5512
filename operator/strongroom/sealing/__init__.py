"""Sealed values (issue 18): values encrypted offline to a public key with HPKE, committed to
Git inside a ManagedSecret, opened only by the store's sealing private key and only for the
namespace, name and key they were sealed for.

:mod:`strongroom.sealing.blob` is the format and the crypto (no store, no Kubernetes);
:mod:`strongroom.sealing.keys` keeps the key pairs in the store through :mod:`strongroom.api`.
"""

from strongroom.sealing.blob import (
    DEFAULT_SUITE,
    Header,
    Place,
    PublicSealingKey,
    SealedInvalid,
    SuiteId,
    digest,
    header,
    open_sealed,
    seal,
)

__all__ = [
    "DEFAULT_SUITE",
    "Header",
    "Place",
    "PublicSealingKey",
    "SealedInvalid",
    "SuiteId",
    "digest",
    "header",
    "open_sealed",
    "seal",
]
