"""Letting go of the Secret a ManagedSecret wrote: what its deletion, or its target's move,
does to that Secret according to deletionPolicy.

What the Secret says decides, not the spec (which may have changed since it was written): a
Secret naming the ManagedSecret's UID (:func:`strongroom.policy.owns`) is deleted (Delete) or
released (Retain: its ownerReference, Strongroom's labels, owner UID and data HMAC come off, so
nothing deletes or repairs it any more); one that consented to its Merge loses the keys it added
(Delete; never those that were there before) and the consent, which was given to this
ManagedSecret's lifetime, not to its name forever. Any other Secret is left alone.

:func:`let_go` says what it did and whether it changed anything: a second call finds nothing of
the ManagedSecret's left and changes nothing, so a caller retrying after a failure knows that
the first call's answer, not the second's, is what happened (:mod:`strongroom.operator.deletions`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from kubernetes.client import CoreV1Api
from kubernetes.client.exceptions import ApiException

from strongroom import policy
from strongroom.kubewrites import discard, read_json
from strongroom.policy import MANAGED_BY, OWNER_LABEL, OWNER_UID_ANNOTATION
from strongroom.targetmeta import HMAC_ANNOTATION, KEYS_ANNOTATION


@dataclasses.dataclass(frozen=True)
class LetGo:
    """What :func:`let_go` did: ``detail`` for the audit log; ``acted``: it changed the Secret."""

    detail: str
    acted: bool


def read_secret(core: CoreV1Api, namespace: str, name: str) -> dict[str, Any] | None:
    """A Secret as plain JSON (no client models), or None when there is none."""
    try:
        return read_json(core.read_namespaced_secret(name, namespace, _preload_content=False))
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def delete_secret(core: CoreV1Api, namespace: str, name: str) -> None:
    """Delete a Secret; one already gone is not an error."""
    try:
        core.delete_namespaced_secret(name, namespace)
    except ApiException as exc:
        if exc.status != 404:
            raise


def let_go(core: CoreV1Api, namespace: str, name: str, uid: str, *, secret_name: str,
           deletion_policy: str) -> LetGo:  # fmt: skip
    """Apply ``deletion_policy`` to the Secret ``secret_name`` that the ManagedSecret
    ``name``/``uid`` wrote."""
    existing = read_secret(core, namespace, secret_name)
    if existing is None:
        return LetGo(f"Secret {secret_name} does not exist; nothing to do", acted=False)
    meta: dict[str, Any] = existing.get("metadata") or {}
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    if policy.owns(meta, uid, existing.get("type")):
        if deletion_policy == "Delete":
            delete_secret(core, namespace, secret_name)
            return LetGo(f"Secret {secret_name} deleted", acted=True)
        patch = {"metadata": {"ownerReferences": None,
                              "labels": {MANAGED_BY: None, OWNER_LABEL: None},
                              "annotations": {OWNER_UID_ANNOTATION: None,
                                              HMAC_ANNOTATION: None}}}  # fmt: skip
        discard(core.patch_namespaced_secret(secret_name, namespace, patch,
                                             _preload_content=False))  # fmt: skip
        return LetGo(f"Secret {secret_name} retained", acted=True)
    if labels.get(OWNER_LABEL) == name and policy.merge_consented(meta, name):
        added = set(filter(None, annotations.get(KEYS_ANNOTATION, "").split(",")))
        if deletion_policy == "Delete":
            existing["data"] = {k: v for k, v in (existing.get("data") or {}).items()
                                if k not in added}  # fmt: skip
        for label in (MANAGED_BY, OWNER_LABEL):
            labels.pop(label, None)
        for annotation in (HMAC_ANNOTATION, KEYS_ANNOTATION, policy.MERGE_CONSENT_ANNOTATION):
            annotations.pop(annotation, None)
        discard(core.replace_namespaced_secret(secret_name, namespace, existing,
                                               _preload_content=False))  # fmt: skip
        return LetGo(f"keys merged into Secret {secret_name} removed" if deletion_policy == "Delete"
                     else f"Secret {secret_name} released", acted=True)  # fmt: skip
    return LetGo(f"Secret {secret_name} does not belong to this ManagedSecret; left alone",
                 acted=False)  # fmt: skip
