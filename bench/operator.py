"""The operator against the real kube-apiserver: apply-to-Synced time beside a floor.

Floor: creating the same number of Secrets directly with the kubernetes client, one request
after another on its pooled connection. Operator: `strongroom run` on SQLite and the local KEK;
N ManagedSecrets (one generated key each) are created the same way (same client, same loop) and
the clock stops when a watch has seen every one of them Ready. Both clocks include the client's
own requests, so the ratio is what a user waits for with the operator against what they would
wait for without it. The floor with 8 concurrent requests is printed beside it for reference.
Then one idle refresh cycle is watched through the apiserver's own request counters (writes =
POST/PUT/PATCH/DELETE), and the operator's peak RSS is read after syncing --rss-count
ManagedSecrets.

Last, one pair where every ManagedSecret renders two templates (a DSN and a JSON config from
its generated key): rendering must keep the ratio within the same goal (at most 3x the floor).

Prints per-size timings and a final line
``ratio operator_vs_floor=X rss_mib_10k=Y idle_writes=Z templated_vs_floor=T``.
Every floor/operator pair runs on a fresh cluster of its own (see :func:`cluster`).
Usage: python -m bench.operator [--count 1000] [--rounds 5] [--rss-count 10000]
       [--sizes 100,250,500,1000] [--plot docs/sync-time.png] [--templated-only]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kubernetes import client as k8s  # noqa: E402
from kubernetes import watch as k8s_watch  # noqa: E402
from tests.components.kube import KubeCluster, start_cluster  # noqa: E402

STRONGROOM = str(Path(sys.executable).parent / "strongroom")


def secret_bodies(count: int) -> list[dict[str, Any]]:
    return [{"metadata": {"name": f"s{i}"}, "data": {"k": "dmFsdWU="}} for i in range(count)]


def floor(kube: KubeCluster, count: int, threads: int = 1) -> float:
    """Create ``count`` Secrets with the kubernetes client; seconds taken."""
    ns = f"floor-{uuid.uuid4().hex[:6]}"
    kube.ensure_namespace(ns)
    core = k8s.CoreV1Api(kube.api_client())
    bodies = secret_bodies(count)
    start = time.perf_counter()
    if threads == 1:
        for body in bodies:
            core.create_namespaced_secret(ns, body)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda body: core.create_namespaced_secret(ns, body), bodies))
    return time.perf_counter() - start


class ReadyWatch(threading.Thread):
    """Counts the ManagedSecrets of a namespace seen Ready, from a watch (no repeated lists)."""

    def __init__(self, kube: KubeCluster, ns: str, count: int) -> None:
        super().__init__(daemon=True)
        self.custom = k8s.CustomObjectsApi(kube.api_client())
        self.ns, self.count = ns, count
        self.ready: set[str] = set()
        self.done = threading.Event()
        self.started = threading.Event()

    def run(self) -> None:
        resource_version = None
        while not self.done.is_set():
            listing = self.custom.list_namespaced_custom_object(
                "strongroom.io", "v1alpha1", self.ns, "managedsecrets"
            )
            self.note(listing["items"])
            resource_version = listing["metadata"]["resourceVersion"]
            self.started.set()
            stream = k8s_watch.Watch().stream(
                self.custom.list_namespaced_custom_object, "strongroom.io", "v1alpha1", self.ns,
                "managedsecrets", resource_version=resource_version, timeout_seconds=300,
            )  # fmt: skip
            for event in stream:
                self.note([event["object"]])
                if self.done.is_set():
                    return

    def note(self, items: list[dict[str, Any]]) -> None:
        for item in items:
            conditions = (item.get("status") or {}).get("conditions") or []
            if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                self.ready.add(item["metadata"]["name"])
        if len(self.ready) >= self.count:
            self.done.set()


def start_operator(kube: KubeCluster, ns: str, workdir: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "KUBECONFIG": str(kube.kubeconfig),
           "STRONGROOM_DATABASE_URL": f"sqlite:///{workdir / f'{ns}.db'}",
           "STRONGROOM_MASTER_KEY": os.urandom(32).hex()}  # fmt: skip
    log = (workdir / f"{ns}.log").open("wb")
    return subprocess.Popen([STRONGROOM, "run", "--namespace", ns], env=env, stdout=log,
                            stderr=subprocess.STDOUT)  # fmt: skip


# The templated round's spec: a DSN and a JSON config rendered from the generated key.
TEMPLATE = {"data": {
    "DATABASE_URL": "postgres://app:{{ pw | urlquote }}@db.internal:5432/app?sslmode=verify-full",
    "config.json": '{{ {"db": {"user": "app", "password": pw}, "pool": 8} | toJson }}',
}}  # fmt: skip


def operator_run(
    kube: KubeCluster, count: int, workdir: Path, refresh: str = "1h", *, templated: bool = False
) -> tuple[float, str, subprocess.Popen[bytes]]:
    ns = f"op-{uuid.uuid4().hex[:6]}"
    kube.ensure_namespace(ns)
    proc = start_operator(kube, ns, workdir)
    time.sleep(3)  # let the operator start watching, as a deployed one would be
    custom = k8s.CustomObjectsApi(kube.api_client())
    watch = ReadyWatch(kube, ns, count)
    watch.start()
    watch.started.wait(30)
    bodies = [{"apiVersion": "strongroom.io/v1alpha1", "kind": "ManagedSecret",
               "metadata": {"name": f"m{i}"},
               "spec": {"data": [{"key": "pw", "generate": {"length": 24}}],
                        "refreshInterval": refresh,
                        **({"target": {"template": TEMPLATE}} if templated else {})}}
              for i in range(count)]  # fmt: skip
    start = time.perf_counter()
    for body in bodies:
        custom.create_namespaced_custom_object("strongroom.io", "v1alpha1", ns, "managedsecrets",
                                               body)  # fmt: skip
    applied = time.perf_counter() - start
    while not watch.done.wait(0.1):
        if proc.poll() is not None:
            raise RuntimeError(f"operator exited; see {workdir / f'{ns}.log'}")
    elapsed = time.perf_counter() - start
    lag = events_lag(kube, ns, count)
    print(f"  n={count}: applied in {applied:.2f}s, all Ready after {elapsed:.2f}s, their "
          f"Synced Events all posted {lag:.1f}s later", flush=True)  # fmt: skip
    return elapsed, ns, proc


def events_lag(kube: KubeCluster, ns: str, count: int, timeout: float = 120) -> float:
    """Seconds until ``count`` Events exist in ``ns``: the operator posts them in the
    background once its reconciles pause, so they trail the Secrets and statuses."""
    core = k8s.CoreV1Api(kube.api_client())
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        page = core.list_namespaced_event(ns, limit=1)
        if len(page.items) + (page.metadata.remaining_item_count or 0) >= count:
            break
        time.sleep(0.25)
    return time.perf_counter() - start


WATCHED_RESOURCES = {"secrets", "managedsecrets", "events", "deployments", "statefulsets",
                     "daemonsets"}  # fmt: skip


def api_writes(kube: KubeCluster) -> dict[str, float]:
    """Write requests the apiserver served, per verb and resource; the apiserver's own lease
    renewals (kube-system leases) are not the operator's and are left out."""
    text = kube.request_text("/metrics")
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        verb = re.search(r'verb="([A-Z]+)"', line)
        resource = re.search(r'resource="([a-z]+)"', line)
        writes = {"POST", "PUT", "PATCH", "DELETE", "APPLY"}
        if verb and resource and verb.group(1) in writes and resource.group(1) in WATCHED_RESOURCES:
            key = f"{verb.group(1)} {resource.group(1)}"
            totals[key] = totals.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return totals


def idle_writes(kube: KubeCluster) -> float:
    """API writes during one idle refresh cycle (refreshInterval 20 s) after things settle."""
    time.sleep(25)  # first refresh cycle after creation settles
    before = api_writes(kube)
    time.sleep(25)  # one full idle refresh cycle (20 s ± 10 %)
    after = api_writes(kube)
    delta = {k: after[k] - before.get(k, 0.0) for k in after if after[k] != before.get(k, 0.0)}
    if delta:
        print(f"idle writes by kind: {delta}", flush=True)
    return sum(delta.values())


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


@contextlib.contextmanager
def cluster() -> Iterator[KubeCluster]:
    """A fresh apiserver, etcd and controller manager for one measurement pair.

    In a cluster reused across rounds, the apiserver's CPU for the same operator work grows by
    ≈ 5 % per 1,000-object round, while the floor's does not (a client that only creates the
    Secrets and writes the statuses shows the same growth, so it is not the operator's doing);
    rounds would then not be repetitions of one measurement. Starting a cluster takes ≈ 3 s.
    """
    kube = start_cluster()
    try:
        yield kube
    finally:
        kube.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--rss-count", type=int, default=10_000)
    parser.add_argument("--sizes", default="100,250,500,1000")
    parser.add_argument("--rounds", type=int, default=5, help="rounds at --count (median)")
    parser.add_argument("--plot", default="")
    parser.add_argument("--templated-only", action="store_true",
                        help="only the templated rounds (--rounds of them, at --count)")
    args = parser.parse_args()
    results: dict[str, Any] = {"sizes": []}
    with tempfile.TemporaryDirectory(prefix="strongroom-bench-op-") as tmp:
        work = Path(tmp)
        if args.templated_only:
            print(f"ratio templated_vs_floor={templated_ratio(work, args.count, args.rounds):.2f}")
            return
        with cluster() as kube:
            print(f"floor with 8 concurrent requests (reference): n={args.count} "
                  f"{floor(kube, args.count, threads=8):.2f}s", flush=True)  # fmt: skip
        for size in [int(s) for s in args.sizes.split(",") if s and int(s) != args.count]:
            with cluster() as kube:
                floor_s = floor(kube, size)
                op_s, _, proc = operator_run(kube, size, work)
                stop(proc)
            results["sizes"].append({"n": size, "floor_s": floor_s, "operator_s": op_s})
            print(f"n={size} floor={floor_s:.2f}s operator={op_s:.2f}s "
                  f"ratio={op_s / floor_s:.2f}", flush=True)  # fmt: skip
        # The ratio: the median of --rounds floor/operator pairs, each on a cluster of its own
        # (runs on a shared two-core machine vary by ±5 %); the last round also measures an
        # idle refresh cycle.
        rounds: list[tuple[float, float]] = []
        idle = 0.0
        for round_no in range(args.rounds):
            last = round_no == args.rounds - 1
            with cluster() as kube:
                floor_s = floor(kube, args.count)
                op_s, _, proc = operator_run(kube, args.count, work,
                                             refresh="20s" if last else "1h")  # fmt: skip
                rounds.append((floor_s, op_s))
                print(f"n={args.count} round {round_no + 1}: floor={floor_s:.2f}s "
                      f"operator={op_s:.2f}s ratio={op_s / floor_s:.2f}", flush=True)  # fmt: skip
                if last:
                    idle = idle_writes(kube)
                    print(f"n={args.count} idle_writes={idle:.0f}", flush=True)
                stop(proc)
        floor_s, op_s = sorted(rounds, key=lambda r: r[1] / r[0])[len(rounds) // 2]
        results["sizes"].append({"n": args.count, "floor_s": floor_s, "operator_s": op_s})
        results["sizes"].sort(key=lambda entry: entry["n"])
        results["rounds"] = [{"floor_s": f, "operator_s": o} for f, o in rounds]
        with cluster() as kube:
            rss_s, _, proc = operator_run(kube, args.rss_count, work)
            rss = peak_rss_mib(proc.pid)
            stop(proc)
        print(f"n={args.rss_count} operator={rss_s:.1f}s peak_rss={rss:.0f}MiB", flush=True)
        templated = templated_ratio(work, args.count, 1)
        results.update(ratio=op_s / floor_s, rss_mib=rss, idle_writes=idle,
                       rss_count=args.rss_count, rss_seconds=rss_s, templated_ratio=templated)  # fmt: skip
    if args.plot:
        plot(results, Path(args.plot))
        Path(args.plot).with_suffix(".json").write_text(json.dumps(results, indent=2))
    print(f"ratio operator_vs_floor={results['ratio']:.2f} rss_mib_10k={results['rss_mib']:.0f} "
          f"idle_writes={results['idle_writes']:.0f} "
          f"templated_vs_floor={results['templated_ratio']:.2f}")  # fmt: skip


def templated_ratio(work: Path, count: int, rounds: int) -> float:
    """The median ratio of ``rounds`` floor/operator pairs where every ManagedSecret renders
    two templates (:data:`TEMPLATE`): the goal is still at most 3x the floor."""
    ratios = []
    for round_no in range(rounds):
        with cluster() as kube:
            floor_s = floor(kube, count)
            op_s, _, proc = operator_run(kube, count, work, templated=True)
            stop(proc)
        ratios.append(op_s / floor_s)
        print(f"n={count} templated round {round_no + 1}: floor={floor_s:.2f}s "
              f"operator={op_s:.2f}s ratio={op_s / floor_s:.2f}", flush=True)  # fmt: skip
    return sorted(ratios)[len(ratios) // 2]


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = results["sizes"] + [{"n": results["rss_count"], "operator_s": results["rss_seconds"],
                                 "floor_s": None}]  # fmt: skip
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    ax.plot([s["n"] for s in sizes], [s["operator_s"] for s in sizes], "o-",
            label="operator: apply → all Synced")  # fmt: skip
    floors = [s for s in sizes if s["floor_s"] is not None]
    ax.plot([s["n"] for s in floors], [s["floor_s"] for s in floors], "s--",
            label="floor: create the Secrets directly")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("ManagedSecrets")
    ax.set_ylabel("seconds")
    ax.set_title("Strongroom sync time (2 cores, SQLite, local KEK, real kube-apiserver)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


if __name__ == "__main__":
    main()
