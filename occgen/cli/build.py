"""``occgen build``: aligned faces + occluders -> WebDataset shards + Parquet manifests."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import pyarrow.parquet as pq

from occgen.cli import main
from occgen.cli.label import label_manifest
from occgen.clicommon import parse_size, shard_output_options
from occgen.errors import UserError
from occgen.label.patterns import K_MAX, K_MIN
from occgen.occlude.anchors import GROUPS
from occgen.occlude.plan import parse_scales
from occgen.occlude.render import COMPAT_MODES
from occgen.occlude.run import BuildOptions, build
from occgen.occlude.sources import Source, open_source
from occgen.report.card import command_line, write_card
from occgen.report.preview import write_preview
from occgen.runner import BACKENDS, Backend, ErrorLimit, sigterm_interrupts
from occgen.sets.allpairs import AllPairsOptions
from occgen.sets.allpairs import all_pairs as all_pairs_set
from occgen.sets.pairs import (
    Pair,
    bin_pairs,
    pair_rows,
    read_pairs,
    resolve,
    write_pairs,
    write_pairs_table,
)
from occgen.sets.pairs import (
    describe as describe_pairs,
)
from occgen.sets.pairs import (
    picks as pair_picks,
)
from occgen.sets.regions import REGIONS, group_categories
from occgen.sets.split import read_identity_list, select_identities


def set_options(f):
    """The options `occgen build` and `occgen mask` share: landmarks, labels, resuming and error limits."""
    options = [
        click.option(
            "--landmarks",
            type=click.Path(dir_okay=False, path_type=Path),
            help="Raw photos' five landmarks (a landmark file, or the align.parquet `occgen align` wrote) for "
            "placements from the face (masks, anchored, region groups); without it the faces are taken as aligned "
            "crops (112x96, 112x112), whose landmarks are the crop template's.",
        ),
        click.option(
            "--K",
            "ks",
            type=click.IntRange(K_MIN, K_MAX),
            multiple=True,
            help="Also write occlusion-pattern labels for K x K blocks (repeatable), as `occgen label` does.",
        ),
        click.option("--overwrite", is_flag=True, help="Replace an existing set NAME made with other options."),
        click.option("-q", "--quiet", is_flag=True, help="No progress bar."),
        click.option(
            "--max-errors",
            default="1%",
            show_default=True,
            help="Exit with status 1 when more inputs than this (a count N, or P% of the inputs) cannot be used "
            "(unreadable, unusable landmarks); the set is finished and kept either way.",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


#: --max-per-identity's default: the one value that may be given without --pairs all.
MAX_PER_IDENTITY = 10


def pair_options(clean: str, occluded: str, note: str = ""):
    """The options that choose a set's people and pairs (--pairs, --identities, --max-per-identity, --impostors):
    `occgen build` and `occgen mask` share them, so with one seed both choose the same faces and the same pairs
    (an Algorithm 1 set and a masked set of the same test people pair up face for face)."""
    options = [
        click.option(
            "--pairs",
            "pairs_file",
            help=f"LFW-style pairs list: build a verification set of the images it names, first image {clean} and "
            f"second {occluded} (N-O{note}), and write pairs.parquet beside the manifest. 'all': every genuine and "
            "impostor pair among the source's faces (use --identities to take a split's test people).",
        ),
        click.option(
            "--identities",
            "identities_file",
            type=click.Path(dir_okay=False, path_type=Path),
            help="Only these people of --src: a file of identity names, one a line (train.txt or test.txt of "
            "`occgen split`). Samples keep the keys and images they have in a build of the whole source.",
        ),
        click.option(
            "--max-per-identity",
            default=MAX_PER_IDENTITY,
            show_default=True,
            type=click.IntRange(min=1),
            help="With --pairs all: at most this many images of a person (a seeded choice).",
        ),
        click.option(
            "--impostors",
            type=click.IntRange(min=1),
            help="With --pairs all: a seeded sample of this many impostor pairs (default: all of them).",
        ),
    ]

    def decorate(f):
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


def choose_pairs(
    source: Source,
    pairs_file: str | None,
    identities_file: Path | None,
    max_per_identity: int,
    impostors: int | None,
    seed: int,
) -> tuple[Source, list[Pair] | AllPairsOptions | None]:
    """What `pair_options` ask for: the source narrowed to --identities, and the pairs (a list read from the file,
    the all-pairs options, or None for no pairs set)."""
    if identities_file is not None:
        source = select_identities(source, read_identity_list(identities_file))
    if pairs_file == "all":
        return source, AllPairsOptions(max_per_identity, impostors, seed)
    if impostors is not None or max_per_identity != MAX_PER_IDENTITY:
        raise UserError("--impostors and --max-per-identity shape all-pairs sets: they go with --pairs all")
    return source, read_pairs(Path(pairs_file)) if pairs_file else None


def _names(text: str | None) -> tuple[str, ...] | None:
    return tuple(sorted(n.strip() for n in text.split(",") if n.strip())) if text else None


@main.command("build")
@click.option(
    "--src",
    required=True,
    help="Aligned faces: an <identity>/<image> folder, a 'path label' list file "
    "(with --root), an insightface RecordIO set (folder with train.rec + train.idx, e.g. faces_webface_112x112), "
    "an insightface verification set (lfw.bin, with --pairs-from-bin), a registered name (webface, lfw, ...), "
    "or 'demo' (built-in synthetic faces).",
)
@click.option(
    "--root", type=click.Path(file_okay=False, path_type=Path), help="Folder the list file's paths are relative to."
)
@click.option(
    "--scales",
    default=None,
    show_default="1:0.5:5",
    help="Algorithm 1 scale s per image, drawn from start:step:stop (inclusive), a list 1,1.5,2, or one value 2.0.",
)
@click.option("--copies", default=1, show_default=True, type=click.IntRange(min=1), help="Samples per input image.")
@click.option(
    "--clean-ratio",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Fraction of samples left clean (Mix-WebFace's occluded:clean 2:1 is 1/3).",
)
@click.option("--per-scale", is_flag=True, help="Write one dataset per scale, named NAME-<scale>.")
@click.option(
    "--occluders",
    "occluders",
    type=click.Path(path_type=Path),
    help="Occluder folder in the PDSN layout (<category>/NNNN.png); default: the project's calibrated library.",
)
@click.option("--categories", help="Only these occluder categories (comma separated).")
@click.option(
    "--group",
    type=click.IntRange(1, 3),
    help="Only the occluders of one of the paper's three alphabetical "
    "groups (1: book_cover, cup, eye_mask; 2: eyeglasses, hand, mouth_mask; 3: phone, scarf, sunglasses).",
)
@click.option(
    "--regions",
    is_flag=True,
    help="Build the nine named-region sets of the paper's Fig. 1 / Table 6 "
    "(NAME-left_eye, NAME-eyes, ...): the occluder is fitted to the region's box.",
)
@pair_options("clean", "occluded")
@click.option(
    "--pairs-from-bin",
    is_flag=True,
    help="With --src X.bin (an insightface verification set): build its pairs as --pairs does, "
    "in file order with insightface's ten folds (consecutive tenths).",
)
@click.option("--both", is_flag=True, help="With --pairs or --pairs-from-bin: occlude both images of every pair (O-O).")
@click.option(
    "--placement",
    type=click.Choice(["random", "anchored"]),
    default="random",
    show_default=True,
    help="'random': Algorithm 1 (the paper's); 'anchored': each category where it sits on a real face (sunglasses "
    "on the eyes, scarves on the lower face...), from the landmarks and the library's anchors.csv, with seeded jitter.",
)
@click.option(
    "--region-group",
    type=click.Choice([*GROUPS, "all"]),
    help="O_LFW-style sets from the landmarks: occluders above the nose line (upper), below it (lower), anywhere "
    "on the face (random), or covering at least half of it (large); 'all' builds the four as NAME-<group>.",
)
@click.option("--exclude-categories", help="Leave these occluder categories out (comma separated).")
@click.option(
    "--compat",
    type=click.Choice(COMPAT_MODES),
    default="paper",
    show_default=True,
    help="'paper': size capped at the face, alpha paste; 'from': the authors' release (cap W-1 x H-1, opaque paste).",
)
@click.option(
    "--seed", default=0, show_default=True, type=int, help="Run seed; each sample's generator is seeded by (seed, key)."
)
@shard_output_options
@set_options
@click.option("--name", help="Dataset name (default: occ-<source folder name>).")
@click.option(
    "--backend",
    type=click.Choice(BACKENDS),
    default="loky",
    show_default=True,
    help="Where shards are rendered: loky (-j processes here), dask (a dask.distributed cluster), ray.",
)
@click.option(
    "--scheduler",
    metavar="ADDRESS",
    help="With --backend dask: the scheduler of a running cluster "
    "(tcp://host:8786); default: a local cluster of -j processes, started and stopped with the build.",
)
@click.option(
    "--address",
    metavar="ADDRESS",
    help="With --backend ray: the Ray cluster to join (auto, ray://host:10001); default: a local one.",
)
@click.option(
    "--size",
    "face_size",
    metavar="HxW",
    help="Face size every input is brought to "
    "(default: the first readable input's); inputs of another size are resized, with a warning.",
)
@click.option("--strict-size", is_flag=True, help="Record inputs of another size as errors instead of resizing them.")
@click.option(
    "--crop",
    metavar="HxW",
    help="Cut this window from the centre of every input first: 112x96 takes the SphereFace/CosFace crop (FROM's "
    "input) from insightface's 112x112 ArcFace crops, whose template is the same 8 px to the right.",
)
def build_cmd(
    src,
    root,
    scales,
    copies,
    clean_ratio,
    per_scale,
    occluders,
    categories,
    group,
    regions,
    pairs_file,
    pairs_from_bin,
    both,
    identities_file,
    max_per_identity,
    impostors,
    placement,
    region_group,
    landmarks,
    exclude_categories,
    compat,
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
    backend,
    scheduler,
    address,
    face_size,
    strict_size,
    crop,
    max_errors,
) -> None:
    """Run Algorithm 1 over every input image and write shards plus manifests.

    \b
    Example: occgen build --src webface --scales 1:0.5:5 --clean-ratio 0.3333 --name mix-webface
    Ctrl-C (or a crash, or kill -9) keeps every finished shard: the same command again resumes.
    """
    limit = ErrorLimit.parse(max_errors)
    if scheduler and backend != "dask" or address and backend != "ray":
        raise UserError("--scheduler goes with --backend dask, --address with --backend ray")
    workers = Backend(backend, scheduler or address)
    if occluders is not None and not occluders.is_dir():
        raise UserError(f"--occluders {occluders}: no such folder")
    if pairs_file and pairs_from_bin:
        raise UserError("--pairs and --pairs-from-bin both give the pairs; choose one")
    source, wanted = choose_pairs(
        open_source(src, root), pairs_file, identities_file, max_per_identity, impostors, seed
    )
    given = Path(src.rstrip("/"))
    name = name or f"occ-{given.stem if given.suffix in ('.bin', '.rec') else given.name if src != 'demo' else 'demo'}"
    if not name or "/" in name or name.startswith("."):
        raise UserError(f"--name {name!r}: give a plain name such as occ-lfw (no '/')")
    if group and categories:
        raise UserError("--group and --categories both choose occluder categories; give one of them")
    if both and not (pairs_file or pairs_from_bin):
        raise UserError("--both occludes both images of each pair: it needs --pairs pairs.txt or --pairs-from-bin")
    if regions and (per_scale or scales):
        raise UserError(
            "--regions fits each occluder to a fixed region box, so scales do not apply; drop --scales/--per-scale"
        )
    if (pairs_file or pairs_from_bin) and copies != 1:
        raise UserError("--pairs renders one clean and one occluded copy of each image it needs; drop --copies")
    if region_group and (per_scale or scales or regions or placement != "random"):
        raise UserError(
            "--region-group places and sizes each occluder from the face's landmarks: drop --scales, --per-scale, "
            "--regions and --placement"
        )
    if placement != "random" and (per_scale or scales or regions):
        raise UserError(f"--placement {placement} sizes occluders from the face: drop --scales, --per-scale, --regions")
    if landmarks and placement == "random" and not region_group:
        raise UserError("--landmarks places occluders on raw photos: give --placement anchored or --region-group too")
    if crop and landmarks:
        raise UserError("--crop cuts aligned crops; --landmarks is for raw photos: give one of them")
    scale_set = parse_scales(scales or ("1" if regions or region_group or placement != "random" else "1:0.5:5"))
    groups = GROUPS if region_group == "all" else (region_group,) if region_group else ()
    runs = (
        [(f"{name}-{s:.1f}" if round(s, 1) == s else f"{name}-{s:g}", (s,), None, "random") for s in scale_set]
        if per_scale
        else [(f"{name}-{r}", scale_set, r, "random") for r in REGIONS]
        if regions
        else [(f"{name}-{g}" if len(groups) > 1 else name, scale_set, None, f"group-{g}") for g in groups]
        if groups
        else [(name, scale_set, None, placement)]
    )
    if pairs_from_bin:
        wanted = bin_pairs(source)
    failed: list[str] = []
    for run_name, run_scales, region, run_placement in runs:
        opts = BuildOptions(
            scales=run_scales,
            copies=copies,
            clean_ratio=clean_ratio,
            seed=seed,
            compat=compat,
            fmt=fmt,
            quality=quality,
            shard_size=shard_size,
            occluders=str(occluders) if occluders else None,
            categories=group_categories(group) if group else _names(categories),
            exclude=_names(exclude_categories) or (),
            clean_copies=1 if pairs_file or pairs_from_bin else 0,
            region=region,
            size=parse_size(face_size) if face_size else None,
            strict_size=strict_size,
            crop=parse_size(crop) if crop else None,
            placement=run_placement,
            landmarks=str(landmarks.absolute()) if landmarks else None,
        )
        args = (source, run_name, opts, wanted, both, out, manifests, jobs, overwrite, quiet, workers, ks, limit)
        if failure := make_set(*args):
            failed.append(failure)
    exit_on_failures(failed, limit)


def make_set(
    source: Source,
    run_name: str,
    opts: BuildOptions,
    pairs: list[Pair] | AllPairsOptions | None,
    both: bool,
    out: Path,
    manifests: Path,
    jobs: int,
    overwrite: bool,
    quiet: bool,
    workers: Backend,
    ks: tuple[int, ...],
    limit: ErrorLimit,
) -> str | None:
    """Build one set (its pairs, labels, card and, for placements on landmarks, a preview sheet) and say what was
    made; returns why it counts as failed (too many unusable inputs), or None. `occgen build` and `occgen mask`
    share it."""
    protocol = "N-N" if opts.clean_ratio >= 1 else "O-O" if both else "N-O"
    rows, sample_picks, every = None, None, None
    if isinstance(pairs, AllPairsOptions):
        every = all_pairs_set(source, protocol, pairs)
        sample_picks = every.picks
    elif pairs:
        items = resolve(pairs, source)
        rows = pair_rows(pairs, items, protocol)
        sample_picks = pair_picks(rows, items)
    try:
        with sigterm_interrupts():
            result = build(source, run_name, out, manifests, opts, jobs, overwrite, quiet, sample_picks, workers)
    except KeyboardInterrupt:
        click.echo(
            f"\nInterrupted: the workers are stopped and every finished shard of {run_name} is kept; "
            "run the same command again to resume.",
            err=True,
        )
        sys.exit(130)
    click.echo(result.summary.line("samples") + f" -> {out}/{run_name}-*.tar, {result.manifest_dir}")
    _report_inputs(result.manifest_dir, result.errors, result.warnings)
    if rows is not None:
        path = write_pairs(result.manifest_dir, rows)
        click.echo(f"  pairs: {describe_pairs(rows)} -> {path}")
    if every is not None:
        path = write_pairs_table(result.manifest_dir, every.table)
        click.echo(f"  pairs: {every.describe()} -> {path}")
    if ks:
        label_manifest(result.manifest_dir, ks, opts.compat)
    if opts.placement != "random" and result.shards and any(s["samples"] for s in result.shards):
        sheet = write_preview(result.manifest_dir)
        click.echo(f"  preview -> {sheet}")
    card = write_card(result.manifest_dir, command_line())
    click.echo(f"  dataset card -> {card}")
    if limit.exceeded(result.errors, result.inputs):
        return f"{run_name}: {result.errors} of {result.inputs} inputs could not be used"
    return None


def exit_on_failures(failed: list[str], limit: ErrorLimit) -> None:
    if failed:
        click.echo(
            f"Error: more inputs failed than --max-errors {limit} allows ({'; '.join(failed)}); "
            "the reasons are in each manifest's errors.parquet",
            err=True,
        )
        sys.exit(1)


def _report_inputs(manifest_dir: Path, errors: int, warnings: int, show: int = 3) -> None:
    """One line per kind of problem, with a few examples, pointing at the errors table."""
    if not errors and not warnings:
        return
    table = pq.read_table(manifest_dir / "errors.parquet").to_pylist()
    for kind, count, what in (("error", errors, "not used"), ("warning", warnings, "used after a fix")):
        rows = [r for r in table if r["kind"] == kind]
        if count:
            examples = "; ".join(f"{r['input']}: {r['reason']}" for r in rows[:show])
            click.echo(
                f"{count} input{'s' if count != 1 else ''} {what} (see {manifest_dir}/errors.parquet), e.g. {examples}",
                err=True,
            )
