"""What an occluder library will do to a face before anything is built: each file's size and expected occluded
area per scale, the library's mean (coverage.expected_box_fraction, the computation the build's geometry
implies), saturation, and a calibration to the FROM paper's figures (occgen.occlude.calibrate)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from occgen.occlude.calibrate import TARGETS, Fit, calibrate
from occgen.occlude.coverage import expected_box_fraction
from occgen.occlude.occluders import REFERENCE_FACE, OccluderLibrary
from occgen.occlude.render import Compat, scaled_size
from occgen.writer import atomic_write

#: A scale saturates when at least this share of the occluders covers the whole face there (the project's library,
#: calibrated to the paper, has 63% at s = 3 and none at s = 2).
SATURATED = 0.9
#: Warn when the library's mean area is further than this from the paper's figure at s = 1, 2, 3 (112x96 faces).
OFF_PAPER = 0.05


@dataclass(frozen=True)
class FileRow:
    name: str
    category: str
    native: tuple[int, int]  # pixels of the file
    size: tuple[int, int]  # size at s = 1 (catalog, or native without one)
    area: dict[float, float]  # expected clipped-box fraction of the face per scale, this file alone
    whole_face: dict[float, bool]  # scaled size capped at the face on both sides


@dataclass(frozen=True)
class LibraryReport:
    files: list[FileRow]
    mean: dict[float, float]  # the library's expected area per scale, occluders drawn as the build draws them
    saturated: dict[float, float]  # share of files covering the whole face, per scale
    paper: bool  # the face is the paper's 112x96 and the geometry the paper's, so its figures apply

    def warnings(self) -> list[str]:
        out = []
        if self.paper:
            off = [
                f"s={s:g} {100 * self.mean[s]:.1f}% (paper {100 * t:.2f}%)"
                for s, t in TARGETS.items()
                if s in self.mean and abs(self.mean[s] - t) > OFF_PAPER
            ]
            if off:
                out.append("not calibrated to the FROM paper: " + ", ".join(off) + "; calibrate it with --fit-paper")
        for s, share in self.saturated.items():
            if share >= SATURATED:
                out.append(
                    f"saturated at s={s:g}: {100 * share:.0f}% of the occluders cover the whole face, so "
                    f"boxes there are mostly the whole face (mean {100 * self.mean[s]:.1f}%); this library "
                    "cannot make a dataset like the paper's at that scale; calibrate it with --fit-paper"
                )
        return out


def describe(
    library: OccluderLibrary, face: tuple[int, int], scales: tuple[float, ...], compat: Compat = "paper"
) -> LibraryReport:
    W, H = face
    files = []
    for o in library.occluders:
        capped = {s: scaled_size(o.size, s, face, compat) for s in scales}
        files.append(
            FileRow(
                o.name,
                o.category,
                o.image.size,
                o.size,
                {s: expected_box_fraction([(o.category, o.size)], s, face, compat) for s in scales},
                {s: w >= W - (compat == "from") and h >= H - (compat == "from") for s, (w, h) in capped.items()},
            )
        )
    members = [(o.category, o.size) for o in library.occluders]
    mean = {s: expected_box_fraction(members, s, face, compat) for s in scales}
    saturated = {s: sum(f.whole_face[s] for f in files) / len(files) for s in scales}
    return LibraryReport(files, mean, saturated, face == REFERENCE_FACE and compat == "paper")


def fit_paper(library: OccluderLibrary) -> tuple[list[tuple[int, int]], Fit]:
    """Sizes on the 112x96 face that make Algorithm 1 occlude the paper's 18.76 / 43.09 / 52.00% at s = 1, 2, 3;
    each file keeps the aspect ratio of its pixels."""
    return calibrate([(o.category, o.image.width / o.image.height) for o in library.occluders])


def catalog_bytes(library: OccluderLibrary, sizes: list[tuple[int, int]]) -> bytes:
    """catalog.csv with the new sizes, keeping the source and licence columns of an existing catalog."""
    old: dict[str, dict[str, str]] = {}
    if (library.root / "catalog.csv").is_file():
        with (library.root / "catalog.csv").open(newline="") as f:
            old = {r["file"]: r for r in csv.DictReader(f)}
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["file", "category", "source", "licence", "width", "height"])
    for o, (w, h) in zip(library.occluders, sizes):
        r = old.get(o.name, {})
        writer.writerow([o.name, o.category, r.get("source", "unknown"), r.get("licence", "unknown"), w, h])
    return buf.getvalue().encode()


def write_fit(library: OccluderLibrary, sizes: list[tuple[int, int]], out: Path) -> tuple[Path, Path]:
    """catalog.csv and occluder.txt into ``out`` (the library folder itself, or a copy's)."""
    atomic_write(out / "catalog.csv", catalog_bytes(library, sizes))
    atomic_write(out / "occluder.txt", "".join(o.name + "\n" for o in library.occluders).encode())
    return out / "catalog.csv", out / "occluder.txt"
