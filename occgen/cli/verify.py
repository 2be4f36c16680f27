"""``occgen verify``: check a build's shards against its manifest, and rebuild the bad ones with --repair."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import click

from occgen.cli import main
from occgen.occlude.verify import PROBLEMS, repair, verify
from occgen.runner import default_jobs


@main.command("verify")
@click.argument("manifest", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--repair",
    "fix",
    is_flag=True,
    help="Rebuild the missing, truncated or altered shards from the build's inputs (byte-identical to the originals).",
)
@click.option(
    "-j",
    "--jobs",
    default=default_jobs(),
    show_default="all cores",
    type=click.IntRange(min=1),
    help="Worker processes.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="With --repair: the folder the shards belong in, when it is not inside the folder that holds the "
    "manifests (repair writes nowhere else).",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def verify_cmd(manifest: Path, fix: bool, jobs: int, out: Path | None, quiet: bool) -> None:
    """Re-read every shard of MANIFEST (a folder made by `occgen build`, e.g. manifests/occ-lfw) and check sample
    counts, member names and each image's sha256 against the manifest and shards.json.

    Exits with status 1 when a shard is missing, truncated or altered (and, with --repair, could not be rebuilt).
    """
    checks = verify(manifest, jobs, quiet)
    bad = [c for c in checks if not c.ok]
    for check in bad:
        click.echo(check.line())
    counts = Counter(c.problem for c in bad)
    found = ", ".join(f"{counts[p]} {p}" for p in PROBLEMS if counts[p])
    click.echo(
        f"verify {manifest.name}: {len(checks)} shards, {sum(c.samples for c in checks):,} samples: "
        + (f"{len(bad)} bad ({found})" if bad else "all intact")
    )
    if bad and fix:
        still = [c for c in repair(manifest, bad, jobs, quiet, out) if not c.ok]
        for check in still:
            click.echo(f"not repaired: {check.line()}")
        click.echo(f"repaired {len(bad) - len(still)} of {len(bad)} shards")
        bad = still
    if bad:
        sys.exit(1)
