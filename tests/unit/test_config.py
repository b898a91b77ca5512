"""Settings come from STRONGROOM_* variables and fail fast, naming the variable."""

from __future__ import annotations

import os
import stat
import tempfile
from datetime import timedelta
from pathlib import Path

import pytest

from strongroom.config import (
    AuditSinkSettings,
    AuditSinkSpec,
    KekSpec,
    Settings,
    key_file_problem,
    parse_duration,
    read_key_file,
)
from strongroom.errors import ConfigError

KEY = "ab" * 32


def test_defaults_are_sqlite_and_the_local_kek() -> None:
    settings = Settings.from_env({})
    assert settings.database_url == "sqlite:///strongroom.db"
    assert settings.kek == KekSpec("local", "")
    assert settings.master_key is None


def key_file(tmp_path: Path, text: str = KEY + "\n", mode: int = 0o600) -> Path:
    path = tmp_path / "key"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_master_key_from_env_and_from_file(tmp_path: Path) -> None:
    assert Settings.from_env({"STRONGROOM_MASTER_KEY": KEY}).master_key == bytes.fromhex(KEY)
    settings = Settings.from_env({"STRONGROOM_MASTER_KEY_FILE": str(key_file(tmp_path))})
    assert settings.master_key == bytes.fromhex(KEY)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o666, 0o660],
                         ids=lambda m: f"{m:04o}")  # fmt: skip
def test_a_key_file_open_to_group_or_others_is_refused_with_the_chmod_to_run(
    tmp_path: Path, mode: int
) -> None:
    """Before: a 0666 key file was read without a word."""
    path = key_file(tmp_path, mode=mode)
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"STRONGROOM_MASTER_KEY_FILE": str(path)})
    assert f"run `chmod 600 {path}`" in str(info.value)
    assert f"mode {mode:04o}" in str(info.value)
    assert KEY not in str(info.value)


def test_a_private_key_file_read_only_by_its_owner_is_accepted(tmp_path: Path) -> None:
    path = key_file(tmp_path, mode=0o400)
    assert Settings.from_env({"STRONGROOM_MASTER_KEY_FILE": str(path)}).master_key is not None


@pytest.mark.parametrize("value", ["", "  "], ids=["empty", "blank"])
def test_an_empty_database_url_is_an_error_not_the_default(value: str) -> None:
    """Before: STRONGROOM_DATABASE_URL="" quietly meant sqlite:///strongroom.db in the cwd."""
    with pytest.raises(ConfigError, match="STRONGROOM_DATABASE_URL is set but empty"):
        Settings.from_env({"STRONGROOM_DATABASE_URL": value})


def test_previous_keks_are_a_comma_separated_list_of_kek_specs() -> None:
    assert Settings.from_env({}).kek_previous == ()
    settings = Settings.from_env(
        {"STRONGROOM_KEK_PREVIOUS": "awskms:arn:aws:kms:eu-west-1:1:key/a, vault:transit/old,"}
    )
    assert settings.kek_previous == (
        KekSpec("awskms", "arn:aws:kms:eu-west-1:1:key/a"),
        KekSpec("vault", "transit/old"),
    )


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        pytest.param({"STRONGROOM_MASTER_KEY": "abc"}, "STRONGROOM_MASTER_KEY", id="short-key"),
        pytest.param({"STRONGROOM_MASTER_KEY": "zz" * 32}, "hexadecimal", id="not-hex"),
        pytest.param(
            {"STRONGROOM_MASTER_KEY": KEY, "STRONGROOM_MASTER_KEY_FILE": "/x"},
            "not both",
            id="both",
        ),
        pytest.param(
            {"STRONGROOM_MASTER_KEY_FILE": "/nonexistent/key"}, "cannot read", id="missing-file"
        ),
        pytest.param({"STRONGROOM_KEK": "gcpkms:x"}, "STRONGROOM_KEK", id="unknown-provider"),
        pytest.param({"STRONGROOM_KEK": "awskms:"}, "STRONGROOM_KEK", id="kms-without-key"),
        pytest.param(
            {"STRONGROOM_KEK_PREVIOUS": "local,gcpkms:x"}, "STRONGROOM_KEK_PREVIOUS: 'gcpkms:x'",
            id="unknown-previous-provider",
        ),
        pytest.param(
            {"STRONGROOM_MAX_VALUE_BYTES": "-3"}, "STRONGROOM_MAX_VALUE_BYTES", id="negative-limit"
        ),
        pytest.param(
            {"STRONGROOM_SEED_MAX_AGE": "soon"}, "STRONGROOM_SEED_MAX_AGE", id="bad-duration"
        ),
        pytest.param(
            {"STRONGROOM_AUTO_MIGRATE": "perhaps"}, "STRONGROOM_AUTO_MIGRATE", id="bad-bool"
        ),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        Settings.from_env(env)


def test_the_master_key_never_appears_in_repr() -> None:
    settings = Settings.from_env({"STRONGROOM_MASTER_KEY": KEY})
    assert KEY not in repr(settings)
    assert repr(bytes.fromhex(KEY)) not in repr(settings)


def test_the_key_file_error_does_not_echo_its_content(tmp_path: Path) -> None:
    path = key_file(tmp_path, "not-a-key-but-maybe-secret-material")
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"STRONGROOM_MASTER_KEY_FILE": str(path)})
    assert "maybe-secret" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("1h30m", timedelta(minutes=90)),
        ("7d", timedelta(days=7)),
        ("250ms", timedelta(milliseconds=250)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "5", "1x", "h1", "1h 30m", "-5s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_kek_specs_round_trip() -> None:
    for text in ["local", "awskms:alias/strongroom", "vault:strongroom"]:
        assert str(KekSpec.parse(text)) == text


def test_audit_sinks_are_a_comma_separated_list_and_best_effort_by_default() -> None:
    assert Settings.from_env({}).audit_sinks == AuditSinkSettings((), require=False)
    settings = Settings.from_env(
        {
            "STRONGROOM_AUDIT_SINKS": "file:/var/log/strongroom/audit.jsonl, stderr,"
            "syslog+tcp://logs.example?framing=newline&facility=local4,syslog+tcp://[::1]:6514",
            "STRONGROOM_AUDIT_SINKS_MODE": "require",
        }
    )
    assert settings.audit_sinks.require
    assert settings.audit_sinks.sinks == (
        AuditSinkSpec("file", path="/var/log/strongroom/audit.jsonl"),
        AuditSinkSpec("stderr"),
        AuditSinkSpec("syslog+tcp", host="logs.example", port=514, framing="newline",
                      facility="local4"),
        AuditSinkSpec("syslog+tcp", host="::1", port=6514),
    )  # fmt: skip
    assert [str(s) for s in settings.audit_sinks.sinks] == [
        "file:/var/log/strongroom/audit.jsonl",
        "stderr",
        "syslog+tcp://logs.example:514",
        "syslog+tcp://[::1]:6514",
    ]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        pytest.param({"STRONGROOM_AUDIT_SINKS": "stdout"},
                     "STRONGROOM_AUDIT_SINKS: stdout is the command line's output channel",
                     id="stdout"),
        pytest.param({"STRONGROOM_AUDIT_SINKS": "file:audit.jsonl"},
                     "STRONGROOM_AUDIT_SINKS: 'file:audit.jsonl': a file sink needs an absolute",
                     id="relative-path"),
        pytest.param({"STRONGROOM_AUDIT_SINKS": "syslog://h:514"},
                     "STRONGROOM_AUDIT_SINKS: 'syslog://h:514': only syslog over TCP",
                     id="udp"),
        pytest.param({"STRONGROOM_AUDIT_SINKS": "syslog+tcp://h:70000"},
                     "STRONGROOM_AUDIT_SINKS: 'syslog+tcp://h:70000': Port out of range",
                     id="port"),
        pytest.param({"STRONGROOM_AUDIT_SINKS": "syslog+tcp://h?framing=lf"},
                     "framing must be octet-counting or newline", id="framing"),
        pytest.param({"STRONGROOM_AUDIT_SINKS": "syslog+tcp://h?facility=audit"},
                     "'audit' is not a syslog facility", id="facility"),
        pytest.param({"STRONGROOM_AUDIT_SINKS": "syslog+tcp://h?tls=1"},
                     "unknown or repeated option 'tls'", id="option"),
        pytest.param({"STRONGROOM_AUDIT_SINKS": "stderr,stderr"},
                     "STRONGROOM_AUDIT_SINKS: stderr is listed twice", id="twice"),
        pytest.param({"STRONGROOM_AUDIT_SINKS": "kafka://x"},
                     "STRONGROOM_AUDIT_SINKS: 'kafka://x' is not an audit sink: use file:",
                     id="unknown"),
        pytest.param({"STRONGROOM_AUDIT_SINKS_MODE": "always", "STRONGROOM_AUDIT_SINKS": "stderr"},
                     "STRONGROOM_AUDIT_SINKS_MODE: 'always' is not a mode (use require or "
                     "best-effort)", id="mode"),
        pytest.param({"STRONGROOM_AUDIT_SINKS_MODE": "require"},
                     "STRONGROOM_AUDIT_SINKS_MODE: require needs at least one sink in "
                     "STRONGROOM_AUDIT_SINKS", id="require-without-sinks"),
    ],
)  # fmt: skip
def test_a_bad_audit_sink_setting_names_its_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as failed:
        Settings.from_env(env)
    assert message in str(failed.value)


def fake_stat(mode: int, uid: int) -> os.stat_result:
    return os.stat_result((stat.S_IFREG | mode, 0, 0, 1, uid, 0, 65, 0, 0, 0))


ME = os.geteuid()


@pytest.mark.parametrize(
    ("mode", "uid", "accepted"),
    [
        pytest.param(0o600, ME, True, id="mine-0600"),
        pytest.param(0o400, ME, True, id="mine-0400"),
        pytest.param(0o640, ME, False, id="mine-group-read"),
        pytest.param(0o644, ME, False, id="mine-world-read"),
        pytest.param(0o602, ME, False, id="mine-world-write"),
        pytest.param(0o600, ME + 1, False, id="someone-elses"),
    ],
)
def test_the_key_file_rule_for_a_file_of_ones_own(mode: int, uid: int, accepted: bool) -> None:
    problem = key_file_problem(fake_stat(mode, uid), "/k")
    assert (problem is None) == accepted
    if not accepted and uid == ME:
        assert "chmod 600 /k" in str(problem)


FS_GROUP = 65532  # the chart's runAsUser, runAsGroup and fsGroup


@pytest.mark.parametrize(
    ("mode", "accepted"),
    [(0o440, True), (0o640, True), (0o400, True), (0o460, False), (0o444, False), (0o450, False)],
    ids=lambda v: f"{v:04o}" if isinstance(v, int) else str(v),
)
def test_the_key_file_rule_for_a_root_owned_file_read_through_its_group(
    mode: int, accepted: bool
) -> None:
    """PostgreSQL's rule for its server key, and what the kubelet makes of defaultMode 0400."""
    assert (key_file_problem(fake_stat(mode, 0), "/k", euid=FS_GROUP) is None) == accepted
    if mode & 0o040:  # root itself gets no such leeway
        assert key_file_problem(fake_stat(mode, 0), "/k", euid=0) is not None


def read_as(uid: int, path: Path) -> str:
    """read_key_file in a child process running as ``uid`` (group and fsGroup ``uid``)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        try:
            os.setgroups([uid])
            os.setgid(uid)
            os.setuid(uid)
            try:
                outcome = "ok:" + read_key_file(str(path))[:8]
            except ConfigError as exc:
                outcome = "refused:" + str(exc)
            os.write(write_end, outcome.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        out = pipe.read().decode()
    os.waitpid(pid, 0)
    return out


@pytest.mark.skipif(ME != 0, reason="creating a root-owned file for another uid needs root")
def test_the_charts_mounted_key_passes_and_a_world_readable_one_does_not() -> None:
    """The kubelet writes a Secret volume's files as root, mode ``defaultMode``, and with the
    pod's fsGroup adds group read and sets the group (0400 becomes 0440, root:fsGroup). The
    operator reads it as runAsUser through that group."""
    with tempfile.TemporaryDirectory() as where:  # pytest's tmp_path is closed to other uids
        Path(where).chmod(0o711)
        path = Path(where) / "master.key"
        path.write_text("ab" * 32 + "\n")
        os.chown(path, 0, FS_GROUP)
        path.chmod(0o440)  # defaultMode 0400 under fsGroup
        assert read_as(FS_GROUP, path) == "ok:abababab"
        path.chmod(0o444)  # defaultMode 0444: every user of the node's container reads it
        outcome = read_as(FS_GROUP, path)
        assert outcome.startswith("refused:"), outcome
        assert f"chmod 640 {path}" in outcome
