"""The chart's rights for database engines: none unless asked for, then exactly what
strongroom.sources.database uses (engines read, namespace labels read, Secrets of the release
namespace read), and the engine CRD shipped as the top-level one."""

from __future__ import annotations

from tests.components.chart import of_kind, render
from tests.integration.test_deploy import rules


def test_database_rights_are_off_by_default_and_exact_when_on(helm: str) -> None:
    off = render(helm)
    assert not [d for d in of_kind(off, "Role", "ClusterRole")
                if d["metadata"]["name"].endswith("-databases")]  # fmt: skip
    on = render(helm, "--set", "databaseEngines.enabled=true")
    mine = {d["kind"]: d for d in of_kind(on, "Role", "ClusterRole")
            if d["metadata"]["name"] == "sr-strongroom-databases"}  # fmt: skip
    assert rules(mine["ClusterRole"]) == {("strongroom.io", "databaseengines"): {"get", "list"},
                                          ("strongroom.io", "databaseengines/status"): {"patch"},
                                          ("", "namespaces"): {"get"}}  # fmt: skip
    assert mine["Role"]["metadata"]["namespace"] == "strongroom"
    assert rules(mine["Role"]) == {("", "secrets"): {"get"}}
    env = {e["name"]: e.get("value") for e in of_kind(on, "Deployment")[0]["spec"]["template"]
           ["spec"]["containers"][0]["env"]}  # fmt: skip
    assert env["STRONGROOM_DATABASE_ENGINES"] == "true"
    bound = {(d["kind"], d["roleRef"]["name"]) for d in of_kind(on, "RoleBinding",
                                                                "ClusterRoleBinding")}  # fmt: skip
    assert {("RoleBinding", "sr-strongroom-databases"),
            ("ClusterRoleBinding", "sr-strongroom-databases")} <= bound
