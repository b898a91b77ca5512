"""Several processes (operator replicas, the CLI) writing at once keep one valid audit chain."""

from __future__ import annotations

import os
import subprocess
import sys

from strongroom import Strongroom
from tests.conftest import MASTER_KEY, make_settings

WORKER = """
import sys
from strongroom import Strongroom, Settings
room = Strongroom.open(Settings.from_env())
worker, rounds = sys.argv[1], int(sys.argv[2])
for i in range(rounds):
    room.set("ns", f"w{worker}", {"n": i})
    room.set("ns", "shared", {f"w{worker}": i})
    room.get("ns", "shared")
room.close()
"""

WORKERS = 4
ROUNDS = 15


def test_concurrent_writers_keep_the_chain_valid(db_url: str) -> None:
    with Strongroom.open(make_settings(db_url)) as room:  # migrate once, as `db upgrade` would
        room.set("ns", "shared", {"seed": 0})
    env = {
        **os.environ,
        "STRONGROOM_DATABASE_URL": db_url,
        "STRONGROOM_MASTER_KEY": MASTER_KEY.hex(),
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(w), str(ROUNDS)], env=env, stderr=subprocess.PIPE
        )
        for w in range(WORKERS)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err.decode()
    with Strongroom.open(make_settings(db_url)) as room:
        report = room.audit_verify()
        assert report.ok, report
        ops = [e for e in room.audit_events() if e.action.startswith("secret.")]
        assert len(ops) == 1 + WORKERS * ROUNDS * 3
        assert all(e.outcome == "ok" for e in ops)
        shared = room.get("ns", "shared")
        assert shared.version == 1 + WORKERS * ROUNDS
        assert dict(shared.data) == {"seed": 0, **{f"w{w}": ROUNDS - 1 for w in range(WORKERS)}}
