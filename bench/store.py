"""Store throughput against a floor measured in the same run.

Floor: the least an audited operation can cost with sqlite3 and cryptography directly.
  set: BEGIN; AES-256-GCM encrypt; INSERT version row; INSERT audit row; COMMIT
  get: BEGIN; SELECT by key; AES-256-GCM decrypt; INSERT audit row; COMMIT
Strongroom: set and get of the same 1 KiB values through the public Python API (SQLite, the
local keyring, one process). Both use SQLite's default durability in WAL mode.

Prints ``floor_set=… floor_get=… set=… get=…`` (ops/s, medians of alternating rounds),
``cpu_ms floor_set=… floor_get=… set=… get=…`` (this process's CPU per operation, user and
system, medians) and ``ratio set=X get=Y``. Wall-clock rates depend on the disk's fsync as much
as on the code; CPU per operation is the part the code decides, and what the rate tends to on
a disk whose fsync is free. TMPDIR chooses where the databases go.
Usage: python -m bench.store [--ops N] [--rounds N]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from strongroom import Settings, Strongroom
from strongroom.config import KekSpec

VALUE = "x" * 1024


Phase = tuple[float, float]
"""One phase's operations per second (wall clock) and milliseconds of CPU per operation."""


class _Clock:
    """Wall and CPU time of one phase of ``ops`` operations."""

    def __init__(self, ops: int) -> None:
        self.ops = ops
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def stop(self) -> Phase:
        wall, cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu
        return self.ops / wall, 1000 * cpu / self.ops


def floor(path: Path, ops: int) -> tuple[Phase, Phase]:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE versions (name TEXT PRIMARY KEY, nonce BLOB, ciphertext BLOB)")
    db.execute(
        "CREATE TABLE audit (seq INTEGER PRIMARY KEY, time TEXT, action TEXT, name TEXT, hash TEXT)"
    )
    aead = AESGCM(os.urandom(32))
    plain = VALUE.encode()
    clock = _Clock(ops)
    for i in range(ops):
        db.execute("BEGIN IMMEDIATE")
        nonce = os.urandom(12)
        blob = aead.encrypt(nonce, plain, None)
        db.execute("INSERT INTO versions VALUES (?, ?, ?)", (f"s{i}", nonce, blob))
        db.execute(
            "INSERT INTO audit (time, action, name, hash) VALUES (?, 'set', ?, ?)",
            (time.time(), f"s{i}", hashlib.sha256(blob).hexdigest()),
        )
        db.execute("COMMIT")
    set_phase = clock.stop()
    clock = _Clock(ops)
    for i in range(ops):
        db.execute("BEGIN IMMEDIATE")
        nonce, blob = db.execute(
            "SELECT nonce, ciphertext FROM versions WHERE name = ?", (f"s{i}",)
        ).fetchone()
        assert aead.decrypt(nonce, blob, None) == plain
        db.execute(
            "INSERT INTO audit (time, action, name, hash) VALUES (?, 'get', ?, ?)",
            (time.time(), f"s{i}", hashlib.sha256(blob).hexdigest()),
        )
        db.execute("COMMIT")
    get_phase = clock.stop()
    db.close()
    return set_phase, get_phase


def strongroom(path: Path, ops: int) -> tuple[Phase, Phase]:
    settings = Settings(
        database_url=f"sqlite:///{path}",
        kek=KekSpec("local", ""),
        master_key=os.urandom(32),
        actor="bench",
    )
    with Strongroom.open(settings) as room:
        room.set("bench", "warmup", {"v": VALUE})
        clock = _Clock(ops)
        for i in range(ops):
            room.set("bench", f"s{i}", {"v": VALUE})
        set_phase = clock.stop()
        clock = _Clock(ops)
        for i in range(ops):
            assert room.get("bench", f"s{i}", "v").data["v"] == VALUE
        get_phase = clock.stop()
    return set_phase, get_phase


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=2000, help="operations per phase")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians")
    args = parser.parse_args()
    floors, rooms = [], []
    with tempfile.TemporaryDirectory(prefix="strongroom-bench-") as tmp:
        # Alternate floor and Strongroom so disk and CPU noise hits both alike.
        for i in range(args.rounds):
            floors.append(floor(Path(tmp) / f"floor{i}.db", args.ops))
            rooms.append(strongroom(Path(tmp) / f"strongroom{i}.db", args.ops))
    rates = [statistics.median(run[phase][0] for run in runs)
             for runs in (floors, rooms) for phase in (0, 1)]  # fmt: skip
    cpu = [statistics.median(run[phase][1] for run in runs)
           for runs in (floors, rooms) for phase in (0, 1)]  # fmt: skip
    print("floor_set={:.0f} floor_get={:.0f} set={:.0f} get={:.0f}".format(*rates))
    print("cpu_ms floor_set={:.3f} floor_get={:.3f} set={:.3f} get={:.3f}".format(*cpu))
    print(f"ratio set={rates[2] / rates[0]:.2f} get={rates[3] / rates[1]:.2f}")


if __name__ == "__main__":
    main()
