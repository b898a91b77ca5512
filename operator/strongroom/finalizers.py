"""Strongroom's finalizer on a ManagedSecret: added before a sync whose deletion will need the
operator (:func:`strongroom.spec.needs_finalizer`), removed once its deletionPolicy is applied.
Both patches carry the resourceVersion read, so no concurrent edit of the list is lost."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubernetes.client import CustomObjectsApi

from strongroom.kubewrites import discard
from strongroom.resources import FINALIZER, GROUP, PLURAL, VERSION


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
