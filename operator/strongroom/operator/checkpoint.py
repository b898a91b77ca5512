"""The audit checkpoint: the store's audit head, published outside the store.

Why: the keyed audit chain (:mod:`strongroom.audit`) shows every edit of the log to whoever
lacks the KEK but one: a consistent *older* copy of the database (a backup restored; a head row
saved earlier put back after cutting the log to it) verifies, because it is a chain that once
was. Only a head kept where the database administrator cannot write tells the two apart. The
operator keeps it in a ConfigMap in its own namespace::

    apiVersion: v1
    kind: ConfigMap
    metadata:
      name: strongroom-audit-checkpoint        # --audit-checkpoint [NAMESPACE/]NAME
      namespace: strongroom                    # POD_NAMESPACE unless given
      labels: {app.kubernetes.io/managed-by: strongroom}
    data:
      format: strongroom.io/audit-checkpoint/v1
      seq: "1234"            # the head's event number
      mac: "<64 hex>"        # the head MAC at that event (strongroom.audit: "Checkpoint")
      publishedAt: "2026-11-23T10:00:00Z"      # informational
      publishedBy: "system:serviceaccount:strongroom:strongroom"   # informational

``seq`` and ``mac`` are :class:`strongroom.audit.Checkpoint` (``SEQ:MAC``, what ``strongroom
audit verify --expect`` takes); nothing else in it is trusted. A ConfigMap without ``seq`` is
"no checkpoint yet"; one with a malformed ``seq`` or ``mac`` is a mismatch.

What the operator does with it (:class:`CheckpointKeeper`):

- **At start**, before any reconcile: read the ConfigMap, *then* the store (in that order, so a
  checkpoint another replica publishes meanwhile is never ahead of a store that holds it) and
  check that the store reaches the checkpoint. Reconciles start only when it does, or when no
  checkpoint exists yet. On a mismatch: a Warning Event ``AuditCheckpointMismatch`` on the
  ConfigMap, ``strongroom_audit_checkpoint_mismatch 1``, the liveness probe ``audit`` failing,
  and no reconcile. The check is repeated every interval; once it passes (after ``strongroom
  audit checkpoint reset``) a Normal Event ``AuditCheckpointReached`` and reconciles start.
- **At once, then every interval** (at most 30 s) while reconciling (with leader election:
  while leading): read the ConfigMap, check the store against it, and publish the store's head
  when it has moved (an update conditional on the ``resourceVersion`` read). A store found not reaching the
  checkpoint while running (rolled back under a live operator) is the same mismatch, and the
  process exits, as on a lost Lease, to come back through the start-up check.
- **On shutdown**, after the last reconcile: once more, so the checkpoint is the final head.

Never: publishing over a checkpoint the store does not reach (that would erase the evidence),
publishing a head behind the checkpoint, or adopting a checkpoint ahead of the store.

Trust: whoever may write this ConfigMap may reset the checkpoint (delete it, or put back an
older true one) and so let a later rollback of the database pass, or forge one and make the
check fail (the operator then stops: a denial of service they have anyway over its namespace).
They cannot make a store other than the checkpointed one pass: the MAC needs the audit key. The
chart grants the operator's ServiceAccount get and update on this ConfigMap alone, create on
ConfigMaps and Events in its namespace, and tenants nothing there (docs/security.md).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError as Urllib3Error

from strongroom.api import Strongroom
from strongroom.audit import Checkpoint
from strongroom.errors import IntegrityError, StrongroomError
from strongroom.kubewrites import read_json
from strongroom.metrics import (
    AUDIT_CHECKPOINT_CHECKED,
    AUDIT_CHECKPOINT_ERRORS,
    AUDIT_CHECKPOINT_MISMATCH,
    AUDIT_CHECKPOINT_SEQ,
)
from strongroom.operator.events import EventRecorder, InvolvedObject
from strongroom.operator.refs import resolve_ref, split_ref

log = logging.getLogger("strongroom.operator")

FORMAT = "strongroom.io/audit-checkpoint/v1"
DEFAULT_NAME = "strongroom-audit-checkpoint"
MISMATCH = "AuditCheckpointMismatch"
REACHED = "AuditCheckpointReached"


@dataclasses.dataclass(frozen=True)
class CheckpointRef:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"

    @classmethod
    def parse(cls, text: str, default_namespace: str | None = None) -> CheckpointRef:
        """``NAMESPACE/NAME``, or ``NAME`` in ``default_namespace``."""
        return cls(*split_ref(text.strip(), default_namespace, label="audit checkpoint"))


def resolve(spec: str, pod_namespace: str | None) -> CheckpointRef | None:
    """Where the operator keeps its checkpoint: ``off`` (none), ``NAMESPACE/NAME`` or ``NAME``
    (in POD_NAMESPACE). ``""`` is the default name in POD_NAMESPACE, or none outside a pod."""
    found = resolve_ref(spec, pod_namespace, default_name=DEFAULT_NAME, label="audit checkpoint")
    return None if found is None else CheckpointRef(*found)


@dataclasses.dataclass(frozen=True)
class Published:
    """The ConfigMap as read or written: its checkpoint (None: holds none yet) and identity."""

    checkpoint: Checkpoint | None
    resource_version: str
    uid: str


def parse_data(data: Mapping[str, str] | None) -> Checkpoint | None:
    """The checkpoint a ConfigMap's data holds; None when it holds none. ValueError: malformed."""
    data = data or {}
    if "seq" not in data and "mac" not in data:
        return None
    if data.get("format", FORMAT) != FORMAT:
        raise ValueError(f"format {data.get('format')!r} is not {FORMAT}")
    return Checkpoint.parse(f"{data.get('seq', '')}:{data.get('mac', '')}")


def configmap_body(ref: CheckpointRef, checkpoint: Checkpoint, *, by: str) -> dict[str, Any]:
    at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": ref.name, "namespace": ref.namespace,
                     "labels": {"app.kubernetes.io/managed-by": "strongroom"}},
        "data": {"format": FORMAT, "seq": str(checkpoint.seq), "mac": checkpoint.mac,
                 "publishedAt": at, "publishedBy": by[:253]},
    }  # fmt: skip


def read_published(core: k8s.CoreV1Api, ref: CheckpointRef) -> tuple[Published | None, str]:
    """(the ConfigMap, "") or (its identity without a checkpoint, why it is malformed); (None,
    "") when there is no ConfigMap. API failures raise."""
    try:
        doc = read_json(core.read_namespaced_config_map(ref.name, ref.namespace,
                                                        _preload_content=False))  # fmt: skip
    except ApiException as exc:
        if exc.status == 404:
            return None, ""
        raise
    meta = doc.get("metadata") or {}
    identity = (str(meta.get("resourceVersion", "")), str(meta.get("uid", "")))
    try:
        checkpoint = parse_data(doc.get("data"))
    except ValueError as exc:
        return Published(None, *identity), f"checkpoint {ref} is malformed ({exc})"
    return Published(checkpoint, *identity), ""


def write_published(
    core: k8s.CoreV1Api,
    ref: CheckpointRef,
    checkpoint: Checkpoint,
    *,
    previous: Published | None,
    by: str,
) -> Published:
    """Create the ConfigMap, or replace the one read as ``previous`` (409 if it moved since)."""
    body = configmap_body(ref, checkpoint, by=by)
    if previous is None:
        response = core.create_namespaced_config_map(ref.namespace, body, _preload_content=False)
    else:
        body["metadata"]["resourceVersion"] = previous.resource_version
        response = core.replace_namespaced_config_map(ref.name, ref.namespace, body,
                                                      _preload_content=False)  # fmt: skip
    meta = read_json(response).get("metadata") or {}
    return Published(checkpoint, str(meta.get("resourceVersion", "")), str(meta.get("uid", "")))


class CheckpointKeeper:
    """Checks the store against the published checkpoint and publishes the store's head.

    ``state`` is ``unchecked`` (never read and checked yet), ``reached`` (the store reached the
    checkpoint at the last check, or none was published) or ``mismatch``. Blocking methods run
    in a thread; :meth:`wait_until_reached` and :meth:`run` are the event loop's side.
    """

    def __init__(
        self,
        room: Strongroom,
        core: k8s.CoreV1Api,
        ref: CheckpointRef,
        *,
        interval: float,
        actor: str,
        events: EventRecorder | None = None,
        leading: Callable[[], bool] = lambda: True,
    ) -> None:
        self.room = room
        self.core = core
        self.ref = ref
        self.interval = interval
        self.actor = actor
        self.events = events
        self.leading = leading
        self.state = "unchecked"
        self.problem = "the audit checkpoint has not been checked yet"
        self.seq = 0
        """The checkpoint's event number as last read or published (0: none)."""
        self._published: Published | None = None
        self._last_failure = ""
        self._lock = threading.Lock()
        AUDIT_CHECKPOINT_MISMATCH.set(0)

    # -- one step each, blocking ------------------------------------------------------------

    def check(self) -> str:
        """Read the ConfigMap, then check the store against it; the resulting ``state``."""
        with self._lock:
            return self._check()

    def cycle(self) -> str:
        """An interval's work while reconciling: check, then publish the head if it moved."""
        with self._lock:
            if self._check() == "reached":
                self._publish()
            return self.state

    def _check(self) -> str:
        try:
            published, malformed = read_published(self.core, self.ref)
        except (ApiException, Urllib3Error) as exc:
            self._failed("read", exc)
            return self.state
        if malformed:
            self._mismatch(malformed, published)
            return self.state
        checkpoint = published.checkpoint if published is not None else None
        if checkpoint is None:
            problem = None  # nothing published yet: the first publish starts it
        else:
            try:
                problem = self.room.audit_check_checkpoint(checkpoint)
            except IntegrityError as exc:  # the audit key row itself was tampered with
                problem = str(exc)
            except StrongroomError as exc:
                self._unavailable(f"cannot check the store against checkpoint {self.ref}: {exc}")
                return self.state
        if problem is not None:
            self._mismatch(problem, published)
            return self.state
        self._published = published
        self._reached(checkpoint.seq if checkpoint is not None else 0, published)
        return self.state

    def _publish(self) -> None:
        if not self.leading():
            return
        try:
            head = self.room.audit_checkpoint()
        except IntegrityError as exc:
            self._mismatch(str(exc), self._published)
            return
        except StrongroomError as exc:
            log.warning("audit checkpoint: cannot read the store's head: %s", exc)
            return
        known = self._published.checkpoint if self._published is not None else None
        if head is None or (known is not None and head.seq <= known.seq):
            return  # not keyed yet, or nothing new (never a head behind the checkpoint)
        try:
            self._published = write_published(self.core, self.ref, head,
                                              previous=self._published, by=self.actor)  # fmt: skip
        except (ApiException, Urllib3Error) as exc:
            # 409: someone else wrote it since it was read; 404: deleted since. Either way the
            # next cycle reads it again and checks the store against what it then holds.
            self._failed("write", exc)
            return
        self.seq = head.seq
        AUDIT_CHECKPOINT_SEQ.set(head.seq)
        log.debug("audit checkpoint %s: published event %d", self.ref, head.seq)

    # -- outcomes ---------------------------------------------------------------------------

    def _reached(self, seq: int, published: Published | None) -> None:
        before = self.state
        self.state = "reached"
        self.problem = ""
        self._last_failure = ""
        AUDIT_CHECKPOINT_MISMATCH.set(0)
        AUDIT_CHECKPOINT_CHECKED.set(time.time())
        self.seq = seq
        AUDIT_CHECKPOINT_SEQ.set(seq)
        if before == "mismatch":
            message = (f"the store reaches the audit checkpoint {self.ref} again (event {seq}); "
                       "reconciling")  # fmt: skip
            log.warning("%s", message)
            self._event(published, "Normal", REACHED, message)
        elif before == "unchecked":
            log.info("audit checkpoint %s: %s", self.ref,
                     f"the store reaches event {seq}" if seq else "none published yet")  # fmt: skip

    def _mismatch(self, problem: str, published: Published | None) -> None:
        message = f"audit checkpoint {self.ref}: {problem}"
        if self.state != "mismatch" or self.problem != message:
            log.error("%s; not reconciling until the store reaches the checkpoint (or it is "
                      "reset: strongroom audit checkpoint reset)", message)  # fmt: skip
            self._event(published, "Warning", MISMATCH, message)
        self.state = "mismatch"
        self.problem = message
        AUDIT_CHECKPOINT_MISMATCH.set(1)

    def _unavailable(self, why: str) -> None:
        if self.state != "mismatch":
            if self.state == "unchecked":
                self.problem = why
            if why != self._last_failure:
                log.warning("%s", why)
                self._last_failure = why

    def _failed(self, op: str, exc: Exception) -> None:
        AUDIT_CHECKPOINT_ERRORS.labels(op).inc()
        status = getattr(exc, "status", None)
        cause = str(status or type(exc).__name__)
        if status == 403:
            cause += (f" (needs get and update on ConfigMap {self.ref}, create on ConfigMaps in "
                      f"{self.ref.namespace})")  # fmt: skip
        self._unavailable(f"audit checkpoint {self.ref}: cannot {op} it: {cause}")

    def _event(self, published: Published | None, event_type: str, reason: str,
               message: str) -> None:  # fmt: skip
        if self.events is None or published is None:
            return
        involved = InvolvedObject("v1", "ConfigMap", self.ref.namespace, self.ref.name,
                                  published.uid)  # fmt: skip
        self.events.record(involved, event_type, reason, message)

    # -- the event loop's side --------------------------------------------------------------

    def probe(self) -> str:
        """For the liveness probe: a line when the store reaches the checkpoint; raises if not."""
        if self.state != "reached":
            raise IntegrityError(self.problem)
        if not self.seq:
            return f"nothing published in {self.ref} yet"
        return f"the store reaches {self.ref} (event {self.seq})"

    async def wait_until_reached(self, stop: threading.Event) -> bool:
        """Check until the store reaches the checkpoint (True) or ``stop`` is set (False)."""
        while not stop.is_set():
            if await asyncio.to_thread(self.check) == "reached":
                return True
            await asyncio.sleep(self.interval)
        return False

    async def run(self, stop: threading.Event, on_mismatch: Callable[[str], None]) -> None:
        """At once, then every interval: check and publish; ``on_mismatch`` once if the store
        stops reaching the checkpoint."""
        while not stop.is_set():
            if await asyncio.to_thread(self.cycle) == "mismatch":
                on_mismatch(self.problem)
                return
            await asyncio.sleep(self.interval)

    def finish(self) -> None:
        """On shutdown, after the last reconcile: publish the final head (if all is well)."""
        if self.state == "reached":
            self.cycle()
