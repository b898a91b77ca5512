"""The public sealing keys, published where ``strongroom seal value --configmap`` reads them::

    apiVersion: v1
    kind: ConfigMap
    metadata:
      name: strongroom-sealing-keys            # STRONGROOM_SEALING_CONFIGMAP [NAMESPACE/]NAME
      namespace: strongroom                    # POD_NAMESPACE unless given
      labels: {app.kubernetes.io/managed-by: strongroom}
    data:
      format: strongroom.io/sealing-keys/v1
      active: "<key id>"                       # the key to seal to: the newest
      <key id>.json: '{"keyId": …, "suite": …, "created": …, "publicKey": base64}'

One entry per key still in the store (:func:`strongroom.sealing.keys.public_document`): old
keys stay listed until pruned, so a tool can tell which key a blob in Git names. Nothing
private is ever in it; the private keys stay in the store, encrypted under a data key.

:class:`SealingKeyPublisher` runs while the operator reconciles (with leader election, while
leading): at once and then every STRONGROOM_SEALING_PUBLISH_SECONDS it makes the first key if
the store has none, starts a new one when the active key is older than
STRONGROOM_SEALING_KEY_MAX_AGE (default 90 days), and writes the ConfigMap when its data
differs from the store's keys (a replace conditional on the resourceVersion read).

Trust: whoever may write this ConfigMap can swap in their own public key, so that values sealed
afterwards open only for them (a sealer who checks the key id against ``strongroom seal
keys`` sees it); they cannot open anything sealed to the real key. The chart lets tenants
read it and gives only the operator update on it (docs/security.md).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError as Urllib3Error

from strongroom.config import SealingPolicy
from strongroom.errors import StrongroomError
from strongroom.kubewrites import read_json
from strongroom.operator.refs import resolve_ref
from strongroom.sealing.blob import SuiteId
from strongroom.sealing.keys import SealingKeys, public_document

log = logging.getLogger("strongroom.sealing")

DEFAULT_NAME = "strongroom-sealing-keys"
FORMAT = "strongroom.io/sealing-keys/v1"


def resolve(spec: str, pod_namespace: str | None) -> tuple[str, str] | None:
    """(namespace, name) of the ConfigMap, or None (``off``; or no POD_NAMESPACE for the
    default)."""
    return resolve_ref(spec, pod_namespace, default_name=DEFAULT_NAME,
                       label="STRONGROOM_SEALING_CONFIGMAP")


class SealingKeyPublisher:
    """Keeps a current sealing key in the store and its public part in a ConfigMap."""

    def __init__(self, keys: SealingKeys, core: k8s.CoreV1Api, where: tuple[str, str],
                 policy: SealingPolicy, *, leading: Callable[[], bool]) -> None:  # fmt: skip
        self.keys = keys
        self.core = core
        self.namespace, self.name = where
        self.policy = policy
        self.leading = leading

    def cycle(self) -> bool:
        """One pass; returns whether the ConfigMap was written."""
        _active, started = self.keys.ensure(SuiteId.parse(self.policy.suite), self.policy.max_age)
        if started:
            log.info("started a new sealing key (%s)", self.policy.suite)
        data = {"format": FORMAT, **public_document(self.keys.list())}
        body: dict[str, Any] = {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": self.name, "namespace": self.namespace,
                         "labels": {"app.kubernetes.io/managed-by": "strongroom"}},
            "data": data,
        }  # fmt: skip
        try:
            current = read_json(self.core.read_namespaced_config_map(
                self.name, self.namespace, _preload_content=False))  # fmt: skip
        except ApiException as exc:
            if exc.status != 404:
                raise
            self.core.create_namespaced_config_map(self.namespace, body, _preload_content=False)
            log.info("published the sealing keys to ConfigMap %s/%s", self.namespace, self.name)
            return True
        if (current.get("data") or {}) == data:
            return False
        body["metadata"]["resourceVersion"] = (current.get("metadata") or {}).get("resourceVersion")
        self.core.replace_namespaced_config_map(self.name, self.namespace, body,
                                                _preload_content=False)  # fmt: skip
        log.info("published the sealing keys to ConfigMap %s/%s", self.namespace, self.name)
        return True

    async def run(self, stop: threading.Event) -> None:
        """Cycle every ``publish_seconds`` until ``stop``; failures are logged and retried."""
        while not stop.is_set():
            if self.leading():
                try:
                    await asyncio.to_thread(self.cycle)
                except (StrongroomError, ApiException, Urllib3Error, OSError) as exc:
                    log.warning("could not publish the sealing keys (%s); retrying",
                                type(exc).__name__ if not isinstance(exc, StrongroomError)
                                else exc)  # fmt: skip
            await asyncio.sleep(self.policy.publish_seconds)
