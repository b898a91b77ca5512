"""Projection of a ManagedSecret's stored values into a Kubernetes Secret.

Plain functions and one class, :class:`Syncer`, usable without kopf: the operator's handlers,
its refresh scheduler, its store watch and its Secret watch all call :meth:`Syncer.reconcile`.

Order of a reconcile: resolve every declared key into the store (generate once, import once,
rotate when due; the store is the source of truth and nothing is regenerated on a restart),
read the desired data from the store, compare an HMAC of the Secret's actual data with the
desired one, and write only when they differ. The HMAC key is itself a secret in the store
(``strongroom-system/sync-hmac-key``), so the annotation and status reveal nothing about
values, unlike a plain hash would.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import hmac
import json
import os
import random
import secrets as pysecrets
import string
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes.client import AppsV1Api, CoreV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError as Urllib3Error

from strongroom import values
from strongroom.api import Strongroom
from strongroom.audit import AuditEvent, Outcome
from strongroom.config import parse_duration
from strongroom.errors import AlreadyExists, KeyringError, NotFound, StoreError, StrongroomError
from strongroom.kubewrites import DirectWrites, discard
from strongroom.metrics import SECRET_WRITES

GROUP = "strongroom.io"
VERSION = "v1alpha1"
PLURAL = "managedsecrets"
KIND = "ManagedSecret"

MANAGED_BY = "strongroom.io/managed-by"
MANAGED_BY_VALUE = "strongroom"
OWNER_LABEL = "strongroom.io/managed-secret"
HMAC_ANNOTATION = "strongroom.io/data-hmac"
KEYS_ANNOTATION = "strongroom.io/managed-keys"
RESTART_ANNOTATION = "strongroom.io/restartedAt"
FINALIZER = "strongroom.io/finalizer"

HMAC_SECRET = ("strongroom-system", "sync-hmac-key")
MESSAGE_LIMIT = 240

_CHARSETS = {
    "alphanumeric": string.ascii_letters + string.digits,
    "hex": "0123456789abcdef",
    "base64url": string.ascii_letters + string.digits + "-_",
    "ascii": "".join(c for c in string.printable[:94] if c not in "\"'`\\"),
}


class Reason:
    """CamelCase condition reasons, in one place (ESO's habit)."""

    SYNCED = "Synced"
    UNCHANGED = "Unchanged"
    MISSING_VALUES = "MissingValues"
    SOURCE_NOT_FOUND = "SourceNotFound"
    SOURCE_INVALID = "SourceInvalid"
    TARGET_CONFLICT = "TargetConflict"
    MERGE_TARGET_MISSING = "MergeTargetMissing"
    STORE_UNAVAILABLE = "StoreUnavailable"
    KEK_UNAVAILABLE = "KEKUnavailable"
    STORE_REJECTED = "StoreRejected"
    KUBERNETES_ERROR = "KubernetesAPIError"
    CREATED_ONCE = "CreatedOnce"


@dataclasses.dataclass(frozen=True)
class DataItem:
    key: str
    generate: Mapping[str, Any] | None = None
    from_secret: Mapping[str, Any] | None = None


@dataclasses.dataclass(frozen=True)
class Spec:
    """A ManagedSecret spec with the defaults the CRD declares applied again defensively."""

    target_name: str
    target_type: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    immutable: bool
    creation_policy: str
    deletion_policy: str
    data: tuple[DataItem, ...]
    refresh_interval: timedelta
    refresh_policy: str
    keep_previous: timedelta | None
    rollout_restart: tuple[tuple[str, str], ...]

    @classmethod
    def parse(cls, name: str, spec: Mapping[str, Any]) -> Spec:
        target = spec.get("target") or {}
        rotation = spec.get("rotation") or {}
        keep = rotation.get("keepPrevious")
        return cls(
            target_name=target.get("name") or name,
            target_type=target.get("type") or "Opaque",
            labels=dict(target.get("labels") or {}),
            annotations=dict(target.get("annotations") or {}),
            immutable=bool(target.get("immutable", False)),
            creation_policy=target.get("creationPolicy") or "Owner",
            deletion_policy=target.get("deletionPolicy") or "Delete",
            data=tuple(
                DataItem(item["key"], item.get("generate"), item.get("fromSecret"))
                for item in spec.get("data") or []
            ),
            refresh_interval=parse_duration(spec.get("refreshInterval") or "1h"),
            refresh_policy=spec.get("refreshPolicy") or "Periodic",
            keep_previous=parse_duration(keep) if keep else None,
            rollout_restart=tuple(
                (item["kind"], item["name"]) for item in spec.get("rolloutRestart") or []
            ),
        )


def needs_finalizer(spec: Spec) -> bool:
    """Whether deleting the ManagedSecret needs the operator.

    Owner + Delete (the default) is Kubernetes' own job: the Secret's controller
    ownerReference lets the garbage collector delete it, with no finalizer to patch in and out
    and nothing stuck if the operator is gone. Retain (drop the ownerReference first), Orphan +
    Delete and Merge (remove only our keys) need work at deletion time, so a finalizer holds
    the object until it is done.
    """
    return not (spec.creation_policy == "Owner" and spec.deletion_policy == "Delete")


@dataclasses.dataclass
class Result:
    """What a reconcile did; turned into status, events and audit by the caller."""

    ready: bool
    reason: str
    message: str
    version: int | None = None
    data_hmac: str | None = None
    wrote: bool = False
    data_changed: bool = False
    next_refresh: datetime | None = None
    generated: dict[str, str] = dataclasses.field(default_factory=dict)
    events: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)
    retry: bool = False


def generate_value(length: int, charset: str) -> str:
    """``length`` characters, each drawn uniformly from the charset by the OS's CSPRNG.

    One ``os.urandom`` read per value, not one per character as ``secrets.choice`` makes
    (it was a tenth of the store writer's time); bytes that would favour the first characters
    of the alphabet (those at or above the largest multiple of its size) are discarded.
    """
    alphabet = _CHARSETS.get(charset, _CHARSETS["alphanumeric"])
    size = len(alphabet)
    limit = 256 - 256 % size
    chars: list[str] = []
    while len(chars) < length:
        chars.extend(alphabet[b % size] for b in os.urandom(length + 16) if b < limit)
    return "".join(chars[:length])


def data_hmac(key: bytes, secret_type: str, data: Mapping[str, str]) -> str:
    """HMAC-SHA256 over the type and base64 data, canonically encoded."""
    doc = json.dumps({"type": secret_type, "data": dict(sorted(data.items()))},
                     separators=(",", ":"))  # fmt: skip
    return hmac.new(key, doc.encode(), hashlib.sha256).hexdigest()


def clip(message: str) -> str:
    return message if len(message) <= MESSAGE_LIMIT else message[: MESSAGE_LIMIT - 1] + "…"


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def load_hmac_key(room: Strongroom, actor: str) -> bytes:
    """The store-held key for data HMACs, created once (create-only, so replicas agree)."""
    namespace, name = HMAC_SECRET
    try:
        return bytes.fromhex(room.get(namespace, name, "key", actor=actor).data["key"])
    except NotFound:
        pass
    with contextlib.suppress(AlreadyExists):  # another replica created it first: use theirs
        room.set(namespace, name, {"key": pysecrets.token_hex(32)}, if_absent=True, actor=actor,
                 description="HMAC key for Strongroom's sync (not a user secret)")  # fmt: skip
    return bytes.fromhex(room.get(namespace, name, "key", actor=actor).data["key"])


class Syncer:
    """Reconciles ManagedSecrets; thread-safe as long as one object is reconciled at a time."""

    def __init__(
        self,
        room: Strongroom,
        core: CoreV1Api,
        apps: AppsV1Api,
        custom: CustomObjectsApi,
        *,
        writes: DirectWrites,
        actor: str,
        hmac_key: bytes | None = None,
    ) -> None:
        self.room = room
        self.writes = writes
        self.core = core
        self.apps = apps
        self.custom = custom
        self.actor = actor
        self._hmac_key = hmac_key

    @property
    def hmac_key(self) -> bytes:
        """Loaded from the store on first need, so a KEK outage at start is not a crash."""
        if self._hmac_key is None:
            self._hmac_key = load_hmac_key(self.room, self.actor)
        return self._hmac_key

    def hmac_key_if_loaded(self) -> bytes | None:
        return self._hmac_key

    def write_status(self, body: Mapping[str, Any], patch: dict[str, Any]) -> None:
        """Replace the status as of the object version reconciled; if the object has changed
        since (409), merge the patch into whatever it is now.

        A replace costs the apiserver ≈ 10 % less CPU than a merge patch (it does not
        serialise the stored object to apply a patch to it), and the status is most of what
        a new ManagedSecret costs it after its creation.
        """
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        if meta.get("resourceVersion"):
            status = {**(body.get("status") or {}), **patch}
            replacement = {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "status": status,
                           "metadata": {"name": name, "namespace": namespace,
                                        "resourceVersion": meta["resourceVersion"]}}  # fmt: skip
            try:
                self.writes.replace_status(f"{GROUP}/{VERSION}", PLURAL, namespace, name,
                                           replacement)  # fmt: skip
                return
            except ApiException as exc:
                if exc.status != 409:
                    raise
        discard(self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, name, {"status": patch}, _preload_content=False,
        ))  # fmt: skip

    # -- the main path ----------------------------------------------------------------------

    def reconcile(self, body: Mapping[str, Any]) -> Result:
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        status = body.get("status") or {}
        try:
            spec = Spec.parse(name, body.get("spec") or {})
        except (ValueError, KeyError) as exc:
            return Result(False, Reason.STORE_REJECTED, clip(f"invalid spec: {exc}"))
        if spec.refresh_policy == "CreatedOnce" and status.get("version"):
            return Result(True, Reason.CREATED_ONCE, "created once; not updated (CreatedOnce)",
                          version=status.get("version"), data_hmac=status.get("dataHMAC"))  # fmt: skip
        try:
            return self._reconcile(body, spec, namespace, name, status)
        except KeyringError as exc:
            return Result(False, Reason.KEK_UNAVAILABLE, clip(str(exc)), retry=True)
        except StoreError as exc:
            return Result(False, Reason.STORE_UNAVAILABLE, clip(str(exc)), retry=True)
        except StrongroomError as exc:
            return Result(False, Reason.STORE_REJECTED, clip(str(exc)), retry=True)
        except ApiException as exc:
            return Result(False, Reason.KUBERNETES_ERROR,
                          f"Kubernetes API answered {exc.status} {exc.reason}", retry=True)  # fmt: skip
        except Urllib3Error as exc:  # refused, reset, or no answer within the API timeout
            return Result(False, Reason.KUBERNETES_ERROR,
                          f"Kubernetes API unreachable ({type(exc).__name__})", retry=True)  # fmt: skip

    def _reconcile(
        self, body: Mapping[str, Any], spec: Spec, namespace: str, name: str,
        status: Mapping[str, Any],
    ) -> Result:  # fmt: skip
        now = _now()
        generated = dict(status.get("generated") or {})
        events: list[tuple[str, str, str]] = []

        # 1. Resolve every declared key into the store: values to generate in the same
        #    transaction as the read (generated exactly when absent or due), imports after it
        #    (they read a Secret first, which must not happen inside a transaction).
        rotated: list[str] = []

        def produce(current: Mapping[str, Any]) -> dict[str, Any]:
            # May run twice (resolve() asks again if another writer got in first): no
            # side effect but the record of when each value was generated.
            fresh: dict[str, Any] = {}
            rotated.clear()
            for item in spec.data:
                if item.generate is None:
                    continue
                period = item.generate.get("rotationPeriod")
                last = _parse_iso(generated.get(item.key))
                due = item.key not in current or (
                    period is not None and last is not None
                    and now - last >= parse_duration(period)
                )  # fmt: skip
                if due:
                    fresh[item.key] = generate_value(
                        int(item.generate.get("length", 32)),
                        str(item.generate.get("charset", "alphanumeric")),
                    )
                    generated[item.key] = _iso(now)
                    if item.key in current:
                        rotated.append(item.key)
                elif item.key not in generated:
                    generated[item.key] = _iso(now)
            return fresh

        found = self.room.resolve(namespace, name, produce, actor=self.actor)
        events.extend(("Normal", "Rotated", f"generated a new value for {key}") for key in rotated)
        stored, version = (dict(found.data), found.version) if found is not None else ({}, 0)

        new_values: dict[str, Any] = {}
        sources_to_delete: list[str] = []
        for item in spec.data:
            if item.from_secret is not None and item.key not in stored:
                source = self._read_secret(namespace, item.from_secret["name"])
                raw = None if source is None else (source.data or {}).get(item.from_secret["key"])
                if raw is None:
                    return Result(
                        False, Reason.SOURCE_NOT_FOUND,
                        f"fromSecret {item.from_secret['name']}/{item.from_secret['key']} for key "
                        f"{item.key} does not exist", retry=True,
                    )  # fmt: skip
                try:
                    new_values[item.key] = base64.b64decode(raw).decode("utf-8")
                except (ValueError, UnicodeDecodeError):
                    return Result(False, Reason.SOURCE_INVALID,
                                  f"fromSecret value for key {item.key} is not UTF-8 text")  # fmt: skip
                events.append(("Normal", "Imported",
                                f"imported {item.key} from Secret {item.from_secret['name']}"))  # fmt: skip
                if item.from_secret.get("deleteSource"):
                    sources_to_delete.append(item.from_secret["name"])
        if new_values:
            version = self.room.set(namespace, name, new_values, actor=self.actor)
            # The new version is what we had plus what we wrote: no second read needed.
            stored = {**stored, **new_values}
        for source_name in sources_to_delete:
            self._delete_secret(namespace, source_name)

        missing = sorted(item.key for item in spec.data if item.key not in stored)
        if missing or not stored:
            shown = ", ".join(missing) or "(none yet)"
            return Result(
                False, Reason.MISSING_VALUES,
                clip(f"keys not in the store yet: {shown}; set them with "
                     f"`strongroom secret set {namespace}/{name} KEY=...`"),
                generated=generated, next_refresh=self._next_refresh(spec, generated, now),
            )  # fmt: skip

        desired = {
            key: base64.b64encode(values.render(value).encode("utf-8")).decode()
            for key, value in stored.items()
        }
        wanted_hmac = data_hmac(self.hmac_key, spec.target_type, desired)

        # 2. Make the Secret match (a finalizer first when deletion will need us).
        if needs_finalizer(spec):
            self.ensure_finalizer(body)
        outcome = self._write_target(body, spec, namespace, desired, wanted_hmac)
        if isinstance(outcome, Result):
            return outcome
        wrote, data_changed = outcome
        if wrote:
            events.append(("Normal", "Synced",
                           f"Secret {spec.target_name} now holds version {version}"))  # fmt: skip
            self._audit("operator.sync", namespace, name, version,
                        f"Secret {spec.target_name} written")  # fmt: skip
        if data_changed and spec.rollout_restart:
            events.extend(self._rollout_restart(namespace, spec, now))
        if spec.keep_previous is not None:
            self.room.retire_previous(namespace, name, grace=spec.keep_previous, actor=self.actor)

        return Result(
            True, Reason.SYNCED if wrote else Reason.UNCHANGED,
            f"Secret {spec.target_name} matches store version {version}",
            version=version, data_hmac=wanted_hmac, wrote=wrote, data_changed=data_changed,
            next_refresh=self._next_refresh(spec, generated, now, previous=version > 1),
            generated=generated, events=events,
        )  # fmt: skip

    # -- pieces -----------------------------------------------------------------------------

    def _next_refresh(
        self, spec: Spec, generated: Mapping[str, str], now: datetime, *, previous: bool = False
    ) -> datetime | None:
        candidates: list[datetime] = []
        if previous and spec.keep_previous is not None:
            candidates.append(now + spec.keep_previous)  # to retire the previous version
        if spec.refresh_policy == "Periodic":
            jitter = 1 + random.uniform(-0.1, 0.1)  # noqa: S311 - spreading load, not security
            candidates.append(now + spec.refresh_interval * jitter)
        for item in spec.data:
            period = (item.generate or {}).get("rotationPeriod")
            last = _parse_iso(generated.get(item.key))
            if period and last:
                candidates.append(last + parse_duration(period))
        return min(candidates) if candidates else None

    def _read_secret(self, namespace: str, name: str) -> Any:
        try:
            return self.core.read_namespaced_secret(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def _delete_secret(self, namespace: str, name: str) -> None:
        try:
            self.core.delete_namespaced_secret(name, namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def _write_target(
        self, body: Mapping[str, Any], spec: Spec, namespace: str, desired: dict[str, str],
        wanted_hmac: str,
    ) -> tuple[bool, bool] | Result:  # fmt: skip
        """(wrote, data changed) or a failed Result."""
        meta = body["metadata"]
        first_sync = not (body.get("status") or {}).get("version")
        if first_sync and spec.creation_policy != "Merge":
            # A new object's Secret usually does not exist yet: try to create it straight away
            # and read it only if it does (saves a GET per object on a burst of creations).
            try:
                self.writes.create_secret(
                    namespace, self._new_secret(spec, meta, namespace, desired, wanted_hmac)
                )
                SECRET_WRITES.labels("create").inc()
                return True, False
            except ApiException as exc:
                if exc.status != 409:
                    raise
        existing = self._read_secret(namespace, spec.target_name)
        ours = (existing is not None and existing.metadata.labels
                and existing.metadata.labels.get(MANAGED_BY) == MANAGED_BY_VALUE)  # fmt: skip
        if spec.creation_policy == "Merge":
            if existing is None:
                return Result(False, Reason.MERGE_TARGET_MISSING,
                              f"Secret {spec.target_name} must exist for creationPolicy Merge",
                              retry=True)  # fmt: skip
        elif existing is not None and not ours:
            return Result(False, Reason.TARGET_CONFLICT,
                          f"Secret {spec.target_name} exists and is not managed by Strongroom; "
                          "use creationPolicy Merge to add keys to it")  # fmt: skip

        actual_data = dict(existing.data or {}) if existing is not None else {}
        if spec.creation_policy == "Merge":
            actual_view = {k: actual_data[k] for k in desired if k in actual_data}
            previous_keys = set(
                filter(
                    None, (existing.metadata.annotations or {}).get(KEYS_ANNOTATION, "").split(",")
                )
            )
            stale = previous_keys - set(desired)
        else:
            actual_view, stale = actual_data, set()
        actual_type = existing.type if existing is not None else None
        actual_hmac = data_hmac(self.hmac_key, actual_type or spec.target_type, actual_view)
        same_data = (
            existing is not None
            and hmac.compare_digest(actual_hmac, wanted_hmac)
            and (spec.creation_policy == "Merge" or actual_type == spec.target_type)
            and not stale
        )
        labels = dict(existing.metadata.labels or {}) if existing is not None else {}
        annotations = dict(existing.metadata.annotations or {}) if existing is not None else {}
        want_labels = {**spec.labels, MANAGED_BY: MANAGED_BY_VALUE, OWNER_LABEL: meta["name"]}
        want_annotations = {**spec.annotations, HMAC_ANNOTATION: wanted_hmac}
        if spec.creation_policy == "Merge":
            want_annotations[KEYS_ANNOTATION] = ",".join(sorted(desired))
        meta_ok = all(labels.get(k) == v for k, v in want_labels.items()) and all(
            annotations.get(k) == v for k, v in want_annotations.items()
        )
        if same_data and meta_ok:
            return False, False

        if spec.creation_policy == "Merge":
            merged = {k: v for k, v in actual_data.items() if k not in stale}
            merged.update(desired)
            existing.data = merged
            existing.metadata.labels = {**labels, **want_labels}
            existing.metadata.annotations = {**annotations, **want_annotations}
            self.core.replace_namespaced_secret(spec.target_name, namespace, existing)
            SECRET_WRITES.labels("replace").inc()
            return True, not same_data

        new_body = self._new_secret(spec, meta, namespace, desired, wanted_hmac)
        if existing is None:
            discard(self.core.create_namespaced_secret(namespace, new_body, _preload_content=False))
            SECRET_WRITES.labels("create").inc()
            return True, False
        if (existing.immutable or actual_type != spec.target_type) and not same_data:
            self._delete_secret(namespace, spec.target_name)
            discard(self.core.create_namespaced_secret(namespace, new_body, _preload_content=False))
            SECRET_WRITES.labels("recreate").inc()
            return True, True
        new_body["metadata"]["resourceVersion"] = existing.metadata.resource_version
        discard(self.core.replace_namespaced_secret(
            spec.target_name, namespace, new_body, _preload_content=False
        ))  # fmt: skip
        SECRET_WRITES.labels("replace").inc()
        return True, not same_data

    def _new_secret(
        self, spec: Spec, meta: Mapping[str, Any], namespace: str, desired: dict[str, str],
        wanted_hmac: str,
    ) -> dict[str, Any]:  # fmt: skip
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": spec.target_name,
                "namespace": namespace,
                "labels": {**spec.labels, MANAGED_BY: MANAGED_BY_VALUE, OWNER_LABEL: meta["name"]},
                "annotations": {**spec.annotations, HMAC_ANNOTATION: wanted_hmac},
            },
            "type": spec.target_type,
            "data": desired,
        }
        if spec.immutable:
            body["immutable"] = True
        if spec.creation_policy == "Owner":
            body["metadata"]["ownerReferences"] = [{
                "apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "name": meta["name"],
                "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True,
            }]  # fmt: skip
        return body

    def _rollout_restart(
        self, namespace: str, spec: Spec, now: datetime
    ) -> list[tuple[str, str, str]]:
        patch = {
            "spec": {"template": {"metadata": {"annotations": {RESTART_ANNOTATION: _iso(now)}}}}
        }
        events = []
        for kind, workload in spec.rollout_restart:
            method = {
                "Deployment": self.apps.patch_namespaced_deployment,
                "StatefulSet": self.apps.patch_namespaced_stateful_set,
                "DaemonSet": self.apps.patch_namespaced_daemon_set,
            }[kind]
            try:
                method(workload, namespace, patch)
                events.append(("Normal", "RolloutRestarted", f"restarted {kind} {workload}"))
            except ApiException as exc:
                events.append(("Warning", "RolloutRestartFailed",
                               f"could not restart {kind} {workload}: {exc.status} {exc.reason}"))  # fmt: skip
        return events

    # -- deletion ---------------------------------------------------------------------------

    def ensure_finalizer(self, body: Mapping[str, Any]) -> None:
        """Add Strongroom's finalizer (conditional on the resourceVersion, so no edit is lost)."""
        meta = body["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if FINALIZER in finalizers:
            return
        self._patch_finalizers(meta, [*finalizers, FINALIZER])

    def release(self, body: Mapping[str, Any]) -> None:
        """Remove Strongroom's finalizer once :meth:`finalize` has done its work."""
        meta = body["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if FINALIZER in finalizers:
            self._patch_finalizers(meta, [f for f in finalizers if f != FINALIZER])

    def _patch_finalizers(self, meta: Mapping[str, Any], finalizers: list[str]) -> None:
        patch = {"metadata": {"finalizers": finalizers,
                              "resourceVersion": meta["resourceVersion"]}}  # fmt: skip
        discard(self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, meta["namespace"], PLURAL, meta["name"], patch,
            _preload_content=False,
        ))  # fmt: skip

    def finalize(self, body: Mapping[str, Any]) -> str:
        """Apply deletionPolicy; the values stay in the store. Returns what was done."""
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        spec = Spec.parse(name, body.get("spec") or {})
        existing = self._read_secret(namespace, spec.target_name)
        done = "nothing to do"
        if existing is not None and (existing.metadata.labels or {}).get(OWNER_LABEL) == name:
            if spec.creation_policy == "Merge":
                managed = set(filter(None, (existing.metadata.annotations or {}).get(
                    KEYS_ANNOTATION, "").split(",")))  # fmt: skip
                if spec.deletion_policy == "Delete":
                    existing.data = {k: v for k, v in (existing.data or {}).items()
                                     if k not in managed}  # fmt: skip
                for label in (MANAGED_BY, OWNER_LABEL):
                    (existing.metadata.labels or {}).pop(label, None)
                for annotation in (HMAC_ANNOTATION, KEYS_ANNOTATION):
                    (existing.metadata.annotations or {}).pop(annotation, None)
                self.core.replace_namespaced_secret(spec.target_name, namespace, existing)
                done = "merged keys removed" if spec.deletion_policy == "Delete" else "released"
            elif spec.deletion_policy == "Delete":
                self._delete_secret(namespace, spec.target_name)
                done = f"Secret {spec.target_name} deleted"
            else:
                patch = {"metadata": {"ownerReferences": None,
                                      "labels": {MANAGED_BY: None, OWNER_LABEL: None}}}  # fmt: skip
                self.core.patch_namespaced_secret(spec.target_name, namespace, patch)
                done = f"Secret {spec.target_name} retained"
        self._audit("operator.finalize", namespace, name, None, done)
        return done

    def _audit(self, action: str, namespace: str, name: str, version: int | None,
               detail: str, *, outcome: str = Outcome.OK) -> None:  # fmt: skip
        self.room.record(AuditEvent(time=_now(), actor=self.actor, action=action,
                                    outcome=outcome, namespace=namespace, name=name,
                                    version=version, detail=clip(detail)))  # fmt: skip

    def audit_gone(self, namespace: str, name: str, target: str) -> None:
        """A ManagedSecret without our finalizer was deleted: its Secret goes with it by garbage
        collection (ownerReference), and the audit log says so."""
        with contextlib.suppress(StrongroomError):
            self._audit("operator.finalize", namespace, name, None,
                        f"ManagedSecret deleted; Secret {target} is removed by Kubernetes "
                        "garbage collection (ownerReference)")  # fmt: skip

    def audit_failure(self, namespace: str, name: str, result: Result) -> None:
        # When the store itself is down this cannot be written; the condition says so.
        with contextlib.suppress(StrongroomError):
            self._audit("operator.sync", namespace, name, result.version,
                        f"{result.reason}: {result.message}", outcome=Outcome.ERROR)  # fmt: skip


def status_patch(
    body: Mapping[str, Any], result: Result, *, now: datetime | None = None
) -> dict[str, Any] | None:
    """The status subresource patch for ``result``, or None when nothing would change."""
    now = now or _now()
    status = body.get("status") or {}
    generation = body["metadata"].get("generation")
    old = {c.get("type"): c for c in status.get("conditions") or []}
    conditions = []
    for ctype, ok in (("Ready", result.ready), ("Synced", result.ready)):
        state = "True" if ok else "False"
        previous = old.get(ctype) or {}
        changed = previous.get("status") != state
        conditions.append({
            "type": ctype, "status": state, "reason": result.reason, "message": result.message,
            "observedGeneration": generation,
            "lastTransitionTime": _iso(now) if changed or not previous.get("lastTransitionTime")
            else previous["lastTransitionTime"],
        })  # fmt: skip
    new: dict[str, Any] = {
        "observedGeneration": generation,
        "conditions": conditions,
        "targetName": Spec.parse(body["metadata"]["name"], body.get("spec") or {}).target_name,
        "generated": result.generated or status.get("generated") or {},
    }
    if result.version is not None:
        new["version"] = result.version
    if result.data_hmac is not None:
        new["dataHMAC"] = result.data_hmac
    essential = {k: status.get(k) for k in new}
    if essential == new and not result.wrote:
        return None
    new["lastSyncTime"] = (
        _iso(now) if result.wrote or not status.get("lastSyncTime") else (status["lastSyncTime"])
    )
    if result.next_refresh is not None:
        new["nextRefreshTime"] = _iso(result.next_refresh)
    return new
