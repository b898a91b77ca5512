"""``data[].fromManagedSecret``: a key whose value is another ManagedSecret's stored key.

The value is read from the store at every sync, never copied into the dependant's own record:
the store keeps one copy, a change of the source reaches every dependant (the operator re-syncs
them when the store watch sees the source change), and a reference that loses its right to
the value (a revoked grant) stops carrying it at once.

A source key must be *stored* in its ManagedSecret. One that is itself composed there is
refused (:class:`ChainRefusedError`): the right to read a ManagedSecret's values (what the
admission policy asks, what a grant gives) covers its stored keys, as the values API does, not
what it reads from elsewhere; following the chain would let a tenant reach a value through a
name they may read. The chain is walked all the same, up to :data:`MAX_HOPS` hops and without
reading any value, so that a cycle is named as one (:class:`CompositionCycleError`,
``Ready=False CompositionCycle``).

Who may read what (docs/security.md, "Composition and grants"):

- **Inside a namespace**, the ManagedSecret's author must be able to read the source's values
  (``get`` on ``managedsecrets/values`` of that name): the admission policy asks the apiserver's
  authorizer when the ManagedSecret is created or its spec changes. The operator cannot know
  the author at sync time, so this check is the policy's alone.
- **Across namespaces**, only while the source's namespace holds a :data:`GRANT_KIND` that names
  the reading namespace in ``spec.from`` and the source's name in ``spec.to``, checked here at
  every hop of every sync. Without one the sync fails with :class:`GrantMissingError`, and the
  caller withdraws what the Secret holds (it keeps nothing it may no longer have). Creating a grant is
  itself policed: the admission policy requires its author to read the values it shares.
- Values bound to a namespace UID (:mod:`strongroom.bindings`) are read with the source
  namespace's UID, so a source namespace created again under the same name shares nothing.

Every source read is audited on the source, as ``operator.compose`` with the dependant named in
the detail.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NoReturn

from kubernetes.client import CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from strongroom.api import Strongroom
from strongroom.errors import StrongroomError
from strongroom.kubewrites import read_json
from strongroom.namespaceids import NamespaceIdentities
from strongroom.policy import SpecRefusedError
from strongroom.resources import GRANT_KIND, GRANT_PLURAL, GROUP, PLURAL, VERSION
from strongroom.spec import DataItem, Reference, parse_reference

__all__ = [
    "GRANT_KIND", "GRANT_PLURAL", "MAX_HOPS", "ChainRefusedError", "Composer",
    "CompositionCycleError",
    "CompositionError", "GrantMissingError", "SourceMissingError", "granted", "references_of",
]  # fmt: skip

MAX_HOPS = 8
COMPOSE_ACTION = "operator.compose"


class CompositionError(StrongroomError):
    """A composed key cannot be resolved; the message names references, never values."""


class CompositionCycleError(CompositionError):
    """The references come back to a key already on the chain (or go on for too long)."""


class ChainRefusedError(CompositionError):
    """The source key is composed in its own ManagedSecret: compose from where it is stored."""


class GrantMissingError(CompositionError):
    """Another namespace's value without a grant that allows it (now: revoked or never given)."""


class SourceMissingError(CompositionError):
    """The source ManagedSecret, or its stored key, does not exist (yet)."""


def granted(grants: Iterable[Mapping[str, Any]], reader: str, name: str) -> bool:
    """Whether any grant lets namespace ``reader`` read the ManagedSecret ``name``.

    A grant (``spec.from[].namespace``, ``spec.to[].name``) names both explicitly: there is no
    wildcard, so a grant cannot share more than its author wrote down.
    """
    for grant in grants:
        spec = grant.get("spec") if isinstance(grant, Mapping) else None
        if not isinstance(spec, Mapping):
            continue
        readers = {f.get("namespace") for f in spec.get("from") or () if isinstance(f, Mapping)}
        names = {t.get("name") for t in spec.get("to") or () if isinstance(t, Mapping)}
        if reader in readers and name in names:
            return True
    return False


def references_of(spec: Mapping[str, Any], namespace: str) -> frozenset[tuple[str, str]]:
    """The ManagedSecrets (namespace, name) a spec composes from, read leniently: for the
    operator's index of dependants, not for a sync."""
    found: set[tuple[str, str]] = set()
    for raw in spec.get("data") or ():
        ref = raw.get("fromManagedSecret") if isinstance(raw, Mapping) else None
        if isinstance(ref, Mapping) and isinstance(ref.get("name"), str):
            where = ref.get("namespace")
            found.add((where if isinstance(where, str) and where else namespace, ref["name"]))
    return frozenset(found)


def _composed(body: Mapping[str, Any], key: str) -> Reference | None:
    """The reference ``key`` takes its value from in the ManagedSecret ``body``, if it does."""
    for raw in (body.get("spec") or {}).get("data") or ():
        if isinstance(raw, Mapping) and raw.get("key") == key:
            try:
                return parse_reference(key, raw.get("fromManagedSecret"))
            except SpecRefusedError:  # that object's own sync says what is wrong with it
                raise SourceMissingError(f"the source's data[{key}] is invalid") from None
    return None


class Composer:
    """Resolves a spec's ``fromManagedSecret`` keys for one sync: made anew for each (it keeps
    that sync's reads, and reconciles run in parallel threads)."""

    def __init__(self, room: Strongroom, custom: CustomObjectsApi,
                 namespace_ids: NamespaceIdentities, *, actor: str,
                 watched: frozenset[str] | None = None) -> None:  # fmt: skip
        self.watched = watched  # the operator's namespaces (None: all): grants it can follow
        self.room = room
        self.custom = custom
        self.namespace_ids = namespace_ids
        self.actor = actor
        # What this sync has read: one read per source, however many keys come from it.
        self._bodies: dict[tuple[str, str], Mapping[str, Any] | None] = {}
        self._data: dict[tuple[str, str], Mapping[str, Any]] = {}
        # One list of grants per source namespace a sync: 256 keys of 8 hops each would
        # otherwise be 2048 list requests for one reconcile, repeated at every grant event.
        self._grants: dict[str, list[Mapping[str, Any]]] = {}

    def values(self, namespace: str, name: str, items: Iterable[DataItem]) -> dict[str, Any]:
        """Each composed key's value. Raises a :class:`CompositionError` for the first that
        cannot be resolved (:class:`GrantMissingError` before any other, so a revoked grant is
        never hidden behind another failure)."""
        wanted = [item for item in items if item.from_managed_secret is not None]
        found: dict[str, Any] = {}
        failures: list[CompositionError] = []
        for item in wanted:
            assert item.from_managed_secret is not None  # noqa: S101 - filtered above
            try:
                found[item.key] = self._follow(namespace, name, item.key, item.from_managed_secret)
            except CompositionError as exc:
                failures.append(exc)
        if failures:
            raise next((f for f in failures if isinstance(f, GrantMissingError)), failures[0])
        return found

    def check_grants(self, namespace: str, references: Iterable[tuple[str, str]]) -> None:
        """Raise :class:`GrantMissingError` if a reference to another namespace is not granted;
        called before anything else in a sync, so that no early end of it (a refused spec, a
        failed import, CreatedOnce) leaves a revoked value in the Secret."""
        for source, name in sorted(references):
            if source != namespace:
                self._check_grant(source, namespace, name, f"fromManagedSecret {source}/{name}")

    def _check_grant(self, source: str, reader: str, name: str, what: str) -> None:
        if self.watched is not None and source not in self.watched:
            raise GrantMissingError(
                f"{what}: namespace {source} is not watched by this operator, which so cannot "
                "follow its grants (run it for that namespace too, or --all-namespaces)")  # fmt: skip
        if not self._granted(source, reader, name):
            raise GrantMissingError(
                f"{what}: namespace {source} grants {reader} no access to {name} (a "
                f"{GRANT_KIND} in {source} naming {reader} in spec.from and {name} in spec.to)")  # fmt: skip

    def _follow(self, namespace: str, name: str, key: str, ref: Reference) -> Any:
        source = ref.namespace or namespace
        if source != namespace:
            self._check_grant(source, namespace, ref.name, f"data[{key}]")
        body = self._managed_secret(source, ref.name)
        if body is None:
            raise SourceMissingError(f"data[{key}]: ManagedSecret {source}/{ref.name} does not "
                                     "exist")  # fmt: skip
        onward = _composed(body, ref.key)
        if onward is not None:
            self._refuse_chain(namespace, name, key, ref, onward)
        return self._stored(source, ref, body, (namespace, name, key))

    def _refuse_chain(self, namespace: str, name: str, key: str, ref: Reference,
                      onward: Reference) -> NoReturn:  # fmt: skip
        """Walk a chain (specs only, no values) to name a cycle; refuse it either way."""
        here = ref.namespace or namespace
        chain = [(namespace, name, key), (here, ref.name, ref.key)]
        step: Reference | None = onward
        while step is not None and len(chain) <= MAX_HOPS:
            node = (step.namespace or here, step.name, step.key)
            shown = " -> ".join(f"{n}/{m}.{k}" for n, m, k in [*chain, node])
            if node in chain:
                raise CompositionCycleError(f"data[{key}]: fromManagedSecret goes round in a "
                                            f"cycle ({shown})")  # fmt: skip
            chain.append(node)
            here = node[0]
            body = self._managed_secret(node[0], node[1])
            step = None if body is None else _composed(body, node[2])
        raise ChainRefusedError(
            f"data[{key}]: {ref.where(namespace)} is itself composed there (from "
            f"{onward.where(ref.namespace or namespace)}); compose from the ManagedSecret that "
            "stores the value")  # fmt: skip

    def _granted(self, source: str, reader: str, name: str) -> bool:
        if source not in self._grants:
            listing = read_json(self.custom.list_namespaced_custom_object(
                GROUP, VERSION, source, GRANT_PLURAL, _preload_content=False))  # fmt: skip
            self._grants[source] = list(listing.get("items") or ())
        return granted(self._grants[source], reader, name)

    def _managed_secret(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        if (namespace, name) not in self._bodies:
            self._bodies[namespace, name] = self._read_managed_secret(namespace, name)
        return self._bodies[namespace, name]

    def _read_managed_secret(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        try:
            body = read_json(self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, _preload_content=False))  # fmt: skip
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        if (body.get("metadata") or {}).get("deletionTimestamp"):
            return None  # going: its values are about to be deleted or released
        return dict(body)

    def _stored(self, source: str, ref: Reference, body: Mapping[str, Any],
                reader: tuple[str, str, str]) -> Any:  # fmt: skip
        """The source's stored key, read as the source's namespace (its UID binding holds)."""
        if (source, ref.name) not in self._data:
            created = (body.get("metadata") or {}).get("creationTimestamp")
            uid = self.namespace_ids.uid(source, created)
            found = self.room.resolve(source, ref.name, lambda _current: {}, actor=self.actor,
                                      action=COMPOSE_ACTION, namespace_uid=uid,
                                      detail=f"for {reader[0]}/{reader[1]}")  # fmt: skip
            self._data[source, ref.name] = found.data if found is not None else {}
        data = self._data[source, ref.name]
        if ref.key not in data:
            raise SourceMissingError(
                f"data[{reader[2]}]: {source}/{ref.name} has no stored key {ref.key} yet"
            )
        return data[ref.key]
