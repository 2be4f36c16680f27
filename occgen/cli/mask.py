"""``occgen mask``: masked faces (LFW-SM / MaskTheFace style) from mask templates, as WebDataset shards."""

from __future__ import annotations

from pathlib import Path

import click

from occgen.cli import main
from occgen.cli.build import choose_pairs, exit_on_failures, make_set, pair_options, set_options
from occgen.clicommon import shard_output_options
from occgen.errors import UserError
from occgen.occlude.masks import WHERE, parse_colors
from occgen.occlude.run import BuildOptions
from occgen.occlude.sources import open_source
from occgen.runner import Backend, ErrorLimit


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
@pair_options("unmasked", "masked", ", as LFW-SM")
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
    identities_file,
    max_per_identity,
    impostors,
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
    All pairs of a split's test people, on the faces `occgen build --pairs all` takes with the same seed:
    occgen mask --src lfw-112x96 --masks MaskTheFace/masks --pairs all --identities split/test.txt --name sm-test
    """
    limit = ErrorLimit.parse(max_errors)
    if both and not pairs_file:
        raise UserError("--both masks both images of each pair: it needs --pairs pairs.txt")
    if pairs_file and copies != 1:
        raise UserError("--pairs renders one unmasked and one masked copy of each image it needs; drop --copies")
    source, pairs = choose_pairs(open_source(src, root), pairs_file, identities_file, max_per_identity, impostors, seed)
    name = name or f"mask-{Path(src.rstrip('/')).name}"
    if not name or "/" in name or name.startswith("."):
        raise UserError(f"--name {name!r}: give a plain name such as mask-lfw (no '/')")
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
        clean_copies=1 if pairs_file else 0,
        placement="mask",
        landmarks=str(landmarks.absolute()) if landmarks else None,
        colors=parse_colors(colors),
    )
    failure = make_set(source, name, opts, pairs, both, out, manifests, jobs, overwrite, quiet, Backend(), ks, limit)
    exit_on_failures([failure] if failure else [], limit)
