"""``data[].database``: what a ManagedSecret asks of a DatabaseEngine, as the operator reads it.

Checked here (and by the CRD's schema) before anything reaches the engine: the engine and role
template are names (DNS labels), never SQL; the TTL is held between :data:`MIN_TTL` and
:data:`MAX_TTL` (Vault's ``max_ttl`` default: a leaked credential dies within a day at worst).

``STRONGROOM_TEST_MIN_DATABASE_TTL`` (seconds) lowers the floor **for tests only**: the
renewal tests need a credential a few seconds long; a deployment has no reason to set it, and
docs/security.md says what it costs (a renewal storm on the engine).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable
from datetime import timedelta

from strongroom import policy, validate
from strongroom.errors import ValidationError

__all__ = ["MAX_TTL", "MIN_TTL", "STRATEGIES", "DatabaseItem", "check_database_keys",
           "min_ttl", "parse_database"]  # fmt: skip

STRATEGIES = ("rotate", "alternate")
MIN_TTL = timedelta(minutes=5)
MAX_TTL = timedelta(hours=24)
TEST_MIN_TTL_ENV = "STRONGROOM_TEST_MIN_DATABASE_TTL"
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@dataclasses.dataclass(frozen=True)
class DatabaseItem:
    """A credential issued by ``engine`` from its role template ``role``; the item's own key
    holds the DSN, ``username_key`` and ``password_key`` the other two values."""

    engine: str
    role: str
    ttl: timedelta
    strategy: str = "rotate"
    username_key: str = "username"
    password_key: str = "password"  # noqa: S105 - a key name, not a password

    @property
    def renew_after(self) -> timedelta:
        """A new credential is issued once two thirds of the TTL have passed."""
        return self.ttl * 2 / 3


def min_ttl() -> timedelta:
    """The TTL floor: :data:`MIN_TTL`, or the test-only override (at least one second)."""
    override = os.environ.get(TEST_MIN_TTL_ENV)
    if override:
        try:
            return timedelta(seconds=max(1.0, float(override)))
        except ValueError:
            return MIN_TTL
    return MIN_TTL


def parse_database(key: str, raw: object) -> DatabaseItem | None:
    if raw is None:
        return None
    field = f"data[{key}].database"
    if not isinstance(raw, dict):
        raise policy.SpecRefusedError(f"{field} must be an object")
    for name in ("engine", "role"):
        value = raw.get(name)
        if not isinstance(value, str) or len(value) > 63 or not _NAME.match(value):
            raise policy.SpecRefusedError(f"{field}.{name} must be a DNS label (a name, not SQL)")
    ttl = policy.duration(f"{field}.ttl", raw.get("ttl") or "1h", min_ttl())
    if ttl > MAX_TTL:
        raise policy.SpecRefusedError(f"{field}.ttl must be at most {MAX_TTL}")
    strategy = raw.get("strategy") or "rotate"
    if strategy not in STRATEGIES:
        raise policy.SpecRefusedError(f"{field}.strategy must be one of {', '.join(STRATEGIES)}")
    keys = []
    for name, default in (("usernameKey", "username"), ("passwordKey", "password")):
        value = raw.get(name) or default
        try:
            validate.key(value, write=True)
        except ValidationError as exc:
            raise policy.SpecRefusedError(f"{field}.{name}: {exc}") from None
        keys.append(str(value))
    return DatabaseItem(raw["engine"], raw["role"], ttl, str(strategy), keys[0], keys[1])


def check_database_keys(items: Iterable[tuple[str, DatabaseItem | None]]) -> None:
    """A database item's username and password keys are its own: no other item may name them."""
    keys: list[str] = []
    for key, database in items:
        keys.append(key)
        if database is not None:
            keys += [database.username_key, database.password_key]
    clash = sorted({k for k in keys if keys.count(k) > 1})
    if clash:
        raise policy.SpecRefusedError(f"data: key {clash[0]} is given more than once (a database "
                                      "item also writes its usernameKey and passwordKey)")  # fmt: skip
