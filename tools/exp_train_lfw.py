"""Experiment: train a small FROM on real faces on this CPU and check that it learns.

LFW identities with at least 10 images (158 people) are split per person: the last 2 images held out, the rest
trained on. The training set is Mix-style (2 occluded copies per image at s drawn from 1:0.5:5, a third of the
samples clean), labelled at K=5; the held-out set is every held-out image occluded once. A quarter-width r18 FROM
trains for a fixed number of steps, scoring identity and pattern accuracy on the held-out set at each epoch end.

    python tools/exp_train_lfw.py --work /tmp/exp-train --epochs 6 --milestones 4,5

Prints the table of held-out accuracies beside chance and the majority pattern, and writes loss.png.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
from expcommon import LFW, link_images, run


def split(work: Path, min_images: int, held_out: int) -> tuple[Path, Path, int]:
    """Symlink trees train/<person>/... and val/<person>/... for people with at least `min_images` images."""
    people = 0
    for person in sorted(p for p in LFW.iterdir() if p.is_dir()):
        images = sorted(person.glob("*.jpg"))
        if len(images) < min_images:
            continue
        people += 1
        for part, chosen in (("train", images[:-held_out]), ("val", images[-held_out:])):
            link_images(work / part / person.name, chosen)
    return work / "train", work / "val", people


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/exp-train"))
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--milestones", default="4,5")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    if not LFW.is_dir():
        sys.exit(f"needs {LFW} (the project's shared test data)")
    bin_dir = Path(sys.executable).parent
    occgen, fromnet = str(bin_dir / "occgen"), str(bin_dir / "fromnet")
    work = args.work
    train_dir, val_dir, people = split(work, 10, 2)
    manifests, shards = work / "manifests", work / "shards"
    common = ["--out", str(shards), "--manifests", str(manifests), "-q", "--K", "5"]
    run(
        occgen,
        "build",
        "--src",
        str(train_dir),
        "--name",
        "lfw10-train",
        "--copies",
        "2",
        "--clean-ratio",
        "0.3333",
        "--scales",
        "1:0.5:5",
        "--shard-size",
        "500",
        "--seed",
        "1",
        *common,
    )
    run(occgen, "build", "--src", str(val_dir), "--name", "lfw10-val", "--scales", "1:0.5:5", "--seed", "2", *common)
    out = work / "run"
    began = time.perf_counter()
    run(
        fromnet,
        "train",
        "--shards",
        str(manifests / "lfw10-train"),
        "--val",
        str(manifests / "lfw10-val"),
        "--variant",
        "from",
        "--K",
        "5",
        "--backbone",
        "r18",
        "--width-mult",
        "0.25",
        "--batch-size",
        str(args.batch_size),
        "--lr",
        str(args.lr),
        "--epochs",
        str(args.epochs),
        "--milestones",
        args.milestones,
        "--workers",
        str(args.workers),
        "--log-every",
        "10",
        "--out",
        str(out),
        "--seed",
        "0",
    )
    minutes = (time.perf_counter() - began) / 60
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    vals = [r for r in rows if "val_pattern_acc" in r]
    labels = pq.read_table(manifests / "lfw10-val" / "labels-k5.parquet").column("pattern").to_pylist()
    majority = Counter(labels).most_common(1)[0][1] / len(labels)
    print(f"\n{people} people; train {len(steps)} logged steps in {minutes:.1f} min")
    print("| after step | held-out identity acc | held-out pattern acc |")
    print("|---|---|---|")
    for r in vals:
        print(f"| {r['step']} | {r.get('val_identity_acc', float('nan')):.3f} | {r['val_pattern_acc']:.3f} |")
    print(f"chance: identity {1 / people:.4f}, pattern {1 / 226:.4f}; majority pattern {majority:.3f}")
    first, last = steps[:5], steps[-5:]
    mean = lambda rs, k: sum(r[k] for r in rs) / len(rs)  # noqa: E731
    print(
        f"identity loss {mean(first, 'loss_id'):.3f} -> {mean(last, 'loss_id'):.3f}; pattern loss "
        f"{mean(first, 'loss_pattern'):.3f} -> {mean(last, 'loss_pattern'):.3f}"
    )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    x = [r["step"] for r in steps]
    ax[0].plot(x, [r["loss_id"] for r in steps], label="identity (CosFace)")
    ax[0].plot(x, [r["loss_pattern"] for r in steps], label="pattern (K=5)")
    ax[0].set_xlabel("step")
    ax[0].set_ylabel("training loss")
    ax[0].legend()
    ax[1].plot(x, [r["pattern_acc"] for r in steps], label="pattern acc (train batches)", alpha=0.6)
    ax[1].plot([r["step"] for r in vals], [r["val_pattern_acc"] for r in vals], "o-", label="pattern acc (held out)")
    ax[1].plot(
        [r["step"] for r in vals], [r.get("val_identity_acc", 0) for r in vals], "s-", label="identity acc (held out)"
    )
    ax[1].axhline(1 / 226, color="grey", ls=":", label="chance (1/226)")
    ax[1].set_xlabel("step")
    ax[1].legend(fontsize=8)
    fig.suptitle(f"FROM r18 x0.25 on {people} LFW people, {minutes:.0f} min on CPU")
    fig.tight_layout()
    fig.savefig(work / "loss.png", dpi=90)
    print(f"loss curve: {work / 'loss.png'}")


if __name__ == "__main__":
    main()
