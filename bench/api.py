"""Values API throughput beside the direct Python API, in the same run.

A real kube-apiserver (TokenReview and SubjectAccessReview answered for real, then cached by
the server for up to 5 s) and ``strongroom serve`` on a fresh SQLite store; ``--clients``
threads, each on one keep-alive HTTPS connection with its own ServiceAccount token, set values
(PATCH) and then read them (GET, plaintext) and list them (masked). The direct API does the same
sets and gets on another fresh store in this process, one thread. Prints per-phase rates and a
final line ``api set_per_s=X get_per_s=Y ratio_vs_direct=Z`` (Z: API sets/s over direct sets/s).

Usage: python -m bench.api [--ops N] [--clients C]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import ssl
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

VALUE = "x" * 256
NS = "bench"


def _timed(clients: int, ops: int, work: Callable[[int, int], None]) -> float:
    """Operations per second of ``clients`` threads doing ``ops`` calls in all."""
    per = ops // clients
    threads = [threading.Thread(target=lambda c=c: [work(c, i) for i in range(per)])
               for c in range(clients)]  # fmt: skip
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return per * clients / (time.perf_counter() - start)


def direct_rates(url: str, ops: int) -> tuple[float, float]:
    from strongroom import Settings, Strongroom
    from strongroom.config import KekSpec

    settings = Settings.from_env(database_url=url, kek=KekSpec.parse("local"), actor="bench")
    with Strongroom.open(settings) as room:
        room.set(NS, "warm", {"v": VALUE})
        sets = _timed(1, ops, lambda _c, i: room.set(NS, f"s{i}", {"v": VALUE}) and None)
        gets = _timed(1, ops, lambda _c, i: room.get(NS, f"s{i}", "v") and None)
    return sets, gets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.components.kube import start_cluster
    from tests.components.values_api import ServerProcess, token_for

    os.environ["STRONGROOM_MASTER_KEY"] = os.urandom(32).hex()
    kube = start_cluster()
    server: ServerProcess | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="strongroom-bench-api-") as tmp:
            kube.ensure_namespace(NS)
            rights = [{"apiGroups": ["strongroom.io"], "resources": ["managedsecrets/values"],
                       "verbs": ["get", "list", "create", "update"]}]  # fmt: skip
            tokens = []
            for c in range(args.clients):
                kube.grant(NS, f"client{c}", rights)
                tokens.append(token_for(kube, NS, f"client{c}"))
            env = {k: v for k, v in os.environ.items() if k != "STRONGROOM_DATABASE_URL"}
            env["STRONGROOM_DATABASE_URL"] = f"sqlite:///{tmp}/api.db"
            server = ServerProcess(kube, env, Path(tmp),
                                   extra=("--rate", "1000000", "--burst", "1000000"))  # fmt: skip
            api = server.start()
            context = ssl.create_default_context(cafile=str(api.ca_file))
            conns = [http.client.HTTPSConnection("127.0.0.1", api.port, context=context)
                     for _ in range(args.clients)]  # fmt: skip

            def call(c: int, method: str, path: str, body: object = None) -> None:
                data = None if body is None else json.dumps(body).encode()
                conns[c].request(method, path, body=data, headers={
                    "Authorization": f"Bearer {tokens[c]}", "Content-Type": "application/json"})  # fmt: skip
                response = conns[c].getresponse()
                response.read()
                if response.status != 200:
                    raise RuntimeError(f"{method} {path}: HTTP {response.status}")

            base = f"/v1/namespaces/{NS}/secrets"
            for c in range(args.clients):  # each identity's TokenReview and SARs, once
                call(c, "PATCH", f"{base}/warm{c}", {"data": {"v": VALUE}})
            sets = _timed(args.clients, args.ops,
                          lambda c, i: call(c, "PATCH", f"{base}/c{c}-{i}", {"data": {"v": VALUE}}))  # fmt: skip
            gets = _timed(args.clients, args.ops,
                          lambda c, i: call(c, "GET", f"{base}/c{c}-{i}/keys/v"))  # fmt: skip
            lists = _timed(args.clients, max(args.clients, args.ops // 50),
                           lambda c, _i: call(c, "GET", base))  # fmt: skip
            for conn in conns:
                conn.close()
            direct_sets, direct_gets = direct_rates(f"sqlite:///{tmp}/direct.db", args.ops)
        print(f"direct: set={direct_sets:.0f}/s get={direct_gets:.0f}/s")
        print(f"api ({args.clients} clients, keep-alive): set={sets:.0f}/s get={gets:.0f}/s "
              f"list={lists:.1f}/s (of {args.ops + args.clients} secrets, masked)")  # fmt: skip
        print(f"api set_per_s={sets:.0f} get_per_s={gets:.0f} "
              f"ratio_vs_direct={sets / direct_sets:.2f}")  # fmt: skip
    finally:
        if server is not None:
            server.stop()
        kube.stop()


if __name__ == "__main__":
    main()
