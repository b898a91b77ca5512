"""A checkpoint is reached only by the store it was taken from, at or beyond it; the rest fails.

The store side is :func:`strongroom.audit.checkpoint_problem`; the ConfigMap side is
:mod:`strongroom.operator.checkpoint`'s format and where it is kept.
"""

from __future__ import annotations

import pytest

from strongroom.audit import (
    AuditEvent,
    ChainHead,
    ChainKey,
    Checkpoint,
    checkpoint_of,
    checkpoint_problem,
    seal_event,
)
from strongroom.config import OperatorTuning
from strongroom.errors import ConfigError
from strongroom.operator.checkpoint import (
    DEFAULT_NAME,
    FORMAT,
    CheckpointRef,
    configmap_body,
    parse_data,
    resolve,
)
from tests.unit.test_audit_chain import KEY, START, chain

OTHER_KEY = ChainKey.from_seed("ak-other", b"\x02" * 32)


def head_at(n: int, key: ChainKey = KEY) -> tuple[ChainHead, list[str]]:
    events = chain(n, key=key)
    last = events[-1]
    return ChainHead(last.seq, last.hash, key.head(last.seq, last.hash)), [e.hash for e in events]


def problem(checkpoint: Checkpoint, n: int, key: ChainKey | None = KEY) -> str | None:
    """The checkpoint against a store of ``n`` events linked by ``key``."""
    head, links = head_at(n, key or KEY)
    link = links[checkpoint.seq - 1] if checkpoint.seq <= len(links) else None
    return checkpoint_problem(checkpoint, head=head, link=link, key=key)


def test_the_checkpoint_of_a_head_is_the_head_mac_the_store_held() -> None:
    head, _ = head_at(5)
    assert checkpoint_of(KEY, head) == Checkpoint(5, head.mac)
    assert str(checkpoint_of(KEY, head)) == f"5:{head.mac}"


def test_a_store_reaches_its_own_checkpoints_earlier_and_current() -> None:
    for seq in (1, 3, 5):
        checkpoint = checkpoint_of(KEY, head_at(seq)[0])
        assert problem(checkpoint, 5) is None
        assert problem(checkpoint, 9) is None  # the same chain, grown since


@pytest.mark.parametrize(
    ("store", "key", "needle"),
    [
        pytest.param(3, KEY, "behind the checkpoint at event 5", id="older-copy-or-truncated"),
        pytest.param(0, KEY, "head is event 0, behind", id="emptied"),
        pytest.param(7, None, "has no audit key", id="keyed-chain-replaced-by-unkeyed"),
        pytest.param(7, OTHER_KEY, "differs from the checkpoint", id="another-store"),
    ],
)  # fmt: skip
def test_a_store_that_does_not_hold_the_checkpointed_chain_fails(
    store: int, key: ChainKey | None, needle: str
) -> None:
    checkpoint = checkpoint_of(KEY, head_at(5)[0])
    if store == 0:
        found = checkpoint_problem(checkpoint, head=ChainHead(0, "0" * 64), link=None, key=KEY)
    else:
        found = problem(checkpoint, store, key)
    assert found is not None and needle in found


def test_an_older_copy_written_past_the_checkpoint_fails() -> None:
    """The same key and first events, then others: at the checkpoint's event, another link."""
    checkpoint = checkpoint_of(KEY, head_at(5)[0])
    fork = chain(3, key=KEY)
    for seq in range(4, 9):
        event = AuditEvent(START, "someone-else", "secret.get", "ok", "ns", f"x{seq}")
        fork.append(seal_event(event, seq=seq, prev_hash=fork[-1].hash, key=KEY))
    last = fork[-1]
    head = ChainHead(last.seq, last.hash, KEY.head(last.seq, last.hash))
    found = checkpoint_problem(checkpoint, head=head, link=fork[4].hash, key=KEY)
    assert found is not None and "at event 5" in found and "differs" in found


@pytest.mark.parametrize(
    "forged",
    [
        pytest.param(lambda cp: Checkpoint(cp.seq + 1000, cp.mac), id="ahead-with-a-real-mac"),
        pytest.param(lambda cp: Checkpoint(cp.seq + 1, "0" * 64), id="ahead-with-any-mac"),
        pytest.param(lambda cp: Checkpoint(cp.seq, "0" * 64), id="right-seq-wrong-mac"),
        pytest.param(lambda cp: Checkpoint(cp.seq - 1, cp.mac), id="earlier-seq-current-mac"),
    ],
)  # fmt: skip
def test_a_forged_checkpoint_only_makes_the_check_fail(forged: object) -> None:
    """Never adopted: a checkpoint ahead of the store or with a MAC the key did not make."""
    checkpoint = forged(checkpoint_of(KEY, head_at(5)[0]))  # type: ignore[operator]
    assert problem(checkpoint, 5) is not None


@pytest.mark.parametrize(
    "text",
    ["", "5", "5:", ":" + "a" * 64, "0:" + "a" * 64, "-1:" + "a" * 64, "x:" + "a" * 64,
     "5:" + "a" * 63, "5:" + "A" * 64, "5:" + "g" * 64],
)  # fmt: skip
def test_a_malformed_expectation_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="checkpoint"):
        Checkpoint.parse(text)


def test_the_configmap_holds_seq_and_mac_and_reads_back() -> None:
    checkpoint = Checkpoint(42, "ab" * 32)
    body = configmap_body(CheckpointRef("sr", "cp"), checkpoint, by="system:serviceaccount:sr:sr")
    assert body["metadata"] == {"name": "cp", "namespace": "sr",
                                "labels": {"app.kubernetes.io/managed-by": "strongroom"}}  # fmt: skip
    data = body["data"]
    assert (data["format"], data["seq"], data["mac"]) == (FORMAT, "42", "ab" * 32)
    assert parse_data(data) == checkpoint
    assert parse_data({}) is None  # an empty ConfigMap holds no checkpoint yet
    assert parse_data(None) is None
    for bad in ({"seq": "42"}, {"seq": "x", "mac": "ab" * 32}, {**data, "format": "v9"}):
        with pytest.raises(ValueError):  # malformed: a mismatch, never "none yet"
            parse_data(bad)


@pytest.mark.parametrize(
    ("spec", "pod_namespace", "expected"),
    [
        pytest.param("", "sr", CheckpointRef("sr", "strongroom-audit-checkpoint"), id="default"),
        pytest.param("", None, None, id="default-outside-a-pod-is-off"),
        pytest.param("off", "sr", None, id="off"),
        pytest.param("cp", "sr", CheckpointRef("sr", "cp"), id="name"),
        pytest.param("ops/cp", None, CheckpointRef("ops", "cp"), id="namespace-and-name"),
    ],
)  # fmt: skip
def test_where_the_checkpoint_is_kept(
    spec: str, pod_namespace: str | None, expected: CheckpointRef | None
) -> None:
    assert resolve(spec, pod_namespace) == expected


@pytest.mark.parametrize("spec", ["cp", "ops/", "Ops/cp", "ops/c_p", "-x/cp"])
def test_a_checkpoint_name_without_a_namespace_or_invalid_is_a_config_error(spec: str) -> None:
    with pytest.raises(ConfigError, match="audit checkpoint"):
        resolve(spec, None)


def test_the_interval_is_at_most_30_s_and_at_least_1_s() -> None:
    defaults = OperatorTuning.from_env({})
    assert defaults.audit_checkpoint_seconds == 30.0
    assert resolve(defaults.audit_checkpoint, "sr") == CheckpointRef("sr", DEFAULT_NAME)
    assert resolve(defaults.audit_checkpoint, None) is None  # outside a pod: off, with a warning
    env = {"STRONGROOM_AUDIT_CHECKPOINT_SECONDS": "1"}
    assert OperatorTuning.from_env(env).audit_checkpoint_seconds == 1.0
    for bad in ("0.5", "31", "0", "x"):
        with pytest.raises(ConfigError, match="STRONGROOM_AUDIT_CHECKPOINT_SECONDS"):
            OperatorTuning.from_env({"STRONGROOM_AUDIT_CHECKPOINT_SECONDS": bad})
