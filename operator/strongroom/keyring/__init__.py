"""KEK providers, one module each; :func:`build_keyring` picks one from the settings.

Vendor clients (boto3, hvac) are imported lazily inside their provider module, so a local-only
install does not need them. :class:`KeyringSet` finds the keyring that can unwrap a stored seed
among the configured KEKs (STRONGROOM_KEK and STRONGROOM_KEK_PREVIOUS): each ``data_keys`` and
``audit_keys`` row records the provider and KEK that wrapped it, but only says which of those
to use; a row naming any other KEK is refused before that KEK is contacted.
"""

from __future__ import annotations

import dataclasses
import threading

from strongroom.config import KekSpec, Settings
from strongroom.errors import ConfigError, IntegrityError, UnwrapError
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
    """The configured KEKs, and no other: STRONGROOM_KEK, then STRONGROOM_KEK_PREVIOUS.

    A stored seed's row names the KEK that wrapped it, but a row is data anyone with write
    access to the database can change: followed blindly, an inserted row naming the attacker's
    own KMS key made the process send it a Decrypt request, signed with the process's
    credentials. So a row picks among the configured keyrings only; a row naming anything else
    is an :class:`IntegrityError` raised before any call. Previous KEKs are built on first need.
    """

    def __init__(self, settings: Settings, primary: Keyring) -> None:
        self._settings = settings
        self.primary = primary
        self._rings: list[Keyring] = [primary]
        self._pending: list[KekSpec] = [
            spec for spec in settings.kek_previous if spec != settings.kek
        ]
        self._lock = threading.Lock()

    def allow(self, ring: Keyring) -> None:
        """Admit one more KEK for the life of this process (``kek rotate --to`` its target)."""
        with self._lock:
            self._rings.append(ring)

    def for_wrapped(self, wrapped: WrappedSeed, *, owner: str) -> Keyring:
        """The configured keyring that ``wrapped`` names; ``owner`` says whose seed it is."""
        with self._lock:
            for ring in self._rings:
                if _names(ring, wrapped):
                    return ring
            for spec in [s for s in self._pending if s.provider == wrapped.provider]:
                try:
                    ring = keyring_for(self._settings, spec.provider, spec.key)
                except ConfigError as exc:
                    raise UnwrapError(
                        f"STRONGROOM_KEK_PREVIOUS names {spec}, which cannot be used here: {exc}"
                    ) from None
                self._pending.remove(spec)
                self._rings.append(ring)
                if _names(ring, wrapped):
                    return ring
        named = _printable(f"{wrapped.provider}:{wrapped.kek_id}")
        raise IntegrityError(
            f"{_printable(owner)} names a KEK outside the configured set ({named}); "
            "if that KEK is yours, add it to STRONGROOM_KEK_PREVIOUS"
        )


def _names(ring: Keyring, wrapped: WrappedSeed) -> bool:
    # One master key is configured at a time: a local row with another fingerprint is the
    # local keyring's to refuse ("wrong STRONGROOM_MASTER_KEY"), and it calls nobody.
    if ring.provider != wrapped.provider:
        return False
    return wrapped.provider == "local" or ring.kek_id == wrapped.kek_id


def _printable(text: str, limit: int = 160) -> str:
    """Row contents in a message: escaped (no control characters) and short."""
    shown = ascii(text)[1:-1]
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


__all__ = ["Keyring", "KeyringSet", "LocalKeyring", "WrappedSeed", "build_keyring", "keyring_for"]
