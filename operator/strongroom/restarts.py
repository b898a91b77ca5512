"""Rollout restarts: a workload's pods are restarted when the Secret they read has changed.

The operator may patch every workload of a namespace, a ManagedSecret's author perhaps none:
so a listed workload is restarted only when its pod template reads the target Secret
(:func:`strongroom.policy.consumes`), which costs one GET per workload and only when the data
changed. Anything else is an Event ``RestartSkipped`` that says why; restarts switched off for
the whole operator (``STRONGROOM_ROLLOUT_RESTART=false``, the chart then grants no workload
rights) say so the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from kubernetes.client import AppsV1Api
from kubernetes.client.exceptions import ApiException

from strongroom import policy
from strongroom.kubewrites import discard, read_json

RESTART_ANNOTATION = "strongroom.io/restartedAt"

EventTuple = tuple[str, str, str]


def _methods(apps: AppsV1Api, kind: str) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """(read, patch) of a workload kind."""
    return {
        "Deployment": (apps.read_namespaced_deployment, apps.patch_namespaced_deployment),
        "StatefulSet": (apps.read_namespaced_stateful_set, apps.patch_namespaced_stateful_set),
        "DaemonSet": (apps.read_namespaced_daemon_set, apps.patch_namespaced_daemon_set),
    }[kind]


def rollout_restart(
    apps: AppsV1Api, namespace: str, secret_name: str, workloads: Iterable[tuple[str, str]],
    stamp: datetime, *, enabled: bool = True,
) -> list[EventTuple]:  # fmt: skip
    """Restart each listed workload that reads ``secret_name``; Events for what was done."""
    events: list[EventTuple] = []
    when = stamp.strftime("%Y-%m-%dT%H:%M:%SZ")
    patch = {"spec": {"template": {"metadata": {"annotations": {RESTART_ANNOTATION: when}}}}}
    for kind, name in workloads:
        if not enabled:
            events.append(("Warning", "RestartSkipped",
                           f"not restarting {kind} {name}: rollout restarts are disabled for "
                           "this operator (STRONGROOM_ROLLOUT_RESTART=false)"))  # fmt: skip
            continue
        read, write = _methods(apps, kind)
        try:
            workload = read_json(read(name, namespace, _preload_content=False))
            if not policy.consumes(workload, secret_name):
                events.append(("Warning", "RestartSkipped",
                               f"not restarting {kind} {name}: its pod template does not use "
                               f"Secret {secret_name} (env, envFrom or a volume)"))  # fmt: skip
                continue
            discard(write(name, namespace, patch, _preload_content=False))
            events.append(("Normal", "RolloutRestarted", f"restarted {kind} {name}"))
        except ApiException as exc:
            events.append(("Warning", "RolloutRestartFailed",
                           f"could not restart {kind} {name}: {exc.status} {exc.reason}"))  # fmt: skip
    return events
