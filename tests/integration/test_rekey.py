"""rekey re-encrypts every version under a fresh data key; failures are listed, kills resumed."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time

from sqlalchemy import text

from strongroom import Strongroom
from strongroom.rotation import rekey
from tests.conftest import MASTER_KEY, make_settings
from tests.integration.test_cli import STRONGROOM


def _fill(room: Strongroom, n: int) -> None:
    for i in range(n):
        room.set("ns", f"s{i}", {"k": f"v{i}"})
    room.set("ns", "s0", {"k": "v0-b"})  # a previous version too


def _data_key_of_all(room: Strongroom) -> set[str]:
    with room.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT DISTINCT data_key_id FROM secret_versions WHERE ciphertext IS NOT NULL")
        )
        return {r[0] for r in rows}


def test_rekey_moves_every_version_to_a_fresh_data_key(db_url: str) -> None:
    with Strongroom.open(make_settings(db_url)) as room:
        _fill(room, 25)
        before = _data_key_of_all(room)
        report = rekey(room, batch=7)
        assert (report.success, report.fail) == (26, 0)
        after = _data_key_of_all(room)
        assert after == {report.data_key_id} and not (after & before)
        assert report.summary() == {"success": 26, "fail": 0, "failures": []}
    with Strongroom.open(make_settings(db_url)) as fresh:
        assert fresh.get("ns", "s0", version=1).data["k"] == "v0"
        assert [fresh.get("ns", f"s{i}", "k").data["k"] for i in range(1, 25)] == [
            f"v{i}" for i in range(1, 25)
        ]
        assert fresh.audit_verify().ok


def test_a_version_that_fails_to_decrypt_is_listed_and_left_untouched(db_url: str) -> None:
    with Strongroom.open(make_settings(db_url)) as room:
        _fill(room, 10)
        with room.engine.begin() as conn:
            row_id, blob = conn.execute(text(
                "SELECT v.id, v.ciphertext FROM secret_versions v JOIN secrets s "
                "ON s.id = v.secret_id WHERE s.name = 's3'"
            )).one()  # fmt: skip
            broken = bytes([blob[0] ^ 1]) + bytes(blob[1:])
            conn.execute(text("UPDATE secret_versions SET ciphertext = :c WHERE id = :i"),
                         {"c": broken, "i": row_id})  # fmt: skip
        report = rekey(room, batch=4)
        assert (report.success, report.fail) == (10, 1)
        failure = report.failures[0]
        assert (failure.namespace, failure.name, failure.key, failure.version) == (
            "ns",
            "s3",
            "k",
            1,
        )
        assert "failed authentication" in failure.reason
        with room.engine.connect() as conn:
            assert conn.execute(text("SELECT ciphertext FROM secret_versions WHERE id = :i"),
                                {"i": row_id}).scalar_one() == broken  # fmt: skip
        # A second run retries only what is left and reports it again.
        again = rekey(room, batch=4)
        assert (again.success, again.fail, again.data_key_id) == (0, 1, report.data_key_id)


def test_rekey_resumes_after_kill_9(sqlite_url: str) -> None:
    total = 1000
    with Strongroom.open(make_settings(sqlite_url)) as room:
        for i in range(total):
            room.set("ns", f"s{i}", {"k": f"v{i}"})
    env = {
        **os.environ,
        "STRONGROOM_DATABASE_URL": sqlite_url,
        "STRONGROOM_MASTER_KEY": MASTER_KEY.hex(),
    }
    db = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), timeout=30)
    proc = subprocess.Popen([STRONGROOM, "rekey", "--batch", "1"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 60
    done = 0
    while time.monotonic() < deadline and done < 20 and proc.poll() is None:
        time.sleep(0.005)
        done = db.execute(
            "SELECT COUNT(*) FROM audit_events WHERE action = 'rekey.batch'"
        ).fetchone()[0]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = db.execute("SELECT COUNT(*) FROM audit_events WHERE action = 'rekey.batch'").fetchone()[
        0
    ]
    db.close()
    assert 20 <= done < total, "the kill must land in the middle of the rekey"
    resumed = subprocess.run([STRONGROOM, "rekey", "--batch", "50"], env=env, capture_output=True,
                             text=True, check=True)  # fmt: skip
    summary = json.loads(resumed.stdout)
    assert summary["fail"] == 0
    assert summary["success"] == total - done
    with Strongroom.open(make_settings(sqlite_url)) as room:
        assert len(_data_key_of_all(room)) == 1
        assert [room.get("ns", f"s{i}", "k").data["k"] for i in range(total)] == [
            f"v{i}" for i in range(total)
        ]
        assert room.audit_verify().ok


def test_cli_kek_rotate_and_status(tmp_path: object, sqlite_url: str) -> None:
    env = {**os.environ, "STRONGROOM_DATABASE_URL": sqlite_url,
           "STRONGROOM_MASTER_KEY": MASTER_KEY.hex()}  # fmt: skip
    subprocess.run([STRONGROOM, "secret", "set", "ns/s", "k=v"], env=env, check=True,
                   capture_output=True)  # fmt: skip
    status = subprocess.run([STRONGROOM, "kek", "status"], env=env, check=True,
                            capture_output=True, text=True).stdout  # fmt: skip
    assert "active" in status and "local:" in status
    bad = subprocess.run([STRONGROOM, "kek", "rotate", "--to", "gcp:x"], env=env,
                         capture_output=True, text=True, check=False)  # fmt: skip
    assert bad.returncode == 2 and "--to" in bad.stderr
    same = subprocess.run([STRONGROOM, "kek", "rotate", "--to", "local"], env=env, check=True,
                          capture_output=True, text=True)  # fmt: skip
    assert json.loads(same.stdout)["rewrapped"] == 0
