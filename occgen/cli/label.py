"""`occgen label`: occlusion-pattern labels for any K from a manifest's boxes, without re-rendering."""

from __future__ import annotations

from pathlib import Path

import click

from occgen.cli import main
from occgen.errors import UserError
from occgen.label.labels import labels_path, open_manifest, write_labels
from occgen.label.patterns import K_MAX, K_MIN
from occgen.occlude.render import COMPAT_MODES, Compat
from occgen.report.card import refresh_card


@main.command("label")
@click.option(
    "--K",
    "ks",
    type=click.IntRange(K_MIN, K_MAX),
    multiple=True,
    required=True,
    help="Blocks per side (the face is split into K x K blocks); repeat for several K.",
)
@click.option(
    "--compat",
    type=click.Choice(COMPAT_MODES),
    default="paper",
    show_default=True,
    help="'from' reproduces the authors' release bit for bit (last row and column dropped, 1e-10 in the "
    "union) and writes labels-kK-from.parquet.",
)
@click.option(
    "--manifests",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("manifests"),
    show_default=True,
    help="Without MANIFEST: label every manifest in this folder that lacks the labels.",
)
@click.argument("manifest", type=click.Path(path_type=Path), required=False)
def label(ks: tuple[int, ...], compat: Compat, manifests: Path, manifest: Path | None) -> None:
    """Write MANIFEST/labels-kK.parquet (key, pattern, iou, reg_x0..reg_y1) for each K.

    MANIFEST is a folder made by `occgen build` (e.g. manifests/occ-lfw-2.0); its samples are not rewritten.
    Without MANIFEST, every manifest under --manifests that lacks labels for a K gets them.
    """
    if manifest is not None:
        label_manifest(manifest, ks, compat)
        return
    found = sorted(p.parent for p in manifests.glob("*/samples.parquet")) if manifests.is_dir() else []
    if not found:
        raise UserError(
            f"no manifests under {manifests}/ (folders with samples.parquet); pass a MANIFEST folder or --manifests DIR"
        )
    todo = {m: tuple(K for K in dict.fromkeys(ks) if not labels_path(m, K, compat).is_file()) for m in found}
    done = [m.name for m, missing in todo.items() if not missing]
    if done:
        click.echo(f"already labelled for K={','.join(map(str, dict.fromkeys(ks)))}: {', '.join(done)}")
    for m, missing in todo.items():
        if missing:
            click.echo(f"labelling {m} (K={','.join(map(str, missing))})")
            label_manifest(m, missing, compat)
    if len(done) == len(found):
        click.echo("nothing to do")


def label_manifest(manifest: Path, ks: tuple[int, ...], compat: Compat) -> None:
    """Check the manifest once and write (and describe) the labels file of each K, a run of keys at a time."""
    checked = open_manifest(manifest)
    click.echo(
        f"{manifest}: {checked.samples:,} samples ({checked.occluded:,} occluded), "
        f"{checked.height}x{checked.width} (HxW)"
    )
    for K in dict.fromkeys(ks):
        written = write_labels(manifest, K, compat, checked)
        mean = "n/a" if written.mean_iou is None else f"{written.mean_iou:.3f}"
        click.echo(
            f"  K={K}: {written.patterns_used} patterns used, mean IoU {mean} over occluded samples -> {written.path}"
        )
    if refresh_card(manifest):
        click.echo(f"  dataset card updated -> {manifest / 'README.md'}")
