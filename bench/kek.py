"""KEK calls and throughput with a KMS that has realistic latency, beside the local keyring.

moto's server stands in for AWS KMS behind a loopback proxy that adds 5 ms to every request.
Each keyring gets a fresh SQLite store; 10,000 writes run in one process, then 10,000 reads in
a fresh process (so the read side starts with a cold seed cache). KEK calls are counted from
``strongroom_kek_calls_total``. Prints per-phase figures and a final line
``kek_calls write=N read=M ratio=X`` (X: KMS-backed ops/s over local ops/s).

Usage: python -m bench.kek [--ops N] [--latency-ms MS]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VALUE = "x" * 256


def worker(phase: str, url: str, kek: str, ops: int) -> None:
    """One phase in this (fresh) process; prints JSON."""
    from strongroom import Settings, Strongroom
    from strongroom.config import KekSpec
    from strongroom.metrics import kek_calls

    settings = Settings.from_env(database_url=url, kek=KekSpec.parse(kek), actor="bench")
    provider = settings.kek.provider
    with Strongroom.open(settings) as room:
        start = time.perf_counter()
        for i in range(ops):
            if phase == "write":
                room.set("bench", f"s{i}", {"v": VALUE})
            else:
                room.get("bench", f"s{i}", "v")
        elapsed = time.perf_counter() - start
    calls = sum(kek_calls(provider, op) for op in ("wrap", "unwrap", "describe", "rewrap"))
    print(json.dumps({"seconds": elapsed, "kek_calls": calls}))


def run_phase(phase: str, url: str, kek: str, ops: int, env: dict[str, str]) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.kek", "--worker", phase, url, kek, str(ops)],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=10_000)
    parser.add_argument("--latency-ms", type=float, default=5.0)
    parser.add_argument("--worker", nargs=4, metavar=("PHASE", "URL", "KEK", "OPS"))
    args = parser.parse_args()
    if args.worker:
        phase, url, kek, ops = args.worker
        worker(phase, url, kek, int(ops))
        return

    import boto3

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.components.moto import start_moto
    from tests.components.proxy import TcpProxy

    moto = start_moto()
    proxy = TcpProxy(moto.port, delay=args.latency_ms / 1000)
    try:
        base = {**os.environ, **moto.env(), "STRONGROOM_MASTER_KEY": os.urandom(32).hex()}
        kms = boto3.client("kms", endpoint_url=moto.endpoint, region_name=moto.region,
                           aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip
        arn = kms.create_key()["KeyMetadata"]["Arn"]
        slow = {**base, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}"}
        start = time.perf_counter()
        boto3.client("kms", endpoint_url=slow["AWS_ENDPOINT_URL"], region_name=moto.region,
                     aws_access_key_id="t", aws_secret_access_key="t").describe_key(KeyId=arn)  # fmt: skip
        print(f"kms_call_ms={1000 * (time.perf_counter() - start):.1f} (through the proxy)")
        results = {}
        with tempfile.TemporaryDirectory(prefix="strongroom-bench-kek-") as tmp:
            for name, kek, env in (("local", "local", base), ("awskms", f"awskms:{arn}", slow)):
                url = f"sqlite:///{tmp}/{name}.db"
                write = run_phase("write", url, kek, args.ops, env)
                read = run_phase("read", url, kek, args.ops, env)
                rate = 2 * args.ops / (write["seconds"] + read["seconds"])
                results[name] = (write, read, rate)
                print(f"{name}: write={args.ops / write['seconds']:.0f}/s "
                      f"read={args.ops / read['seconds']:.0f}/s "
                      f"kek_calls write={write['kek_calls']:.0f} read={read['kek_calls']:.0f}")  # fmt: skip
        write, read, rate = results["awskms"]
        ratio = rate / results["local"][2]
        print(f"kek_calls write={write['kek_calls']:.0f} read={read['kek_calls']:.0f} "
              f"ratio={ratio:.2f}")  # fmt: skip
    finally:
        moto.stop()


if __name__ == "__main__":
    main()
