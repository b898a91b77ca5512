"""data[].database through the real apiserver, the operator process and a PostgreSQL that checks
passwords: a client without a pod logs in with what the Secret holds, renewals keep every
login working, the grace window ends the old role, orphans and tenants are dealt with.

The TTLs here are seconds long: ``STRONGROOM_TEST_MIN_DATABASE_TTL`` (test-only, see
strongroom.dbitem) lowers the 5-minute floor for these tests; nothing else changes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.components.base import free_port
from tests.components.kube import KubeCluster
from tests.components.operator import STRONGROOM, OperatorProcess, child_env, eventually
from tests.components.pgauth import ADMIN, ADMIN_PASSWORD, login, password_postgres, roles
from tests.components.postgres import PostgresServer
from tests.conftest import MASTER_KEY
from tests.integration.test_operator import decoded, ready

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
TEMPLATE = ["CREATE ROLE \"{{name}}\" LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiry}}'",
            'GRANT app_read TO "{{name}}"']  # fmt: skip
TIMELINE = Path(os.environ.get("STRONGROOM_TEST_TIMELINE", "/tmp/strongroom-db-timeline.txt"))  # noqa: S108


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    with password_postgres() as server:
        yield server


class Setup:
    """An engine, its admin Secret in the operator's namespace, a tenant namespace it selects."""

    def __init__(self, kube: KubeCluster, pg: PostgresServer, tmp_path: Path) -> None:
        self.kube, self.pg, self.tmp_path = kube, pg, tmp_path
        tag = uuid.uuid4().hex[:6]
        self.system = f"srsys-{tag}"
        self.engine = f"pg-{tag}"
        self.prefix = f"sr{tag}_"
        self.tenant = f"db-{tag}"
        kube.ensure_namespace(self.system)
        self.namespace(self.tenant, {"strongroom.io/databases": "yes"})
        kube.request("POST", f"/api/v1/namespaces/{self.system}/secrets", {
            "metadata": {"name": "pg-admin"}, "type": "Opaque",
            "stringData": {"username": ADMIN, "password": ADMIN_PASSWORD}})  # fmt: skip
        kube.request("POST", "/apis/strongroom.io/v1alpha1/databaseengines", {
            "apiVersion": "strongroom.io/v1alpha1", "kind": "DatabaseEngine",
            "metadata": {"name": self.engine},
            "spec": {"connection": {"host": "127.0.0.1", "port": pg.port, "sslmode": "disable",
                                    "credentialsSecret": "pg-admin"},
                     "namespaceSelector": {"matchLabels": {"strongroom.io/databases": "yes"}},
                     "rolePrefix": self.prefix,
                     "roles": [{"name": "app", "creation": TEMPLATE}]},
        })  # fmt: skip
        self.env = child_env(f"sqlite:///{tmp_path / 'store.db'}", MASTER_KEY.hex(),
                             POD_NAMESPACE=self.system, STRONGROOM_DATABASE_ENGINES="true",
                             STRONGROOM_TEST_MIN_DATABASE_TTL="1")  # fmt: skip

    def namespace(self, name: str, labels: dict[str, str]) -> None:
        self.kube.request("POST", "/api/v1/namespaces",
                          {"metadata": {"name": name, "labels": labels}})  # fmt: skip

    def operator(self, namespace: str | None = None, *, args: tuple[str, ...] = (),
                 **extra: str) -> OperatorProcess:  # fmt: skip
        op = OperatorProcess(self.kube, namespace or self.tenant, {**self.env, **extra},
                             self.tmp_path / "operator.log", args=args)  # fmt: skip
        op.start()
        return op

    def item(self, ttl: str, strategy: str = "rotate") -> dict[str, Any]:
        return {"key": "dsn", "database": {"engine": self.engine, "role": "app", "ttl": ttl,
                                           "strategy": strategy}}  # fmt: skip

    def engine_status(self) -> dict[str, Any]:
        path = f"/apis/strongroom.io/v1alpha1/databaseengines/{self.engine}"
        return dict(self.kube.request("GET", path).get("status") or {})

    def mine(self) -> set[str]:
        return roles(self.pg, self.prefix)


@pytest.fixture
def setup(kube: KubeCluster, pg: PostgresServer, tmp_path: Path) -> Setup:
    return Setup(kube, pg, tmp_path)


def credentials(op: OperatorProcess, name: str) -> tuple[str, str]:
    data = decoded(op.secret(name))
    return data["username"], data["password"]


def secret_data(op: OperatorProcess, name: str) -> dict[str, str]:
    try:
        return decoded(op.secret(name))
    except (AssertionError, urllib.error.HTTPError):
        return {}


def reason(op: OperatorProcess, name: str) -> str | None:
    conds = {c["type"]: c for c in (op.msec(name).get("status") or {}).get("conditions") or []}
    return (conds.get("Ready") or {}).get("reason")


def test_synced_credentials_log_in_and_the_old_ones_last_until_the_grace_window_ends(
    setup: Setup,
) -> None:
    """rotate, ttl 15 s (renewed at 10 s), keepPrevious 2 s: the previous role is dropped 2 s
    after the renewal, well before its own expiry (15 s), so the failure is the drop's. The
    expiry is a metric."""
    metrics = free_port()
    op = setup.operator(args=("--metrics-port", str(metrics)))
    try:
        start = time.monotonic()
        op.apply("app", {"data": [setup.item("15s")], "rotation": {"keepPrevious": "2s"}})
        ready(op, "app")
        first_user, first_password = credentials(op, "app")
        issued = time.monotonic() - start
        assert login(setup.pg, first_user, first_password)  # the pod-less client
        dsn = secret_data(op, "app")["dsn"]
        with psycopg.connect(dsn, connect_timeout=5) as conn:  # the DSN key, as an app uses it
            assert conn.execute("SELECT note FROM canary").fetchone() == ("still here",)
        second_user, second_password = eventually(
            lambda: (c := credentials(op, "app"))[0] != first_user and c, timeout=30,
            what="a renewed credential in the Secret")  # fmt: skip
        renewed = time.monotonic() - start
        assert login(setup.pg, second_user, second_password)
        still = login(setup.pg, first_user, first_password)  # inside the grace window
        eventually(lambda: first_user not in setup.mine(), timeout=20, what="previous role dropped")
        dropped = time.monotonic() - start
        assert not login(setup.pg, first_user, first_password)
        assert login(setup.pg, second_user, second_password)
        assert still, "the previous credential failed inside the grace window"
        assert dropped - renewed < 10, "dropped only at its expiry, not after keepPrevious"
        TIMELINE.write_text(json.dumps({"issued": round(issued, 2), "renewed": round(renewed, 2),
                                        "previous_dropped": round(dropped, 2), "ttl": 15,
                                        "keepPrevious": 2}))  # fmt: skip
        print(f"timeline: issued {issued:.2f}s, renewed {renewed:.2f}s, "
              f"previous dropped {dropped:.2f}s")
        assert first_password not in op.log() and second_password not in op.log()
        engine = setup.engine_status()
        assert engine["conditions"][0]["status"] == "True" and engine["liveRoles"] >= 1
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5) as r:
            text = r.read().decode()
        line = next(x for x in text.splitlines() if x.startswith(
            "strongroom_credential_expiry_timestamp_seconds{") and '"app"' in x)  # fmt: skip
        assert 0 < float(line.split()[-1]) - time.time() < 16
        op.delete_and_wait("app")
        eventually(lambda: not setup.mine(), timeout=20, what="roles dropped with the ManagedSecret")
    finally:
        op.stop()


def test_alternate_strategy_keeps_every_login_working_through_twenty_renewals(
    setup: Setup,
) -> None:
    """alternate, ttl 5 s (renewed every 3.3 s): a client reads the Secret and logs in every
    100 ms for twenty renewals; not one login fails. Two roles only, ever."""
    op = setup.operator()
    failures: list[str] = []
    attempts = 0
    seen: list[str] = []
    stop = threading.Event()

    def client() -> None:
        nonlocal attempts
        while not stop.is_set():
            data = secret_data(op, "alt")
            if data:
                attempts += 1
                if data["password"] not in seen:
                    seen.append(data["password"])
                if not login(setup.pg, data["username"], data["password"]):
                    failures.append(time.strftime("%H:%M:%S"))
            time.sleep(0.1)

    try:
        op.apply("alt", {"data": [setup.item("5s", "alternate")]})
        ready(op, "alt")
        thread = threading.Thread(target=client, daemon=True)
        thread.start()
        eventually(lambda: len(seen) >= 21, timeout=200, what="twenty renewals")
        stop.set()
        thread.join(10)
        print(f"alternate: {attempts} logins, {len(failures)} failed, {len(seen) - 1} renewals")
        with TIMELINE.with_suffix(".alternate.txt").open("w") as out:
            out.write(json.dumps({"logins": attempts, "failed": len(failures),
                                  "renewals": len(seen) - 1}))  # fmt: skip
        assert failures == []
        assert len(setup.mine()) == 2
    finally:
        stop.set()
        op.stop()


def test_kill_9_between_create_role_and_the_store_write_leaves_no_unknown_role(
    setup: Setup,
) -> None:
    """Fault injection (STRONGROOM_TEST_FAULT=after-create-role): the operator SIGKILLs itself
    right after CREATE ROLE. Restarted without it, its start-up pass drops that role
    (audited), and the credential it then issues is the only live one."""
    op = setup.operator(STRONGROOM_TEST_FAULT="after-create-role")
    op.apply("crash", {"data": [setup.item("1h")]})
    assert op.proc is not None
    assert op.proc.wait(60) == -signal.SIGKILL
    orphans = setup.mine()
    assert len(orphans) == 1
    op.proc = None
    op = setup.operator()
    try:
        ready(op, "crash")
        user, password = credentials(op, "crash")
        assert setup.mine() == {user} and user not in orphans
        assert login(setup.pg, user, password)
        audit = subprocess.run([STRONGROOM, "audit", "tail", "--count", "50"], env=setup.env,
                               capture_output=True, text=True, check=True).stdout  # fmt: skip
        assert f"orphan role {next(iter(orphans))} dropped" in audit
    finally:
        op.stop()


def test_a_namespace_outside_the_engines_selector_is_refused(setup: Setup) -> None:
    outsider = f"{setup.tenant}-out"
    setup.namespace(outsider, {"strongroom.io/databases": "no"})
    op = setup.operator(outsider)
    try:
        op.apply("nope", {"data": [setup.item("1h")]})
        eventually(lambda: reason(op, "nope") == "EngineNotAllowed", timeout=45,
                   what="Ready=False EngineNotAllowed")  # fmt: skip
        assert op.secret("nope") is None
        assert setup.mine() == set()
        eventually(lambda: "EngineNotAllowed" in op.event_reasons(), timeout=30, what="Event")
    finally:
        op.stop()


def test_an_operator_without_database_engines_issues_nothing(setup: Setup) -> None:
    """STRONGROOM_DATABASE_ENGINES off (the default, and the chart's unless
    databaseEngines.enabled): no engine is read, the item is Ready=False DatabaseEnginesOff."""
    op = setup.operator(STRONGROOM_DATABASE_ENGINES="false")
    try:
        op.apply("off", {"data": [setup.item("1h")]})
        eventually(lambda: reason(op, "off") == "DatabaseEnginesOff", timeout=45,
                   what="Ready=False DatabaseEnginesOff")  # fmt: skip
        assert op.secret("off") is None and setup.mine() == set()
    finally:
        op.stop()


def test_a_failed_renewal_is_ready_false_long_before_expiry_and_the_secret_keeps_working(
    setup: Setup,
) -> None:
    """The admin password changes under the operator: the renewal at 2/3 of a 30 s TTL fails,
    Ready=False RenewalFailed with an Event, while the credential still has 10 s to live."""
    op = setup.operator()
    try:
        op.apply("fail", {"data": [setup.item("30s")]})
        ready(op, "fail")
        user, password = credentials(op, "fail")
        path = f"/api/v1/namespaces/{setup.system}/secrets/pg-admin"
        setup.kube.request("PATCH", path, {"stringData": {"password": "wrong"}},
                           content_type="application/merge-patch+json")  # fmt: skip
        eventually(lambda: reason(op, "fail") == "RenewalFailed", timeout=40,
                   what="Ready=False RenewalFailed")  # fmt: skip
        assert login(setup.pg, user, password)  # not expired yet: the Secret still works
        assert credentials(op, "fail") == (user, password)
        eventually(lambda: "RenewalFailed" in op.event_reasons(), timeout=30, what="Event")
        engine = setup.engine_status()["conditions"][0]
        assert (engine["status"], engine["reason"]) == ("False", "ConnectFailed")
        assert ADMIN_PASSWORD not in op.log() and "wrong" not in json.dumps(op.msec("fail"))
    finally:
        op.stop()


def test_emergency_rotation_renews_what_it_can_and_marks_the_rest_compromised(
    setup: Setup,
) -> None:
    """`strongroom secret rotate NS/NAME --revoke`: the generated key gets a new value, the
    database key a new role with the old one dropped at once, and the out-of-band and fromSecret
    keys make the ManagedSecret Ready=False Compromised until each has a new value. The
    annotation the command leaves does not rotate again."""
    op = setup.operator()
    try:
        op.cli("secret", "set", f"{setup.tenant}/em", "api=CANARY-old-api-key")
        setup.kube.request("POST", f"/api/v1/namespaces/{setup.tenant}/secrets", {
            "metadata": {"name": "legacy"}, "stringData": {"v": "CANARY-imported"}})  # fmt: skip
        op.apply("em", {"data": [setup.item("1h"), {"key": "token", "generate": {}},
                                 {"key": "api"},
                                 {"key": "imported", "fromSecret": {"name": "legacy", "key": "v"}}]})  # fmt: skip
        ready(op, "em")
        before = secret_data(op, "em")
        kube_env = {**setup.env, "KUBECONFIG": str(setup.kube.kubeconfig)}
        subprocess.run([STRONGROOM, "secret", "rotate", f"{setup.tenant}/em", "--revoke"],
                       env=kube_env, check=True, capture_output=True, timeout=60)  # fmt: skip
        eventually(lambda: reason(op, "em") == "Compromised", timeout=45, what="Compromised")
        after = secret_data(op, "em")
        assert after["token"] != before["token"]
        assert after["username"] != before["username"]
        assert not login(setup.pg, before["username"], before["password"])  # revoked at once
        assert login(setup.pg, after["username"], after["password"])
        status = op.msec("em")["status"]
        assert set(status["compromised"]) == {"api", "imported"}
        assert "CANARY" not in json.dumps(status) and "CANARY" not in op.log()
        op.cli("secret", "set", f"{setup.tenant}/em", "api=new-api-key")
        eventually(lambda: set(op.msec("em")["status"]["compromised"]) == {"imported"},
                   timeout=30, what="api no longer compromised")  # fmt: skip
        assert reason(op, "em") == "Compromised"
        op.cli("secret", "set", f"{setup.tenant}/em", "imported=new-import")
        ready(op, "em")
        assert secret_data(op, "em")["api"] == "new-api-key"
        assert not op.msec("em")["status"].get("compromised")
        token = secret_data(op, "em")["token"]
        time.sleep(3)  # the annotation is still there: its token was seen, nothing rotates
        assert secret_data(op, "em")["token"] == token
    finally:
        op.stop()


def test_the_author_needs_use_on_the_engine(setup: Setup) -> None:
    """strongroom-managedsecret-databases: create on managedsecrets is not enough."""
    ns = setup.tenant
    setup.kube.grant(ns, "author", [
        {"apiGroups": ["strongroom.io"], "resources": ["managedsecrets"], "verbs": ["create"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]}])  # fmt: skip
    token = setup.kube.service_account_token(ns, "author")
    body = {"apiVersion": "strongroom.io/v1alpha1", "kind": "ManagedSecret",
            "metadata": {"name": "by-author"}, "spec": {"data": [setup.item("1h")]}}  # fmt: skip
    path = f"/apis/strongroom.io/v1alpha1/namespaces/{ns}/managedsecrets?dryRun=All"
    with pytest.raises(urllib.error.HTTPError) as refused:
        setup.kube.request("POST", path, body, token=token)
    assert f"needs use on databaseengines/{setup.engine}" in refused.value.read().decode()
    rbac = "/apis/rbac.authorization.k8s.io/v1"
    role = f"use-{setup.engine}"
    setup.kube.create_or_replace(f"{rbac}/clusterroles", {"metadata": {"name": role}, "rules": [
        {"apiGroups": ["strongroom.io"], "resources": ["databaseengines"],
         "resourceNames": [setup.engine], "verbs": ["use"]}]})  # fmt: skip
    setup.kube.create_or_replace(f"{rbac}/clusterrolebindings", {
        "metadata": {"name": role},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": "author", "namespace": ns}]})  # fmt: skip

    def admitted() -> bool:
        setup.kube.request("POST", path, body, token=token)
        return True

    eventually(admitted, timeout=30, what="admitted once use is granted")


def test_secret_rotate_refuses_a_bad_reference_and_reports_an_unreachable_cluster(
    tmp_path: Path,
) -> None:
    """Usage errors are exit 2 before anything is read; no cluster is one line, exit 1."""
    env = {**child_env(f"sqlite:///{tmp_path / 's.db'}", MASTER_KEY.hex()),
           "KUBECONFIG": str(tmp_path / "none")}  # fmt: skip
    bad = subprocess.run([STRONGROOM, "secret", "rotate", "no-slash"], env=env,
                         capture_output=True, text=True, check=False)  # fmt: skip
    assert bad.returncode == 2 and "NAMESPACE/NAME" in bad.stderr
    bad_key = subprocess.run([STRONGROOM, "secret", "rotate", "ns/app", "..data"], env=env,
                             capture_output=True, text=True, check=False)  # fmt: skip
    assert bad_key.returncode == 2, bad_key.stderr
    gone = subprocess.run([STRONGROOM, "secret", "rotate", "ns/app"], env=env,
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert gone.returncode == 1 and gone.stderr.count("\n") == 1 and "Traceback" not in gone.stderr
