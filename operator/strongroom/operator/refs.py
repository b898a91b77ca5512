"""``NAMESPACE/NAME`` references to the operator's own objects (its Lease, its audit checkpoint
ConfigMap, its sealing-keys ConfigMap), parsed one way so that all refuse the same bad input
with the same kind of error."""

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


def resolve_ref(spec: str, pod_namespace: str | None, *, default_name: str,
                label: str) -> tuple[str, str] | None:  # fmt: skip
    """A setting that names one of the operator's objects: ``off`` (None), ``NAMESPACE/NAME``
    or ``NAME`` (in POD_NAMESPACE); ``""`` is ``default_name`` in POD_NAMESPACE, or None
    outside a pod."""
    if spec.strip().lower() == "off":
        return None
    if not spec.strip():
        if not pod_namespace:
            return None
        spec = default_name
    return split_ref(spec.strip(), pod_namespace, label=label)
