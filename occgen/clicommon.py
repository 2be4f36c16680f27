"""What the `occgen` and `fromnet` command lines share: user errors as one line, and face-size options."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from occgen.errors import UserError
from occgen.images import FORMATS
from occgen.runner import default_jobs


class ErrorGroup(click.Group):
    """Turns UserError into a one-line message and exit code 2; never a traceback for user mistakes."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UserError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(2)


def parse_size(text: str) -> tuple[int, int]:
    """'112x96' -> (112, 96): height x width, the way face crops are named."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise UserError(f"--size must be HEIGHTxWIDTH in pixels, like 112x96 or 112x112; got {text!r}")
    return int(parts[0]), int(parts[1])


def shard_output_options(f):
    """The options every shard-writing command shares: workers, shard size, image format, and where files go."""
    options = [
        click.option(
            "-j",
            "--jobs",
            default=default_jobs(),
            show_default="all cores",
            type=click.IntRange(min=1),
            help="Worker processes.",
        ),
        click.option(
            "--shard-size", default=1000, show_default=True, type=click.IntRange(min=1), help="Samples per shard."
        ),
        click.option(
            "--format",
            "fmt",
            type=click.Choice(list(FORMATS)),
            default="jpg",
            show_default=True,
            help="Stored image format.",
        ),
        click.option(
            "--quality", default=95, show_default=True, type=click.IntRange(1, 100), help="JPEG/WebP quality."
        ),
        click.option(
            "--out",
            type=click.Path(file_okay=False, path_type=Path),
            default=Path("shards"),
            show_default=True,
            help="Folder for the shards NAME-000000.tar, ...",
        ),
        click.option(
            "--manifests",
            type=click.Path(file_okay=False, path_type=Path),
            default=Path("manifests"),
            show_default=True,
            help="Folder for manifests/NAME/.",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f
