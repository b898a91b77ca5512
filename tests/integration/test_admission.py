"""What the apiserver refuses before the operator ever sees a ManagedSecret, on the real apiserver.

Two layers, both shipped in crds/ (and the chart's crds/):

- The ValidatingAdmissionPolicy ``strongroom-managedsecret-authors`` (crds/admission-policy.yaml):
  a ManagedSecret may ask the operator for no more than its author could do alone. Each case is
  a ServiceAccount holding exactly the rights of the case (a Role, often with resourceNames, plus
  what every author needs on managedsecrets), once with the right and once without it.
- The CRD's CEL rules (crds/managedsecrets.yaml): no token Secret types, no reserved label or
  annotation prefixes, durations in one format with floors and a length bound, something to
  sync, and mistakes reported together rather than one hidden behind another.

The admin token (system:masters) passes the policy, so the CRD rule tests use it.
"""

from __future__ import annotations

import copy
import json
import urllib.error
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.components.base import wait_until
from tests.components.kube import KubeCluster

REPO = Path(__file__).resolve().parents[2]
MSECS = "/apis/strongroom.io/v1alpha1/namespaces/{ns}/managedsecrets"
POLICY = "strongroom-managedsecret-authors"

# What every author needs to write ManagedSecrets at all.
MSEC_RIGHTS = {"apiGroups": ["strongroom.io"], "resources": ["managedsecrets"],
               "verbs": ["get", "create", "update", "patch"]}  # fmt: skip
# ... and to have the operator create their Secret (creationPolicy Owner, the default).
CREATE_SECRETS = {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]}
AUTHOR = [MSEC_RIGHTS, CREATE_SECRETS]


def secrets(verb: str, *names: str) -> dict[str, Any]:
    """A Role rule: ``verb`` on the Secrets ``names`` (all Secrets of the namespace if none)."""
    rule: dict[str, Any] = {"apiGroups": [""], "resources": ["secrets"], "verbs": [verb]}
    if names:
        rule["resourceNames"] = list(names)
    return rule


def apps(resource: str, verb: str, *names: str) -> dict[str, Any]:
    """A Role rule: ``verb`` on the apps/``resource`` objects ``names`` (all if none)."""
    rule: dict[str, Any] = {"apiGroups": ["apps"], "resources": [resource], "verbs": [verb]}
    if names:
        rule["resourceNames"] = list(names)
    return rule


def configmaps(verb: str, *names: str) -> dict[str, Any]:
    """A Role rule: ``verb`` on the ConfigMaps ``names`` (all of the namespace if none)."""
    rule: dict[str, Any] = {"apiGroups": [""], "resources": ["configmaps"], "verbs": [verb]}
    if names:
        rule["resourceNames"] = list(names)
    return rule


TEMPLATE_FROM = {"target": {"template": {"templateFrom": [{"configMap": {"name": "tmpl"}}]}}}


def sources(*names: str, delete: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    return [{"key": f"k{i}", "fromSecret": {"name": name, "key": "value",
                                            "deleteSource": name in delete}}
            for i, name in enumerate(names)]  # fmt: skip


def restart(*workloads: tuple[str, str]) -> list[dict[str, str]]:
    return [{"kind": kind, "name": name} for kind, name in workloads]


@pytest.fixture
def ns(kube: KubeCluster) -> str:
    name = f"adm-{uuid.uuid4().hex[:8]}"
    kube.ensure_namespace(name)
    return name


def author(kube: KubeCluster, ns: str, *rules: dict[str, Any]) -> str:
    """A token for a new ServiceAccount holding ``AUTHOR`` plus exactly ``rules`` in ``ns``."""
    name = f"author-{uuid.uuid4().hex[:6]}"
    kube.grant(ns, name, [*(r for r in AUTHOR if r not in rules), *rules])
    token = kube.service_account_token(ns, name)
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
              "spec": {"resourceAttributes": {"namespace": ns, "verb": "create",
                                              "group": "strongroom.io",
                                              "resource": "managedsecrets"}}}  # fmt: skip

    def role_in_effect() -> bool:
        answer = kube.request("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                              review, token=token)  # fmt: skip
        return bool(answer["status"].get("allowed"))

    wait_until(role_in_effect, timeout=30, what=f"Role {ns}/{name} in effect")
    return token


def outcome(call: Any) -> tuple[int, str, str]:
    """(HTTP status, reason, message) of an API call: (2xx, "", "") when it succeeds."""
    try:
        call()
    except urllib.error.HTTPError as exc:
        status = json.loads(exc.read())
        return exc.code, str(status.get("reason", "")), str(status.get("message", ""))
    return 200, "", ""


def create(kube: KubeCluster, ns: str, spec: dict[str, Any] | None, *, name: str = "msec",
           token: str | None = None) -> tuple[int, str, str]:  # fmt: skip
    """POST a ManagedSecret; a spec without ``data`` gets one key without a source (the CRD
    wants one at least), None posts none."""
    body = {"apiVersion": "strongroom.io/v1alpha1", "kind": "ManagedSecret",
            "metadata": {"name": name}}  # fmt: skip
    if spec is not None:
        body["spec"] = {"data": [{"key": "k"}], **spec}
    return outcome(lambda: kube.request("POST", MSECS.format(ns=ns), body, token=token))


def patch(kube: KubeCluster, ns: str, name: str, change: dict[str, Any], *,
          token: str) -> tuple[int, str, str]:  # fmt: skip
    path = f"{MSECS.format(ns=ns)}/{name}"
    return outcome(lambda: kube.request("PATCH", path, change, token=token,
                                        content_type="application/merge-patch+json"))  # fmt: skip


def assert_refused_by_policy(result: tuple[int, str, str], missing: str) -> None:
    code, reason, message = result
    assert (code, reason) == (403, "Forbidden"), result
    assert f"ValidatingAdmissionPolicy '{POLICY}'" in message, message
    assert missing in message, message


# -- the author policy -----------------------------------------------------------------------

MERGE = {"target": {"name": "app-tls", "creationPolicy": "Merge"}}
EIGHT = tuple(f"src-{i}" for i in range(8))
SIX_WORKLOADS = (("Deployment", "web"), ("Deployment", "worker"), ("StatefulSet", "db"),
                 ("StatefulSet", "cache"), ("DaemonSet", "agent"),
                 ("DaemonSet", "logs"))  # fmt: skip

ALLOWED = [
    pytest.param([], {"data": [{"key": "pw", "generate": {}}]}, id="owned-secret-needs-create"),
    pytest.param([secrets("update", "app-tls")], MERGE, id="merge-with-update-on-target"),
    pytest.param([secrets("update", "msec")], {"target": {"creationPolicy": "Merge"}},
                 id="merge-target-defaults-to-own-name"),
    pytest.param([secrets("get", "legacy")], {"data": sources("legacy")},
                 id="fromSecret-with-get"),
    pytest.param([secrets("get", "a", "b")], {"data": sources("a", "b", "a")},
                 id="fromSecret-each-source-once"),
    pytest.param([secrets("get")], {"data": sources(*(f"s{i}" for i in range(20)))},
                 id="fromSecret-namespace-wide-get-has-no-name-limit"),
    pytest.param([secrets("get", "legacy"), secrets("delete", "legacy")],
                 {"data": sources("legacy", delete=("legacy",))}, id="deleteSource-with-delete"),
    pytest.param([apps("deployments", "patch", "web")],
                 {"rolloutRestart": restart(("Deployment", "web"))},
                 id="rolloutRestart-with-patch"),
    pytest.param([apps("statefulsets", "patch", "db"), apps("daemonsets", "patch", "agent")],
                 {"rolloutRestart": restart(("StatefulSet", "db"), ("DaemonSet", "agent"))},
                 id="rolloutRestart-statefulset-and-daemonset-with-patch"),
    pytest.param([apps("deployments", "patch")],
                 {"rolloutRestart": restart(*(("Deployment", f"d{i}") for i in range(32)))},
                 id="rolloutRestart-kind-wide-patch-has-no-name-limit"),
    pytest.param([configmaps("get")], TEMPLATE_FROM, id="templateFrom-with-get-on-configmaps"),
    # The most authorization checks the policy makes (25, within CEL's per-request budget).
    pytest.param([secrets("update", "app-tls"), secrets("get", *EIGHT),
                  secrets("delete", *EIGHT[:4]), configmaps("get"),
                  *(apps(kind.lower() + "s", "patch", name) for kind, name in SIX_WORKLOADS)],
                 {"target": {**MERGE["target"], **TEMPLATE_FROM["target"]},
                  "data": sources(*EIGHT, delete=EIGHT[:4]),
                  "rolloutRestart": restart(*SIX_WORKLOADS)},
                 id="every-right-by-name-at-the-limits"),
]  # fmt: skip


@pytest.mark.parametrize(("rules", "spec"), ALLOWED)
def test_an_author_with_the_rights_may_ask_for_them(
    kube: KubeCluster, ns: str, rules: list[dict[str, Any]], spec: dict[str, Any]
) -> None:
    token = author(kube, ns, *rules)
    assert create(kube, ns, spec, token=token) == (200, "", "")


REFUSED = [
    pytest.param([secrets("get", "app-tls"), secrets("update", "other")], MERGE,
                 "creationPolicy Merge needs update on secrets/app-tls in namespace {ns}",
                 id="merge-without-update-on-target"),
    pytest.param([secrets("update", "app-tls")], {"target": {"creationPolicy": "Merge"}},
                 "creationPolicy Merge needs update on secrets/msec in namespace {ns}",
                 id="merge-target-defaults-to-own-name"),
    pytest.param([secrets("list"), secrets("watch")], {"data": sources("legacy")},
                 "fromSecret needs get on secrets/legacy in namespace {ns}",
                 id="fromSecret-without-get"),
    pytest.param([secrets("get", "a")], {"data": sources("a", "b")},
                 "fromSecret needs get on secrets/b in namespace {ns}",
                 id="fromSecret-second-source-unreadable"),
    pytest.param([secrets("get", *EIGHT, "src-8")], {"data": sources(*EIGHT, "src-8")},
                 "fromSecret names 9 Secrets; at most 8 can be checked by name without get on "
                 "all secrets in namespace {ns}", id="fromSecret-more-names-than-checked"),
    pytest.param([secrets("get", "legacy")], {"data": sources("legacy", delete=("legacy",))},
                 "fromSecret.deleteSource needs delete on secrets/legacy in namespace {ns}",
                 id="deleteSource-without-delete"),
    pytest.param([secrets("delete", "legacy")], {"data": sources("legacy", delete=("legacy",))},
                 "fromSecret needs get on secrets/legacy in namespace {ns}",
                 id="deleteSource-without-get"),
    pytest.param([apps("deployments", "patch", "other")],
                 {"rolloutRestart": restart(("Deployment", "web"))},
                 "rolloutRestart needs patch on deployments.apps/web in namespace {ns}",
                 id="rolloutRestart-patch-on-another-name"),
    pytest.param([apps("statefulsets", "patch", "web")],
                 {"rolloutRestart": restart(("Deployment", "web"))},
                 "rolloutRestart needs patch on deployments.apps/web in namespace {ns}",
                 id="rolloutRestart-patch-on-another-kind"),
    pytest.param([apps("daemonsets", "get", "agent"), apps("daemonsets", "update", "agent")],
                 {"rolloutRestart": restart(("DaemonSet", "agent"))},
                 "rolloutRestart needs patch on daemonsets.apps/agent in namespace {ns}",
                 id="rolloutRestart-without-patch"),
    pytest.param([apps("deployments", "patch")],
                 {"rolloutRestart": restart(("Deployment", "web"), ("StatefulSet", "db"))},
                 "rolloutRestart needs patch on statefulsets.apps/db in namespace {ns}",
                 id="rolloutRestart-kind-wide-patch-covers-only-that-kind"),
    pytest.param([apps("deployments", "patch", "web", "d1", "d2", "d3", "d4", "d5", "d6")],
                 {"rolloutRestart": restart(("Deployment", "web"),
                                            *(("Deployment", f"d{i}") for i in range(1, 7)))},
                 "rolloutRestart names 7 workloads; at most 6 can be checked by name",
                 id="rolloutRestart-more-names-than-checked"),
    pytest.param([configmaps("list")], TEMPLATE_FROM,
                 "target.template.templateFrom needs get on configmaps in namespace {ns}",
                 id="templateFrom-without-get"),
    pytest.param([configmaps("get", "tmpl")], TEMPLATE_FROM,
                 "target.template.templateFrom needs get on configmaps in namespace {ns}",
                 id="templateFrom-get-by-name-is-not-enough"),
]  # fmt: skip


@pytest.mark.parametrize(("rules", "spec", "missing"), REFUSED)
def test_an_author_without_the_rights_is_refused_with_the_missing_right(
    kube: KubeCluster, ns: str, rules: list[dict[str, Any]], spec: dict[str, Any], missing: str
) -> None:
    token = author(kube, ns, *rules)
    assert_refused_by_policy(create(kube, ns, spec, token=token), missing.format(ns=ns))
    # The admin (system:masters) may do all of it, so the same spec is otherwise valid.
    assert create(kube, ns, spec) == (200, "", "")


def test_an_update_that_adds_an_unreadable_source_is_refused(kube: KubeCluster, ns: str) -> None:
    token = author(kube, ns, secrets("get", "readable"))
    assert create(kube, ns, {"data": [{"key": "pw", "generate": {}}]}, token=token)[0] == 200

    # A PUT of the whole object, as kubectl replace does it.
    path = f"{MSECS.format(ns=ns)}/msec"
    current = kube.request("GET", path, token=token)
    current["spec"]["data"] += sources("private")
    refused = outcome(lambda: kube.request("PUT", path, current, token=token))
    assert_refused_by_policy(refused, f"fromSecret needs get on secrets/private in namespace {ns}")
    # A merge patch, as kubectl apply and edit do it.
    assert patch(kube, ns, "msec", {"spec": {"data": sources("readable")}}, token=token)[0] == 200


def test_an_author_who_may_not_create_secrets_cannot_have_one_created(
    kube: KubeCluster, ns: str
) -> None:
    name = f"author-{uuid.uuid4().hex[:6]}"
    kube.grant(ns, name, [MSEC_RIGHTS, secrets("create", "allowed-name")])
    token = kube.service_account_token(ns, name)
    spec = {"target": {"name": "web-extra"}, "data": [{"key": "pw", "generate": {}}]}
    wait_until(lambda: create(kube, ns, spec, token=token)[0] == 403, timeout=30,
               what="the Role in effect")  # fmt: skip
    assert_refused_by_policy(create(kube, ns, spec, token=token), "creationPolicy Owner or "
                             f"Orphan needs create on secrets/web-extra in namespace {ns}")  # fmt: skip
    allowed = {"target": {"name": "allowed-name", "creationPolicy": "Orphan"},
               "data": [{"key": "pw", "generate": {}}]}  # fmt: skip
    assert create(kube, ns, allowed, name="other", token=token) == (200, "", "")


def test_moving_the_target_needs_get_on_the_secret_the_values_were_in(
    kube: KubeCluster, ns: str
) -> None:
    """Re-targeting an admin's ManagedSecret to a Secret the editor can read would hand them
    its values: the editor must already be able to read where they were."""
    assert create(kube, ns, {"data": [{"key": "password", "generate": {}}]}, name="db") == (
        200, "", "")  # fmt: skip
    editor = author(kube, ns, secrets("get", "mine"))
    moved = {"spec": {"target": {"name": "mine"}}}
    assert_refused_by_policy(patch(kube, ns, "db", moved, token=editor),
                             f"moving target.name from db needs get on secrets/db in namespace "
                             f"{ns}")  # fmt: skip
    reader = author(kube, ns, secrets("get", "mine", "db"))
    assert patch(kube, ns, "db", moved, token=reader)[0] == 200
    # Moving it on again starts from "mine", which the first editor may read.
    assert patch(kube, ns, "db", {"spec": {"target": {"name": "db"}}}, token=editor)[0] == 200


def test_a_metadata_only_update_needs_no_secret_rights(kube: KubeCluster, ns: str) -> None:
    # The admin asks for everything; an author with no Secret or workload rights then edits it.
    spec = {**MERGE, "data": sources("legacy", delete=("legacy",)),
            "rolloutRestart": restart(("Deployment", "web"))}  # fmt: skip
    assert create(kube, ns, spec) == (200, "", "")
    token = author(kube, ns)

    labelled = {"metadata": {"labels": {"team": "payments"}, "finalizers": ["example.com/x"]}}
    assert patch(kube, ns, "msec", labelled, token=token) == (200, "", "")
    # Any change of spec re-checks all of it, whoever makes it.
    refused = patch(kube, ns, "msec", {"spec": {"refreshInterval": "2h"}}, token=token)
    assert_refused_by_policy(refused, f"creationPolicy Merge needs update on secrets/app-tls in "
                                      f"namespace {ns}")  # fmt: skip
    assert patch(kube, ns, "msec", {"metadata": {"finalizers": None}}, token=token)[0] == 200


# -- the CRD's CEL rules ---------------------------------------------------------------------

TOKEN_TYPES = ("kubernetes.io/service-account-token", "bootstrap.kubernetes.io/token")


@pytest.mark.parametrize("secret_type", [pytest.param(t, id=t) for t in TOKEN_TYPES])
def test_token_secret_types_are_refused(kube: KubeCluster, ns: str, secret_type: str) -> None:
    code, _, message = create(kube, ns, {"target": {"type": secret_type}})
    assert code == 422, message
    assert f'spec.target.type: Invalid value: "{secret_type}"' in message
    assert "Strongroom never writes" in message and "trust them as credentials" in message


@pytest.mark.parametrize("secret_type", ["Opaque", "kubernetes.io/tls", "kubernetes.io/basic-auth",
                                         "example.com/custom"])  # fmt: skip
def test_other_secret_types_are_accepted(kube: KubeCluster, ns: str, secret_type: str) -> None:
    assert create(kube, ns, {"target": {"type": secret_type}}) == (200, "", "")


RESERVED_KEYS = ["kubernetes.io/service-account.name", "k8s.io/anything",
                 "node.kubernetes.io/exclude", "a.b.k8s.io/x",
                 "strongroom.io/managed-by", "sync.strongroom.io/x"]  # fmt: skip


@pytest.mark.parametrize("field", ["labels", "annotations"])
@pytest.mark.parametrize("key", [pytest.param(k, id=k) for k in RESERVED_KEYS])
def test_reserved_label_and_annotation_prefixes_are_refused(
    kube: KubeCluster, ns: str, field: str, key: str
) -> None:
    code, _, message = create(kube, ns, {"target": {field: {"team": "a", key: "v"}}})
    assert code == 422, message
    assert f"spec.target.{field}: Invalid value" in message
    assert "under kubernetes.io/ and k8s.io/" in message and "under strongroom.io/" in message


@pytest.mark.parametrize("field", ["labels", "annotations"])
def test_other_label_and_annotation_keys_are_accepted(
    kube: KubeCluster, ns: str, field: str
) -> None:
    keys = {"team": "a", "example.com/owner": "b", "notkubernetes.io/x": "c", "k8s.io": "d"}
    assert create(kube, ns, {"target": {field: keys}}) == (200, "", "")


def test_recommended_app_labels_pass_but_not_as_annotations(kube: KubeCluster, ns: str) -> None:
    """app.kubernetes.io/name and friends are Kubernetes' recommended labels, meaningless to
    the apiserver and kubelet; as annotations the kubernetes.io/ rule holds without exception."""
    assert create(kube, ns, {"target": {"labels": {"app.kubernetes.io/name": "web"}}}) == (
        200, "", "")  # fmt: skip
    code, _, message = create(kube, ns, {"target": {"annotations": {"app.kubernetes.io/x": "v"}}})
    assert code == 422, message


FORMAT = "must be a duration such as 90s, 15m, 1h30m or 7d"
DURATIONS_REFUSED = [
    pytest.param("refreshInterval", "0s", "refreshInterval must be at least 10s", id="refresh-0s"),
    pytest.param("refreshInterval", "5s", "refreshInterval must be at least 10s", id="refresh-5s"),
    pytest.param("refreshInterval", "9999ms", "refreshInterval must be at least 10s",
                 id="refresh-9999ms"),
    pytest.param("refreshInterval", "0.0001d", "refreshInterval must be at least 10s",
                 id="refresh-fraction-of-a-day"),
    pytest.param("refreshInterval", "1" * 17 + "s", FORMAT, id="refresh-17-digits"),
    pytest.param("refreshInterval", "1000000d", FORMAT, id="refresh-7-digits"),
    pytest.param("refreshInterval", "36501d", "at most 36500d", id="refresh-over-a-century"),
    pytest.param("refreshInterval", "999999d999999d999999d999999d", "at most 36500d",
                 id="refresh-sum-would-overflow-a-date"),
    pytest.param("rotationPeriod", "40000d", "at most 36500d", id="rotation-over-a-century"),
    pytest.param("keepPrevious", "36500d1s", "keepPrevious must be at most 36500d",
                 id="keep-over-a-century"),
    pytest.param("refreshInterval", "1s" * 16 + "1", "Too long: may not be more than 32",
                 id="refresh-33-chars"),
    pytest.param("refreshInterval", "soon", FORMAT, id="refresh-not-a-duration"),
    pytest.param("refreshInterval", "10", FORMAT, id="refresh-no-unit"),
    pytest.param("rotationPeriod", "0s", "rotationPeriod must be at least 1h", id="rotation-0s"),
    pytest.param("rotationPeriod", "59m59s", "rotationPeriod must be at least 1h",
                 id="rotation-59m59s"),
    pytest.param("rotationPeriod", "9" * 17 + "h", FORMAT, id="rotation-17-digits"),
    pytest.param("keepPrevious", "1w", FORMAT, id="keep-weeks"),
    pytest.param("keepPrevious", "9" * 33, "Too long: may not be more than 32",
                 id="keep-33-chars"),
]  # fmt: skip
DURATIONS_ACCEPTED = [
    pytest.param("refreshInterval", v, id=f"refresh-{v}")
    for v in ("10s", "10000ms", "90s", "15m", "1h30m", "7d", "1d12h", "0.5h", "365d", "36500d")
] + [
    pytest.param("rotationPeriod", v, id=f"rotation-{v}") for v in ("1h", "3600s", "720h", "30d")
] + [
    pytest.param("keepPrevious", v, id=f"keep-{v}") for v in ("0s", "1s", "24h")
]  # fmt: skip


def with_duration(field: str, value: str) -> dict[str, Any]:
    if field == "rotationPeriod":
        return {"data": [{"key": "pw", "generate": {"rotationPeriod": value}}]}
    if field == "keepPrevious":
        return {"rotation": {"keepPrevious": value}}
    return {field: value}


FIELD_PATHS = {"refreshInterval": "spec.refreshInterval",
               "rotationPeriod": "spec.data[0].generate.rotationPeriod",
               "keepPrevious": "spec.rotation.keepPrevious"}  # fmt: skip


@pytest.mark.parametrize(("field", "value", "expected"), DURATIONS_REFUSED)
def test_bad_durations_are_refused_with_one_clear_message(
    kube: KubeCluster, ns: str, field: str, value: str, expected: str
) -> None:
    code, _, message = create(kube, ns, with_duration(field, value))
    assert code == 422, message
    assert f"{FIELD_PATHS[field]}: " in message and expected in message, message
    if expected == FORMAT:  # a malformed value gets the format message only
        assert "at least" not in message, message


@pytest.mark.parametrize(("field", "value"), DURATIONS_ACCEPTED)
def test_durations_at_or_above_the_floors_are_accepted(
    kube: KubeCluster, ns: str, field: str, value: str
) -> None:
    assert create(kube, ns, with_duration(field, value)) == (200, "", "")


@pytest.mark.parametrize("key", [pytest.param(k, id=k) for k in ("..data", "..", ".", "..x")])
def test_keys_kubernetes_keeps_for_itself_are_refused(kube: KubeCluster, ns: str, key: str) -> None:
    """The store's key rule (strongroom.validate.key), said again by the CRD: before, ``..data``
    was accepted here and by the operator, then refused by the apiserver on every sync."""
    code, _, message = create(kube, ns, {"data": [{"key": key}]})
    assert code == 422, message
    assert "spec.data[0].key" in message and "may not be '.' or start with '..'" in message


@pytest.mark.parametrize("key", [".env", "a..b", "tls.crt", ".x."])
def test_dotted_keys_kubernetes_allows_are_accepted(kube: KubeCluster, ns: str, key: str) -> None:
    assert create(kube, ns, {"data": [{"key": key}]}) == (200, "", "")


# -- nothing to sync, and every mistake at once (issue 15, item 4) ----------------------------

NOTHING_TO_SYNC = "spec.data must name one key or more: without one there is nothing to sync"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param(None, "spec: Required value: a ManagedSecret needs a spec whose data names "
                     "one key or more", id="no-spec"),
        pytest.param({}, NOTHING_TO_SYNC, id="empty-spec"),
        pytest.param({"data": []}, NOTHING_TO_SYNC, id="empty-data"),
        pytest.param({"target": {"name": "app"}, "refreshInterval": "5m"}, NOTHING_TO_SYNC,
                     id="target-only"),
    ],
)  # fmt: skip
def test_a_spec_with_nothing_to_sync_is_refused(
    kube: KubeCluster, ns: str, spec: dict[str, Any] | None, expected: str
) -> None:
    """Before: ``spec: {}`` was accepted and the operator had nothing to do, silently."""
    body = {"apiVersion": "strongroom.io/v1alpha1", "kind": "ManagedSecret",
            "metadata": {"name": "empty"}, **({} if spec is None else {"spec": spec})}  # fmt: skip
    code, _, message = outcome(lambda: kube.request("POST", MSECS.format(ns=ns), body))
    assert code == 422, message
    assert expected in message, message


def test_one_key_set_out_of_band_is_something_to_sync(kube: KubeCluster, ns: str) -> None:
    assert create(kube, ns, {"data": [{"key": "username"}]}) == (200, "", "")


TWO_SOURCES = {"key": "pw", "generate": {}, "fromSecret": {"name": "legacy", "key": "pw"}}
ONE_SOURCE_ONLY = "spec.data[0]: Invalid value: a key takes at most one source"


@pytest.mark.parametrize(
    ("mistake", "expected"),
    [
        pytest.param({"refreshPolicy": "Sometimes"}, 'spec.refreshPolicy: Invalid value: '
                     '"Sometimes": refreshPolicy must be Periodic, OnChange or CreatedOnce',
                     id="refreshPolicy"),
        pytest.param({"target": {"creationPolicy": "Steal"}},
                     "creationPolicy must be Owner, Orphan or Merge", id="creationPolicy"),
        pytest.param({"target": {"deletionPolicy": "Shred"}},
                     "deletionPolicy must be Retain or Delete", id="deletionPolicy"),
        pytest.param({"data": [{"key": "b", "generate": {"charset": "emoji"}}]},
                     "spec.data[1].generate.charset: Invalid value: \"emoji\": charset must be "
                     "alphanumeric, hex, base64url or ascii", id="charset"),
        pytest.param({"data": [{"key": "b", "fromSecret": {"name": "legacy"}}]},
                     "spec.data[1].fromSecret: Invalid value: fromSecret needs the source "
                     "Secret's name and key", id="fromSecret-without-key"),
        pytest.param({"rolloutRestart": [{"kind": "CronJob", "name": "nightly"}]},
                     "kind must be Deployment, StatefulSet or DaemonSet", id="workload-kind"),
        pytest.param({"rolloutRestart": [{"name": "web"}]},
                     "a rolloutRestart entry needs the workload's kind and name",
                     id="workload-without-kind"),
        pytest.param({"refreshInterval": "soon"}, "spec.refreshInterval: Invalid value: "
                     "\"soon\": must be a duration such as 90s, 15m, 1h30m or 7d", id="duration"),
        pytest.param({"data": [{"key": "bad key"}]}, "spec.data[1].key", id="key-pattern"),
    ],
)  # fmt: skip
def test_two_sources_are_reported_together_with_another_mistake(
    kube: KubeCluster, ns: str, mistake: dict[str, Any], expected: str
) -> None:
    """Before: an enum or a ``required`` broken anywhere made the apiserver skip every CEL rule
    ("some validation rules were not checked"), the two-sources rule among them: the second
    mistake surfaced only after the first was fixed."""
    spec = {**mistake, "data": [TWO_SOURCES, *mistake.get("data", [])]}
    code, _, message = create(kube, ns, spec)
    assert code == 422, message
    assert ONE_SOURCE_ONLY in message, message
    assert expected in message, message
    assert "some validation rules were not checked" not in message, message


def test_a_managedsecret_stored_before_the_rule_can_still_be_updated_and_released(
    kube: KubeCluster, ns: str
) -> None:
    """Objects stored without a spec, or with ``spec: {}``, before the nothing-to-sync rule
    existed still take a status, a label and the removal of their finalizer (the operator's
    writes), so their deletion is never stuck on the rule."""
    crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    current = yaml.safe_load((REPO / "crds" / "managedsecrets.yaml").read_text())
    older = copy.deepcopy(current)
    schema = older["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    schema["x-kubernetes-validations"] = [r for r in schema["x-kubernetes-validations"]
                                          if "oldSelf" not in r["rule"]]  # fmt: skip
    del schema["properties"]["spec"]["x-kubernetes-validations"]
    probe = {"apiVersion": "strongroom.io/v1alpha1", "kind": "ManagedSecret",
             "metadata": {"generateName": "probe-"}, "spec": {}}  # fmt: skip
    dry_run = MSECS.format(ns=ns) + "?dryRun=All"

    def empty_spec_accepted() -> bool:
        return outcome(lambda: kube.request("POST", dry_run, probe))[0] != 422

    kube.create_or_replace(crds, older)
    try:
        wait_until(empty_spec_accepted, timeout=30, what="the CRD without the rule in effect")
        for name, spec in (("no-spec", None), ("empty-spec", {})):
            body = {"apiVersion": "strongroom.io/v1alpha1", "kind": "ManagedSecret",
                    "metadata": {"name": name, "finalizers": ["strongroom.io/finalizer"]},
                    **({} if spec is None else {"spec": spec})}  # fmt: skip
            kube.request("POST", MSECS.format(ns=ns), body)
    finally:
        kube.create_or_replace(crds, current)
    wait_until(lambda: not empty_spec_accepted(), timeout=30, what="the rule in effect")
    for name in ("no-spec", "empty-spec"):
        path = f"{MSECS.format(ns=ns)}/{name}"
        merge = "application/merge-patch+json"
        kube.request("PATCH", f"{path}/status", {"status": {"version": 1}}, content_type=merge)
        kube.request("PATCH", path, {"metadata": {"labels": {"team": "a"}}}, content_type=merge)
        kube.request("DELETE", path)
        kube.request("PATCH", path, {"metadata": {"finalizers": None}}, content_type=merge)
        assert outcome(lambda p=path: kube.request("GET", p))[0] == 404  # type: ignore[misc]
