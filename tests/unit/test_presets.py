"""target.template.preset: the standard Secret types from named stored keys, their required keys
checked, and a dotenv file that no value can add a line or a variable to."""

from __future__ import annotations

import base64
import json
import subprocess

import pytest

from strongroom import policy
from strongroom.errors import TemplateError
from strongroom.render import parse_template, secret_data
from strongroom.spec import secret_type

CANARY = "CANARY-preset-0c9e-never-log-me"


def plain(template: dict[str, object], stored: dict[str, object]) -> dict[str, str]:
    out = secret_data(parse_template(template), stored)
    return {k: base64.b64decode(v).decode() for k, v in out.items()}


def test_dockerconfigjson_is_what_the_kubelet_reads() -> None:
    out = plain({"preset": "dockerconfigjson"},
                {"registry": "ghcr.io", "username": "robot", "password": CANARY})  # fmt: skip
    entry = json.loads(out[".dockerconfigjson"])["auths"]["ghcr.io"]
    assert entry["username"] == "robot" and entry["password"] == CANARY
    assert base64.b64decode(entry["auth"]).decode() == f"robot:{CANARY}"
    assert list(out) == [".dockerconfigjson"]
    assert secret_type({"target": {"template": {"preset": "dockerconfigjson"}}}) == (
        "kubernetes.io/dockerconfigjson")


def test_preset_keys_name_the_stored_key_for_a_field() -> None:
    out = plain({"preset": "basic-auth", "presetKeys": {"password": "db-password"}},
                {"username": "app", "db-password": "pw"})  # fmt: skip
    assert out == {"username": "app", "password": "pw"}


def test_a_missing_required_key_fails_like_a_template_and_names_no_value() -> None:
    with pytest.raises(TemplateError) as caught:
        plain({"preset": "basic-auth"}, {"username": CANARY})
    assert "'password'" in str(caught.value) and CANARY not in str(caught.value)


def test_tls_wants_pem_and_keeps_the_ca() -> None:
    cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    key = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"
    out = plain({"preset": "tls"}, {"tls.crt": cert, "tls.key": key, "ca.crt": cert})
    assert out == {"tls.crt": cert, "tls.key": key, "ca.crt": cert}
    with pytest.raises(TemplateError, match=r"tls\.key is not PEM"):
        plain({"preset": "tls"}, {"tls.crt": cert, "tls.key": CANARY})


def test_dotenv_values_read_the_same_in_a_shell_and_run_nothing() -> None:
    hostile = 'a" ; INJECTED=1 $HOME `id` $(id) %s & |'
    text = plain({"preset": "dotenv"}, {"API_KEY": hostile, "DB_USER": "app"})[".env"]
    assert text.count("\n") == 2
    # What a POSIX shell makes of the file is the values as they were, and nothing else.
    script = f"set -a; {text}\nprintf '%s' \"$API_KEY\"; printf '|%s' \"$DB_USER\" \"${{INJECTED-unset}}\""
    shown = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True)
    assert shown.stdout == hostile + "|app|unset"


@pytest.mark.parametrize("value", [
    pytest.param("it's", id="single-quote"), pytest.param("a\\b", id="backslash"),
    pytest.param("a\nINJECTED=1", id="newline"), pytest.param("a\rb", id="carriage-return"),
    pytest.param("x${HOME}", id="dotenv-expansion"),
])  # fmt: skip
def test_dotenv_refuses_a_value_no_reader_would_read_the_same(value: str) -> None:
    with pytest.raises(TemplateError, match="the value of API_KEY holds") as caught:
        plain({"preset": "dotenv"}, {"API_KEY": CANARY + value})
    assert CANARY not in str(caught.value)


def test_dotenv_refuses_a_key_that_is_no_variable_name() -> None:
    with pytest.raises(TemplateError, match="environment variable name"):
        plain({"preset": "dotenv"}, {"db-password": "x"})


def test_template_keys_are_added_to_a_presets_output() -> None:
    out = plain({"preset": "basic-auth", "data": {"url": "https://{{ username }}@host"}},
                {"username": "u", "password": "p"})  # fmt: skip
    assert out == {"username": "u", "password": "p", "url": "https://u@host"}


@pytest.mark.parametrize(("template", "message"), [
    pytest.param({"preset": "htpasswd"}, "preset must be one of", id="unknown-preset"),
    pytest.param({"preset": "tls", "presetKeys": {"username": "u"}}, "not a field of preset tls",
                 id="field-of-another-preset"),
    pytest.param({"data": {"a": "b"}, "presetKeys": {"password": "p"}}, "needs a preset",
                 id="keys-without-preset"),
    pytest.param({"preset": "basic-auth", "presetKeys": {"password": "..x"}},
                 "presetKeys.password", id="bad-stored-key"),
])  # fmt: skip
def test_bad_preset_fields_are_refused_naming_the_field(template: dict[str, object],
                                                        message: str) -> None:  # fmt: skip
    with pytest.raises(policy.SpecRefusedError, match=message):
        parse_template(template)
