"""The `occgen` command line: one module per subcommand, registered on one group."""

from __future__ import annotations

import click

from occgen import __version__
from occgen.clicommon import ErrorGroup


@click.group(cls=ErrorGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="occgen")
def main() -> None:
    """Build occluded face datasets (FROM's Algorithm 1) as WebDataset shards with Parquet manifests."""


def _register() -> None:
    from occgen.cli import (  # noqa: F401  (each module adds its command to `main`)
        align,
        build,
        label,
        mask,
        occluders,
        partial,
        patterns,
        preview,
        split,
        stats,
        verify,
    )


_register()
