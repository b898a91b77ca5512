"""Sealed values: a blob opens only with the store's key, only where it was sealed for, and
anything else (moved, tampered, truncated, random text) is one bare SealedInvalid, never a
crash. Both suites: ML-KEM-768+X25519 (post-quantum hybrid) and X25519."""

from __future__ import annotations

import base64
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from strongroom import Strongroom
from strongroom.errors import NotFound, ValidationError
from strongroom.sealing import blob
from strongroom.sealing.blob import (
    Header,
    Place,
    PublicSealingKey,
    SealedInvalid,
    SuiteId,
    digest,
    generate,
    header,
    open_sealed,
    seal,
)
from strongroom.sealing.keys import (
    SEALING_KEYS,
    SealingKeys,
    Use,
    public_document,
    read_public_document,
)
from tests.conftest import make_settings

HERE = Place("payments", "db", "password")
KEY_ID = "00112233aabbccdd"
SUITES = [pytest.param(SuiteId.MLKEM768_X25519, id="mlkem768-x25519"),
          pytest.param(SuiteId.X25519, id="x25519")]  # fmt: skip
PAIRS = {suite: generate(suite) for suite in SuiteId}


def sealed(suite: SuiteId, value: str = "hunter2", where: Place = HERE, key_id: str = KEY_ID) -> str:
    return seal(PublicSealingKey(key_id, suite, PAIRS[suite][1]), where, value)


def opener(suite: SuiteId, key_id: str = KEY_ID):  # type: ignore[no-untyped-def]
    def private(head: Header) -> tuple[SuiteId, bytes] | None:
        return (suite, PAIRS[suite][0]) if head.key_id == key_id else None

    return private


@pytest.mark.parametrize("suite", SUITES)
def test_a_sealed_value_opens_where_it_was_sealed_for(suite: SuiteId) -> None:
    text = sealed(suite, "s3cr3t-ünïcode")
    assert text.startswith("srs1.")
    assert "s3cr3t" not in text
    assert open_sealed(text, HERE, opener(suite)) == "s3cr3t-ünïcode"
    assert header(text) == Header(suite, KEY_ID)


@pytest.mark.parametrize("suite", SUITES)
@pytest.mark.parametrize("moved", [
    pytest.param(Place("tenant-b", "db", "password"), id="other-namespace"),
    pytest.param(Place("payments", "db2", "password"), id="other-name"),
    pytest.param(Place("payments", "db", "username"), id="other-key"),
    pytest.param(Place("payments/db", "", "password"), id="fields-run-together"),
])  # fmt: skip
def test_a_blob_moved_to_another_place_does_not_open(suite: SuiteId, moved: Place) -> None:
    with pytest.raises(SealedInvalid) as caught:
        open_sealed(sealed(suite), moved, opener(suite))
    assert str(caught.value) == "sealed value does not open here"


@pytest.mark.parametrize("suite", SUITES)
def test_every_flipped_byte_is_refused(suite: SuiteId) -> None:
    text = sealed(suite)
    raw = bytearray(base64.urlsafe_b64decode(text[5:] + "=" * (-len(text[5:]) % 4)))
    step = 1 if suite is SuiteId.X25519 else 37  # the hybrid blob is 1,180 bytes: sample
    for index in range(0, len(raw), step):
        flipped = bytearray(raw)
        flipped[index] ^= 0x01
        forged = "srs1." + base64.urlsafe_b64encode(bytes(flipped)).rstrip(b"=").decode()
        with pytest.raises(SealedInvalid):
            open_sealed(forged, HERE, opener(suite))


@pytest.mark.parametrize("suite", SUITES)
def test_a_key_id_rewritten_to_another_key_does_not_open(suite: SuiteId) -> None:
    """The header's key id is bound in info: pointing the blob at another key fails."""
    text = sealed(suite)
    raw = bytearray(base64.urlsafe_b64decode(text[5:] + "=" * (-len(text[5:]) % 4)))
    other = "ffffffffffffffff"
    raw[5:13] = bytes.fromhex(other)
    forged = "srs1." + base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    with pytest.raises(SealedInvalid):
        open_sealed(forged, HERE, opener(suite, key_id=other))


def test_a_blob_claiming_the_other_suite_does_not_open() -> None:
    text = sealed(SuiteId.X25519)
    with pytest.raises(SealedInvalid):  # the store's key for that id is a hybrid one
        open_sealed(text, HERE, lambda _h: (SuiteId.MLKEM768_X25519, PAIRS[SuiteId.MLKEM768_X25519][0]))


def test_an_unknown_or_pruned_key_is_the_same_bare_error() -> None:
    with pytest.raises(SealedInvalid) as caught:
        open_sealed(sealed(SuiteId.X25519), HERE, lambda _h: None)
    assert str(caught.value) == "sealed value does not open here"


def test_the_hybrid_suite_is_the_default_and_blobs_have_the_documented_size() -> None:
    assert blob.DEFAULT_SUITE is SuiteId.MLKEM768_X25519
    for suite, enc in ((SuiteId.MLKEM768_X25519, 1120), (SuiteId.X25519, 32)):
        raw_len = blob.HEADER_BYTES + enc + 32 + blob.TAG_BYTES
        text = sealed(suite, "x" * 32)
        assert len(base64.urlsafe_b64decode(text[5:] + "=" * (-len(text[5:]) % 4))) == raw_len


def test_sealing_twice_gives_unrelated_blobs_with_their_own_digest() -> None:
    a, b = sealed(SuiteId.X25519), sealed(SuiteId.X25519)
    assert a != b
    assert digest(a) != digest(b)
    assert digest(a) == digest(a)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(
    st.text(max_size=300),
    st.binary(max_size=1400).map(lambda b: "srs1." + base64.urlsafe_b64encode(b).decode()),
    st.binary(max_size=1400).map(
        lambda b: "srs1." + base64.urlsafe_b64encode(b"SRS\x01\x02" + b).rstrip(b"=").decode()),
    st.binary(max_size=1400).map(
        lambda b: "srs1." + base64.urlsafe_b64encode(b"SRS\x01\x01" + b).rstrip(b"=").decode()),
))  # fmt: skip
def test_arbitrary_text_never_crashes_the_opener(text: str) -> None:
    for suite in SuiteId:
        with pytest.raises(SealedInvalid):
            open_sealed(text, HERE, lambda _h, s=suite: (s, PAIRS[s][0]))


@settings(max_examples=60, deadline=None)
@given(index=st.integers(min_value=0), bit=st.integers(min_value=0, max_value=7),
       cut=st.integers(min_value=0, max_value=40))  # fmt: skip
def test_mutated_real_blobs_never_open_and_never_crash(index: int, bit: int, cut: int) -> None:
    text = sealed(SuiteId.X25519)
    raw = bytearray(base64.urlsafe_b64decode(text[5:] + "=" * (-len(text[5:]) % 4)))
    raw[index % len(raw)] ^= 1 << bit
    mutated = bytes(raw[: len(raw) - cut])
    forged = "srs1." + base64.urlsafe_b64encode(mutated).rstrip(b"=").decode()
    with pytest.raises(SealedInvalid):
        open_sealed(forged, HERE, opener(SuiteId.X25519))


# -- keys in the store -------------------------------------------------------------------------

@pytest.fixture
def store(sqlite_url: str) -> Iterator[Strongroom]:
    with Strongroom.open(make_settings(sqlite_url)) as opened:
        yield opened


@pytest.mark.parametrize("suite", SUITES)
def test_the_first_key_is_made_once_and_opens_what_its_public_key_sealed(
    store: Strongroom, suite: SuiteId
) -> None:
    keys = SealingKeys(store, actor="tester")
    first, made = keys.ensure(suite, timedelta(days=90))
    again, made_again = keys.ensure(suite, timedelta(days=90))
    assert made and not made_again and again == first
    text = seal(first.public_key(), HERE, "from-git")
    fresh = SealingKeys(store, actor="tester")  # nothing cached: read from the store
    assert open_sealed(text, HERE, fresh.private) == "from-git"


def test_a_key_older_than_the_maximum_age_is_rotated(store: Strongroom) -> None:
    keys = SealingKeys(store, actor="tester")
    first, _ = keys.ensure(SuiteId.X25519, timedelta(days=90))
    second, made = keys.ensure(SuiteId.X25519, timedelta(0))
    assert made and second.key_id != first.key_id
    assert [k.key_id for k in keys.list()] == [first.key_id, second.key_id]
    assert keys.active() == second


def test_the_private_keys_are_encrypted_in_the_database_file(store: Strongroom,
                                                              sqlite_url: str) -> None:  # fmt: skip
    keys = SealingKeys(store, actor="tester")
    info, _ = keys.ensure(SuiteId.MLKEM768_X25519, timedelta(days=90))
    private = keys.private(Header(info.suite, info.key_id))
    assert private is not None
    path = Path(sqlite_url.removeprefix("sqlite:///"))
    dump = b"".join(
        repr(row).encode() for row in sqlite3.connect(path).execute(
            "SELECT * FROM secret_versions"))  # fmt: skip
    raw = path.read_bytes() + dump
    for fragment in (private[1], base64.b64encode(private[1]), private[1].hex().encode()):
        assert fragment[:24] not in raw
    actions = {e.action for e in store.audit_tail(50)}
    assert "secret.set" in actions and "sealing.read" in actions


def test_prune_refuses_the_active_key_a_used_key_and_unknown_ids(store: Strongroom) -> None:
    keys = SealingKeys(store, actor="tester")
    old = keys.rotate(SuiteId.X25519)
    new = keys.rotate(SuiteId.X25519)
    keys.record("payments", "db", {"password": Use("payments", "db", "password", old.key_id,
                                                   "d" * 64)})  # fmt: skip
    assert [u.key for u in keys.usage()[old.key_id]] == ["password"]
    with pytest.raises(ValidationError, match="active key"):
        keys.prune([new.key_id])
    with pytest.raises(ValidationError, match="still in use"):
        keys.prune([old.key_id])
    with pytest.raises(NotFound):
        keys.prune(["0000000000000000"])
    assert [k.key_id for k in keys.list()] == [old.key_id, new.key_id]  # nothing changed


def test_a_pruned_key_is_gone_from_every_version_and_its_blobs_no_longer_open(
    store: Strongroom,
) -> None:
    keys = SealingKeys(store, actor="tester")
    old = keys.rotate(SuiteId.X25519)
    text = seal(old.public_key(), HERE, "v")
    assert open_sealed(text, HERE, keys.private) == "v"
    keys.rotate(SuiteId.X25519)
    assert keys.prune([old.key_id]) == [old.key_id]
    assert old.key_id not in [k.key_id for k in keys.list()]
    with pytest.raises(SealedInvalid):
        open_sealed(text, HERE, keys.private)
    namespace, name = SEALING_KEYS
    earlier = store.history(namespace, name)[1:]  # newest first: all but the current one
    assert earlier and {state for _v, state, *_ in earlier} == {"destroyed"}
    for version, *_ in earlier:
        with pytest.raises(NotFound):
            store.get(namespace, name, version=version, actor="tester")


def test_the_published_document_names_the_active_key_and_reads_back(store: Strongroom) -> None:
    keys = SealingKeys(store, actor="tester")
    keys.rotate(SuiteId.MLKEM768_X25519)
    newest = keys.rotate(SuiteId.X25519)
    doc = public_document(keys.list())
    assert doc["active"] == newest.key_id
    assert read_public_document(doc) == newest.public_key()
    assert "private" not in "".join(doc.values())
    with pytest.raises(ValueError, match="no sealing key"):
        read_public_document(doc, "0123456789abcdef")
    broken = {**doc, f"{newest.key_id}.json": '{"keyId": "x"}'}
    with pytest.raises(ValueError, match="malformed"):
        read_public_document(broken)


def test_created_times_are_recorded(store: Strongroom) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    info = SealingKeys(store, actor="tester").rotate(SuiteId.X25519)
    listed = SealingKeys(store, actor="tester").list()[0]
    assert listed.created == info.created >= before


# -- the spec and the status ------------------------------------------------------------------

@pytest.mark.parametrize("item", [
    pytest.param({"key": "k", "sealed": "srs1.AA", "generate": {}}, id="sealed-and-generate"),
    pytest.param({"key": "k", "sealed": "srs1.AA", "fromSecret": {"name": "s", "key": "k"}},
                 id="sealed-and-fromSecret"),
    pytest.param({"key": "k", "sealed": {"not": "text"}}, id="sealed-not-a-string"),
])  # fmt: skip
def test_the_operator_refuses_a_sealed_item_with_another_source_or_no_text(
    item: dict[str, object],
) -> None:
    from strongroom.policy import SpecRefusedError
    from strongroom.spec import Spec

    with pytest.raises(SpecRefusedError, match=r"data\[k\]"):
        Spec.parse("db", {"data": [item]})
    assert Spec.parse("db", {"data": [{"key": "k", "sealed": "srs1.AA"}]}).data[0].sealed == "srs1.AA"


def test_sealed_key_old_is_a_condition_of_its_own_only_where_blobs_are() -> None:
    from strongroom.sources.sealed import SealedOutcome
    from strongroom.sync import Result, status_patch

    body = {"metadata": {"name": "db", "namespace": "payments", "generation": 3}, "spec": {}}
    plain = status_patch(body, Result(True, "Synced", "ok", version=1))
    assert plain is not None and [c["type"] for c in plain["conditions"]] == ["Ready", "Synced"]
    old = SealedOutcome(status={"pw": {"keyId": KEY_ID, "digest": "d"}}, old=["pw"])
    patch = status_patch(body, Result(True, "Synced", "ok", version=1, sealed=old))
    assert patch is not None and patch["sealed"] == {"pw": {"keyId": KEY_ID, "digest": "d"}}
    cond = {c["type"]: c for c in patch["conditions"]}["SealedKeyOld"]
    assert (cond["status"], cond["reason"]) == ("True", "SealedKeyOld")
    assert "data[pw].sealed" in cond["message"] and "reseal" in cond["message"]
    # A pass that did not look at the blobs (a failure elsewhere) keeps the condition as it was.
    kept = status_patch({**body, "status": patch}, Result(False, "StoreUnavailable", "down"))
    assert kept is not None
    assert {c["type"]: c for c in kept["conditions"]}["SealedKeyOld"] == cond
    current = SealedOutcome(status={"pw": {"keyId": KEY_ID, "digest": "e"}})
    fresh = status_patch({**body, "status": patch}, Result(True, "Synced", "ok", version=1,
                                                           sealed=current))  # fmt: skip
    assert fresh is not None
    cond = {c["type"]: c for c in fresh["conditions"]}["SealedKeyOld"]
    assert (cond["status"], cond["reason"]) == ("False", "SealedKeyCurrent")


def test_an_opened_value_is_never_in_the_outcomes_repr() -> None:
    from strongroom.sources.sealed import SealedOutcome

    outcome = SealedOutcome(opened_values={"pw": "CANARY-repr"}, values={"pw": "CANARY-repr"})
    assert "CANARY-repr" not in repr(outcome)


def test_a_malformed_key_record_is_an_integrity_error_without_its_content(store: Strongroom) -> None:
    from strongroom.errors import IntegrityError

    keys = SealingKeys(store, actor="tester")
    info = keys.rotate(SuiteId.X25519)
    namespace, name = SEALING_KEYS
    store.set(namespace, name, {"0123456789abcdef": {"suite": "x25519", "private": "c2VjcmV0"}})
    with pytest.raises(IntegrityError) as caught:
        keys.private(Header(SuiteId.X25519, info.key_id))
    assert str(caught.value) == "sealing key 0123456789abcdef in the store is malformed"
