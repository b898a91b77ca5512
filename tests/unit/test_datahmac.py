"""The data HMAC reveals nothing across namespaces or objects, and its key is out of reach."""

from __future__ import annotations

import re

from strongroom.datahmac import HMAC_SECRET, data_hmac

KEY = bytes(range(32))
DATA = {"password": "aHVudGVyMg=="}


def mac(namespace: str = "payments", name: str = "db", uid: str = "u1") -> str:
    return data_hmac(KEY, namespace=namespace, name=name, uid=uid, secret_type="Opaque", data=DATA)


def test_equal_values_in_two_namespaces_give_unrelated_hmacs() -> None:
    assert mac("payments") != mac("tenant-b")


def test_the_hmac_binds_the_managedsecrets_name_and_uid() -> None:
    assert mac(name="db") != mac(name="db2")
    assert mac(uid="u1") != mac(uid="u2")
    assert mac() == mac()  # deterministic, so unchanged data is recognised


def test_the_hmac_key_lives_where_no_kubernetes_namespace_can() -> None:
    namespace, _ = HMAC_SECRET
    # Namespaces are RFC 1123 labels: no dots. A ManagedSecret can only live in one.
    assert not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", namespace)
