"""Table 9 at CPU scale: the realistic-occlusion test sets of the FROM paper's Table 9, for an LFW pairs list or
as all-pairs sets of held-out people.

LFW-SM-style (masked faces, N-O: the first image of each pair clean, the second masked with a MaskTheFace template
drawn per sample) and the four O_LFW-style groups (occluders of the library above the nose line, below it,
anywhere on the face, or covering at least half of it; N-O too, or O-O with --both). Every set is a manifest with
pairs.parquet, ready for ``fromnet eval --model RUN --pairs <manifest>`` (the models trained on random occlusion
only, as in the paper):

    python tools/exp_table9_sets.py --pairs /tmp/exp/pairs-fold10.txt --work /tmp/t9 --jobs 2
    python tools/exp_table9_sets.py --folds 10 --work /tmp/t9          # fold 10 of LFW view 2 (600 pairs)
    python tools/exp_table9_sets.py --folds 10 --identities people.txt  # only the pairs of these people
    python tools/exp_table9_sets.py --all-pairs --identities split/test.txt --per-person 5 --seed 100 --work /tmp/t9

--all-pairs builds every genuine and impostor pair of the people in --identities (at most --per-person images
each), as tools/exp_table5.py builds its test sets: with its seed (100) and --per-person, the sets t9-lfw-sm and
t9-olfw-<group> hold the same faces and the same pairs as its t-no-* sets, so every model is scored on one set of
pairs. From Python: ``table9_sets(pairs, work)`` or ``table9_sets_all(identities, work, manifests=..., shards=...)``
return {set name: manifest folder}; a set whose dataset card is written is finished and skipped on the next call.
The script prints one line per set (pairs, faces, masked/occluded share of the image) and the build time.
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


def _finished(manifest: Path) -> bool:
    """A set is finished once its dataset card is written: occgen writes it last, after pairs and preview."""
    return (manifest / "README.md").is_file()


def _sets(
    chosen: list[str],
    manifests: Path,
    shards: Path,
    names: tuple[str, str],
    src: Path,
    masks: Path,
    occluders: Path | None,
    seed: int,
    jobs: int,
    both: bool,
) -> dict[str, Path]:
    """The masked set ``names[0]`` (occgen mask) and the four O_LFW-style groups ``names[1]-<group>`` (occgen
    build --region-group all) of the faces and pairs the options ``chosen`` give, skipping those finished."""
    occgen = [sys.executable, "-m", "occgen"]
    common = ["--src", str(src), *chosen, "--seed", str(seed), "-j", str(jobs), "-q"]
    common += ["--out", str(shards), "--manifests", str(manifests)] + (["--both"] if both else [])
    masked, groups = names
    if not _finished(manifests / masked):
        run(*occgen, "mask", *common, "--masks", str(masks), "--name", masked)
    library = ["--occluders", str(occluders)] if occluders else []
    if not all(_finished(manifests / f"{groups}-{g}") for g in GROUPS):
        run(*occgen, "build", *common, *library, "--region-group", "all", "--name", groups)
    return {name: manifests / name for name in [masked] + [f"{groups}-{g}" for g in GROUPS]}


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
    suffix = "-oo" if both else ""
    chosen = ["--pairs", str(pairs)]
    names = (f"lfw-sm{suffix}", f"olfw{suffix}")
    return _sets(chosen, work / "manifests", work / "shards", names, src, masks, occluders, seed, jobs, both)


def table9_sets_all(
    identities: Path,
    work: Path,
    per_person: int = 5,
    seed: int = 100,
    jobs: int = 2,
    manifests: Path | None = None,
    shards: Path | None = None,
    src: Path = LFW,
    masks: Path = MASKS,
    occluders: Path | None = None,
) -> dict[str, Path]:
    """Build (or resume) t9-lfw-sm and t9-olfw-<group>: N-O all-pairs sets of the people in ``identities`` (at
    most ``per_person`` images each, a choice fixed by ``seed``), into ``manifests`` and ``shards`` (default:
    WORK/manifests, WORK/shards); returns {name: manifest folder}. With tools/exp_table5.py's seed and per-person
    count they pair up face for face with its t-no-* sets."""
    chosen = ["--identities", str(identities), "--pairs", "all", "--max-per-identity", str(per_person)]
    manifests, shards = manifests or work / "manifests", shards or work / "shards"
    return _sets(chosen, manifests, shards, ("t9-lfw-sm", "t9-olfw"), src, masks, occluders, seed, jobs, False)


def describe(manifest: Path) -> str:
    samples = pd.read_parquet(manifest / "samples.parquet")
    pairs = pd.read_parquet(manifest / "pairs.parquet")
    occluded = samples[samples["occluded"].astype(bool)]
    return (
        f"{len(pairs):,} pairs ({pairs['protocol'].iloc[0]}, {int(pairs['same'].sum()):,} genuine) of "
        f"{samples['src'].nunique():,} faces of {samples['identity_name'].nunique():,} people, "
        f"{len(occluded):,} occluded faces, {100 * occluded['pixel_area_ratio'].mean():.1f}% of the image covered "
        "on average"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=Path, help="LFW-style pairs list (default: --folds of LFW view 2)")
    ap.add_argument("--folds", default="10", help="With no --pairs: these folds of LFW view 2 (1-based, e.g. 10)")
    ap.add_argument(
        "--identities", type=Path, help="keep only pairs of these people (one name a line); with --all-pairs: whom"
    )
    ap.add_argument("--all-pairs", action="store_true", help="all-pairs N-O sets of the people in --identities")
    ap.add_argument("--per-person", type=int, default=5, help="with --all-pairs: at most this many images a person")
    ap.add_argument("--work", type=Path, default=Path("/tmp/exp-table9"))
    ap.add_argument("--src", type=Path, default=LFW, help="aligned 112x96 faces")
    ap.add_argument("--masks", type=Path, default=MASKS, help="MaskTheFace-layout templates")
    ap.add_argument("--occluders", type=Path, help="occluder library of the O_LFW groups (default: occgen's)")
    ap.add_argument("--seed", type=int, help="run seed (default: 100 with --all-pairs, as tools/exp_table5.py; else 0)")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--both", action="store_true", help="O-O: occlude both images of each pair (not with --all-pairs)")
    args = ap.parse_args()
    started = time.perf_counter()
    if args.all_pairs:
        if not args.identities or args.pairs or args.both:
            ap.error("--all-pairs takes the people of --identities (and neither --pairs nor --both)")
        what = f"all pairs of the people in {args.identities}"
        seed = 100 if args.seed is None else args.seed
        sets = table9_sets_all(
            args.identities, args.work, args.per_person, seed, args.jobs, src=args.src, masks=args.masks,
            occluders=args.occluders,
        )  # fmt: skip
    else:
        pairs = args.pairs or fold_pairs([int(f) for f in args.folds.split(",")], args.work / "pairs.txt")
        if args.identities:
            pairs = identity_pairs(pairs, args.identities, args.work / "pairs-identities.txt")
        what = str(pairs)
        seed = args.seed or 0
        sets = table9_sets(pairs, args.work, args.src, args.masks, args.occluders, seed, args.jobs, args.both)
    print(f"\nTable 9-style sets of {what} ({time.perf_counter() - started:.0f} s):")
    for name, manifest in sets.items():
        print(f"  {name}: {describe(manifest)} -> {manifest}")


if __name__ == "__main__":
    main()
