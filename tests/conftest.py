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


def run_cli(*args: object, ok: bool = True):
    """Run `occgen ARGS` in-process (arguments turned into strings); with ``ok``, assert it succeeded."""
    from click.testing import CliRunner

    from occgen.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output
    return result


def files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by relative path: what byte-for-byte comparisons of two runs compare."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
