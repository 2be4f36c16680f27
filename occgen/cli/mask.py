"""``occgen mask``: masked faces (LFW-SM / MaskTheFace style) from mask templates, as WebDataset shards."""

from __future__ import annotations

from pathlib import Path

import click

from occgen.cli import main
from occgen.cli.build import exit_on_failures, make_set, set_options
from occgen.clicommon import shard_output_options
from occgen.errors import UserError
from occgen.occlude.masks import WHERE, parse_colors
from occgen.occlude.run import BuildOptions
from occgen.occlude.sources import open_source
from occgen.runner import Backend, ErrorLimit
from occgen.sets.pairs import read_pairs


@main.command("mask", epilog=WHERE)
@click.option("--src", required=True, help="Faces: aligned crops (112x96, 112x112), or raw photos with --landmarks.")
@click.option(
    "--root", type=click.Path(file_okay=False, path_type=Path), help="Folder the list file's paths are relative to."
)
@click.option(
    "--masks",
    "masks_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Mask templates in the MaskTheFace layout: masks.cfg (six anchors per template) and its PNGs.",
)
@click.option("--types", help="Only these mask types (comma separated, e.g. surgical,N95); default: every type.")
@click.option(
    "--colors",
    help="Recolour each mask with one of these colours, drawn per sample (names or #rrggbb, comma separated; "
    "'original' keeps the template's own).",
)
@click.option("--copies", default=1, show_default=True, type=click.IntRange(min=1), help="Samples per input image.")
@click.option(
    "--clean-ratio", default=0.0, show_default=True, type=click.FloatRange(0, 1), help="Fraction left unmasked."
)
@click.option(
    "--pairs",
    "pairs_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="LFW-style pairs list: a verification set, first image unmasked and second masked (N-O, as LFW-SM), "
    "with pairs.parquet beside the manifest.",
)
@click.option("--both", is_flag=True, help="With --pairs: mask both images of every pair (O-O).")
@click.option("--seed", default=0, show_default=True, type=int, help="Run seed; a sample's choices follow (seed, key).")
@shard_output_options
@set_options
@click.option("--name", help="Dataset name (default: mask-<source folder name>).")
def mask(
    src,
    root,
    masks_dir,
    types,
    colors,
    landmarks,
    copies,
    clean_ratio,
    pairs_file,
    both,
    seed,
    jobs,
    shard_size,
    fmt,
    quality,
    out,
    manifests,
    name,
    ks,
    overwrite,
    quiet,
    max_errors,
) -> None:
    """Put a face mask on every face: a template of a type drawn per sample, its view (front, left, right) chosen
    from the head's yaw, warped through six anchor points onto the nose bridge, cheeks, jaw and chin that the
    five landmarks give. Writes shards, the manifest (mask box, type, view, pixel coverage), pairs, a preview
    sheet and the dataset card, like `occgen build`; faces whose landmarks are unusable are recorded.

    \b
    Example: occgen mask --src lfw-112x96 --masks MaskTheFace/masks --pairs pairs.txt --name lfw-sm
    """
    limit = ErrorLimit.parse(max_errors)
    if both and not pairs_file:
        raise UserError("--both masks both images of each pair: it needs --pairs pairs.txt")
    if pairs_file and copies != 1:
        raise UserError("--pairs renders one unmasked and one masked copy of each image it needs; drop --copies")
    source = open_source(src, root)
    name = name or f"mask-{Path(src.rstrip('/')).name}"
    if not name or "/" in name or name.startswith("."):
        raise UserError(f"--name {name!r}: give a plain name such as mask-lfw (no '/')")
    pairs = read_pairs(pairs_file) if pairs_file else None
    opts = BuildOptions(
        scales=(1.0,),
        copies=copies,
        clean_ratio=clean_ratio,
        seed=seed,
        fmt=fmt,
        quality=quality,
        shard_size=shard_size,
        occluders=str(masks_dir),
        categories=tuple(sorted(t.strip() for t in types.split(",") if t.strip())) if types else None,
        clean_copies=1 if pairs else 0,
        placement="mask",
        landmarks=str(landmarks.absolute()) if landmarks else None,
        colors=parse_colors(colors),
    )
    failure = make_set(source, name, opts, pairs, both, out, manifests, jobs, overwrite, quiet, Backend(), ks, limit)
    exit_on_failures([failure] if failure else [], limit)
