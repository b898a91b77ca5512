"""Bitnami's real kubeseal (v0.27.1), built from the Go module proxy by scripts/testenv."""

from __future__ import annotations

from tests.components.base import find_binary, missing


def kubeseal_path() -> str:
    path = find_binary("STRONGROOM_TEST_KUBESEAL", "kubeseal-*/kubeseal")
    if path is None:
        missing("kubeseal", "run scripts/testenv kubeseal")
        raise AssertionError("unreachable")
    return path
