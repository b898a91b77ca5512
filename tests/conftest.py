"""Session fixtures for the real components, and a fresh store per test."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from strongroom import Settings, Strongroom
from strongroom.config import KekSpec
from tests.components.helm import helm_path
from tests.components.kube import KubeCluster, start_cluster
from tests.components.moto import MotoServer, start_moto
from tests.components.openbao import OpenBao, start_openbao
from tests.components.postgres import PostgresServer, start_postgres
from tests.components.rsyslog import Rsyslog, start_rsyslog

MASTER_KEY = bytes.fromhex("6b" * 32)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def kube() -> Iterator[KubeCluster]:
    """A running kube-apiserver + etcd with RBAC on and the CRDs in crds/ applied."""
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def openbao() -> Iterator[OpenBao]:
    """An OpenBao dev server with the transit engine mounted at transit/."""
    server = start_openbao()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    """moto's server: the AWS KMS API on loopback."""
    server = start_moto()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def rsyslog() -> Iterator[Rsyslog]:
    """Debian's rsyslogd receiving RFC 5424 over TCP on loopback, writing what it parsed."""
    server = start_rsyslog()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture(scope="session")
def helm() -> str:
    return helm_path()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'strongroom.db'}"


@pytest.fixture
def pg_url(postgres: PostgresServer) -> str:
    return postgres.new_database()


@pytest.fixture(
    params=[pytest.param("sqlite", id="sqlite"), pytest.param("postgres", id="postgres")]
)
def db_url(request: pytest.FixtureRequest) -> str:
    """Each store test runs on SQLite and on the real PostgreSQL server."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("pg_url"))


def make_settings(url: str, **overrides: object) -> Settings:
    base = Settings(
        database_url=url, kek=KekSpec("local", ""), master_key=MASTER_KEY, actor="tester@test"
    )
    import dataclasses

    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]


@pytest.fixture
def room(db_url: str) -> Iterator[Strongroom]:
    with Strongroom.open(make_settings(db_url)) as opened:
        yield opened
