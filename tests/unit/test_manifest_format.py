"""The manifest format: bound to its secret's identity, and to the exact rows of each version."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os

import pytest

from strongroom import IntegrityError
from strongroom.crypto.manifest import (
    BROKEN,
    LiveVersion,
    Manifest,
    manifest_key,
    open_manifest,
    rows_digest,
    sign,
)

SEED = bytes(range(32))
ROWS = [("password", "dk-1", b"s" * 32, b"n" * 12), ("user", "dk-1", b"t" * 32, b"m" * 12)]
MANIFEST = Manifest(
    (
        LiveVersion(3, ("password",), rows_digest(ROWS[:1])),
        LiveVersion(4, ("password", "user"), rows_digest(ROWS)),
    ),
    counter=41,
)


def _key(seed: bytes = SEED) -> hmac.HMAC:
    return hmac.new(manifest_key(seed), digestmod=hashlib.sha256)


def _stored() -> dict[str, object]:
    body, mac = sign(_key(), namespace="ns", name="db", data_key_id="dk-1", manifest=MANIFEST)
    return {"namespace": "ns", "name": "db", "version": 4, "data_key_id": "dk-1",
            "counter": 41, "body": body, "mac": mac}  # fmt: skip


def test_a_signed_manifest_opens_to_what_was_signed() -> None:
    assert open_manifest(_key(), **_stored()) == MANIFEST  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("namespace", "other-ns", id="another-namespace"),
        pytest.param("name", "api", id="another-secret"),
        pytest.param("version", 3, id="version-set-back"),
        pytest.param("data_key_id", "dk-2", id="another-data-key"),
        pytest.param("counter", 40, id="older-counter"),
        pytest.param("body", '[[4,["user"],"00"]]', id="edited-body"),
        pytest.param("mac", "0" * 64, id="replaced-mac"),
    ],
)
def test_any_change_is_one_bare_integrity_error(field: str, value: object) -> None:
    stored = _stored() | {field: value}
    with pytest.raises(IntegrityError) as info:
        open_manifest(_key(), **stored)  # type: ignore[arg-type]
    assert str(info.value) == BROKEN


def test_another_seed_does_not_open_it() -> None:
    with pytest.raises(IntegrityError):
        open_manifest(_key(os.urandom(32)), **_stored())  # type: ignore[arg-type]


def test_the_mac_key_is_not_the_seed_and_is_checked() -> None:
    assert manifest_key(SEED) != SEED
    with pytest.raises(IntegrityError):
        manifest_key(b"short")


def test_the_rows_digest_ignores_order_and_sees_every_field() -> None:
    assert rows_digest(ROWS) == rows_digest(list(reversed(ROWS)))
    assert rows_digest(ROWS) != rows_digest(ROWS[:1])  # a row removed
    for i in range(4):  # key, data key, salt, nonce
        changed = list(ROWS[0])
        changed[i] = "x" if isinstance(changed[i], str) else b"x" * 32
        one = tuple(changed)
        assert rows_digest([one, ROWS[1]]) != rows_digest(ROWS)  # type: ignore[list-item]
    destroyed = ("password", "dk-1", None, None)
    assert rows_digest([destroyed]) != rows_digest(ROWS[:1])


def test_a_manifest_lists_its_live_versions() -> None:
    assert MANIFEST.current.version == 4
    assert MANIFEST.live(3) == MANIFEST.versions[0]
    assert MANIFEST.live(2) is None
    assert dataclasses.replace(MANIFEST, counter=1).body() == MANIFEST.body()  # counter: not in it
