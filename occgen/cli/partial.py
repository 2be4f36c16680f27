"""``occgen partial``: PartialLFW-style partial faces and their verification protocols, from aligned faces."""

from __future__ import annotations

from pathlib import Path

import click

from occgen.cli import main
from occgen.clicommon import shard_output_options
from occgen.errors import UserError
from occgen.images import decode_array
from occgen.occlude.sources import open_source, read_input
from occgen.report.card import command_line, write_card
from occgen.report.preview import png_bytes
from occgen.sets.pairs import describe, read_pairs, write_pairs
from occgen.sets.partial import PartialOptions, area_range, build_partial, parts_sheet, template_of
from occgen.writer import atomic_write


@main.command("partial")
@click.option("--src", required=True, help="Aligned faces (112x96 or 112x112), as build's --src.")
@click.option(
    "--root", type=click.Path(file_okay=False, path_type=Path), help="Folder the list file's paths are relative to."
)
@click.option(
    "--pairs",
    "pairs_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="LFW-style pairs list (e.g. LFW view 2's pairs.txt).",
)
@click.option("--centered", is_flag=True, help="Move each part's landmark to the image centre (default: in place).")
@shard_output_options
@click.option("--name", help="Dataset name (default: partial-<source folder name>[-centered]).")
@click.option("--overwrite", is_flag=True, help="Replace an existing build of NAME made with other options.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def partial(
    src, root, pairs_file, centered, jobs, shard_size, fmt, quality, out, manifests, name, overwrite, quiet
) -> None:
    """Crop rectangles around the left eye, right eye, nose and mouth at nine sizes (PartialLFW's geometry scaled
    to our template), fill the rest with grey 128, and write shards, pairs.parquet for the protocols holistic,
    partial-holistic, partial-same and partial-cross, a contact sheet and the dataset card.

    \b
    Example: occgen partial --src lfw-112x96 --pairs pairs.txt --centered
    """
    source = open_source(src, root)
    name = name or f"partial-{Path(src.rstrip('/')).name}{'-centered' if centered else ''}"
    if not name or "/" in name or name.startswith("."):
        raise UserError(f"--name {name!r}: give a plain name such as partial-lfw (no '/')")
    pairs = read_pairs(pairs_file)
    opts = PartialOptions(centered=centered, fmt=fmt, quality=quality, shard_size=shard_size)
    result = build_partial(source, pairs, name, out, manifests, opts, jobs, overwrite, quiet)
    click.echo(result.summary.line("samples") + f" -> {out}/{name}-*.tar, {result.manifest_dir}")
    path = write_pairs(result.manifest_dir, result.rows)
    click.echo(f"  pairs: {describe(result.rows)} -> {path}")
    first = next(r for r in result.rows)["src1"]
    face = decode_array(read_input(source.root, next(i for i in source.items if i.rel == first)), first)
    template = template_of((face.shape[1], face.shape[0]))
    area = area_range(template)
    click.echo(
        f"  kept area: {100 * area['visible_min']:.1f}% to {100 * area['visible_max']:.1f}% of the "
        f"{template.name} crop ({100 * area['reference_min']:.1f}% to {100 * area['reference_max']:.1f}% of "
        "PartialLFW's 160x160 face at the same scale; they report 9% to 73.7%)"
    )
    sheet = result.manifest_dir / "partial.png"
    atomic_write(sheet, png_bytes(parts_sheet(face, centered, f"{name}: {first}, parts x factors 0.10..0.50")))
    click.echo(f"  contact sheet -> {sheet}")
    click.echo(f"  dataset card -> {write_card(result.manifest_dir, command_line())}")
