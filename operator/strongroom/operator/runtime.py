"""The operator's moving parts around :class:`strongroom.sync.Syncer`.

- an **event intake** (:meth:`Runtime.observe`, for every event of the ManagedSecret watch,
  :mod:`strongroom.operator.watching`): a new generation or a new object is reconciled, a
  deletion held by our finalizer is finalized and every deletion recorded once
  (:mod:`strongroom.operator.deletions`), and the echo of our own status write is
  recognised by its unchanged generation and dropped;
- a **scheduler**: one due time per ManagedSecret (refresh, rotation, retry with backoff) in a
  heap, one asyncio task that runs reconciles as they fall due, at most ``workers`` at a time in
  threads, never two for the same object (their store writes share transactions: group
  commit);
- a **store watch**: polls ``secrets.updated_at`` every couple of seconds, so a value set with
  the CLI reaches its Secret within seconds, not at the next refresh (works on SQLite and
  PostgreSQL alike);
- a **Secret watch**: watches only Secrets labelled ``strongroom.io/managed-by=strongroom``
  (a server-side label selector: the operator never receives, let alone caches, other
  Secrets) and repairs edits (data, labels, annotations, ownership:
  :mod:`strongroom.operator.secretwatch`) and deletions at once;
- an **event recorder** (:mod:`strongroom.operator.events`): reconciles queue their Events,
  one thread posts them once reconciles pause;
- with ``--leader-elect``, a **Lease** (:mod:`strongroom.operator.leader`): nothing of the
  above but the event recorder starts before this replica holds it, and the process exits
  when it loses it;
- an **audit checkpoint** (:mod:`strongroom.operator.checkpoint`): nothing reconciles before
  the store is found to reach the audit head published outside it, which is then kept up to
  date; the process exits if the store stops reaching it.

Every Kubernetes API call has a timeout (the client's own default is to wait forever).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import functools
import heapq
import itertools
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError as Urllib3Error

from strongroom.api import Strongroom
from strongroom.config import Settings
from strongroom.emergency import ROTATE_ANNOTATION, Rotation
from strongroom.errors import ConfigError, StoreError, StrongroomError
from strongroom.kubewrites import DirectWrites
from strongroom.metrics import (
    MANAGED,
    OLDEST_UNROTATED,
    RECONCILE_SECONDS,
    RECONCILES,
    REFRESH_LAG,
)
from strongroom.operator.checkpoint import CheckpointKeeper, CheckpointRef
from strongroom.operator.deletions import Deletions
from strongroom.operator.dependants import Dependants
from strongroom.operator.events import EventRecorder, InvolvedObject
from strongroom.operator.leader import LeaderElector, LeaseRef
from strongroom.operator.sealingkeys import SealingKeyPublisher
from strongroom.operator.sealingkeys import resolve as resolve_sealing_configmap
from strongroom.operator.secretwatch import Shape, owner_candidates, unchanged
from strongroom.operator.watching import Event, RawWatch
from strongroom.resources import GRANT_KIND, GRANT_PLURAL
from strongroom.sources.database import releases_roles
from strongroom.spec import config_maps_of
from strongroom.sync import (
    FINALIZER,
    GROUP,
    HMAC_ANNOTATION,
    KIND,
    MANAGED_BY,
    MANAGED_BY_VALUE,
    PLURAL,
    VERSION,
    Reason,
    Result,
    Syncer,
    data_hmac,
    load_hmac_key,
    status_patch,
)

log = logging.getLogger("strongroom.operator")

Key = tuple[str, str]

MIN_BACKOFF = 2.0
MAX_BACKOFF = 300.0
QUIET_SECONDS = 1.0
CONNECT_TIMEOUT = 10.0
WATCH_SECONDS = 300
OPEN_STORE_SECONDS = 120.0  # a database that is starting (or restarting) when the operator does


@dataclasses.dataclass
class Tracked:
    """What the runtime remembers per ManagedSecret (no values)."""

    generation: int | None = None
    version: int | None = None
    data_hmac: str | None = None
    target: str | None = None
    uid: str = ""
    failures: int = 0
    oldest_generated: str | None = None
    shape: Shape | None = None  # what the Secret carries beyond its data, as last synced
    config_maps: frozenset[str] = frozenset()  # target.template.templateFrom


_META_KEYS = ("name", "namespace", "uid", "generation", "resourceVersion", "deletionTimestamp",
              "finalizers")  # fmt: skip


def compact(body: Mapping[str, Any]) -> dict[str, Any]:
    """What a reconcile needs of an event's object: not managedFields, labels or annotations.

    Kept per object only until its reconcile starts, so a burst of new objects holds a few
    hundred bytes each, not kopf's whole body.
    """
    meta = body["metadata"]
    kept = {key: meta[key] for key in _META_KEYS if key in meta}
    asked = {k: v for k, v in (meta.get("annotations") or {}).items()
             if k.startswith(ROTATE_ANNOTATION)}  # strongroom.emergency's, the only ones read
    if asked:
        kept["annotations"] = asked
    return {
        "metadata": kept,
        "spec": body.get("spec") or {},
        "status": body.get("status") or {},
    }


def load_kube_config(connections: int, timeout: float) -> k8s.ApiClient:
    """An API client whose pool keeps ``connections`` connections open.

    The client's default pool (five per core) is smaller than the reconcile threads: every
    request over the limit opened a connection with a fresh TLS handshake and threw it away,
    which cost the apiserver and the operator more CPU than the request itself.
    """
    try:
        k8s_config.load_incluster_config()
    except k8s_config.ConfigException:
        try:
            k8s_config.load_kube_config()
        except (k8s_config.ConfigException, OSError) as exc:
            raise ConfigError(
                f"no Kubernetes access: not in a cluster and no usable kubeconfig ({exc})"
            ) from None
    configuration = k8s.Configuration.get_default_copy()
    configuration.connection_pool_maxsize = connections
    client = k8s.ApiClient(configuration)
    with_default_timeout(client.rest_client, (min(CONNECT_TIMEOUT, timeout), timeout))
    return client


def with_default_timeout(rest: Any, timeout: tuple[float, float]) -> None:
    """Give every call of this REST client a timeout unless it brings its own.

    The kubernetes client waits forever by default (it passes ``timeout=None`` down to
    urllib3, so not even a pool-wide default applies): one stalled connection would hold a
    reconcile thread for good. ``timeout`` is (connect, read) in seconds; the apiserver
    itself ends a request after 60 s, hence the default read timeout of 70 s. The client's
    retries (three, for idempotent calls, on a new connection) each get the same bound.
    """
    request = rest.request

    def request_with_timeout(*args: Any, _request_timeout: Any = None, **kwargs: Any) -> Any:
        return request(*args, _request_timeout=_request_timeout or timeout, **kwargs)

    rest.request = request_with_timeout


class Runtime:
    """Created before kopf starts; started and stopped by the startup/cleanup handlers."""

    def __init__(
        self,
        settings: Settings,
        *,
        namespaces: Iterable[str] = (),
        actor: str,
        workers: int = 8,
        store_poll: float = 2.0,
        api_timeout: float = 70.0,
        lease: LeaseRef | None = None,
        lease_seconds: float = 15.0,
        rollout_restart: bool = True,
        checkpoint: CheckpointRef | None = None,
        checkpoint_seconds: float = 30.0,
        trust_namespace_names: bool = False,
        database_engines: bool = False,
    ) -> None:
        self.settings = settings
        self.database_engines = database_engines
        self.trust_namespace_names = trust_namespace_names
        self.rollout_restart = rollout_restart
        self.namespaces = tuple(namespaces)
        self.actor = actor
        self.workers = workers
        self.store_poll = store_poll
        self.api_timeout = api_timeout
        self.lease = lease
        self.lease_seconds = lease_seconds
        self.elector: LeaderElector | None = None
        self.checkpoint = checkpoint
        self.checkpoint_seconds = checkpoint_seconds
        self.keeper: CheckpointKeeper | None = None
        self.audit_failure: str | None = None  # why the store stopped reaching the checkpoint
        # Set when the Lease is lost: kopf then stops (``stop_flag``) and the process exits,
        # to come back as a follower.
        self.exit_flag = threading.Event()
        self.lost_leadership = False
        self.tracked: dict[Key, Tracked] = {}
        self.dependants = Dependants()  # fromManagedSecret: who reads from whom
        self._due: dict[Key, float] = {}
        self._heap: list[tuple[float, int, Key]] = []
        self._seq = itertools.count()
        self._running: set[Key] = set()
        self._last_work = 0.0
        self._pending: dict[Key, dict[str, Any]] = {}
        self._wake = asyncio.Event()
        self._stop = threading.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.room: Strongroom | None = None
        self.syncer: Syncer | None = None
        self.deletions: Deletions | None = None
        self.api: k8s.ApiClient | None = None
        self.events: EventRecorder | None = None
        self.sealing_keys: SealingKeyPublisher | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def oldest_generated_age(self) -> float:
        """For the gauge, computed when scraped: a scan per scrape, not one per reconcile."""
        stamps = [t.oldest_generated for t in list(self.tracked.values()) if t.oldest_generated]
        if not stamps:
            return 0.0
        first = datetime.fromisoformat(min(stamps).replace("Z", "+00:00"))
        return (datetime.now(UTC) - first).total_seconds()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        OLDEST_UNROTATED.set_function(self.oldest_generated_age)
        # Reconciles wait on the network and the database, not the CPU: more threads than
        # asyncio's default (cores + 4) keep a burst of new objects moving.
        self._loop.set_default_executor(
            concurrent.futures.ThreadPoolExecutor(self.workers * 2, thread_name_prefix="strongroom")
        )
        self.api = load_kube_config(self.workers * 2, self.api_timeout)
        self.room = await self._open_store()
        self.room.group_commit()
        try:
            hmac_key: bytes | None = await asyncio.to_thread(load_hmac_key, self.room, self.actor)
        except StrongroomError as exc:
            log.warning("store or KEK not usable yet (%s); reconciles will retry", exc)
            hmac_key = None
        self.syncer = Syncer(
            self.room, k8s.CoreV1Api(self.api), k8s.AppsV1Api(self.api),
            k8s.CustomObjectsApi(self.api), actor=self.actor, hmac_key=hmac_key,
            rollout_restart=self.rollout_restart,
            trust_namespace_names=self.trust_namespace_names,
            watched=frozenset(self.namespaces) or None,
            database_engines=self.database_engines,
            writes=DirectWrites(self.api, (min(CONNECT_TIMEOUT, self.api_timeout),
                                           self.api_timeout)),
        )  # fmt: skip
        self.deletions = Deletions(self.syncer)
        # Events wait while reconciles run: the Secrets and statuses of a burst come first.
        self.events = EventRecorder(
            self.syncer.core, component="strongroom", instance=self.actor,
            busy=self.busy,
        )  # fmt: skip
        self.events.start()
        if self.checkpoint is not None:
            self.keeper = CheckpointKeeper(
                self.room, self.syncer.core, self.checkpoint, interval=self.checkpoint_seconds,
                actor=self.actor, events=self.events,
                leading=lambda: self.lease is None or bool(self.elector and self.elector.leading),
            )  # fmt: skip
        where = resolve_sealing_configmap(self.settings.sealing.configmap,
                                          os.environ.get("POD_NAMESPACE"))  # fmt: skip
        if where is not None:  # the public sealing keys, for `strongroom seal value --configmap`
            self.sealing_keys = SealingKeyPublisher(self.syncer.sealed.keys, self.syncer.core,
                                                    where, self.settings.sealing,
                                                    leading=lambda: not self._stop.is_set())  # fmt: skip
        self._tasks.append(asyncio.create_task(self._checked_start(), name="strongroom-start"))

    async def _open_store(self) -> Strongroom:
        """The store, tried again while its database does not answer yet (starting, or
        restarting as the operator starts) for up to OPEN_STORE_SECONDS; then the error."""
        deadline = time.monotonic() + OPEN_STORE_SECONDS
        delay = 0.5
        while True:
            try:
                return await asyncio.to_thread(Strongroom.open, self.settings)
            except StoreError as exc:
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("cannot open the store yet (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _checked_start(self) -> None:
        """Reconcile (or compete for the Lease) only once the store reaches the published audit
        checkpoint; then keep the checkpoint up to date."""
        if self.keeper is not None:
            if not await self.keeper.wait_until_reached(self._stop):
                return
            self._tasks.append(asyncio.create_task(
                self.keeper.run(self._stop, self._audit_mismatch), name="strongroom-checkpoint"))  # fmt: skip
        if self.lease is None:
            self._begin()
            return
        identity = f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"
        self.elector = LeaderElector(k8s.CoordinationV1Api(self.api), self.lease, identity,
                                     lease_seconds=self.lease_seconds)  # fmt: skip
        await self._lead()

    def _begin(self) -> None:
        """Start reconciling: the scheduler, the store watch and the two API watches."""
        self._tasks.append(asyncio.create_task(self._schedule_loop(), name="strongroom-scheduler"))
        self._tasks.append(asyncio.create_task(self._store_watch(), name="strongroom-store-watch"))
        if self.sealing_keys is not None:
            self._tasks.append(asyncio.create_task(self.sealing_keys.run(self._stop),
                                                   name="strongroom-sealing-keys"))  # fmt: skip
        for namespace in self.namespaces or (None,):
            for watch in self._watches(namespace):
                thread = threading.Thread(
                    target=watch.run, daemon=True,
                    name=f"strongroom-watch-{watch.what.lower()}-{namespace or 'all'}",
                )  # fmt: skip
                thread.start()
                self._threads.append(thread)
        log.info("strongroom runtime started (namespaces: %s)", ", ".join(self.namespaces) or "all")

    async def _lead(self) -> None:
        """Wait for the Lease, then reconcile while renewing it."""
        assert self.elector is not None  # noqa: S101
        if not await asyncio.to_thread(self.elector.acquire, self._stop):
            return
        self._begin()
        thread = threading.Thread(target=self.elector.hold, args=(self._stop, self._lost),
                                  daemon=True, name="strongroom-lease")  # fmt: skip
        thread.start()
        self._threads.append(thread)

    def _lost(self) -> None:
        """The Lease is gone: stop reconciling at once and let the process exit."""
        self.lost_leadership = True
        self._stop.set()
        self.exit_flag.set()

    def _audit_mismatch(self, problem: str) -> None:
        """The store no longer reaches the audit checkpoint (rolled back under us): stop
        reconciling at once and exit, to come back through the start-up check, which holds."""
        self.audit_failure = problem
        self._stop.set()
        self.exit_flag.set()

    async def stop(self) -> None:
        self._stop.set()
        self.exit_flag.set()  # kopf waits for this flag in a thread of its own: release it
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.keeper is not None:  # the final head, once the last reconcile has written it
            deadline = time.monotonic() + 10.0
            while self._running and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await asyncio.to_thread(self.keeper.finish)
        if self.events is not None:
            await asyncio.to_thread(self.events.stop)
        if self.elector is not None:
            await asyncio.to_thread(self.elector.release)
        if self.room is not None:
            self.room.close()

    # -- scheduling -------------------------------------------------------------------------

    def busy(self) -> bool:
        """A reconcile runs, or one ended within the last second (a burst is still going)."""
        return bool(self._running) or time.monotonic() - self._last_work < QUIET_SECONDS

    def schedule(self, key: Key, delay: float = 0.0) -> None:
        due = time.monotonic() + max(0.0, delay)
        current = self._due.get(key)
        if current is None or due < current:
            self._due[key] = due
            if key not in self._running:
                heapq.heappush(self._heap, (due, next(self._seq), key))
            self._wake.set()

    def schedule_threadsafe(self, key: Key) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.schedule, key)

    def forget(self, key: Key) -> Tracked | None:
        self._due.pop(key, None)
        self._pending.pop(key, None)
        return self.tracked.pop(key, None)

    def observe(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """File one watch event of a ManagedSecret; cheap, runs on kopf's event loop."""
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        if event_type == "DELETED":
            self._gone(key, meta.get("uid"))
            if self.database_engines and self._loop is not None and releases_roles(
                body.get("spec") or {}
            ):
                self._loop.run_in_executor(None, self._release_roles, key)
            return
        if not meta.get("deletionTimestamp"):
            tracked = self.tracked.get(key)
            if tracked is not None and tracked.generation == meta.get("generation") and (
                Rotation.requested(meta, body.get("status") or {}) is None
            ):
                return  # the echo of our own status write, or an edit of metadata only
            self.dependants.track(key, body.get("spec") or {})
            if tracked is not None:  # a spec change may change what its dependants read
                for reader in self.dependants.of([key]):
                    self.schedule(reader)
        elif FINALIZER not in (meta.get("finalizers") or ()):
            return  # being deleted, and nothing of ours holds it
        self._pending[key] = compact(body)
        self.schedule(key)

    def _gone(self, key: Key, uid: str | None = None) -> None:
        """The object is gone; the audit log says what became of its Secret, once."""
        tracked = self.forget(key)
        if self.syncer is not None:  # it no longer counts in strongroom_sealed_values_old_key
            self.syncer.sealed.forget(*key)
        for reader in self.dependants.of([key]):  # they lose their source: let them say so
            self.schedule(reader)
        self.dependants.forget(key)
        if self.deletions is None or self._loop is None:
            return
        detail = self.deletions.gone(
            key, uid or (tracked.uid if tracked else None), tracked.target if tracked else None,
            collected=bool(tracked and tracked.shape and tracked.shape.owner_ref),
            seen=tracked is not None,
        )  # fmt: skip
        if detail is not None:
            self._loop.run_in_executor(None, self.deletions.record_gone, key, detail)

    def _release_roles(self, key: Key) -> None:
        """A deleted ManagedSecret's database roles go with it (deletionPolicy Delete)."""
        assert self.syncer is not None  # noqa: S101
        try:
            assert self.syncer.databases is not None  # noqa: S101 - database_engines is on
            dropped = self.syncer.databases.release(*key)
            log.info("%s/%s: %d database role(s) dropped with it", key[0], key[1], dropped)
        except (StrongroomError, ApiException, Urllib3Error) as exc:
            log.warning("%s/%s: database roles not dropped (they end at their VALID UNTIL; "
                        "the start-up pass drops those the store no longer names): %s",
                        key[0], key[1], exc)  # fmt: skip

    def _reconcile_roles(self) -> None:
        """Before the first reconcile: drop the database roles the store does not know."""
        assert self.syncer is not None  # noqa: S101
        if self.syncer.databases is None:
            return  # STRONGROOM_DATABASE_ENGINES off: no engine is read, none may be
        try:
            dropped = self.syncer.databases.reconcile_orphans()
        except (StrongroomError, ApiException, Urllib3Error) as exc:
            log.warning("database roles not reconciled at start: %s", exc)
            return
        if dropped:
            log.warning("dropped %d database role(s) the store does not know: %s", len(dropped),
                        ", ".join(dropped))  # fmt: skip

    async def _schedule_loop(self) -> None:
        """Start reconciles as they fall due: a heap of due times, never two for one object."""
        await asyncio.to_thread(self._reconcile_roles)
        gate = asyncio.Semaphore(self.workers)
        running: set[asyncio.Task[None]] = set()
        while not self._stop.is_set():
            self._wake.clear()
            now = time.monotonic()
            while self._heap and self._heap[0][0] <= now:
                due, _, key = heapq.heappop(self._heap)
                if self._due.get(key) != due or key in self._running:
                    continue  # superseded, or re-queued when its running reconcile ends
                REFRESH_LAG.observe(max(0.0, now - due))
                self._due.pop(key, None)
                await gate.acquire()
                self._running.add(key)
                task = asyncio.create_task(self._run(key, gate))
                running.add(task)
                task.add_done_callback(running.discard)
            wait = self._heap[0][0] - time.monotonic() if self._heap else 60.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(0.01, min(wait, 60)))

    async def _run(self, key: Key, gate: asyncio.Semaphore) -> None:
        try:
            await asyncio.to_thread(self._work, key, self._pending.pop(key, None))
        except Exception:
            log.exception("reconcile of %s/%s failed unexpectedly", *key)
            self.schedule(key, self._backoff(key))
        finally:
            self._running.discard(key)
            self._last_work = time.monotonic()
            gate.release()
            due = self._due.get(key)
            if due is not None:  # scheduled again while it ran
                heapq.heappush(self._heap, (due, next(self._seq), key))
                self._wake.set()

    def _work(self, key: Key, body: dict[str, Any] | None) -> None:
        """One reconcile or finalization, in a worker thread; ``body`` None: read it first."""
        assert self.syncer is not None  # noqa: S101 - started before any work
        if body is None:
            try:
                body = self.syncer.custom.get_namespaced_custom_object(
                    GROUP, VERSION, key[0], PLURAL, key[1]
                )
            except ApiException as exc:
                if exc.status == 404:
                    self.forget(key)
                else:
                    self._retry(key, f"Kubernetes API answered {exc.status}")
                return
            except Urllib3Error as exc:
                self._retry(key, f"Kubernetes API unreachable ({type(exc).__name__})")
                return
        if body["metadata"].get("deletionTimestamp"):
            self._finalize(key, body)
        else:
            self._sync_blocking(key, body)

    def _finalize(self, key: Key, body: dict[str, Any]) -> None:
        assert self.deletions is not None  # noqa: S101
        if FINALIZER not in (body["metadata"].get("finalizers") or ()):
            return
        try:
            done = self.deletions.finalize(key, body)
        except ApiException as exc:
            if exc.status == 404:
                self.forget(key)
                return
            self._retry(key, f"cannot finalize: Kubernetes API answered {exc.status}")
            return
        except (StrongroomError, Urllib3Error) as exc:
            self._retry(key, f"cannot finalize: {exc or type(exc).__name__}")
            return
        if done.refused:
            self._event(body, "Warning", "FinalizeIncomplete", done.detail)
        log.info("%s/%s: deletionPolicy applied: %s", key[0], key[1], done.detail)

    def _sync_blocking(self, key: Key, body: dict[str, Any]) -> Result:
        assert self.syncer is not None  # noqa: S101 - started before any sync
        namespace, name = key
        start = time.perf_counter()
        result = self.syncer.reconcile(body)
        outcome = Reason.UNCHANGED if result.ready and not result.wrote else result.reason
        RECONCILES.labels(outcome).inc()
        RECONCILE_SECONDS.labels(outcome).observe(time.perf_counter() - start)
        tracked = self.tracked.setdefault(key, Tracked())
        # Before the status write, whose watch event must then be recognised as our own echo.
        tracked.generation = body["metadata"].get("generation")
        tracked.config_maps = config_maps_of(body.get("spec") or {})
        MANAGED.set(len(self.tracked))
        if result.generated:
            tracked.oldest_generated = min(result.generated.values())
        if result.ready:
            tracked.failures = 0
            tracked.version = result.version
            tracked.data_hmac = result.data_hmac
            spec = body.get("spec") or {}
            tracked.target = (spec.get("target") or {}).get("name") or name
            tracked.shape = Shape.of(spec)
            tracked.uid = body["metadata"].get("uid", "")
        else:
            self.syncer.audit_failure(namespace, name, result)
        patch = status_patch(body, result)
        try:
            if patch is not None:
                self.syncer.write_status(body, patch)
            for event_type, reason, message in result.events:
                self._event(body, event_type, reason, message)
            previous: dict[str, Any] = next((c for c in (body.get("status") or {}).get("conditions") or []
                             if c.get("type") == "Ready"), {})  # fmt: skip
            if not result.ready and previous.get("reason") != result.reason:
                self._event(body, "Warning", result.reason, result.message)
        except (ApiException, Urllib3Error) as exc:
            log.warning("could not update status of %s/%s: %s", namespace, name,
                        getattr(exc, "status", type(exc).__name__))  # fmt: skip
        if result.permanent:
            pass  # a new generation of the spec brings the next reconcile
        elif result.retry or (not result.ready and result.next_refresh is None):
            self._schedule_from_thread(key, self._backoff(key))
        elif result.next_refresh is not None:
            delay = (result.next_refresh - datetime.now(UTC)).total_seconds()
            self._schedule_from_thread(key, delay)
        if result.ready:
            log.info("%s/%s: %s (version %s)", namespace, name, result.reason, result.version)
        else:
            log.warning("%s/%s: %s: %s", namespace, name, result.reason, result.message)
        return result

    def _retry(self, key: Key, why: str) -> None:
        log.warning("%s/%s: %s; retrying", key[0], key[1], why)
        self._schedule_from_thread(key, self._backoff(key))

    def _backoff(self, key: Key) -> float:
        """Count one more failure of ``key``; the delay before its retry (2 s doubling to 5 min)."""
        tracked = self.tracked.setdefault(key, Tracked())
        tracked.failures += 1
        return min(MAX_BACKOFF, MIN_BACKOFF * 2.0 ** (tracked.failures - 1))

    def _schedule_from_thread(self, key: Key, delay: float) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.schedule, key, delay)

    def _event(self, body: Mapping[str, Any], event_type: str, reason: str, message: str) -> None:
        if self.events is None:
            return
        meta = body["metadata"]
        involved = InvolvedObject(f"{GROUP}/{VERSION}", KIND, meta["namespace"], meta["name"],
                                  meta["uid"])  # fmt: skip
        self.events.record(involved, event_type, reason, message)

    # -- the two watches --------------------------------------------------------------------

    async def _store_watch(self) -> None:
        """Pick up values written to the store by anyone (the CLI, another replica)."""
        assert self.room is not None  # noqa: S101
        since = datetime.now(UTC) - timedelta(seconds=1)
        while not self._stop.is_set():
            await asyncio.sleep(self.store_poll)
            try:
                changed = await asyncio.to_thread(self.room.changed_since, since)
            except StrongroomError as exc:
                log.warning("store watch: %s", exc)
                continue
            for namespace, name, version, updated in changed:
                stamp = updated if updated.tzinfo else updated.replace(tzinfo=UTC)
                since = max(since, stamp)
                tracked = self.tracked.get((namespace, name))
                if tracked is not None and tracked.version != version:
                    log.info("the store has a new version of %s/%s (version %s); syncing",
                             namespace, name, version)  # fmt: skip
                    self.schedule((namespace, name))
            for reader in self.dependants.of((namespace, name) for namespace, name, _v, _u
                                             in changed):  # fmt: skip
                log.info("%s/%s: a ManagedSecret it composes from changed; syncing", *reader)
                self.schedule(reader)

    def _watches(self, namespace: str | None) -> list[RawWatch]:
        """The ManagedSecret watch and the managed-Secret watch of one namespace (None: all)."""
        assert self.syncer is not None  # noqa: S101
        core, custom = self.syncer.core, self.syncer.custom
        selector = f"{MANAGED_BY}={MANAGED_BY_VALUE}"
        if namespace:
            list_managed = functools.partial(custom.list_namespaced_custom_object, GROUP, VERSION,
                                             namespace, PLURAL)  # fmt: skip
            list_secrets = functools.partial(core.list_namespaced_secret, namespace,
                                             label_selector=selector)  # fmt: skip
            list_config_maps = functools.partial(core.list_namespaced_config_map, namespace)
            list_grants = functools.partial(custom.list_namespaced_custom_object, GROUP, VERSION,
                                            namespace, GRANT_PLURAL)  # fmt: skip
        else:
            list_managed = functools.partial(custom.list_cluster_custom_object, GROUP, VERSION,
                                             PLURAL)  # fmt: skip
            list_secrets = functools.partial(core.list_secret_for_all_namespaces,
                                             label_selector=selector)  # fmt: skip
            list_config_maps = core.list_config_map_for_all_namespaces
            list_grants = functools.partial(custom.list_cluster_custom_object, GROUP, VERSION,
                                            GRANT_PLURAL)  # fmt: skip
        timeout = (min(CONNECT_TIMEOUT, self.api_timeout), WATCH_SECONDS + 30.0)
        return [
            RawWatch(KIND, list_managed, on_events=self._managed_events, stop=self._stop,
                     on_listed=functools.partial(self._managed_listed, namespace),
                     watch_timeout=timeout, watch_seconds=WATCH_SECONDS),
            # Secrets: the listing only gives the version to watch from; their ManagedSecrets'
            # reconciles check them anyway.
            RawWatch("Secret", list_secrets, on_events=self._secret_events, stop=self._stop,
                     list_items=False, watch_timeout=timeout, watch_seconds=WATCH_SECONDS),
            # ConfigMaps: events only (nothing cached), for templateFrom.
            RawWatch("ConfigMap", list_config_maps, on_events=self._config_map_events,
                     stop=self._stop, list_items=False, watch_timeout=timeout,
                     watch_seconds=WATCH_SECONDS),
            # Grants: events only, so that a revoked grant withdraws what it allowed at once.
            RawWatch(GRANT_KIND, list_grants, on_events=self._grant_events, stop=self._stop,
                     list_items=False, watch_timeout=timeout, watch_seconds=WATCH_SECONDS),
        ]  # fmt: skip

    def _grant_events(self, events: list[Event]) -> None:
        """From a watch thread: a grant changed; its namespace's readers elsewhere re-sync."""
        namespaces = {(e[1].get("metadata") or {}).get("namespace", "") for e in events}
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._grants_changed, namespaces)

    def _grants_changed(self, namespaces: set[str]) -> None:
        for reader in self.dependants.across(namespaces):
            log.info("%s/%s: a grant it depends on changed; syncing", *reader)
            self.schedule(reader)

    def _config_map_events(self, events: list[Event]) -> None:
        """From a watch thread: a ConfigMap changed (added, edited, deleted)."""
        changed = {((e[1].get("metadata") or {}).get("namespace"),
                    (e[1].get("metadata") or {}).get("name")) for e in events}  # fmt: skip
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._config_maps_changed, changed)

    def _config_maps_changed(self, changed: set[tuple[str | None, str | None]]) -> None:
        """Re-render every ManagedSecret that takes templates from a changed ConfigMap."""
        for key, tracked in self.tracked.items():
            for name in tracked.config_maps:
                if (key[0], name) in changed:
                    log.info("%s/%s: template ConfigMap %s changed; syncing", key[0], key[1], name)
                    self.schedule(key)

    def _managed_events(self, events: list[Event]) -> None:
        """From a watch thread: file a chunk of ManagedSecret events on the event loop."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._observe_all, events)

    def _observe_all(self, events: list[Event]) -> None:
        for event_type, body in events:
            self.observe(event_type, body)

    def _managed_listed(self, namespace: str | None, names: set[str]) -> None:
        """After a complete listing: objects tracked but no longer listed were deleted while
        the watch was down (its DELETED event never came)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._forget_unlisted, namespace, names)

    def _forget_unlisted(self, namespace: str | None, names: set[str]) -> None:
        for key in [k for k in self.tracked if namespace in (None, k[0])]:
            if f"{key[0]}/{key[1]}" not in names:
                self._gone(key)

    def _secret_events(self, events: list[Event]) -> None:
        """Repair edits and deletions of managed Secrets; ADDED events are the operator's own
        writes (or a relisting) and are skipped."""
        for event_type, secret in events:
            if event_type in {"MODIFIED", "DELETED"}:
                self._secret_changed(event_type, secret)

    def _secret_changed(self, kind: str, secret: Mapping[str, Any]) -> None:
        meta = secret.get("metadata") or {}
        for owner in owner_candidates(meta):
            key = (meta.get("namespace", ""), owner)
            tracked = self.tracked.get(key)
            if tracked is not None and tracked.target == meta.get("name"):
                break
        else:
            return
        key_bytes = self.syncer.hmac_key_if_loaded() if self.syncer is not None else None
        ours = False
        if kind == "MODIFIED" and key_bytes is not None and tracked.data_hmac is not None:
            if tracked.shape is not None and unchanged(
                secret, hmac_key=key_bytes, namespace=key[0], name=key[1], uid=tracked.uid,
                written_hmac=tracked.data_hmac, shape=tracked.shape,
            ):  # fmt: skip
                return  # our own write, or a change that left everything of ours as it should be
            actual = data_hmac(key_bytes, namespace=key[0], name=key[1], uid=tracked.uid,
                               secret_type=secret.get("type") or "Opaque",
                               data=secret.get("data") or {})  # fmt: skip
            annotated = (meta.get("annotations") or {}).get(HMAC_ANNOTATION)
            # Data that carries its own HMAC was written by Strongroom; while this object's
            # reconcile runs, it is that reconcile's write, seen before its result is tracked
            # (a store-side change: not an edit to report). Checked again all the same.
            ours = actual == annotated and key in self._running
        if ours:
            log.debug("%s/%s: Secret %s written by the sync under way", key[0], key[1],
                      meta.get("name"))  # fmt: skip
        else:
            log.info("%s/%s: Secret %s was %s; repairing", key[0], key[1], meta.get("name"),
                     "deleted" if kind == "DELETED" else "changed")  # fmt: skip
        self.schedule_threadsafe(key)

    async def check_kek(self) -> str:
        """The KEK can unwrap the active data key (one KEK call only when nothing is cached)."""
        if self.room is None:
            raise RuntimeError("store not open yet")
        return await asyncio.to_thread(self.room.data_keys.check)

    async def check_audit(self) -> str:
        """The store reaches the published audit checkpoint (raises with the reason if not)."""
        if self.keeper is None:
            return "no audit checkpoint (off)"
        return self.keeper.probe()

    async def check_store(self) -> str:
        if self.room is None:
            raise RuntimeError("store not open yet")
        await asyncio.to_thread(self.room.changed_since, datetime.now(UTC))
        return "ok"
