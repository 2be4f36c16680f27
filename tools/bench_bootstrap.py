"""How long the people-resampling intervals take on LFW's tenth-fold all-pairs set (412,686 pairs, 451 people),
against the simple way: each resample written out (pairs repeated by their weight) and scored by the plain metric
functions (10-fold accuracy on the balanced pairs, TAR@FAR on all). Pixel embeddings (tools/pixel_embeddings.py's)
stand in for a model: the timing does not depend on it.

    python tools/bench_bootstrap.py [--resamples 1000] [--simple 20]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from expcommon import DATA, LFW  # noqa: E402

from fromnet.eval import bootstrap as bs  # noqa: E402
from fromnet.eval import metrics  # noqa: E402
from occgen.occlude.sources import open_source  # noqa: E402
from occgen.sets.allpairs import AllPairsOptions, all_pairs  # noqa: E402
from occgen.sets.pairs import read_pairs  # noqa: E402
from occgen.sets.split import select_identities, split_by_folds  # noqa: E402

FARS = (1e-3, 1e-4)


def pixel_vector(path: Path) -> np.ndarray:
    grey = np.asarray(Image.open(path).convert("L"), dtype=np.float64)
    v = grey.reshape(28, 4, 24, 4).mean(axis=(1, 3)).ravel()
    v -= v.mean()
    return v / np.linalg.norm(v)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--simple", type=int, default=20, help="resamples the simple way is timed on (then scaled)")
    args = ap.parse_args()
    source = open_source(str(LFW))
    test = split_by_folds(source, read_pairs(DATA / "lfw-meta" / "pairs.txt"), [9], "pairs.txt").test
    table = all_pairs(select_identities(source, test), "N-N", AllPairsOptions()).table.to_pandas()
    srcs = sorted(set(table["src1"]) | set(table["src2"]))
    vec = np.stack([pixel_vector(LFW / s) for s in srcs])
    row = {s: k for k, s in enumerate(srcs)}
    scores = (vec @ vec.T)[table["src1"].map(row).to_numpy(), table["src2"].map(row).to_numpy()]
    same, bal, folds = table["same"].to_numpy(), table["balanced"].to_numpy(), table["fold"].to_numpy()

    start = time.perf_counter()
    people = bs.People.of_pairs(table["src1"].to_numpy(), table["src2"].to_numpy())
    c = bs.counts(people.n, bs.Bootstrap(args.resamples, seed=0))
    tar = bs.tar_at_far(c, people, scores, same, FARS)
    acc = bs.kfold_accuracy(c, people.subset(np.flatnonzero(bal)), scores[bal], same[bal], folds[bal])
    fast = time.perf_counter() - start

    start = time.perf_counter()
    for b in range(args.simple):
        w = (c[b, people.first] * c[b, people.second]).astype(int)
        s, y = np.repeat(scores, w), np.repeat(same, w)
        simple_tar = [metrics.tar_at_far(s, y, far).tar for far in FARS]
        wb = w[bal]
        simple_acc = metrics.kfold_accuracy(
            np.repeat(scores[bal], wb), np.repeat(same[bal], wb), np.repeat(folds[bal], wb)
        ).correct.mean()
        assert np.allclose(simple_tar, tar[b]) and np.isclose(simple_acc, acc[b]), b
    simple = (time.perf_counter() - start) / args.simple * args.resamples

    print(f"{len(scores):,} pairs ({int(same.sum()):,} genuine), {people.n} people, {args.resamples} resamples")
    print(f"vectorised: {fast:.2f} s  (accuracy, TAR at FAR {', '.join(f'{f:g}' for f in FARS)})")
    print(f"simple way: {simple:.1f} s  (timed on {args.simple} resamples, scaled; same values)  {simple / fast:.0f}x")
    for name, values in [("accuracy", acc), *((f"TAR@FAR={f:g}", tar[:, k]) for k, f in enumerate(FARS))]:
        lo, hi = bs.interval(values)
        print(f"  {name}: [{100 * lo:.2f}, {100 * hi:.2f}] %")


if __name__ == "__main__":
    main()
