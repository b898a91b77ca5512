"""Store throughput against a floor measured in the same run.

Floor: the least an audited operation can cost with sqlite3 and cryptography directly.
  set: BEGIN; AES-256-GCM encrypt; INSERT version row; INSERT audit row; COMMIT
  get: BEGIN; SELECT by key; AES-256-GCM decrypt; INSERT audit row; COMMIT
Strongroom: set and get of the same 1 KiB values through the public Python API (SQLite, the
local keyring, one process). Both use SQLite's default durability in WAL mode.

Prints ``floor_set=… floor_get=… set=… get=…`` (ops/s, medians of alternating rounds) and
``ratio set=X get=Y``.
Usage: python -m bench.store [--ops N]
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


def floor(path: Path, ops: int) -> tuple[float, float]:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE versions (name TEXT PRIMARY KEY, nonce BLOB, ciphertext BLOB)")
    db.execute(
        "CREATE TABLE audit (seq INTEGER PRIMARY KEY, time TEXT, action TEXT, name TEXT, hash TEXT)"
    )
    aead = AESGCM(os.urandom(32))
    plain = VALUE.encode()
    start = time.perf_counter()
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
    set_rate = ops / (time.perf_counter() - start)
    start = time.perf_counter()
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
    get_rate = ops / (time.perf_counter() - start)
    db.close()
    return set_rate, get_rate


def strongroom(path: Path, ops: int) -> tuple[float, float]:
    settings = Settings(
        database_url=f"sqlite:///{path}",
        kek=KekSpec("local", ""),
        master_key=os.urandom(32),
        actor="bench",
    )
    with Strongroom.open(settings) as room:
        room.set("bench", "warmup", {"v": VALUE})
        start = time.perf_counter()
        for i in range(ops):
            room.set("bench", f"s{i}", {"v": VALUE})
        set_rate = ops / (time.perf_counter() - start)
        start = time.perf_counter()
        for i in range(ops):
            assert room.get("bench", f"s{i}", "v").data["v"] == VALUE
        get_rate = ops / (time.perf_counter() - start)
    return set_rate, get_rate


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
    floor_set = statistics.median(f[0] for f in floors)
    floor_get = statistics.median(f[1] for f in floors)
    room_set = statistics.median(r[0] for r in rooms)
    room_get = statistics.median(r[1] for r in rooms)
    print(
        f"floor_set={floor_set:.0f} floor_get={floor_get:.0f} set={room_set:.0f} get={room_get:.0f}"
    )
    print(f"ratio set={room_set / floor_set:.2f} get={room_get / floor_get:.2f}")


if __name__ == "__main__":
    main()
