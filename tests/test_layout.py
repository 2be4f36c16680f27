"""The repository's shape, for whoever forks it: GitHub's standard Python .gitignore hides none of its files, no
folder has a name that pytest or packaging tools skip, and both commands report the one version."""

from __future__ import annotations

import configparser
import fnmatch
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import REPO

import fromnet.cli
import occgen.cli
from occgen import __version__

TEMPLATE = Path(__file__).with_name("github-python.gitignore")


def _git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout


def _project_files() -> list[str]:
    """Tracked files plus untracked ones the project does not ignore: what a commit of this tree would hold."""
    if not shutil.which("git") or not (REPO / ".git").exists():
        pytest.skip("needs a git checkout to list the project's files")
    return sorted(_git("ls-files", "-co", "--exclude-standard", cwd=REPO).splitlines())


def _template_folders() -> list[str]:
    """The template's folder-name patterns (``build/``, ``lib/``, ...), as names without slashes."""
    lines = [line.strip() for line in TEMPLATE.read_text().splitlines()]
    return [line.strip("/") for line in lines if line and not line.startswith(("#", "!")) and line.endswith("/")]


def test_githubs_python_gitignore_hides_no_project_file(tmp_path: Path):
    files = _project_files()
    fork = tmp_path / "fork"
    for rel in files:  # empty stand-ins: which paths git keeps does not depend on what they hold
        (fork / rel).parent.mkdir(parents=True, exist_ok=True)
        (fork / rel).touch()
    shutil.copy(TEMPLATE, fork / ".gitignore")
    _git("init", "-q", cwd=fork)
    _git("add", "-A", cwd=fork)
    kept = set(_git("ls-files", cwd=fork).splitlines())
    lost = [rel for rel in files if rel not in kept]
    assert not lost, f"GitHub's Python .gitignore would leave these out of a fork's commits: {lost[:20]}"


def test_no_folder_is_named_like_generated_output(pytestconfig: pytest.Config):
    folders = {part for rel in _project_files() for part in Path(rel).parts[:-1]}
    # pytest never looks for tests in these; its ".*" is left out: dot folders (.ci) are meant to be skipped
    skipped_by_pytest = [p for p in pytestconfig.getini("norecursedirs") if p != ".*"]
    named = _template_folders() + skipped_by_pytest
    clashes = sorted(f for f in folders if any(fnmatch.fnmatch(f, pattern) for pattern in named))
    assert not clashes, f"folders named like build output, which common tools skip or ignore: {clashes}"
    assert {"build", "dist", "lib"} <= set(named)  # the list really holds the usual culprits


def test_occgen_and_fromnet_report_the_one_version():
    for main, prog in ((occgen.cli.main, "occgen"), (fromnet.cli.main, "fromnet")):
        result = CliRunner().invoke(main, ["--version"])
        assert result.exit_code == 0, result.output
        assert result.output.strip() == f"{prog}, version {__version__}"
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    assert setup["metadata"]["version"] == "attr: occgen.__version__"
