"""Projection of a ManagedSecret's stored values into a Kubernetes Secret.

Plain functions and one class, :class:`Syncer`, usable without kopf: the operator's handlers,
its refresh scheduler, its store watch and its Secret watch all call :meth:`Syncer.reconcile`.

Order of a reconcile: resolve every declared key into the store (generate once, import once,
rotate when due; the store is the source of truth and nothing is regenerated on a restart),
read the desired data from the store, compare an HMAC of the Secret's actual data with the
desired one, and write only when they differ (:mod:`strongroom.datahmac` says what the HMAC
binds and where its key lives).

What a spec may ask for is :mod:`strongroom.policy`'s to say; this module applies it where it
touches the cluster: a Secret is written or deleted only when it names this ManagedSecret's UID
(ownerReference or ``strongroom.io/owner-uid``), keys are merged only into a Secret that
consents (``strongroom.io/merge-from``), tokens are neither written nor imported, and a refused
spec is ``Ready=False InvalidSpec``, never an exception out of the reconcile.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hmac
import os
import random
import string
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from kubernetes.client import AppsV1Api, CoreV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError as Urllib3Error

from strongroom import policy, render, templatefrom
from strongroom.api import Strongroom
from strongroom.audit import AuditEvent, Outcome
from strongroom.datahmac import HMAC_SECRET, data_hmac, load_hmac_key
from strongroom.emergency import COMPROMISED, Rotation, conclude
from strongroom.errors import (
    KeyringError,
    NamespaceMismatch,
    StoreError,
    StrongroomError,
    TemplateError,
    ValidationError,
)
from strongroom.finalizers import ensure_finalizer, write_status
from strongroom.kubewrites import DirectWrites, discard
from strongroom.letgo import delete_secret, let_go, read_secret
from strongroom.metrics import SECRET_WRITES
from strongroom.namespaceids import NamespaceIdentities
from strongroom.namespaceids import parse_time as _parse_iso
from strongroom.policy import MANAGED_BY, MANAGED_BY_VALUE, OWNER_LABEL
from strongroom.resources import FINALIZER, GROUP, KIND, PLURAL, VERSION
from strongroom.restarts import RESTART_ANNOTATION, rollout_restart
from strongroom.sources.composed import (
    ChainRefusedError,
    Composer,
    CompositionCycleError,
    CompositionError,
    GrantMissingError,
    references_of,
)
from strongroom.sources.database import Databases, database_step, next_time
from strongroom.sources.imported import ImportFailedError, import_missing
from strongroom.sources.sealed import SealedOutcome, SealedSource, status_outcome
from strongroom.spec import DataItem, Spec, Target, needs_finalizer
from strongroom.targetmeta import HMAC_ANNOTATION, KEYS_ANNOTATION, Wanted, owner_reference

__all__ = [
    "FINALIZER", "GROUP", "HMAC_ANNOTATION", "HMAC_SECRET", "KIND", "MANAGED_BY",
    "MANAGED_BY_VALUE", "OWNER_LABEL", "PLURAL", "RESTART_ANNOTATION", "VERSION", "DataItem",
    "Reason", "Result", "Spec", "Syncer", "data_hmac", "generate_value", "load_hmac_key",
    "needs_finalizer", "status_patch",
]


MESSAGE_LIMIT = 240
# What the apiserver answers to a Secret it will never accept as sent (invalid, too large).
REFUSED_WRITES = frozenset({400, 413, 422})

_CHARSETS = {
    "alphanumeric": string.ascii_letters + string.digits,
    "hex": "0123456789abcdef",
    "base64url": string.ascii_letters + string.digits + "-_",
    "ascii": "".join(c for c in string.printable[:94] if c not in "\"'`\\"),
}


class Reason:
    """CamelCase condition reasons, in one place (ESO's habit)."""

    SYNCED = "Synced"
    UNCHANGED = "Unchanged"  # a metrics label only: a pass that found nothing to write
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
    INVALID_SPEC = "InvalidSpec"
    SECRET_REFUSED = "SecretRefused"  # noqa: S105 - a reason, not a password
    TOO_LARGE = "TooLarge"
    MERGE_NOT_ALLOWED = "MergeNotAllowed"
    NAMESPACE_MISMATCH = "NamespaceMismatch"
    TEMPLATE_ERROR = "TemplateError"
    COMPOSITION_CYCLE = "CompositionCycle"
    GRANT_MISSING = "GrantMissing"
    SEALED_INVALID = "SealedInvalid"  # a data[].sealed blob does not open here (no detail)
    SEALED_KEY_OLD = "SealedKeyOld"  # condition type and reason: reseal with a newer key
    SEALED_KEY_CURRENT = "SealedKeyCurrent"


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
    permanent: bool = False  # nothing to retry until the spec changes (InvalidSpec)
    sealed: SealedOutcome | None = None  # data[].sealed as opened (status.sealed, SealedKeyOld)
    status_extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # emergency's


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


def clip(message: str) -> str:
    return message if len(message) <= MESSAGE_LIMIT else message[: MESSAGE_LIMIT - 1] + "…"


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")




def next_refresh(
    spec: Spec, generated: Mapping[str, str], now: datetime, *, previous: bool = False
) -> datetime | None:
    """When to look again: the refresh interval (jittered), a rotation falling due, or the end of
    the grace window of a previous version, whichever comes first."""
    candidates: list[datetime] = []
    if previous and spec.keep_previous is not None:
        candidates.append(now + spec.keep_previous)  # to retire the previous version
    if spec.refresh_policy == "Periodic":
        jitter = 1 + random.uniform(-0.1, 0.1)  # noqa: S311 - spreading load, not security
        candidates.append(now + spec.refresh_interval * jitter)
    for item in spec.data:
        last = _parse_iso(generated.get(item.key))
        if item.rotation_period is not None and last is not None:
            candidates.append(last + item.rotation_period)
    return policy.floor_schedule(now, candidates)


def new_secret(spec: Spec, meta: Mapping[str, Any], namespace: str, desired: dict[str, str],
               wanted: Wanted) -> dict[str, Any]:  # fmt: skip
    """The Secret a ManagedSecret asks for, as created (or replaced) whole."""
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": spec.target_name, "namespace": namespace,
                     "labels": dict(wanted.labels), "annotations": dict(wanted.annotations)},
        "type": spec.target_type,
        "data": desired,
    }
    if spec.immutable:
        body["immutable"] = True
    if wanted.owner_uid is not None:
        body["metadata"]["ownerReferences"] = [owner_reference(meta["name"], meta["uid"])]
    return body


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
        rollout_restart: bool = True,
        trust_namespace_names: bool = False,
        watched: frozenset[str] | None = None,
        database_engines: bool = False,
    ) -> None:
        self.watched = watched  # the namespaces the operator watches (None: all)
        self.rollout_restart_enabled = rollout_restart
        self.namespace_ids = NamespaceIdentities(core, trust_names=trust_namespace_names)
        self.room = room
        self.writes = writes
        self.core = core
        self.apps = apps
        self.custom = custom
        self.actor = actor
        self._hmac_key = hmac_key
        self.sealed = SealedSource(room, actor=actor, max_age=room.settings.sealing.max_age)
        self.databases = Databases(room, core, custom, actor=actor) if database_engines else None

    @property
    def hmac_key(self) -> bytes:
        """Loaded from the store on first need, so a KEK outage at start is not a crash."""
        if self._hmac_key is None:
            self._hmac_key = load_hmac_key(self.room, self.actor)
        return self._hmac_key

    def hmac_key_if_loaded(self) -> bytes | None:
        return self._hmac_key

    def write_status(self, body: Mapping[str, Any], patch: dict[str, Any]) -> None:
        """Write a status patch (:func:`strongroom.finalizers.write_status` says how)."""
        write_status(self.writes, self.custom, body, patch)

    # -- the main path ----------------------------------------------------------------------

    def reconcile(self, body: Mapping[str, Any]) -> Result:
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        status = body.get("status") or {}
        try:
            # Grants first: no early end below may leave a revoked value in the Secret.
            references = references_of(body.get("spec") or {}, namespace)
            composer = self._composer()  # one per sync: its grant listings serve both checks
            if any(source != namespace for source, _name in references):
                try:
                    composer.check_grants(namespace, references)
                except GrantMissingError as exc:
                    return self._withdraw(body, exc, status.get("version"))
            spec = Spec.parse(name, body.get("spec") or {})
            if spec.refresh_policy == "CreatedOnce" and status.get("version"):
                return Result(True, Reason.CREATED_ONCE, "created once; not updated (CreatedOnce)",
                              version=status.get("version"), data_hmac=status.get("dataHMAC"))  # fmt: skip
            return self._reconcile(body, spec, namespace, name, status, composer=composer)
        except KeyringError as exc:
            return Result(False, Reason.KEK_UNAVAILABLE, clip(str(exc)), retry=True)
        except StoreError as exc:
            return Result(False, Reason.STORE_UNAVAILABLE, clip(str(exc)), retry=True)
        except ValidationError as exc:  # the same input gets the same answer: no retry
            return Result(False, Reason.STORE_REJECTED, clip(str(exc)), permanent=True)
        except NamespaceMismatch as exc:  # until a rebind, which the store watch brings here
            return Result(False, Reason.NAMESPACE_MISMATCH, clip(str(exc)), permanent=True)
        except StrongroomError as exc:
            return Result(False, Reason.STORE_REJECTED, clip(str(exc)), retry=True)
        except policy.SpecRefusedError as exc:  # found out only once the store was read
            return Result(False, Reason.INVALID_SPEC, clip(str(exc)), permanent=True)
        except ApiException as exc:
            if exc.status in REFUSED_WRITES:  # retrying the same write gets the same answer
                return Result(False, Reason.SECRET_REFUSED,
                              f"the apiserver refused the Secret ({exc.status} {exc.reason}); "
                              "change the spec or the stored keys", permanent=True)  # fmt: skip
            return Result(False, Reason.KUBERNETES_ERROR,
                          f"Kubernetes API answered {exc.status} {exc.reason}", retry=True)  # fmt: skip
        except Urllib3Error as exc:  # refused, reset, or no answer within the API timeout
            return Result(False, Reason.KUBERNETES_ERROR,
                          f"Kubernetes API unreachable ({type(exc).__name__})", retry=True)  # fmt: skip

    def _reconcile(
        self, body: Mapping[str, Any], spec: Spec, namespace: str, name: str,
        status: Mapping[str, Any], *, composer: Composer,
    ) -> Result:  # fmt: skip
        now = _now()
        generated = dict(status.get("generated") or {})
        events: list[tuple[str, str, str]] = []

        # 1. Resolve every declared key into the store: values to generate in the same
        #    transaction as the read (generated exactly when absent or due), imports after it
        #    (they read a Secret first, which must not happen inside a transaction).
        rotated: list[str] = []
        rotation = Rotation.requested(body["metadata"], status)  # strongroom.emergency
        renew = rotation.renewable(spec.data) if rotation is not None else set()
        sealed = self.sealed.opened(namespace, name, spec.data, status)  # before the transaction
        if sealed is not None and sealed.invalid:  # nothing written: the Secret keeps its data
            return _sealed_invalid(sealed, status.get("version"), generated)

        def produce(current: Mapping[str, Any]) -> dict[str, Any]:
            # May run twice (resolve() asks again if another writer got in first): no
            # side effect but the record of when each value was generated.
            fresh: dict[str, Any] = {}
            rotated.clear()
            for item in spec.data:
                if item.generate is None:
                    continue
                period = item.rotation_period
                last = _parse_iso(generated.get(item.key))
                due = item.key not in current or item.key in renew or (
                    period is not None and last is not None and now - last >= period
                )
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
            if sealed is not None:  # in the same version as generated values
                fresh.update(sealed.changed(current))
            policy.check_key_count(len({*current, *fresh}), name)
            return fresh

        owner = self.namespace_ids.uid(namespace, body["metadata"].get("creationTimestamp"))
        found = self.room.resolve(namespace, name, produce, actor=self.actor, namespace_uid=owner)
        events.extend(("Normal", "Rotated", f"generated a new value for {key}") for key in rotated)
        stored, version = (dict(found.data), found.version) if found is not None else ({}, 0)

        try:
            imported = import_missing(self.core, namespace, spec.data, stored)
        except ImportFailedError as exc:
            if exc.missing:
                return Result(False, Reason.SOURCE_NOT_FOUND, clip(str(exc)), retry=True)
            return Result(False, Reason.SOURCE_INVALID, clip(str(exc)), permanent=exc.refused)
        new_values = imported.values
        events.extend(imported.events)
        if sealed is not None:  # values the store lost since their blob was opened: again
            new_values.update(self.sealed.reopen_lost(namespace, name, spec.data, stored, sealed))
            if sealed.invalid:
                return _sealed_invalid(sealed, version or None, generated)
        if new_values:
            version = self.room.set(namespace, name, new_values, actor=self.actor)
            # The new version is what we had plus what we wrote: no second read needed.
            stored = {**stored, **new_values}
        for source_name in imported.delete:
            delete_secret(self.core, namespace, source_name)
        events.extend(self.sealed.settle(namespace, name, status, sealed, version=version,
                                         audit=self.audit))
        issue = database_step(self.databases, namespace, name, spec.data, stored, now=now,
                              force=renew, revoke=bool(rotation and rotation.revoke))  # fmt: skip
        if issue is not None and issue.failure is not None:
            return Result(False, issue.failure[0], clip(issue.failure[1]), generated=generated,
                          version=version or None, retry=not issue.permanent,
                          permanent=issue.permanent)  # fmt: skip
        if issue is not None and issue.values:
            version = self.room.set(namespace, name, issue.values, actor=self.actor)
            issue.apply(stored, generated, events)
        composed = self._composed(composer, body, spec, namespace, name, version=version,
                                  generated=generated)  # fmt: skip
        if isinstance(composed, Result):
            return composed
        stored.update(composed)

        missing = sorted(item.key for item in spec.data if item.key not in stored)
        if missing or not stored:
            shown = ", ".join(missing) or "(none yet)"
            return Result(
                False, Reason.MISSING_VALUES,
                clip(f"keys not in the store yet: {shown}; set them with "
                     f"`strongroom secret set {namespace}/{name} KEY=...`"),
                generated=generated, next_refresh=next_refresh(spec, generated, now),
                sealed=status_outcome(sealed, status),
            )  # fmt: skip

        try:  # a failed template renders nothing: the Secret keeps its last good data
            template = templatefrom.resolve(self.core, namespace, spec.template)
            desired = render.secret_data(template, stored)
        except TemplateError as exc:  # fixed by a new spec or new values (both bring a sync)
            return Result(False, Reason.TEMPLATE_ERROR, clip(str(exc)), version=version,
                          generated=generated, permanent=True)  # fmt: skip
        size = sum(len(k) + len(v) for k, v in desired.items())
        if size > policy.MAX_SECRET_BYTES:
            return Result(False, Reason.TOO_LARGE,
                          f"the stored keys come to {size} bytes in base64; a Secret holds at "
                          f"most {policy.MAX_SECRET_BYTES}", permanent=True)  # fmt: skip
        wanted_hmac = self._hmac(body, spec.target_type, desired)

        # 2. Make the Secret match (a finalizer first when deletion will need us).
        if needs_finalizer(spec):
            ensure_finalizer(self.custom, body)
        outcome = self._write_target(body, spec, namespace, desired, wanted_hmac)
        if isinstance(outcome, Result):
            return outcome
        wrote, data_changed = outcome
        if wrote:
            events.append(("Normal", "Synced",
                           f"Secret {spec.target_name} now holds version {version}"))  # fmt: skip
            self.audit("operator.sync", namespace, name, version,
                       f"Secret {spec.target_name} written")  # fmt: skip
        previous_target = status.get("targetName")
        if previous_target and previous_target != spec.target_name:
            # target.name changed: the Secret written before is not left behind with the values.
            done = let_go(self.core, namespace, name, body["metadata"].get("uid", ""),
                          secret_name=previous_target,
                          deletion_policy=spec.deletion_policy).detail  # fmt: skip
            events.append(("Normal", "TargetMoved",
                           f"target moved from {previous_target} to {spec.target_name}: {done}"))  # fmt: skip
            self.audit("operator.sync", namespace, name, version, f"target moved: {done}")
        if data_changed and spec.rollout_restart:
            events.extend(rollout_restart(self.apps, namespace, spec.target_name,
                                          spec.rollout_restart, now,
                                          enabled=self.rollout_restart_enabled))  # fmt: skip
        if spec.keep_previous is not None:
            self.room.retire_previous(namespace, name, grace=spec.keep_previous, actor=self.actor)
        due_next = next_refresh(spec, generated, now, previous=version > 1)
        emergency = conclude(rotation, renew, status, spec.data, stored, hmac_key=self.hmac_key,
                             namespace=namespace, name=name)  # fmt: skip
        events.extend(emergency.events)
        if emergency.audit:
            self.audit("operator.rotate", namespace, name, version, emergency.audit)
        if issue is not None and self.databases is not None:
            next_drop = self.databases.settle(namespace, name, spec.data, stored, now=now,
                                              keep_previous=spec.keep_previous)  # fmt: skip
            due_next = next_time(now, due_next, issue.next_due, next_drop)

        return Result(
            # Synced whether or not this pass wrote: a no-op refresh changes no condition, so the
            # reason and lastTransitionTime keep saying when the Secret last changed.
            not emergency.marks, COMPROMISED if emergency.marks else Reason.SYNCED,
            clip(f"compromised, set a new value: {', '.join(sorted(emergency.marks))}")
            if emergency.marks else f"Secret {spec.target_name} matches store version {version}",
            version=version, data_hmac=wanted_hmac, wrote=wrote, data_changed=data_changed,
            next_refresh=due_next, generated=generated, events=events, status_extra=emergency.status,
            sealed=status_outcome(sealed, status),
        )  # fmt: skip

    # -- pieces -----------------------------------------------------------------------------

    def _composer(self) -> Composer:
        return Composer(self.room, self.custom, self.namespace_ids, actor=self.actor,
                        watched=self.watched)  # fmt: skip

    def _composed(
        self, composer: Composer, body: Mapping[str, Any], spec: Spec, namespace: str, name: str, *, version: int,
        generated: dict[str, str],
    ) -> dict[str, Any] | Result:  # fmt: skip
        """The ``fromManagedSecret`` keys' values, or the failed Result."""
        if not any(item.from_managed_secret is not None for item in spec.data):
            return {}
        try:
            return composer.values(namespace, name, spec.data)
        except GrantMissingError as exc:  # revoked between the check up front and here
            return self._withdraw(body, exc, version or None, generated)
        except (CompositionCycleError, ChainRefusedError) as exc:
            reason = (Reason.COMPOSITION_CYCLE if isinstance(exc, CompositionCycleError)
                      else Reason.SOURCE_INVALID)  # fmt: skip
            return Result(False, reason, clip(str(exc)), generated=generated, permanent=True)
        except CompositionError as exc:  # the source or its key is not there yet
            return Result(False, Reason.SOURCE_NOT_FOUND, clip(str(exc)), generated=generated,
                          retry=True)  # fmt: skip

    def _withdraw(self, body: Mapping[str, Any], exc: GrantMissingError, version: int | None,
                  generated: dict[str, str] | None = None) -> Result:  # fmt: skip
        """A value it may no longer have: the Secret goes (owned) or loses our keys (merged)."""
        meta = body["metadata"]
        target = Target.parse(meta["name"], body.get("spec") or {})
        done = let_go(self.core, meta["namespace"], meta["name"], meta.get("uid", ""),
                      secret_name=target.name, deletion_policy="Delete")  # fmt: skip
        message = clip(f"{exc}; {done.detail}" if done.acted else str(exc))
        if done.acted:
            self.audit("operator.sync", meta["namespace"], meta["name"], version,
                       f"grant missing: {done.detail}", outcome=Outcome.DENIED)  # fmt: skip
        return Result(False, Reason.GRANT_MISSING, message, version=version,
                      generated=generated or {}, permanent=True)  # fmt: skip

    def _hmac(self, body: Mapping[str, Any], secret_type: str, data: Mapping[str, str]) -> str:
        meta = body["metadata"]
        return data_hmac(self.hmac_key, namespace=meta["namespace"], name=meta["name"],
                         uid=meta.get("uid", ""), secret_type=secret_type, data=data)  # fmt: skip

    def _write_target(
        self, body: Mapping[str, Any], spec: Spec, namespace: str, desired: dict[str, str],
        wanted_hmac: str,
    ) -> tuple[bool, bool] | Result:  # fmt: skip
        """(wrote, data changed) or a failed Result."""
        meta = body["metadata"]
        name, uid = meta["name"], meta.get("uid", "")
        merge = spec.creation_policy == "Merge"
        first_sync = not (body.get("status") or {}).get("version")
        wanted = Wanted.of(name, uid, wanted_hmac, labels=spec.labels,
                           annotations=spec.annotations, owner=spec.creation_policy == "Owner")  # fmt: skip
        if first_sync and not merge:
            # A new object's Secret usually does not exist yet: try to create it straight away
            # and read it only if it does (saves a GET per object on a burst of creations).
            try:
                self.writes.create_secret(
                    namespace, new_secret(spec, meta, namespace, desired, wanted)
                )
                SECRET_WRITES.labels("create").inc()
                return True, False
            except ApiException as exc:
                if exc.status != 409:
                    raise
        existing = read_secret(self.core, namespace, spec.target_name)
        existing_meta: dict[str, Any] = (existing or {}).get("metadata") or {}
        actual_type = existing.get("type") if existing is not None else None
        ours = existing is not None and policy.owns(existing_meta, uid, actual_type)
        if merge:
            if existing is None:
                return Result(False, Reason.MERGE_TARGET_MISSING,
                              f"Secret {spec.target_name} must exist for creationPolicy Merge",
                              retry=True)  # fmt: skip
            refusal = None if ours else policy.merge_refusal(
                existing_meta, existing.get("type"), name, uid)  # fmt: skip
            if refusal is not None:
                return Result(False, Reason.MERGE_NOT_ALLOWED, clip(refusal), retry=True)
        elif existing is not None and not ours:
            refusal = policy.target_refusal(existing_meta, actual_type, name, uid)
            return Result(False, Reason.TARGET_CONFLICT, clip(refusal or ""), retry=True)

        actual_data = dict((existing or {}).get("data") or {})
        annotations = dict(existing_meta.get("annotations") or {})
        if merge:
            actual_view = {k: actual_data[k] for k in desired if k in actual_data}
            previous_keys = set(filter(None, annotations.get(KEYS_ANNOTATION, "").split(",")))
            stale = previous_keys - set(desired)
            # Keys this ManagedSecret added, the only ones its deletion strips: a key the Secret
            # had before the first merge is overwritten (it consented) but never removed.
            added = (previous_keys & set(desired)) | (set(desired) - set(actual_data))
        else:
            actual_view, stale, added = actual_data, set(), set()
        actual_hmac = self._hmac(body, actual_type or spec.target_type, actual_view)
        same_data = (
            existing is not None
            and hmac.compare_digest(actual_hmac, wanted_hmac)
            and (merge or actual_type == spec.target_type)
            and not stale
        )
        if merge:
            wanted = Wanted.of(name, uid, wanted_hmac, labels=spec.labels,
                               annotations=spec.annotations, merged_keys=",".join(sorted(added)))  # fmt: skip
        if same_data and wanted.met_by(existing_meta):
            return False, False

        if merge:
            assert existing is not None  # noqa: S101 - checked above
            merged = {k: v for k, v in actual_data.items() if k not in stale}
            merged.update(desired)
            existing["data"] = merged
            existing_meta["labels"] = {**(existing_meta.get("labels") or {}), **wanted.labels}
            existing_meta["annotations"] = {**annotations, **wanted.annotations}
            existing["metadata"] = existing_meta  # resourceVersion kept: no lost update
            discard(self.core.replace_namespaced_secret(spec.target_name, namespace, existing,
                                                        _preload_content=False))  # fmt: skip
            SECRET_WRITES.labels("replace").inc()
            return True, not same_data

        new_body = new_secret(spec, meta, namespace, desired, wanted)
        if existing is None:
            discard(self.core.create_namespaced_secret(namespace, new_body, _preload_content=False))
            SECRET_WRITES.labels("create").inc()
            return True, False
        if (existing.get("immutable") or actual_type != spec.target_type) and not same_data:
            delete_secret(self.core, namespace, spec.target_name)
            discard(self.core.create_namespaced_secret(namespace, new_body, _preload_content=False))
            SECRET_WRITES.labels("recreate").inc()
            return True, True
        new_body["metadata"]["resourceVersion"] = existing_meta.get("resourceVersion")
        discard(self.core.replace_namespaced_secret(
            spec.target_name, namespace, new_body, _preload_content=False
        ))  # fmt: skip
        SECRET_WRITES.labels("replace").inc()
        return True, not same_data

    # -- deletion ---------------------------------------------------------------------------

    def audit(self, action: str, namespace: str, name: str, version: int | None,
              detail: str, *, outcome: str = Outcome.OK) -> None:  # fmt: skip
        """Append an audit event for something the operator did in the cluster."""
        self.room.record(AuditEvent(time=_now(), actor=self.actor, action=action,
                                    outcome=outcome, namespace=namespace, name=name,
                                    version=version, detail=clip(detail)))  # fmt: skip

    def audit_failure(self, namespace: str, name: str, result: Result) -> None:
        # When the store itself is down this cannot be written; the condition says so.
        with contextlib.suppress(StrongroomError):
            self.audit("operator.sync", namespace, name, result.version,
                       f"{result.reason}: {result.message}", outcome=Outcome.ERROR)  # fmt: skip


def status_patch(
    body: Mapping[str, Any], result: Result, *, now: datetime | None = None
) -> dict[str, Any] | None:
    """The status subresource patch for ``result``, or None when nothing would change."""
    now = now or _now()
    status = body.get("status") or {}
    generation = body["metadata"].get("generation")
    target = Target.parse(body["metadata"]["name"], body.get("spec") or {}).name
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
        # The Secret last written: it moves only once the new target holds the values, so a
        # failed move still knows which Secret to let go of.
        "targetName": target if result.ready or not status.get("targetName")
        else status["targetName"],
        "generated": result.generated or status.get("generated") or {},
    }
    new.update(result.status_extra)
    if result.sealed is not None:
        new["sealed"] = result.sealed.status
        if result.sealed.status:
            conditions.append(_sealed_key_condition(result.sealed, old.get(Reason.SEALED_KEY_OLD),
                                                    generation, now))  # fmt: skip
    elif old.get(Reason.SEALED_KEY_OLD):  # not looked at in this pass: as it was
        conditions.append(old[Reason.SEALED_KEY_OLD])
    if result.version is not None:
        new["version"] = result.version
    if result.data_hmac is not None:
        new["dataHMAC"] = result.data_hmac
    essential = {k: status.get(k) for k in new}
    if essential == new and not result.wrote:
        return None
    # When a Secret was last written, not when the operator last looked: a failure or a no-op
    # pass leaves it as it was (absent until the first write).
    if result.wrote:
        new["lastSyncTime"] = _iso(now)
    elif status.get("lastSyncTime"):
        new["lastSyncTime"] = status["lastSyncTime"]
    if result.next_refresh is not None:
        new["nextRefreshTime"] = _iso(result.next_refresh)
    return new


def _sealed_invalid(sealed: SealedOutcome, version: int | None,
                    generated: dict[str, str]) -> Result:  # fmt: skip
    """``SealedInvalid``: naming the keys only, never what failed (sources/sealed.py)."""
    return Result(False, Reason.SEALED_INVALID, clip(sealed.invalid_message()), version=version,
                  generated=generated, permanent=True)


def _sealed_key_condition(sealed: SealedOutcome, previous: Mapping[str, Any] | None,
                          generation: int | None, now: datetime) -> dict[str, Any]:  # fmt: skip
    """``SealedKeyOld``: True while a data[].sealed blob uses a sealing key older than
    STRONGROOM_SEALING_KEY_MAX_AGE (reseal it), False otherwise."""
    state = "True" if sealed.old else "False"
    previous = previous or {}
    return {
        "type": Reason.SEALED_KEY_OLD, "status": state,
        "reason": Reason.SEALED_KEY_OLD if sealed.old else Reason.SEALED_KEY_CURRENT,
        "message": clip(sealed.old_message()), "observedGeneration": generation,
        "lastTransitionTime": previous["lastTransitionTime"]
        if previous.get("status") == state and previous.get("lastTransitionTime") else _iso(now),
    }  # fmt: skip
