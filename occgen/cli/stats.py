"""``occgen stats``: numbers and plots of a built dataset, from its manifest."""

from __future__ import annotations

from pathlib import Path

import click

from occgen.cli import main
from occgen.report.plots import write_plots
from occgen.report.stats import compute, read_labels, table, tally
from occgen.writer import atomic_write, json_bytes


@main.command("stats")
@click.argument("manifest", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for stats.json and the PNG plots [default: MANIFEST/stats].",
)
def stats_cmd(manifest: Path, out: Path | None) -> None:
    """Occluded area per scale (mean and median, box and pixel), counts per occluder category, identity and
    shard, and pattern histograms of every labels file: stats.json, PNG plots, and a table here.

    \b
    Example: occgen stats manifests/occ-lfw-2.0 --out /tmp/occ-lfw-2.0-stats
    """
    samples = tally(manifest)
    stats = compute(samples, read_labels(manifest))
    out = out or manifest / "stats"
    atomic_write(out / "stats.json", json_bytes(stats))
    plots = write_plots(samples, stats, out, manifest.name)
    click.echo(table(stats))
    click.echo(f"\n-> {out / 'stats.json'}, " + ", ".join(p.name for p in plots))
