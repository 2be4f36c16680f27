"""How close `fromnet train`'s memory estimate of a step (fromnet.train.memory, measured on the meta device) comes
to a real step: each configuration runs one training step (forward, backward, SGD update) in a fresh process, and
its peak memory (CPU: peak RSS minus the RSS before the model was built; CUDA: peak allocated) is printed beside
the estimate. The estimate should be at or above the measured figure, and not far above it.

    python tools/bench_step_memory.py                          # a few small CPU configurations
    python tools/bench_step_memory.py --device cuda --backbone r50 --width 1 --batch 64 --batch 128
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CLASSES = 1000


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def measure(variant: str, backbone: str, width: float, batch: int, device: str) -> dict[str, float]:
    """One real step in this process; its peak memory above what was held before the model was built."""
    import torch

    from fromnet.checkpoint import ModelSpec
    from fromnet.train.distributed import World
    from fromnet.train.memory import step_memory
    from fromnet.train.params import TrainConfig
    from fromnet.train.state import build_state
    from fromnet.train.step import StepSettings, train_step

    spec = ModelSpec(variant, 5, (112, 96), backbone, width)
    estimate = step_memory(spec, CLASSES, "fp32").total(batch)
    world = World(device=torch.device(device))
    micro = [
        {
            "image": torch.randint(0, 256, (batch, 112, 96, 3), dtype=torch.uint8),
            "label": torch.randint(0, CLASSES, (batch,)),
            "pattern": torch.randint(0, 25, (batch,)),
            "replica": 0,
        }
    ]
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = rss()
    cfg = TrainConfig(shards=["-"], variant=variant, backbone=backbone, width_mult=width)
    state = build_state(cfg, world, spec, CLASSES)
    train_step(state, micro, 0.1, StepSettings(seed=0, replicas=1, targets=variant != "baseline"), world)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {"estimate": estimate, "measured": peak}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", action="append")
    ap.add_argument("--backbone", default="r18")
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--batch", type=int, action="append")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one configuration, print JSON
    args = ap.parse_args()
    if args.one:
        variant, batch = args.one.split(":")
        print(json.dumps(measure(variant, args.backbone, args.width, int(batch), args.device)))
        return
    print(f"{'variant':10} {'model':12} {'batch':>6} {'estimate':>10} {'measured':>10} {'ratio':>6}")
    for variant in args.variant or ["baseline", "from"]:
        for batch in args.batch or [16, 64]:
            cmd = [sys.executable, __file__, "--one", f"{variant}:{batch}", "--backbone", args.backbone]
            cmd += ["--width", str(args.width), "--device", args.device]
            out = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
            mib = {k: v / 2**20 for k, v in out.items()}
            print(
                f"{variant:10} {args.backbone} x{args.width:<6g} {batch:>6} {mib['estimate']:>8.0f} MiB "
                f"{mib['measured']:>6.0f} MiB {out['estimate'] / out['measured']:>6.2f}"
            )


if __name__ == "__main__":
    main()
