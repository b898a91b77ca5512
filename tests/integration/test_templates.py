"""spec.target.template through the real apiserver and operator: the Secret an application
reads, rendered from the stored keys; a failed render keeps the last good data and says where,
never what."""

from __future__ import annotations

import base64
import json
import time
import urllib.error
from typing import Any

import pytest

from tests.components.operator import OperatorProcess, eventually
from tests.integration.test_operator import decoded, ready

CANARY = "CANARY-tmpl-8e2a-never-log-me"
DSN = "postgres://{{ user }}:{{ password | urlquote }}@db:5432/{{ data['db-name'] }}"
DOCKER = ('{{ {"auths": {"registry.example": {"username": user, "password": password,'
          ' "auth": (user ~ ":" ~ password) | b64enc}}} | toJson }}')  # fmt: skip


def merge_patch(op: OperatorProcess, name: str, patch: dict[str, Any]) -> None:
    op.kube.request("PATCH", op.msec_path(name), patch,
                    content_type="application/merge-patch+json")  # fmt: skip


def condition(op: OperatorProcess, name: str, reason: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        conds = {c["type"]: c for c in (op.msec(name).get("status") or {}).get("conditions") or []}
        ready_cond = conds.get("Ready") or {}
        return ready_cond if ready_cond.get("reason") == reason else None

    return dict(eventually(check, timeout=45, what=f"{name} Ready reason {reason}"))


def test_a_dsn_and_a_dockerconfigjson_are_rendered_into_their_secrets(op: OperatorProcess) -> None:
    op.cli("secret", "set", f"{op.namespace}/db", "user=app", "password=p@ss/w:rd", "db-name=app")
    op.apply("db", {"data": [{"key": "user"}, {"key": "password"}, {"key": "db-name"}],
                    "target": {"template": {"data": {"DATABASE_URL": DSN}}}})  # fmt: skip
    op.cli("secret", "set", f"{op.namespace}/pull", "user=robot", f"password={CANARY}")
    op.apply("pull", {"data": [{"key": "user"}, {"key": "password"}],
                      "target": {"template": {"type": "kubernetes.io/dockerconfigjson",
                                              "labels": {"kind": "pull-secret"},
                                              "data": {".dockerconfigjson": DOCKER}}}})  # fmt: skip
    ready(op, "db")
    assert decoded(op.secret("db")) == {"DATABASE_URL": "postgres://app:p%40ss%2Fw%3Ard@db:5432/app"}
    ready(op, "pull")
    secret = op.secret("pull")
    assert secret is not None and secret["type"] == "kubernetes.io/dockerconfigjson"
    assert secret["metadata"]["labels"]["kind"] == "pull-secret"
    auths = json.loads(decoded(secret)[".dockerconfigjson"])["auths"]["registry.example"]
    assert base64.b64decode(auths["auth"]).decode() == f"robot:{CANARY}"


def test_merge_policy_keeps_the_stored_keys_beside_the_templated_ones(op: OperatorProcess) -> None:
    op.cli("secret", "set", f"{op.namespace}/both", "user=app", "password=pw")
    op.apply("both", {"data": [{"key": "user"}, {"key": "password"}],
                      "target": {"template": {"mergePolicy": "Merge",
                                              "data": {"env": "USER={{ user }}"}}}})  # fmt: skip
    ready(op, "both")
    assert decoded(op.secret("both")) == {"user": "app", "password": "pw", "env": "USER=app"}


def test_a_stored_change_re_renders_and_an_idle_pass_writes_nothing(op: OperatorProcess) -> None:
    op.cli("secret", "set", f"{op.namespace}/app", "password=one")
    op.apply("app", {"data": [{"key": "password"}], "refreshInterval": "10s",
                     "target": {"template": {"data": {"pw": "{{ password | upper }}"}}}})  # fmt: skip
    ready(op, "app", 1)
    op.cli("secret", "set", f"{op.namespace}/app", "password=two")
    ready(op, "app", 2)
    assert decoded(op.secret("app")) == {"pw": "TWO"}
    # Drift of the rendered data is repaired (the HMAC covers the rendered data) ...
    path = f"/api/v1/namespaces/{op.namespace}/secrets/app"
    op.kube.request("PATCH", path, {"data": {"pw": base64.b64encode(b"two").decode()}},
                    content_type="application/merge-patch+json")  # fmt: skip
    eventually(lambda: decoded(op.secret("app")) == {"pw": "TWO"}, timeout=20, what="repair")
    # ... and a refresh that renders the same data writes nothing.
    time.sleep(2)
    secret_rv = op.secret("app")["metadata"]["resourceVersion"]  # type: ignore[index]
    time.sleep(12)  # a refresh interval (jittered by up to 10 %) has passed
    assert op.secret("app")["metadata"]["resourceVersion"] == secret_rv  # type: ignore[index]


def test_a_failed_template_keeps_the_last_good_data_and_shows_no_value(
    op: OperatorProcess,
) -> None:
    op.cli("secret", "set", f"{op.namespace}/canary", f"password={CANARY}")
    op.apply("canary", {"data": [{"key": "password"}],
                        "target": {"template": {"data": {"pw": "{{ password }}"}}}})  # fmt: skip
    ready(op, "canary")
    good = op.secret("canary")
    assert good is not None and decoded(good) == {"pw": CANARY}
    # Fails on the value: fromJson of a non-JSON value, and a key computed from the value.
    merge_patch(op, "canary", {"spec": {"target": {"template": {"data": {
        "pw": "{{ password }}", "json": "first line\n{{ password | fromJson }}",
        "key": "{{ data[password] }}"}}}}})  # fmt: skip
    cond = condition(op, "canary", "TemplateError")
    assert cond["status"] == "False"
    assert "'json', line 2" in cond["message"] or "'key', line 1" in cond["message"]
    now = op.secret("canary")
    assert now is not None and now["data"] == good["data"]
    assert now["metadata"]["resourceVersion"] == good["metadata"]["resourceVersion"]
    eventually(lambda: "TemplateError" in op.event_reasons(), what="a TemplateError event")
    op.stop()  # posts the Events still queued
    haystack = op.log() + json.dumps(op.events()) + json.dumps(op.msec("canary"))
    for needle in (CANARY, base64.b64encode(CANARY.encode()).decode()):
        assert needle not in haystack


def test_a_template_reaches_no_other_managed_secret(op: OperatorProcess) -> None:
    op.cli("secret", "set", f"{op.namespace}/other", f"token={CANARY}")
    op.apply("other", {"data": [{"key": "token"}]})
    ready(op, "other")
    op.cli("secret", "set", f"{op.namespace}/mine", "user=app")
    op.apply("mine", {"data": [{"key": "user"}],
                      "target": {"template": {"data": {"t": "{{ token }}{{ data['token'] }}"}}}})  # fmt: skip
    cond = condition(op, "mine", "TemplateError")
    assert "'token' is undefined" in cond["message"]
    assert op.secret("mine") is None


@pytest.mark.parametrize(("template", "says"), [
    pytest.param({"data": {"x": "a"}, "mergePolicy": "Sometimes"}, "mergePolicy must be",
                 id="merge-policy"),
    pytest.param({"data": {}}, "needs data (key -> template), templateFrom or preset", id="no-data"),
    pytest.param({"templateFrom": [{"configMap": {"name": "Not_A_Name"}}]},
                 "configMap.name must be a ConfigMap name", id="bad-configmap-name"),
    pytest.param({"data": {"..x": "a"}}, "template keys are Secret keys", id="bad-key"),
    pytest.param({"data": {"x": "a"}, "type": "kubernetes.io/service-account-token"},
                 "never writes", id="token-type"),
])  # fmt: skip
def test_the_apiserver_refuses_a_bad_template_with_its_message(
    op: OperatorProcess, template: dict[str, Any], says: str
) -> None:
    with pytest.raises(urllib.error.HTTPError) as info:
        op.apply("bad", {"data": [{"key": "k"}], "target": {"template": template}})
    assert info.value.code == 422
    assert says in json.loads(info.value.read())["message"]


def test_templates_from_a_configmap_re_render_every_user_when_it_changes(
    op: OperatorProcess,
) -> None:
    config_maps = f"/api/v1/namespaces/{op.namespace}/configmaps"
    use = {"target": {"template": {"templateFrom": [{"configMap": {"name": "dsn"}}],
                                   "data": {"own": "{{ user }}"}}}}  # fmt: skip
    for name in ("one", "two"):
        op.cli("secret", "set", f"{op.namespace}/{name}", f"user={name}", "password=pw")
        op.apply(name, {"data": [{"key": "user"}, {"key": "password"}], **use})
    # No ConfigMap yet: nothing is written, and the condition says which one is missing.
    assert "ConfigMap dsn (templateFrom) does not exist" in condition(op, "one", "TemplateError")[
        "message"]
    assert op.secret("one") is None
    op.kube.request("POST", config_maps, {"metadata": {"name": "dsn"}, "data": {
        "url": "postgres://{{ user }}:{{ password }}@db/app", "own": "ignored"}})  # fmt: skip
    for name in ("one", "two"):
        eventually(lambda n=name: op.secret(n) is not None and decoded(op.secret(n)) == {
            "url": f"postgres://{n}:pw@db/app", "own": n}, timeout=20, what=f"{name} rendered")
    op.kube.request("PATCH", f"{config_maps}/dsn",
                    {"data": {"url": "postgres://{{ user }}:{{ password }}@db2/app"}},
                    content_type="application/merge-patch+json")  # fmt: skip
    for name in ("one", "two"):
        eventually(lambda n=name: decoded(op.secret(n))["url"] == f"postgres://{n}:pw@db2/app",
                   timeout=30, what=f"{name} re-rendered")  # fmt: skip
    assert "template ConfigMap dsn changed; syncing" in op.log()


def test_presets_build_a_dotenv_file_and_a_pull_secret(op: OperatorProcess) -> None:
    op.cli("secret", "set", f"{op.namespace}/env", "API_KEY=k$y\"1", "DB_USER=app")
    op.apply("env", {"data": [{"key": "API_KEY"}, {"key": "DB_USER"}],
                     "target": {"template": {"preset": "dotenv"}}})  # fmt: skip
    op.cli("secret", "set", f"{op.namespace}/robot", "registry=ghcr.io", "user=robot",
           f"token={CANARY}")  # fmt: skip
    op.apply("robot", {"data": [{"key": "registry"}, {"key": "user"}, {"key": "token"}],
                       "target": {"template": {"preset": "dockerconfigjson", "presetKeys": {
                           "username": "user", "password": "token"}}}})  # fmt: skip
    ready(op, "env")
    assert decoded(op.secret("env")) == {".env": "API_KEY='k$y\"1'\nDB_USER='app'\n"}
    ready(op, "robot")
    secret = op.secret("robot")
    assert secret is not None and secret["type"] == "kubernetes.io/dockerconfigjson"
    entry = json.loads(decoded(secret)[".dockerconfigjson"])["auths"]["ghcr.io"]
    assert (entry["username"], entry["password"]) == ("robot", CANARY)
    # A required key that is not stored: the Secret keeps its data, the status names the key.
    merge_patch(op, "robot", {"spec": {"target": {"template": {"presetKeys": {
        "username": "user", "password": "missing"}}}}})  # fmt: skip
    cond = condition(op, "robot", "TemplateError")
    assert "'missing'" in cond["message"] and CANARY not in cond["message"]
    assert op.secret("robot")["data"] == secret["data"]  # type: ignore[index]
