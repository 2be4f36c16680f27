"""What the experiment scripts in tools/ share: where the shared LFW data is, symlinked image trees, and commands
run with their command line echoed (so a log shows how to repeat each step)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"
LFW = DATA / "lfw-112x96"


def link_images(folder: Path, images: Iterable[Path]) -> None:
    """An <identity>/<image> folder of symlinks, so a subset of LFW builds without copying it."""
    folder.mkdir(parents=True, exist_ok=True)
    for image in images:
        link = folder / image.name
        if not link.exists():
            link.symlink_to(image)


def run(*cmd: str) -> None:
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
