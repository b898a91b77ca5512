"""The sealing private key is a stored value like any other: `kek rotate` moves it to a new KEK
with the rest, and once the old KEK is gone the blobs still open, under the new one only."""

from __future__ import annotations

from datetime import timedelta

import pytest

from strongroom import Strongroom
from strongroom.errors import StrongroomError
from strongroom.keyring import keyring_for
from strongroom.rotation import rotate_kek
from strongroom.sealing.blob import Place, SuiteId, open_sealed, seal
from strongroom.sealing.keys import SealingKeys
from tests.integration.test_keyrings import aws, kms_key, settings_for  # noqa: F401 - fixtures

HERE = Place("payments", "db", "password")


def test_kek_rotation_carries_the_sealing_key_to_the_new_kek(sqlite_url: str,
                                                             kms_key: str) -> None:  # noqa: F811
    with Strongroom.open(settings_for(sqlite_url, "local")) as room:
        info, _ = SealingKeys(room, actor="t").ensure(SuiteId.MLKEM768_X25519, timedelta(days=90))
        blob = seal(info.public_key(), HERE, "sealed-before-the-rotation")
        rotate_kek(room, keyring_for(room.settings, "awskms", kms_key))
    # The local master key is gone: only the KMS key can unwrap the sealing key now.
    with Strongroom.open(settings_for(sqlite_url, f"awskms:{kms_key}", master_key=None)) as room:
        assert open_sealed(blob, HERE, SealingKeys(room, actor="t").private) == (
            "sealed-before-the-rotation")
    # Configured with the old local KEK only, the store refuses the sealing key (fail closed).
    with Strongroom.open(settings_for(sqlite_url, "local")) as room, \
            pytest.raises(StrongroomError):  # fmt: skip
        open_sealed(blob, HERE, SealingKeys(room, actor="t").private)
