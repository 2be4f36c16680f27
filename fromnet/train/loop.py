"""The training loop: shards -> FROM (or a baseline) -> checkpoints, on one CPU, one GPU or many under torchrun.

A step is defined by the data, not by the processes: the global batch is split into `replicas` micro-batches
(fixed when the run starts), every micro-batch's samples and dropout masks are seeded by (seed, step, replica),
and a process runs replicas / world of them, accumulating gradients. So a run can stop anywhere and resume on
another number of processes, and compute the same losses it would have computed uninterrupted.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from fromnet import checkpoint
from fromnet.checkpoint import ModelSpec
from fromnet.losses import Margin, MarginHead, make_criterion
from fromnet.models import VARIANTS, build_model
from fromnet.shards import decode_face, image_size, iter_ordered, read_manifest, sample_meta, to_input
from fromnet.train import distributed
from fromnet.train.data import (
    OnlineOcclusion,
    Source,
    StreamPlan,
    TrainStream,
    build_index_cache,
    build_label_cache,
    index_cache_path,
    parse_source,
)
from fromnet.train.distributed import World
from fromnet.train.params import TrainConfig, merge_resumed, read_toml, write_toml
from fromnet.train.partial_fc import ShardedMarginHead
from fromnet.train.progress import Progress
from occgen.errors import UserError
from occgen.label.patterns import label_boxes
from occgen.occlude.plan import parse_scales
from occgen.writer import atomic_write

AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class NonFiniteLoss(UserError):
    """The loss became NaN or infinite; the run stops and keeps its last good checkpoint."""


@dataclass
class Result:
    run: Path
    start_step: int
    step: int
    seconds: float
    images: int
    data_wait: float
    last: dict[str, Any] = field(default_factory=dict)
    val: dict[str, float] = field(default_factory=dict)
    checkpoint: Path | None = None


def step_seed(seed: int, step: int, replica: int) -> int:
    """The torch seed of one micro-batch (dropout masks): a function of the data position alone."""
    digest = hashlib.blake2b(f"{seed}:{step}:{replica}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def lr_factor(step: int, milestones: list[int], steps_per_epoch: int) -> float:
    """Step decay: /10 at each milestone epoch, applied from the first step of that epoch."""
    epoch = step // steps_per_epoch
    return 0.1 ** sum(epoch >= m for m in milestones)


def needs_targets(variant: str) -> bool:
    return VARIANTS[variant].predictor is not None


def make_sources(cfg: TrainConfig, run: Path, world: World) -> tuple[Source, ...]:
    """The manifests of the mix, with identity offsets, sample indexes and (when the variant predicts patterns)
    label caches."""
    sources, offset = [], 0
    for text in cfg.shards:
        path, weight = parse_source(text)
        manifest = read_manifest(path)
        labels = None
        if needs_targets(cfg.variant) and not cfg.occlude_online:
            digest = hashlib.blake2b(str(manifest.path.resolve()).encode(), digest_size=4).hexdigest()
            labels = str(run / "cache" / f"{manifest.name}-{digest}-k{cfg.K}.npy")
        index = str(index_cache_path(manifest, run / "cache"))
        sources.append(Source(manifest, weight, offset, labels, index))
        offset += manifest.num_identities
    if world.main:  # one process writes the caches, the others wait for them
        for source in sources:
            if source.index is not None:
                build_index_cache(source.manifest, Path(source.index))
            if source.labels is not None:
                build_label_cache(source.manifest, cfg.K, Path(source.labels))
    distributed.barrier(world)
    return tuple(sources)


def make_plan(cfg: TrainConfig, sources: tuple[Source, ...]) -> StreamPlan:
    sizes = {image_size(s.manifest) for s in sources}
    if len(sizes) != 1:
        raise UserError(f"the manifests hold faces of different sizes {sorted(sizes)}; train on one size")
    online = None
    if cfg.occlude_online:
        online = OnlineOcclusion(parse_scales(cfg.occlude_online), cfg.clean_ratio, cfg.occluders or None)
    return StreamPlan(
        sources,
        cfg.batch_size,
        cfg.replicas,
        cfg.seed,
        sizes.pop(),
        cfg.K,
        needs_targets(cfg.variant),
        cfg.flip,
        online,
    )


#: Parts of a FROM-family checkpoint that the attention variant has no use for: it stops after stage 3 and pools
#: with attention instead of the flattening embedding head.
ATTENTION_UNUSED = ("backbone.stages.3.", "head.")


def load_init(model: nn.Module, head: MarginHead | ShardedMarginHead, path: str, variant: str) -> str:
    """Start from another run's weights (stage 2 from stage 1): every tensor must fit, or nothing is loaded."""
    state = checkpoint.load(path)
    theirs, ours = state["model"], model.state_dict()
    unused = []
    if VARIANTS[variant].family == "attention":
        unused = [k for k in theirs if k not in ours and k.startswith(ATTENTION_UNUSED)]
        theirs = {k: v for k, v in theirs.items() if k not in unused}
    wrong = [
        f"{k} {tuple(v.shape)} vs {tuple(ours[k].shape)}"
        for k, v in theirs.items()
        if k in ours and v.shape != ours[k].shape
    ]
    unknown = [k for k in theirs if k not in ours]
    missing = [k for k in ours if k not in theirs and k.split(".")[0] in ("backbone", "head")]
    if wrong or unknown or missing:
        parts = [
            f"{len(wrong)} of different shape ({'; '.join(wrong[:4])})" if wrong else "",
            f"{len(unknown)} this model lacks ({', '.join(unknown[:4])})" if unknown else "",
            f"{len(missing)} the checkpoint lacks ({', '.join(missing[:4])})" if missing else "",
        ]
        spec = state.get("model_spec", {})
        raise UserError(
            f"--init {state['path']} (a {spec.get('variant')} {spec.get('backbone')} x"
            f"{spec.get('width_mult')}) does not fit this model: tensors "
            + "; ".join(p for p in parts if p)
            + ". Use the same --backbone, --width-mult and face size"
        )
    model.load_state_dict(theirs, strict=False)
    fresh = sorted({k.split(".")[0] for k in ours if k not in theirs})
    weight = state.get("classifier", {}).get("weight")
    dim = next(head.parameters()).shape[1]
    if weight is not None and tuple(weight.shape) == (head.num_classes, dim):
        head.load_full_weight(weight.to(next(head.parameters()).device))
        classifier = "classifier loaded"
    else:
        classifier = "classifier starts fresh (other identities or embedding size)"
    return (
        f"initialised from {state['path']}"
        + (f" (new parts: {', '.join(fresh)})" if fresh else "")
        + (f" ({len(unused)} tensors of parts this variant drops left unused)" if unused else "")
        + f"; {classifier}"
    )


class Trainer:
    """Holds a run's pieces; `fit` runs steps [start, end)."""

    def __init__(self, cfg: TrainConfig, world: World, resume_state: dict[str, Any] | None) -> None:
        self.cfg, self.world = cfg, world
        self.run = Path(cfg.out)
        self.sources = make_sources(cfg, self.run, world)
        self.plan = make_plan(cfg, self.sources)
        self.spec = ModelSpec(cfg.variant, cfg.K, self.plan.image_size, cfg.backbone, cfg.width_mult)
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank
        device = world.device
        self.model = build_model(**self.spec.build_kwargs(), channels_last=cfg.channels_last).to(device)
        margin = Margin.preset(cfg.margin, cfg.margin_scale or None)
        dim = self.model.config.embedding_dim
        if cfg.classifier == "sharded":
            self.head: MarginHead | ShardedMarginHead = ShardedMarginHead(
                dim, self.plan.num_identities, margin, world, cfg.seed
            )
        else:
            self.head = MarginHead(dim, self.plan.num_identities, margin)
        self.head.to(device)
        self.criterion = make_criterion(cfg.variant, self.head, cfg.lam, cfg.lambda_wce, cfg.lambda_div)
        self.notes: list[str] = []
        if cfg.init and resume_state is None:
            self.notes.append(load_init(self.model, self.head, cfg.init, cfg.variant))
        self.ddp = (
            DistributedDataParallel(self.model, device_ids=[device] if device.type == "cuda" else None)
            if world.distributed
            else self.model
        )
        self.forward = torch.compile(self.ddp) if cfg.compile else self.ddp
        opt: dict[str, Any] = dict(lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        self.optimizer = torch.optim.SGD(self.model.parameters(), **opt)
        self.head_optimizer = torch.optim.SGD(self.head.parameters(), **opt)
        self.scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
        self.step = 0
        if resume_state is not None:
            self._restore(resume_state)

    # -- checkpoints ------------------------------------------------------------------------------------------

    def _head_momentum(self) -> torch.Tensor | None:
        state = self.head_optimizer.state.get(self._head_weight(), {})
        return state.get("momentum_buffer")

    def _head_weight(self) -> nn.Parameter:
        return next(self.head.parameters())

    def state(self) -> dict[str, Any]:
        """Everything a resume needs; collective (the sharded classifier is gathered), so every rank calls it."""
        momentum = self._head_momentum()
        return {
            "step": self.step,
            "epoch": self.step // self.plan.steps_per_epoch,
            "model_spec": self.spec.to_dict(),
            "model": self.model.state_dict(),
            "classifier": {
                "weight": self.head.full_weight().cpu(),
                "momentum": None if momentum is None else self.head.gather_rows(momentum).cpu(),
            },
            "optimizer": self.optimizer.state_dict(),
            "schedule": {
                "lr": self.cfg.lr,
                "milestones": list(self.cfg.milestones),
                "steps_per_epoch": self.plan.steps_per_epoch,
                "step": self.step,
            },
            "scaler": self.scaler.state_dict(),
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            },
            "data": {
                "step": self.step,
                "replicas": self.plan.replicas,
                "order": "permutation",
                "seed": self.plan.seed,
                "steps_per_epoch": self.plan.steps_per_epoch,
            },
            "config": json.dumps(self.cfg.to_dict(), sort_keys=True),
        }

    def replica_checksums(self) -> list[float]:
        """A checksum of this rank's weights from every rank: DDP replicas must never drift apart."""
        with torch.no_grad():
            mine = torch.stack([p.double().sum() for p in self.model.parameters()]).sum().reshape(1).cpu()
        return distributed.all_gather_cat(mine, self.world).tolist()

    def save(self) -> Path | None:
        state = self.state()
        sums = self.replica_checksums()
        if len(set(sums)) != 1:
            raise UserError(
                f"the model replicas differ between ranks (weight checksums {sums}); this is a bug in "
                "the distributed setup, please report it with the run's config.toml"
            )
        state["replica_checksums"] = sums
        path = checkpoint.save(self.run, self.step, state, self.cfg.keep) if self.world.main else None
        distributed.barrier(self.world)
        return path

    def _restore(self, state: dict[str, Any]) -> None:
        device = self.world.device
        self.model.load_state_dict(state["model"])
        self.head.load_full_weight(state["classifier"]["weight"].to(device))
        self.optimizer.load_state_dict(state["optimizer"])
        momentum = state["classifier"]["momentum"]
        if momentum is not None:
            weight = self._head_weight()
            self.head_optimizer.state[weight]["momentum_buffer"] = self.head.local_rows(momentum).to(device).clone()
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["torch"])
        if state["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.step = int(state["step"])

    # -- the loop -----------------------------------------------------------------------------------------------

    def loader(self, end: int) -> torch.utils.data.DataLoader:
        world, plan = self.world, self.plan
        per_process = plan.replicas // world.size
        mine = [world.rank * per_process + i for i in range(per_process)]
        stream = TrainStream(plan, mine, self.step, end, log_keys=self.cfg.log_keys)
        workers = self.cfg.workers
        return torch.utils.data.DataLoader(
            stream,
            batch_size=None,
            num_workers=workers,
            pin_memory=world.device.type == "cuda",
            prefetch_factor=4 if workers else None,
        )

    def fit(self, end: int) -> Result:
        cfg, world, plan = self.cfg, self.world, self.plan
        start = self.step
        progress = Progress(self.run, start, end, world.main)
        for note in self.notes:
            progress.note(note)
        per_process = plan.replicas // world.size
        autocast = AUTOCAST[cfg.precision]
        keys_file = None
        if cfg.log_keys:
            (self.run / "keys").mkdir(parents=True, exist_ok=True)
            keys_file = open(self.run / "keys" / f"rank-{world.rank}.txt", "a")
        result = Result(self.run, start, start, 0.0, 0, 0.0)
        began = time.perf_counter()
        window = {"images": 0, "wait": 0.0, "time": 0.0}
        batches = iter(self.loader(end))
        self.model.train()
        try:
            while self.step < end:
                tick = time.perf_counter()
                micro = []
                for _ in range(per_process):
                    micro.append(next(batches))
                waited = time.perf_counter() - tick
                stats = self._train_step(micro, per_process, autocast)
                if keys_file is not None:
                    for mb in micro:
                        keys_file.write("".join(f"{self.step} {mb['replica']} {k}\n" for k in mb["keys"]))
                self.step += 1
                elapsed = time.perf_counter() - tick
                window["images"] += plan.batch_size
                window["wait"] += waited
                window["time"] += elapsed
                result.images += plan.batch_size
                result.data_wait += waited
                epoch_end = self.step % plan.steps_per_epoch == 0
                if self.step % cfg.log_every == 0 or self.step == end or epoch_end:
                    record = {
                        "step": self.step,
                        "epoch": (self.step - 1) // plan.steps_per_epoch,
                        **stats,
                        "img_s": window["images"] / max(window["time"], 1e-9),
                        "data_wait": window["wait"] / max(window["time"], 1e-9),
                    }
                    progress.log(record)
                    result.last = record
                    window = {"images": 0, "wait": 0.0, "time": 0.0}
                if epoch_end and cfg.val:
                    result.val = self.validate(Path(cfg.val))
                    if world.main:
                        progress.note(
                            f"val after epoch {record['epoch']}: "
                            + ", ".join(f"{k} {v:.4f}" for k, v in result.val.items())
                        )
                        with open(self.run / "metrics.jsonl", "a") as f:
                            f.write(
                                json.dumps({"step": self.step, **{f"val_{k}": v for k, v in result.val.items()}}) + "\n"
                            )
                if self.step % cfg.ckpt_every == 0 or epoch_end or self.step == end:
                    result.checkpoint = self.save()
        finally:
            progress.close()
            if keys_file is not None:
                keys_file.close()
        result.step = self.step
        result.seconds = time.perf_counter() - began
        return result

    def set_lr(self) -> float:
        """The schedule is a function of the step (so of the data position), set before each update."""
        lr = self.cfg.lr * lr_factor(self.step, self.cfg.milestones, self.plan.steps_per_epoch)
        for opt in (self.optimizer, self.head_optimizer):
            for group in opt.param_groups:
                group["lr"] = lr
        return lr

    def _train_step(
        self, micro: list[dict[str, Any]], per_process: int, autocast: torch.dtype | None
    ) -> dict[str, float | None]:
        cfg, world = self.cfg, self.world
        device = world.device
        self.optimizer.zero_grad(set_to_none=True)
        self.head_optimizer.zero_grad(set_to_none=True)
        totals = torch.zeros(5, dtype=torch.float64)  # loss, id, pattern, pattern hits, pattern count
        for i, mb in enumerate(micro):
            torch.manual_seed(step_seed(cfg.seed, self.step, mb["replica"]))
            x = to_input(mb["image"], device)
            labels = mb["label"].to(device, non_blocking=True)
            patterns = mb["pattern"].to(device, non_blocking=True) if "pattern" in mb else None
            boxes = mb["box"].to(device, non_blocking=True) if "box" in mb else None
            last = i == len(micro) - 1
            sync = self.ddp.no_sync() if isinstance(self.ddp, DistributedDataParallel) and not last else nullcontext()
            with sync:
                with torch.autocast(device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
                    out = self.forward(x)
                    parts = self.criterion(out, labels, patterns=patterns, boxes=boxes)
                self.scaler.scale(parts.total / per_process).backward()
            totals[0] += parts.total.item()
            totals[1] += parts.margin.item()
            if parts.pred is not None:
                totals[2] += parts.pred.item()
            if out.pattern_logits is not None and patterns is not None:
                totals[3] += (out.pattern_logits.argmax(1) == patterns).sum().item()
                totals[4] += len(patterns)
        if world.distributed and not self.head.sharded:
            for p in self.head.parameters():
                assert p.grad is not None  # every head parameter takes part in the loss
                distributed.all_reduce_sum(p.grad, world).div_(world.size)
        distributed.all_reduce_sum(totals, world)
        n = self.plan.replicas
        loss = totals[0].item() / n
        if not math.isfinite(loss):
            raise NonFiniteLoss(
                f"the loss became {loss} at step {self.step + 1}; stopped without saving it. The last "
                f"good checkpoint is in {checkpoint.checkpoint_dir(self.run)}: resume with a lower "
                "--lr, --clip-grad, or --precision fp32/bf16"
            )
        if cfg.clip_grad > 0:
            self.scaler.unscale_(self.optimizer)
            self.scaler.unscale_(self.head_optimizer)
            clip_global(self.model, self.head, cfg.clip_grad, world)
        lr = self.set_lr()
        self.scaler.step(self.optimizer)
        self.scaler.step(self.head_optimizer)
        self.scaler.update()
        stats: dict[str, float | None] = {
            "loss": loss,
            "loss_id": totals[1].item() / n,
            "loss_pattern": None,
            "pattern_acc": None,
            "lr": lr,
        }
        if needs_targets(cfg.variant):
            stats["loss_pattern"] = totals[2].item() / n
        if totals[4] > 0:
            stats["pattern_acc"] = totals[3].item() / totals[4].item()
        return stats

    @torch.no_grad()
    def validate(self, path: Path, batch: int = 128) -> dict[str, float]:
        """Identity accuracy (nearest class centre) and pattern accuracy on a held-out manifest."""
        manifest = read_manifest(path)
        names = self._identity_names()
        self.model.eval()
        hits = torch.zeros(4, dtype=torch.float64)  # identity hits, identity count, pattern hits, pattern count
        rows: list[dict[str, Any]] = []
        images: list[np.ndarray] = []
        centres = torch.nn.functional.normalize(self.head.full_weight().float(), dim=1)

        def flush() -> None:
            x = to_input(torch.from_numpy(np.stack(images)), self.world.device)
            out = self.model(x)
            emb = torch.nn.functional.normalize(out.embedding.float(), dim=1)
            predicted = (emb @ centres.T).argmax(1).cpu()
            for j, row in enumerate(rows):
                label = names.get(row.get("identity_name", ""))
                if label is not None:
                    hits[0] += int(predicted[j] == label)
                    hits[1] += 1
            if out.pattern_logits is not None:
                H, W = self.plan.image_size
                occluded = np.array([bool(r.get("occluded")) for r in rows])
                boxes = np.array(
                    [[r.get(c) or 0 for c in ("box_x0", "box_y0", "box_x1", "box_y1")] for r in rows], dtype=np.float64
                )
                truth = torch.from_numpy(label_boxes(boxes, occluded, self.cfg.K, H, W)[0].astype(np.int64))
                hits[2] += (out.pattern_logits.argmax(1).cpu() == truth).sum()
                hits[3] += len(rows)
            rows.clear()
            images.clear()

        for sample in iter_ordered(manifest):
            rows.append(sample_meta(sample))
            images.append(decode_face(sample))
            if len(images) == batch:
                flush()
        if images:
            flush()
        self.model.train()
        result = {}
        if hits[1]:
            result["identity_acc"] = hits[0].item() / hits[1].item()
        if hits[3]:
            result["pattern_acc"] = hits[2].item() / hits[3].item()
        return result

    def _identity_names(self) -> dict[str, int]:
        """Training label of each identity name, over every manifest of the mix."""
        import pyarrow as pa
        import pyarrow.compute as pc

        from occgen.manifest import batches, open_samples

        names: dict[str, int] = {}
        for source in self.sources:
            for batch in batches(open_samples(source.manifest.path), ["identity", "identity_name"]):
                codes = pc.dictionary_encode(batch.column(1).combine_chunks())  # names in order of first appearance
                _, first = np.unique(codes.indices.to_numpy(zero_copy_only=False), return_index=True)
                identities = batch.column(0).take(pa.array(first)).to_pylist()
                for name, identity in zip(codes.dictionary.to_pylist(), identities):
                    names.setdefault(name, identity + source.identity_offset)
        return names


def clip_global(model: nn.Module, head: nn.Module, max_norm: float, world: World) -> None:
    """Clip by the norm of all gradients of the step, the sharded classifier's slices included."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    local = [p.grad for p in head.parameters() if p.grad is not None]
    total = torch.stack([g.float().norm() ** 2 for g in grads]).sum() if grads else torch.zeros(())
    head_sq = torch.stack([g.float().norm() ** 2 for g in local]).sum() if local else torch.zeros(())
    if head.sharded:
        head_sq = distributed.all_reduce_sum(head_sq.cpu().double(), world).to(head_sq)
    norm = (total.cpu() + head_sq.cpu()).sqrt()
    scale = max_norm / (norm.item() + 1e-6)
    if scale < 1:
        for g in grads + local:
            g.mul_(scale)


def prepare(
    cfg_overrides: dict[str, Any], config: TrainConfig, resume: bool, world: World
) -> tuple[TrainConfig, dict[str, Any] | None]:
    """Settle the run's settings: a new run fixes its replicas; a resumed one reads its own settings back."""
    run = Path(config.out)
    saved_cfg = run / "config.toml"
    if resume:
        if not saved_cfg.is_file():
            raise UserError(f"--resume: {run} holds no run (no config.toml); start it without --resume")
        cfg = merge_resumed(TrainConfig(**read_toml(saved_cfg)), cfg_overrides)
        state = checkpoint.load(run) if (checkpoint.checkpoint_dir(run) / checkpoint.LATEST).is_file() else None
    else:
        if saved_cfg.is_file() and (checkpoint.checkpoint_dir(run) / checkpoint.LATEST).is_file():
            raise UserError(f"{run} already holds a run; add --resume to continue it, or choose another --out")
        cfg = config
        cfg.replicas = cfg.replicas or world.size
        state = None
    cfg.validate()
    if cfg.replicas % world.size:
        raise UserError(
            f"this run splits each batch into {cfg.replicas} replicas, which {world.size} processes "
            f"cannot share evenly; run it on a divisor of {cfg.replicas} processes"
        )
    if world.main:
        atomic_write(run / "config.toml", write_toml(cfg).encode())
    distributed.barrier(world)
    return cfg, state


def end_step(cfg: TrainConfig, steps_per_epoch: int) -> int:
    total = cfg.epochs * steps_per_epoch
    return min(total, cfg.steps) if cfg.steps else total
