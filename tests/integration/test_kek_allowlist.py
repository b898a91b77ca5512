"""A stored key may name only a configured KEK: STRONGROOM_KEK or STRONGROOM_KEK_PREVIOUS.

A database attacker who inserts a data key row naming a KMS key of their own must not make
Strongroom send that key a Decrypt request: the row is refused as tampering before any call.
"""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime

import boto3
import pytest
from sqlalchemy import text

from strongroom import IntegrityError, Strongroom, UnwrapError
from strongroom.config import KekSpec, Settings
from strongroom.keyring import keyring_for
from strongroom.metrics import kek_calls
from strongroom.rotation import rotate_kek
from tests.components.base import free_port
from tests.components.moto import MotoServer
from tests.conftest import MASTER_KEY, make_settings
from tests.integration.test_cli import STRONGROOM

ATTACKER_ARN = "arn:aws:kms:us-east-1:111122223333:key/attacker"


@pytest.fixture
def closed_kms(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """AWS settings pointing at a port nobody listens on: any KMS call would be 'unreachable'."""
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def _cli(db_url: str, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    env |= {"STRONGROOM_DATABASE_URL": db_url, "STRONGROOM_MASTER_KEY": MASTER_KEY.hex(), **extra}
    return subprocess.run(
        [STRONGROOM, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def _point_at_attacker_key(room: Strongroom, table: str, **where: str) -> None:
    with room.engine.begin() as conn:
        if table == "data_keys":
            conn.execute(
                text(
                    "INSERT INTO data_keys (id, provider, kek_id, kek_version, wrapped_seed, "
                    "state, created_at) VALUES ('dk-attacker', 'awskms', :arn, '', :blob, "
                    "'retired', :now)"
                ),
                {"arn": ATTACKER_ARN, "blob": b"\x01" * 64, "now": datetime.now(UTC)},
            )
            conn.execute(
                text(
                    "UPDATE secret_versions SET data_key_id = 'dk-attacker' WHERE secret_id = "
                    "(SELECT id FROM secrets WHERE name = :name)"
                ),
                where,
            )
            # The secret's manifest names its data key too: pointed the same way, or the
            # manifest's row digest would refuse the rows before any key is looked up.
            conn.execute(
                text("UPDATE secrets SET manifest_key = 'dk-attacker' WHERE name = :name"), where
            )
        else:
            conn.execute(
                text("UPDATE audit_keys SET provider = 'awskms', kek_id = :arn"),
                {"arn": ATTACKER_ARN},
            )


def test_a_data_key_naming_a_foreign_kms_key_is_refused_without_calling_kms(
    db_url: str, closed_kms: dict[str, str]
) -> None:
    with Strongroom.open(make_settings(db_url)) as room:
        room.set("ns", "victim", {"k": "v"})
        room.set("ns", "other", {"k": "still readable"})
        _point_at_attacker_key(room, "data_keys", name="victim")
    calls = kek_calls("awskms", "unwrap")
    with Strongroom.open(make_settings(db_url)) as fresh:
        with pytest.raises(IntegrityError) as info:
            fresh.get("ns", "victim")
        assert fresh.get("ns", "other", "k").data["k"] == "still readable"
        last = list(fresh.audit_events())[-2]
        assert fresh.audit_verify().ok
    assert kek_calls("awskms", "unwrap") == calls  # KMS never asked
    message = str(info.value)
    assert message.startswith("data key dk-attacker names a KEK outside the configured set")
    assert ATTACKER_ARN in message and "STRONGROOM_KEK_PREVIOUS" in message
    assert (last.action, last.outcome, last.name) == ("secret.get", "error", "victim")

    result = _cli(db_url, "secret", "get", "ns/victim", **closed_kms)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("strongroom: error: data key dk-attacker names a KEK outside")
    assert len(result.stderr.splitlines()) == 1
    assert "unreachable" not in result.stderr


def test_an_audit_key_naming_a_foreign_kms_key_stops_everything_without_calling_kms(
    db_url: str, closed_kms: dict[str, str]
) -> None:
    with Strongroom.open(make_settings(db_url)) as room:
        room.set("ns", "s", {"k": "v"})
        _point_at_attacker_key(room, "audit_keys")
    calls = kek_calls("awskms", "unwrap")
    with Strongroom.open(make_settings(db_url)) as fresh:
        with pytest.raises(IntegrityError, match=r"^audit key ak-[0-9a-f]+ names a KEK outside"):
            fresh.get("ns", "s")
        with pytest.raises(IntegrityError, match="outside the configured set"):
            fresh.audit_verify()
    assert kek_calls("awskms", "unwrap") == calls
    result = _cli(db_url, "audit", "verify", **closed_kms)
    assert (result.returncode, len(result.stderr.splitlines())) == (1, 1)
    assert "outside the configured set" in result.stderr


def test_a_row_naming_an_unknown_provider_is_refused(db_url: str) -> None:
    with Strongroom.open(make_settings(db_url)) as room:
        room.set("ns", "s", {"k": "v"})
        with room.engine.begin() as conn:
            conn.execute(text("UPDATE data_keys SET provider = 'gcpkms', kek_id = 'x\ny'"))
    with Strongroom.open(make_settings(db_url)) as fresh:
        with pytest.raises(IntegrityError) as info:
            fresh.get("ns", "s")
    assert "outside the configured set (gcpkms:x\\ny)" in str(info.value)  # escaped, one line


# --- rotation, with a real (moto) KMS ------------------------------------------------------


@pytest.fixture
def two_kms_keys(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    for name, value in moto.env().items():
        monkeypatch.setenv(name, value)
    kms = boto3.client("kms")
    return tuple(kms.create_key()["KeyMetadata"]["Arn"] for _ in range(2))  # type: ignore[return-value]


def _settings(db_url: str, kek: str, *previous: str) -> Settings:
    return make_settings(
        db_url, kek=KekSpec.parse(kek), kek_previous=tuple(KekSpec.parse(p) for p in previous),
        master_key=None, kek_max_attempts=2,
    )  # fmt: skip


def test_kek_previous_lets_a_kek_change_read_the_rows_of_the_old_one(
    db_url: str, two_kms_keys: tuple[str, str]
) -> None:
    old, new = (f"awskms:{arn}" for arn in two_kms_keys)
    with Strongroom.open(_settings(db_url, old)) as room:
        room.set("ns", "before", {"k": "under the old KEK"})

    # STRONGROOM_KEK changed, the old KEK not listed: its rows are outside the set.
    with Strongroom.open(_settings(db_url, new)) as room:
        with pytest.raises(IntegrityError, match="add it to STRONGROOM_KEK_PREVIOUS") as info:
            room.get("ns", "before")
        assert two_kms_keys[0] in str(info.value)

    # Listed: old rows read, new writes go to a data key under the new KEK.
    with Strongroom.open(_settings(db_url, new, old)) as room:
        assert room.get("ns", "before", "k").data["k"] == "under the old KEK"
        room.set("ns", "after", {"k": "under the new KEK"})
        assert room.audit_verify().ok
        report = rotate_kek(room, keyring_for(room.settings, "awskms", two_kms_keys[1]))
        assert report.rewrapped == 2  # the old data key and the audit key

    # Everything rewrapped: the old KEK is needed no more.
    with Strongroom.open(_settings(db_url, new)) as room, room.engine.connect() as conn:
        assert room.get("ns", "before", "k").data["k"] == "under the old KEK"
        assert room.get("ns", "after", "k").data["k"] == "under the new KEK"
        assert room.audit_verify().ok
        keks = conn.execute(
            text("SELECT kek_id FROM data_keys UNION SELECT kek_id FROM audit_keys")
        ).scalars()
        assert set(keks) == {two_kms_keys[1]}


def test_kek_rotate_to_a_target_needs_no_setting_and_resumes(
    db_url: str, two_kms_keys: tuple[str, str], moto: MotoServer
) -> None:
    old, new = (f"awskms:{arn}" for arn in two_kms_keys)
    env = {**moto.env(), "STRONGROOM_KEK": old, "STRONGROOM_KEK_MAX_ATTEMPTS": "2"}
    with Strongroom.open(_settings(db_url, old)) as room:
        room.set("ns", "s", {"k": "v"})
    first = _cli(db_url, "kek", "rotate", "--to", new, **env)
    assert first.returncode == 0, first.stderr
    assert f"set STRONGROOM_KEK={new}" in first.stderr
    # Run again under the old setting (as a resumed rotation would be): the keys that name the
    # target, the audit key among them, are read with the target the command was given.
    again = _cli(db_url, "kek", "rotate", "--to", new, **env)
    assert again.returncode == 0, again.stderr
    assert '"rewrapped": 0' in again.stdout
    after = _cli(db_url, "secret", "get", "ns/s", "k", **{**env, "STRONGROOM_KEK": new})
    assert (after.returncode, after.stdout.strip()) == (0, "v"), after.stderr
    refused = _cli(db_url, "secret", "get", "ns/s", "k", **env)  # the old KEK, nothing listed
    assert refused.returncode == 1
    assert "outside the configured set" in refused.stderr


def test_a_previous_kek_that_cannot_be_built_is_a_clear_error(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VAULT_ADDR", raising=False)
    settings = make_settings(db_url, kek_previous=(KekSpec("vault", "old"),))
    with Strongroom.open(settings) as room:
        room.set("ns", "s", {"k": "v"})
        with room.engine.begin() as conn:
            conn.execute(text("UPDATE data_keys SET provider = 'vault', kek_id = 'transit/old'"))
    with Strongroom.open(settings) as fresh:
        with pytest.raises(UnwrapError, match="STRONGROOM_KEK_PREVIOUS names vault:old, which"):
            fresh.get("ns", "s")
