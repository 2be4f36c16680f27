#!/usr/bin/env python3
"""Wall time and peak memory of each stage as a dataset grows: build, label, stats, verify, first training steps.

For each number of copies C of the source (LFW's 13,233 faces by default, so C = 76 gives 1,005,708 samples), every
stage runs as its own command, as a user runs it, and reports the peak resident memory (VmHWM) of the process that
drives it: the occgen or fromnet process itself, not its worker processes, which hold one shard each. A stage
whose memory grows with the samples shows it here as the rows grow.

    python tools/bench_scale.py --copies 8,16 [--src DIR] [--work DIR] [--jobs 2] [--train-copies 1]
        [--stages build,label,stats,verify,train] [--keep]

The build runs with --K 5, then `occgen label --K 4`, `occgen stats`, `occgen verify`, and `fromnet train` for
--train-steps steps of a small model (r18 x0.25, batch 32, 1 loader process, its start-up: label cache and index
included). Shards are deleted after each size unless --keep (1M JPEG faces take several GB).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

#: Runs a console command in this interpreter and writes its own peak RSS (VmHWM, kB) to $BENCH_PEAK at exit.
_WRAP = """
import atexit, os, sys
def _peak():
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    with open(os.environ["BENCH_PEAK"], "w") as f:
        f.write(str(kb))
atexit.register(_peak)
prog = sys.argv[1]
sys.argv = sys.argv[1:]
from importlib import import_module
import_module(prog + ".cli").main(prog_name=prog)
"""


def run_stage(args: list[str], cwd: Path, log: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS MB of the driving process) of ``occgen|fromnet ARGS`` run in ``cwd``."""
    peak_file = cwd / ".peak"
    peak_file.unlink(missing_ok=True)
    env = {**os.environ, "BENCH_PEAK": str(peak_file), "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(args)}\n")
        out.flush()
        proc = subprocess.run([sys.executable, "-c", _WRAP, *args], cwd=cwd, env=env, stdout=out, stderr=out)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(args)} failed with status {proc.returncode}; see {log}")
    return wall, int(peak_file.read_text()) / 1024


def stages(src: Path, copies: int, jobs: int, steps: int) -> dict[str, list[str]]:
    m = "manifests/scale"
    return {
        "build": [
            "occgen",
            "build",
            "--src",
            str(src),
            "--copies",
            str(copies),
            "--name",
            "scale",
            "--K",
            "5",
            "-j",
            str(jobs),
            "-q",
        ],  # fmt: skip
        "label": ["occgen", "label", "--K", "4", m],
        "stats": ["occgen", "stats", m, "--out", "stats"],
        "verify": ["occgen", "verify", m, "-j", str(jobs), "-q"],
        "train": [
            "fromnet",
            "train",
            "--shards",
            m,
            "--out",
            "run",
            "--backbone",
            "r18",
            "--width-mult",
            "0.25",
            "--batch-size",
            "32",
            "--steps",
            str(steps),
            "--workers",
            "1",
            "--K",
            "5",
            "--log-every",
            "1",
            "--ckpt-every",
            "1000",
            "--epochs",
            "1",
        ],  # fmt: skip
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", default="1,8", help="Copies of the source per size, comma separated.")
    parser.add_argument("--src", type=Path, default=REPO.parent / "shared" / "data" / "lfw-112x96")
    parser.add_argument("--work", type=Path, default=None, help="Working folder (default: a temporary one).")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--train-steps", type=int, default=3)
    parser.add_argument("--stages", default="build,label,stats,verify,train")
    parser.add_argument("--keep", action="store_true", help="Keep the shards and manifests of each size.")
    args = parser.parse_args()
    if not args.src.is_dir():
        sys.exit(f"--src {args.src}: no such folder (default: ../shared/data/lfw-112x96)")
    chosen = args.stages.split(",")
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-scale-"))
    log = work / "bench_scale.log"
    print(f"source {args.src}, -j {args.jobs}; log {log}")
    print(f"{'copies':>6} {'samples':>10} " + " ".join(f"{s + ' s':>9} {s + ' MB':>9}" for s in chosen), flush=True)
    for copies in (int(c) for c in args.copies.split(",")):
        cwd = work / f"x{copies}"
        cwd.mkdir(parents=True, exist_ok=True)
        figures = []
        for name, cmd in stages(args.src, copies, args.jobs, args.train_steps).items():
            if name in chosen:
                if name == "train":
                    shutil.rmtree(cwd / "run", ignore_errors=True)  # a fresh start: label cache and index included
                figures.append(run_stage(cmd, cwd, log))
                wall, peak = figures[-1]
                print(f"  x{copies} {name}: {wall:.1f} s, {peak:.0f} MB", file=sys.stderr, flush=True)
        samples = _samples(cwd)
        print(f"{copies:>6} {samples:>10,} " + " ".join(f"{t:>9.1f} {mb:>9.0f}" for t, mb in figures), flush=True)
        if not args.keep:
            shutil.rmtree(cwd)


def _samples(cwd: Path) -> int:
    index = json.loads((cwd / "manifests" / "scale" / "shards.json").read_text())
    return sum(s["samples"] for s in index["shards"])


if __name__ == "__main__":
    main()
