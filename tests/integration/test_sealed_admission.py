"""The policy strongroom-sealed-values (crds/admission-policy.yaml): a sealed blob sets a
value, so writing one into a spec needs the values API's right to set values, `update` on
`managedsecrets/values` for that name. Real apiserver, real ServiceAccounts and Roles."""

from __future__ import annotations

from typing import Any

from tests.components.kube import KubeCluster
from tests.integration.test_admission import author, create, ns, patch  # noqa: F401 - fixture

BLOB = "srs1.AAAAAAAA"
OTHER_BLOB = "srs1.BBBBBBBB"
NEEDS = "data[].sealed sets values: it needs update on managedsecrets/values"


def set_values(*names: str) -> dict[str, Any]:
    rule: dict[str, Any] = {"apiGroups": ["strongroom.io"], "resources": ["managedsecrets/values"],
                            "verbs": ["update"]}  # fmt: skip
    if names:
        rule["resourceNames"] = list(names)
    return rule


def sealed(blob: str = BLOB) -> dict[str, Any]:
    return {"data": [{"key": "password", "sealed": blob}]}


def test_attack_an_editor_without_the_set_right_cannot_set_a_value_by_sealing_it(
    kube: KubeCluster, ns: str  # noqa: F811 - the fixture
) -> None:
    token = author(kube, ns)
    code, reason, message = create(kube, ns, sealed(), name="db", token=token)
    assert (code, reason) == (403, "Forbidden"), message
    assert f"{NEEDS} db in namespace {ns}" in message
    # The right for another name is not this one.
    other = author(kube, ns, set_values("not-db"))
    assert create(kube, ns, sealed(), name="db", token=other)[0] == 403


def test_the_set_right_admits_sealed_values_and_is_asked_again_only_when_a_blob_changes(
    kube: KubeCluster, ns: str  # noqa: F811 - the fixture
) -> None:
    setter = author(kube, ns, set_values("db"))
    assert create(kube, ns, sealed(), name="db", token=setter)[0] == 200
    editor = author(kube, ns)  # may edit ManagedSecrets, may not set values
    merge = {"spec": {"refreshInterval": "30m"}}
    assert patch(kube, ns, "db", merge, token=editor)[0] == 200  # blobs untouched
    code, _, message = patch(kube, ns, "db", {"spec": sealed(OTHER_BLOB)}, token=editor)
    assert code == 403 and NEEDS in message
    code, _, message = patch(kube, ns, "db", {"spec": {"data": [
        {"key": "password", "sealed": BLOB}, {"key": "token", "sealed": BLOB}]}}, token=editor)  # fmt: skip
    assert code == 403 and NEEDS in message  # the same blob under another key is a new value
    assert patch(kube, ns, "db", {"spec": sealed(OTHER_BLOB)}, token=setter)[0] == 200
    # Dropping the sealed item sets nothing: no right needed.
    assert patch(kube, ns, "db", {"spec": {"data": [{"key": "password"}]}}, token=editor)[0] == 200
