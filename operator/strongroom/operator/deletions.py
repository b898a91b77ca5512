"""A ManagedSecret's deletion: its deletionPolicy applied, and one audit record saying what
became of its Secret.

A deletion held by Strongroom's finalizer (Retain, Orphan + Delete, Merge) has three steps in
two systems: let go of the Secret (:mod:`strongroom.letgo`), record what was done in the
store's audit log, release the finalizer, after which the apiserver deletes the object and the
ManagedSecret watch reports it gone. Any step can fail and be retried, and the watch's DELETED
event can be handled before the release request has even returned. A deletion without our
finalizer (Owner + Delete, which is the garbage collector's job) has only that event.

Exactly one ``operator.finalize`` record per deletion, and the true one:

- **Held by our finalizer**: what letting go did is remembered per ManagedSecret UID until the
  object is gone, and the record is written once. A failed release (or record) is retried from
  there, not by letting go again, which would find the Secret already released and say it was
  left alone. The object is marked as released *before* the release request is sent, so that
  its DELETED event, however early, adds nothing.
- **After a restart** between the record and the release, that memory is gone: a pass that
  finds nothing of the ManagedSecret's left on the Secret (or a write the apiserver refuses)
  first asks the store whether this deletion (this namespace/name, since the object's
  deletionTimestamp) was recorded already, and records only if not.
- **Not held by our finalizer**: one record once the object is gone: removed by garbage
  collection when the Secret carried the ManagedSecret's ownerReference, otherwise left as it
  was (someone removed the finalizer before the operator got to it).

Left open: a write the apiserver applied but whose answer was lost, followed by a failure to
record before the next pass; that pass finds the Secret already let go of and records that.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from strongroom.errors import StrongroomError
from strongroom.finalizers import release
from strongroom.letgo import LetGo, let_go
from strongroom.spec import Target
from strongroom.sync import REFUSED_WRITES, Syncer

log = logging.getLogger("strongroom.operator")

Key = tuple[str, str]
ACTION = "operator.finalize"


@dataclasses.dataclass(frozen=True)
class Finalized:
    """What a deletion did to the Secret; ``refused``: the apiserver refused the write, so
    deletionPolicy was not applied (the caller posts a Warning Event)."""

    detail: str
    refused: bool = False


@dataclasses.dataclass
class _Progress:
    done: Finalized
    recorded: bool = False


class Deletions:
    """Finalizes ManagedSecrets held by Strongroom's finalizer and records each deletion once."""

    def __init__(self, syncer: Syncer) -> None:
        self.syncer = syncer
        self._progress: dict[str, _Progress] = {}  # by UID, until the object is gone
        self._released: dict[Key, str] = {}  # the UID whose finalizer was (being) released

    def finalize(self, key: Key, body: Mapping[str, Any]) -> Finalized:
        """In a worker thread: apply deletionPolicy, record it once, release the finalizer.

        Raises what the caller retries on (``ApiException``, ``StrongroomError``, urllib3's
        errors); the retry resumes after the last step that succeeded.
        """
        meta = body["metadata"]
        uid = meta.get("uid", "")
        progress = self._progress.get(uid)
        if progress is None:
            done, acted = self._let_go(body)
            recorded = not acted and self._recorded_already(meta)
            progress = self._progress.setdefault(uid, _Progress(done, recorded))
        if not progress.recorded:
            self.syncer.audit(ACTION, key[0], key[1], None, progress.done.detail)
            progress.recorded = True
        self._released[key] = uid  # before the request: its DELETED event may come first
        release(self.syncer.custom, body)
        return progress.done

    def gone(self, key: Key, uid: str | None, target: str | None, *, collected: bool,
             seen: bool) -> str | None:
        """On the event loop, when the object is gone: what the audit log still lacks, or None.

        ``seen``: the operator reconciled it (otherwise it has nothing to say); ``target``: the
        Secret it last wrote (None: none); ``collected``: that Secret carries its
        ownerReference.
        """
        released = self._released.pop(key, None)
        if released is not None:
            self._progress.pop(released, None)
            if uid is None or uid == released:
                return None  # finalized here and recorded then
        if not seen:
            return None
        if target is None:
            return "ManagedSecret deleted; it had written no Secret"
        if collected:
            return (f"ManagedSecret deleted; Secret {target} is removed by Kubernetes garbage "
                    "collection (ownerReference)")  # fmt: skip
        return (f"ManagedSecret deleted without Strongroom's finalizer (removed by someone else); "
                f"deletionPolicy not applied, Secret {target} left as it was")  # fmt: skip

    def record_gone(self, key: Key, detail: str) -> None:
        """Write what :meth:`gone` returned (in a worker thread: it writes to the store)."""
        try:
            self.syncer.audit(ACTION, key[0], key[1], None, detail)
        except StrongroomError as exc:  # the object is gone: nothing would retry this
            log.warning("%s/%s: deletion not recorded in the audit log: %s", *key, exc)

    def _let_go(self, body: Mapping[str, Any]) -> tuple[Finalized, bool]:
        """Apply deletionPolicy; (what was done, whether this pass changed the Secret)."""
        meta = body["metadata"]
        where = Target.parse(meta["name"], body.get("spec") or {})
        try:
            outcome: LetGo = let_go(self.syncer.core, meta["namespace"], meta["name"],
                                    meta.get("uid", ""), secret_name=where.name,
                                    deletion_policy=where.deletion_policy)  # fmt: skip
        except ApiException as exc:
            if exc.status not in REFUSED_WRITES:
                raise
            # The apiserver will never accept the write (e.g. a typed Secret that cannot lose a
            # key): say so and let the object go, rather than hold its deletion (and its
            # namespace's) forever.
            return Finalized(f"deletionPolicy {where.deletion_policy} not applied to Secret "
                             f"{where.name}: the apiserver refused ({exc.status})",
                             refused=True), False  # fmt: skip
        return Finalized(outcome.detail), outcome.acted

    def _recorded_already(self, meta: Mapping[str, Any]) -> bool:
        """Whether this deletion's record is in the store (a pass before a restart wrote it)."""
        stamp = meta.get("deletionTimestamp")
        if not stamp:
            return False
        since = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
        found = self.syncer.room.audit_recorded(ACTION, meta["namespace"], meta["name"],
                                                since=since)  # fmt: skip
        return found is not None
