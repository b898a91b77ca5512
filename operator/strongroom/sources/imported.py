"""``data[].fromSecret``: a value imported once from a key of an existing Secret of the same
namespace (a migration path: later changes of that Secret are not followed).

Only a key not in the store yet is imported. Token Secrets are refused
(:func:`strongroom.policy.import_refusal`): a ServiceAccount token must not become a stored
value that outlives it. The admission policy checks the author's ``get`` (and ``delete`` with
``deleteSource``) on the source Secret; the operator reads only its own namespace.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from kubernetes.client import CoreV1Api

from strongroom import policy
from strongroom.errors import StrongroomError
from strongroom.letgo import read_secret
from strongroom.spec import DataItem

__all__ = ["ImportFailedError", "Imported", "import_missing"]


class ImportFailedError(StrongroomError):
    """A source that cannot be imported. ``missing``: it may appear later (retry soon);
    ``refused``: a token Secret, refused whatever happens until the spec changes; neither: the
    value is not text (retried with backoff, as the Secret may be fixed)."""

    def __init__(self, message: str, *, missing: bool = False, refused: bool = False) -> None:
        super().__init__(message)
        self.missing, self.refused = missing, refused


@dataclasses.dataclass
class Imported:
    """What an import pass read: values to store, Events to post, sources to delete after."""

    values: dict[str, Any] = dataclasses.field(default_factory=dict)
    events: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)
    delete: list[str] = dataclasses.field(default_factory=list)


def import_missing(core: CoreV1Api, namespace: str, items: Iterable[DataItem],
                   stored: Mapping[str, Any]) -> Imported:  # fmt: skip
    """Read every ``fromSecret`` key that is not stored yet; raises :class:`ImportFailedError`."""
    found = Imported()
    for item in items:
        if item.from_secret is None or item.key in stored:
            continue
        name, key = item.from_secret["name"], item.from_secret["key"]
        source = read_secret(core, namespace, name)
        refusal = policy.import_refusal(None if source is None else source.get("type"), name)
        if refusal is not None:
            raise ImportFailedError(refusal, refused=True)
        raw = None if source is None else (source.get("data") or {}).get(key)
        if raw is None:
            raise ImportFailedError(f"fromSecret {name}/{key} for key {item.key} does not exist",
                                    missing=True)  # fmt: skip
        try:
            found.values[item.key] = base64.b64decode(raw).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            raise ImportFailedError(f"fromSecret value for key {item.key} is not UTF-8 text") from None
        found.events.append(("Normal", "Imported", f"imported {item.key} from Secret {name}"))
        if item.from_secret.get("deleteSource"):
            found.delete.append(name)
    return found
