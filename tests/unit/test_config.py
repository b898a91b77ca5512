"""Settings come from STRONGROOM_* variables and fail fast, naming the variable."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from strongroom.config import KekSpec, Settings, parse_duration
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
