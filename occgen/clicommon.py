"""What the `occgen` and `fromnet` command lines share: user errors as one line, and face-size options."""

from __future__ import annotations

import sys

import click

from occgen.errors import UserError


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
