"""The values API on the real apiserver: identities, rights, tokens, paths, audit, canaries.

Each ServiceAccount holds exactly one right on ``managedsecrets/values`` (through an ordinary
Role), and every other request it makes is refused; tokens the cluster does not vouch for are
401; no spelling of a path reaches another namespace; every decision is audited under the
caller's identity; a canary value is never in a log line, an error, an audit row or a metric.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from strongroom import Strongroom
from tests.components.kube import KubeCluster
from tests.components.operator import STRONGROOM, OperatorProcess, child_env, eventually
from tests.components.values_api import ApiClient, ServerProcess, tls_ca, token_for
from tests.conftest import MASTER_KEY, make_settings

NS = "api-tenant"
OTHER = "api-other"
CANARY = "canary-" + uuid.uuid4().hex
VALUES = {"apiGroups": ["strongroom.io"], "resources": ["managedsecrets/values"]}
RIGHTS = {
    "setter": [{**VALUES, "resourceNames": ["stripe"], "verbs": ["create", "update"]}],
    "lister": [{**VALUES, "verbs": ["list"]}],
    "getter": [{**VALUES, "verbs": ["get"]}],
    "nobody": [],
}


def _base(ns: str = NS) -> str:
    return f"/v1/namespaces/{ns}/secrets"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('api') / 'store.db'}"


@pytest.fixture(scope="module")
def server(
    kube: KubeCluster, store: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    proc = ServerProcess(kube, child_env(store, MASTER_KEY.hex()), tmp_path_factory.mktemp("srv"),
                         extra=("--decision-cache-seconds", "1", "--rate", "1000",
                                "--burst", "1000"))  # fmt: skip
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def api(server: ServerProcess) -> ApiClient:
    return ApiClient(server.port, server.root / "api-ca.crt")


@pytest.fixture(scope="module")
def tokens(kube: KubeCluster) -> dict[str, str]:
    for ns in (NS, OTHER):
        kube.ensure_namespace(ns)
    found = {}
    for who, rules in RIGHTS.items():
        kube.grant(NS, who, rules)
        found[who] = token_for(kube, NS, who)
    kube.grant(OTHER, "admin", [{**VALUES, "verbs": ["*"]}])
    found["other-admin"] = token_for(kube, OTHER, "admin")
    return found


def _seeded(api: ApiClient, tokens: dict[str, str]) -> None:
    """stripe in the tenant's namespace and a secret in the other one, set through the API."""

    def done() -> bool:  # RBAC takes a moment to see new Roles
        one = api.call("PATCH", f"{_base()}/stripe", {"data": {"key": CANARY}},
                       token=tokens["setter"])  # fmt: skip
        two = api.call("PATCH", f"{_base(OTHER)}/theirs", {"data": {"pw": CANARY}},
                       token=tokens["other-admin"])  # fmt: skip
        return one.status == two.status == 200

    eventually(done, timeout=30, what="the Roles in effect")


def test_each_identity_may_do_exactly_its_one_right(api: ApiClient, tokens: dict[str, str]) -> None:
    _seeded(api, tokens)
    one = f"{_base()}/stripe"
    requests = {
        "set stripe": ("PATCH", one, {"data": {"key": "v2"}}),
        "set another name": ("PATCH", f"{_base()}/other", {"data": {"key": "v"}}),
        "replace stripe": ("PUT", one, {"data": {"key": "v3"}}),
        "list": ("GET", _base(), None),
        "history": ("GET", f"{one}/history", None),
        "get": ("GET", one, None),
        "get one key": ("GET", f"{one}/keys/key", None),
        "verify": ("POST", f"{one}/verify", {"key": "key", "value": "guess"}),
        "delete": ("DELETE", one, None),
        "get in another namespace": ("GET", f"{_base(OTHER)}/theirs", None),
        "list another namespace": ("GET", _base(OTHER), None),
        "set in another namespace": ("PATCH", f"{_base(OTHER)}/theirs", {"data": {"pw": "x"}}),
    }
    allowed = {
        "setter": {"set stripe", "replace stripe"},
        "lister": {"list", "history"},
        "getter": {"get", "get one key"},
        "nobody": set(),
    }
    seen = {}
    for who, may in allowed.items():
        for what, (method, path, body) in requests.items():
            reply = api.call(method, path, body, token=tokens[who])
            seen[(who, what)] = reply.status
            expected = 200 if what in may else 403
            assert reply.status == expected, (who, what, reply.text)
            if reply.status == 403:
                assert reply.body["error"]["code"] == "forbidden"
                assert "managedsecrets/values.strongroom.io" in reply.body["error"]["message"]
    listing = api.call("GET", _base(), token=tokens["lister"]).body
    assert listing["items"][0]["keys"] == {"key": "••••••••"}
    assert CANARY not in json.dumps(listing)
    got = api.call("GET", f"{one}/keys/key", token=tokens["getter"]).body
    assert got["value"] == "v3"


def _forged(kube: KubeCluster, ns: str, name: str, uid: str, *, expires_in: int) -> str:
    """A token signed with the cluster's own ServiceAccount key: genuine but for its ``exp``."""
    key = serialization.load_pem_private_key((kube.root / "sa.key").read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    now = int(time.time())
    claims = {"iss": "https://kubernetes.default.svc", "aud": ["strongroom"],
              "sub": f"system:serviceaccount:{ns}:{name}", "iat": now - 7200,
              "nbf": now - 7200, "exp": now + expires_in,
              "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": name, "uid": uid}}}  # fmt: skip

    def b64(doc: dict[str, object]) -> str:
        raw = json.dumps(doc, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    signing = f"{b64({'alg': 'RS256', 'typ': 'JWT'})}.{b64(claims)}"
    signature = key.sign(signing.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def test_tokens_the_cluster_does_not_vouch_for_are_refused(
    kube: KubeCluster, api: ApiClient, tokens: dict[str, str]
) -> None:
    path = f"{_base()}/stripe"
    _seeded(api, tokens)
    sa = kube.request("GET", f"/api/v1/namespaces/{NS}/serviceaccounts/getter")
    fresh = _forged(kube, NS, "getter", sa["metadata"]["uid"], expires_in=600)
    assert api.call("GET", path, token=fresh).status == 200  # the forgery itself is sound
    refused = {
        "no token": None,
        "not a token": "not-a-token",
        "the apiserver's audience": kube.service_account_token(NS, "getter"),
        "another audience": token_for(kube, NS, "getter", audience="vault"),
        "expired an hour ago": _forged(kube, NS, "getter", sa["metadata"]["uid"], expires_in=-3600),
    }
    for what, token in refused.items():
        reply = api.call("GET", path, token=token)
        assert reply.status == 401, (what, reply.text)
        assert reply.body["error"]["code"] == "unauthenticated"

    kube.grant(NS, "doomed", RIGHTS["getter"])
    doomed = token_for(kube, NS, "doomed")
    eventually(lambda: api.call("GET", path, token=doomed).status == 200, what="doomed's Role")
    kube.request("DELETE", f"/api/v1/namespaces/{NS}/serviceaccounts/doomed")
    # The apiserver keeps a token it authenticated for 10 s, the server for 1 s more
    # (--decision-cache-seconds 1): refused after both (a bound not asserted on time, which a
    # loaded machine stretches), then for good.
    eventually(lambda: api.call("GET", path, token=doomed).status == 401, timeout=40,
               what="the deleted ServiceAccount's token refused")  # fmt: skip
    assert api.call("GET", path, token=doomed).status == 401


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(f"/v1/namespaces/{NS}/secrets/../../{OTHER}/secrets/theirs", id="dot-dot"),
        pytest.param(
            f"/v1/namespaces/{NS}/secrets/x/../../../{OTHER}/secrets/theirs",
            id="dot-dot-after-a-name",
        ),
        pytest.param(f"/v1/namespaces/{NS}%2F..%2F{OTHER}/secrets/theirs", id="encoded-slash-ns"),
        pytest.param(
            f"/v1/namespaces/{NS}/secrets/..%2F..%2F{OTHER}%2Fsecrets%2Ftheirs",
            id="encoded-slash-name",
        ),
        pytest.param(
            f"/v1/namespaces/{NS}/secrets/%2e%2e/%2e%2e/{OTHER}/secrets/theirs", id="encoded-dots"
        ),
        pytest.param(f"/v1/namespaces/{OTHER.upper()}/secrets/theirs", id="upper-case-ns"),
        pytest.param(f"/v1/namespaces/{NS}//{OTHER}/secrets/theirs", id="double-slash"),
        pytest.param(f"/v1/namespaces/{NS}/./secrets/../../{OTHER}/secrets/theirs", id="dot"),
        pytest.param(f"/v1/namespaces/{NS}\\..\\{OTHER}/secrets/theirs", id="backslashes"),
    ],
)
def test_no_spelling_of_a_path_reaches_another_namespace(
    api: ApiClient, tokens: dict[str, str], path: str
) -> None:
    _seeded(api, tokens)
    reply = api.call("GET", path, token=tokens["getter"])
    assert 400 <= reply.status < 500, reply.text
    assert CANARY not in reply.text


def test_every_decision_is_audited_under_the_callers_identity(
    api: ApiClient, tokens: dict[str, str], store: str
) -> None:
    _seeded(api, tokens)
    assert api.call("DELETE", f"{_base()}/stripe", token=tokens["getter"]).status == 403
    with Strongroom.open(make_settings(store)) as room:
        events = [
            e for e in room.audit_events() if e.actor.startswith(f"system:serviceaccount:{NS}")
        ]
        assert room.audit_verify().ok
    setter = f"system:serviceaccount:{NS}:setter"
    written = [e for e in events if e.actor == setter and e.action == "secret.set"]
    assert written, "the set is audited under the ServiceAccount's name"
    origin = json.loads(written[-1].origin)
    assert origin["decision"] == "allowed"
    assert origin["source"] == "127.0.0.1"
    assert "system:serviceaccounts" in origin["groups"]
    assert origin["uid"]
    denied = [e for e in events if e.action == "api.delete" and e.outcome == "denied"]
    assert denied[-1].actor == f"system:serviceaccount:{NS}:getter"
    assert "needs delete on managedsecrets/values.strongroom.io" in denied[-1].detail
    assert json.loads(denied[-1].origin)["decision"].startswith("denied: needs delete")


def test_a_canary_is_never_in_a_log_an_error_an_audit_row_or_a_metric(
    api: ApiClient, tokens: dict[str, str], server: ServerProcess, store: str
) -> None:
    _seeded(api, tokens)
    setter, one = tokens["setter"], f"{_base()}/stripe"
    errors = [
        api.call("PATCH", one, {CANARY: "x"}, token=setter),  # a value where a field belongs
        api.call("PATCH", one, {"data": {"bad/key": CANARY}}, token=setter),
        api.call("PATCH", one, {"data": {"k": CANARY}, "unset": CANARY}, token=setter),
        api.call("PATCH", one, {"data": CANARY}, token=setter),
        api.call("PATCH", one, raw=b'{"data": {"k": "' + CANARY.encode() + b'"', token=setter),
        api.call("PATCH", f"{_base()}/{CANARY}X", {"data": {"k": CANARY}}, token=setter),
        api.call("GET", f"{_base()}/stripe?version={CANARY}", token=tokens["getter"]),
        api.call("POST", f"{one}/verify", {"key": "key", "value": CANARY}, token=tokens["getter"]),
        api.call("GET", one, token=CANARY),
        api.call("PATCH", one, {"data": {"key": "x" * (2 << 20)}}, token=setter),
    ]
    for reply in errors:
        assert 400 <= reply.status < 500, reply.text[:300]
        assert CANARY not in reply.text
    assert CANARY not in server.log()
    assert CANARY not in api.call("GET", "/metrics").text
    with Strongroom.open(make_settings(store)) as room:
        rows = [json.dumps([e.actor, e.action, e.namespace, e.name, e.key, e.detail, e.origin])
                for e in room.audit_events()]  # fmt: skip
    assert not [row for row in rows if CANARY in row]


def test_the_openapi_document_lists_every_route(api: ApiClient) -> None:
    doc = api.call("GET", "/openapi.json").body
    assert doc["openapi"].startswith("3.")
    ops = {(path, method) for path, item in doc["paths"].items() for method in item}
    assert ("/v1/namespaces/{ns}/secrets/{name}", "patch") in ops
    assert ("/v1/namespaces/{ns}/secrets/{name}/verify", "post") in ops


def test_a_value_set_through_the_api_reaches_the_synced_secret(
    kube: KubeCluster, tmp_path: Path
) -> None:
    """``run --serve``: the API in the operator's process, on its SQLite store."""
    namespace = f"op-{uuid.uuid4().hex[:8]}"
    kube.ensure_namespace(namespace)
    proc = OperatorProcess(kube, namespace, child_env(f"sqlite:///{tmp_path / 's.db'}",
                                                      MASTER_KEY.hex()), tmp_path / "op.log")  # fmt: skip
    port = ServerProcess(kube, {}, tmp_path).port
    proc.args = ("--serve", "--serve-address", "127.0.0.1", "--serve-port", str(port),
                 "--serve-tls-secret", f"{namespace}/api-tls", "--serve-tls-san", "127.0.0.1")  # fmt: skip
    kube.grant(
        namespace, "ci", [{**VALUES, "resourceNames": ["db"], "verbs": ["create", "update"]}]
    )
    token = token_for(kube, namespace, "ci")
    proc.start()
    try:
        ca = eventually(lambda: tls_ca(kube, namespace, "api-tls", tmp_path / "ca.crt"),
                        what="the API's certificate")  # fmt: skip
        api = ApiClient(port, ca)
        proc.apply("db", {"data": [{"key": "password"}]})
        reply = eventually(lambda: (r := api.call("PATCH", f"/v1/namespaces/{namespace}/secrets/db",
                                                  {"data": {"password": "from-the-api"}},
                                                  token=token)).status == 200 and r,
                           what="a set through the API")  # fmt: skip
        assert reply.body["version"] >= 1

        def synced() -> bool:
            secret = proc.secret("db")
            data = (secret or {}).get("data", {})
            return base64.b64decode(data.get("password", "")) == b"from-the-api"

        eventually(synced, timeout=20, what="the value in the synced Secret")
    finally:
        proc.stop()


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
_BODIES = (
    _JSON.map(lambda doc: json.dumps(doc).encode())
    | st.fixed_dictionaries({"data": _JSON}, optional={"unset": _JSON, "description": _JSON}).map(
        lambda doc: json.dumps(doc).encode()
    )
    | st.binary(max_size=200)
)
_SEGMENT = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=0, max_size=12)


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(
    method=st.sampled_from(["GET", "PUT", "PATCH", "POST", "DELETE", "HEAD", "OPTIONS"]),
    tail=st.lists(_SEGMENT, max_size=4),
    body=_BODIES,
    content_type=st.sampled_from(["application/json", "text/plain", ""]),
)
def test_fuzzed_paths_and_bodies_get_a_json_4xx_never_a_5xx(
    api: ApiClient, tokens: dict[str, str], method: str, tail: list[str], body: bytes,
    content_type: str,
) -> None:  # fmt: skip
    path = "/".join([_base(), "stripe", *tail]) if tail else f"{_base()}/stripe"
    path = urllib.parse.quote(path, safe="/%?=&.")
    reply = api.call(method, path, raw=body, token=tokens["setter"], content_type=content_type)
    assert reply.status < 500, reply.text[:300]
    if reply.status >= 400 and method != "HEAD":
        assert reply.body["error"]["code"], reply.text[:300]


def _cli(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([STRONGROOM, *args], env=env, input=stdin, capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip


def test_the_cli_through_the_server_prints_what_direct_mode_prints(
    kube: KubeCluster, api: ApiClient, tokens: dict[str, str], store: str, tmp_path: Path
) -> None:
    _seeded(api, tokens)
    kube.grant(NS, "ci", [{**VALUES, "verbs": ["*"]}])
    token = token_for(kube, NS, "ci")
    (tmp_path / "token").write_text(token)
    plain = {k: v for k, v in os.environ.items() if not k.startswith(("STRONGROOM_", "KUBE"))}
    direct = child_env(store, MASTER_KEY.hex())
    exec_plugin = {"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                   "status": {"token": token}}  # fmt: skip
    kubeconfigs = {
        "token": kube.write_kubeconfig(tmp_path / "token.kubeconfig", token=token, user="ci"),
        "exec": tmp_path / "exec.kubeconfig",
    }
    config = yaml.safe_load(kubeconfigs["token"].read_text())
    config["users"][0]["user"] = {"exec": {
        "apiVersion": "client.authentication.k8s.io/v1", "command": "/bin/sh",
        "args": ["-c", f"echo '{json.dumps(exec_plugin)}'"], "interactiveMode": "Never"}}  # fmt: skip
    kubeconfigs["exec"].write_text(yaml.safe_dump(config))
    modes = {
        "--token-file": ({**plain, "STRONGROOM_SERVER": api.url},
                         ["--token-file", str(tmp_path / "token"), "--ca-file", str(api.ca_file)]),
        **{f"kubeconfig ({kind})": ({**plain, "KUBECONFIG": str(path)},
                                    ["--server", api.url, "--ca-file", str(api.ca_file),
                                     "--kubeconfig-token"])
           for kind, path in kubeconfigs.items()},
    }  # fmt: skip
    ref = f"{NS}/cli-demo"
    eventually(lambda: _cli(modes["--token-file"][0], *modes["--token-file"][1], "secret", "set",
                            ref, "user=app", "cfg:={\"a\": [1, 2]}").returncode == 0,
               what="a set through the server")  # fmt: skip
    expected = {
        ("secret", "get", ref): _cli(direct, "secret", "get", ref).stdout,
        ("secret", "get", ref, "cfg"): _cli(direct, "secret", "get", ref, "cfg").stdout,
        ("secret", "get", ref, "--json"): _cli(direct, "secret", "get", ref, "--json").stdout,
        ("secret", "list", NS): _cli(direct, "secret", "list", NS).stdout,
    }
    assert "user=app" in expected[("secret", "get", ref)]
    for mode, (env, flags) in modes.items():
        for command, output in expected.items():
            result = _cli(env, *flags, *command)
            assert (result.returncode, result.stdout) == (0, output), (mode, command, result.stderr)
        matched = _cli(env, *flags, "secret", "verify", ref, "user", stdin="app\n")
        assert (matched.returncode, matched.stdout) == (0, "match\n"), mode
        missing = _cli(env, *flags, "secret", "get", f"{NS}/absent")
        assert missing.returncode == 1
        assert missing.stderr == _cli(direct, "secret", "get", f"{NS}/absent").stderr, mode
    refused = _cli(modes["--token-file"][0], "--token-file", str(tmp_path / "token"), "--ca-file",
                   str(api.ca_file), "secret", "get", f"{OTHER}/theirs")  # fmt: skip
    assert refused.returncode == 1
    assert "forbidden" in refused.stderr
    deleted = _cli(modes["--token-file"][0], *modes["--token-file"][1], "secret", "delete", ref)
    assert deleted.stdout == f"{ref}: deleted (was version 1)\n"
    assert _cli(direct, "secret", "get", ref).returncode == 1


def test_the_readmes_kubectl_role_lets_ci_set_its_one_secret(
    kube: KubeCluster, api: ApiClient
) -> None:
    """README, "A tenant's workflow": the Role made with kubectl as written there."""
    ns = f"payments-{uuid.uuid4().hex[:6]}"
    kube.ensure_namespace(ns)
    kube.kubectl("create", "serviceaccount", "ci", "-n", ns)
    kube.kubectl("create", "role", "stripe-setter", "-n", ns, "--verb=create,update",
                 "--resource=managedsecrets.strongroom.io/values", "--resource-name=stripe")  # fmt: skip
    kube.kubectl("create", "rolebinding", "ci-stripe", "-n", ns, "--role=stripe-setter",
                 f"--serviceaccount={ns}:ci")  # fmt: skip
    token = kube.kubectl(
        "create", "token", "ci", "-n", ns, "--audience", "strongroom"
    ).stdout.strip()
    path = f"/v1/namespaces/{ns}/secrets"
    eventually(lambda: api.call("PATCH", f"{path}/stripe", {"data": {"api-key": "k"}},
                                token=token).status == 200, what="the README's Role")  # fmt: skip
    assert api.call("GET", f"{path}/stripe", token=token).status == 403
    assert api.call("PATCH", f"{path}/other", {"data": {"k": "v"}}, token=token).status == 403


def test_a_busy_identity_gets_429_and_another_does_not(
    kube: KubeCluster, tokens: dict[str, str], tmp_path: Path
) -> None:
    proc = ServerProcess(kube, child_env(f"sqlite:///{tmp_path / 's.db'}", MASTER_KEY.hex()),
                         tmp_path, extra=("--rate", "0.2", "--burst", "3"))  # fmt: skip
    limited = proc.start()
    try:
        path = f"{_base()}/stripe"
        codes = [limited.call("GET", path, token=tokens["getter"]).status for _ in range(5)]
        assert codes[3:] == [429, 429], codes
        reply = limited.call("GET", path, token=tokens["getter"])
        assert reply.body["error"]["code"] == "rate_limited" and "Retry-After" in reply.headers
        assert limited.call("GET", path, token=tokens["lister"]).status == 403  # not limited
    finally:
        proc.stop()


def test_on_postgresql_the_api_writes_audited_values_and_stops_cleanly(
    kube: KubeCluster, tokens: dict[str, str], pg_url: str, tmp_path: Path
) -> None:
    """``strongroom serve`` as the chart runs it on PostgreSQL; SIGTERM ends it with exit 0."""
    proc = ServerProcess(kube, child_env(pg_url, MASTER_KEY.hex()), tmp_path)
    client = proc.start()
    try:
        reply = eventually(lambda: (r := client.call("PATCH", f"{_base()}/stripe",
                                                     {"data": {"key": "pg"}},
                                                     token=tokens["setter"])).status == 200 and r,
                           what="a set on PostgreSQL")  # fmt: skip
        assert reply.body["version"] == 1
        assert client.call("GET", f"{_base()}/stripe", token=tokens["getter"]).body["data"] == {
            "key": "pg"}  # fmt: skip
    finally:
        assert proc.proc is not None
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.proc.wait(30) == 0
        proc.stop()
    assert "values API stopping" in proc.log()
    with Strongroom.open(make_settings(pg_url)) as room:
        assert room.audit_verify().ok
        sets = [e for e in room.audit_events() if e.action == "secret.set"]
    assert sets[-1].actor == f"system:serviceaccount:{NS}:setter"
    assert json.loads(sets[-1].origin)["decision"] == "allowed"
