"""``NAMESPACE/NAME`` references to the operator's own objects (its Lease, its audit checkpoint
ConfigMap), parsed one way so that both refuse the same bad input with the same kind of error."""

from __future__ import annotations

from strongroom.errors import ConfigError

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-.")


def split_ref(text: str, default_namespace: str | None, *, label: str,
              noun: str = "") -> tuple[str, str]:  # fmt: skip
    """(namespace, name) of ``NAMESPACE/NAME``, or of ``NAME`` in ``default_namespace`` (the
    pod's). Errors start with ``label`` and the text given, e.g. ``--leader-elect 'x/'``."""
    namespace, _, name = text.rpartition("/")
    namespace = namespace or default_namespace or ""
    for what, value in (("namespace", namespace), ("name", name)):
        if not value:
            raise ConfigError(
                f"{label} {text!r}: no {noun}{what} (give NAMESPACE/NAME, or set POD_NAMESPACE)"
            )
        if len(value) > 253 or not set(value) <= _NAME_CHARS or not value[0].isalnum():
            raise ConfigError(f"{label} {text!r}: {value!r} is not a valid {what}")
    return namespace, name
