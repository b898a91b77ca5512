"""What the store's calls return: a decrypted version (its ``repr`` never shows the data) and
a listing entry (names and metadata only)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime
from typing import Any


@dataclasses.dataclass(frozen=True)
class SecretValue:
    """A decrypted version of a secret. ``repr`` never shows the data."""

    namespace: str
    name: str
    version: int
    data: Mapping[str, Any] = dataclasses.field(repr=False)
    description: str = ""


@dataclasses.dataclass(frozen=True)
class SecretInfo:
    """What ``list`` shows: names and metadata, never values."""

    namespace: str
    name: str
    version: int
    keys: tuple[str, ...]
    description: str
    updated_at: datetime
