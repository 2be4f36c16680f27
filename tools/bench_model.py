"""Train-step time (forward, loss, backward, SGD step) of FROM and the baseline on this machine's CPU (or GPU).

The simple way, eager fp32 in NCHW layout, runs in the same process next to channels_last, bf16 autocast and
(with --compile) torch.compile. Configurations take their steps in turn, round after round, so a busy neighbour
slows them all alike; the best step is the figure to compare (the median is printed too).

    python tools/bench_model.py --batch 16 --steps 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fromnet.losses import FromLoss, Margin  # noqa: E402
from fromnet.models import build_model, num_patterns  # noqa: E402

NUM_CLASSES = 10572  # CASIA-WebFace identities, the size of FROM's training classifier
K = 5


@dataclass
class Config:
    variant: str
    name: str
    channels_last: bool
    bf16: bool
    compile: bool
    times: list[float] = field(default_factory=list)


class TrainStep:
    """One model + classifier + SGD on a fixed random batch; `__call__` runs and times one step."""

    def __init__(self, cfg: Config, batch: int, device: torch.device) -> None:
        torch.manual_seed(0)
        self.cfg, self.device = cfg, device
        model = build_model(cfg.variant, K, (112, 96), channels_last=cfg.channels_last).to(device)
        self.criterion = FromLoss(512, NUM_CLASSES, Margin.preset("cosface"), lam=1.0).to(device)
        self.model = torch.compile(model) if cfg.compile else model
        self.optim = torch.optim.SGD(list(model.parameters()) + list(self.criterion.parameters()), lr=0.01,
                                     momentum=0.9, weight_decay=5e-4)
        x = torch.randn(batch, 3, 112, 96, device=device)
        self.x = x.to(memory_format=torch.channels_last) if cfg.channels_last else x
        self.labels = torch.randint(0, NUM_CLASSES, (batch,), device=device)
        self.patterns = torch.randint(0, num_patterns(K), (batch,), device=device)

    def __call__(self) -> float:
        start = time.perf_counter()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.bf16):
            out = self.model(self.x)
            loss = self.criterion(out, self.labels, patterns=self.patterns).total
        self.optim.zero_grad(set_to_none=True)
        loss.backward()
        self.optim.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (compilation, allocator)")
    parser.add_argument("--variants", default="from,baseline")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (minutes to compile on CPU)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    kinds = [("fp32 NCHW (simple)", False, False, False), ("fp32 channels_last", True, False, False),
             ("bf16 autocast NCHW", False, True, False), ("bf16 autocast channels_last", True, True, False)]
    if args.compile:
        kinds += [("fp32 channels_last compiled", True, False, True), ("bf16 channels_last compiled", True, True, True)]
    configs = [Config(v, *kind) for v in args.variants.split(",") for kind in kinds]
    steps = [TrainStep(cfg, args.batch, device) for cfg in configs]
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, batch {args.batch}, "
          f"best of {args.steps} steps after {args.warmup} warm-up; classifier over {NUM_CLASSES} classes", flush=True)
    for round_ in range(args.warmup + args.steps):
        for step in steps:
            seconds = step()
            if round_ >= args.warmup:
                step.cfg.times.append(seconds)
    simple: dict[str, float] = {}
    for cfg in configs:
        best = min(cfg.times)
        simple.setdefault(cfg.variant, best)
        print(f"{cfg.variant:<9} {cfg.name:<28} {best:7.3f} s/step  {args.batch / best:7.1f} img/s  "
              f"x{simple[cfg.variant] / best:4.2f} vs simple  (median {statistics.median(cfg.times):.3f} s)")


if __name__ == "__main__":
    main()
