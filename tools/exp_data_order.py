"""Experiment: does `fromnet train`'s data order train as well as a plain loop that draws a full permutation?

LFW people with at least --min-images images are built into an identity-ordered Mix-style manifest (2 occluded
copies per image at s drawn from 1:0.5:5, a third of the samples clean), as occgen writes shards. The same model,
loss, optimizer, schedule and seed then train twice: through `fromnet train` (its own loader and data order), and
through fromnet.train.bench.permutation_loop (a Trainer fed by a plain torch.randperm of the faces, decoded in
memory, every epoch). Only the data order differs. Issue #16 compared the shuffle-buffer order so on 15,658 LFW
Mix samples, r18 x0.25, 6 epochs, lr 0.1 /10 at 4 and 5, batch 64; --min-images 3 gives 15,212 samples, 10 gives
8,648 (the issue's smaller set).

    python tools/exp_data_order.py --work /tmp/exp-order --min-images 3 --epochs 6 --milestones 4,5

Prints, per epoch, each loop's mean training loss (± standard error over its steps) and distinct identities per
batch, and the trainer's order beside a full permutation as `fromnet bench order` reports it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from expcommon import LFW, link_images, run


def build(work: Path, min_images: int, occgen: str) -> Path:
    """An identity-ordered Mix of the LFW people with at least `min_images` images, built once."""
    manifest = work / "manifests" / f"lfw{min_images}-mix"
    if (manifest / "shards.json").is_file():
        return manifest
    src = work / f"src{min_images}"
    for person in sorted(p for p in LFW.iterdir() if p.is_dir()):
        if len(images := sorted(person.glob("*.jpg"))) >= min_images:
            link_images(src / person.name, images)
    mix = {"--copies": 2, "--clean-ratio": 0.3333, "--scales": "1:0.5:5", "--shard-size": 500, "--seed": 1}
    options = [str(x) for option in mix.items() for x in option]
    out = ["--out", str(work / "shards"), "--manifests", str(manifest.parent), "-q"]
    run(occgen, "build", "--src", str(src), "--name", manifest.name, *options, *out)
    return manifest


def per_epoch(values: list[float], steps: int) -> list[tuple[float, float]]:
    """(mean, standard error) of each epoch's per-step values."""
    out = []
    for e in range(len(values) // steps):
        part = np.array(values[e * steps : (e + 1) * steps])
        out.append((float(part.mean()), float(part.std(ddof=1) / np.sqrt(len(part)))))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/exp-order"))
    for name, default in (("min-images", 3), ("epochs", 6), ("batch-size", 64), ("workers", 2), ("seed", 0)):
        ap.add_argument(f"--{name}", type=int, default=default)
    for name, default in (("lr", 0.1), ("width-mult", 0.25)):
        ap.add_argument(f"--{name}", type=float, default=default)
    ap.add_argument("--milestones", default="4,5")
    args = ap.parse_args()
    if not LFW.is_dir():
        sys.exit(f"needs {LFW} (the project's shared test data)")
    from click.testing import CliRunner

    from fromnet.cli import main as fromnet_main
    from fromnet.train.bench import permutation_loop
    from fromnet.train.params import TrainConfig

    bin_dir = Path(sys.executable).parent
    manifest = build(args.work, args.min_images, str(bin_dir / "occgen"))
    settings = dict(
        shards=[str(manifest)],
        variant="baseline",
        backbone="r18",
        width_mult=args.width_mult,
        batch_size=args.batch_size,
        lr=args.lr,
        epochs=args.epochs,
        milestones=[int(m) for m in args.milestones.split(",")],
        seed=args.seed,
        log_every=1,
        workers=args.workers,
    )
    print("$ fromnet bench order --shards", manifest, "--batch-size", args.batch_size, "--seed", args.seed)
    order = CliRunner().invoke(
        fromnet_main,
        ["bench", "order", "--shards", str(manifest), "--batch-size", str(args.batch_size), "--seed", str(args.seed)],
    )
    print(order.output)

    trainer_run = args.work / f"trainer-{args.seed}"
    cmd = [str(bin_dir / "fromnet"), "train", "--out", str(trainer_run), "--milestones", args.milestones]
    for key, value in settings.items():
        if key == "shards":
            cmd += ["--shards", str(manifest)]
        elif key != "milestones":
            cmd += [f"--{key.replace('_', '-')}", str(value)]
    began = time.perf_counter()
    run(*cmd)
    trainer_s = time.perf_counter() - began
    rows = [json.loads(line) for line in (trainer_run / "metrics.jsonl").read_text().splitlines()]
    trainer = [r["loss"] for r in rows if "loss" in r]
    plain_cfg = TrainConfig(**{**settings, "out": str(args.work / f"plain-{args.seed}")})
    began = time.perf_counter()
    plain, plain_ids = permutation_loop(plain_cfg)
    plain_s = time.perf_counter() - began
    steps = len(plain) // args.epochs
    print(
        f"\n{manifest.name}: {steps} steps/epoch of {args.batch_size}; trainer {trainer_s / 60:.1f} min, plain loop "
        f"{plain_s / 60:.1f} min"
    )
    print("| epoch | fromnet train loss | plain permutation loss | difference | plain ids/batch |")
    print("|---|---|---|---|---|")
    ids = per_epoch([float(x) for x in plain_ids], steps)
    for e, ((a, sa), (b, sb), (i, _)) in enumerate(zip(per_epoch(trainer, steps), per_epoch(plain, steps), ids)):
        diff = a - b
        print(
            f"| {e} | {a:.3f} ± {sa:.3f} | {b:.3f} ± {sb:.3f} | {diff / b:+.1%} (± {np.hypot(sa, sb) / b:.1%}) "
            f"| {i:.1f} |"
        )
    print("(± is the standard error over the epoch's steps; a difference within about twice it is noise)")


if __name__ == "__main__":
    main()
