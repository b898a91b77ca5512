"""The Secret watch tells an edit that matters from the echo of the operator's own write: data,
type, the spec's labels and annotations, Strongroom's own marks and the ownerReference all
count; what someone else adds does not (a repair there would be a write for nothing)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from strongroom.datahmac import data_hmac
from strongroom.operator.secretwatch import Shape, owner_candidates, unchanged
from strongroom.targetmeta import Wanted, owner_reference

KEY = bytes(range(32))
NS, NAME, UID = "payments", "db", "2b7e-uid"
DATA = {"password": "aHVudGVyMg=="}
SPEC = {"target": {"labels": {"app": "web"}, "annotations": {"team": "payments"}}}
WRITTEN = data_hmac(KEY, namespace=NS, name=NAME, uid=UID, secret_type="Opaque", data=DATA)


def as_written() -> dict[str, Any]:
    """The Secret as the operator writes it for SPEC (creationPolicy Owner)."""
    wanted = Wanted.of(NAME, UID, WRITTEN, labels={"app": "web"},
                       annotations={"team": "payments"}, owner=True)  # fmt: skip
    return {"type": "Opaque", "data": dict(DATA),
            "metadata": {"name": NAME, "namespace": NS, "labels": dict(wanted.labels),
                         "annotations": dict(wanted.annotations),
                         "ownerReferences": [owner_reference(NAME, UID)]}}  # fmt: skip


def judged(secret: dict[str, Any], spec: dict[str, Any] = SPEC) -> bool:
    return unchanged(secret, hmac_key=KEY, namespace=NS, name=NAME, uid=UID,
                     written_hmac=WRITTEN, shape=Shape.of(spec))  # fmt: skip


def _set(path: tuple[str, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(secret: dict[str, Any]) -> None:
        node = secret
        for part in path[:-1]:
            node = node[part]
        if value is None:
            node.pop(path[-1])
        else:
            node[path[-1]] = value

    return edit


def test_the_operators_own_write_is_recognised() -> None:
    assert judged(as_written())


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(_set(("data", "password"), "d3Jvbmc="), id="data-edited"),
        pytest.param(_set(("data", "extra"), "eA=="), id="data-key-added"),
        pytest.param(_set(("type",), "kubernetes.io/basic-auth"), id="type-changed"),
        pytest.param(_set(("metadata", "labels", "app"), "evil"), id="spec-label-edited"),
        pytest.param(_set(("metadata", "labels", "app"), None), id="spec-label-removed"),
        pytest.param(_set(("metadata", "annotations", "team"), None), id="spec-annotation-removed"),
        pytest.param(_set(("metadata", "labels", "strongroom.io/managed-secret"), None),
                     id="owner-label-removed"),
        pytest.param(_set(("metadata", "annotations", "strongroom.io/owner-uid"), "other"),
                     id="owner-uid-changed"),
        pytest.param(_set(("metadata", "annotations", "strongroom.io/data-hmac"), "0" * 64),
                     id="hmac-annotation-changed"),
        pytest.param(_set(("metadata", "ownerReferences"), None), id="owner-reference-removed"),
    ],
)
def test_an_edit_of_anything_the_spec_sets_needs_a_repair(
    edit: Callable[[dict[str, Any]], None],
) -> None:
    secret = copy.deepcopy(as_written())
    edit(secret)
    assert not judged(secret)


def test_what_someone_else_adds_is_theirs_and_needs_no_write() -> None:
    secret = as_written()
    secret["metadata"]["labels"]["backup"] = "nightly"
    secret["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] = "{}"
    assert judged(secret)


def test_an_orphan_secret_needs_no_owner_reference_and_a_merged_one_is_always_compared() -> None:
    secret = as_written()
    del secret["metadata"]["ownerReferences"]
    orphan = {"target": {**SPEC["target"], "creationPolicy": "Orphan"}}
    assert judged(secret, orphan)
    merged = {"target": {**SPEC["target"], "creationPolicy": "Merge"}}
    assert not judged(as_written(), merged)  # others' keys are there: the reconcile decides


def test_shapes_are_shared_between_objects_whose_specs_set_the_same() -> None:
    assert Shape.of({"target": {"labels": {"a": "1", "b": "2"}}}) is Shape.of(
        {"target": {"labels": {"b": "2", "a": "1"}}})  # fmt: skip
    assert Shape.of({}) is Shape.of({"target": {"creationPolicy": "Owner"}})


def test_a_secret_whose_owner_label_was_removed_is_still_found() -> None:
    secret = as_written()
    del secret["metadata"]["labels"]["strongroom.io/managed-secret"]
    secret["metadata"]["name"] = "renamed-target"
    assert owner_candidates(secret["metadata"]) == [NAME, "renamed-target"]
    assert owner_candidates({"name": "plain"}) == ["plain"]
