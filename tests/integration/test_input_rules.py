"""Input the store cannot hold is refused by one validator, audited, and never half-written;
Strongroom's own records stay reachable to Strongroom alone. SQLite and PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from unittest import mock

import pytest

from strongroom import Strongroom, ValidationError
from strongroom.datahmac import HMAC_SECRET, load_hmac_key


def deep(levels: int) -> Any:
    value: Any = "x"
    for _ in range(levels):
        value = [value]
    return value


def last_event(room: Strongroom) -> tuple[str, str, str, str, str]:
    event = room.audit_tail(1)[0]
    return event.action, event.outcome, event.namespace, event.name, event.detail


@pytest.mark.parametrize(
    ("namespace", "data", "needle"),
    [
        pytest.param("ns", {"pw": "\ud800"}, "lone surrogate", id="lone-surrogate"),
        pytest.param("ns", {"k": deep(65)}, "more than 64 levels", id="65-levels"),
        pytest.param("ns", {"k": deep(5000)}, "more than 64 levels", id="5000-levels"),
        pytest.param("ns", {"..data": "x"}, "'..data' is refused", id="dotdot-data-key"),
        pytest.param("team.a", {"k": "v"}, "no '.'", id="namespace-with-a-dot"),
        pytest.param("strongroom.internal", {"key": "00"}, "reserved", id="internal-namespace"),
        pytest.param("ns", {"a": "x" * 600_000, "b": "y" * 600_000}, "the secret would hold",
                     id="over-one-mebibyte-in-total"),
        pytest.param("ns", {"bad key": "v"}, "key", id="space-in-key"),
    ],
)  # fmt: skip
def test_a_refused_set_is_audited_and_writes_nothing(
    room: Strongroom, namespace: str, data: dict[str, Any], needle: str
) -> None:
    """Before: these failed before the audited transaction (no event), or crashed
    (UnicodeEncodeError, RecursionError), or were stored (``..data``, a dotted namespace)."""
    with pytest.raises(ValidationError, match=re.escape(needle)):
        room.set(namespace, "s", data)
    action, outcome, ns, name, detail = last_event(room)
    assert (action, outcome, ns, name) == ("secret.set", "invalid", namespace, "s")
    assert needle in detail
    assert room.list() == []
    assert room.audit_verify().ok


def test_the_total_counts_the_keys_a_new_version_keeps(room: Strongroom) -> None:
    room.set("ns", "s", {"a": "x" * 600_000})
    with pytest.raises(ValidationError, match="the secret would hold"):
        room.set("ns", "s", {"b": "y" * 600_000})
    assert last_event(room)[:2] == ("secret.set", "invalid")
    assert room.get("ns", "s").version == 1
    room.set("ns", "s", {"b": "y" * 600_000}, replace=True)  # without a, it fits


@pytest.mark.parametrize(
    ("call", "action"),
    [
        pytest.param(lambda r: r.get("team.a\n", "s"), "secret.get", id="get"),
        pytest.param(lambda r: r.get("ns", "s", "k\n"), "secret.get", id="get-key"),
        pytest.param(lambda r: r.verify("ns", "S", "k", "v"), "secret.verify", id="verify"),
        pytest.param(lambda r: r.delete("ns", "s\x1b[2J"), "secret.delete", id="delete"),
        pytest.param(lambda r: r.list("NS"), "secret.list", id="list"),
        pytest.param(lambda r: r.resolve("ns", "a_b", lambda _: {}), "operator.read",
                     id="resolve"),
    ],
)  # fmt: skip
def test_every_operation_validates_and_audits_the_refusal(
    room: Strongroom, call: Callable[[Strongroom], object], action: str
) -> None:
    with pytest.raises(ValidationError):
        call(room)
    event = room.audit_tail(1)[0]
    assert (event.action, event.outcome) == (action, "invalid")
    # What was refused is recorded escaped: it cannot forge a line where the log is printed.
    assert not any(c in f for f in (event.namespace, event.name, event.key) for c in "\n\x1b")


def test_a_refused_name_that_cannot_be_stored_is_still_audited(room: Strongroom) -> None:
    """A lone surrogate or a NUL cannot go into a text column: the event records it escaped."""
    with pytest.raises(ValidationError):
        room.set("n\x00s", "s\udcff", {"k": "v"})
    event = room.audit_tail(1)[0]
    assert (event.namespace, event.name, event.outcome) == ("n\\x00s", "s\\udcff", "invalid")


def test_strongroom_writes_its_own_records_where_no_caller_can(room: Strongroom) -> None:
    key = load_hmac_key(room, "operator@test")  # writes strongroom.internal/sync-hmac-key
    namespace, name = HMAC_SECRET
    assert room.get(namespace, name, "key").data["key"] == key.hex()
    for spelled in ("strongroom.internal", "".join(["strongroom", ".internal"])):
        with pytest.raises(ValidationError, match="reserved"):
            room.set(spelled, name, {"key": "00" * 32})
        with pytest.raises(ValidationError, match="reserved"):
            room.get(spelled, name)
        with pytest.raises(ValidationError, match="reserved"):
            room.delete(spelled, name)
    assert room.get(namespace, name, "key").data["key"] == key.hex()


def test_what_an_earlier_release_stored_can_still_be_read_and_removed(room: Strongroom) -> None:
    """Dotted namespaces and ``..`` keys were accepted before; they stay readable and removable,
    and nothing new is written there."""
    from strongroom import validate

    with (
        mock.patch.object(validate, "_LABEL_RE", validate._SUBDOMAIN_RE),
        mock.patch.object(validate, "key", lambda text, **_: text),
    ):  # the earlier release's rules
        room.set("team.a", "s", {"k": "v"})
        room.set("ns", "s", {"..data": "old", "k": "v"})
    assert room.get("team.a", "s").data == {"k": "v"}
    with pytest.raises(ValidationError, match=re.escape("no '.'")):
        room.set("team.a", "s", {"k": "w"})
    assert room.delete("team.a", "s") == 1
    assert room.get("ns", "s", "..data").data == {"..data": "old"}
    with pytest.raises(ValidationError, match=re.escape("'..data' is refused")):
        room.set("ns", "s", {"..data": "new"})
    room.set("ns", "s", {}, remove=["..data"])
    assert room.get("ns", "s").data == {"k": "v"}
