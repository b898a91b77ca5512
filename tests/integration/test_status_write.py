"""The status write: a replace at the reconciled resourceVersion, or, when the object has
moved on since, a merge patch that keeps what changed meanwhile. Against the real apiserver."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from strongroom import Strongroom
from strongroom.kubewrites import DirectWrites
from strongroom.sync import Syncer
from tests.components.kube import KubeCluster
from tests.conftest import make_settings


@pytest.fixture
def syncer(kube: KubeCluster, tmp_path: Path) -> Iterator[Syncer]:
    api = kube.api_client()
    with Strongroom.open(make_settings(f"sqlite:///{tmp_path / 'store.db'}")) as room:
        yield Syncer(room, k8s.CoreV1Api(api), k8s.AppsV1Api(api), k8s.CustomObjectsApi(api),
                     writes=DirectWrites(api, (5.0, 30.0)), actor="test")  # fmt: skip


def new_object(kube: KubeCluster) -> dict[str, Any]:
    namespace = f"status-{uuid.uuid4().hex[:6]}"
    kube.ensure_namespace(namespace)
    body = {"apiVersion": "strongroom.io/v1alpha1", "kind": "ManagedSecret",
            "metadata": {"name": "app", "namespace": namespace},
            "spec": {"data": [{"key": "pw", "generate": {}}]}}  # fmt: skip
    path = f"/apis/strongroom.io/v1alpha1/namespaces/{namespace}/managedsecrets"
    return dict(kube.request("POST", path, body))


def path_of(obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    return f"/apis/strongroom.io/v1alpha1/namespaces/{meta['namespace']}/managedsecrets/app"


def test_a_current_body_gets_its_status_replaced(kube: KubeCluster, syncer: Syncer) -> None:
    obj = new_object(kube)
    syncer.write_status(obj, {"version": 3, "targetName": "app"})
    after = kube.request("GET", path_of(obj))
    assert after["status"] == {"version": 3, "targetName": "app"}
    assert after["spec"] == obj["spec"], "a status write changed the spec"


def test_a_stale_body_falls_back_to_a_merge_patch_and_loses_no_edit(
    kube: KubeCluster, syncer: Syncer
) -> None:
    obj = new_object(kube)
    kube.request("PATCH", path_of(obj), {"metadata": {"labels": {"team": "a"}}},
                 content_type="application/merge-patch+json")  # fmt: skip
    syncer.write_status(obj, {"version": 1})  # obj's resourceVersion is no longer current
    after = kube.request("GET", path_of(obj))
    assert after["status"] == {"version": 1}
    assert after["metadata"]["labels"] == {"team": "a"}


def test_a_refused_write_raises_the_clients_api_exception(
    kube: KubeCluster, syncer: Syncer
) -> None:
    obj = new_object(kube)
    with pytest.raises(ApiException) as refused:
        syncer.writes.create_secret(obj["metadata"]["namespace"], {"metadata": {"name": "BAD"}})
    assert refused.value.status == 422
    syncer.writes.create_secret(obj["metadata"]["namespace"], {"metadata": {"name": "ok"}})
    with pytest.raises(ApiException) as exists:
        syncer.writes.create_secret(obj["metadata"]["namespace"], {"metadata": {"name": "ok"}})
    assert exists.value.status == 409
