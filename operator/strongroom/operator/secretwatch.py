"""The managed-Secret watch's judgement: which ManagedSecret a Secret's event concerns, and
whether that Secret still says everything it should.

The watch sees only Secrets labelled ``strongroom.io/managed-by=strongroom`` (a server-side
selector). An event is either the echo of the operator's own write or someone's edit; an edit
that leaves nothing of the ManagedSecret's different needs no reconcile, and any other needs
one at once, not at the next refresh. Compared without a read and without keeping values: the
data HMAC (data and type, :mod:`strongroom.datahmac`) against the one last written, and the
labels, annotations and ownerReference the spec sets (:mod:`strongroom.targetmeta`), which the
runtime keeps per object as a :class:`Shape`.

A Secret whose selector label was removed arrives as DELETED, carrying its labels as they were
before (the apiserver's rule for an object leaving a selector), so its repair is scheduled like
a deletion's. One whose ``strongroom.io/managed-secret`` label was removed is found by its
controller ownerReference, or by its own name (a target's default name is its ManagedSecret's);
failing both, the next refresh repairs it.
"""

from __future__ import annotations

import dataclasses
import functools
import hmac
from collections.abc import Mapping
from typing import Any

from strongroom.datahmac import data_hmac
from strongroom.policy import OWNER_LABEL, controller_reference
from strongroom.targetmeta import Wanted


@dataclasses.dataclass(frozen=True, slots=True)
class Shape:
    """What a ManagedSecret's Secret carries beyond its data, as of its last sync. Shared:
    objects whose specs set the same are given the same instance (10 000 objects, a few
    shapes)."""

    owner_ref: bool = True  # creationPolicy Owner: our controller ownerReference
    merge: bool = False  # creationPolicy Merge: others' keys are there too
    labels: tuple[tuple[str, str], ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, spec: Mapping[str, Any]) -> Shape:
        """The shape a spec asks for (a spec the reconcile accepted)."""
        target = spec.get("target") or {}
        creation = target.get("creationPolicy") or "Owner"
        template = target.get("template") or {}  # its labels and annotations are added
        return _shared(creation == "Owner", creation == "Merge",
                       tuple(sorted({**(target.get("labels") or {}),
                                     **(template.get("labels") or {})}.items())),
                       tuple(sorted({**(target.get("annotations") or {}),
                                     **(template.get("annotations") or {})}.items())))  # fmt: skip


@functools.lru_cache(maxsize=1024)
def _shared(owner_ref: bool, merge: bool, labels: tuple[tuple[str, str], ...],
            annotations: tuple[tuple[str, str], ...]) -> Shape:  # fmt: skip
    return Shape(owner_ref, merge, labels, annotations)


def owner_candidates(metadata: Mapping[str, Any]) -> list[str]:
    """Names of the ManagedSecrets in the Secret's namespace that it may belong to; the caller
    keeps the one whose last written target is this Secret."""
    names = [(metadata.get("labels") or {}).get(OWNER_LABEL) or ""]
    names.extend(ref.get("name", "") for ref in metadata.get("ownerReferences") or ()
                 if controller_reference(ref))  # fmt: skip
    names.append(metadata.get("name") or "")
    return list(dict.fromkeys(name for name in names if name))


def unchanged(secret: Mapping[str, Any], *, hmac_key: bytes, namespace: str, name: str,
              uid: str, written_hmac: str, shape: Shape) -> bool:  # fmt: skip
    """Whether the Secret of the ManagedSecret ``namespace``/``name`` still holds what was
    last written (``written_hmac``) and carries everything ``shape`` asks for."""
    actual = data_hmac(hmac_key, namespace=namespace, name=name, uid=uid,
                       secret_type=secret.get("type") or "Opaque", data=secret.get("data") or {})  # fmt: skip
    if shape.merge or not hmac.compare_digest(actual, written_hmac):
        return False  # a merged Secret holds others' keys too: the reconcile compares ours
    wanted = Wanted.of(name, uid, written_hmac, labels=dict(shape.labels),
                       annotations=dict(shape.annotations), owner=shape.owner_ref)  # fmt: skip
    return wanted.met_by(secret.get("metadata") or {})
