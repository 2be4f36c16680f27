"""Shared fixtures: the real data in ../shared/data, skipped with a reason where it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


def shared(rel: str) -> Path:
    """A path under ../shared/data, or skip the test when it is not there (as on a user's machine)."""
    path = SHARED_DATA / rel
    if not path.exists():
        pytest.skip(f"needs ../shared/data/{rel}, which is absent (it holds the project's real test data)")
    return path


@pytest.fixture
def lfw_mini() -> Path:
    return shared("lfw-mini")
