"""The envelope format: what a stored value's ciphertext is bound to."""

from __future__ import annotations

import dataclasses

import pytest

from strongroom.crypto import Identity, Sealed, derive_dek, new_seed, open_sealed, seal
from strongroom.errors import IntegrityError

SEED = bytes(range(32))
WHERE = Identity("team-a", "db", "password", 3, "dk-1")


def test_sealed_value_opens_with_the_same_seed_and_identity() -> None:
    sealed = seal(SEED, WHERE, b'"hunter2"')
    assert open_sealed(SEED, WHERE, sealed) == b'"hunter2"'


def test_ciphertext_does_not_contain_the_plaintext() -> None:
    sealed = seal(SEED, WHERE, b"canary-plaintext-123")
    assert b"canary-plaintext-123" not in sealed.ciphertext


def test_each_version_gets_its_own_salt_nonce_and_key() -> None:
    a = seal(SEED, WHERE, b"same")
    b = seal(SEED, WHERE, b"same")
    assert a.salt != b.salt
    assert a.nonce != b.nonce
    assert a.ciphertext != b.ciphertext
    assert derive_dek(SEED, a.salt) != derive_dek(SEED, b.salt)


@pytest.mark.parametrize(
    "moved",
    [
        pytest.param({"namespace": "team-b"}, id="other-namespace"),
        pytest.param({"name": "db2"}, id="other-name"),
        pytest.param({"key": "username"}, id="other-key"),
        pytest.param({"version": 4}, id="other-version"),
        pytest.param({"data_key_id": "dk-2"}, id="other-data-key"),
    ],
)
def test_a_value_moved_to_another_identity_fails_to_decrypt(moved: dict[str, object]) -> None:
    sealed = seal(SEED, WHERE, b'"hunter2"')
    with pytest.raises(IntegrityError):
        open_sealed(SEED, dataclasses.replace(WHERE, **moved), sealed)  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["salt", "nonce", "ciphertext"])
def test_a_flipped_bit_anywhere_is_an_integrity_error(field: str) -> None:
    sealed = seal(SEED, WHERE, b'"hunter2"')
    raw = bytearray(getattr(sealed, field))
    raw[len(raw) // 2] ^= 0x01
    with pytest.raises(IntegrityError) as info:
        open_sealed(SEED, WHERE, dataclasses.replace(sealed, **{field: bytes(raw)}))
    assert "hunter2" not in str(info.value)


def test_the_wrong_seed_is_an_integrity_error() -> None:
    sealed = seal(SEED, WHERE, b"x")
    with pytest.raises(IntegrityError):
        open_sealed(new_seed(), WHERE, sealed)


@pytest.mark.parametrize(
    "sealed",
    [
        pytest.param(Sealed(b"", b"\0" * 12, b"\0" * 32), id="empty-salt"),
        pytest.param(Sealed(b"\0" * 32, b"\0" * 8, b"\0" * 32), id="short-nonce"),
        pytest.param(Sealed(b"\0" * 32, b"\0" * 12, b"\0" * 5), id="truncated-tag"),
        pytest.param(
            Sealed(b"\0" * 32, b"\0" * 12, b"\0" * 32, format_version=9), id="future-format"
        ),
    ],
)
def test_malformed_stored_blobs_are_rejected_cleanly(sealed: Sealed) -> None:
    with pytest.raises(IntegrityError, match="malformed"):
        open_sealed(SEED, WHERE, sealed)


def test_aad_fields_cannot_be_shifted_between_each_other() -> None:
    # Length prefixes: ("a-b", "c") and ("a", "b-c") must not produce the same AAD.
    one = Identity("a-b", "c", "k", 1, "dk")
    two = Identity("a", "b-c", "k", 1, "dk")
    assert one.aad() != two.aad()
