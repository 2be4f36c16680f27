#!/usr/bin/env python3
"""Build throughput on 112x96 JPEG faces: `occgen build` with 1 and 2 loky processes and on a 2-worker Dask
cluster, beside the simple way.

The simple way is what the authors' script does: one process, one output file per image, the occluder file
decoded again for every image, global random state. All run in this process's run on the same inputs. Each
occgen build starts and stops its own workers (nothing is left running), so its time includes their start; the
Dask figures are for a cluster that is already running (joined with --scheduler) and for one the build starts.
The Dask and loky builds must give the same bytes; the difference in time, per shard, is Dask's overhead.

    python tools/bench_build.py [--images 13233] [--copies 2] [--shard-size 500] [--src DIR]

Inputs default to ../shared/data/lfw-112x96 (real aligned LFW faces); without it, demo faces saved as JPEG.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from occgen.occlude import demo  # noqa: E402
from occgen.occlude.occluders import DEFAULT_LIBRARY, load_library  # noqa: E402
from occgen.occlude.plan import parse_scales  # noqa: E402
from occgen.occlude.run import BuildOptions, build  # noqa: E402
from occgen.occlude.sources import from_tree  # noqa: E402
from occgen.runner import Backend  # noqa: E402


def make_inputs(src: Path | None, n: int, tmp: Path) -> Path:
    """A tree of n 112x96 JPEG faces: a slice of the real folder if given, else demo faces."""
    root = tmp / "in"
    if src is not None and src.is_dir():
        files = sorted(p for p in src.rglob("*.jpg"))[:n]
        for p in files:
            dst = root / p.relative_to(src)
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(p.read_bytes())
    else:
        for i in range(n):
            dst = root / f"person{i % 50:02d}" / f"{i:05d}.jpg"
            dst.parent.mkdir(parents=True, exist_ok=True)
            demo.face(i % 50, i).save(dst, quality=95)
    return root


def simple_way(root: Path, library: Path, out: Path, scales: tuple[float, ...]) -> int:
    """One process, one file per image, occluder decoded per image (the authors' approach)."""
    random.seed(100)
    names = [p.relative_to(library).as_posix() for p in sorted(library.glob("*/*.png"))]
    sizes = {o.name: o.size for o in load_library(library).occluders}
    count = 0
    for path in sorted(root.rglob("*.jpg")):
        img = Image.open(path).convert("RGB")
        name = random.choice(names)
        occ = Image.open(library / name).convert("RGBA")
        s = random.choice(scales)
        w, h = sizes[name]
        occ = occ.resize((min(img.width, round(s * w)), min(img.height, round(s * h))))
        cx, cy = random.randrange(img.width), random.randrange(img.height)
        img.paste(occ, (cx - occ.width // 2, cy - occ.height // 2), occ)
        dst = out / path.relative_to(root)
        dst.parent.mkdir(parents=True, exist_ok=True)
        img.save(dst, quality=95)
        count += 1
    return count


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.tar"))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=13233)
    ap.add_argument("--copies", type=int, default=1, help="occgen samples per input image")
    ap.add_argument("--shard-size", type=int, default=500)
    ap.add_argument("--src", type=Path, default=REPO.parent / "shared" / "data" / "lfw-112x96")
    args = ap.parse_args()
    scales = parse_scales("1:0.5:5")
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        root = make_inputs(args.src, args.images, tmp)
        source = from_tree(root)
        n = len(source.items)
        print(f"inputs: {n} JPEG faces {'from ' + str(args.src) if args.src.is_dir() else '(demo, synthetic)'}")

        t = time.perf_counter()
        simple_way(root, DEFAULT_LIBRARY, tmp / "simple", scales)
        simple = n / (time.perf_counter() - t)
        print(f"simple way (1 process, file per image):       {simple:8,.0f} images/s")

        opts = BuildOptions(scales=scales, shard_size=args.shard_size, copies=args.copies)
        seconds: dict[str, float] = {}
        shards: dict[str, dict[str, bytes]] = {}

        def timed(label: str, jobs: int, backend: Backend = Backend()) -> None:
            out = tmp / f"out{len(seconds)}"  # one dataset name everywhere: the bytes must be the same
            result = build(source, "bench", out, tmp / f"m{len(seconds)}", opts, jobs, quiet=True, backend=backend)
            seconds[label], shards[label] = result.summary.seconds, tree_bytes(out)
            rate = result.summary.done / seconds[label]
            print(
                f"occgen build {label:<36} {rate:8,.0f} images/s ({rate / simple:.2f}x simple), "
                f"{seconds[label]:.1f} s for {len(result.shards)} shards"
            )

        timed("-j 1", 1)
        timed("-j 2 (loky)", 2)
        from dask.distributed import LocalCluster

        t = time.perf_counter()
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
            print(f"  (a 2-worker Dask LocalCluster starts in {time.perf_counter() - t:.1f} s)")
            joined = Backend("dask", cluster.scheduler_address)
            timed("--backend dask, running cluster", 2, joined)
            timed("--backend dask, cluster it starts", 2, Backend("dask"))
            for label in seconds:
                print(f"  {label}: same bytes as -j 1: {shards[label] == shards['-j 1']}")
            print(f"scaling 1 -> 2 loky processes: {seconds['-j 1'] / seconds['-j 2 (loky)']:.2f}x")
            # Dispatch cost of one shard task, start-up excluded: the slope of time against task count for tasks
            # that do nothing but return a shard's stats.
            for label, backend in (("loky -j 2", Backend()), ("dask, running cluster", joined)):
                t_few, t_many = (_dispatch(count, backend) for count in (20, 220))
                print(f"overhead per shard task, {label}: {(t_many - t_few) / 200 * 1000:.2f} ms")


def _stats(index: int) -> dict[str, object]:
    return {"shard": f"bench-{index:06d}", "samples": 500, "errors": 0, "bytes": 2_000_000, "sha256": "0" * 64}


def _dispatch(count: int, backend: Backend) -> float:
    from occgen.runner import parallel_map

    t = time.perf_counter()
    for _ in parallel_map(_stats, list(range(count)), 2, "dispatch", quiet=True, backend=backend):
        pass
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
