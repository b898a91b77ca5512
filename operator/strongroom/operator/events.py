"""Kubernetes Events, posted from one background thread behind the work that caused them.

Why: an Event is a note for people reading ``kubectl describe``; the Secret and the status are
what pods and tools act on. Posting an Event costs the apiserver and etcd about as much as
writing the Secret itself, so when reconcile threads posted their own Events, a burst of new
ManagedSecrets took ≈ 25 % longer to become Ready. Reconciles now queue their Events and go on;
this thread posts them as soon as no reconcile is running, and never later than ``max_delay``
after they happened, so a steady stream of work delays Events a little but cannot starve them.

Like client-go's event recorder, delivery is best effort: the queue is bounded (an Event that
does not fit is dropped and counted), a failed post is logged and counted but not retried, and
the timestamps are those of the moment the Event was recorded, not posted. On shutdown the
queue is drained for a few seconds.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError as Urllib3Error

from strongroom.kubewrites import discard
from strongroom.metrics import EVENTS_DROPPED, EVENTS_FAILED, EVENTS_POSTED, EVENTS_QUEUED

log = logging.getLogger("strongroom.operator")

MAX_MESSAGE = 1024


@dataclasses.dataclass(frozen=True)
class InvolvedObject:
    """The object an Event is about (what ``kubectl describe`` matches on)."""

    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str


@dataclasses.dataclass(frozen=True)
class _Queued:
    involved: InvolvedObject
    event_type: str
    reason: str
    message: str
    at: datetime
    queued: float


class EventRecorder:
    """Queue Events from any thread; one daemon thread posts them when the operator is idle."""

    def __init__(
        self,
        core: k8s.CoreV1Api,
        *,
        component: str,
        instance: str,
        busy: Callable[[], bool],
        max_delay: float = 10.0,
        capacity: int = 10_000,
        poll: float = 0.05,
    ) -> None:
        self.core = core
        self.component = component
        self.instance = instance[:128]
        self.busy = busy
        self.max_delay = max_delay
        self.poll = poll
        self._queue: collections.deque[_Queued] = collections.deque()
        self._capacity = capacity
        self._ready = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="strongroom-events", daemon=True)
        EVENTS_QUEUED.set_function(lambda: len(self._queue))

    def start(self) -> None:
        self._thread.start()

    def record(self, involved: InvolvedObject, event_type: str, reason: str, message: str) -> None:
        """Queue one Event; returns at once and never raises for a full queue."""
        item = _Queued(involved, event_type, reason, message[:MAX_MESSAGE], datetime.now(UTC),
                       time.monotonic())  # fmt: skip
        with self._ready:
            if len(self._queue) >= self._capacity:
                EVENTS_DROPPED.inc()
                return
            self._queue.append(item)
            self._ready.notify()

    def stop(self, timeout: float = 5.0) -> int:
        """Post what is queued for up to ``timeout`` seconds; the number left unposted."""
        with self._ready:
            self._stopping = True
            self._ready.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)
        left = len(self._queue)
        if left:
            log.warning("%d Kubernetes Events were not posted before shutdown", left)
        return left

    def _loop(self) -> None:
        while True:
            with self._ready:
                while not self._queue and not self._stopping:
                    self._ready.wait()
                if not self._queue:
                    return
                item = self._queue[0]
            self._wait_for_idle(item)
            self._post(item)
            with self._ready:
                self._queue.popleft()

    def _wait_for_idle(self, item: _Queued) -> None:
        deadline = item.queued + self.max_delay
        while not self._stopping and self.busy() and time.monotonic() < deadline:
            time.sleep(self.poll)

    def _post(self, item: _Queued) -> None:
        involved = item.involved
        stamp = item.at.strftime("%Y-%m-%dT%H:%M:%SZ")
        body: Mapping[str, Any] = {
            "metadata": {"name": f"{involved.name}.{uuid.uuid4().hex[:12]}",
                         "namespace": involved.namespace},
            "involvedObject": {"apiVersion": involved.api_version, "kind": involved.kind,
                               "name": involved.name, "namespace": involved.namespace,
                               "uid": involved.uid},
            "reason": item.reason, "message": item.message, "type": item.event_type,
            "source": {"component": self.component}, "reportingComponent": self.component,
            "reportingInstance": self.instance,
            "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
        }  # fmt: skip
        try:
            discard(self.core.create_namespaced_event(
                involved.namespace, body, _preload_content=False
            ))  # fmt: skip
        except (ApiException, Urllib3Error, ValueError, TypeError) as exc:
            # Counted and logged, never raised: a failed note must not stop the ones after it.
            EVENTS_FAILED.inc()
            log.warning("could not post Event %s for %s/%s: %s", item.reason, involved.namespace,
                        involved.name, getattr(exc, "status", None) or type(exc).__name__)  # fmt: skip
            return
        EVENTS_POSTED.labels(item.event_type).inc()
