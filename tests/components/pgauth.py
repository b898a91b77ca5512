"""A PostgreSQL cluster that checks passwords (SCRAM-SHA-256) and logs every statement.

The suite's shared cluster (:mod:`tests.components.postgres`) trusts every loopback login, so a
wrong or expired password would still get in: the database-credential tests need one that
refuses them. ``postgres`` keeps trust (the test's own superuser); every other role must prove
its password, and ``VALID UNTIL`` is enforced. Every statement is logged, so a test can look for
a plaintext password in what the server saw.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from tests.components.base import free_port, missing
from tests.components.postgres import PostgresServer, pg_bin

ADMIN = "strongroom_admin_login"
ADMIN_PASSWORD = "admin-pw-9f3e1c"


@contextmanager
def password_postgres() -> Iterator[PostgresServer]:
    bin_dir = pg_bin()
    if bin_dir is None or not (bin_dir / "initdb").exists():
        missing("PostgreSQL", "run scripts/testenv postgres (installs Debian's postgresql)")
        raise AssertionError("unreachable")
    root = Path(tempfile.mkdtemp(prefix="strongroom-pgauth-"))
    root.chmod(0o755)
    server = PostgresServer(bin_dir, root / "data", free_port())
    server.init()
    (server.data_dir / "pg_hba.conf").write_text(
        "local all all trust\n"
        "host all postgres 127.0.0.1/32 trust\n"
        "host all all 127.0.0.1/32 scram-sha-256\n"
    )
    with (server.data_dir / "postgresql.conf").open("a") as conf:
        conf.write("log_statement = 'all'\npassword_encryption = 'scram-sha-256'\n")
    server.start()
    try:
        with psycopg.connect(server.admin_url, autocommit=True) as conn:
            # The engine's admin: CREATEROLE, not a superuser (what a DBA would hand out).
            conn.execute(f"CREATE ROLE {ADMIN} LOGIN CREATEROLE PASSWORD '{ADMIN_PASSWORD}'")
            conn.execute("CREATE ROLE app_read NOLOGIN")
            conn.execute(f"GRANT app_read TO {ADMIN} WITH ADMIN OPTION")
            conn.execute(f"GRANT pg_signal_backend TO {ADMIN}")  # --revoke ends sessions
            conn.execute("CREATE TABLE canary (note text)")
            conn.execute("INSERT INTO canary VALUES ('still here')")
            conn.execute("GRANT SELECT ON canary TO app_read")
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def log_text(server: PostgresServer) -> str:
    return (server.data_dir.parent / "postgres.log").read_text(errors="replace")


def login(server: PostgresServer, user: str, password: str) -> bool:
    """Whether ``user`` gets in with ``password`` (and may read the canary table)."""
    try:
        with psycopg.connect(host="127.0.0.1", port=server.port, dbname="postgres", user=user,
                             password=password, connect_timeout=5) as conn:  # fmt: skip
            conn.execute("SELECT count(*) FROM canary").fetchone()
    except psycopg.OperationalError:
        return False
    return True


def roles(server: PostgresServer, prefix: str = "strongroom_") -> set[str]:
    with psycopg.connect(server.admin_url) as conn:
        rows = conn.execute("SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s) "
                            "AND rolname <> %s", (prefix, ADMIN)).fetchall()  # fmt: skip
    return {str(r[0]) for r in rows}
