"""The compatibility door from Bitnami Sealed Secrets: a SealedSecret and its controller's
private key (the backup users already keep) in, an equivalent ManagedSecret with Strongroom
blobs out. The values exist only in memory, between opening the Bitnami ciphertext and sealing
them again; nothing but blobs is written.

Bitnami's format (sealed-secrets ``pkg/crypto``, ``HybridEncrypt``), each
``spec.encryptedData`` value, base64::

    uint16_be(len(rsa)) || rsa || aes
    rsa = RSA-OAEP(SHA-256, label)(32-byte session key)
    aes = AES-256-GCM(session key, nonce = 12 zero bytes, plaintext), tag appended

``label`` is the scope: ``namespace/name`` (strict, the default), ``namespace``
(``sealedsecrets.bitnami.com/namespace-wide: "true"``) or empty
(``sealedsecrets.bitnami.com/cluster-wide: "true"``), read from the SealedSecret's metadata or
its template's, as the controller reads them. The Strongroom blobs written are bound to the
SealedSecret's own namespace, name and key whatever its Bitnami scope was: the import narrows
a wide scope to strict, never the other way.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from collections.abc import Iterator, Mapping
from typing import Any

import yaml
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from strongroom.errors import ValidationError
from strongroom.sealing.blob import Place, PublicSealingKey, seal

SCOPE_PREFIX = "sealedsecrets.bitnami.com/"
_PEM = re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----.+?-----END [A-Z ]*PRIVATE KEY-----", re.S)


def private_keys(raw: bytes) -> list[rsa.RSAPrivateKey]:
    """RSA private keys from PEM text (one or several blocks) or from the controller's key
    Secrets as YAML (``kubectl get secret -l sealedsecrets.bitnami.com/sealed-secrets-key
    -o yaml``: a List of Secrets whose ``tls.key`` is the PEM)."""
    blocks = _PEM.findall(raw)
    if not blocks:
        try:
            docs = list(yaml.safe_load_all(raw.decode("utf-8")))
        except (UnicodeDecodeError, yaml.YAMLError):
            docs = []
        for secret in _secrets(docs):
            encoded = (secret.get("data") or {}).get("tls.key")
            if isinstance(encoded, str):
                try:
                    blocks.extend(_PEM.findall(base64.b64decode(encoded)))
                except (binascii.Error, ValueError):
                    continue
    keys = []
    for block in blocks:
        try:
            key = serialization.load_pem_private_key(block, password=None)
        except (ValueError, TypeError):
            continue
        if isinstance(key, rsa.RSAPrivateKey):
            keys.append(key)
    if not keys:
        raise ValidationError("--private-key holds no RSA private key (PEM, or the controller's "
                              "key Secrets as YAML)")  # fmt: skip
    return keys


def _secrets(docs: list[Any]) -> Iterator[Mapping[str, Any]]:
    for doc in docs:
        if isinstance(doc, Mapping) and doc.get("kind") == "List":
            yield from _secrets(list(doc.get("items") or []))
        elif isinstance(doc, Mapping) and doc.get("kind") == "Secret":
            yield doc


def _label(sealed: Mapping[str, Any], namespace: str, name: str) -> bytes:
    meta = sealed.get("metadata") or {}
    template = ((sealed.get("spec") or {}).get("template") or {}).get("metadata") or {}
    annotations = {**(meta.get("annotations") or {}), **(template.get("annotations") or {})}
    if str(annotations.get(SCOPE_PREFIX + "cluster-wide", "")).lower() == "true":
        return b""
    if str(annotations.get(SCOPE_PREFIX + "namespace-wide", "")).lower() == "true":
        return namespace.encode()
    return f"{namespace}/{name}".encode()


def open_bitnami(ciphertext: bytes, keys: list[rsa.RSAPrivateKey], label: bytes) -> bytes | None:
    """Bitnami's hybrid decryption; None if no key opens it."""
    if len(ciphertext) < 2:
        return None
    (size,) = struct.unpack(">H", ciphertext[:2])
    wrapped, body = ciphertext[2 : 2 + size], ciphertext[2 + size :]
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(),
                        label=label or None)  # fmt: skip
    for key in keys:
        try:
            session = key.decrypt(wrapped, oaep)
            return AESGCM(session).decrypt(bytes(12), body, None)
        except (ValueError, InvalidTag):
            continue
    return None


def import_sealedsecret(text: str, private_pem: bytes, target: PublicSealingKey) -> str:
    """The ManagedSecret YAML equivalent to the SealedSecret(s) in ``text``."""
    keys = private_keys(private_pem)
    try:
        docs = [d for d in yaml.safe_load_all(text) if isinstance(d, Mapping)]
    except yaml.YAMLError:
        raise ValidationError("the SealedSecret file is not valid YAML") from None
    sealed_secrets = [d for d in docs if d.get("kind") == "SealedSecret"]
    if not sealed_secrets:
        raise ValidationError("the file holds no SealedSecret")
    out = []
    for sealed in sealed_secrets:
        meta = sealed.get("metadata") or {}
        name, namespace = meta.get("name"), meta.get("namespace")
        if not isinstance(name, str) or not isinstance(namespace, str) or not namespace:
            raise ValidationError("a SealedSecret lacks metadata.name or metadata.namespace "
                                  "(Strongroom's blobs are bound to both)")  # fmt: skip
        label = _label(sealed, namespace, name)
        spec = sealed.get("spec") or {}
        items = []
        for key, encoded in sorted((spec.get("encryptedData") or {}).items()):
            try:
                plain = open_bitnami(base64.b64decode(str(encoded)), keys, label)
            except (binascii.Error, ValueError):
                plain = None
            if plain is None:
                raise ValidationError(f"SealedSecret {namespace}/{name} key {key} does not open "
                                      "with the given private key(s); nothing was written")  # fmt: skip
            try:
                value = plain.decode("utf-8")
            except UnicodeDecodeError:
                raise ValidationError(f"SealedSecret {namespace}/{name} key {key} is not UTF-8 "
                                      "text; Strongroom's values are text") from None  # fmt: skip
            items.append({"key": str(key), "sealed": seal(target, Place(namespace, name, str(key)),
                                                          value)})  # fmt: skip
            del plain, value
        if not items:
            raise ValidationError(f"SealedSecret {namespace}/{name} has no encryptedData")
        template = spec.get("template") or {}
        target_spec: dict[str, Any] = {"name": name}
        if template.get("type") and template["type"] != "Opaque":
            target_spec["type"] = str(template["type"])
        labels = (template.get("metadata") or {}).get("labels")
        if isinstance(labels, Mapping) and labels:
            target_spec["labels"] = {str(k): str(v) for k, v in labels.items()}
        out.append({"apiVersion": "strongroom.io/v1alpha1", "kind": "ManagedSecret",
                    "metadata": {"name": name, "namespace": namespace},
                    "spec": {"target": target_spec, "data": items}})  # fmt: skip
    header = ("# Imported from Bitnami SealedSecrets by `strongroom seal import-sealedsecret`;\n"
              f"# sealed to Strongroom sealing key {target.key_id}.\n")  # fmt: skip
    return header + yaml.safe_dump_all(out, sort_keys=False, width=1 << 16)
