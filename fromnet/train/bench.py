"""Throughput measurements behind `fromnet bench`: a training step on synthetic tensors, and the loader on real shards.

Each figure is printed beside the simple way of doing the same job in the same run (eager fp32 NCHW for the step;
a plain PIL decode loop for the loader), so that a busy machine slows both alike.
"""

from __future__ import annotations

import io
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fromnet.losses import FromLoss, Margin, MarginHead
from fromnet.models import build_model, num_patterns
from fromnet.shards import Manifest, image_size
from fromnet.train.data import Source, StreamPlan, TrainStream, build_label_cache
from occgen.writer import member_bytes


@dataclass
class StepConfig:
    name: str
    channels_last: bool
    precision: str  # fp32 | bf16 | fp16
    compile: bool = False
    times: list[float] = field(default_factory=list)


class TrainStep:
    """One model + classifier + SGD on a fixed random batch; calling it runs and times one step."""

    def __init__(
        self,
        cfg: StepConfig,
        variant: str,
        backbone: str,
        width_mult: float,
        batch: int,
        classes: int,
        K: int,
        device: torch.device,
    ) -> None:
        torch.manual_seed(0)
        self.cfg, self.device = cfg, device
        model = build_model(
            variant, K, (112, 96), backbone=backbone, width_mult=width_mult, channels_last=cfg.channels_last
        ).to(device)
        self.criterion = FromLoss(MarginHead(model.config.embedding_dim, classes, Margin.preset("cosface"))).to(device)
        self.model = torch.compile(model) if cfg.compile else model
        self.optim = torch.optim.SGD(
            list(model.parameters()) + list(self.criterion.parameters()), lr=0.01, momentum=0.9, weight_decay=5e-4
        )
        x = torch.randn(batch, 3, 112, 96, device=device)
        self.x = x.to(memory_format=torch.channels_last) if cfg.channels_last else x
        self.labels = torch.randint(0, classes, (batch,), device=device)
        self.patterns = torch.randint(0, num_patterns(K), (batch,), device=device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")

    def __call__(self) -> float:
        start = time.perf_counter()
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.cfg.precision)
        with torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            out = self.model(self.x)
            loss = self.criterion(out, self.labels, patterns=self.patterns).total
        self.optim.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optim)
        self.scaler.update()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start


def step_configs(precisions: list[str], compile: bool) -> list[StepConfig]:
    """The simple way (fp32 NCHW eager) first, then each precision in both layouts (and compiled, if asked)."""
    configs = [StepConfig("fp32 NCHW (simple)", False, "fp32")]
    for precision in precisions:
        for cl in (False, True):
            if (precision, cl) != ("fp32", False):
                configs.append(StepConfig(f"{precision} {'channels_last' if cl else 'NCHW'}", cl, precision))
        if compile:
            configs.append(StepConfig(f"{precision} channels_last compiled", True, precision, compile=True))
    return configs


def bench_steps(configs: list[StepConfig], make, steps: int, warmup: int) -> None:
    """Time every configuration in turns, round after round, so that a busy neighbour slows them all alike."""
    runners = [make(cfg) for cfg in configs]
    for round_ in range(warmup + steps):
        for cfg, run in zip(configs, runners):
            seconds = run()
            if round_ >= warmup:
                cfg.times.append(seconds)


# -- loader ---------------------------------------------------------------------------------------------------------


def plain_pil_loop(manifest: Manifest, images: int, batch: int) -> float:
    """The simple way: tarfile + PIL decode + numpy -> normalised float batches, one process. Returns images/s."""
    start, done, pending = time.perf_counter(), 0, []
    for shard in manifest.shards:
        with tarfile.open(shard.url) as tar:
            for member in tar:
                if not member.name.endswith((".jpg", ".png", ".webp")):
                    continue
                face = np.array(Image.open(io.BytesIO(member_bytes(tar, member))).convert("RGB"))
                pending.append(torch.from_numpy(face).permute(2, 0, 1).float().sub(127.5).div(127.5))
                if len(pending) == batch:
                    torch.stack(pending)
                    pending.clear()
                done += 1
                if done >= images:
                    return done / (time.perf_counter() - start)
    return done / (time.perf_counter() - start)


def loader_throughput(
    manifest: Manifest, workers: int, batches: int, batch: int, K: int | None, cache: Path
) -> tuple[float, float]:
    """fromnet's loader (decode, flip, labels, uint8 batches) with `workers` processes, after its first batch
    (worker start-up) is in. Returns (images/s, seconds to the first batch)."""
    labels = str(build_label_cache(manifest, K, cache)) if K else None
    lanes = max(1, workers)  # one lane per worker: each decodes its own stream
    plan = StreamPlan(
        (Source(manifest, labels=labels),), batch, 1, lanes, 0, image_size(manifest), K or 5, targets=K is not None
    )
    stream = TrainStream(plan, [0], 0, batches + 1)
    loader = torch.utils.data.DataLoader(
        stream, batch_size=None, num_workers=workers, prefetch_factor=4 if workers else None
    )
    began = time.perf_counter()
    it = iter(loader)
    next(it)
    first = time.perf_counter() - began
    start = time.perf_counter()
    n = sum(b["image"].shape[0] for b in it)
    return n / (time.perf_counter() - start), first
