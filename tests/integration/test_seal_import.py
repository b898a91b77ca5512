"""`strongroom seal import-sealedsecret`: SealedSecrets sealed by Bitnami's real kubeseal
(v0.27.1, offline with the controller's certificate) become ManagedSecrets whose blobs open to
the same values, for every Bitnami scope; the plaintext is never written to disk."""

from __future__ import annotations

import base64
import dataclasses
import datetime
import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from strongroom import Strongroom
from strongroom.sealing.blob import Place, SealedInvalid, open_sealed
from strongroom.sealing.keys import SealingKeys
from tests.components.kubeseal import kubeseal_path
from tests.conftest import make_settings
from tests.integration.test_seal_cli import KEY, STRONGROOM

CANARY = "CANARY-bitnami-3d9a-never-on-disk"


@dataclasses.dataclass
class Controller:
    """A Sealed Secrets controller's key pair, as its backup keeps it."""

    cert: Path
    key_pem: Path
    backup_yaml: Path


def controller_key(where: Path, name: str = "ctl") -> Controller:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sealed-secret")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=30))
            .sign(key, hashes.SHA256()))  # fmt: skip
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())  # fmt: skip
    (where / f"{name}.crt").write_bytes(cert_pem)
    (where / f"{name}.key").write_bytes(key_pem)
    backup = {"apiVersion": "v1", "kind": "List", "items": [{
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": "sealed-secrets-keyabc", "namespace": "kube-system",
                     "labels": {"sealedsecrets.bitnami.com/sealed-secrets-key": "active"}},
        "data": {"tls.crt": base64.b64encode(cert_pem).decode(),
                 "tls.key": base64.b64encode(key_pem).decode()}}]}  # fmt: skip
    (where / f"{name}-backup.yaml").write_text(yaml.safe_dump(backup))
    return Controller(where / f"{name}.crt", where / f"{name}.key", where / f"{name}-backup.yaml")


def kubeseal(controller: Controller, scope: str, secret: dict[str, object]) -> str:
    """kubeseal reading the Secret from stdin, as its docs show: the plaintext is never a file."""
    out = subprocess.run([kubeseal_path(), "--cert", str(controller.cert), "--scope", scope,
                          "--format", "yaml"], input=json.dumps(secret), capture_output=True,
                         text=True, timeout=60, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    out.update({"STRONGROOM_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
                "STRONGROOM_MASTER_KEY": KEY, "STRONGROOM_ACTOR": "import-test"})  # fmt: skip
    return out


def strongroom(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([STRONGROOM, *args], env=env, capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip


@pytest.fixture
def public(env: dict[str, str], tmp_path: Path) -> Path:
    assert strongroom(env, "db", "upgrade").returncode == 0
    assert strongroom(env, "seal", "rotate").returncode == 0
    path = tmp_path / "pub.json"
    path.write_text(strongroom(env, "seal", "public-key").stdout)
    return path


def open_all(env: dict[str, str], manifest: dict[str, object]) -> dict[str, str]:
    meta, spec = manifest["metadata"], manifest["spec"]
    assert isinstance(meta, dict) and isinstance(spec, dict)
    settings = dataclasses.replace(make_settings(env["STRONGROOM_DATABASE_URL"]),
                                   master_key=bytes.fromhex(KEY))  # fmt: skip
    with Strongroom.open(settings) as room:
        keys = SealingKeys(room, actor="t")
        return {item["key"]: open_sealed(item["sealed"],
                                         Place(meta["namespace"], meta["name"], item["key"]),
                                         keys.private) for item in spec["data"]}  # fmt: skip


def secret(name: str = "db", namespace: str = "payments") -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/basic-auth",
            "metadata": {"name": name, "namespace": namespace, "labels": {"app": "pay"}},
            "stringData": {"username": "app", "password": CANARY}}  # fmt: skip


@pytest.mark.parametrize("scope", ["strict", "namespace-wide", "cluster-wide"])
@pytest.mark.parametrize("key_file", ["pem", "backup-yaml"])
def test_a_sealedsecret_becomes_a_managedsecret_with_the_same_values(
    env: dict[str, str], public: Path, tmp_path: Path, scope: str, key_file: str
) -> None:
    controller = controller_key(tmp_path)
    sealed = tmp_path / "sealed.yaml"
    sealed.write_text(kubeseal(controller, scope, secret()))
    out = tmp_path / "managed.yaml"
    result = strongroom(env, "seal", "import-sealedsecret", str(sealed), "--public-key",
                        str(public), "--output", str(out), "--private-key",
                        str(controller.key_pem if key_file == "pem" else controller.backup_yaml))  # fmt: skip
    assert result.returncode == 0, result.stderr
    manifest = yaml.safe_load(out.read_text())
    assert manifest["kind"] == "ManagedSecret"
    assert manifest["metadata"] == {"name": "db", "namespace": "payments"}
    assert manifest["spec"]["target"] == {"name": "db", "type": "kubernetes.io/basic-auth",
                                          "labels": {"app": "pay"}}  # fmt: skip
    assert open_all(env, manifest) == {"username": "app", "password": CANARY}
    # Whatever Bitnami's scope, the Strongroom blob is bound to this place only.
    item = manifest["spec"]["data"][0]
    settings = dataclasses.replace(make_settings(env["STRONGROOM_DATABASE_URL"]),
                                   master_key=bytes.fromhex(KEY))  # fmt: skip
    with Strongroom.open(settings) as room, pytest.raises(SealedInvalid):
        open_sealed(item["sealed"], Place("other", "db", item["key"]),
                    SealingKeys(room, actor="t").private)  # fmt: skip
    for path in tmp_path.rglob("*"):  # never on disk: not in any file, the store's included
        if path.is_file():
            assert CANARY.encode() not in path.read_bytes(), path


def test_the_wrong_controller_key_is_one_clear_error_and_no_output(
    env: dict[str, str], public: Path, tmp_path: Path
) -> None:
    sealed = tmp_path / "sealed.yaml"
    sealed.write_text(kubeseal(controller_key(tmp_path, "right"), "strict", secret()))
    wrong = controller_key(tmp_path, "wrong")
    out = tmp_path / "managed.yaml"
    result = strongroom(env, "seal", "import-sealedsecret", str(sealed), "--public-key",
                        str(public), "--private-key", str(wrong.key_pem), "--output", str(out))  # fmt: skip
    assert result.returncode == 1
    assert "does not open with the given private key" in result.stderr
    assert not out.exists()


def test_a_sealedsecret_moved_to_another_name_is_refused(
    env: dict[str, str], public: Path, tmp_path: Path
) -> None:
    """Bitnami's strict scope binds namespace and name; the import keeps that promise."""
    controller = controller_key(tmp_path)
    sealed = tmp_path / "sealed.yaml"
    sealed.write_text(kubeseal(controller, "strict", secret()).replace("name: db", "name: moved"))
    result = strongroom(env, "seal", "import-sealedsecret", str(sealed), "--public-key",
                        str(public), "--private-key", str(controller.key_pem))  # fmt: skip
    assert result.returncode == 1 and "payments/moved" in result.stderr
    assert not result.stdout


@pytest.mark.parametrize("content", ["", "not: [yaml", "-----BEGIN RSA PRIVATE KEY-----\nxx\n"
                                     "-----END RSA PRIVATE KEY-----\n"])  # fmt: skip
def test_an_unusable_private_key_file_is_one_clear_error(
    env: dict[str, str], public: Path, tmp_path: Path, content: str
) -> None:
    sealed = tmp_path / "sealed.yaml"
    sealed.write_text(kubeseal(controller_key(tmp_path), "strict", secret()))
    bad = tmp_path / "bad.key"
    bad.write_text(content)
    result = strongroom(env, "seal", "import-sealedsecret", str(sealed), "--public-key",
                        str(public), "--private-key", str(bad))  # fmt: skip
    assert result.returncode == 1 and "no RSA private key" in result.stderr
    assert "Traceback" not in result.stderr
