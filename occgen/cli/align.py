"""``occgen align``: raw photos + five landmarks (a landmark file or MTCNN) -> aligned 112x96 / 112x112 faces."""

from __future__ import annotations

from pathlib import Path

import click

from occgen.align.run import FORMATS, make_settings, run_align
from occgen.align.transform import MAX_RESIDUAL, TEMPLATES
from occgen.cli import main
from occgen.runner import default_jobs

_SHOW_FAILED = 10


@main.command("align")
@click.option("--src", required=True, type=click.Path(path_type=Path), help="Folder of raw <identity>/<image> files.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Folder for the aligned faces (same tree).")
@click.option(
    "--size",
    type=click.Choice(list(TEMPLATES)),
    default="112x96",
    show_default=True,
    help="Crop (height x width): 112x96 SphereFace/CosFace (FROM), 112x112 ArcFace.",
)
@click.option(
    "--landmarks",
    type=click.Path(path_type=Path),
    help="Landmark file: SphereFace format (path x1 y1 ... x5 y5) or delimited with a header.",
)
@click.option("--detector", type=click.Choice(["mtcnn"]), help="Find the landmarks with MTCNN (optional extra).")
@click.option(
    "-j", "--jobs", type=click.IntRange(min=1), default=default_jobs, show_default="all cores", help="Worker processes."
)
@click.option(
    "--format", "fmt", type=click.Choice(list(FORMATS)), default="jpg", show_default=True, help="Output image format."
)
@click.option("--quality", type=int, default=95, show_default=True, help="JPEG quality (1..100).")
@click.option(
    "--fallback",
    type=click.Choice(["none", "mean"]),
    default="none",
    show_default=True,
    help="Faces without a usable fit: leave them out (none) or warp them with the dataset-mean "
    "transform (mean), flagged in the record.",
)
@click.option(
    "--max-residual",
    type=float,
    default=MAX_RESIDUAL,
    show_default=True,
    help="Largest RMS landmark residual (crop px) of a plausible fit.",
)
@click.option(
    "--manifests",
    type=click.Path(path_type=Path),
    default=Path("manifests"),
    show_default=True,
    help="Where the record goes: MANIFESTS/NAME/align.parquet.",
)
@click.option("--name", help="Record name [default: the --out folder's name].")
@click.option(
    "--ignore-missing",
    is_flag=True,
    help="Skip landmark rows whose image is not under --src (counted) instead of stopping.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def align_command(
    src: Path,
    out: Path,
    size: str,
    landmarks: Path | None,
    detector: str | None,
    jobs: int,
    fmt: str,
    quality: int,
    fallback: str,
    max_residual: float,
    manifests: Path,
    name: str | None,
    ignore_missing: bool,
    quiet: bool,
) -> None:
    """Align raw face photos to the five-point template with a least-squares similarity, resumably.

    Every image gets a row in MANIFESTS/NAME/align.parquet (landmarks, transform, residual, detector score,
    status); images without a usable face are listed there with the reason. A rerun skips finished images.
    """
    settings = make_settings(size, landmarks, detector, fmt, quality, max_residual)
    record_dir = manifests / (name or out.resolve().name)
    report = run_align(src, out, settings, record_dir, jobs, fallback, ignore_missing, quiet)
    click.echo(report.summary.line())
    if report.fallback:
        click.echo(f"{report.fallback} image(s) written with the dataset-mean transform (status 'fallback')")
    if report.ignored_rows:
        click.echo(f"{report.ignored_rows} landmark row(s) name images not under {src}: ignored (--ignore-missing)")
    if report.other_files:
        click.echo(f"{report.other_files} file(s) under {src} without an image extension: not aligned")
    for path, reason in report.failed[:_SHOW_FAILED]:
        click.echo(f"  failed: {path}: {reason}")
    if len(report.failed) > _SHOW_FAILED:
        click.echo(f"  ... and {len(report.failed) - _SHOW_FAILED} more")
    click.echo(f"record: {report.record}")
