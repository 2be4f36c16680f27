"""Table 9 at CPU scale: the realistic-occlusion test sets of the FROM paper's Table 9 for an LFW pairs list.

LFW-SM-style (masked faces, N-O: the first image of each pair clean, the second masked with a MaskTheFace template
drawn per sample) and the four O_LFW-style groups (occluders of the library above the nose line, below it,
anywhere on the face, or covering at least half of it; N-O too, or O-O with --both). Every set is a manifest with
pairs.parquet, ready for ``fromnet eval --model RUN --pairs <manifest>`` (the models trained on random occlusion
only, as in the paper), e.g. from tools/exp_table5.py:

    python tools/exp_table9_sets.py --pairs /tmp/exp/pairs-fold10.txt --work /tmp/t9 --jobs 2
    python tools/exp_table9_sets.py --folds 10 --work /tmp/t9          # fold 10 of LFW view 2 (600 pairs)
    python tools/exp_table9_sets.py --folds 10 --identities people.txt  # only the pairs of these people

or from Python: ``from exp_table9_sets import table9_sets; sets = table9_sets(pairs, work)`` returns
{set name: manifest folder}. It prints one line per set (pairs, masked/occluded share of the face, seconds).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
from expcommon import DATA, LFW, run

PAIRS = DATA / "lfw-meta" / "pairs.txt"
MASKS = DATA / "occluders-masktheface"
GROUPS = ("upper", "lower", "random", "large")


def fold_pairs(folds: list[int], out: Path, pairs: Path = PAIRS) -> Path:
    """A pairs list of some folds (1-based) of LFW view 2, with its ``FOLDS N`` header."""
    lines = pairs.read_text().splitlines()
    n_folds, half = (int(v) for v in lines[0].split())
    body = lines[1:]
    chosen = [ln for f in folds for ln in body[(f - 1) * 2 * half : f * 2 * half]]
    if not chosen or any(not 1 <= f <= n_folds for f in folds):
        raise SystemExit(f"--folds: choose from 1..{n_folds}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"{len(folds)}\t{half}\n" + "\n".join(chosen) + "\n")
    return out


def identity_pairs(pairs: Path, identities: Path, out: Path) -> Path:
    """The pairs of ``pairs`` whose people are all in ``identities`` (one name a line), as one fold (no header)."""
    keep = {ln.strip() for ln in identities.read_text().splitlines() if ln.strip()}
    lines = pairs.read_text().splitlines()
    body = lines[1:] if len(lines[0].split()) == 2 else lines
    chosen = [ln for ln in body if {f for f in ln.split() if not f.isdigit()} <= keep]
    if not chosen:
        raise SystemExit(f"--identities: no pair of {pairs} has only people of {identities}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(chosen) + "\n")
    return out


def table9_sets(
    pairs: Path,
    work: Path,
    src: Path = LFW,
    masks: Path = MASKS,
    occluders: Path | None = None,
    seed: int = 0,
    jobs: int = 1,
    both: bool = False,
) -> dict[str, Path]:
    """Build (or resume) LFW-SM-style and the four O_LFW-style sets of ``pairs`` from aligned faces ``src``;
    returns {name: manifest folder}. ``occluders``: the O_LFW groups' library (default: occgen's own)."""
    occgen = [sys.executable, "-m", "occgen"]
    manifests = work / "manifests"
    common = ["--src", str(src), "--pairs", str(pairs), "--seed", str(seed), "-j", str(jobs), "-q"]
    common += ["--out", str(work / "shards"), "--manifests", str(manifests)] + (["--both"] if both else [])
    suffix = "-oo" if both else ""
    run(*occgen, "mask", *common, "--masks", str(masks), "--name", f"lfw-sm{suffix}")
    library = ["--occluders", str(occluders)] if occluders else []
    run(*occgen, "build", *common, *library, "--region-group", "all", "--name", f"olfw{suffix}")
    names = [f"lfw-sm{suffix}"] + [f"olfw{suffix}-{g}" for g in GROUPS]
    return {name: manifests / name for name in names}


def describe(manifest: Path) -> str:
    samples = pd.read_parquet(manifest / "samples.parquet")
    pairs = pd.read_parquet(manifest / "pairs.parquet")
    occluded = samples[samples["occluded"].astype(bool)]
    return (
        f"{len(pairs):,} pairs ({pairs['protocol'].iloc[0]}), {len(occluded):,} occluded faces, "
        f"{100 * occluded['pixel_area_ratio'].mean():.1f}% of the image covered on average"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=Path, help="LFW-style pairs list (default: --folds of LFW view 2)")
    ap.add_argument("--folds", default="10", help="With no --pairs: these folds of LFW view 2 (1-based, e.g. 10)")
    ap.add_argument("--identities", type=Path, help="keep only pairs of these people (one name a line)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/exp-table9"))
    ap.add_argument("--src", type=Path, default=LFW, help="aligned 112x96 faces")
    ap.add_argument("--masks", type=Path, default=MASKS, help="MaskTheFace-layout templates")
    ap.add_argument("--occluders", type=Path, help="occluder library of the O_LFW groups (default: occgen's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--both", action="store_true", help="O-O: occlude both images of each pair")
    args = ap.parse_args()
    pairs = args.pairs or fold_pairs([int(f) for f in args.folds.split(",")], args.work / "pairs.txt")
    if args.identities:
        pairs = identity_pairs(pairs, args.identities, args.work / "pairs-identities.txt")
    started = time.perf_counter()
    sets = table9_sets(pairs, args.work, args.src, args.masks, args.occluders, args.seed, args.jobs, args.both)
    print(f"\nTable 9-style sets of {pairs} ({time.perf_counter() - started:.0f} s):")
    for name, manifest in sets.items():
        print(f"  {name}: {describe(manifest)} -> {manifest}")


if __name__ == "__main__":
    main()
