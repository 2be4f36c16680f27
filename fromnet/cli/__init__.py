"""The `fromnet` command line: one module per subcommand, registered on one group."""

from __future__ import annotations

import click

from fromnet import __version__
from occgen.clicommon import ErrorGroup


@click.group(cls=ErrorGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fromnet")
def main() -> None:
    """Train and evaluate FROM (occlusion-robust face recognition) on occgen shards."""


def _register() -> None:
    # each module adds its command to `main`
    from fromnet.cli import bench, compare, embed, eval, export, occlusion, summary, train  # noqa: F401


_register()
