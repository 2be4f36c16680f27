"""``occgen occluders``: what a library will occlude at each scale, and its calibration to the paper."""

from __future__ import annotations

from pathlib import Path

import click

from occgen.cli import main
from occgen.clicommon import parse_size
from occgen.errors import UserError
from occgen.occlude.calibrate import TARGETS
from occgen.occlude.occluders import load_library
from occgen.occlude.plan import parse_scales
from occgen.occlude.render import COMPAT_MODES, Compat
from occgen.report.library import describe, fit_paper, write_fit


@main.command("occluders")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--size", default="112x96", show_default=True, help="Face size as HEIGHTxWIDTH.")
@click.option("--scales", default="1,2,3", show_default=True, help="Scales to report (as build's --scales).")
@click.option(
    "--compat",
    type=click.Choice(COMPAT_MODES),
    default="paper",
    show_default=True,
    help="Geometry, as build's --compat.",
)
@click.option(
    "--fit-paper",
    "fit",
    is_flag=True,
    help="Write catalog.csv and occluder.txt (into FOLDER, or --out) "
    "with sizes that reproduce the paper's 18.76 / 43.09 / 52.00% at s = 1, 2, 3 on 112x96 faces.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="With --fit-paper: write the catalog here instead of into FOLDER.",
)
def occluders_cmd(folder: Path, size: str, scales: str, compat: Compat, fit: bool, out: Path | None) -> None:
    """List each occluder's size and expected occluded area per scale on a face, warn when the library saturates,
    and (--fit-paper) calibrate it to the FROM paper.

    \b
    Example: occgen occluders my-occluders/ --fit-paper
    """
    H, W = parse_size(size)
    library = load_library(folder)
    scale_set = parse_scales(scales)
    report = describe(library, (W, H), scale_set, compat)
    click.echo(
        f"{folder}: {len(library.occluders)} occluders in {len(library.categories)} categories, "
        f"on {H}x{W} (HxW) faces, compat {compat}"
    )
    head = f"{'file':<28} {'pixels':>9} {'size s=1':>9} " + " ".join(f"{'s=' + format(s, 'g'):>7}" for s in scale_set)
    click.echo(head)
    for f in report.files:
        click.echo(
            f"{f.name:<28} {f.native[0]:>4}x{f.native[1]:<4} {f.size[0]:>4}x{f.size[1]:<4} "
            + " ".join(f"{100 * f.area[s]:>6.1f}{'*' if f.whole_face[s] else '%'}" for s in scale_set)
        )
    click.echo(
        f"{'library mean':<48} "
        + " ".join(f"{100 * report.mean[s]:>6.2f}%" for s in scale_set)
        + "   (* = covers the whole face)"
    )
    paper = [f"s={s:g} {100 * t:.2f}%" for s, t in TARGETS.items()]
    click.echo("FROM paper on LFW 112x96: " + ", ".join(paper))
    for warning in report.warnings():
        click.echo(f"Warning: {warning}", err=True)
    if fit:
        if (H, W) != (112, 96):
            raise UserError("--fit-paper calibrates sizes on the paper's 112x96 faces; drop --size")
        sizes, result = fit_paper(library)
        catalog, listing = write_fit(library, sizes, out or folder)
        click.echo(
            f"fitted: area factor {result.factor:.4f}, spread {result.spread:.3f}; expected area "
            + ", ".join(f"s={s:g} {100 * v:.2f}%" for s, v in result.achieved.items())
        )
        click.echo(f"  -> {catalog}, {listing}")
