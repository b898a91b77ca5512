"""KEK providers, one module each; :func:`build_keyring` picks one from the settings.

Vendor clients (boto3, hvac) are imported lazily inside their provider module, so a local-only
install does not need them.
"""

from __future__ import annotations

from strongroom.config import Settings
from strongroom.errors import ConfigError
from strongroom.keyring.base import Keyring, WrappedSeed
from strongroom.keyring.local import LocalKeyring


def build_keyring(settings: Settings) -> Keyring:
    """The keyring that wraps new data keys, as STRONGROOM_KEK names it."""
    spec = settings.kek
    if spec.provider == "local":
        if settings.master_key is None:
            raise ConfigError(
                "STRONGROOM_KEK=local needs STRONGROOM_MASTER_KEY or STRONGROOM_MASTER_KEY_FILE "
                "(64 hex characters; generate one with `strongroom keygen`)"
            )
        return LocalKeyring(settings.master_key)
    raise ConfigError(f"STRONGROOM_KEK: provider {spec.provider!r} is not available yet")


__all__ = ["Keyring", "LocalKeyring", "WrappedSeed", "build_keyring"]
