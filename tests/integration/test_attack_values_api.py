"""A security review's attacks on the values API that worked (issue 16).

Each test is an attack that succeeds on today's code, written as the behaviour the fix must give,
and marked ``xfail(strict=True)``: when a hole is closed the test passes, strict xfail fails,
and the mark comes off. The attacker roles are a namespace tenant holding one right on one
name, a tenant with no rights, an anonymous network client, and a user of the CLI.
"""

from __future__ import annotations

import http.server
import os
import ssl
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from strongroom.server import tls
from tests.components.kube import KubeCluster
from tests.components.operator import STRONGROOM, child_env, eventually
from tests.components.values_api import ApiClient, ServerProcess, token_for
from tests.conftest import MASTER_KEY

NS = "attack2-tenant"
OTHER = "attack2-other"
VALUES = {"apiGroups": ["strongroom.io"], "resources": ["managedsecrets/values"]}


def _base(ns: str = NS) -> str:
    return f"/v1/namespaces/{ns}/secrets"


@pytest.fixture(scope="module")
def server(kube: KubeCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    store = f"sqlite:///{tmp_path_factory.mktemp('attack2') / 'store.db'}"
    proc = ServerProcess(kube, child_env(store, MASTER_KEY.hex()),
                         tmp_path_factory.mktemp("attack2-srv"),
                         extra=("--decision-cache-seconds", "1", "--rate", "2", "--burst", "10"))  # fmt: skip
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def api(server: ServerProcess) -> ApiClient:
    return ApiClient(server.port, server.root / "api-ca.crt")


@pytest.fixture(scope="module")
def tokens(kube: KubeCluster, api: ApiClient) -> dict[str, str]:
    """``setter`` may set ``stripe`` in NS; ``nobody`` holds nothing; OTHER/theirs exists."""
    for ns in (NS, OTHER):
        kube.ensure_namespace(ns)
    setter = [{**VALUES, "resourceNames": ["stripe"], "verbs": ["create", "update"]}]
    kube.grant(NS, "setter", setter)
    kube.grant(NS, "nobody", [])
    kube.grant(OTHER, "admin", [{**VALUES, "verbs": ["*"]}])
    found = {who: token_for(kube, NS, who) for who in ("setter", "nobody")}
    found["other-admin"] = token_for(kube, OTHER, "admin")

    def seeded() -> bool:  # RBAC takes a moment to see new Roles
        reply = api.call("PATCH", f"{_base(OTHER)}/theirs", {"data": {"pw": "their-value"}},
                         token=found["other-admin"])  # fmt: skip
        return reply.status == 200

    eventually(seeded, timeout=30, what="the Roles in effect")
    return found


@pytest.mark.xfail(strict=True, reason="open hole: the set verb (create/update) is chosen from "
                   "the store before authorization, and the 403 names it")  # fmt: skip
def test_attack_a_tenant_without_rights_learns_which_secrets_another_namespace_has(
    api: ApiClient, tokens: dict[str, str]
) -> None:
    """docs/security.md: existence is learned 'by anyone holding a set right on its name'.
    Here a ServiceAccount with no right at all, in another namespace, tells an existing secret
    from a missing one: the refusal says 'needs update' for one and 'needs create' for the
    other (and the denied audit row records the same)."""
    probe = {"data": {"k": "v"}}
    there = api.call("PATCH", f"{_base(OTHER)}/theirs", probe, token=tokens["nobody"])
    absent = api.call("PATCH", f"{_base(OTHER)}/absent", probe, token=tokens["nobody"])
    assert there.status == absent.status == 403
    assert there.body["error"]["message"].replace("theirs", "NAME") == \
        absent.body["error"]["message"].replace("absent", "NAME")  # fmt: skip


@pytest.mark.xfail(strict=True, reason="open hole: json.loads raises ValueError (not "
                   "JSONDecodeError) for an integer over 4300 digits: 500 internal")  # fmt: skip
def test_attack_a_huge_integer_in_a_body_is_a_clear_400_not_a_500(
    api: ApiClient, tokens: dict[str, str]
) -> None:
    """docs/security.md promises every refusal is a JSON 4xx, never a 5xx. A tenant with the
    set right sends a value that is an integer of 5000 digits: Python's int-from-string limit
    raises ValueError inside json.loads, which the body parser does not catch."""
    raw = b'{"data": {"key": ' + b"7" * 5000 + b"}}"
    reply = api.call("PATCH", f"{_base()}/stripe", raw=raw, token=tokens["setter"])
    assert reply.status == 400, reply.text
    assert reply.body["error"]["code"] == "invalid"


def _token_reviews(kube: KubeCluster) -> float:
    """How many TokenReviews the apiserver has answered (its own request counter)."""
    total = 0.0
    for line in kube.request_text("/metrics").splitlines():
        if line.startswith("apiserver_request_total{") and 'resource="tokenreviews"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.xfail(strict=True, reason="open hole: unauthenticated requests are not rate "
                   "limited; each garbage token is a TokenReview at the apiserver")  # fmt: skip
def test_attack_an_anonymous_client_cannot_drive_unbounded_token_reviews(
    kube: KubeCluster, api: ApiClient, tokens: dict[str, str]
) -> None:
    """The rate limit is taken after authentication, keyed by the UID, and refusals of
    authentication are not cached: a client with no credentials at all, from one address,
    makes the server's identity send one TokenReview per request (two with
    --accept-default-audiences), using up the server's worker threads, which the store's
    calls share, and the apiserver's capacity. The server here allows a burst of 10 per
    identity; 60 anonymous requests should not cost 60 reviews."""
    before = _token_reviews(kube)
    statuses = [api.call("GET", _base(), token=f"garbage-{uuid.uuid4().hex}").status
                for _ in range(60)]  # fmt: skip
    reviews = _token_reviews(kube) - before
    assert set(statuses) <= {401, 429}
    assert reviews <= 20, f"{reviews:g} TokenReviews for 60 anonymous requests"


def _catcher(seen: list[str]) -> type[http.server.BaseHTTPRequestHandler]:
    """An attacker's HTTPS endpoint: it keeps the Authorization header it is sent."""

    class Catcher(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization", ""))
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"error": {"code": "unauthenticated", "message": "no"}}')

        def log_message(self, *_args: object) -> None:
            return None

    return Catcher


@pytest.mark.xfail(strict=True, reason="open hole: without --token-file the CLI sends the "
                   "kubeconfig's apiserver token to whatever --server/STRONGROOM_SERVER names")  # fmt: skip
def test_attack_the_cli_does_not_hand_the_kubeconfig_token_to_any_server(tmp_path: Path) -> None:
    """``STRONGROOM_SERVER`` set by a CI file, a shell profile or a repository's .envrc, or a
    mistyped ``--server``: the CLI's default credential is the kubeconfig user's bearer token,
    made for the apiserver (often a cluster admin's), and it is sent to that URL even though a
    values API started without --accept-default-audiences would refuse it anyway. The
    receiver replays it at the apiserver. The docs put this risk on the server's flag only."""
    pair = tls.self_signed(["127.0.0.1"])
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_bytes(pair.cert_pem)
    key.write_bytes(pair.key_pem)
    key.chmod(0o600)
    admin_token = "kubeconfig-admin-" + uuid.uuid4().hex
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: admin\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        f"users: [{{name: admin, user: {{token: {admin_token}}}}}]\n"
        "contexts: [{name: admin, context: {cluster: c, user: admin}}]\n"
    )
    seen: list[str] = []
    httpd = http.server.HTTPServer(("127.0.0.1", 0), _catcher(seen))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
        env |= {"KUBECONFIG": str(kubeconfig),
                "STRONGROOM_SERVER": f"https://127.0.0.1:{httpd.server_address[1]}"}  # fmt: skip
        subprocess.run([STRONGROOM, "--ca-file", str(cert), "secret", "get", "team/app"],
                       env=env, capture_output=True, timeout=60, check=False)  # fmt: skip
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert seen, "the CLI never called the server"
    assert all(admin_token not in header for header in seen)


@pytest.mark.xfail(strict=True, reason="open hole: the self-signed server certificate is a CA "
                   "(BasicConstraints ca=True) whose key sits in a Secret")  # fmt: skip
def test_attack_the_self_signed_certificate_cannot_vouch_for_other_hosts() -> None:
    """The self-signed certificate is published as ``ca.crt`` (ConfigMap ``<release>-api-ca``)
    for clients to trust, and it is a CA: whoever reads the TLS Secret (any reader of Secrets
    in the release namespace) can sign a certificate for any host name, and every client or
    pod trust bundle that took ``ca.crt`` accepts it. A server certificate needs ca=False."""
    from cryptography import x509

    pair = tls.self_signed(["strongroom-api.strongroom-system.svc"])
    cert = x509.load_pem_x509_certificate(pair.cert_pem)
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
