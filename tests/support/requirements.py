"""Missing external dependencies: a skip on a developer's machine, a failure in CI (CI=true)."""

from __future__ import annotations

import os
import shutil

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def missing(what: str) -> None:
    """Skip locally, fail in CI: CI must never pass by skipping."""
    if in_ci():
        pytest.fail(f"required for CI but missing: {what}", pytrace=False)
    pytest.skip(f"missing: {what}")


def require_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        missing(f"the {name!r} binary")
    assert path is not None
    return path
