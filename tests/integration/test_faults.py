"""Faults survived: nothing is lost, every Secret ends right, the audit chain verifies.

Every fault is real: kill -9 of the operator process, a restart of the real PostgreSQL server
and of the real kube-apiserver, and the network path to the real KMS / Vault server cut for
30 seconds by a loopback proxy (the servers themselves keep their keys in memory and cannot be
restarted without losing them).
"""

from __future__ import annotations

import base64
import random
import signal
import time
import uuid
from pathlib import Path

import boto3
import hvac
import pytest
import yaml

from strongroom import Strongroom
from tests.components.kube import KubeCluster
from tests.components.moto import MotoServer
from tests.components.openbao import OpenBao
from tests.components.operator import OperatorProcess, child_env, eventually
from tests.components.postgres import PostgresServer
from tests.components.proxy import TcpProxy
from tests.conftest import MASTER_KEY, make_settings


def new_operator(kube: KubeCluster, tmp_path: Path, db_url: str, **env: str) -> OperatorProcess:
    namespace = f"fault-{uuid.uuid4().hex[:6]}"
    kube.ensure_namespace(namespace)
    return OperatorProcess(kube, namespace, child_env(db_url, MASTER_KEY.hex(), **env),
                           tmp_path / "operator.log")  # fmt: skip


def ready_names(op: OperatorProcess) -> set[str]:
    items = op.kube.request("GET", op.msec_path())["items"]
    return {
        item["metadata"]["name"]
        for item in items
        if any(c["type"] == "Ready" and c["status"] == "True"
               for c in (item.get("status") or {}).get("conditions", []))
    }  # fmt: skip


def managed_secrets(op: OperatorProcess) -> dict[str, dict[str, str]]:
    items = op.kube.request(
        "GET", f"/api/v1/namespaces/{op.namespace}/secrets?labelSelector=strongroom.io/managed-by"
    )["items"]
    return {
        item["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in item["data"].items()}
        for item in items
    }


def reason_of(op: OperatorProcess, name: str) -> str | None:
    status = op.msec(name).get("status") or {}
    return next(
        (c.get("reason") for c in status.get("conditions", []) if c["type"] == "Ready"), None
    )


def test_kill_9_during_200_reconciles_loses_nothing(kube: KubeCluster, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    op = new_operator(kube, tmp_path, url)
    op.start()
    rng = random.Random(7)
    try:
        for i in range(200):
            op.apply(f"s{i:03d}", {"data": [{"key": "pw", "generate": {"length": 16}}]})
            if i in {40, 110, 170}:
                time.sleep(rng.uniform(0.2, 1.0))
                op.stop(signal.SIGKILL)
                op.start()
        time.sleep(rng.uniform(0.5, 2.0))
        op.stop(signal.SIGKILL)
        op.start()
        eventually(lambda: len(ready_names(op)) == 200, timeout=240, what="all 200 Ready")
        secrets = managed_secrets(op)
    finally:
        op.stop()
    assert len(secrets) == 200
    with Strongroom.open(make_settings(url)) as room:
        for i in range(200):
            stored = room.get(op.namespace, f"s{i:03d}")
            assert stored.version == 1, f"s{i:03d} was generated more than once"
            assert secrets[f"s{i:03d}"] == {"pw": stored.data["pw"]}
        assert room.audit_verify().ok


def test_postgres_restart_mid_run(kube: KubeCluster, tmp_path: Path, postgres: PostgresServer,
                                  pg_url: str) -> None:  # fmt: skip
    op = new_operator(kube, tmp_path, pg_url)
    op.start()
    try:
        for i in range(30):
            op.apply(f"p{i}", {"data": [{"key": "pw", "generate": {}}], "refreshInterval": "10s"})
            if i == 10:
                postgres.restart()
        eventually(lambda: len(ready_names(op)) == 30, timeout=120, what="all 30 Ready")
        postgres.restart()
        op.cli("secret", "set", f"{op.namespace}/p0", "extra=after-restart")
        eventually(lambda: managed_secrets(op)["p0"].get("extra") == "after-restart", timeout=60,
                   what="a value set after the restart to arrive")  # fmt: skip
    finally:
        op.stop()
    with Strongroom.open(make_settings(pg_url)) as room:
        assert all(
            room.get(op.namespace, f"p{i}").version == (2 if i == 0 else 1) for i in range(30)
        )
        assert room.audit_verify().ok


def test_an_operator_started_while_postgres_is_down_waits_for_it(
    kube: KubeCluster, tmp_path: Path, postgres: PostgresServer, pg_url: str
) -> None:
    """A database restarting as the operator starts (a node reboot, a rollout of both): the
    operator tries to open the store again instead of stopping for good."""
    op = new_operator(kube, tmp_path, pg_url)
    postgres.stop()
    try:
        op.start()
        eventually(lambda: "cannot open the store yet" in op.log(), timeout=60,
                   what="the operator retrying the store")  # fmt: skip
    finally:
        postgres.start()
    try:
        op.apply("late", {"data": [{"key": "pw", "generate": {}}]})
        eventually(lambda: "late" in ready_names(op), timeout=90, what="late Ready")
    finally:
        op.stop()


def test_apiserver_restart_mid_run(kube: KubeCluster, tmp_path: Path) -> None:
    op = new_operator(kube, tmp_path, f"sqlite:///{tmp_path / 'store.db'}")
    op.start()
    try:
        op.apply("before", {"data": [{"key": "pw", "generate": {}}]})
        eventually(lambda: "before" in ready_names(op), what="before Ready")
        kube.restart_apiserver()
        op.apply("after", {"data": [{"key": "pw", "generate": {}}]})
        eventually(lambda: {"before", "after"} <= ready_names(op), timeout=90, what="after Ready")
        right = managed_secrets(op)["before"]["pw"]
        path = f"/api/v1/namespaces/{op.namespace}/secrets/before"
        op.kube.request("PATCH", path, {"data": {"pw": base64.b64encode(b"drift").decode()}},
                        content_type="application/merge-patch+json")  # fmt: skip
        eventually(lambda: managed_secrets(op)["before"]["pw"] == right, timeout=60,
                   what="drift repaired after the apiserver restart")  # fmt: skip
    finally:
        op.stop()


def test_a_stalled_apiserver_path_via_a_swallowing_proxy_times_out_and_is_retried(
    kube: KubeCluster, tmp_path: Path
) -> None:
    """The path to the apiserver goes silent (connections stay open, nothing answers): the
    operator's call times out instead of holding its reconcile for good, and a retry syncs."""
    proxy = TcpProxy(kube.port)
    config = yaml.safe_load(kube.kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{proxy.port}"
    kubeconfig = tmp_path / "kubeconfig-via-proxy"
    kubeconfig.write_text(yaml.safe_dump(config))
    op = new_operator(kube, tmp_path, f"sqlite:///{tmp_path / 'store.db'}",
                      STRONGROOM_API_TIMEOUT_SECONDS="3")  # fmt: skip
    op.kubeconfig = kubeconfig
    op.start()
    try:
        op.cli("secret", "set", f"{op.namespace}/app", "pw=first")
        op.apply("app", {"data": [{"key": "pw"}]})
        eventually(lambda: "app" in ready_names(op), what="app Ready")
        proxy.stall()
        op.cli("secret", "set", f"{op.namespace}/app", "pw=second")
        # The store watch sees the new value within 2 s; the Secret write then meets silence,
        # and so do the client's three retries on new connections (3 s each).
        eventually(lambda: "Kubernetes API unreachable" in op.log(), timeout=60, what="the operator to report the call that timed out")  # fmt: skip
        proxy.restore()
        eventually(lambda: managed_secrets(op)["app"]["pw"] == "second", timeout=60,
                   what="the new value synced after the stall")  # fmt: skip
    finally:
        proxy.restore()
        op.stop()


@pytest.fixture(params=["awskms", "vault"])
def kek_behind_proxy(request: pytest.FixtureRequest) -> tuple[str, dict[str, str], TcpProxy]:
    if request.param == "awskms":
        moto: MotoServer = request.getfixturevalue("moto")
        arn = boto3.client("kms", endpoint_url=moto.endpoint, region_name=moto.region,
                           aws_access_key_id="testing", aws_secret_access_key="testing",
                           ).create_key()["KeyMetadata"]["Arn"]  # fmt: skip
        proxy = TcpProxy(moto.port)
        env = {**moto.env(), "AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}"}
        return f"awskms:{arn}", env, proxy
    bao: OpenBao = request.getfixturevalue("openbao")
    name = f"fault-{uuid.uuid4().hex[:6]}"
    hvac.Client(url=bao.addr, token=bao.token).secrets.transit.create_key(name=name)
    proxy = TcpProxy(bao.port)
    return f"vault:{name}", {"VAULT_ADDR": f"http://127.0.0.1:{proxy.port}",
                             "VAULT_TOKEN": bao.token}, proxy  # fmt: skip


def test_kek_endpoint_down_for_30_seconds(
    kube: KubeCluster, tmp_path: Path, kek_behind_proxy: tuple[str, dict[str, str], TcpProxy]
) -> None:
    kek, env, proxy = kek_behind_proxy
    op = new_operator(kube, tmp_path, f"sqlite:///{tmp_path / 'store.db'}", STRONGROOM_KEK=kek,
                      STRONGROOM_KEK_MAX_ATTEMPTS="2", **env)  # fmt: skip
    op.start()
    try:
        op.apply("before", {"data": [{"key": "pw", "generate": {}}]})
        eventually(lambda: "before" in ready_names(op), what="before Ready")
        good = managed_secrets(op)["before"]
        op.stop()
        proxy.down()
        down_at = time.monotonic()
        op.start()  # a cold start: no seed in memory, the KEK is needed and unreachable
        op.apply("during", {"data": [{"key": "pw", "generate": {}}]})
        eventually(lambda: reason_of(op, "during") == "KEKUnavailable", timeout=30,
                   what="Ready=False KEKUnavailable")  # fmt: skip
        assert managed_secrets(op)["before"] == good  # the Secret keeps its last good data
        time.sleep(max(0.0, 30 - (time.monotonic() - down_at)))
        proxy.restore()
        eventually(lambda: {"before", "during"} <= ready_names(op), timeout=120,
                   what="recovery without intervention")  # fmt: skip
        eventually(lambda: {"KEKUnavailable", "Synced"} <= op.event_reasons(),
                   what="KEKUnavailable and Synced events")  # fmt: skip
    finally:
        proxy.restore()
        op.stop()
