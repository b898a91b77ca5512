"""The operator's writes to a ManagedSecret itself, never to its spec: Strongroom's finalizer,
added before a sync whose deletion will need the operator (:func:`strongroom.spec.needs_finalizer`)
and removed once its deletionPolicy is applied (both patches carry the resourceVersion read, so
no concurrent edit of the list is lost), and its status."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubernetes.client import CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from strongroom.kubewrites import DirectWrites, discard
from strongroom.resources import FINALIZER, GROUP, KIND, PLURAL, VERSION


def ensure_finalizer(custom: CustomObjectsApi, body: Mapping[str, Any]) -> None:
    """Add Strongroom's finalizer unless it is there."""
    meta = body["metadata"]
    finalizers = list(meta.get("finalizers") or [])
    if FINALIZER not in finalizers:
        _patch(custom, meta, [*finalizers, FINALIZER])


def release(custom: CustomObjectsApi, body: Mapping[str, Any]) -> None:
    """Remove Strongroom's finalizer (:mod:`strongroom.operator.deletions` calls this once
    deletionPolicy is applied)."""
    meta = body["metadata"]
    finalizers = list(meta.get("finalizers") or [])
    if FINALIZER in finalizers:
        _patch(custom, meta, [f for f in finalizers if f != FINALIZER])


def _patch(custom: CustomObjectsApi, meta: Mapping[str, Any], finalizers: list[str]) -> None:
    patch = {"metadata": {"finalizers": finalizers, "resourceVersion": meta["resourceVersion"]}}
    discard(custom.patch_namespaced_custom_object(
        GROUP, VERSION, meta["namespace"], PLURAL, meta["name"], patch, _preload_content=False,
    ))  # fmt: skip


def write_status(writes: DirectWrites, custom: CustomObjectsApi, body: Mapping[str, Any],
                 patch: dict[str, Any]) -> None:  # fmt: skip
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
            writes.replace_status(f"{GROUP}/{VERSION}", PLURAL, namespace, name, replacement)
            return
        except ApiException as exc:
            if exc.status != 409:
                raise
    discard(custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, name, {"status": patch}, _preload_content=False,
    ))  # fmt: skip
