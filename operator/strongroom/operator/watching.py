"""List, then watch, one resource from a thread, reading the watch stream as raw JSON lines.

The operator's two watches (ManagedSecrets, and the Secrets it manages) go through here rather
than through kopf's watching: kopf turns every event into a cause, a handler invocation, a
logger and a patch context, ≈ 0.3 ms of event-loop CPU each, and a new ManagedSecret brings
two events (its creation and the echo of its status). Here an event costs one ``json.loads``.

The stream resumes from the last resource version it saw (bookmarks included), so a watch that
the apiserver ends after ``timeout_seconds`` continues without a new listing; only an expired
version (410) or a broken connection lists again.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from kubernetes.client.exceptions import ApiException

from strongroom.kubewrites import read_json

log = logging.getLogger("strongroom.operator")

Event = tuple[str | None, dict[str, Any]]  # (None for a listed object, or the watch type; object)
ListCall = Callable[..., Any]  # a kubernetes client list method bound to its resource


class ExpiredError(Exception):
    """The resource version to resume from is gone (410): list again."""


class RawWatch:
    """One resource's list-then-watch loop, for a thread that runs until ``stop`` is set.

    ``watch_timeout`` (connect, read) must outlast ``watch_seconds``, after which the apiserver
    ends a quiet watch itself.

    ``on_events`` gets the events of one chunk of the stream at once (the listing's objects
    with type None, when ``list_items``); ``on_listed`` the full listing's objects' names after
    a complete listing, so the caller can notice objects deleted while it was not watching.
    """

    def __init__(
        self,
        what: str,
        list_call: ListCall,
        *,
        on_events: Callable[[list[Event]], None],
        stop: threading.Event,
        watch_timeout: tuple[float, float],
        on_listed: Callable[[set[str]], None] | None = None,
        list_items: bool = True,
        page_size: int = 500,
        watch_seconds: int = 300,
    ) -> None:
        self.what = what
        self.list_call = list_call
        self.on_events = on_events
        self.on_listed = on_listed
        self.stop = stop
        self.watch_timeout = watch_timeout
        self.list_items = list_items
        self.page_size = page_size
        self.watch_seconds = watch_seconds

    def run(self) -> None:
        """Until stopped: list, then follow the stream; every failure ends in a new listing."""
        version: str | None = None
        while not self.stop.is_set():
            try:
                if version is None:
                    version = self.list()
                version = self.follow(version)
            except ExpiredError:
                version = None
            except ApiException as exc:
                version = None
                if exc.status != 410:  # 410: an expired continue token; list afresh at once
                    log.warning("%s watch: Kubernetes API answered %s", self.what, exc.status)
                    self.stop.wait(2)
            except Exception as exc:  # noqa: BLE001 - a watch must survive apiserver restarts
                log.warning("%s watch interrupted (%s); reconnecting", self.what,
                            type(exc).__name__)  # fmt: skip
                version = None
                self.stop.wait(2)

    def list(self) -> str:
        """List (in pages) and hand the objects on; the resource version to watch from."""
        names: set[str] = set()
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": self.page_size if self.list_items else 1}
            if token:
                kwargs["_continue"] = token
            # The client's default timeout applies (see runtime.with_default_timeout).
            page = read_json(self.list_call(**kwargs, _preload_content=False))
            meta = page.get("metadata") or {}
            if self.list_items:
                items = page.get("items") or []
                names.update(f"{i['metadata'].get('namespace', '')}/{i['metadata']['name']}"
                             for i in items)  # fmt: skip
                if items:
                    self.on_events([(None, item) for item in items])
            token = meta.get("continue")
            if not token or not self.list_items:
                break
        if self.on_listed is not None and self.list_items:
            self.on_listed(names)
        return str(meta["resourceVersion"])

    def follow(self, version: str) -> str:
        """One watch request; returns the resource version to resume from."""
        response = self.list_call(
            watch=True, resource_version=version, allow_watch_bookmarks=True,
            timeout_seconds=self.watch_seconds, _preload_content=False,
            _request_timeout=self.watch_timeout,
        )  # fmt: skip
        try:
            buffer = b""
            for chunk in response.stream(65536, decode_content=False):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                batch: list[Event] = []
                for line in lines:
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    kind, obj = event.get("type"), event.get("object") or {}
                    if kind == "ERROR":
                        if obj.get("code") == 410:
                            raise ExpiredError
                        raise ApiException(status=obj.get("code"), reason=obj.get("reason"))
                    version = (obj.get("metadata") or {}).get("resourceVersion") or version
                    if kind in {"ADDED", "MODIFIED", "DELETED"}:
                        batch.append((kind, obj))
                if batch:
                    self.on_events(batch)
                if self.stop.is_set():
                    break
        finally:
            # The stream may end half-read (stopped, an ERROR event): never give that
            # connection back to the pool as it is.
            response.close()
            response.release_conn()
        return version
