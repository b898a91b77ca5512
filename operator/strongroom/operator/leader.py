"""Leader election on a ``coordination.k8s.io`` Lease: of several replicas, one reconciles.

The protocol is client-go's (and so kube-controller-manager's): the leader renews the Lease
every couple of seconds; a replica takes it over once the holder has not renewed it for the
lease's duration, as measured by the replica's own clock since it last saw the record change
(so clocks that disagree between nodes do not matter); a leader that cannot renew within two
thirds of the duration gives up before anyone else may take over, and a leader that stops
cleanly hands the Lease back at once. Writes are compare-and-swap on the resource version, so
two candidates can never both succeed.

Why not kopf's peering: it pauses every operator that sees a peer of the same priority,
including itself, so two replicas of one Deployment both stop; and it pauses only kopf's own
watches, not the operator's refresh scheduler or its Secret watch.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError as Urllib3Error

from strongroom.kubewrites import discard, read_json
from strongroom.operator.refs import split_ref

log = logging.getLogger("strongroom.operator")


@dataclasses.dataclass(frozen=True)
class LeaseRef:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"

    @classmethod
    def parse(cls, text: str, default_namespace: str | None) -> LeaseRef:
        """``NAME`` (in ``default_namespace``, the pod's) or ``NAMESPACE/NAME``."""
        return cls(*split_ref(text, default_namespace, label="--leader-elect", noun="lease "))


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """Acquires, renews and releases one Lease for ``identity``."""

    def __init__(
        self,
        coordination: k8s.CoordinationV1Api,
        lease: LeaseRef,
        identity: str,
        *,
        lease_seconds: float = 15.0,
    ) -> None:
        self.api = coordination
        self.lease = lease
        self.identity = identity
        self.duration = lease_seconds
        self.retry_every = max(0.5, lease_seconds / 7.5)  # 2 s for the default 15 s
        self.renew_deadline = lease_seconds * 2 / 3
        self.leading = False
        self._observed: tuple[str, str] | None = None
        self._observed_at = 0.0
        self._waiting_for: str | None = None

    def acquire(self, stop: threading.Event) -> bool:
        """Block until this replica leads (True) or ``stop`` is set (False)."""
        last_problem = ""
        while not stop.is_set():
            try:
                if self._try():
                    log.info("leading: holding Lease %s as %s", self.lease, self.identity)
                    return True
            except (ApiException, Urllib3Error) as exc:
                problem = str(getattr(exc, "status", None) or type(exc).__name__)
                if problem == "403":
                    problem += " (needs get and update on this Lease, create on leases)"
                if problem != last_problem:  # once per cause, not every retry
                    log.warning("leader election: cannot read or write Lease %s: %s; retrying",
                                self.lease, problem)  # fmt: skip
                    last_problem = problem
            stop.wait(self.retry_every)
        return False

    def hold(self, stop: threading.Event, on_lost: Callable[[], None]) -> None:
        """Renew until ``stop`` is set; call ``on_lost`` (and return) if the Lease is lost."""
        renewed = time.monotonic()
        while not stop.wait(self.retry_every):
            try:
                if self._try():
                    renewed = time.monotonic()
                    continue
                why = f"taken over by {self._observed[0] if self._observed else 'another replica'}"
            except (ApiException, Urllib3Error) as exc:
                why = f"cannot renew ({getattr(exc, 'status', None) or type(exc).__name__})"
                if time.monotonic() - renewed < self.renew_deadline:
                    continue
            self.leading = False
            log.error("lost the leadership of Lease %s: %s", self.lease, why)
            on_lost()
            return

    def release(self) -> None:
        """Hand the Lease back (a follower takes over at once, not after its duration)."""
        if not self.leading:
            return
        self.leading = False
        try:
            lease = self._get()
            if lease is None or lease["spec"].get("holderIdentity") != self.identity:
                return
            lease["spec"].update(holderIdentity="", leaseDurationSeconds=1, renewTime=_now())
            discard(self.api.replace_namespaced_lease(self.lease.name, self.lease.namespace,
                                                      lease, _preload_content=False))  # fmt: skip
            log.info("released Lease %s", self.lease)
        except (ApiException, Urllib3Error) as exc:
            log.warning("could not release Lease %s (%s); it expires in %.0f s", self.lease,
                        getattr(exc, "status", None) or type(exc).__name__, self.duration)  # fmt: skip

    # -- one attempt ------------------------------------------------------------------------

    def _get(self) -> dict[str, Any] | None:
        try:
            response = self.api.read_namespaced_lease(
                self.lease.name, self.lease.namespace, _preload_content=False
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return read_json(response)

    def _try(self) -> bool:
        """Take or renew the Lease once; False while someone else validly holds it."""
        lease = self._get()
        now = _now()
        seconds = max(1, math.ceil(self.duration))
        if lease is None:
            body = {"metadata": {"name": self.lease.name, "namespace": self.lease.namespace},
                    "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": seconds,
                             "acquireTime": now, "renewTime": now, "leaseTransitions": 0}}  # fmt: skip
            return self._write(self.api.create_namespaced_lease, self.lease.namespace, body)
        spec = lease.setdefault("spec", {})
        holder = spec.get("holderIdentity") or ""
        record = (holder, str(spec.get("renewTime")))
        if record != self._observed:
            self._observed, self._observed_at = record, time.monotonic()
        held_for = float(spec.get("leaseDurationSeconds") or self.duration)
        if holder and holder != self.identity:
            if time.monotonic() < self._observed_at + held_for:
                if self._waiting_for != holder:
                    log.info("follower: Lease %s is held by %s", self.lease, holder)
                    self._waiting_for = holder
                self.leading = False
                return False
            log.info("Lease %s: %s has not renewed for %.0f s; taking over", self.lease, holder,
                     held_for)  # fmt: skip
        if holder != self.identity:
            spec["acquireTime"] = now
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        spec.update(holderIdentity=self.identity, leaseDurationSeconds=seconds, renewTime=now)
        return self._write(self.api.replace_namespaced_lease, self.lease.name,
                           self.lease.namespace, lease)  # fmt: skip

    def _write(self, call: Callable[..., Any], *args: Any) -> bool:
        try:
            discard(call(*args, _preload_content=False))
        except ApiException as exc:
            if exc.status == 409:  # another candidate wrote first
                self.leading = False
                return False
            raise
        self.leading = True
        return True
