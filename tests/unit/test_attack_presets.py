"""Attacks on target.template.preset dotenv (issue 17): what a stored value, which may come from
another namespace through fromManagedSecret, can make a program reading the ``.env`` do."""

from __future__ import annotations

import io
import os

import pytest

from strongroom import presets
from strongroom.errors import TemplateError


@pytest.mark.parametrize("key", [
    pytest.param("reboot\n", id="trailing-newline"),
    pytest.param("A\nB", id="inner-newline"),
    pytest.param("1A", id="leading-digit"),
])  # fmt: skip
def test_a_dotenv_key_that_is_not_a_variable_name_is_refused(key: str) -> None:
    """A key ending in a newline passed ``re.match(r"^...$")`` (``$`` matches before a final
    newline) and became a line of its own: ``reboot`` run by a shell sourcing the file. The
    store refuses such keys today; the preset must not depend on it."""
    with pytest.raises(TemplateError, match="environment variable name"):
        presets.build("dotenv", {}, {key: "x"})


@pytest.mark.xfail(strict=True, reason=(
    "hole: python-dotenv (the usual Python .env reader, interpolate=True by default) expands "
    "${NAME} inside double quotes whatever precedes it, so the \\$ escape does not hold: a value "
    "(possibly another namespace's, through fromManagedSecret) pulls the reading process's "
    "environment into itself. Refuse or encode '${', or document python-dotenv as unsafe"))  # fmt: skip
def test_attack_a_dotenv_value_expands_no_variable_for_python_dotenv(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dotenv = pytest.importorskip("dotenv")
    monkeypatch.setenv("HOST_ONLY_SECRET", "CANARY-host-env-7a1d")
    value = "https://collector.example/?k=${HOST_ONLY_SECRET}"
    text = presets.build("dotenv", {}, {"WEBHOOK_URL": value})[".env"]
    parsed = dotenv.dotenv_values(stream=io.StringIO(text))
    assert "CANARY-host-env-7a1d" not in str(parsed["WEBHOOK_URL"])
    assert os.environ["HOST_ONLY_SECRET"]  # the variable was there to be expanded
