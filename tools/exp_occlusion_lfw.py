"""Experiment: does FROM win back what occlusion costs? Baseline-Aug, FROM and the attention variant on LFW, CPU-sized.

The ten folds of LFW's view-2 pairs are identity-disjoint. People of the tenth fold are never trained on: the
three models train on the other LFW people with at least 2 images, on one Mix-style set (a third clean, the rest
occluded at s drawn from 1:0.5:5, labelled at K=5), with the same quarter-width r18 backbone, schedule and seed.
They are scored on the tenth fold's 600 pairs clean (N-N), N-O and O-O at s = 1, 2, 3 (10-fold accuracy inside
those 600 pairs), and on PartialLFW-style partial-face sets of 200 of those pairs (the attention paper's table).

    python tools/exp_occlusion_lfw.py --work /tmp/exp-occ --epochs 5 --milestones 3,4

Baseline-Aug here trains from scratch on the Mix set, like the other two (no stage-1 checkpoint), so all three get
exactly the same data and budget.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from expcommon import DATA, LFW, link_images, run

PAIRS = DATA / "lfw-meta" / "pairs.txt"
MODELS = {  # label: extra `fromnet train` options
    "Baseline-Aug": ["--variant", "baseline"],
    "FROM": ["--variant", "from", "--K", "5"],
    "Attention": ["--variant", "attention", "--K", "4"],  # CosFace like the others (attention.toml, issue #17)
}


def split(work: Path) -> tuple[Path, Path, Path, int]:
    """Train tree of the people outside fold 10, and the fold's pairs (all 600, and 100 same + 100 different)."""
    lines = PAIRS.read_text().splitlines()
    fold = lines[1 + 9 * 600 : 1 + 10 * 600]
    held_out = {f.split()[0] for f in fold} | {f.split()[2] for f in fold if len(f.split()) == 4}
    people = 0
    for person in sorted(p for p in LFW.iterdir() if p.is_dir()):
        images = sorted(person.glob("*.jpg"))
        if person.name in held_out or len(images) < 2:
            continue
        people += 1
        link_images(work / "train" / person.name, images)
    test = work / "pairs-fold10.txt"
    test.write_text("1\t300\n" + "\n".join(fold) + "\n")
    small = work / "pairs-fold10-200.txt"
    small.write_text("1\t100\n" + "\n".join(fold[:100] + fold[300:400]) + "\n")
    return work / "train", test, small, people


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/exp-occ"))
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--milestones", default="3,4")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--models", default=",".join(MODELS))
    args = ap.parse_args()
    if not PAIRS.is_file():
        sys.exit(f"needs {PAIRS} and {LFW} (the project's shared test data)")
    bin_dir = Path(sys.executable).parent
    occgen, fromnet = str(bin_dir / "occgen"), str(bin_dir / "fromnet")
    work = args.work
    manifests, shards = work / "manifests", work / "shards"
    common = ["--out", str(shards), "--manifests", str(manifests), "-q"]
    started = time.perf_counter()
    train_dir, pairs, small, people = split(work)
    # Builds resume (they skip finished shards), so rerunning for another --models reuses the sets.
    run(
        occgen,
        "build",
        "--src",
        str(train_dir),
        "--name",
        "mix-train",
        "--clean-ratio",
        "0.3333",
        "--scales",
        "1:0.5:5",
        "--shard-size",
        "500",
        "--seed",
        "1",
        "--K",
        "5",
        *common,
    )
    sets = ["nn"]
    run(occgen, "build", "--src", str(LFW), "--pairs", str(pairs), "--clean-ratio", "1", "--name", "nn", *common)
    for s in (1, 2, 3):
        run(
            occgen,
            "build",
            "--src",
            str(LFW),
            "--pairs",
            str(pairs),
            "--scales",
            str(s),
            "--name",
            f"no-{s}",
            "--seed",
            "100",
            *common,
        )
        run(
            occgen,
            "build",
            "--src",
            str(LFW),
            "--pairs",
            str(pairs),
            "--scales",
            str(s),
            "--both",
            "--name",
            f"oo-{s}",
            "--seed",
            "100",
            *common,
        )
        sets += [f"no-{s}", f"oo-{s}"]
    for centered, name in ((False, "partial"), (True, "partial-c")):
        run(
            occgen,
            "partial",
            "--src",
            str(LFW),
            "--pairs",
            str(small),
            "--name",
            name,
            *(["--centered"] if centered else []),
            "--out",
            str(shards),
            "--manifests",
            str(manifests),
        )
    prepared = time.perf_counter() - started
    results, minutes = {}, {}
    for label in args.models.split(","):
        out = work / "runs" / label
        began = time.perf_counter()
        run(
            fromnet,
            "train",
            "--shards",
            str(manifests / "mix-train"),
            *MODELS[label],
            "--backbone",
            "r18",
            "--width-mult",
            "0.25",
            "--batch-size",
            str(args.batch_size),
            "--lr",
            "0.1",
            "--epochs",
            str(args.epochs),
            "--milestones",
            args.milestones,
            "--workers",
            "2",
            "--seed",
            "0",
            "--log-every",
            "20",
            "--out",
            str(out),
        )
        minutes[label] = (time.perf_counter() - began) / 60
        run(
            fromnet,
            "eval",
            "--model",
            str(out),
            *[x for s in sets for x in ("--pairs", str(manifests / s))],
            "--out",
            str(work / "eval" / label),
            "-q",
        )
        run(
            fromnet,
            "eval",
            "--model",
            str(out),
            "--protocol",
            "partiallfw",
            "--pairs",
            str(manifests / "partial"),
            "--pairs",
            str(manifests / "partial-c"),
            "--out",
            str(work / "eval" / f"{label}-partial"),
            "-q",
        )
        results[label] = (
            json.loads((work / "eval" / label / "results.json").read_text()),
            json.loads((work / "eval" / f"{label}-partial" / "results.json").read_text()),
        )
    labels = list(results)
    print(
        f"\n{people} training people; data prepared in {prepared / 60:.1f} min; training minutes: "
        + ", ".join(f"{k} {v:.1f}" for k, v in minutes.items())
    )
    print("\nLFW fold 10 (600 pairs, people never trained on), 10-fold accuracy %:\n")
    print("| set | " + " | ".join(labels) + " |")
    print("|---|" + "---|" * len(labels))
    for s in sets:
        row = [next(v for v in results[k][0]["verification"] if v["label"] == s) for k in labels]
        name = {"nn": "clean (N-N)"}.get(s, s.replace("no-", "N-O s=").replace("oo-", "O-O s="))
        print(
            f"| {name} | "
            + " | ".join(f"{100 * v['accuracy']:.2f} ± {100 * v['accuracy_std']:.2f}" for v in row)
            + " |"
        )
    print("\nPartialLFW-style, 200 pairs of fold 10, mean accuracy % over part combinations and nine factors:\n")
    print("| protocol | crops | " + " | ".join(labels) + " |")
    print("|---|---|" + "---|" * len(labels))
    for i, r in enumerate(results[labels[0]][1]["partiallfw"]):
        crops = {None: "-", False: "non-centered", True: "centered"}[r["centered"]]
        print(
            f"| {r['protocol']} | {crops} | "
            + " | ".join(f"{100 * results[k][1]['partiallfw'][i]['accuracy']:.2f}" for k in labels)
            + " |"
        )
    print(f"\nwall time {(time.perf_counter() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()
