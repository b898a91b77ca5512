"""fromManagedSecret as the spec reads it, grants as the operator reads them, and the index that
brings a change of a source to its dependants."""

from __future__ import annotations

from typing import Any

import pytest

from strongroom import policy
from strongroom.operator.dependants import Dependants
from strongroom.sources.composed import granted
from strongroom.spec import Reference, Spec


def spec_with(item: dict[str, Any]) -> Spec:
    return Spec.parse("app", {"data": [{"key": "k", **item}]})


def test_a_reference_is_parsed_with_its_namespace_optional() -> None:
    item = spec_with({"fromManagedSecret": {"name": "db", "key": "password"}}).data[0]
    assert item.from_managed_secret == Reference(name="db", key="password")
    item = spec_with({"fromManagedSecret": {"name": "db", "key": "pw", "namespace": "p"}}).data[0]
    assert item.from_managed_secret == Reference(name="db", key="pw", namespace="p")


@pytest.mark.parametrize(("item", "message"), [
    pytest.param({"fromManagedSecret": {"name": "db"}}, "needs a name and a key", id="no-key"),
    pytest.param({"fromManagedSecret": {"name": "Db!", "key": "k"}}, "fromManagedSecret: name",
                 id="bad-name"),
    pytest.param({"fromManagedSecret": {"name": "db", "key": "..k"}}, "fromManagedSecret: key",
                 id="bad-key"),
    pytest.param({"fromManagedSecret": {"name": "db", "key": "k", "namespace": "a.b"}},
                 "fromManagedSecret: namespace", id="namespace-with-a-dot"),
    pytest.param({"fromManagedSecret": {"name": "db", "key": "k", "namespace": 3}},
                 "namespace must be a namespace name", id="namespace-not-a-string"),
    pytest.param({"fromManagedSecret": {"name": "db", "key": "k"}, "generate": {}},
                 "at most one source", id="two-sources"),
])  # fmt: skip
def test_a_bad_reference_is_refused_naming_the_field(item: dict[str, Any], message: str) -> None:
    with pytest.raises(policy.SpecRefusedError, match=message):
        spec_with(item)


def grant(readers: list[str], names: list[str]) -> dict[str, Any]:
    return {"spec": {"from": [{"namespace": n} for n in readers], "to": [{"name": n} for n in names]}}


def test_a_grant_must_name_both_the_reading_namespace_and_the_name() -> None:
    grants = [grant(["team-a"], ["other"]), grant(["team-b"], ["db-root"]), {"spec": None}, {}]
    assert not granted(grants, "team-a", "db-root")
    assert granted([*grants, grant(["team-c", "team-a"], ["x", "db-root"])], "team-a", "db-root")
    assert not granted([grant(["*"], ["*"])], "team-a", "db-root")  # no wildcard


def refs(*names: str, namespace: str | None = None) -> dict[str, Any]:
    return {"data": [{"key": f"k{i}", "fromManagedSecret": {"name": n, "key": "k",
                                                             **({"namespace": namespace}
                                                                if namespace else {})}}
                     for i, n in enumerate(names)]}  # fmt: skip


def test_dependants_are_found_through_chains_and_forgotten_with_their_spec() -> None:
    index = Dependants()
    index.track(("ns", "api"), refs("db"))
    index.track(("ns", "chained"), refs("api"))
    index.track(("other", "app"), refs("db", namespace="ns"))
    index.track(("ns", "plain"), {"data": [{"key": "x"}]})
    assert index.of([("ns", "db")]) == {("ns", "api"), ("ns", "chained"), ("other", "app")}
    assert index.across(["ns"]) == {("other", "app")}  # only readers from elsewhere need grants
    index.track(("ns", "api"), refs("cache"))  # its spec no longer reads db
    assert index.of([("ns", "db")]) == {("other", "app")}
    assert index.of([("ns", "cache")]) == {("ns", "api"), ("ns", "chained")}
    index.forget(("other", "app"))
    assert index.of([("ns", "db")]) == set()
