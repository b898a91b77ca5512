"""The one validator (strongroom.validate), case by case."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom import validate
from strongroom.config import Limits
from strongroom.datahmac import HMAC_SECRET
from strongroom.errors import ValidationError

LIMITS = Limits()


def deep(levels: int) -> Any:
    value: Any = "x"
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("namespace", "needle"),
    [
        pytest.param("team.a", "no '.'", id="dot"),
        pytest.param("Team", "lowercase", id="uppercase"),
        pytest.param("a" * 64, "limit is 63", id="64-characters"),
        pytest.param("-a", "starting and ending", id="leading-dash"),
        pytest.param("", "must not be empty", id="empty"),
        pytest.param("ns\n", "'ns\\n'", id="newline-shown-escaped"),
        pytest.param("strongroom.internal", "reserved", id="internal-as-a-string"),
    ],
)
def test_a_namespace_to_write_to_is_a_kubernetes_namespace(namespace: str, needle: str) -> None:
    with pytest.raises(ValidationError, match="namespace") as info:
        validate.namespace(namespace, limits=LIMITS, write=True)
    assert needle in str(info.value)


def test_the_internal_namespace_is_open_only_to_its_own_object() -> None:
    assert validate.namespace(validate.INTERNAL, limits=LIMITS, write=True) == "strongroom.internal"
    assert HMAC_SECRET[0] is validate.INTERNAL
    for spelled in ("strongroom.internal", str(validate.INTERNAL), "strongroom.internal"[:]):
        for write in (True, False):
            with pytest.raises(ValidationError, match="reserved"):
                validate.namespace(spelled, limits=LIMITS, write=write)
    with pytest.raises(ValidationError, match=re.escape("no '.'")):  # the type alone is not a pass
        validate.namespace(validate.InternalNamespace("other.ns"), limits=LIMITS, write=True)


def test_reads_still_reach_what_an_earlier_release_stored_under_a_dotted_namespace() -> None:
    assert validate.namespace("team.a", limits=LIMITS, write=False) == "team.a"
    with pytest.raises(ValidationError):
        validate.namespace("team/a", limits=LIMITS, write=False)


@pytest.mark.parametrize(
    ("key", "write"),
    [
        pytest.param("..data", True, id="dotdot-data"),
        pytest.param("..2024_01_01", True, id="dotdot-timestamp"),
        pytest.param("..", False, id="dotdot"),
        pytest.param(".", False, id="dot"),
        pytest.param("a b", False, id="space"),
        pytest.param("k\n", False, id="newline"),
        pytest.param("k" * 254, False, id="254-characters"),
        pytest.param("", False, id="empty"),
        pytest.param("clé", False, id="non-ascii"),
    ],
)
def test_keys_follow_the_secret_key_rule(key: str, write: bool) -> None:
    with pytest.raises(ValidationError):
        validate.key(key, write=write)


@pytest.mark.parametrize("key", [".dotfile", "a..b", "tls.crt", "A_b-9", "k" * 253])
def test_keys_kubernetes_accepts_are_accepted(key: str) -> None:
    assert validate.key(key, write=True) == key


def test_a_key_an_earlier_release_stored_can_still_be_read_and_removed() -> None:
    assert validate.key("..data", write=False) == "..data"


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        pytest.param("\ud800", "lone surrogate", id="lone-surrogate"),
        pytest.param({"a": ["ok", "\udcff"]}, "lone surrogate", id="nested-surrogate"),
        pytest.param({"\ud800": 1}, "lone surrogate", id="surrogate-in-an-object-key"),
        pytest.param(deep(65), "more than 64 levels", id="65-levels"),
        pytest.param(deep(100_000), "more than 64 levels", id="100000-levels"),
        pytest.param(None, "null", id="null"),
        pytest.param(float("nan"), "finite", id="nan"),
        pytest.param("x" * (1 << 20), "limit is", id="over-1-MiB"),
    ],
)
def test_a_value_that_cannot_be_stored_is_a_validation_error(value: Any, needle: str) -> None:
    with pytest.raises(ValidationError, match="value of key 'k'") as info:
        validate.write("ns", "s", {"k": value}, (), limits=LIMITS)
    assert needle in str(info.value)


def test_a_self_containing_value_is_too_deep_not_a_crash() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValidationError, match="levels"):
        validate.write("ns", "s", {"k": loop}, (), limits=LIMITS)


def test_64_levels_are_stored() -> None:
    assert validate.write("ns", "s", {"k": deep(64)}, (), limits=LIMITS)["k"].startswith(b"[[")


def test_a_secret_over_one_mebibyte_in_total_is_refused() -> None:
    half = "x" * (1 << 19)
    with pytest.raises(ValidationError, match="the secret would hold"):
        validate.write("ns", "s", {"a": half, "b": half}, (), limits=LIMITS)


def test_a_description_with_control_characters_is_refused() -> None:
    with pytest.raises(ValidationError, match="control characters"):
        validate.write("ns", "s", {"k": "v"}, (), limits=LIMITS, description_text="a\nb")


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("ns/s\n   999 forged", "ns/s\\n   999 forged"),
        ("\x1b[2J", "\\x1b[2J"),
        ("\u202eevil", "\\u202eevil"),
        ("\x9b31m", "\\x9b31m"),
        ("lone \ud800", "lone \\ud800"),
        ("café — ok", "café — ok"),
    ],
)
def test_printable_escapes_what_would_forge_a_line_or_drive_a_terminal(
    text: str, shown: str
) -> None:
    assert validate.printable(text) == shown


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_text_prints_as_one_line_that_encodes(text: str) -> None:
    shown = validate.printable(text)
    assert len(shown.splitlines()) <= 1
    shown.encode("utf-8")
    line = validate.printable_json(json.dumps({"t": text}, ensure_ascii=False))
    assert json.loads(line) == {"t": text}
    assert len(line.splitlines()) == 1


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), st.integers(), st.none(), st.binary(max_size=10)))
def test_any_name_is_accepted_or_a_validation_error(text: object) -> None:
    for check in (
        lambda: validate.reference(text, text, limits=LIMITS, write=True),
        lambda: validate.reference(text, "s", limits=LIMITS, write=False),
        lambda: validate.key(text, write=True),
    ):
        try:
            check()
        except ValidationError as exc:
            assert "\n" not in str(exc)
