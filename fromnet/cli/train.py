"""`fromnet train`: occgen shards -> a trained FROM (or baseline) in a run folder, resumable, DDP under torchrun."""

from __future__ import annotations

import shlex
import sys
from contextlib import nullcontext
from pathlib import Path

import click

from fromnet.cli import main
from fromnet.losses import MARGIN_PRESETS
from fromnet.models import BACKBONES, VARIANTS
from fromnet.train.params import CLASSIFIERS, ORDERS, PRECISIONS


def _options(f):
    """Every option defaults to None, so that only what the user typed overrides the config file."""
    opts = [
        click.option(
            "--shards",
            multiple=True,
            help="Manifest folder built by `occgen build`, or plain WebDataset shards made by any tool "
            "('faces-{000000..000099}.tar', 'pipe:COMMAND', s3:// or https:// URLs with fsspec), optionally "
            "SPEC:WEIGHT (relative sampling rate); repeat to mix several.",
        ),
        click.option(
            "--order",
            type=click.Choice(ORDERS),
            help="Data order. permutation: every epoch one seeded permutation of all samples, read by random access "
            "(local tar files). stream: the shards read front to back, --stream-shards of them interleaved, "
            "through a shuffle buffer (seeded, resumable). auto (default): permutation for local files, stream for "
            "pipe: and URLs.",
        ),
        click.option(
            "--stream-buffer",
            type=click.IntRange(1),
            help="Streamed order: shuffle buffer in samples. Default chosen from the data: 8 x batch size x the "
            "mean samples per identity (so a batch meets about as many identities as a full permutation's), "
            "at most 1 GiB of raw samples per training process (its loader workers share it) and one epoch.",
        ),
        click.option(
            "--stream-shards",
            type=click.IntRange(1),
            help="Streamed order: shards interleaved sample by sample (default 4).",
        ),
        click.option(
            "--class-field",
            help="Plain shards without .cls members: the field of each sample's .json that holds its class.",
        ),
        click.option(
            "--config",
            "config",
            help="A shipped config (stage1-baseline, stage2-baseline-aug, stage2-md, "
            "stage2-from) or a TOML file; options given here override it.",
        ),
        click.option("--out", help="Run folder (checkpoints, metrics.jsonl, config.toml). Default runs/run."),
        click.option("--variant", type=click.Choice(list(VARIANTS)), help="Model variant (default from)."),
        click.option("--K", "K", type=click.IntRange(1, 8), help="Occlusion pattern grid (default 5)."),
        click.option("--backbone", type=click.Choice(list(BACKBONES)), help="LResNet-E-IR depth (default r50)."),
        click.option("--width-mult", type=float, help="Channel width multiplier, e.g. 0.25 for a CPU-sized model."),
        click.option("--margin", type=click.Choice(list(MARGIN_PRESETS)), help="Margin loss (default cosface)."),
        click.option("--margin-scale", type=float, help="The margin's scale s (default: the preset's)."),
        click.option("--lam", type=float, help="Weight of the pattern (or box) loss (default 1.0)."),
        click.option("--lambda-wce", type=float, help="Attention variant: weight of L_wCE (default 1.0)."),
        click.option("--lambda-div", type=float, help="Attention variant: weight of L_wDIV (default 1.0)."),
        click.option(
            "--classifier",
            type=click.Choice(CLASSIFIERS),
            help="'sharded' splits the identity centres over the ranks (Partial FC) for huge datasets.",
        ),
        click.option("--batch-size", type=click.IntRange(1), help="Global batch size over all processes (512)."),
        click.option(
            "--micro-batch",
            type=click.IntRange(1),
            help="Samples per forward pass when a whole batch does not fit in memory: gradients of batch/N "
            "micro-batches are accumulated into each step (fixed when the run starts).",
        ),
        click.option("--lr", type=float, help="Base learning rate (0.1 stage 1, 0.01 stage 2)."),
        click.option("--momentum", type=float),
        click.option("--weight-decay", type=float),
        click.option("--epochs", type=click.IntRange(1), help="Epochs of the schedule (40)."),
        click.option("--milestones", help="Epochs at which the lr is divided by 10, comma separated (15,30)."),
        click.option(
            "--steps",
            type=click.IntRange(0),
            help="Stop after this global step; the schedule stays the "
            "same, so --steps 30 then --steps 60 --resume equals --steps 60.",
        ),
        click.option("--seed", type=int, help="Run seed: initial weights, data order, augmentation, dropout."),
        click.option("--init", help="Start from this checkpoint or run folder (stage 2 from stage 1)."),
        click.option(
            "--resume", is_flag=True, help="Continue the run in --out from its newest checkpoint that verifies."
        ),
        click.option(
            "--overwrite", is_flag=True, help="Start again in an --out that holds a run (its files are removed)."
        ),
        click.option(
            "--precision",
            type=click.Choice(PRECISIONS),
            help="fp32, or autocast bf16/fp16 (fp16 with a gradient scaler).",
        ),
        click.option("--channels-last/--no-channels-last", default=None, help="NHWC memory format (default on)."),
        click.option("--compile/--no-compile", "compile_", default=None, help="torch.compile the network."),
        click.option("--clip-grad", type=float, help="Clip the global gradient norm to this (0: off)."),
        click.option(
            "--occlude-online",
            help="Occlude clean shards in the loader with Algorithm 1 at these scales "
            "(e.g. 1:0.5:5) and label them on the fly.",
        ),
        click.option("--clean-ratio", type=click.FloatRange(0, 1), help="With --occlude-online: share left clean."),
        click.option("--occluders", type=click.Path(file_okay=False), help="With --occlude-online: occluder folder."),
        click.option("--flip/--no-flip", default=None, help="Random horizontal flip (default on)."),
        click.option(
            "-j",
            "--workers",
            type=click.IntRange(0),
            help="Loader processes per training process (default: the cores left, at most 4).",
        ),
        click.option(
            "--ckpt-every",
            callback=_parse_every,
            help="Checkpoint every N steps (1000), or every N minutes/hours/seconds: 10m, 1h, 90s.",
        ),
        click.option("--keep", type=click.IntRange(1), help="Checkpoints kept (3)."),
        click.option("--log-every", type=click.IntRange(1), help="Steps between logged metrics (10)."),
        click.option(
            "--log-keys",
            is_flag=True,
            default=None,
            help="Record every trained-on sample key in RUN/keys/ (audits the data order).",
        ),
        click.option("--val", help="Held-out manifest scored at each epoch end (identity and pattern accuracy)."),
        click.option("--device", help="auto (default: this rank's GPU, else CPU), cpu, cuda, cuda:N."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _parse_every(ctx, param, value: str | None) -> dict[str, float] | None:
    """'500' -> every 500 steps; '10m' (or s, h) -> every 10 minutes."""
    if value is None:
        return None
    text = value.strip().lower()
    units = {"s": 1 / 60, "m": 1.0, "h": 60.0}
    try:
        if text[-1:] in units:
            minutes = float(text[:-1]) * units[text[-1]]
            if minutes > 0:
                return {"ckpt_every": 0, "ckpt_minutes": minutes}
        elif int(text) > 0:
            return {"ckpt_every": int(text), "ckpt_minutes": 0.0}
    except ValueError:
        pass
    raise click.BadParameter(f"{value!r}: give steps (500) or a time (10m, 1h, 90s)")


@main.command("train")
@_options
def train_cmd(config, resume, overwrite, compile_, ckpt_every, **given) -> None:
    """Train FROM or a baseline on occgen shards, resumably; under torchrun, on every rank.

    \b
    Examples:
      fromnet train --shards manifests/occ-webface --variant from --K 5 --out runs/from
      fromnet train --config stage2-from --init runs/stage1 --shards manifests/mix-webface --out runs/from
      torchrun --nproc-per-node 8 -m fromnet train --config stage1-baseline --shards manifests/webface
    """
    from fromnet.checkpoint import checkpoints
    from fromnet.train import distributed
    from fromnet.train.loop import fit, open_run, prepare
    from fromnet.train.params import resolve
    from fromnet.train.runfolder import locked, resume_command
    from fromnet.train.stop import StopRequest

    overrides = {k: v for k, v in given.items() if v is not None and v != ()}
    overrides.update(ckpt_every or {})
    if compile_ is not None:
        overrides["compile"] = compile_
    if "shards" in overrides:
        overrides["shards"] = list(overrides["shards"])
    if "milestones" in overrides:
        try:
            overrides["milestones"] = [int(m) for m in overrides["milestones"].split(",") if m.strip()]
        except ValueError:
            raise click.BadParameter(
                "give whole epochs, comma separated, e.g. 15,30", param_hint="--milestones"
            ) from None
    cfg = resolve(config, overrides)
    world = distributed.setup(cfg.device)
    run = Path(cfg.out)
    if world.main:
        click.echo(f"fromnet train -> {run}: reading the data and building the model ...", err=True)
    stop = StopRequest()
    try:
        with stop, locked(run) if world.main else nullcontext():
            cfg, resumed, notes = prepare(overrides, cfg, resume, overwrite, world)
            job, state = open_run(cfg, world, resumed, notes)
            if world.main:
                _intro(job, state.step)
            result = fit(job, state, stop)
            if world.main:
                _summary(job, result)
        if result.stopped:
            if world.main and not checkpoints(run):
                click.echo(f"{stop.name}: stopped before the first step; nothing to resume", err=True)
            elif world.main:
                click.echo(
                    f"{stop.name}: stopped after step {result.step} of {job.end}, checkpoint "
                    f"{result.checkpoint or 'unchanged (no step since the last one)'}; resume with: "
                    f"{resume_command(run, world)}",
                    err=True,
                )
            sys.exit(stop.exit_code)
    except KeyboardInterrupt:
        code = stop.exit_code if stop.requested else 130
        if world.main:
            then = (
                f"the steps since the last checkpoint are lost. Resume with: {resume_command(run, world)}"
                if checkpoints(run)
                else "the run has no checkpoint yet: start it again with --overwrite"
            )
            click.echo(
                f"{stop.name if stop.requested else 'SIGINT'}: stopped at once, without saving; {then}", err=True
            )
        sys.exit(code)
    finally:
        distributed.teardown()


def _intro(job, step: int) -> None:
    plan, cfg = job.plan, job.cfg
    data = " + ".join(
        f"{s.manifest.name} ({s.manifest.samples:,} samples" + (f", x{s.weight:g}" if s.weight != 1 else "") + ")"
        for s in plan.sources
    )
    click.echo(
        f"fromnet train -> {cfg.out}: {cfg.variant} {cfg.backbone} x{cfg.width_mult:g}, "
        f"{plan.image_size[0]}x{plan.image_size[1]}, {plan.num_identities:,} identities, {cfg.precision}, "
        f"{job.world.size} process(es) on {job.world.device}",
        err=True,
    )
    order = (
        f"stream ({plan.stream_shards} shards at once, shuffle buffer {plan.stream_buffer:,})"
        if plan.order == "stream"
        else plan.order
    )
    click.echo(
        f"data: {data}; order: {order}; {plan.steps_per_epoch} steps/epoch of {plan.batch_size} "
        f"({plan.replicas} micro-batch{'es' if plan.replicas > 1 else ''} of {plan.micro_batch}); "
        f"steps {step} -> {job.end}"
        + (f" (the schedule ends at {job.schedule_end})" if job.end < job.schedule_end else ""),
        err=True,
    )


def _summary(job, result) -> None:
    from fromnet.train.data import parse_source
    from fromnet.train.progress import plot_losses
    from fromnet.train.runfolder import resume_command

    last, cfg = result.last, job.cfg
    run = shlex.quote(str(result.run))
    images_s = result.images / result.seconds if result.seconds else 0.0
    wait = result.data_wait / result.seconds if result.seconds else 0.0
    lines = [
        "",
        f"run        {result.run}",
        f"steps      {result.start_step} -> {result.step} (epoch {last.get('epoch', 0)}); the schedule ends at step "
        f"{job.schedule_end:,} (epoch {cfg.epochs})",
        f"time       {result.seconds:.1f} s, {images_s:,.0f} images/s, {wait:.0%} of it waiting for data",
    ]
    if last:
        line = f"last loss  {last['loss']:.4f} (identity {last['loss_id']:.4f}"
        if last.get("loss_pattern") is not None:
            line += f", pattern {last['loss_pattern']:.4f}, pattern accuracy {last['pattern_acc']:.3f}"
        lines.append(line + ")")
    if result.val:
        lines.append("validation " + ", ".join(f"{k} {v:.4f}" for k, v in result.val.items()))
    if result.checkpoint:
        lines.append(f"checkpoint {result.checkpoint}")
    lines.append(f"metrics    {Path(result.run) / 'metrics.jsonl'}")
    if curve := plot_losses(Path(result.run)):
        lines.append(f"loss curve {curve}")
    if result.step < job.end:
        lines.append(f"next       {resume_command(result.run, job.world)}   (continues to step {job.end:,})")
    elif result.step < job.schedule_end:
        lines.append(
            f"next       {resume_command(result.run, job.world)} --steps {job.schedule_end}   (to the schedule's end)"
        )
    faces = shlex.quote(cfg.val or str(parse_source(cfg.shards[0])[0]))
    lines.append(
        f"evaluate   fromnet eval --model {run} --gallery {faces} --probes {faces} --out {run}/eval"
        + ("" if cfg.val else "   (training faces: use held-out ones for real figures)")
    )
    click.echo("\n".join(lines))
