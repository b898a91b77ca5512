"""Hypothesis over ManagedSecret specs, through the real apiserver and a running operator.

Every generated spec is either rejected by the apiserver with 422 (never a 500), or accepted
and then reconciled to a Ready condition, True or False with a reason, without the operator
crashing or logging an unexpected failure.
"""

from __future__ import annotations

import urllib.error
import uuid
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.components.kube import KubeCluster
from tests.components.operator import OperatorProcess, child_env, eventually
from tests.conftest import MASTER_KEY

names = st.one_of(st.sampled_from(["app", "db-1", "a.b"]), st.text(max_size=12))
durations = st.one_of(st.sampled_from(["1s", "10m", "1h30m", "7d"]), st.text(max_size=6))
keys = st.one_of(st.sampled_from(["password", "api.key", "K_1"]), st.text(max_size=8))
templates = st.one_of(st.sampled_from(["{{ password }}", "{{ data | toJson }}", "{{ x",
                                      "{{ ''.__class__ }}", "{% include 'a' %}"]),
                      st.text(max_size=20))
generate = st.fixed_dictionaries({}, optional={
    "length": st.integers(min_value=-5, max_value=5000),
    "charset": st.sampled_from(["alphanumeric", "hex", "base64url", "ascii", "emoji"]),
    "rotationPeriod": durations,
})  # fmt: skip
from_secret = st.fixed_dictionaries({"name": names, "key": keys},
                                    optional={"deleteSource": st.booleans()})  # fmt: skip
item = st.fixed_dictionaries({"key": keys}, optional={"generate": generate,
                                                      "fromSecret": from_secret})  # fmt: skip
specs = st.fixed_dictionaries({}, optional={
    "target": st.fixed_dictionaries({}, optional={
        "name": names, "type": st.sampled_from(["Opaque", "kubernetes.io/basic-auth"]),
        "creationPolicy": st.sampled_from(["Owner", "Orphan", "Merge", "Steal"]),
        "deletionPolicy": st.sampled_from(["Retain", "Delete", "Shred"]),
        "immutable": st.booleans(),
        "template": st.fixed_dictionaries(
            {"data": st.dictionaries(st.sampled_from(["out", "a.b"]), templates, min_size=1)},
            optional={"mergePolicy": st.sampled_from(["Replace", "Merge"])}),
    }),
    "data": st.lists(item, max_size=4),
    "refreshInterval": durations,
    "refreshPolicy": st.sampled_from(["Periodic", "OnChange", "CreatedOnce", "Never"]),
    "rotation": st.fixed_dictionaries({}, optional={"keepPrevious": durations}),
    "rolloutRestart": st.lists(st.fixed_dictionaries({
        "kind": st.sampled_from(["Deployment", "StatefulSet", "CronJob"]), "name": names}),
        max_size=2),
})  # fmt: skip


def test_any_spec_is_refused_cleanly_or_reconciled(kube: KubeCluster, tmp_path: Path) -> None:
    namespace = f"fuzz-{uuid.uuid4().hex[:6]}"
    kube.ensure_namespace(namespace)
    op = OperatorProcess(kube, namespace, child_env(f"sqlite:///{tmp_path / 's.db'}",
                                                    MASTER_KEY.hex()), tmp_path / "op.log")  # fmt: skip
    op.start()
    accepted: list[str] = []
    codes: list[int] = []

    # One spec of each outcome always runs: since a spec must name a key, random ones are
    # mostly refused, and the check below needs both.
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(spec=specs)
    @example(spec={"data": [{"key": "password", "generate": {"length": 16}}]})
    @example(spec={})
    def post(spec: dict[str, Any]) -> None:
        name = f"f{uuid.uuid4().hex[:10]}"
        try:
            op.apply(name, spec)
        except urllib.error.HTTPError as exc:
            assert exc.code == 422, (exc.code, spec)
            codes.append(422)
        else:
            accepted.append(name)
            codes.append(201)

    try:
        post()
        assert 201 in codes and 422 in codes, "the strategy must exercise both outcomes"

        def all_have_status() -> bool:
            for name in accepted:
                conds = (op.msec(name).get("status") or {}).get("conditions") or []
                if not any(c["type"] == "Ready" and c.get("reason") for c in conds):
                    return False
            return True

        eventually(all_have_status, timeout=120, what="a Ready condition on every accepted spec")
        assert op.proc is not None and op.proc.poll() is None, "the operator must not crash"
    finally:
        op.stop()
    log = op.log()
    assert "failed unexpectedly" not in log
    assert "Traceback" not in log
