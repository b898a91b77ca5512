"""`strongroom seal …` as users run it: the installed console script, in a subprocess, against
a real SQLite store. Sealing needs the public key only; values come from stdin or a file, never
argv; `--in-place` changes nothing but the blob; reseal, rotate, prune and keys tell the truth."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from strongroom import Strongroom
from strongroom.sealing.blob import Header, Place, SealedInvalid, header, open_sealed
from strongroom.sealing.keys import SealingKeys, Use
from tests.conftest import make_settings

STRONGROOM = shutil.which("strongroom", path=str(Path(sys.executable).parent)) or "strongroom"
KEY = "3c" * 32

MANIFEST = """\
# Payments database credentials (reviewed in Git)
apiVersion: strongroom.io/v1alpha1
kind: ManagedSecret
metadata:
  name: db   # the ManagedSecret
  namespace: payments
spec:
  data:
    - key: user          # plain
      generate: {length: 8}
    - key: password      # sealed below
  refreshInterval: 1h    # keep
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    out["STRONGROOM_DATABASE_URL"] = f"sqlite:///{tmp_path / 'cli.db'}"
    out["STRONGROOM_MASTER_KEY"] = KEY
    out["STRONGROOM_ACTOR"] = "seal-test"
    return out


def run(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([STRONGROOM, *args], env=env, input=stdin, capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip


def ok(env: dict[str, str], *args: str, stdin: str = "") -> str:
    result = run(env, *args, stdin=stdin)
    assert result.returncode == 0, result.stderr
    return result.stdout


def open_store(env: dict[str, str]) -> Strongroom:
    settings = make_settings(env["STRONGROOM_DATABASE_URL"])
    return Strongroom.open(dataclasses.replace(settings, master_key=bytes.fromhex(KEY)))


@pytest.fixture
def public(env: dict[str, str], tmp_path: Path) -> Path:
    ok(env, "db", "upgrade")
    ok(env, "seal", "rotate")
    path = tmp_path / "sealing-keys.json"
    path.write_text(ok(env, "seal", "public-key"))
    return path


def opened(env: dict[str, str], blob: str, where: Place) -> str:
    with open_store(env) as room:
        return open_sealed(blob, where, SealingKeys(room, actor="t").private)


def test_seal_prints_a_data_item_that_opens_only_in_the_store(
    env: dict[str, str], public: Path, tmp_path: Path
) -> None:
    env_offline = {k: v for k, v in env.items() if not k.startswith("STRONGROOM_")}
    out = ok(env_offline, "seal", "value", "payments/db", "password", "--public-key", str(public),
             stdin="canary-s3cr3t-value")  # fmt: skip
    item = yaml.safe_load(out)[0]
    assert item["key"] == "password" and "canary-s3cr3t" not in out
    assert opened(env, item["sealed"], Place("payments", "db", "password")) == "canary-s3cr3t-value"
    with pytest.raises(SealedInvalid):
        opened(env, item["sealed"], Place("payments", "db", "user"))


def test_seal_reads_the_value_from_a_file(env: dict[str, str], public: Path,
                                          tmp_path: Path) -> None:  # fmt: skip
    value = tmp_path / "pw.txt"
    value.write_text("from-a-file\n")
    out = ok(env, "seal", "value", "payments/db", "password", "--public-key", str(public),
             "--from-file", str(value))  # fmt: skip
    assert opened(env, yaml.safe_load(out)[0]["sealed"],
                  Place("payments", "db", "password")) == "from-a-file\n"  # fmt: skip


@pytest.mark.parametrize("argv", [
    pytest.param(["payments/db", "password", "hunter2"], id="value-as-positional"),
    pytest.param(["payments/db", "password=hunter2"], id="value-as-assignment"),
    pytest.param(["payments/db", "password", "--value", "hunter2"], id="value-as-option"),
])  # fmt: skip
def test_a_value_typed_on_the_command_line_is_refused_and_not_echoed(
    env: dict[str, str], public: Path, argv: list[str]
) -> None:
    result = run(env, "seal", "value", *argv, "--public-key", str(public), stdin="x")
    assert result.returncode == 2
    assert "hunter2" not in result.stderr + result.stdout


def test_an_empty_value_is_refused_unless_asked_for(env: dict[str, str], public: Path) -> None:
    result = run(env, "seal", "value", "payments/db", "password", "--public-key", str(public),
                 stdin="\n")  # fmt: skip
    assert result.returncode == 2 and "empty" in result.stderr
    ok(env, "seal", "value", "payments/db", "password", "--public-key", str(public),
       "--allow-empty", stdin="")  # fmt: skip


@pytest.mark.parametrize("ref", ["payments", "Payments/db", "pay/db/x", "strongroom.internal/x"])
def test_a_bad_place_is_refused_before_sealing(env: dict[str, str], public: Path,
                                               ref: str) -> None:  # fmt: skip
    result = run(env, "seal", "value", ref, "password", "--public-key", str(public), stdin="x")
    assert result.returncode in (1, 2)
    assert not result.stdout


def test_a_malformed_public_key_file_is_one_clear_line(env: dict[str, str],
                                                       tmp_path: Path) -> None:  # fmt: skip
    bad = tmp_path / "bad.json"
    for text in ("{", "[]", '{"active": "00"}', '{"active": "0011223344556677", '
                 '"0011223344556677.json": "{\\"keyId\\": \\"0011223344556677\\", '
                 '\\"suite\\": \\"x25519\\", \\"publicKey\\": \\"AAAA\\"}"}'):
        bad.write_text(text)
        result = run(env, "seal", "value", "payments/db", "k", "--public-key", str(bad), stdin="x")
        assert result.returncode == 1, text
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_in_place_changes_only_the_blob_and_keeps_comments(
    env: dict[str, str], public: Path, tmp_path: Path
) -> None:
    manifest = tmp_path / "db.yaml"
    manifest.write_text(MANIFEST)
    ok(env, "seal", "value", "payments/db", "password", "--public-key", str(public),
       "--in-place", str(manifest), stdin="first")  # fmt: skip
    once = manifest.read_text()
    blob = yaml.safe_load(once)["spec"]["data"][1]["sealed"]
    assert once == MANIFEST.replace("    - key: password      # sealed below\n",
                                    f"    - key: password      # sealed below\n"
                                    f"      sealed: {blob}\n")  # fmt: skip
    ok(env, "seal", "value", "payments/db", "password", "--public-key", str(public),
       "--in-place", str(manifest), stdin="second")  # fmt: skip
    twice = manifest.read_text()
    new = yaml.safe_load(twice)["spec"]["data"][1]["sealed"]
    assert twice == once.replace(blob, new)
    assert opened(env, new, Place("payments", "db", "password")) == "second"


@pytest.mark.parametrize(("ref", "key", "why"), [
    pytest.param("payments/other", "password", "no ManagedSecret payments/other", id="other-object"),
    pytest.param("payments/db", "user", "generate", id="key-with-another-source"),
])  # fmt: skip
def test_in_place_refusals_leave_the_file_as_it_was(
    env: dict[str, str], public: Path, tmp_path: Path, ref: str, key: str, why: str
) -> None:
    manifest = tmp_path / "db.yaml"
    manifest.write_text(MANIFEST)
    result = run(env, "seal", "value", ref, key, "--public-key", str(public),
                 "--in-place", str(manifest), stdin="v")  # fmt: skip
    assert result.returncode == 1 and why in result.stderr
    assert manifest.read_text() == MANIFEST


def test_rotate_then_reseal_moves_every_blob_to_the_new_key(
    env: dict[str, str], public: Path, tmp_path: Path
) -> None:
    manifest = tmp_path / "db.yaml"
    manifest.write_text(MANIFEST)
    ok(env, "seal", "value", "payments/db", "password", "--public-key", str(public),
       "--in-place", str(manifest), stdin="kept-across-reseal")  # fmt: skip
    old = header(yaml.safe_load(manifest.read_text())["spec"]["data"][1]["sealed"]).key_id
    ok(env, "seal", "rotate", "--suite", "x25519")
    out = ok(env, "seal", "reseal", str(manifest))
    assert "1 sealed values resealed" in out
    blob = yaml.safe_load(manifest.read_text())["spec"]["data"][1]["sealed"]
    assert header(blob).key_id != old
    assert opened(env, blob, Place("payments", "db", "password")) == "kept-across-reseal"
    assert "0 sealed values resealed" in ok(env, "seal", "reseal", str(manifest))
    events = [e for e in open_store(env).audit_tail(30) if e.action == "sealing.reseal"]
    assert len(events) == 2


def test_reseal_of_a_blob_that_does_not_open_changes_no_file(
    env: dict[str, str], public: Path, tmp_path: Path
) -> None:
    good, moved = tmp_path / "a.yaml", tmp_path / "b.yaml"
    good.write_text(MANIFEST)
    ok(env, "seal", "value", "payments/db", "password", "--public-key", str(public),
       "--in-place", str(good), stdin="v")  # fmt: skip
    # the same blob pasted into another namespace's ManagedSecret
    moved.write_text(good.read_text().replace("namespace: payments", "namespace: attacker"))
    ok(env, "seal", "rotate")
    before = good.read_text(), moved.read_text()
    result = run(env, "seal", "reseal", str(good), str(moved))
    assert result.returncode == 1 and "attacker/db[password]" in result.stderr
    assert (good.read_text(), moved.read_text()) == before


def test_keys_lists_ids_suites_and_users_and_prune_refuses_what_is_needed(
    env: dict[str, str], public: Path
) -> None:
    first = json.loads(ok(env, "seal", "keys", "--json"))["keys"][0]
    assert first["active"] and first["suite"] == "mlkem768-x25519"
    with open_store(env) as room:
        SealingKeys(room, actor="t").record("payments", "db", {
            "password": Use("payments", "db", "password", first["keyId"], "0" * 64)})  # fmt: skip
    result = run(env, "seal", "prune", first["keyId"])
    assert result.returncode == 1 and "active key" in result.stderr
    ok(env, "seal", "rotate")
    result = run(env, "seal", "prune", first["keyId"])
    assert result.returncode == 1 and "still in use" in result.stderr
    listed = ok(env, "seal", "keys")
    assert "payments/db[password]" in listed
    ok(env, "seal", "prune", first["keyId"], "--force")
    doc = json.loads(ok(env, "seal", "keys", "--json"))
    assert [k["keyId"] for k in doc["keys"]] != [first["keyId"]]
    assert doc["missingKeys"] == {first["keyId"]: ["payments/db[password]"]}  # reported clearly
    assert "(pruned)" in ok(env, "seal", "keys")


def test_public_key_without_a_key_says_how_to_make_one(env: dict[str, str]) -> None:
    ok(env, "db", "upgrade")
    result = run(env, "seal", "public-key")
    assert result.returncode == 1 and "seal rotate" in result.stderr


def test_no_seal_command_prints_the_private_key_or_a_value(
    env: dict[str, str], public: Path, tmp_path: Path
) -> None:
    manifest = tmp_path / "db.yaml"
    manifest.write_text(MANIFEST)
    outputs = [ok(env, "seal", "value", "payments/db", "password", "--public-key", str(public),
                  "--in-place", str(manifest), stdin="canary-value-9f1e")]  # fmt: skip
    outputs.append(ok(env, "seal", "rotate"))
    outputs += [ok(env, "seal", "public-key"), ok(env, "seal", "keys"),
                ok(env, "seal", "keys", "--json"), ok(env, "seal", "reseal", str(manifest))]
    outputs.append(ok(env, "audit", "tail", "-n", "50"))
    with open_store(env) as room:
        keys = SealingKeys(room, actor="t")
        privates = [keys.private(Header(k.suite, k.key_id)) for k in keys.list()]
    shown = "".join(outputs) + manifest.read_text()
    assert "canary-value-9f1e" not in shown
    for found in privates:
        assert found is not None
        raw = found[1]
        for form in (raw.hex(), base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()):
            assert form[:32] not in shown
