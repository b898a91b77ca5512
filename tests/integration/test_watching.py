"""The raw list-then-watch against the real apiserver: paged listings, resuming, 410."""

from __future__ import annotations

import functools
import threading
import time
import uuid
from typing import Any

import pytest
from kubernetes import client as k8s

from strongroom.operator.watching import Event, ExpiredError, RawWatch
from tests.components.kube import KubeCluster
from tests.components.operator import eventually

PATH = "/apis/strongroom.io/v1alpha1/namespaces/{}/managedsecrets"


def create(kube: KubeCluster, namespace: str, name: str) -> None:
    body = {"apiVersion": "strongroom.io/v1alpha1", "kind": "ManagedSecret",
            "metadata": {"name": name}, "spec": {"data": [{"key": "k"}]}}  # fmt: skip
    kube.request("POST", PATH.format(namespace), body)


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.listings: list[set[str]] = []
        self.lock = threading.Lock()

    def on_events(self, events: list[Event]) -> None:
        with self.lock:
            self.events.extend(events)

    def on_listed(self, names: set[str]) -> None:
        self.listings.append(names)

    def seen(self, kind: str | None) -> list[str]:
        with self.lock:
            return [obj["metadata"]["name"] for t, obj in self.events if t == kind]


def watch_of(kube: KubeCluster, namespace: str, rec: Recorder, stop: threading.Event,
             **kwargs: Any) -> RawWatch:  # fmt: skip
    custom = k8s.CustomObjectsApi(kube.api_client())
    call = functools.partial(custom.list_namespaced_custom_object, "strongroom.io", "v1alpha1",
                             namespace, "managedsecrets")  # fmt: skip
    return RawWatch("ManagedSecret", call, on_events=rec.on_events, on_listed=rec.on_listed,
                    stop=stop, watch_timeout=(5.0, 30.0), **kwargs)  # fmt: skip


def test_a_paged_listing_then_the_stream_resumed_without_listing_again(
    kube: KubeCluster,
) -> None:
    namespace = f"watch-{uuid.uuid4().hex[:6]}"
    kube.ensure_namespace(namespace)
    for i in range(7):
        create(kube, namespace, f"m{i}")
    rec, stop = Recorder(), threading.Event()
    watch = watch_of(kube, namespace, rec, stop, page_size=3, watch_seconds=3)
    threading.Thread(target=watch.run, daemon=True).start()
    try:
        eventually(lambda: rec.listings, what="a complete listing")
        assert sorted(rec.seen(None)) == [f"m{i}" for i in range(7)]  # three pages, none lost
        assert rec.listings[0] == {f"{namespace}/m{i}" for i in range(7)}
        create(kube, namespace, "late")
        eventually(lambda: "late" in rec.seen("ADDED"), what="the stream's ADDED event")
        time.sleep(4)  # the apiserver has ended the first watch (timeoutSeconds=3)
        create(kube, namespace, "after")
        eventually(lambda: "after" in rec.seen("ADDED"), timeout=20,
                   what="an event after the apiserver ended the first watch")  # fmt: skip
        assert len(rec.listings) == 1, "listed again after a normal end of the stream"
        assert rec.seen("ADDED") == ["late", "after"], "events replayed or lost on resuming"
    finally:
        stop.set()


def test_an_expired_resource_version_asks_for_a_new_listing(kube: KubeCluster) -> None:
    namespace = f"watch-{uuid.uuid4().hex[:6]}"
    kube.ensure_namespace(namespace)
    rec, stop = Recorder(), threading.Event()
    watch = watch_of(kube, namespace, rec, stop)
    with pytest.raises(ExpiredError):
        watch.follow("1")  # older than anything the apiserver still has
    stop.set()
