"""One error root for everything Strongroom raises on purpose.

Callers at the edges (the CLI, the kopf handlers) catch :class:`StrongroomError` and turn it
into one line on stderr or a condition on a resource. Messages are written for the person
operating Strongroom: they name what was wrong and what to do, and they never carry a secret
value, key material or a provider's raw response body.
"""

from __future__ import annotations


class StrongroomError(Exception):
    """Root of every deliberate Strongroom failure."""


class ConfigError(StrongroomError):
    """A setting (environment variable, flag, file) is missing or malformed."""


class ValidationError(StrongroomError):
    """An input (name, key, value, argument) breaks a rule; nothing was written."""


class NotFound(StrongroomError):  # noqa: N818 - the name reads as the condition it reports
    """The secret, key or version asked for does not exist."""


class AlreadyExists(StrongroomError):  # noqa: N818 - reads as the condition it reports
    """A create-only write found the secret already there."""


class NamespaceMismatch(StrongroomError):  # noqa: N818 - reads as the condition it reports
    """The stored values belong to an earlier namespace of the same name (another UID).

    A namespace deleted and created again, perhaps by another tenant, must not inherit what the
    first one stored; an administrator hands the values over with ``strongroom secret rebind``.
    """


class KeyringError(StrongroomError):
    """The key-encryption key could not be used."""


class WrapError(KeyringError):
    """Wrapping a data key seed with the KEK failed."""


class UnwrapError(KeyringError):
    """Unwrapping a data key seed failed: wrong KEK, KEK unavailable or tampered seed."""


class IntegrityError(StrongroomError):
    """Stored ciphertext does not authenticate.

    Deliberately says nothing about which byte or field was wrong (as fernet's InvalidToken).
    """


class AuditError(StrongroomError):
    """The audit event could not be written, so the operation did not happen (fail closed)."""


class StoreError(StrongroomError):
    """The database could not be reached or refused the operation."""


class TemplateError(StrongroomError):
    """A template of ``spec.target.template`` failed: which key, which line, what kind of
    failure. Never the underlying exception's text, which may quote a value."""

    def __init__(self, key: str, line: int | None, what: str) -> None:
        self.key, self.line, self.what = key, line, what
        where = f"line {line}" if line is not None else "unknown line"
        super().__init__(f"template {key!r}, {where}: {what}")


__all__ = [
    "AlreadyExists",
    "AuditError",
    "ConfigError",
    "IntegrityError",
    "KeyringError",
    "NamespaceMismatch",
    "NotFound",
    "StoreError",
    "StrongroomError",
    "TemplateError",
    "UnwrapError",
    "ValidationError",
    "WrapError",
]
