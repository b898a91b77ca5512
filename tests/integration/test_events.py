"""The event recorder against the real apiserver: Events wait while the operator is busy,
never longer than their bound, keep the time they happened, and are drained on shutdown."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime

import pytest
from kubernetes import client as k8s

from strongroom.operator.events import EventRecorder, InvolvedObject
from tests.components.kube import KubeCluster
from tests.components.operator import eventually


@pytest.fixture
def core(kube: KubeCluster) -> k8s.CoreV1Api:
    return k8s.CoreV1Api(kube.api_client())


@pytest.fixture
def namespace(kube: KubeCluster) -> str:
    name = f"ev-{uuid.uuid4().hex[:6]}"
    kube.ensure_namespace(name)
    return name


class Switch:
    def __init__(self) -> None:
        self.on = threading.Event()

    def __call__(self) -> bool:
        return self.on.is_set()


@pytest.fixture
def busy() -> Switch:
    switch = Switch()
    switch.on.set()
    return switch


def started(
    core: k8s.CoreV1Api, busy: Switch, *, max_delay: float, capacity: int = 10_000
) -> EventRecorder:
    recorder = EventRecorder(core, component="strongroom", instance="test", busy=busy,
                             max_delay=max_delay, capacity=capacity)  # fmt: skip
    recorder.start()
    return recorder


def reasons(core: k8s.CoreV1Api, namespace: str) -> list[str]:
    return sorted(e.reason for e in core.list_namespaced_event(namespace).items)


def involved(namespace: str, name: str = "app") -> InvolvedObject:
    return InvolvedObject("strongroom.io/v1alpha1", "ManagedSecret", namespace, name,
                          str(uuid.uuid4()))  # fmt: skip


def test_events_wait_while_busy_and_are_posted_once_idle(
    core: k8s.CoreV1Api, namespace: str, busy: Switch
) -> None:
    recorder = started(core, busy, max_delay=60)
    recorded_at = datetime.now(UTC).replace(microsecond=0)
    for n in range(3):
        recorder.record(
            involved(namespace, f"app{n}"), "Normal", "Synced", f"Secret app{n} written"
        )
    time.sleep(1.5)
    assert reasons(core, namespace) == []  # still busy: nothing posted
    busy.on.clear()
    eventually(lambda: reasons(core, namespace) == ["Synced"] * 3, timeout=10, what="3 Events")
    event = core.list_namespaced_event(namespace).items[0]
    assert event.involved_object.kind == "ManagedSecret"
    assert event.reporting_component == "strongroom"
    # The time it happened, not the time it was posted (≥ 1.5 s later).
    assert abs((event.first_timestamp - recorded_at).total_seconds()) <= 1
    assert recorder.stop() == 0


def test_a_busy_operator_delays_events_by_at_most_max_delay(
    core: k8s.CoreV1Api, namespace: str, busy: Switch
) -> None:
    recorder = started(core, busy, max_delay=2)
    start = time.monotonic()
    recorder.record(involved(namespace), "Warning", "KEKUnavailable", "KEK unreachable")
    eventually(lambda: reasons(core, namespace) == ["KEKUnavailable"], timeout=10,
               what="the Event despite a busy operator")  # fmt: skip
    assert time.monotonic() - start >= 2
    recorder.stop()


def test_stop_posts_what_is_queued(core: k8s.CoreV1Api, namespace: str, busy: Switch) -> None:
    recorder = started(core, busy, max_delay=60)
    for n in range(5):
        recorder.record(involved(namespace, f"app{n}"), "Normal", "Synced", "written")
    assert recorder.stop(timeout=10) == 0
    assert reasons(core, namespace) == ["Synced"] * 5


def test_a_full_queue_drops_events_instead_of_blocking(
    core: k8s.CoreV1Api, namespace: str, busy: Switch
) -> None:
    recorder = started(core, busy, max_delay=60, capacity=2)
    start = time.monotonic()
    for n in range(4):
        recorder.record(involved(namespace, f"app{n}"), "Normal", "Synced", "written")
    assert time.monotonic() - start < 1
    assert recorder.stop(timeout=10) == 0
    assert reasons(core, namespace) == ["Synced"] * 2
