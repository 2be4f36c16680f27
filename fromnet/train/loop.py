"""The training loop: shards -> FROM (or a baseline) -> checkpoints, on one CPU, one GPU or many under torchrun.

A step is defined by the data, not by the processes (see fromnet.train.step), so a run can stop anywhere and
resume on another number of processes, and compute the same losses it would have computed uninterrupted. Here:
settling a run's settings, building its pieces, and the loop that feeds steps, logs, validates and checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from fromnet.checkpoint import ModelSpec
from fromnet.checkpoint import checkpoints as checkpoint_files
from fromnet.models import VARIANTS
from fromnet.shards import Manifest, counted, image_size, open_shards
from fromnet.train import checkpoints, distributed, memory, runfolder
from fromnet.train.data import (
    OnlineOcclusion,
    Source,
    StreamPlan,
    TrainStream,
    build_index_cache,
    build_label_cache,
    index_cache_path,
    parse_source,
    resolve_order,
    served,
    shards_digest,
    stream_buffer,
)
from fromnet.train.distributed import World
from fromnet.train.order import STREAM_SHARDS
from fromnet.train.params import TrainConfig, merge_resumed, read_toml, write_toml
from fromnet.train.progress import KeyLog, Meter, Progress
from fromnet.train.runfolder import resume_command
from fromnet.train.state import TrainState, build_state, load_init
from fromnet.train.step import NonFiniteLoss, StepSettings, lr_factor, train_step
from fromnet.train.stop import StopRequest
from fromnet.train.validate import validate
from occgen.errors import UserError
from occgen.occlude.plan import parse_scales
from occgen.writer import atomic_write, json_bytes


@dataclass
class Run:
    """A run's fixed parts: settings, processes, data and the notes to show before it starts."""

    cfg: TrainConfig
    world: World
    sources: tuple[Source, ...]
    plan: StreamPlan
    notes: list[str] = field(default_factory=list)

    @property
    def folder(self) -> Path:
        return Path(self.cfg.out)

    @property
    def spec(self) -> ModelSpec:
        return ModelSpec(self.cfg.variant, self.cfg.K, self.plan.image_size, self.cfg.backbone, self.cfg.width_mult)

    @property
    def schedule_end(self) -> int:
        return self.cfg.epochs * self.plan.steps_per_epoch

    @property
    def end(self) -> int:
        """Where this invocation stops: the schedule's end, or --steps if that comes first."""
        return min(self.schedule_end, self.cfg.steps) if self.cfg.steps else self.schedule_end


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
    stopped: int = 0  # the signal that stopped the run early, if one did


def needs_targets(variant: str) -> bool:
    return VARIANTS[variant].predictor is not None


def make_sources(cfg: TrainConfig, run: Path, world: World) -> tuple[Source, ...]:
    """The manifests of the mix, with identity offsets, sample indexes (the permutation order reads by random
    access) and (when the variant predicts patterns) label caches."""
    manifests, weights = [], []
    for text in cfg.shards:
        path, weight = parse_source(text)
        manifest = open_shards(path)
        manifests.append(plain_shards(manifest, cfg, run / "cache") if manifest.path is None else manifest)
        weights.append(weight)
    order = resolve_order(cfg.order, manifests)
    sources, offset = [], 0
    for manifest, weight in zip(manifests, weights):
        labels = None
        if needs_targets(cfg.variant) and not cfg.occlude_online:
            digest = hashlib.blake2b(str(manifest.folder.resolve()).encode(), digest_size=4).hexdigest()
            labels = str(run / "cache" / f"{manifest.name}-{digest}-k{cfg.K}.npy")
        index = str(index_cache_path(manifest, run / "cache")) if order == "permutation" else None
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


def plain_shards(manifest: Manifest, cfg: TrainConfig, cache: Path) -> Manifest:
    """Plain WebDataset shards ready to train on, with their sample and identity counts from one pass over them
    (pipes and URLs streamed), kept in the run's cache so that a resumed run does not pass again."""
    if needs_targets(cfg.variant) and not cfg.occlude_online:
        raise UserError(
            f"{manifest.name}: plain WebDataset shards carry no occlusion-pattern labels, which --variant "
            f"{cfg.variant} trains on: give --occlude-online SCALES (e.g. 1:0.5:5) to occlude and label them in the "
            "loader, or train --variant baseline"
        )
    counts = cache / f"{manifest.name}-{shards_digest(manifest)}.counts.json"
    if counts.is_file():
        saved = json.loads(counts.read_text())
        shards = tuple(
            replace(s, samples=n, size=b) for s, n, b in zip(manifest.shards, saved["samples"], saved["bytes"])
        )
        return replace(manifest, shards=shards, num_identities=saved["identities"])
    manifest = counted(manifest, cfg.class_field or None, max(cfg.workers, 1))
    found = {
        "samples": [s.samples for s in manifest.shards],
        "bytes": [s.size for s in manifest.shards],
        "identities": manifest.num_identities,
    }
    atomic_write(counts, json_bytes(found))
    return manifest


def make_plan(cfg: TrainConfig, sources: tuple[Source, ...]) -> StreamPlan:
    sizes = {image_size(s.manifest) for s in sources}
    if len(sizes) != 1:
        raise UserError(f"the manifests hold faces of different sizes {sorted(sizes)}; train on one size")
    online = None
    if cfg.occlude_online:
        online = OnlineOcclusion(parse_scales(cfg.occlude_online), cfg.clean_ratio, cfg.occluders or None)
    plan = StreamPlan(
        sources,
        cfg.batch_size,
        cfg.replicas,
        cfg.seed,
        sizes.pop(),
        cfg.K,
        needs_targets(cfg.variant),
        cfg.flip,
        online,
        cfg.class_field or None,
        order=resolve_order(cfg.order, (s.manifest for s in sources)),
    )
    if plan.order == "permutation":
        return plan
    return replace(
        plan,
        stream_buffer=cfg.stream_buffer or stream_buffer(plan),
        stream_shards=cfg.stream_shards or STREAM_SHARDS,
    )


def settle_order(cfg: TrainConfig, plan: StreamPlan) -> None:
    """Record the order a new run took, defaults resolved, in its settings: a resumed run reads the same order even
    if a later version chose other defaults."""
    cfg.order = plan.order
    if plan.order == "stream":
        cfg.stream_buffer, cfg.stream_shards = plan.stream_buffer, plan.stream_shards


def prepare(
    overrides: dict[str, Any], config: TrainConfig, resume: bool, overwrite: bool, world: World
) -> tuple[TrainConfig, dict[str, Any] | None, list[str]]:
    """Settle the run's settings under its folder's lock: a new run fixes its replicas (and refuses a folder
    that holds another run unless told to overwrite it); a resumed one reads its settings and checkpoint back.
    Returns the settings, the checkpoint to resume from, and notes for the user."""
    run = Path(config.out)
    notes = []
    if resume and overwrite:
        raise UserError("--resume continues the run in --out, --overwrite starts it again: give one of them")
    if world.main and (removed := runfolder.remove_leftovers(run)):
        notes.append(f"removed {removed} temporary file(s) a killed run left in {run}")
    if resume:
        saved_cfg = run / "config.toml"
        if not saved_cfg.is_file():
            raise UserError(f"--resume: {run} holds no run (no config.toml); start it without --resume")
        cfg = merge_resumed(TrainConfig(**read_toml(saved_cfg)), overrides)
        state, skipped = checkpoints.load_for_resume(run, world)
        notes += skipped
        if world.main and (dropped := runfolder.rewind(run, int(state["step"]))):
            notes.append(f"dropped {dropped} log line(s) of steps after the checkpoint (they will be run again)")
    else:
        if found := runfolder.holds_run(run):
            if not overwrite:
                raise UserError(
                    f"{run} already holds a run ({', '.join(found)}); add --resume to continue it, --overwrite "
                    "to start it again, or choose another --out"
                )
            if world.main:
                runfolder.clear(run)
                notes.append(f"--overwrite: removed the earlier run's {', '.join(found)} from {run}")
        cfg = config
        cfg.validate()
        if cfg.micro_batch:
            cfg.replicas = cfg.batch_size // cfg.micro_batch
        cfg.replicas = cfg.replicas or world.size
        state = None
    cfg.validate()
    if cfg.replicas % world.size:
        raise UserError(
            f"this run splits each batch into {cfg.replicas} micro-batches, which {world.size} processes "
            f"cannot share evenly; run it on a divisor of {cfg.replicas} processes"
            + (", or choose another --micro-batch" if cfg.micro_batch else "")
        )
    distributed.barrier(world)
    return cfg, state, notes


def open_run(
    cfg: TrainConfig, world: World, resumed: dict[str, Any] | None, notes: list[str]
) -> tuple[Run, TrainState]:
    """Read the data, check that a new run's step fits in memory, and build (or restore) its state."""
    sources = make_sources(cfg, Path(cfg.out), world)
    run = Run(cfg, world, sources, make_plan(cfg, sources), notes)
    if resumed is None:
        check_memory(run)
        settle_order(cfg, run.plan)
    if world.main:
        atomic_write(run.folder / "config.toml", write_toml(cfg).encode())
    state = build_state(cfg, world, run.spec, run.plan.num_identities)
    if resumed is not None:
        state.restore(resumed, world.device)
    elif cfg.init:
        run.notes.append(load_init(state.model, state.head, cfg.init, cfg.variant))
    elif cfg.variant != "baseline":
        run.notes.append(
            f"note: the paper starts the '{cfg.variant}' variant (stage 2) from a stage-1 Baseline, not from scratch: "
            "train one with `fromnet train --config stage1-baseline --out runs/stage1 ...`, then add --init runs/stage1"
        )
    return run, state


def check_memory(run: Run) -> None:
    """Refuse a new run whose step would not fit in this process's memory, saying which --micro-batch would."""
    cfg, world = run.cfg, run.world
    micro = cfg.batch_size // cfg.replicas
    need = memory.step_memory(run.spec, run.plan.num_identities, cfg.precision)
    free = memory.free_bytes(world.device)
    if need.total(micro) <= memory.USABLE * free:
        return
    what = (
        f"a step of {cfg.variant} {cfg.backbone} x{cfg.width_mult:g} on micro-batches of {micro} ({cfg.precision}) "
        f"needs about {memory.gib(need.total(micro))} and {world.device} has {memory.gib(free)} free"
    )
    fit = memory.fitting_micro_batch(need, cfg.batch_size // world.size, free)
    if fit is None:
        raise UserError(
            f"{what}, too little even for one sample at a time: choose a smaller --backbone or --width-mult"
        )
    raise UserError(
        f"{what}: pass --micro-batch {fit} (gradient accumulation, same global batch of {cfg.batch_size}), "
        "or a smaller --batch-size, --backbone or --width-mult"
    )


def make_loader(run: Run, start: int, end: int) -> torch.utils.data.DataLoader:
    world, plan, cfg = run.world, run.plan, run.cfg
    per_process = plan.replicas // world.size
    mine = [world.rank * per_process + i for i in range(per_process)]
    stream = TrainStream(plan, mine, start, end, log_keys=cfg.log_keys)
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world.size))
    workers = cfg.workers if cfg.workers >= 0 else memory.default_workers(local)
    return torch.utils.data.DataLoader(
        stream,
        batch_size=None,
        num_workers=workers,
        pin_memory=world.device.type == "cuda",
        prefetch_factor=4 if workers else None,
    )


def consensus(world: World, stop: StopRequest, clock_due: bool = False) -> tuple[bool, bool]:
    """(stop, checkpoint now) as every rank sees it: a signal or a clock may reach the ranks at different steps.
    A rank that got no signal adopts another's, so that every rank exits the same way."""
    if not world.distributed:
        return stop.requested, clock_due
    mine = torch.tensor([[float(stop.signum), float(clock_due)]], dtype=torch.float64)
    signum, due = distributed.all_gather_cat(mine, world).max(dim=0).values.tolist()
    if signum and not stop.requested:
        stop.signum = int(signum)
    return bool(signum), bool(due)


def fit(run: Run, state: TrainState, stop: StopRequest) -> Result:
    """Steps from `state.step` to `run.end`, or until `stop` is requested (then the step finishes and is saved)."""
    cfg, world, plan = run.cfg, run.world, run.plan
    start, end = state.step, run.end
    progress = Progress(run.folder, start, end, world.main)
    for note in run.notes:
        progress.note(note)
    settings = StepSettings(cfg.seed, plan.replicas, cfg.precision, cfg.clip_grad, needs_targets(cfg.variant))
    per_process = plan.replicas // world.size
    result = Result(run.folder, start, start, 0.0, 0, 0.0)
    window, total = Meter(), Meter()
    began = last_save = time.perf_counter()
    loader = make_loader(run, start, end)
    progress.status(f"step {start}/{end}: starting {loader.num_workers or 'no'} loader worker(s), first batch ...")
    batches = served(iter(loader))
    state.model.train()
    saved = start
    try:
        with KeyLog(run.folder, world.rank, cfg.log_keys) as keys:
            while state.step < end:
                clock = bool(cfg.ckpt_minutes) and time.perf_counter() - last_save >= 60 * cfg.ckpt_minutes
                stopping, timely = consensus(world, stop, clock)  # the one check per step that every rank shares
                if (stopping or timely) and saved != state.step:
                    result.checkpoint, saved, last_save = save(run, state), state.step, time.perf_counter()
                if stopping:
                    break
                tick = time.perf_counter()
                micro = next_micro_batches(run, state.step, batches, per_process)
                waited = time.perf_counter() - tick
                stats = _step(run, state, micro, settings)
                keys.write(state.step - 1, micro)
                for meter in (window, total):
                    meter.add(plan.batch_size, waited, time.perf_counter() - tick)
                step, epoch_end = state.step, state.step % plan.steps_per_epoch == 0
                record = {"step": step, "epoch": (step - 1) // plan.steps_per_epoch, **stats, **window.rates()}
                if step % cfg.log_every == 0 or step == end or epoch_end:
                    progress.log(record)
                    result.last, window = record, Meter()
                elif step == start + 1:
                    progress.show(record)  # something to see before the first logged step
                if epoch_end and cfg.val:
                    result.val = validate(state, Path(cfg.val), run.sources, cfg.K, world.device)
                    log_validation(progress, run, step, record["epoch"], result.val)
                if (cfg.ckpt_every and step % cfg.ckpt_every == 0) or epoch_end or step == end:
                    result.checkpoint, saved, last_save = save(run, state), step, time.perf_counter()
    finally:
        del batches  # stops the loader workers now, not at interpreter exit
        progress.close()
    result.stopped = stop.signum if stop.requested and state.step < end else 0
    result.step, result.seconds = state.step, time.perf_counter() - began
    result.images, result.data_wait = total.images, total.wait
    return result


def next_micro_batches(run: Run, step: int, batches: Iterator[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """This process's micro-batches of the next step; bad data stops the run with a message that says how to go
    on once it is fixed."""
    try:
        return [next(batches) for _ in range(count)]
    except UserError as exc:
        then = (
            f"continue from the last checkpoint with: {resume_command(run.folder, run.world)}"
            if checkpoint_files(run.folder)
            else "start it again with --overwrite"
        )
        raise UserError(f"{exc}. The run stopped at step {step}; once the data is fixed, {then}") from None


def save(run: Run, state: TrainState) -> Path | None:
    contents = state.to_checkpoint(run.cfg, run.plan.steps_per_epoch, plan_position(run.plan))
    return checkpoints.save(state, contents, run.folder, run.cfg.keep, run.world)


def _step(run: Run, state: TrainState, micro: list[dict[str, Any]], settings: StepSettings) -> dict[str, Any]:
    lr = run.cfg.lr * lr_factor(state.step, run.cfg.milestones, run.plan.steps_per_epoch)
    try:
        return train_step(state, micro, lr, settings, run.world)
    except NonFiniteLoss as exc:
        raise NonFiniteLoss(
            f"{exc}; stopped without saving it. The last good checkpoint is in {run.folder / 'checkpoints'}: "
            "resume with a lower --lr, --clip-grad, or --precision fp32/bf16"
        ) from None


def plan_position(plan: StreamPlan) -> dict[str, Any]:
    """What a checkpoint records of the data order, to check a resume reads the same stream."""
    return {
        "replicas": plan.replicas,
        "order": plan.order,
        **(
            {"stream_buffer": plan.stream_buffer, "stream_shards": plan.stream_shards} if plan.order == "stream" else {}
        ),
        "seed": plan.seed,
        "steps_per_epoch": plan.steps_per_epoch,
    }


def log_validation(progress: Progress, run: Run, step: int, epoch: int, val: dict[str, float]) -> None:
    if not run.world.main:
        return
    progress.note(f"val after epoch {epoch}: " + ", ".join(f"{k} {v:.4f}" for k, v in val.items()))
    with open(run.folder / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": step, **{f"val_{k}": v for k, v in val.items()}}) + "\n")
