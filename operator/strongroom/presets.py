"""Ready-made Secret shapes (``target.template.preset``): the standard Kubernetes Secret types
built from named stored keys, so nobody writes the ``.dockerconfigjson`` JSON by hand.

Each preset names the fields it needs; a field is read from the stored key of the same name,
or from the key ``presetKeys`` maps it to. A missing required key fails the render like a
template does (the Secret keeps its last good data; the message names the key, never a value).

- ``dockerconfigjson`` → type ``kubernetes.io/dockerconfigjson``, one key ``.dockerconfigjson``:
  ``{"auths": {REGISTRY: {"username", "password", "auth": base64(user:password)[, "email"]}}}``
- ``basic-auth`` → type ``kubernetes.io/basic-auth``, keys ``username`` and ``password``.
- ``tls`` → type ``kubernetes.io/tls``, keys ``tls.crt`` and ``tls.key`` (and ``ca.crt`` when
  stored); the key must be a PEM private key and the certificate PEM, checked by their
  armour only (no parsing of attacker-chosen DER here).
- ``dotenv`` → type ``Opaque``, one key ``.env``: every stored key as ``KEY='value'``, sorted,
  so that a shell, docker compose and python-dotenv read the same values and none of them runs
  or expands anything; a value no single-quoted line carries safely is refused (:func:`_dotenv`).
  Keys must be environment variable names.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping

from strongroom.errors import TemplateError

__all__ = ["PRESETS", "Preset", "build"]

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class Preset:
    """A preset's name, the Secret type it makes and its fields (required, optional)."""

    def __init__(self, name: str, secret_type: str, required: tuple[str, ...],
                 optional: tuple[str, ...] = ()) -> None:  # fmt: skip
        self.name, self.secret_type = name, secret_type
        self.required, self.optional = required, optional


PRESETS: Mapping[str, Preset] = {
    "dockerconfigjson": Preset("dockerconfigjson", "kubernetes.io/dockerconfigjson",
                               ("registry", "username", "password"), ("email",)),
    "basic-auth": Preset("basic-auth", "kubernetes.io/basic-auth", ("username", "password")),
    "tls": Preset("tls", "kubernetes.io/tls", ("tls.crt", "tls.key"), ("ca.crt",)),
    "dotenv": Preset("dotenv", "Opaque", ()),
}  # fmt: skip


def _field(preset: Preset, field: str, keys: Mapping[str, str], text: Mapping[str, str],
           *, required: bool) -> str | None:  # fmt: skip
    stored = keys.get(field, field)
    if stored in text:
        return text[stored]
    if required:
        named = f"stored key {stored!r}" + (f" (presetKeys.{field})" if stored != field else "")
        raise TemplateError(f"preset {preset.name}", None, f"needs {named}, which is not stored")
    return None


_DOTENV_REFUSED = ("'", "\\", "\n", "\r", "\0", "${")


def _dotenv(text: Mapping[str, str]) -> str:
    """``KEY='value'`` lines. Single quotes are literal for a shell and for docker compose; the
    characters they cannot carry, or that a reader treats differently, are refused rather than
    escaped: ``'``, backslash (python-dotenv decodes ``\\``, a shell does not), newlines, NUL,
    and ``${`` (python-dotenv expands it inside any quotes, so a value could pull the reading
    process's environment into itself)."""
    lines = []
    for key in sorted(text):
        if not _ENV_NAME.fullmatch(key):  # match() would let "KEY\n" through ($)
            raise TemplateError("preset dotenv", None, f"key {key!r} is not an environment "
                                "variable name (letters, digits, _; not first a digit)")  # fmt: skip
        value = text[key]
        bad = next((c for c in _DOTENV_REFUSED if c in value), None)
        if bad is not None:
            shown = {"\n": "a newline", "\r": "a carriage return", "\0": "NUL"}.get(bad, repr(bad))
            raise TemplateError("preset dotenv", None, f"the value of {key} holds {shown}, which "
                                "a .env file cannot carry the same way for every reader; use a "
                                "template")  # fmt: skip
        lines.append(f"{key}='{value}'\n")
    return "".join(lines)


def build(name: str, keys: Mapping[str, str], text: Mapping[str, str]) -> dict[str, str]:
    """The preset's Secret data (plain text) from the stored values as text."""
    preset = PRESETS[name]
    got = {field: _field(preset, field, keys, text, required=True) for field in preset.required}
    more = {field: _field(preset, field, keys, text, required=False) for field in preset.optional}
    if name == "dockerconfigjson":
        user, password = got["username"] or "", got["password"] or ""
        entry = {"username": user, "password": password,
                 "auth": base64.b64encode(f"{user}:{password}".encode()).decode()}  # fmt: skip
        if more.get("email"):
            entry["email"] = str(more["email"])
        return {".dockerconfigjson": json.dumps({"auths": {got["registry"]: entry}},
                                                separators=(",", ":"))}  # fmt: skip
    if name == "basic-auth":
        return {"username": got["username"] or "", "password": got["password"] or ""}
    if name == "tls":
        for field, armour in (("tls.crt", "-----BEGIN CERTIFICATE-----"),
                              ("tls.key", "PRIVATE KEY-----")):  # fmt: skip
            if armour not in (got[field] or ""):
                raise TemplateError("preset tls", None, f"stored key for {field} is not PEM")
        out = {"tls.crt": got["tls.crt"] or "", "tls.key": got["tls.key"] or ""}
        if more.get("ca.crt"):
            out["ca.crt"] = str(more["ca.crt"])
        return out
    return {".env": _dotenv(text)}
