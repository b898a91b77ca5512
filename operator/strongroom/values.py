"""Secret values are JSON: a string, a number, an object or a list (as Lightpack and Lucent).

Values are encoded canonically (sorted keys, no whitespace) so that the same value always
encrypts from the same bytes and constant-time comparison in ``secret verify`` is meaningful.
"""

from __future__ import annotations

import json
import math
from typing import Any

from strongroom.errors import ValidationError

JSONValue = Any


def encode(value: JSONValue) -> bytes:
    """Canonical JSON bytes for ``value``; rejects what is not a storable value."""
    if value is None:
        raise ValidationError("a value cannot be null; delete the key instead")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValidationError("a value must be finite JSON (no NaN or Infinity)")
    try:
        text = json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError):
        raise ValidationError(
            "a value must be JSON: a string, number, boolean, object or list"
        ) from None
    except RecursionError:  # strongroom.validate.depth refuses this sooner, with the limit
        raise ValidationError("a value nests objects or lists too deeply") from None
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(
            "a value must be valid Unicode text: it holds a lone surrogate (such as \\ud800), "
            "which has no UTF-8 form"
        ) from None


def decode(raw: bytes) -> JSONValue:
    return json.loads(raw.decode("utf-8"))


def render(value: JSONValue) -> str:
    """How a value is printed or projected: strings bare, everything else as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
