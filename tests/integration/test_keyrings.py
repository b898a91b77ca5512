"""The awskms and vault KEKs against moto's server and a real OpenBao; rotation between KEKs."""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path

import boto3
import hvac
import pytest
from sqlalchemy import text

from strongroom import KeyringError, Strongroom, UnwrapError, WrapError
from strongroom.config import KekSpec, Settings
from strongroom.keyring import keyring_for
from strongroom.metrics import kek_calls
from strongroom.rotation import rotate_kek
from tests.components.kube import KubeCluster
from tests.components.moto import MotoServer
from tests.components.openbao import OpenBao, start_openbao
from tests.conftest import make_settings


@pytest.fixture
def aws(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> object:
    for name, value in moto.env().items():
        monkeypatch.setenv(name, value)
    return boto3.client("kms")


@pytest.fixture
def kms_key(aws: object) -> str:
    return str(aws.create_key(Description="strongroom test")["KeyMetadata"]["Arn"])  # type: ignore[attr-defined]


@pytest.fixture
def vault(openbao: OpenBao, monkeypatch: pytest.MonkeyPatch) -> hvac.Client:
    monkeypatch.setenv("VAULT_ADDR", openbao.addr)
    monkeypatch.setenv("VAULT_TOKEN", openbao.token)
    return hvac.Client(url=openbao.addr, token=openbao.token)


@pytest.fixture
def transit_key(vault: hvac.Client) -> str:
    name = f"sr-{uuid.uuid4().hex[:8]}"
    vault.secrets.transit.create_key(name=name)
    return name


def key_id(arn: str) -> str:
    """moto's DisableKey and ScheduleKeyDeletion accept only a bare key id, not an ARN."""
    return arn.rsplit("/", 1)[1]


def settings_for(url: str, kek: str, **overrides: object) -> Settings:
    return make_settings(url, kek=KekSpec.parse(kek), kek_max_attempts=2, **overrides)


def test_awskms_round_trip_and_fresh_process_read(sqlite_url: str, kms_key: str) -> None:
    with Strongroom.open(settings_for(sqlite_url, f"awskms:{kms_key}")) as room:
        room.set("ns", "db", {"password": "p1"})
    with Strongroom.open(settings_for(sqlite_url, f"awskms:{kms_key}")) as room:
        assert room.get("ns", "db", "password").data["password"] == "p1"
        with room.engine.connect() as conn:
            provider, kek_id = conn.execute(text("SELECT provider, kek_id FROM data_keys")).one()
    assert (provider, kek_id) == ("awskms", kms_key)


def test_awskms_alias_is_recorded_as_the_key_arn(
    sqlite_url: str, aws: object, kms_key: str
) -> None:
    aws.create_alias(AliasName="alias/strongroom-test-" + uuid.uuid4().hex[:6], TargetKeyId=kms_key)  # type: ignore[attr-defined]
    alias = aws.list_aliases(KeyId=kms_key)["Aliases"][0]["AliasName"]  # type: ignore[attr-defined]
    with Strongroom.open(settings_for(sqlite_url, f"awskms:{alias}")) as room:
        room.set("ns", "s", {"k": "v"})
        assert room.data_keys.keyring.kek_id == kms_key


def test_vault_round_trip_records_the_key_version(sqlite_url: str, transit_key: str) -> None:
    with Strongroom.open(settings_for(sqlite_url, f"vault:{transit_key}")) as room:
        room.set("ns", "db", {"password": "p1"})
    with Strongroom.open(settings_for(sqlite_url, f"vault:{transit_key}")) as room:
        assert room.get("ns", "db", "password").data["password"] == "p1"
        with room.engine.connect() as conn:
            row = conn.execute(text("SELECT provider, kek_id, kek_version FROM data_keys")).one()
    assert tuple(row) == ("vault", f"transit/{transit_key}", "1")


@pytest.mark.parametrize("provider", ["awskms", "vault"])
def test_a_wrapped_seed_moved_to_another_data_key_does_not_unwrap(
    sqlite_url: str, provider: str, request: pytest.FixtureRequest
) -> None:
    key = request.getfixturevalue("kms_key" if provider == "awskms" else "transit_key")
    settings = settings_for(sqlite_url, f"{provider}:{key}")
    settings = dataclasses.replace(
        settings, data_keys=dataclasses.replace(settings.data_keys, max_uses=1)
    )
    with Strongroom.open(settings) as room:
        room.set("ns", "a", {"k": "1"})
        room.set("ns", "b", {"k": "2"})
        with room.engine.begin() as conn:
            first, second = conn.execute(
                text("SELECT id, wrapped_seed FROM data_keys ORDER BY created_at")
            ).all()
            conn.execute(
                text("UPDATE data_keys SET wrapped_seed = :w WHERE id = :i"),
                {"w": first[1], "i": second[0]},
            )
    with Strongroom.open(settings) as room:
        assert room.get("ns", "a", "k").data["k"] == "1"
        with pytest.raises(UnwrapError, match=provider):
            room.get("ns", "b")


def _read_all(url: str, kek: str, expected: dict[str, str], **overrides: object) -> None:
    with Strongroom.open(settings_for(url, kek, **overrides)) as room:
        assert {
            f"ns/s{i}": room.get("ns", f"s{i}", "k").data["k"] for i in range(len(expected))
        } == expected


def test_rotation_local_awskms_vault_awskms_with_old_keks_disabled(
    db_url: str,
    moto: MotoServer,
    aws: object,
    kms_key: str,
    vault: hvac.Client,
    transit_key: str,
) -> None:
    expected = {f"ns/s{i}": f"value-{i}" for i in range(20)}
    with Strongroom.open(settings_for(db_url, "local")) as room:
        for i in range(20):
            room.set("ns", f"s{i}", {"k": f"value-{i}"})

    # local -> awskms; then the local master key is gone.
    with Strongroom.open(settings_for(db_url, "local")) as room:
        before = kek_calls("awskms", "wrap")
        report = rotate_kek(room, keyring_for(room.settings, "awskms", kms_key))
        # One data key and the audit key: one wrap each.
        assert (report.rewrapped, kek_calls("awskms", "wrap") - before) == (2, 2)
    _read_all(db_url, f"awskms:{kms_key}", expected, master_key=None)

    # awskms -> vault; then the KMS key is disabled.
    with Strongroom.open(settings_for(db_url, f"awskms:{kms_key}", master_key=None)) as room:
        room.set("ns", "late", {"k": "written under kms"})
        rotate_kek(room, keyring_for(room.settings, "vault", transit_key))
    # moto ignores DisableKey on Decrypt; a restart deletes the key for real.
    aws.disable_key(KeyId=key_id(kms_key))  # type: ignore[attr-defined]
    moto.restart()
    _read_all(db_url, f"vault:{transit_key}", expected, master_key=None)

    # vault -> a second awskms key; then the transit key is deleted.
    second = aws.create_key()["KeyMetadata"]["Arn"]  # type: ignore[attr-defined]
    with Strongroom.open(settings_for(db_url, f"vault:{transit_key}", master_key=None)) as room:
        report = rotate_kek(room, keyring_for(room.settings, "awskms", second))
        # One data key all along (the rotated seed stayed active for the write under KMS),
        # and the audit key.
        assert report.rewrapped == 2
        again = rotate_kek(room, keyring_for(room.settings, "awskms", second))
        assert (again.rewrapped, again.already) == (0, 2)
    vault.secrets.transit.update_key_configuration(name=transit_key, deletion_allowed=True)
    vault.secrets.transit.delete_key(name=transit_key)
    _read_all(db_url, f"awskms:{second}", expected, master_key=None)
    with Strongroom.open(settings_for(db_url, f"awskms:{second}", master_key=None)) as room:
        assert room.get("ns", "late", "k").data["k"] == "written under kms"
        assert room.audit_verify().ok


def test_vault_rotation_moves_seeds_to_the_latest_key_version(
    sqlite_url: str, vault: hvac.Client, transit_key: str
) -> None:
    kek = f"vault:{transit_key}"
    with Strongroom.open(settings_for(sqlite_url, kek)) as room:
        room.set("ns", "s0", {"k": "v"})
    vault.secrets.transit.rotate_key(name=transit_key)
    with Strongroom.open(settings_for(sqlite_url, kek)) as room:
        report = rotate_kek(room, keyring_for(room.settings, "vault", transit_key))
        assert report.rewrapped == 2  # the data key and the audit key
    vault.secrets.transit.update_key_configuration(name=transit_key, min_decryption_version=2)
    _read_all(sqlite_url, kek, {"ns/s0": "v"})
    with Strongroom.open(settings_for(sqlite_url, kek)) as room, room.engine.connect() as conn:
        assert conn.execute(text("SELECT kek_version FROM data_keys")).scalar_one() == "2"


def test_kek_calls_grow_with_data_keys_not_secrets(sqlite_url: str, kms_key: str) -> None:
    kek = f"awskms:{kms_key}"
    before = {op: kek_calls("awskms", op) for op in ("wrap", "unwrap", "describe")}
    with Strongroom.open(settings_for(sqlite_url, kek)) as room:
        for i in range(200):
            room.set("ns", f"s{i}", {"k": str(i)})
    with Strongroom.open(settings_for(sqlite_url, kek)) as room:
        for i in range(200):
            room.get("ns", f"s{i}")
    used = {op: kek_calls("awskms", op) - before[op] for op in before}
    # One data key and the audit key: wrapped once each, unwrapped once each per process.
    assert used == {"wrap": 2, "unwrap": 2, "describe": 0}


# --- failures ------------------------------------------------------------------------------


def _store_under(url: str, kek: str) -> None:
    with Strongroom.open(settings_for(url, kek)) as room:
        room.set("ns", "s", {"k": "v"})


def test_a_deleted_kms_key_is_one_clear_error(
    sqlite_url: str, moto: MotoServer, kms_key: str
) -> None:
    _store_under(sqlite_url, f"awskms:{kms_key}")
    moto.restart()  # moto keeps keys in memory: after a restart the key is gone for good
    with Strongroom.open(settings_for(sqlite_url, f"awskms:{kms_key}")) as room:
        with pytest.raises(UnwrapError, match=r"awskms: .*does not exist \(NotFoundException\)"):
            room.get("ns", "s")
        with pytest.raises(KeyringError, match="does not exist"):
            room.set("ns", "new", {"k": "v"})
        # Listing is audited, and the audit key is wrapped by the same KEK: a process that
        # cannot unwrap it does nothing it could not audit.
        with pytest.raises(UnwrapError, match="does not exist"):
            room.list()
        with room.engine.connect() as conn:
            assert conn.execute(text("SELECT name FROM secrets")).scalars().all() == ["s"]


@pytest.mark.parametrize(
    ("code", "cause"),
    [
        pytest.param("DisabledException", "the key is disabled", id="disabled"),
        pytest.param("KMSInvalidStateException", "pending deletion", id="pending-deletion"),
        pytest.param("AccessDeniedException", "access denied", id="access-denied"),
        pytest.param("ThrottlingException", "throttled", id="throttled-after-retries"),
    ],
)
def test_kms_key_states_moto_cannot_enforce_are_clear_errors__botocore_stubber(
    code: str, cause: str
) -> None:
    """moto's server ignores key state and policies on Encrypt/Decrypt, so these KMS answers
    come from botocore's own Stubber, replaying the real error shape."""
    from botocore.stub import Stubber

    from strongroom.keyring.awskms import AwsKmsConfig, AwsKmsKeyring
    from strongroom.keyring.base import WrappedSeed

    client = boto3.client("kms", region_name="us-east-1", aws_access_key_id="x",
                          aws_secret_access_key="x")  # fmt: skip
    arn = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000"
    with Stubber(client) as stub:
        stub.add_client_error("decrypt", service_error_code=code, http_status_code=400)
        ring = AwsKmsKeyring(AwsKmsConfig(key_id=arn, client=client))
        with pytest.raises(UnwrapError) as info:
            ring.unwrap(
                wrapped=WrappedSeed("awskms", arn, "", b"blob"), context={"data_key_id": "d"}
            )
    assert str(info.value).startswith("awskms: cannot unwrap")
    assert cause in str(info.value) and code in str(info.value)


def test_a_missing_kms_key_is_one_clear_error(sqlite_url: str, aws: object) -> None:
    with Strongroom.open(settings_for(sqlite_url, "awskms:alias/does-not-exist")) as room:
        with pytest.raises(WrapError, match="does not exist"):
            room.set("ns", "s", {"k": "v"})
        with pytest.raises(WrapError, match="does not exist"):
            room.list()  # audited: the audit key cannot be wrapped either
        with room.engine.connect() as conn:
            written = conn.execute(text(
                "SELECT (SELECT COUNT(*) FROM secrets) + (SELECT COUNT(*) FROM audit_keys) "
                "+ (SELECT COUNT(*) FROM audit_events)"
            )).scalar_one()  # fmt: skip
        assert written == 0


def test_an_unreachable_kms_is_one_clear_error(
    sqlite_url: str, kms_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _store_under(sqlite_url, f"awskms:{kms_key}")
    from tests.components.base import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    with Strongroom.open(settings_for(sqlite_url, f"awskms:{kms_key}")) as room:
        with pytest.raises(UnwrapError, match="unreachable"):
            room.get("ns", "s")


def test_a_sealed_vault_is_one_clear_error(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = start_openbao()  # its own server: sealing the shared one would hurt other tests
    try:
        monkeypatch.setenv("VAULT_ADDR", server.addr)
        monkeypatch.setenv("VAULT_TOKEN", server.token)
        client = hvac.Client(url=server.addr, token=server.token)
        client.secrets.transit.create_key(name="k")
        _store_under(sqlite_url, "vault:k")
        client.sys.seal()
        with Strongroom.open(settings_for(sqlite_url, "vault:k")) as room:
            with pytest.raises(UnwrapError, match=r"vault: .*sealed"):
                room.get("ns", "s")
    finally:
        server.stop()


def test_vault_permission_denied_is_one_clear_error(
    sqlite_url: str, vault: hvac.Client, transit_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _store_under(sqlite_url, f"vault:{transit_key}")
    vault.sys.create_or_update_policy(
        name="nothing", policy='path "transit/keys/*" { capabilities = ["read"] }'
    )
    weak = vault.auth.token.create(policies=["nothing"], ttl="10m")["auth"]["client_token"]
    monkeypatch.setenv("VAULT_TOKEN", weak)
    with Strongroom.open(settings_for(sqlite_url, f"vault:{transit_key}")) as room:
        with pytest.raises(UnwrapError, match="permission denied"):
            room.get("ns", "s")


def test_an_unreachable_vault_is_one_clear_error(
    sqlite_url: str, transit_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _store_under(sqlite_url, f"vault:{transit_key}")
    from tests.components.base import free_port

    monkeypatch.setenv("VAULT_ADDR", f"http://127.0.0.1:{free_port()}")
    with Strongroom.open(settings_for(sqlite_url, f"vault:{transit_key}")) as room:
        with pytest.raises(UnwrapError, match="unreachable"):
            room.get("ns", "s")


def test_vault_without_credentials_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, sqlite_url: str
) -> None:
    from strongroom import ConfigError

    monkeypatch.setenv("VAULT_ADDR", "http://127.0.0.1:1")
    monkeypatch.delenv("VAULT_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="VAULT_TOKEN"):
        Strongroom.open(settings_for(sqlite_url, "vault:k"))


def test_vault_kubernetes_auth_with_a_service_account_token(
    sqlite_url: str, vault: hvac.Client, transit_key: str, kube: KubeCluster, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """OpenBao's Kubernetes auth reviews the token against the real test apiserver."""
    mount = f"k8s-{uuid.uuid4().hex[:6]}"
    vault.sys.enable_auth_method("kubernetes", path=mount)
    vault.write(f"auth/{mount}/config", kubernetes_host=kube.server,
                kubernetes_ca_cert=kube.ca_file.read_text(), token_reviewer_jwt=kube.admin_token,
                disable_local_ca_jwt=True)  # fmt: skip
    vault.sys.create_or_update_policy(name=f"{mount}-transit", policy=(
        f'path "transit/encrypt/{transit_key}" {{ capabilities = ["update"] }}\n'
        f'path "transit/decrypt/{transit_key}" {{ capabilities = ["update"] }}'
    ))  # fmt: skip
    vault.write(f"auth/{mount}/role/strongroom", bound_service_account_names="strongroom",
                bound_service_account_namespaces="default", token_policies=f"{mount}-transit",
                ttl="10m")  # fmt: skip
    token_file = tmp_path / "token"
    token_file.write_text(kube.service_account_token("default", "strongroom"))
    monkeypatch.delenv("VAULT_TOKEN")
    monkeypatch.setenv("VAULT_K8S_ROLE", "strongroom")
    monkeypatch.setenv("VAULT_K8S_MOUNT", mount)
    monkeypatch.setenv("VAULT_K8S_TOKEN_PATH", str(token_file))
    with Strongroom.open(settings_for(sqlite_url, f"vault:{transit_key}")) as room:
        room.set("ns", "s", {"k": "via-k8s-auth"})
    with Strongroom.open(settings_for(sqlite_url, f"vault:{transit_key}")) as room:
        assert room.get("ns", "s", "k").data["k"] == "via-k8s-auth"
    token_file.write_text(kube.service_account_token("default", "someone-else"))
    from strongroom import ConfigError

    with pytest.raises(ConfigError, match="Kubernetes login as role 'strongroom' failed"):
        Strongroom.open(settings_for(sqlite_url, f"vault:{transit_key}"))
