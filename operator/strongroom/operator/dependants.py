"""Which ManagedSecrets compose from which (``data[].fromManagedSecret``), so that a change
reaches every dependant within seconds, not at its next refresh.

A dependant re-syncs when its source's stored values change (the store watch), when the source
ManagedSecret goes, and, for a source in another namespace, when a grant of that namespace
changes (created, edited, revoked: :data:`strongroom.sources.composed.GRANT_KIND`). Chains are
followed: a ManagedSecret that composes from one that composes from a changed one re-syncs too.
Only names are kept here, never values; the event loop's thread alone touches it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from strongroom.sources.composed import references_of

Key = tuple[str, str]  # (namespace, name) of a ManagedSecret


class Dependants:
    """An index from each source ManagedSecret to the ManagedSecrets that read from it."""

    def __init__(self) -> None:
        self._sources: dict[Key, frozenset[Key]] = {}  # dependant -> its sources
        self._readers: dict[Key, set[Key]] = {}  # source -> its dependants

    def track(self, key: Key, spec: Mapping[str, Any]) -> None:
        """Record what ``key``'s spec composes from now (replacing what it did before)."""
        sources = references_of(spec, key[0])
        if self._sources.get(key, frozenset()) == sources:
            return
        self.forget(key)
        if sources:
            self._sources[key] = sources
            for source in sources:
                self._readers.setdefault(source, set()).add(key)

    def forget(self, key: Key) -> None:
        for source in self._sources.pop(key, frozenset()):
            readers = self._readers.get(source)
            if readers is not None:
                readers.discard(key)
                if not readers:
                    del self._readers[source]

    def of(self, changed: Iterable[Key]) -> set[Key]:
        """Every ManagedSecret that reads, directly or through others, from ``changed``."""
        found: set[Key] = set()
        todo = list(changed)
        while todo:
            for reader in self._readers.get(todo.pop(), ()):
                if reader not in found:
                    found.add(reader)
                    todo.append(reader)
        return found

    def across(self, namespaces: Iterable[str]) -> set[Key]:
        """Every ManagedSecret that reads from one of ``namespaces`` while outside it (those
        whose grants are in question), and what reads from them."""
        wanted = set(namespaces)
        direct = {reader for source, readers in self._readers.items() if source[0] in wanted
                  for reader in readers if reader[0] != source[0]}  # fmt: skip
        return direct | self.of(direct)
