"""One validator for what enters the store, whichever way it comes: the command line, the Python
API and the operator all call these functions (the API calls them for every operation, so an
entry point cannot skip them). A refusal is a :class:`ValidationError` whose message names the
field and the rule and never carries a value; the API audits it (``outcome: invalid``).

The rules are Kubernetes' own, so that anything stored can be projected into a Secret:

======================  ======================================================================
namespace               RFC 1123 label: ``[a-z0-9]([-a-z0-9]*[a-z0-9])?``, at most 63
                        characters (a Namespace's name; so no dot)
name                    RFC 1123 subdomain: ``[a-z0-9]([-a-z0-9.]*[a-z0-9])?``, at most 253
key                     a Secret data key: ``[-._a-zA-Z0-9]+``, at most 253, not ``.`` or ``..``
                        and not starting with ``..`` (the kubelet's volume writer owns
                        ``..data`` and ``..<timestamp>``; the apiserver refuses such keys)
value                   JSON: a string, number, boolean, object or list; not null, NaN or
                        infinite; valid Unicode (no lone surrogate, which has no UTF-8 form);
                        objects and lists nested at most ``max_json_depth`` deep (64); at most
                        ``max_value_bytes`` as canonical JSON
secret                  all keys and values of one version together at most
                        ``max_secret_bytes`` (1 MiB, a Secret's limit), counted as key
                        characters plus canonical JSON bytes (a little above what the Secret
                        will hold, never below)
description             text without control characters, at most 1,024 characters
======================  ======================================================================

Configured limits (:class:`strongroom.config.Limits`) can only tighten the Kubernetes ones.

**Creating and addressing.** Writes (``set``, the operator's ``resolve``) must follow the
rules above. Reads and deletes accept any namespace the store could hold before these rules,
an RFC 1123 subdomain, so a store upgraded from an earlier release can still read and delete
what it holds under a dotted namespace; nothing new can be written there.

**Strongroom's own records.** The store keeps a few internal records (the operator's data HMAC
key) under the namespace :data:`INTERNAL`, ``strongroom.internal``: the dot makes it a name no
Kubernetes namespace can have, so no ManagedSecret can address it. The namespace is reserved
outright, for reads as well as writes: a string from a command line, an environment variable,
a custom resource or an API caller is refused there, even when it spells
``strongroom.internal``. Only the :data:`INTERNAL` object itself (of the type
:class:`InternalNamespace`) passes, and only code that imports it on purpose holds it, as
:mod:`strongroom.datahmac` does. Nothing parsed from input becomes one, and there is no flag
or option that turns the check off.

**Printing.** :func:`printable` escapes control and format characters (newlines, terminal
escapes, bidirectional overrides) in text about to be printed or written to the audit log, so
a name or a message cannot forge a line of ``audit tail`` or move the cursor.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

from strongroom import values
from strongroom.config import Limits
from strongroom.errors import ValidationError

K8S_NAMESPACE_MAX: Final = 63
K8S_NAME_MAX: Final = 253
K8S_KEY_MAX: Final = 253
K8S_SECRET_MAX_BYTES: Final = 1 << 20
MAX_DESCRIPTION_LENGTH: Final = 1024
KUBERNETES: Final = Limits()
"""Kubernetes' own limits (the defaults), for checks with no configured settings at hand."""

_LABEL_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_SUBDOMAIN_RE = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
_KEY_RE = re.compile(r"[-._a-zA-Z0-9]+")


class InternalNamespace(str):
    """The type of :data:`INTERNAL`: the only namespace value allowed to carry a dot on writes.

    Why a type and not a flag: the permission travels with the value, from the module that
    owns the internal record to the validator, through the same API calls every caller uses.
    Nothing parsed from input is ever of this type.
    """

    __slots__ = ()


INTERNAL: Final = InternalNamespace("strongroom.internal")
"""Namespace of Strongroom's own records (see the module docstring)."""


def is_internal(namespace: object) -> bool:
    """Whether ``namespace`` is :data:`INTERNAL` itself, not merely a string equal to it."""
    return type(namespace) is InternalNamespace and namespace == INTERNAL


# -- names and keys -------------------------------------------------------------------------


def namespace(text: object, *, limits: Limits, write: bool) -> str:
    """A namespace to write to, or (``write=False``) to read or delete from."""
    if is_internal(text):
        return str(text)
    value = _text("namespace", text)
    if value == INTERNAL:
        raise ValidationError(f"namespace {INTERNAL} is reserved for Strongroom's own records")
    if not write:  # what the store accepted before the Kubernetes rule (a subdomain)
        return _shaped("namespace", value, _SUBDOMAIN_RE, min(limits.max_name_length, K8S_NAME_MAX),
                       "lowercase letters, digits, '-' or '.'")  # fmt: skip
    return _shaped("namespace", value, _LABEL_RE, min(limits.max_name_length, K8S_NAMESPACE_MAX),
                   "lowercase letters, digits or '-' (a Kubernetes namespace: no '.')")  # fmt: skip


def name(text: object, *, limits: Limits = KUBERNETES) -> str:
    """A secret's name: an RFC 1123 subdomain, as a Kubernetes object's name."""
    return _shaped("name", _text("name", text), _SUBDOMAIN_RE,
                   min(limits.max_name_length, K8S_NAME_MAX),
                   "lowercase letters, digits, '-' or '.'")  # fmt: skip


def key(text: object, *, limits: Limits = KUBERNETES, write: bool) -> str:
    """A key within a secret: Kubernetes' rule for Secret data keys (ConfigMap keys alike).

    ``write=False`` (a key to read or to remove) takes any key the store accepted before the
    rule refused a leading ``..``, so such a key can still be read and removed.
    """
    value = _text("key", text)
    if not value:
        raise ValidationError("a key must not be empty")
    limit = min(limits.max_key_length, K8S_KEY_MAX)
    if len(value) > limit:
        raise ValidationError(f"a key is {len(value)} characters; the limit is {limit}")
    if not _KEY_RE.fullmatch(value):
        raise ValidationError(
            f"key '{printable(value)}' may contain only letters, digits, '-', '_' and '.'"
        )
    if value in {".", ".."} or (write and value.startswith("..")):
        raise ValidationError(
            f"key '{value}' is refused: Kubernetes keeps '.', '..' and names starting with "
            "'..' for itself"
        )
    return value


def reference(ns: object, secret: object, *, limits: Limits, write: bool) -> None:
    """``ns/secret`` to write to, or (``write=False``) to read or delete."""
    namespace(ns, limits=limits, write=write)
    name(secret, limits=limits)


# -- values ---------------------------------------------------------------------------------


def depth(value: Any, *, limit: int) -> None:
    """Refuse objects and lists nested more than ``limit`` deep, before anything recurses.

    Measured without recursion (deep input made ``json.dumps`` raise RecursionError); a
    structure that contains itself is deeper than any limit.
    """
    if not isinstance(value, (Mapping, list, tuple)):
        return
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, Mapping):
            children: Iterable[Any] = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        if level >= limit:
            raise ValidationError(f"a value nests objects or lists more than {limit} levels deep")
        stack.extend((child, level + 1) for child in children)


def encode_value(item: str, raw_value: Any, *, limits: Limits) -> bytes:
    """One value's canonical JSON (:func:`strongroom.values.encode`), checked."""
    try:
        depth(raw_value, limit=limits.max_json_depth)
        raw = values.encode(raw_value)
    except ValidationError as exc:
        raise ValidationError(f"value of key {item!r}: {exc}") from None
    if len(raw) > limits.max_value_bytes:
        raise ValidationError(
            f"value of key {item!r} is {len(raw)} bytes as JSON; the limit is "
            f"{limits.max_value_bytes}"
        )
    return raw


def write(
    ns: object, secret: object, data: object, removed: Iterable[object], *, limits: Limits,
    description_text: object = None,
) -> dict[str, bytes]:  # fmt: skip
    """Everything a write brings, checked; returns its values as canonical JSON.

    The total of the new version, with the keys it keeps, is :func:`secret_size`'s to check
    once those are known (inside the write's transaction).
    """
    reference(ns, secret, limits=limits, write=True)
    if not isinstance(data, Mapping):
        raise ValidationError("the data to set must map keys to values")
    for item in data:
        key(item, limits=limits, write=True)
    for item in removed:
        key(item, limits=limits, write=False)
    if description_text is not None:
        description(description_text)
    encoded = {item: encode_value(item, raw, limits=limits) for item, raw in data.items()}
    secret_size(encoded, limits=limits)
    return encoded


def secret_size(encoded: Mapping[str, bytes], *, limits: Limits) -> None:
    """All keys and values of one version together fit a Secret."""
    limit = min(limits.max_secret_bytes, K8S_SECRET_MAX_BYTES)
    total = sum(len(k) + len(v) for k, v in encoded.items())
    if total > limit:
        raise ValidationError(
            f"the secret would hold {total} bytes (keys and JSON values); the limit is {limit}, "
            "a Kubernetes Secret's size"
        )


def description(text: object) -> str:
    """A secret's note (stored unencrypted): one line of printable text."""
    note = _text("description", text)
    if len(note) > MAX_DESCRIPTION_LENGTH:
        raise ValidationError(
            f"a description is {len(note)} characters; the limit is {MAX_DESCRIPTION_LENGTH}"
        )
    if printable(note) != note:
        raise ValidationError("a description may not contain control characters")
    return note


# -- printing -------------------------------------------------------------------------------

# C0 and C1 controls and DEL; line and paragraph separators; the bidirectional and zero-width
# format characters a terminal or a viewer acts on (Unicode "Trojan Source" characters).
_BEYOND_C0 = "\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ufff9-\ufffb\ud800-\udfff"
_UNSAFE = re.compile(f"[\x00-\x1f{_BEYOND_C0}]")
_UNSAFE_IN_JSON = re.compile(f"[{_BEYOND_C0}]")  # json.dumps escapes C0 controls itself


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    if char in "\n\r\t":
        return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}[char]
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: object) -> str:
    """``text`` safe to print on one line: control and format characters as ``\\x..``/``\\u....``.

    Lone surrogates (from undecodable bytes in argv or the environment) are escaped too, so
    the result always encodes as UTF-8. Other text, non-ASCII letters included, is unchanged.
    """
    value = text if isinstance(text, str) else str(text)
    return _UNSAFE.sub(_escape, value) if _UNSAFE.search(value) else value


def printable_json(text: str) -> str:
    """JSON from ``json.dumps`` with the characters :func:`printable` escapes as ``\\uXXXX``.

    ``json.dumps`` escapes C0 controls inside strings (the newlines of ``indent`` are layout and
    stay) but, with ``ensure_ascii=False``, leaves C1 controls, bidirectional overrides and lone
    surrogates raw. Those occur only inside strings, where ``\\uXXXX`` is the same character,
    so any JSON reader gets the same document.
    """
    return _UNSAFE_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


# -- helpers --------------------------------------------------------------------------------


def _text(field: str, value: object) -> str:
    if not isinstance(value, str):
        raise ValidationError(f"{field} must be text, not {type(value).__name__}")
    return value


def _shaped(field: str, value: str, pattern: re.Pattern[str], limit: int, allowed: str) -> str:
    if not value:
        raise ValidationError(f"{field} must not be empty")
    if len(value) > limit:
        raise ValidationError(f"{field} is {len(value)} characters; the limit is {limit}")
    if not pattern.fullmatch(value):
        raise ValidationError(
            f"{field} '{printable(value)}' must be {allowed}, starting and ending with a "
            "lowercase letter or digit"
        )
    return value


__all__ = [
    "INTERNAL",
    "InternalNamespace",
    "depth",
    "description",
    "encode_value",
    "is_internal",
    "key",
    "name",
    "namespace",
    "printable",
    "printable_json",
    "reference",
    "secret_size",
    "write",
]
