"""Occluder libraries in the PDSN/FROM layout: ``<category>/NNNN.png`` plus an optional ``occluder.txt``.

A library may carry ``catalog.csv`` (columns: file, category, source, licence, width, height) giving each
occluder's calibrated size in pixels on a 112x96 face, and must cover every file loaded; without it an
occluder's native pixel size is its size, as in the authors' release, whose PDSN photographs are already cut to
face scale. The project's own library lives in the repo's ``occluders/`` folder (made by
``tools/make_occluders.py``) and is the default.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from occgen.errors import UserError
from occgen.occlude.render import ALPHA_COVER, Compat, ScaledOccluder

#: The nine FROM categories (PDSN folder names).
CATEGORIES: tuple[str, ...] = (
    "book_cover",
    "cup",
    "eye_mask",
    "eyeglasses",
    "hand",
    "mouth_mask",
    "phone",
    "scarf",
    "sunglasses",
)


def _default_library() -> Path:
    """The project's own library: ``occgen/occluders/`` in an installed wheel (package data, see setup.py),
    else the checkout's top-level ``occluders/`` (editable installs, a source tree on sys.path)."""
    here = Path(__file__).resolve()
    installed = here.parents[1] / "occluders"
    return installed if installed.is_dir() else here.parents[2] / "occluders"


#: Where the project's own library lives.
DEFAULT_LIBRARY = _default_library()
#: Face size the catalog's calibrated sizes refer to (W, H).
REFERENCE_FACE = (96, 112)


class RandomSource(Protocol):
    def integers(self, n: int) -> int: ...


@dataclass(frozen=True)
class Occluder:
    name: str  # path relative to the library root, e.g. "hand/0003.png"
    category: str
    image: Image.Image  # RGBA
    size: tuple[int, int]  # calibrated (w, h) on a REFERENCE_FACE face, before Algorithm 1's scale


@dataclass(frozen=True)
class OccluderLibrary:
    root: Path
    occluders: tuple[Occluder, ...]

    @property
    def categories(self) -> tuple[str, ...]:
        return tuple(sorted({o.category for o in self.occluders}))

    @cached_property
    def by_category(self) -> tuple[tuple[int, ...], ...]:
        """Occluder indices of each category, categories in sorted order."""
        return tuple(tuple(i for i, o in enumerate(self.occluders) if o.category == c) for c in self.categories)

    def choose(self, rng: RandomSource) -> int:
        """A category uniformly, then an occluder of it uniformly: categories stay balanced
        however many files each holds. Returns the occluder's index."""
        members = self.by_category[int(rng.integers(len(self.by_category)))]
        return members[int(rng.integers(len(members)))]

    @cached_property
    def digest(self) -> str:
        """SHA-256 over every occluder's name, calibrated size and pixels: changes when any file does."""
        h = hashlib.sha256()
        for o in self.occluders:
            h.update(f"{o.name}\t{o.size}\n".encode())
            h.update(o.image.tobytes())
        return h.hexdigest()

    def scaled(self, index: int, size: tuple[int, int], compat: Compat) -> ScaledOccluder:
        """Occluder ``index`` resized for pasting, cached: a library meets few distinct sizes."""
        key = (index, size, compat)
        if key not in self._scaled:
            self._scaled[key] = ScaledOccluder(self.occluders[index].image, size, compat)
        return self._scaled[key]

    @cached_property
    def shapes(self) -> tuple[tuple[float, float, float], ...]:
        """Per occluder: its alpha centroid (fractions of its width and height) and the share of its box that its
        covering pixels (alpha >= ALPHA_COVER) fill."""
        out = []
        for o in self.occluders:
            alpha = np.asarray(o.image.getchannel("A"), dtype=np.float64)
            ys, xs = np.mgrid[0 : alpha.shape[0], 0 : alpha.shape[1]]
            total = alpha.sum()
            cx, cy = (xs * alpha).sum() / total + 0.5, (ys * alpha).sum() / total + 0.5
            out.append((cx / alpha.shape[1], cy / alpha.shape[0], float((alpha >= ALPHA_COVER).mean())))
        return tuple(out)

    @cached_property
    def _scaled(self) -> dict[tuple[int, tuple[int, int], str], ScaledOccluder]:
        return {}


def _listed_files(root: Path) -> list[str]:
    listing = root / "occluder.txt"
    if listing.is_file():
        names = [ln.strip() for ln in listing.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        flat = [n for n in names if "/" not in n.strip("/")]
        if flat:
            raise UserError(f"{listing}: {flat[0]!r} is not in a category folder; list files as <category>/NNNN.png")
        missing = [n for n in names if not (root / n).is_file()]
        if missing:
            raise UserError(
                f"{listing}: lists {len(missing)} missing file(s), e.g. {missing[0]!r}; fix the list or the folder"
            )
        return names
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.glob("*/*")
        if p.is_file() and p.suffix.lower() in {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif"}
    )


def _read_catalog(root: Path) -> dict[str, tuple[int, int]]:
    path = root / "catalog.csv"
    if not path.is_file():
        return {}
    with path.open(newline="") as f:
        try:
            sizes = {row["file"]: (int(row["width"]), int(row["height"])) for row in csv.DictReader(f)}
        except (KeyError, ValueError) as exc:
            raise UserError(f"{path}: needs columns file, width, height with integer sizes ({exc})") from None
    bad = [name for name, (w, h) in sizes.items() if w < 1 or h < 1]
    if bad:
        raise UserError(f"{path}: {bad[0]!r} has a size below 1 pixel; widths and heights must be positive")
    return sizes


def _read_occluder(path: Path) -> Image.Image:
    """One occluder as RGBA; empty, unreadable and fully transparent files fail here, named, before any work."""
    try:
        data = path.read_bytes()
        if not data:
            raise UserError(f"occluder {path} is an empty file; replace or remove it")
        with Image.open(io.BytesIO(data)) as im:
            rgba = im.convert("RGBA")
    except (OSError, ValueError, SyntaxError) as exc:  # UnidentifiedImageError is an OSError
        reason = getattr(exc, "strerror", None) or exc
        raise UserError(f"occluder {path} cannot be read ({reason}); replace or remove it") from None
    if rgba.getchannel("A").getbbox() is None:
        raise UserError(f"occluder {path} is fully transparent (no visible pixel); replace or remove it")
    return rgba


def load_library(
    root: str | Path | None = None,
    categories: tuple[str, ...] | None = None,
    exclude: tuple[str, ...] = (),
) -> OccluderLibrary:
    """Load every occluder of a PDSN-layout folder as RGBA (RGB files get an opaque alpha)."""
    root = Path(root) if root is not None else DEFAULT_LIBRARY
    if not root.is_dir():
        raise UserError(f"occluder folder {root} does not exist; pass --occluders DIR with <category>/NNNN.png files")
    names = _listed_files(root)
    if not names:
        raise UserError(
            f"no occluder images in {root}; expected <category>/NNNN.png files (or an occluder.txt listing them)"
        )
    present = {n.split("/")[0] for n in names}
    for label, chosen in (("--categories", categories or ()), ("--exclude-categories", exclude)):
        unknown = sorted(set(chosen) - present)
        if unknown:
            raise UserError(
                f"{label}: unknown categor{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)}; "
                f"{root} has {', '.join(sorted(present)) or 'none'}"
            )
    keep = [n for n in names if (not categories or n.split("/")[0] in categories) and n.split("/")[0] not in exclude]
    if not keep:
        raise UserError(
            f"--categories/--exclude-categories leave no occluders of {root}; keep at least one of "
            f"{', '.join(sorted(present))}"
        )
    sizes = _read_catalog(root)
    uncatalogued = [n for n in keep if sizes and n not in sizes]
    if uncatalogued:
        raise UserError(
            f"{root / 'catalog.csv'} has no row for {uncatalogued[0]!r} "
            f"({len(uncatalogued)} file(s) in all); add their width and height, or remove the catalog "
            "to use native pixel sizes"
        )
    occluders = []
    for name in keep:
        rgba = _read_occluder(root / name)
        occluders.append(Occluder(name, name.split("/")[0], rgba, sizes.get(name, rgba.size)))
    return OccluderLibrary(root, tuple(occluders))
