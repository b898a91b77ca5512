"""Templates: what a user writes renders as they expect, and what an attacker writes is refused
within a time bound, with an error that names the key and line and never a value."""

from __future__ import annotations

import base64
import json
import time
import tracemalloc
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from jinja2.exceptions import UndefinedError

from strongroom import policy
from strongroom.errors import TemplateError
from strongroom.render import (
    FILTERS,
    TemplateSpec,
    _what,
    context_of,
    parse_template,
    secret_data,
)
from strongroom.render import render_one as _render_one
from strongroom.spec import Spec

CANARY = "CANARY-5d1c-never-shown"
STORED = {"user": "app", "password": "p@ss/w:rd", "db-name": "app", "canary": CANARY, "n": 3}


BIG = json.dumps([[i] for i in range(100_000)])  # under 1 MiB; ~4 s for PyYAML to write


def render(source: str, stored: dict[str, Any] | None = None) -> str:
    return _render_one("out", source, context_of(STORED if stored is None else stored))


def refused(source: str, stored: dict[str, Any] | None = None) -> TemplateError:
    with pytest.raises(TemplateError) as info:
        render(source, stored)
    return info.value


def decoded(data: dict[str, str]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


# -- what users rely on ---------------------------------------------------------------------


def test_a_dsn_quotes_the_password_and_reads_keys_that_are_not_identifiers() -> None:
    spec = TemplateSpec(data=(("dsn", "postgres://{{ user }}:{{ password | urlquote }}"
                                      "@db:5432/{{ data['db-name'] }}"),))  # fmt: skip
    assert decoded(secret_data(spec, STORED)) == {"dsn": "postgres://app:p%40ss%2Fw%3Ard@db:5432/app"}


def test_a_dockerconfigjson_is_json_with_a_base64_auth() -> None:
    source = ('{{ {"auths": {"registry.example": {"auth": (user ~ ":" ~ password) | b64enc}}}'
              " | toJson }}")
    out = json.loads(render(source))
    assert base64.b64decode(out["auths"]["registry.example"]["auth"]).decode() == "app:p@ss/w:rd"


def test_replace_writes_only_templated_keys_and_merge_keeps_the_stored_ones() -> None:
    stored = {"user": "app", "password": "pw"}
    replace = TemplateSpec(data=(("user", "{{ user | upper }}"),))
    merge = TemplateSpec(data=(("user", "{{ user | upper }}"),), merge_policy="Merge")
    assert decoded(secret_data(replace, stored)) == {"user": "APP"}
    assert decoded(secret_data(merge, stored)) == {"user": "APP", "password": "pw"}
    assert decoded(secret_data(None, stored)) == stored  # no template: the stored keys as they are


def test_every_allowed_filter_works() -> None:
    assert render("{{ 'aGk=' | b64dec }}{{ 'hi' | b64enc }}") == "hiaGk="
    assert render("{{ '{\"a\": [1]}' | fromJson | toJson }}") == '{"a":[1]}'
    assert yaml.safe_load(render("{{ {'a': [1, 2]} | toYaml }}")) == {"a": [1, 2]}
    assert render("{{ '  x ' | trim | upper }}{{ 'Y' | lower }}") == "Xy"
    assert render("{{ 'abc' | sha256 }}") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    assert render("{{ 'a\nb' | indent(2) }}") == "a\n  b"
    assert render("{{ missing | default('fallback') }}") == "fallback"
    assert set(FILTERS) == {"b64enc", "b64dec", "urlquote", "toJson", "fromJson", "toYaml",
                            "trim", "upper", "lower", "sha256", "indent", "default"}  # fmt: skip


def test_loops_and_conditions_work_within_the_budget() -> None:
    source = "{% for k in data | toJson | fromJson %}{% if k != 'canary' %}{{ k }};{% endif %}{% endfor %}"
    assert render(source) == "db-name;n;password;user;"


@given(st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True),
                       st.text(max_size=50), min_size=1, max_size=5))  # fmt: skip
@settings(max_examples=100, deadline=None)
def test_any_stored_text_renders_back_unchanged(stored: dict[str, str]) -> None:
    key = sorted(stored)[0]
    assert render(f"{{{{ data['{key}'] }}}}", stored) == stored[key]
    assert render(f"{{{{ data['{key}'] | b64enc | b64dec }}}}", stored) == stored[key]


def test_errors_name_the_key_and_the_line() -> None:
    error = refused("line one\nline two\n{{ passwrd }}")
    assert (error.key, error.line) == ("out", 3)
    assert "'passwrd' is undefined" in str(error)
    assert refused("ok\n{{ user").line is not None


# -- what attackers try: each refused, within a bound ---------------------------------------


ESCAPES = [
    pytest.param("{{ ''.__class__.__mro__[1].__subclasses__() }}", id="mro"),
    pytest.param("{{ user.__class__ }}", id="class-of-a-value"),
    pytest.param("{{ cycler.__init__.__globals__ }}", id="cycler"),
    pytest.param("{{ joiner }}", id="joiner"),
    pytest.param("{{ namespace }}", id="namespace"),
    pytest.param("{{ lipsum }}", id="lipsum"),
    pytest.param("{{ range(10**9) | toJson }}", id="range"),
    pytest.param("{{ dict }}", id="dict"),
    pytest.param("{{ self.__init__ }}", id="self"),
    pytest.param("{{ '{0.__class__}'.format(user) }}", id="format-string"),
    pytest.param("{{ config }}{{ environ }}{{ os }}", id="environment"),
    pytest.param("{% include '/etc/passwd' %}", id="include-file"),
    pytest.param("{% import 'x' as x %}", id="import"),
    pytest.param("{% from 'x' import y %}", id="from-import"),
    pytest.param("{% extends 'base' %}", id="extends"),
    pytest.param("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", id="recursion-macro"),
    pytest.param("{% for x in [1] recursive %}{{ loop([1]) }}{% endfor %}", id="recursion-loop"),
    pytest.param("{{ other_namespace_password }}{{ data['other-secret'] }}", id="other-values"),
]


@pytest.mark.parametrize("source", ESCAPES)
def test_sandbox_escapes_are_refused(source: str) -> None:
    started = time.monotonic()
    refused(source)
    assert time.monotonic() - started < 5  # refused, not run: generous for a loaded machine


BOMBS = [
    pytest.param("{{ 'x' * 10**9 }}", "a value over", id="string-times"),
    pytest.param("{{ [1] * 10**9 }}", "a value over", id="list-times"),
    pytest.param("{{ 10**9 * 'x' }}", "a value over", id="times-string"),
    pytest.param("{{ 9 ** (10**8) }}", "an integer over", id="power"),
    pytest.param("{{ '%999999999d' % 1 }}", "% formatting", id="percent-format"),
    pytest.param("{% set s = 'x' * 1000000 %}{{ s ~ s }}", "a value over", id="concat-doubling"),
    pytest.param("{% set s = 'x' * 1000000 %}{{ s + s }}", "a value over", id="plus-doubling"),
    pytest.param("{{ user | indent(10**9) }}", "indent", id="indent-width"),
    pytest.param("{% for a in canary %}{% for b in canary %}{% for c in canary %}"
                 "{% for d in canary %}{% endfor %}{% endfor %}{% endfor %}{% endfor %}",
                 "loop iterations", id="nested-loops"),
    pytest.param("{% set s = 'x' * 900000 %}{% for a in 'abcdefghijklmnopqrstuvwxyz' %}{{ s }}"
                 "{% endfor %}", "over", id="output-size"),
    pytest.param("{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}", "nests", id="deep-nesting"),
    pytest.param("x" * 70000, "characters", id="huge-source"),
]


@pytest.mark.parametrize(("source", "says"), BOMBS)
def test_work_and_output_are_bounded(source: str, says: str) -> None:
    tracemalloc.start()
    started = time.monotonic()
    try:
        error = refused(source)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.monotonic() - started < 15  # the deadline is 2 s; room for a loaded machine
    assert peak < 64 * 1024 * 1024
    assert says in str(error)


def test_yaml_of_a_large_structure_is_refused_before_it_is_written() -> None:
    """PyYAML would spend ~4 s on this (pure Python), past the deadline, which is checked only
    between steps: each node counts as a loop step instead."""
    started = time.monotonic()
    assert "loop iterations" in str(refused("{{ big | fromJson | toYaml }}", {"big": BIG}))
    assert time.monotonic() - started < 3


FAILING_ON_A_VALUE = [
    pytest.param("{{ data[canary] }}", id="key-computed-from-a-value"),
    pytest.param("{{ canary | fromJson }}", id="fromJson"),
    pytest.param("{{ canary | b64dec }}", id="b64dec"),
    pytest.param("{{ canary * canary }}", id="type-error"),
    pytest.param("{{ canary.nothere }}", id="attribute"),
    pytest.param("{{ (canary | fromJson).x }}", id="fromJson-then-attribute"),
    pytest.param("{{ n / 0 }}", id="zero-division"),
    pytest.param("{{ canary - 1 }}", id="arithmetic"),
]


@pytest.mark.parametrize("source", FAILING_ON_A_VALUE)
def test_an_error_never_carries_a_value(source: str) -> None:
    error = refused(source)
    for text in (str(error), repr(error), error.what):
        assert CANARY not in text
    # Nothing chained either: a traceback logged with the error shows no underlying message.
    assert error.__cause__ is None and error.__context__ is None


@given(st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=0x2FF,
                                      exclude_characters="'\\"), max_size=40))  # fmt: skip
@settings(max_examples=60, deadline=None)
def test_no_value_reaches_an_error_message(text: str) -> None:
    value = "CANARY" + text
    for source in ("{{ data[v] }}", "{{ v | fromJson }}", "{{ v | b64dec }}", "{{ v.x }}",
                   "{{ v * v }}", "{{ v - 1 }}"):  # fmt: skip
        with pytest.raises(TemplateError) as info:
            _render_one("out", source, context_of({"v": value}))
        assert value not in str(info.value)


# -- the spec -------------------------------------------------------------------------------


def _spec(template: object) -> Spec:
    return Spec.parse("app", {"data": [{"key": "password"}], "target": {"template": template}})


def test_the_template_type_and_metadata_reach_the_secret() -> None:
    spec = _spec({"data": {"x": "{{ password }}"}, "type": "kubernetes.io/dockerconfigjson",
                  "labels": {"team": "a"}, "annotations": {"note": "b"}})  # fmt: skip
    assert spec.target_type == "kubernetes.io/dockerconfigjson"
    assert spec.labels == {"team": "a"} and spec.annotations == {"note": "b"}


@pytest.mark.parametrize("template", [
    pytest.param({}, id="no-data"),
    pytest.param({"data": {"..x": "a"}}, id="bad-key"),
    pytest.param({"data": {"x": "a"}, "mergePolicy": "Sometimes"}, id="merge-policy"),
    pytest.param({"data": {"x": "a"}, "type": "kubernetes.io/service-account-token"},
                 id="token-type"),
    pytest.param({"data": {"x": "a"}, "labels": {"strongroom.io/managed-secret": "b"}},
                 id="reserved-label"),
])  # fmt: skip
def test_a_bad_template_spec_is_refused_with_the_field(template: object) -> None:
    with pytest.raises(policy.SpecRefusedError, match="target"):
        _spec(template)


def test_no_template_is_none() -> None:
    assert parse_template(None) is None


@pytest.mark.parametrize("exc", [
    pytest.param(ValueError(f"invalid literal for int() with base 10: {CANARY!r}"), id="ValueError"),
    pytest.param(KeyError(CANARY), id="KeyError"),
    pytest.param(UndefinedError(f"{CANARY!r} is undefined"), id="UndefinedError-computed-name"),
])  # fmt: skip
def test_an_exception_that_quotes_a_value_is_reduced_to_its_kind(exc: Exception) -> None:
    """Python's own messages quote operands; none of the template failures above happens to
    produce one today, so the reduction is tested on such messages directly."""
    assert CANARY not in _what(exc, frozenset({"user", "password"}))


def test_template_from_configmaps_is_parsed_and_an_inline_template_wins() -> None:
    spec = _spec({"templateFrom": [{"configMap": {"name": "a"}}, {"configMap": {"name": "b"}}],
                  "data": {"x": "inline"}})  # fmt: skip
    assert spec.template is not None and spec.template.config_maps == ("a", "b")
    merged = spec.template.with_sources({"x": "from-configmap", "y": "{{ password }}"})
    assert dict(merged.data) == {"x": "inline", "y": "{{ password }}"}
    assert _spec({"templateFrom": [{"configMap": {"name": "a"}}]}).template is not None
    with pytest.raises(policy.SpecRefusedError, match=r"configMap\.name"):
        _spec({"templateFrom": [{"configMap": {"name": "Not_A_Name"}}]})
