"""What a managed Secret's metadata must say, and whether it says it.

One comparison for the reconcile (which writes when it fails) and the Secret watch (which
schedules a reconcile when it fails), so that an edited label, annotation or ownerReference is
repaired at once, like edited data, and a Secret that already says everything costs no write.

Wanted on the Secret a ManagedSecret writes (creationPolicy Owner or Orphan):

- labels: the spec's ``target.labels``, ``strongroom.io/managed-by: strongroom`` (the Secret
  watch's label selector) and ``strongroom.io/managed-secret: <ManagedSecret name>``;
- annotations: the spec's ``target.annotations``, ``strongroom.io/data-hmac: <data HMAC>``
  and ``strongroom.io/owner-uid: <ManagedSecret UID>``;
- with creationPolicy Owner, the controller ownerReference to the ManagedSecret (what the
  garbage collector deletes the Secret by).

On a Secret it merges into (creationPolicy Merge), the same labels and the data HMAC, and
``strongroom.io/managed-keys`` (the keys it added) instead of the owner UID. The type is bound
by the data HMAC (:mod:`strongroom.datahmac`). Labels, annotations and ownerReferences that
someone else put on the Secret are theirs and are not compared.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from strongroom.policy import (
    MANAGED_BY,
    MANAGED_BY_VALUE,
    OWNER_LABEL,
    OWNER_UID_ANNOTATION,
    controller_reference,
)

HMAC_ANNOTATION = "strongroom.io/data-hmac"
KEYS_ANNOTATION = "strongroom.io/managed-keys"
GROUP_VERSION = "strongroom.io/v1alpha1"


def owner_reference(name: str, uid: str) -> dict[str, Any]:
    """The controller ownerReference a Secret of creationPolicy Owner carries."""
    return {"apiVersion": GROUP_VERSION, "kind": "ManagedSecret", "name": name, "uid": uid,
            "controller": True, "blockOwnerDeletion": True}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Wanted:
    """The labels and annotations a managed Secret must carry, and its owner if any."""

    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    owner_uid: str | None = None  # the controller ownerReference's UID (creationPolicy Owner)

    @classmethod
    def of(cls, name: str, uid: str, data_hmac: str, *, labels: Mapping[str, str] | None = None,
           annotations: Mapping[str, str] | None = None, owner: bool = False,
           merged_keys: str | None = None) -> Wanted:  # fmt: skip
        """What the spec's ``labels`` and ``annotations`` add up to on the Secret of the
        ManagedSecret ``name``/``uid`` holding data of ``data_hmac``; ``merged_keys`` (the
        comma-separated keys added) for a Merge, else the owner UID annotation."""
        wanted_annotations = {**(annotations or {}), HMAC_ANNOTATION: data_hmac}
        if merged_keys is None:
            wanted_annotations[OWNER_UID_ANNOTATION] = uid
        else:
            wanted_annotations[KEYS_ANNOTATION] = merged_keys
        return cls(labels={**(labels or {}), MANAGED_BY: MANAGED_BY_VALUE, OWNER_LABEL: name},
                   annotations=wanted_annotations, owner_uid=uid if owner else None)  # fmt: skip

    def met_by(self, metadata: Mapping[str, Any]) -> bool:
        """Whether a Secret's metadata carries everything wanted (extras are someone else's)."""
        labels = metadata.get("labels") or {}
        annotations = metadata.get("annotations") or {}
        return (
            all(labels.get(k) == v for k, v in self.labels.items())
            and all(annotations.get(k) == v for k, v in self.annotations.items())
            and (self.owner_uid is None or any(
                ref.get("uid") == self.owner_uid and controller_reference(ref)
                for ref in metadata.get("ownerReferences") or ()))
        )  # fmt: skip
