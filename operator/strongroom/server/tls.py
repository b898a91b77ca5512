"""TLS, always: a certificate from files, from a Secret, or self-signed into a Secret.

- ``--tls-cert-file``/``--tls-key-file``: PEM files, e.g. a cert-manager Certificate's Secret
  mounted into the pod (``tls.crt``/``tls.key``); read once at start.
- ``--tls-secret [NS/]NAME``: a ``kubernetes.io/tls`` Secret read at start; if it does not
  exist, a self-signed certificate (EC P-256, one year, the ``--tls-san`` names) is generated and
  created there, with its certificate also under ``ca.crt`` for clients to trust. Two replicas
  starting together both try; the one that loses the create reads the winner's.

The private key exists only in the Secret (or file) and this process's memory.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import os
import ssl
import tempfile
from base64 import b64decode, b64encode
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from strongroom.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class KeyPair:
    cert_pem: bytes
    key_pem: bytes = dataclasses.field(repr=False)


def self_signed(names: Sequence[str], *, days: int = 365) -> KeyPair:
    """A new self-signed server certificate for ``names`` (DNS names or IP addresses)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else "strongroom")]
    )
    sans: list[x509.GeneralName] = []
    for name in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        # Not a CA: clients trust this very certificate (ca.crt), and a key that could sign
        # others would vouch for any host name to them.
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return KeyPair(
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def from_files(cert_file: str, key_file: str) -> KeyPair:
    try:
        return KeyPair(Path(cert_file).read_bytes(), Path(key_file).read_bytes())
    except OSError as exc:
        raise ConfigError(f"TLS: cannot read {exc.filename}: {exc.strerror}") from None


def from_secret(core: k8s.CoreV1Api, namespace: str, name: str, sans: Sequence[str]) -> KeyPair:
    """The Secret's pair; a self-signed one created there first if the Secret does not exist."""
    found = _read(core, namespace, name)
    if found is not None:
        return found
    pair = self_signed(sans)
    body = k8s.V1Secret(
        metadata=k8s.V1ObjectMeta(name=name, labels={"app.kubernetes.io/part-of": "strongroom"}),
        type="kubernetes.io/tls",
        data={
            "tls.crt": b64encode(pair.cert_pem).decode(),
            "ca.crt": b64encode(pair.cert_pem).decode(),
            "tls.key": b64encode(pair.key_pem).decode(),
        },
    )
    try:
        core.create_namespaced_secret(namespace, body)
    except ApiException as exc:
        if exc.status != 409:
            raise ConfigError(
                f"TLS: cannot create Secret {namespace}/{name} (HTTP {exc.status})"
            ) from None
        found = _read(core, namespace, name)  # another replica created it first
        if found is None:
            raise ConfigError(f"TLS: Secret {namespace}/{name} vanished while starting") from None
        return found
    return pair


def _read(core: k8s.CoreV1Api, namespace: str, name: str) -> KeyPair | None:
    try:
        secret = core.read_namespaced_secret(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise ConfigError(
            f"TLS: cannot read Secret {namespace}/{name} (HTTP {exc.status})"
        ) from None
    data = secret.data or {}
    if "tls.crt" not in data or "tls.key" not in data:
        raise ConfigError(f"TLS: Secret {namespace}/{name} has no tls.crt and tls.key")
    return KeyPair(b64decode(data["tls.crt"]), b64decode(data["tls.key"]))


def server_context(pair: KeyPair) -> ssl.SSLContext:
    """A TLS 1.2+ server context holding ``pair`` (loaded through a private temporary file,
    as ``ssl`` reads keys from paths only)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    with tempfile.TemporaryDirectory(prefix="strongroom-tls-") as where:
        cert, key = Path(where, "tls.crt"), Path(where, "tls.key")
        for path, data in ((cert, pair.cert_pem), (key, pair.key_pem)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
        try:
            context.load_cert_chain(cert, key)
        except ssl.SSLError:
            raise ConfigError("TLS: the certificate and key do not load (PEM expected, and "
                              "the key must match the certificate)") from None  # fmt: skip
    return context
