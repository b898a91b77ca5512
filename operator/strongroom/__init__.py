"""Strongroom: secrets envelope-encrypted in a database, synced into Kubernetes Secrets."""

from strongroom.api import SecretInfo, SecretValue, Strongroom
from strongroom.config import Settings
from strongroom.errors import (
    AuditError,
    ConfigError,
    IntegrityError,
    KeyringError,
    NotFound,
    StoreError,
    StrongroomError,
    UnwrapError,
    ValidationError,
    WrapError,
)

__all__ = [
    "AuditError",
    "ConfigError",
    "IntegrityError",
    "KeyringError",
    "NotFound",
    "SecretInfo",
    "SecretValue",
    "Settings",
    "StoreError",
    "Strongroom",
    "StrongroomError",
    "UnwrapError",
    "ValidationError",
    "WrapError",
]
