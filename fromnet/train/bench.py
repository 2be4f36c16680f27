"""Measurements behind `fromnet bench`: a training step on synthetic tensors, the loader on real shards, and how
well the data order mixes identities.

Each figure is printed beside the simple way of doing the same job in the same run (eager fp32 NCHW for the step;
a plain PIL decode loop for the loader; a full permutation for the order), so that a busy machine slows both alike.
"""

from __future__ import annotations

import io
import tarfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fromnet.losses import FromLoss, Margin, MarginHead
from fromnet.models import build_model, num_patterns
from fromnet.shards import Manifest, image_size
from fromnet.train.data import (
    Source,
    StreamPlan,
    TrainStream,
    build_index_cache,
    build_label_cache,
    served,
    shard_order,
    stream_buffer,
)
from fromnet.train.order import (
    PLACE_BITS,
    STREAM_SHARDS,
    epoch_order,
    identities_per_batch,
    order_seed,
    steps_per_identity,
    stream_places,
    stream_units,
)
from fromnet.train.params import TrainConfig
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
    manifest: Manifest, workers: int, batches: int, batch: int, K: int | None, cache: Path, order: str = "permutation"
) -> tuple[float, float]:
    """fromnet's loader (the epoch's order read by random access or streamed, decode, flip, labels, uint8 batches)
    with `workers` processes, after its first batch (worker start-up, and a streamed order's buffer filled) is in;
    the sample index is built before the clock starts, as a run builds it once. Returns (images/s, seconds to the
    first batch)."""
    labels = str(build_label_cache(manifest, K, cache)) if K else None
    index = (
        str(build_index_cache(manifest, cache.with_name(f"{cache.stem}-index.npy"))) if order == "permutation" else None
    )
    source = Source(manifest, labels=labels, index=index)
    plan = StreamPlan((source,), batch, 1, 0, image_size(manifest), K or 5, K is not None, order=order)
    if order == "stream":
        plan = replace(plan, stream_buffer=stream_buffer(plan), stream_shards=STREAM_SHARDS)
    stream = TrainStream(plan, [0], 0, batches + 1)
    loader = torch.utils.data.DataLoader(
        stream, batch_size=None, num_workers=workers, prefetch_factor=4 if workers else None
    )
    began = time.perf_counter()
    it = served(iter(loader))
    next(it)
    first = time.perf_counter() - began
    start = time.perf_counter()
    n = sum(b["image"].shape[0] for b in it)
    return n / (time.perf_counter() - start), first


# -- data order -----------------------------------------------------------------------------------------------------


@dataclass
class OrderStats:
    name: str
    per_batch: np.ndarray  # distinct identities in each batch
    spread: np.ndarray  # for each identity, the batches its samples fall in


def order_stats(
    sources: list[tuple[Manifest, float]], batch: int, seed: int, epoch: int, buffer: int, lanes: int
) -> list[OrderStats]:
    """How one epoch mixes identities: the samples as stored, fromnet train's two orders (the permutation read by
    random access; the streamed order with ``buffer`` and ``lanes`` shards at once), and a full permutation of the
    same samples (the reference a shuffle should reach)."""
    parts, offset = [], 0
    for manifest, _ in sources:
        parts.append(shard_order(manifest, ["identity"])["identity"].to_numpy() + offset)
        offset += manifest.num_identities
    identities = np.concatenate(parts).astype(np.int64)
    weights = [w for _, w in sources]
    order = epoch_order([m.samples for m, _ in sources], weights, seed, epoch)
    trained = identities[order]
    counts = [[s.samples for s in m.shards] for m, _ in sources]
    split = np.split(identities, np.cumsum([m.samples for m, _ in sources])[:-1])
    streamed = streamed_identities(split, counts, weights, seed, epoch, buffer, lanes)[: len(trained)]
    shuffled = np.random.default_rng(order_seed(seed + 1, epoch)).permutation(trained)
    stored = np.resize(identities, len(trained))  # build order; weights repeat the whole set
    return [
        OrderStats(name, identities_per_batch(ids, batch), steps_per_identity(ids, batch))
        for name, ids in (
            ("as stored", stored),
            ("random access", trained),
            ("streamed", streamed),
            ("full permutation", shuffled),
        )
    ]


def streamed_identities(
    identities: list[np.ndarray],
    counts: list[list[int]],
    weights: list[float],
    seed: int,
    epoch: int,
    buffer: int,
    lanes: int,
) -> np.ndarray:
    """The identities of the streamed order's epoch as training reads it, from the identities of each source's
    samples in shard order (no shard is read)."""
    units = stream_units(counts, weights, seed, epoch)
    places = np.fromiter(stream_places(units, counts, lanes, buffer, seed, epoch), np.int64)
    starts = [np.cumsum([0, *c]) for c in counts]
    unit_first = np.array([starts[u.source][u.shard] for u in units], np.int64)
    unit_source = np.array([u.source for u in units], np.int64)
    k, position = places >> PLACE_BITS, places & ((1 << PLACE_BITS) - 1)
    flat = np.concatenate(identities)
    source_first = np.cumsum([0] + [len(ids) for ids in identities])[:-1]
    return flat[source_first[unit_source[k]] + unit_first[k] + position]


def permutation_loop(cfg: TrainConfig) -> tuple[list[float], list[int]]:
    """The simple way to order data, for comparing training losses: a fresh run's model, loss, optimizer and
    schedule (same seed, so the same initial weights), fed batches of a plain ``torch.randperm`` over every face of
    the mix decoded into memory, each epoch, each face flipped with probability 1/2. Returns each step's loss and
    the distinct identities of each batch."""
    from fromnet.checkpoint import ModelSpec
    from fromnet.shards import decode_face, iter_ordered
    from fromnet.train.distributed import World
    from fromnet.train.loop import make_plan, make_sources, needs_targets
    from fromnet.train.state import build_state
    from fromnet.train.step import StepSettings, lr_factor, train_step

    if needs_targets(cfg.variant) or cfg.occlude_online:
        raise ValueError("the permutation loop feeds identity labels only: use a variant without a pattern predictor")
    cfg.replicas = cfg.replicas or 1
    world = World()
    sources = make_sources(cfg, Path(cfg.out), world)
    plan = make_plan(cfg, sources)
    spec = ModelSpec(cfg.variant, cfg.K, plan.image_size, cfg.backbone, cfg.width_mult)
    state = build_state(cfg, world, spec, plan.num_identities)
    settings = StepSettings(cfg.seed, replicas=1)
    faces, labels = [], []
    for source in sources:
        if source.weight != 1:
            raise ValueError("the permutation loop reads each manifest once: give weights of 1")
        for sample in iter_ordered(source.manifest):
            faces.append(decode_face(sample))
            labels.append(int(sample["cls"]) + source.identity_offset)
    images_all, labels_all = np.stack(faces), np.array(labels, np.int64)
    generator = torch.Generator().manual_seed(cfg.seed)
    steps = len(labels_all) // cfg.batch_size
    losses, distinct = [], []
    for _ in range(cfg.epochs):
        perm = torch.randperm(len(labels_all), generator=generator).numpy()
        for t in range(steps):
            ids = perm[t * cfg.batch_size : (t + 1) * cfg.batch_size]
            images = images_all[ids]
            if cfg.flip:
                flip = torch.rand(len(ids), generator=generator).numpy() < 0.5
                images[flip] = images[flip][:, :, ::-1]
            batch = {"image": torch.from_numpy(images), "label": torch.from_numpy(labels_all[ids]), "replica": 0}
            lr = cfg.lr * lr_factor(state.step, cfg.milestones, plan.steps_per_epoch)
            loss = train_step(state, [batch], lr, settings, world)["loss"]
            assert loss is not None  # always a number; only the pattern terms may be None
            losses.append(loss)
            distinct.append(len(set(labels_all[ids].tolist())))
    return losses, distinct
