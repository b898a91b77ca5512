"""The UID of the namespace a ManagedSecret lives in, for :mod:`strongroom.bindings`.

A namespace's name outlives it (deleted, then created again by someone else); its UID does not.
The UID is read from the apiserver (``get`` on the namespace) and kept per namespace name
together with the apiserver's time of that read (its ``Date`` header). A cached UID answers for
a ManagedSecret created strictly before that read: such an object was created in the namespace
instance that existed then (had that instance been deleted since, the object would be gone
too). A ManagedSecret created at or after the read asks again, so a namespace deleted and
created again is never answered from the cache. In a burst of new objects that is one read per
namespace per second at most.
"""

from __future__ import annotations

import threading
from datetime import datetime
from email.utils import parsedate_to_datetime

from kubernetes.client import CoreV1Api

from strongroom.kubewrites import read_json


class NamespaceIdentities:
    def __init__(self, core: CoreV1Api, *, trust_names: bool = False) -> None:
        """``trust_names``: answer None, so that nothing is checked or bound (a restored
        cluster, or several clusters sharing one store: operator flag ``--trust-namespace-names``)."""
        self.core = core
        self.trust_names = trust_names
        self._known: dict[str, tuple[str, datetime]] = {}
        self._lock = threading.Lock()

    def uid(self, namespace: str, created: str | None) -> str | None:
        """The UID of ``namespace`` for an object created at ``created`` (its
        ``creationTimestamp``); raises the client's ApiException when it cannot be read."""
        if self.trust_names:
            return None
        born = parse_time(created)
        with self._lock:
            known = self._known.get(namespace)
        if known is not None and born is not None and born < known[1]:
            return known[0]
        response = self.core.read_namespace(namespace, _preload_content=False)
        date = response.headers.get("Date")
        uid = str(read_json(response)["metadata"]["uid"])
        read_at = _parse_http_date(date)
        if read_at is not None:
            with self._lock:
                if namespace not in self._known or self._known[namespace][1] < read_at:
                    self._known[namespace] = (uid, read_at)
        return uid


def parse_time(text: str | None) -> datetime | None:
    """A Kubernetes timestamp (RFC 3339, ``Z``); None when absent or malformed."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _parse_http_date(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
