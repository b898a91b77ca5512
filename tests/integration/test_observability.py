"""Metrics, JSON logs and the health endpoint of a running operator."""

from __future__ import annotations

import json
import urllib.request
import uuid
from pathlib import Path

from tests.components.base import free_port
from tests.components.kube import KubeCluster
from tests.components.operator import OperatorProcess, child_env, eventually
from tests.conftest import MASTER_KEY


def test_metrics_health_and_json_logs(kube: KubeCluster, tmp_path: Path) -> None:
    namespace = f"obs-{uuid.uuid4().hex[:6]}"
    kube.ensure_namespace(namespace)
    metrics, health = free_port(), free_port()
    env = child_env(
        f"sqlite:///{tmp_path / 's.db'}", MASTER_KEY.hex(), STRONGROOM_LOG_FORMAT="json"
    )
    op = OperatorProcess(kube, namespace, env, tmp_path / "op.log",
                         args=("--metrics-port", str(metrics),
                               "--liveness", f"http://127.0.0.1:{health}/healthz"))  # fmt: skip
    op.start()
    try:
        op.apply("m", {"data": [{"key": "g", "generate": {}}]})

        def scrape() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=2) as r:
                return str(r.read().decode())

        def synced_metrics() -> str | None:
            # The Secret write is counted inside the reconcile, the reconcile when it returns:
            # wait for both, not for the first.
            text = scrape()
            done = ('strongroom_secret_writes_total{op="create"} 1.0' in text
                    and "strongroom_reconcile_seconds_bucket" in text)  # fmt: skip
            return text if done else None

        text = eventually(synced_metrics, what="metrics after the first sync")
        for name in ("strongroom_reconciles_total", "strongroom_reconcile_seconds_bucket",
                     "strongroom_kek_calls_total", "strongroom_store_ops_total",
                     "strongroom_managed_secrets 1.0", "strongroom_refresh_lag_seconds_count",
                     "strongroom_oldest_generated_value_age_seconds"):  # fmt: skip
            assert name in text, name
        with urllib.request.urlopen(f"http://127.0.0.1:{health}/healthz", timeout=5) as r:
            assert r.status == 200
            probes = json.loads(r.read())
            assert probes["store"] == "ok" and probes["kek"] == "ok"
    finally:
        op.stop()
    lines = [line for line in op.log().splitlines() if line.startswith("{")]
    assert lines, "JSON log lines"
    docs = [json.loads(line) for line in lines]
    assert {"time", "level", "logger", "message"} <= set(docs[0])
