"""Rendering: a ManagedSecret's stored values in, the Secret's data out.

Without ``spec.target.template`` every stored key becomes a Secret key as it is
(:func:`strongroom.values.render`). With one, each ``template.data`` entry is a Jinja2
template whose output becomes that key; ``mergePolicy: Merge`` keeps the stored keys beside
them (a templated key wins), ``Replace`` (the default) writes only the templated keys.

What a template can reach, and why it cannot reach more (docs/security.md, "Templates"):

- **Only this ManagedSecret's stored keys**, as strings: ``data`` maps every key, and a key
  that is a plain identifier (other than ``data``) is also a variable. Nothing else is in the
  context: no globals (``range``, ``dict``, ``lipsum``, ``cycler``, ``joiner``, ``namespace``
  are gone), no loader (``include``/``import``/``extends`` are refused when the template is
  compiled, and the loader loads nothing), no function or method calls at all (so no
  ``str.format``, no macros, no recursion through ``loop()``), no attribute that starts with
  an underscore or names a callable (Jinja's ``ImmutableSandboxedEnvironment`` plus a
  stricter check).
- **Filters from an allow-list only** (:data:`FILTERS`); Jinja's own filters and tests are
  removed.
- **Bounded work**: a render has a budget of loop iterations and of bytes produced (by
  operators, ``~``, filters and output together), and a deadline; ``*``, ``**``, ``+`` and
  ``%`` are checked *before* they run, so ``'x' * 10**9`` is refused without being built.
  Template source, nesting and output are capped too.
- **Errors carry no values**: :class:`~strongroom.errors.TemplateError` names the template
  key, the line and a category; the text of the underlying exception is never used (a Python
  message may quote the operand, e.g. a ``KeyError`` on a key computed from a value).
"""

from __future__ import annotations

import base64
import binascii
import contextvars
import dataclasses
import hashlib
import json
import re
import time
import types
import urllib.parse
from collections.abc import Iterator, Mapping
from typing import Any, NoReturn, TypeVar

import yaml
from jinja2 import BaseLoader, StrictUndefined, TemplateSyntaxError, nodes
from jinja2.environment import Template
from jinja2.exceptions import SecurityError, TemplateNotFound, UndefinedError
from jinja2.filters import do_default, do_indent
from jinja2.sandbox import ImmutableSandboxedEnvironment

from strongroom import policy, presets, validate, values
from strongroom.errors import TemplateError, ValidationError

__all__ = ["FILTERS", "MERGE_POLICIES", "Limits", "TemplateSpec", "secret_data"]

MERGE_POLICIES = ("Replace", "Merge")
_TEMPLATE_NAME = "<template>"
_T = TypeVar("_T")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one render may spend; generous for a DSN or a config file, small for an attack."""

    source_chars: int = 64 * 1024  # per template; the CRD says the same
    output_bytes: int = policy.MAX_SECRET_BYTES  # per template
    value_chars: int = policy.MAX_SECRET_BYTES  # any string or list an operator builds
    work_bytes: int = 16 * 1024 * 1024  # all strings built by a render, output included
    loop_steps: int = 100_000  # loop iterations per render, nested ones included
    int_bits: int = 4096  # integers built by * and **
    seconds: float = 2.0  # wall clock per render, checked at every step above
    indent: int = 64  # the indent filter's width


LIMITS = Limits()


class _Refused(Exception):  # noqa: N818 - reads as what happened
    """A limit or a rule of this module; its message is ours and carries no value."""


@dataclasses.dataclass
class _Budget:
    limits: Limits
    deadline: float
    steps: int = 0
    work: int = 0

    def charge(self, *, steps: int = 0, size: int = 0) -> None:
        self.steps += steps
        self.work += size
        if self.steps > self.limits.loop_steps:
            raise _Refused(f"more than {self.limits.loop_steps} loop iterations")
        if self.work > self.limits.work_bytes:
            raise _Refused(f"more than {self.limits.work_bytes} bytes built")
        if time.monotonic() > self.deadline:
            raise _Refused(f"took more than {self.limits.seconds:g} s")


_BUDGET: contextvars.ContextVar[_Budget] = contextvars.ContextVar("strongroom_render_budget")


def _budget() -> _Budget:
    try:
        return _BUDGET.get()
    except LookupError:  # a filter run outside a render (never by this module)
        raise _Refused("no render in progress") from None


def _sized(value: _T) -> _T:
    """Charge a built value to the budget and cap its length."""
    if isinstance(value, str | bytes | list | tuple):
        if len(value) > _budget().limits.value_chars:
            raise _Refused(f"a value over {_budget().limits.value_chars} characters")
        _budget().charge(size=len(value))
    return value


# -- filters: the allow-list ----------------------------------------------------------------


def _text(value: Any) -> str:
    return value if isinstance(value, str) else values.render(value)


def _b64enc(value: Any) -> str:
    return _sized(base64.b64encode(_text(value).encode("utf-8")).decode("ascii"))


def _b64dec(value: Any) -> str:
    try:
        return _sized(base64.b64decode(_text(value), validate=True).decode("utf-8"))
    except (binascii.Error, ValueError):
        raise _Refused("b64dec: the input is not base64 of UTF-8 text") from None


def _urlquote(value: Any) -> str:
    return _sized(urllib.parse.quote(_text(value), safe=""))


def _to_json(value: Any) -> str:
    return _sized(json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False))


def _from_json(value: Any) -> Any:
    try:
        return json.loads(_text(value))
    except ValueError:
        raise _Refused("fromJson: the input is not JSON") from None


def _to_yaml(value: Any) -> str:
    # PyYAML is pure Python and ~30x slower than json: each node it will write is a loop step.
    budget, pending = _budget(), [value]
    while pending:
        node = pending.pop()
        budget.charge(steps=1)
        if isinstance(node, Mapping):
            pending.extend(node.values())
        elif isinstance(node, list | tuple):
            pending.extend(node)
    return _sized(yaml.safe_dump(value, default_flow_style=False, sort_keys=True,
                                 allow_unicode=True))  # fmt: skip


def _trim(value: Any) -> str:
    return _text(value).strip()


def _upper(value: Any) -> str:
    return _text(value).upper()


def _lower(value: Any) -> str:
    return _text(value).lower()


def _sha256(value: Any) -> str:
    return hashlib.sha256(_text(value).encode("utf-8")).hexdigest()


def _indent(value: Any, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
    if (len(width) if isinstance(width, str) else width) > _budget().limits.indent:
        raise _Refused(f"indent: a width over {_budget().limits.indent}")
    return _sized(str(do_indent(_text(value), width, first, blank)))


def _default(value: Any, default_value: Any = "", boolean: bool = False) -> Any:
    return do_default(value, default_value, boolean)


FILTERS: Mapping[str, Any] = types.MappingProxyType({
    "b64enc": _b64enc, "b64dec": _b64dec, "urlquote": _urlquote, "toJson": _to_json,
    "fromJson": _from_json, "toYaml": _to_yaml, "trim": _trim, "upper": _upper,
    "lower": _lower, "sha256": _sha256, "indent": _indent, "default": _default,
})  # fmt: skip


def _counted(iterable: Any) -> Iterator[Any]:
    """Every ``for`` loop iterates through this (see :func:`_guard`)."""
    budget = _budget()
    for item in iterable:
        budget.charge(steps=1)
        yield item


def _concat(parts: list[Any]) -> str:
    """Every ``~`` goes through this, so that doubling a string by ``~`` is charged too."""
    texts = [str(part) for part in parts]  # an undefined part raises here, as Jinja's ~ does
    if sum(map(len, texts)) > _budget().limits.value_chars:
        raise _Refused(f"a value over {_budget().limits.value_chars} characters")
    return _sized("".join(texts))


_INTERNAL_FILTERS = {"_strongroom_counted": _counted, "_strongroom_concat": _concat}


# -- the environment ------------------------------------------------------------------------


class _NoLoader(BaseLoader):
    """Loads nothing: there is no other template to include, import or extend."""

    def get_source(self, environment: Any, template: str) -> NoReturn:
        raise TemplateNotFound(template)


class _Environment(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox with calls refused and operators checked before they run."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        return not callable(value) and super().is_safe_attribute(obj, attr, value)

    def is_safe_callable(self, obj: Any) -> bool:
        return False

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        raise _Refused("templates call no functions or methods; use filters")

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _check_binop(operator, left, right, _budget().limits)
        result: Any = super().call_binop(context, operator, left, right)
        return _sized(result)


def _check_binop(operator: str, left: Any, right: Any, limits: Limits) -> None:
    """Refuse an operation whose result would be over a limit, before it is computed."""
    sequences = (str, list, tuple)
    if operator == "%" and isinstance(left, str):
        raise _Refused("% formatting of strings is not allowed; use ~ and filters")
    if operator == "*" and isinstance(left, int) and isinstance(right, sequences):
        left, right = right, left
    size = None
    if operator == "*" and isinstance(left, sequences) and isinstance(right, int):
        size = len(left) * max(right, 0)
    elif operator == "+" and isinstance(left, sequences) and isinstance(right, sequences):
        size = len(left) + len(right)
    if size is not None and size > limits.value_chars:
        raise _Refused(f"a value over {limits.value_chars} characters")
    bits = 0
    if isinstance(left, int) and isinstance(right, int):
        if operator == "*":
            bits = left.bit_length() + right.bit_length()
        elif operator == "**" and abs(left) > 1:
            bits = right * left.bit_length()
    if bits > limits.int_bits:
        raise _Refused(f"an integer over {limits.int_bits} bits")


def _environment() -> _Environment:
    env = _Environment(
        loader=_NoLoader(), undefined=StrictUndefined, autoescape=False, optimized=False,
        cache_size=0, auto_reload=False,
    )  # fmt: skip
    env.globals.clear()
    env.filters.clear()
    env.filters.update(FILTERS)
    env.filters.update(_INTERNAL_FILTERS)
    env.tests.clear()
    return env


_ENV = _environment()
_REFUSED_NODES: Mapping[type[nodes.Node], str] = {
    nodes.Include: "include", nodes.Import: "import", nodes.FromImport: "import",
    nodes.Extends: "extends", nodes.Macro: "macro", nodes.CallBlock: "call",
}  # fmt: skip


def _guard(tree: nodes.Template) -> nodes.Template:
    """Refuse what reaches other templates or recurses; route loops and ``~`` through the
    budget (Jinja has no hook for either, so the tree is rewritten before it is compiled)."""
    for kind, word in _REFUSED_NODES.items():
        found = next(iter(tree.find_all(kind)), None)
        if found is not None:
            raise _SyntaxRefused(f"{{% {word} %}} is not allowed", found.lineno)
    for loop in tree.find_all(nodes.For):
        loop.iter = nodes.Filter(loop.iter, "_strongroom_counted", [], [], None, None,
                                 lineno=loop.lineno)  # fmt: skip
    for parent in tree.find_all(nodes.Node):
        for field in parent.fields:
            child = getattr(parent, field, None)
            if isinstance(child, nodes.Concat):
                setattr(parent, field, _concat_node(child))
            elif isinstance(child, list):
                setattr(parent, field, [_concat_node(c) if isinstance(c, nodes.Concat) else c
                                        for c in child])  # fmt: skip
    return tree


def _concat_node(node: nodes.Concat) -> nodes.Filter:
    return nodes.Filter(nodes.List(node.nodes, lineno=node.lineno), "_strongroom_concat", [], [],
                        None, None, lineno=node.lineno)  # fmt: skip


class _SyntaxRefused(Exception):  # noqa: N818 - reads as what happened
    def __init__(self, message: str, lineno: int) -> None:
        super().__init__(message)
        self.lineno = lineno


@dataclasses.dataclass(frozen=True)
class _Compiled:
    template: Template
    names: frozenset[str]  # every name, attribute and constant key written in the source


_COMPILED: dict[str, _Compiled | tuple[str, int]] = {}
_COMPILED_MAX = 4096


def _compile(source: str, limits: Limits) -> _Compiled:
    """The compiled template, or _SyntaxRefused; cached by source (a refusal too)."""
    cached = _COMPILED.get(source)
    if cached is None:
        cached = _compile_uncached(source, limits)
        if len(_COMPILED) >= _COMPILED_MAX:
            _COMPILED.clear()
        _COMPILED[source] = cached
    if isinstance(cached, tuple):
        raise _SyntaxRefused(*cached)
    return cached


def _compile_uncached(source: str, limits: Limits) -> _Compiled | tuple[str, int]:
    if len(source) > limits.source_chars:
        return (f"the template is over {limits.source_chars} characters", 1)
    try:
        tree = _guard(_ENV.parse(source, name=_TEMPLATE_NAME))
        names = {n.name for n in tree.find_all(nodes.Name)}
        names |= {n.attr for n in tree.find_all(nodes.Getattr)}
        names |= {str(n.arg.value) for n in tree.find_all(nodes.Getitem)
                  if isinstance(n.arg, nodes.Const)}  # fmt: skip
        return _Compiled(_ENV.from_string(tree), frozenset(names))
    except _SyntaxRefused as exc:
        return (str(exc), exc.lineno)
    except TemplateSyntaxError as exc:  # Jinja's message quotes the source, never a value
        return (f"syntax error: {exc.message or 'invalid template'}", exc.lineno)
    except RecursionError:
        return ("the template nests too deeply", 1)


# -- rendering ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TemplateSpec:
    """``spec.target.template`` as the operator reads it (the CRD's rules applied again)."""

    data: tuple[tuple[str, str], ...]
    type: str | None = None
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    annotations: Mapping[str, str] = dataclasses.field(default_factory=dict)
    merge_policy: str = "Replace"
    config_maps: tuple[str, ...] = ()  # templateFrom: ConfigMaps of the namespace, in order
    preset: str | None = None  # strongroom.presets
    preset_keys: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def with_sources(self, sources: Mapping[str, str]) -> TemplateSpec:
        """This spec with templates from its ConfigMaps (an inline template wins)."""
        return dataclasses.replace(self, data=tuple(sorted({**sources, **dict(self.data)}.items())))


def _template_line(exc: BaseException) -> int | None:
    """The template line where ``exc`` was raised (Jinja rewrites the traceback so that the
    template's frames carry its line numbers)."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == _TEMPLATE_NAME:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


_UNDEFINED = re.compile(r"^'([^']*)' is undefined$|has no attribute '([^']*)'$")


def _what(exc: BaseException, names: frozenset[str]) -> str:
    """A value-free description of a failure: our own messages, or a category."""
    if isinstance(exc, _Refused):
        return str(exc)
    if isinstance(exc, UndefinedError):
        match = _UNDEFINED.search(str(exc))
        name = next((g for g in match.groups() if g), None) if match else None
        # A name written in the template is shown; one computed from a value is not.
        return f"{name!r} is undefined" if name in names else "a name, key or attribute is undefined"
    if isinstance(exc, SecurityError):
        return "refused by the sandbox (private attribute, callable or mutation)"
    if isinstance(exc, RecursionError):
        return "nests too deeply"
    if isinstance(exc, MemoryError):
        return "out of memory"
    return f"{type(exc).__name__} (the message is not shown: it may quote a value)"


def _collect(chunks: Iterator[str], budget: _Budget) -> str:
    """The output, stopped as soon as it is over the limit (not once it is all built)."""
    parts: list[str] = []
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > budget.limits.output_bytes:
            raise _Refused(f"the output is over {budget.limits.output_bytes} characters")
        budget.charge(size=len(chunk))
        parts.append(chunk)
    return "".join(parts)


def render_one(key: str, source: str, context: Mapping[str, Any], limits: Limits = LIMITS) -> str:
    """One template's output, or :class:`TemplateError` naming ``key``, a line and a category."""
    try:
        compiled = _compile(source, limits)
    except _SyntaxRefused as exc:  # our own message, about the source: no value in it
        raise TemplateError(key, exc.lineno, str(exc)) from None
    budget = _Budget(limits, time.monotonic() + limits.seconds)
    token = _BUDGET.set(budget)
    try:
        return _collect(compiled.template.generate(context), budget)
    except Exception as exc:  # noqa: BLE001 - any failure is a TemplateError without its text
        failure = TemplateError(key, _template_line(exc), _what(exc, compiled.names))
    finally:
        _BUDGET.reset(token)
    raise failure  # outside the handler: no __context__ chains the original (and its text)


def context_of(stored: Mapping[str, Any]) -> dict[str, Any]:
    """What a template sees: ``data`` (every stored key, as its Secret text) and each key that
    is an identifier as a variable of its own."""
    text = {key: values.render(value) for key, value in stored.items()}
    context: dict[str, Any] = {k: v for k, v in text.items()
                               if _IDENTIFIER.match(k) and k != "data"}  # fmt: skip
    context["data"] = text
    return context


def secret_data(template: TemplateSpec | None, stored: Mapping[str, Any]) -> dict[str, str]:
    """The Secret's data (base64 values) for these stored values: all of them as they are, or
    the template's keys (plus the stored ones under ``mergePolicy: Merge``).

    Raises :class:`TemplateError` when any template fails: then nothing is rendered, so the
    Secret keeps its last good data.
    """
    plain = {key: values.render(value) for key, value in stored.items()}
    if template is not None:
        built = presets.build(template.preset, template.preset_keys, plain) if template.preset else {}
        context = context_of(stored)
        rendered = {**built, **{key: render_one(key, source, context) for key, source in template.data}}
        plain = {**plain, **rendered} if template.merge_policy == "Merge" else rendered
    return {key: base64.b64encode(text.encode("utf-8")).decode() for key, text in plain.items()}


def parse_template(raw: object) -> TemplateSpec | None:
    """``spec.target.template``, or None; :class:`~strongroom.policy.SpecRefusedError` names
    the bad field."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise policy.SpecRefusedError("target.template must be an object")
    data = raw.get("data") or {}
    config_maps = _config_maps(raw.get("templateFrom"))
    preset = raw.get("preset")
    if preset is not None and preset not in presets.PRESETS:
        raise policy.SpecRefusedError("target.template.preset must be one of "
                                      f"{', '.join(presets.PRESETS)}")  # fmt: skip
    if not isinstance(data, Mapping) or not (data or config_maps or preset) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise policy.SpecRefusedError("target.template needs data (key -> template), "
                                      "templateFrom or preset")  # fmt: skip
    for key in data:
        try:  # the store's rule for keys is Kubernetes' rule for Secret keys
            validate.key(key, write=True)
        except ValidationError as exc:
            raise policy.SpecRefusedError(f"target.template.data[{key}]: {exc}") from None
    merge = raw.get("mergePolicy") or "Replace"
    if merge not in MERGE_POLICIES:
        raise policy.SpecRefusedError("target.template.mergePolicy must be Replace or Merge")
    secret_type = raw.get("type")
    if secret_type is not None:
        if not isinstance(secret_type, str) or not secret_type:
            raise policy.SpecRefusedError("target.template.type must be a Secret type")
        policy.check_target_type(secret_type)
    return TemplateSpec(data=tuple(sorted(data.items())), type=secret_type,
                        labels=_strings(raw, "labels"), annotations=_strings(raw, "annotations"),
                        merge_policy=str(merge), config_maps=config_maps,
                        preset=None if preset is None else str(preset),
                        preset_keys=_preset_keys(raw, preset))  # fmt: skip


def _preset_keys(raw: Mapping[str, Any], preset: object) -> dict[str, str]:
    """``presetKeys``: each a field of the preset mapped to a stored key."""
    keys = _plain_strings(raw, "presetKeys")
    if keys and preset is None:
        raise policy.SpecRefusedError("target.template.presetKeys needs a preset")
    if preset is None:
        return {}
    fields = (*presets.PRESETS[str(preset)].required, *presets.PRESETS[str(preset)].optional)
    for field, key in keys.items():
        if field not in fields:
            raise policy.SpecRefusedError(
                f"target.template.presetKeys.{field} is not a field of preset {preset} "
                f"({', '.join(fields) or 'it has none'})")  # fmt: skip
        try:
            validate.key(key, write=True)
        except ValidationError as exc:
            raise policy.SpecRefusedError(f"target.template.presetKeys.{field}: {exc}") from None
    return keys


def _config_maps(raw: object) -> tuple[str, ...]:
    if raw is None:
        return ()
    names = [item.get("configMap", {}).get("name") if isinstance(item, Mapping)
             and isinstance(item.get("configMap"), Mapping) else None
             for item in (raw if isinstance(raw, list) else [None])]  # fmt: skip
    for name in names:
        try:
            validate.name(name if isinstance(name, str) else "")
        except ValidationError:
            raise policy.SpecRefusedError("target.template.templateFrom items need "
                                          "configMap.name, a ConfigMap name") from None  # fmt: skip
    return tuple(str(n) for n in names)


def _plain_strings(raw: Mapping[str, Any], field: str) -> dict[str, str]:
    value = raw.get(field)
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise policy.SpecRefusedError(f"target.template.{field} must map strings to strings")
    return dict(value)


def _strings(raw: Mapping[str, Any], field: str) -> dict[str, str]:
    value = _plain_strings(raw, field)
    policy.check_metadata_keys(f"target.template.{field}", value, labels=field == "labels")
    return dict(value)
