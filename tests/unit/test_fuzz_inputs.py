"""Hypothesis: bad input anywhere is one clear error, never a crash or a partial write."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path
from unittest import mock

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from strongroom import cli
from strongroom.config import OperatorTuning, Settings
from strongroom.crypto import Identity, Sealed, open_sealed
from strongroom.errors import ConfigError, IntegrityError

ENV_VARS = [
    "STRONGROOM_DATABASE_URL", "STRONGROOM_KEK", "STRONGROOM_MASTER_KEY",
    "STRONGROOM_MAX_NAME_LENGTH", "STRONGROOM_MAX_KEY_LENGTH", "STRONGROOM_MAX_VALUE_BYTES",
    "STRONGROOM_SEED_MAX_USES", "STRONGROOM_SEED_MAX_AGE", "STRONGROOM_KEEP_VERSIONS",
    "STRONGROOM_AUTO_MIGRATE", "STRONGROOM_KEK_MAX_ATTEMPTS", "STRONGROOM_MAX_SECRET_BYTES",
    "STRONGROOM_MAX_JSON_DEPTH",
]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(ENV_VARS), st.text(max_size=80)))
def test_any_environment_is_a_setting_or_a_config_error_naming_the_variable(
    env: dict[str, str],
) -> None:
    try:
        Settings.from_env(env)
    except ConfigError as exc:
        assert any(name in str(exc) for name in env)


OPERATOR_VARS = [
    "STRONGROOM_STORE_POLL_SECONDS", "STRONGROOM_LEASE_SECONDS", "STRONGROOM_RECONCILE_WORKERS",
    "STRONGROOM_LOG_FORMAT", "STRONGROOM_API_TIMEOUT_SECONDS",
]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(OPERATOR_VARS), st.text(max_size=20)))
@example({"STRONGROOM_RECONCILE_WORKERS": "0"})
@example({"STRONGROOM_STORE_POLL_SECONDS": "nan"})
@example({"STRONGROOM_STORE_POLL_SECONDS": "inf"})
@example({"STRONGROOM_LEASE_SECONDS": "-1"})
@example({"STRONGROOM_API_TIMEOUT_SECONDS": "0"})
def test_any_operator_tuning_is_valid_or_a_config_error_naming_the_variable(
    env: dict[str, str],
) -> None:
    try:
        tuning = OperatorTuning.from_env(env)
    except ConfigError as exc:
        assert any(name in str(exc) for name in env)
        return
    assert 0 < tuning.store_poll_seconds < float("inf")
    assert 3 <= tuning.lease_seconds <= 3600
    assert tuning.reconcile_workers >= 1
    assert 0 < tuning.api_timeout_seconds < float("inf")
    assert tuning.log_format in {"text", "json"}


@settings(max_examples=300, deadline=None)
@given(
    seed=st.binary(min_size=32, max_size=32),
    salt=st.binary(max_size=40),
    nonce=st.binary(max_size=16),
    ciphertext=st.binary(max_size=200),
    version=st.integers(min_value=0, max_value=3),
)
def test_any_stored_blob_is_an_integrity_error(
    seed: bytes, salt: bytes, nonce: bytes, ciphertext: bytes, version: int
) -> None:
    identity = Identity("ns", "name", "key", 1, "dk-x")
    try:
        open_sealed(seed, identity, Sealed(salt, nonce, ciphertext, version))
    except IntegrityError as exc:
        assert str(exc) in {"stored value is malformed", "stored value failed authentication"}
    else:  # pragma: no cover - forging AES-GCM by chance would be news
        raise AssertionError("a random blob authenticated")


_WORKDIR = Path(tempfile.mkdtemp(prefix="strongroom-fuzz-cli-"))
TOKENS = [
    "secret", "set", "get", "list", "delete", "verify", "history", "audit", "tail", "kek",
    "rotate", "status", "rekey", "db", "upgrade", "keygen", "--json", "--version", "-n",
    "--from-file", "--unset", "--replace", "--description", "--batch", "--to", "ns/name",
    "ns/", "/name", "NS/x", "k=v", "k:=1", "k:={", "=v", "--kek", "local", "vault:",
    "--database-url", "sqlite:///" + str(_WORKDIR / "fuzz.db"), "0", "-1", "99999999999",
    'k:="\\ud800"', "k=\udcff", "k:=" + "[" * 3000, "..data=x", "a.b/c", "ns/a\nb", "--x=secret",
]  # fmt: skip


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.sampled_from(TOKENS), st.text(max_size=12)), max_size=7))
@example(["secret", "set", "ns/name", "k=v", "n:=1"])
@example(["secret", "get", "ns/name", "k", "--version", "1"])
@example(["secret", "list", "--json"])
@example(["secret", "verify", "ns/name", "k"])
@example(["kek", "status"])
@example(["rekey", "--batch", "0"])
@example(["audit", "tail", "-n", "0"])
@example(["secret", "set", "ns/name", 'k:="\\ud800"'])
@example(["secret", "set", "ns/name", "k:=" + "[" * 3000 + "]" * 3000])
@example(["secret", "set", "ns/name", "--bogus=v", "k=v"])
@example(["secret", "get", "ns/a\nb"])
def test_any_command_line_ends_in_a_clean_exit(argv: list[str]) -> None:
    env = {"STRONGROOM_DATABASE_URL": "sqlite:///" + str(_WORKDIR / "fuzz.db"),
           "STRONGROOM_MASTER_KEY": "5a" * 32}  # fmt: skip
    out, err = io.StringIO(), io.StringIO()
    code = 2
    with (
        mock.patch.dict(os.environ, env),
        mock.patch("sys.stdin", io.StringIO("candidate\n")),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
        contextlib.suppress(SystemExit),
    ):
        code = cli.main([a for a in argv if a not in {"run", "-h", "--help"}])
    assert code in {0, 1, 2}
    assert "Traceback" not in err.getvalue()
    assert "internal error" not in err.getvalue(), err.getvalue()


def test_the_fuzzed_command_lines_really_reached_the_store() -> None:
    """Guards the test above against passing by never getting past argument parsing."""
    assert (_WORKDIR / "fuzz.db").exists()
