"""KEK providers, one module each; :func:`build_keyring` picks one from the settings.

Vendor clients (boto3, hvac) are imported lazily inside their provider module, so a local-only
install does not need them. :class:`KeyringSet` finds the keyring that can unwrap a stored seed
whatever STRONGROOM_KEK names now: each ``data_keys`` row records the provider and KEK that
wrapped it.
"""

from __future__ import annotations

import dataclasses
import threading

from strongroom.config import Settings
from strongroom.errors import ConfigError, UnwrapError
from strongroom.keyring.base import Keyring, WrappedSeed
from strongroom.keyring.local import LocalKeyring


def _local(settings: Settings) -> LocalKeyring:
    if settings.master_key is None:
        raise ConfigError(
            "STRONGROOM_KEK=local needs STRONGROOM_MASTER_KEY or STRONGROOM_MASTER_KEY_FILE "
            "(64 hex characters; generate one with `strongroom keygen`)"
        )
    return LocalKeyring(settings.master_key)


def keyring_for(settings: Settings, provider: str, key: str) -> Keyring:
    """A keyring for ``provider``/``key`` configured from the environment."""
    if provider == "local":
        return _local(settings)
    if provider == "awskms":
        try:
            from strongroom.keyring.awskms import AwsKmsConfig, AwsKmsKeyring
        except ImportError:
            raise ConfigError("awskms needs boto3: pip install 'strongroom[aws]'") from None
        return AwsKmsKeyring(AwsKmsConfig(key_id=key, max_attempts=settings.kek_max_attempts))
    if provider == "vault":
        try:
            from strongroom.keyring.vault import VaultConfig, VaultTransitKeyring
        except ImportError:
            raise ConfigError("vault needs hvac: pip install 'strongroom[vault]'") from None
        return VaultTransitKeyring(
            dataclasses.replace(VaultConfig.from_env(key), attempts=settings.kek_max_attempts)
        )
    raise ConfigError(f"unknown KEK provider {provider!r}")


def build_keyring(settings: Settings) -> Keyring:
    """The keyring that wraps new data keys, as STRONGROOM_KEK names it."""
    return keyring_for(settings, settings.kek.provider, settings.kek.key)


class KeyringSet:
    """The primary keyring plus, built on demand and cached, any other KEK a stored seed names."""

    def __init__(self, settings: Settings, primary: Keyring) -> None:
        self._settings = settings
        self.primary = primary
        self._others: dict[tuple[str, str], Keyring] = {}
        self._lock = threading.Lock()

    def for_wrapped(self, wrapped: WrappedSeed) -> Keyring:
        primary = self.primary
        if wrapped.provider == primary.provider and (
            wrapped.provider == "local" or wrapped.kek_id == primary.kek_id
        ):
            return primary
        key = (wrapped.provider, wrapped.kek_id)
        with self._lock:
            ring = self._others.get(key)
            if ring is None:
                try:
                    ring = keyring_for(self._settings, wrapped.provider, wrapped.kek_id)
                except ConfigError as exc:
                    raise UnwrapError(
                        f"a data key is wrapped by the {wrapped.provider} KEK "
                        f"{wrapped.kek_id}, which cannot be used here: {exc}"
                    ) from None
                self._others[key] = ring
            return ring


__all__ = ["Keyring", "KeyringSet", "LocalKeyring", "WrappedSeed", "build_keyring", "keyring_for"]
