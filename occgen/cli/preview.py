"""``occgen preview``: contact sheets of random samples per scale, read back from the shards."""

from __future__ import annotations

from pathlib import Path

import click

from occgen.cli import main
from occgen.label.patterns import K_MAX, K_MIN
from occgen.report.preview import Overlay, contact_sheets, png_bytes
from occgen.writer import atomic_write


@main.command("preview")
@click.argument("manifest", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for the sheets [default: MANIFEST/preview].",
)
@click.option(
    "-n",
    "--samples",
    "per_group",
    default=24,
    show_default=True,
    type=click.IntRange(min=1),
    help="Random samples per scale.",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Which random samples.")
@click.option("--boxes", is_flag=True, help="Outline each sample's occluded box.")
@click.option(
    "--grid",
    "K",
    type=click.IntRange(K_MIN, K_MAX),
    default=None,
    help="Draw the K x K block grid and shade the sample's labelled pattern.",
)
@click.option("--zoom", default=2, show_default=True, type=click.IntRange(1, 8), help="Enlarge each face this much.")
@click.option("--cols", default=8, show_default=True, type=click.IntRange(min=1), help="Faces per row.")
def preview(
    manifest: Path, out: Path | None, per_group: int, seed: int, boxes: bool, K: int | None, zoom: int, cols: int
) -> None:
    """Write one PNG contact sheet per scale (sheet-s=2.png, ..., sheet-clean.png) of MANIFEST's samples.

    \b
    Example: occgen preview manifests/occ-lfw-2.0 --boxes --grid 5 --out /tmp/preview
    """
    out = out or manifest / "preview"
    for group, image in contact_sheets(manifest, per_group, seed, Overlay(boxes, K), zoom, cols).items():
        path = out / f"sheet-{group}.png"
        atomic_write(path, png_bytes(image))
        click.echo(f"{group}: {path}")
