"""A wheel built from the repo works when installed (not editable): `occgen` and `fromnet` run, and the
occluder library ships inside it. The complete check, with dependencies installed from the registry into a
fresh venv, is tools/check_wheel.py (slower: it installs torch)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from conftest import REPO
from test_build import files, run

from occgen import __version__


def _sources(dest: Path) -> Path:
    """The repo's tracked and untracked-but-not-ignored files, copied: the build writes no files in the repo."""
    if not shutil.which("git") or not (REPO / ".git").exists():
        pytest.skip("needs a git checkout to list the project's files")
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    for rel in listed:
        if (REPO / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)
    return dest


def test_wheel_installs_and_runs_occgen_and_fromnet(tmp_path: Path, monkeypatch):
    src = _sources(tmp_path / "src")
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-v",
            "--no-deps",
            "--no-build-isolation",
            ".",
            "-w",
            str(tmp_path / "dist"),
        ],
        cwd=src,
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    log = build.stdout + build.stderr
    assert "Deprecat" not in log and "BuildBackendWarning" not in log and "is absent from the" not in log, log[-3000:]
    wheel = next((tmp_path / "dist").glob(f"occgen_fromnet-{__version__}-*.whl"))  # setup.cfg reads occgen's version

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "-q",
            "--no-deps",
            str(wheel),
        ],
        check=True,
    )
    # Dependencies (torch, ...) come from this environment's site-packages, behind the venv's own: only the
    # installed wheel provides occgen and fromnet (an editable install's hook is not processed from there).
    site = Path(
        subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")

    work = tmp_path / "work"
    work.mkdir()
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(work)}
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import occgen.occlude.occluders as o; print(o.DEFAULT_LIBRARY)"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert where == str(site / "occgen" / "occluders"), where
    shipped = sorted(p.relative_to(site).as_posix() for p in site.glob("fromnet/train/configs/*.toml"))
    assert (
        shipped
        == sorted(
            f"fromnet/{p.relative_to(REPO / 'fromnet').as_posix()}"
            for p in (REPO / "fromnet" / "train" / "configs").glob("*.toml")
        )
        and shipped
    )
    built = subprocess.run(
        ["occgen", "build", "--src", "demo", "-j", "1", "-q", "--out", "o", "--manifests", "m"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr
    assert "build: 128 samples written, 0 errors" in built.stdout

    checkout = tmp_path / "checkout"  # the same build from the source tree: same occluders, same bytes
    checkout.mkdir()
    monkeypatch.chdir(checkout)
    run("build", "--src", "demo", "-j", "1", "-q", "--out", "o", "--manifests", "m")
    assert files(work / "o") == files(checkout / "o")

    summary = subprocess.run(
        ["fromnet", "summary", "--variant", "baseline", "--K", "5"], cwd=work, env=env, capture_output=True, text=True
    )
    assert summary.returncode == 0 and "params" in summary.stdout, summary.stderr
