"""What a ManagedSecret may ask of the operator: the attacks a tenant would try, refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from strongroom import policy
from strongroom.policy import SpecRefusedError
from strongroom.spec import Spec, Target


def parse(**spec: Any) -> Spec:
    return Spec.parse("app", spec)


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        pytest.param({"refreshInterval": "0s"}, "refreshInterval must be at least 10s",
                     id="refresh-0s-busy-loop"),
        pytest.param({"refreshInterval": "9.9s"}, "at least 10s", id="refresh-under-floor"),
        pytest.param({"refreshInterval": "99999999999999999s"}, "refreshInterval must be",
                     id="refresh-17-digits-overflow"),
        pytest.param({"refreshInterval": "9" * 30 + "d"}, "refreshInterval must be",
                     id="refresh-overflows-timedelta"),
        pytest.param({"refreshInterval": "1s" * 17}, "at most 32 characters", id="refresh-too-long"),
        pytest.param({"refreshInterval": "soon"}, "a duration such as 90s", id="refresh-not-a-duration"),
        pytest.param({"data": [{"key": "k", "generate": {"rotationPeriod": "0s"}}]},
                     "rotationPeriod must be at least 1h", id="rotation-0s"),
        pytest.param({"data": [{"key": "k", "generate": {"rotationPeriod": "59m"}}]},
                     "rotationPeriod must be at least 1h", id="rotation-under-an-hour"),
        pytest.param({"rotation": {"keepPrevious": "-1s"}}, "keepPrevious must be",
                     id="keep-previous-negative"),
        pytest.param({"target": {"type": "kubernetes.io/service-account-token"}},
                     "never writes tokens", id="service-account-token-type"),
        pytest.param({"target": {"type": "bootstrap.kubernetes.io/token"}}, "never writes tokens",
                     id="bootstrap-token-type"),
        pytest.param({"target": {"annotations": {"kubernetes.io/service-account.name": "default"}}},
                     "reserved prefixes", id="service-account-name-annotation"),
        pytest.param({"target": {"annotations": {"node.k8s.io/x": "y"}}}, "reserved prefixes",
                     id="k8s-io-subdomain-annotation"),
        pytest.param({"target": {"labels": {"strongroom.io/managed-secret": "other"}}},
                     "reserved prefixes", id="forged-owner-label"),
        pytest.param({"target": {"annotations": {"strongroom.io/merge-from": "x"}}},
                     "reserved prefixes", id="forged-merge-consent"),
        pytest.param({"rolloutRestart": [{"kind": "CronJob", "name": "x"}]},
                     "rolloutRestart.kind", id="unknown-workload-kind"),
        pytest.param({"target": {"creationPolicy": "Adopt"}}, "creationPolicy", id="unknown-policy"),
        pytest.param({"data": [{"key": "k", "generate": {}, "fromSecret": {"name": "s", "key": "k"}}]},
                     "at most one source", id="two-sources"),
        pytest.param({"data": [{"generate": {}}]}, "needs a key", id="item-without-key"),
        pytest.param({"data": [{"key": "..data", "generate": {}}]}, "key '..data' is refused",
                     id="dotdot-data-key"),
        pytest.param({"data": [{"key": "a b"}]}, "key 'a b' may contain only", id="key-with-a-space"),
        pytest.param({"target": {"name": "Not_A_Name"}}, "target.name", id="bad-target-name"),
    ],
)
def test_a_spec_the_policy_refuses_names_the_field(spec: dict[str, Any], needle: str) -> None:
    with pytest.raises(SpecRefusedError, match=needle.replace(".", r"\.")):
        parse(**spec)


def test_durations_at_the_floor_and_in_days_are_accepted() -> None:
    spec = parse(refreshInterval="10s", rotation={"keepPrevious": "0s"},
                 data=[{"key": "k", "generate": {"rotationPeriod": "1d12h"}}])  # fmt: skip
    assert spec.refresh_interval == timedelta(seconds=10)
    assert spec.keep_previous == timedelta(0)
    assert spec.data[0].rotation_period == timedelta(hours=36)


def test_ordinary_labels_and_annotations_pass() -> None:
    spec = parse(target={"labels": {"team": "web", "example.com/tier": "1"},
                         "annotations": {"reloader.example.com/match": "true"}})  # fmt: skip
    assert spec.labels["team"] == "web"
    assert not policy.reserved("notkubernetes.io/x")
    assert policy.reserved("kubernetes.io/x") and policy.reserved("a.b.k8s.io/x")


def test_a_refused_spec_still_has_a_target_for_its_deletion() -> None:
    body = {"target": {"name": "t", "deletionPolicy": "Retain"}, "refreshInterval": "0s"}
    where = Target.parse("app", body)
    assert (where.name, where.creation_policy, where.deletion_policy) == ("t", "Owner", "Retain")


UID = "6f1c-uid-of-this-one"


def _ref(uid: str = UID, **fields: Any) -> dict[str, Any]:
    return {"apiVersion": "strongroom.io/v1alpha1", "kind": "ManagedSecret", "name": "app",
            "uid": uid, "controller": True, **fields}  # fmt: skip


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        pytest.param({"ownerReferences": [_ref()]}, True, id="controller-owner-reference"),
        pytest.param({"annotations": {policy.OWNER_UID_ANNOTATION: UID}}, True, id="uid-annotation"),
        pytest.param({"labels": {policy.MANAGED_BY: "strongroom", policy.OWNER_LABEL: "app"}},
                     False, id="labels-alone-are-no-proof"),
        pytest.param({"ownerReferences": [_ref("other")]}, False, id="another-managedsecret"),
        pytest.param({"ownerReferences": [_ref(controller=False)]}, False,
                     id="a-reference-that-is-not-the-controller"),
        pytest.param({"ownerReferences": [_ref(kind="ConfigMap", apiVersion="v1")]}, False,
                     id="this-uid-under-another-kind"),
        pytest.param({}, False, id="unmanaged"),
    ],
)
def test_ownership_needs_this_managedsecrets_uid(metadata: dict[str, Any], expected: bool) -> None:
    assert policy.owns(metadata, UID) is expected


def test_a_secret_whose_labels_were_removed_is_still_its_owners_but_a_token_is_nobodys() -> None:
    unlabelled = {"name": "db", "ownerReferences": [_ref()]}
    assert policy.target_refusal(unlabelled, "Opaque", "app", UID) is None
    token = policy.target_refusal(unlabelled, "kubernetes.io/service-account-token", "app", UID)
    assert token is not None and "does not write tokens" in token
    foreign = policy.target_refusal({"name": "db"}, "Opaque", "app", UID)
    assert foreign is not None and "does not belong to this ManagedSecret" in foreign


def test_merge_needs_the_secrets_consent_and_never_takes_tokens_or_others_secrets() -> None:
    consent = {"name": "tls", "annotations": {policy.MERGE_CONSENT_ANNOTATION: "app"}}
    assert policy.merge_refusal(consent, "kubernetes.io/tls", "app", UID) is None
    refusal = policy.merge_refusal({"name": "tls"}, "kubernetes.io/tls", "app", UID)
    assert refusal is not None and "strongroom.io/merge-from=app" in refusal
    wrong_name = {"name": "tls", "annotations": {policy.MERGE_CONSENT_ANNOTATION: "other"}}
    assert policy.merge_refusal(wrong_name, "Opaque", "app", UID) is not None
    token = policy.merge_refusal(consent, "kubernetes.io/service-account-token", "app", UID)
    assert token is not None and "tokens" in token
    taken = {**consent, "annotations": {**consent["annotations"],
                                        policy.OWNER_UID_ANNOTATION: "someone-else"}}  # fmt: skip
    assert "another ManagedSecret" in (policy.merge_refusal(taken, "Opaque", "app", UID) or "")
    assert policy.import_refusal("kubernetes.io/service-account-token", "sa") is not None
    assert policy.import_refusal("Opaque", "plain") is None


def _workload(pod: dict[str, Any]) -> dict[str, Any]:
    return {"spec": {"template": {"spec": pod}}}


@pytest.mark.parametrize(
    ("pod", "expected"),
    [
        pytest.param({"containers": [{"env": [{"name": "P", "valueFrom": {
            "secretKeyRef": {"name": "db", "key": "password"}}}]}]}, True, id="env-secretKeyRef"),
        pytest.param({"containers": [{"envFrom": [{"secretRef": {"name": "db"}}]}]}, True,
                     id="envFrom"),
        pytest.param({"initContainers": [{"envFrom": [{"secretRef": {"name": "db"}}]}]}, True,
                     id="init-container"),
        pytest.param({"volumes": [{"name": "v", "secret": {"secretName": "db"}}]}, True,
                     id="secret-volume"),
        pytest.param({"volumes": [{"name": "v", "projected": {"sources": [
            {"configMap": {"name": "db"}}, {"secret": {"name": "db"}}]}}]}, True,
                     id="projected-volume"),
        pytest.param({"containers": [{"envFrom": [{"configMapRef": {"name": "db"}}]}]}, False,
                     id="a-configmap-of-the-same-name"),
        pytest.param({"containers": [{"envFrom": [{"secretRef": {"name": "other"}}]}]}, False,
                     id="another-secret"),
        pytest.param({"containers": [{"name": "c"}]}, False, id="nothing"),
    ],
)
def test_a_workload_is_a_consumer_only_if_its_pod_template_reads_the_secret(
    pod: dict[str, Any], expected: bool
) -> None:
    assert policy.consumes(_workload(pod), "db") is expected


def test_the_schedule_is_floored_whatever_the_spec() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert policy.floor_schedule(now, [now]) == now + policy.MIN_RESCHEDULE
    later = now + timedelta(hours=1)
    assert policy.floor_schedule(now, [later, now + timedelta(days=1)]) == later
    assert policy.floor_schedule(now, []) is None


def test_a_store_entry_cannot_grow_past_the_key_limit() -> None:
    policy.check_key_count(policy.MAX_KEYS, "app")
    with pytest.raises(SpecRefusedError, match="at most 256"):
        policy.check_key_count(policy.MAX_KEYS + 1, "app")
