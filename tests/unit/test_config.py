"""Settings come from STRONGROOM_* variables and fail fast, naming the variable."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from strongroom.config import AuditSinkSettings, AuditSinkSpec, KekSpec, Settings, parse_duration
from strongroom.errors import ConfigError

KEY = "ab" * 32


def test_defaults_are_sqlite_and_the_local_kek() -> None:
    settings = Settings.from_env({})
    assert settings.database_url == "sqlite:///strongroom.db"
    assert settings.kek == KekSpec("local", "")
    assert settings.master_key is None


def test_master_key_from_env_and_from_file(tmp_path: Path) -> None:
    assert Settings.from_env({"STRONGROOM_MASTER_KEY": KEY}).master_key == bytes.fromhex(KEY)
    path = tmp_path / "key"
    path.write_text(KEY + "\n")
    settings = Settings.from_env({"STRONGROOM_MASTER_KEY_FILE": str(path)})
    assert settings.master_key == bytes.fromhex(KEY)


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
    path = tmp_path / "key"
    path.write_text("not-a-key-but-maybe-secret-material")
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
