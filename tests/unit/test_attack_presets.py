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


def test_attack_a_dotenv_value_expands_no_variable_for_python_dotenv(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dotenv = pytest.importorskip("dotenv")
    monkeypatch.setenv("HOST_ONLY_SECRET", "CANARY-host-env-7a1d")
    value = "https://collector.example/?k=${HOST_ONLY_SECRET}"
    with pytest.raises(TemplateError, match=r"the value of WEBHOOK_URL holds '\$\{'"):
        presets.build("dotenv", {}, {"WEBHOOK_URL": value})
    # What it writes, python-dotenv reads back unchanged (no expansion, no escapes decoded).
    plain = "https://collector.example/?k=$HOST_ONLY_SECRET&x=`id` \"q\""
    text = presets.build("dotenv", {}, {"WEBHOOK_URL": plain})[".env"]
    assert dotenv.dotenv_values(stream=io.StringIO(text))["WEBHOOK_URL"] == plain
    assert os.environ["HOST_ONLY_SECRET"]  # the variable was there to be expanded
