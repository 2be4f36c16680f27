#!/usr/bin/env python3
"""Install the project as a user would, `pip install .` (not editable) into a fresh venv, and run it there.

Checks that the install prints no setuptools deprecation warnings, that `occgen build --src demo` works and gives
the same bytes as the source tree (the occluder library ships in the wheel), and that `fromnet summary` runs.
Dependencies come from the package registries (torch 2.13.0 CPU first, as `make setup` does), so this takes a
minute or two; tests/test_packaging.py is the fast variant run by the test suite.

    python tools/check_wheel.py
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def step(label: str, cmd: list[str], **kw) -> subprocess.CompletedProcess:
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    print(f"{label}: {time.perf_counter() - started:.1f} s, exit {proc.returncode}")
    if proc.returncode:
        sys.exit(proc.stdout[-3000:] + proc.stderr[-3000:])
    return proc


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        src = tmp / "src"
        listed = subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.split("\n")
        for rel in filter(None, listed):
            if (REPO / rel).is_file():
                (src / rel).parent.mkdir(parents=True, exist_ok=True)
                (src / rel).write_bytes((REPO / rel).read_bytes())
        venv = tmp / "venv"
        step("python -m venv", [sys.executable, "-m", "venv", str(venv)])
        pip = [str(venv / "bin" / "python"), "-m", "pip"]
        step("pip install torch==2.13.0", [*pip, "install", "-q", "torch==2.13.0"])
        install = step("pip install . (not editable)", [*pip, "install", "-v", str(src)])
        log = install.stdout + install.stderr
        warnings = sorted({m.group(0) for m in re.finditer(r"\w*(Deprecation|BuildBackend)Warning[^\n]*", log)})
        print(f"  setuptools warnings while installing: {len(warnings)}" + "".join(f"\n    {w}" for w in warnings))
        env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp)}
        work = tmp / "work"
        work.mkdir()
        built = step(
            "occgen build --src demo (installed)",
            ["occgen", "build", "--src", "demo", "-j", "2", "-q", "--out", "o", "--manifests", "m"],
            cwd=work,
            env=env,
        )
        print("  " + built.stdout.strip())
        ref = tmp / "ref"
        ref.mkdir()
        step(
            "occgen build --src demo (source tree)",
            [
                sys.executable,
                "-m",
                "occgen",
                "build",
                "--src",
                "demo",
                "-j",
                "2",
                "-q",
                "--out",
                "o",
                "--manifests",
                "m",
            ],
            cwd=ref,
            env={**env, "PYTHONPATH": str(REPO)},
        )
        print(f"  same shard bytes as the source tree: {tree_bytes(work / 'o') == tree_bytes(ref / 'o')}")
        summary = step(
            "fromnet summary (installed)", ["fromnet", "summary", "--variant", "from", "--K", "5"], cwd=work, env=env
        )
        print("  " + summary.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
