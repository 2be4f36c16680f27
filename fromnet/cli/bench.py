"""`fromnet bench`: training-step throughput on synthetic tensors, and loader throughput on real shards."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click
import torch

from fromnet.cli import main
from fromnet.models import BACKBONES, VARIANTS
from fromnet.train.params import PRECISIONS


@main.group("bench")
def bench() -> None:
    """Measure training and loading throughput on this machine."""


@bench.command("train")
@click.option("--variant", type=click.Choice(list(VARIANTS)), default="from", show_default=True)
@click.option("--backbone", type=click.Choice(list(BACKBONES)), default="r50", show_default=True)
@click.option("--width-mult", type=float, default=1.0, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=16, show_default=True)
@click.option(
    "--precision",
    "precisions",
    multiple=True,
    type=click.Choice(PRECISIONS),
    help="Precisions to time (repeatable; default fp32 and bf16).",
)
@click.option("--compile", "compile_", is_flag=True, help="Also time torch.compile (slow to compile on CPU).")
@click.option(
    "--classes",
    type=click.IntRange(2),
    default=10572,
    show_default=True,
    help="Identities in the classifier (10,572: CASIA-WebFace).",
)
@click.option("--steps", type=click.IntRange(1), default=5, show_default=True, help="Timed steps per configuration.")
@click.option("--warmup", type=click.IntRange(0), default=1, show_default=True)
@click.option("--device", default="cuda" if torch.cuda.is_available() else "cpu", show_default=True)
def bench_train(variant, backbone, width_mult, batch_size, precisions, compile_, classes, steps, warmup, device):
    """Forward, loss, backward and SGD step on a fixed random batch, per precision and memory layout."""
    import statistics

    from fromnet.train.bench import TrainStep, bench_steps, step_configs

    dev = torch.device(device)
    configs = step_configs(list(precisions or ("fp32", "bf16")), compile_)
    click.echo(
        f"torch {torch.__version__} on {dev} ({torch.get_num_threads()} threads): {variant} {backbone} "
        f"x{width_mult:g}, batch {batch_size}, {classes} classes; best of {steps} steps after {warmup} warm-up"
    )
    bench_steps(
        configs, lambda cfg: TrainStep(cfg, variant, backbone, width_mult, batch_size, classes, 5, dev), steps, warmup
    )
    simple = min(configs[0].times)
    for cfg in configs:
        b = min(cfg.times)
        click.echo(
            f"  {cfg.name:<30} {b:8.4f} s/step {batch_size / b:9.1f} img/s  x{simple / b:4.2f} vs simple "
            f"(median {statistics.median(cfg.times):.4f} s)"
        )


@bench.command("loader")
@click.option(
    "--shards",
    "manifest",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="A manifest built by `occgen build`.",
)
@click.option(
    "-j",
    "--workers",
    "workers",
    multiple=True,
    type=click.IntRange(0),
    help="Loader processes to time (repeatable; default 1 and 2).",
)
@click.option("--batch-size", type=click.IntRange(1), default=256, show_default=True)
@click.option("--batches", type=click.IntRange(1), default=20, show_default=True, help="Timed batches per run.")
@click.option(
    "--K",
    "K",
    type=click.IntRange(0, 8),
    default=5,
    show_default=True,
    help="Join pattern labels for this K (0 skips labels).",
)
@click.option(
    "--order",
    "orders",
    multiple=True,
    type=click.Choice(["permutation", "stream"]),
    help="Data orders to time, as `fromnet train --order` reads them (repeatable; default permutation).",
)
def bench_loader(manifest, workers, batch_size, batches, K, orders):
    """fromnet's loader (decode, flip, labels, batching) against a plain PIL decode loop, in images/s."""
    from fromnet.shards import read_manifest
    from fromnet.train.bench import loader_throughput, plain_pil_loop

    m = read_manifest(manifest)
    images = batch_size * batches
    simple = plain_pil_loop(m, images, batch_size)
    click.echo(f"{m.name}: {m.samples:,} samples; {batches} batches of {batch_size} after the first")
    click.echo(f"  plain PIL loop, 1 process                       {simple:9,.0f} img/s")
    with tempfile.TemporaryDirectory() as tmp:
        for order in orders or ("permutation",):
            for w in workers or (1, 2):
                rate, first = loader_throughput(m, w, batches, batch_size, K or None, Path(tmp) / "labels.npy", order)
                per = rate / max(w, 1)
                click.echo(
                    f"  fromnet loader, {order:<11} {w} worker(s) {rate:9,.0f} img/s ({per:,.0f} per worker, "
                    f"x{rate / simple:.2f} vs plain; first batch after {first:.1f} s)"
                )


@bench.command("order")
@click.option(
    "--shards",
    "shards",
    required=True,
    multiple=True,
    help="MANIFEST[:WEIGHT], as for `fromnet train` (repeatable).",
)
@click.option("--batch-size", type=click.IntRange(1), default=512, show_default=True, help="Global batch size.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--epoch", type=click.IntRange(0), default=0, show_default=True)
@click.option(
    "--stream-buffer", type=click.IntRange(1), help="The streamed order's shuffle buffer (default: from the data)."
)
@click.option("--stream-shards", type=click.IntRange(1), help="The streamed order's shards at once (default 4).")
def bench_order(shards, batch_size, seed, epoch, stream_buffer, stream_shards):
    """How well one epoch of training mixes identities: distinct identities per batch, and how many batches an
    identity's samples spread over, for the samples as stored, fromnet train's orders (the permutation read by
    random access into local tars; the streamed order of pipes and URLs) and a full permutation."""
    import numpy as np

    from fromnet.shards import read_manifest
    from fromnet.train import data
    from fromnet.train.bench import order_stats
    from fromnet.train.order import STREAM_SHARDS

    sources = [(read_manifest(path), weight) for path, weight in map(data.parse_source, shards)]
    offsets = np.cumsum([0] + [m.num_identities for m, _ in sources])
    plan = data.StreamPlan(
        tuple(data.Source(m, w, int(o)) for (m, w), o in zip(sources, offsets)), batch_size, 1, seed, (0, 0)
    )
    buffer, lanes = stream_buffer or data.stream_buffer(plan), stream_shards or STREAM_SHARDS
    rows = order_stats(sources, batch_size, seed, epoch, buffer, lanes)
    samples = sum(m.samples for m, _ in sources)
    identities = sum(m.num_identities for m, _ in sources)
    steps = len(rows[0].per_batch)
    click.echo(
        f"{' + '.join(m.name for m, _ in sources)}: {samples:,} samples of {identities:,} identities; "
        f"epoch {epoch}: {steps} batches of {batch_size}; streamed: {lanes} shards at once, shuffle buffer "
        f"{buffer:,}" + ("" if stream_buffer else " (from the data)")
    )
    click.echo(f"  {'order':<18} {'identities/batch':>17} {'(min-max)':>11}   {'batches an identity is in':>26}")
    for row in rows:
        low, high = int(row.per_batch.min()), int(row.per_batch.max())
        click.echo(
            f"  {row.name:<18} {row.per_batch.mean():17.1f} {f'({low}-{high})':>11}   "
            f"{np.mean(row.spread):15.1f} of {steps} (median {np.median(row.spread):g})"
        )
