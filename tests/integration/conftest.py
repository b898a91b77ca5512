"""Fixtures the operator's integration tests share."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine

from strongroom.store.engine import normalize_url
from tests.components.kube import KubeCluster
from tests.components.operator import OperatorProcess, child_env
from tests.conftest import MASTER_KEY


@pytest.fixture
def op(kube: KubeCluster, tmp_path: Path) -> Iterator[OperatorProcess]:
    namespace = f"op-{uuid.uuid4().hex[:8]}"
    kube.ensure_namespace(namespace)
    env = child_env(f"sqlite:///{tmp_path / 'store.db'}", MASTER_KEY.hex())
    proc = OperatorProcess(kube, namespace, env, tmp_path / "operator.log")
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def attacker(db_url: str) -> Iterator[Engine]:
    """The attacker's own connection to the store's database: SQL, no KEK."""
    engine = create_engine(normalize_url(db_url))
    try:
        yield engine
    finally:
        engine.dispose()
