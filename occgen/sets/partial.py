"""PartialLFW-style partial faces (Hörmann et al., ICIP 2021; github.com/stefhoer/PartialLFW) from aligned faces.

A partial face keeps a rectangle around one landmark (left eye, right eye, nose, mouth centre = mean of the mouth
corners) and fills the rest with mid-grey 128, what their generator writes. On their 160x160 crops, whose template
eyes are 55.5 px apart, the rectangle's half-width is 15 + 120 f and half-height 10 + 105 f px for factor
f = 0.10, 0.15, ..., 0.50. Here the geometry is scaled to our template by the inter-ocular distance:
k = (distance between our template eyes) / 55.5, so on the 112x96 crop (eyes 35.24 px apart) k = 0.635 and the
half-width is 0.635 (15 + 120 f) px. The landmarks are the template's (the faces are aligned to it), and the
rectangle is the half-open pixel box [round(x - hw), round(x + hw)) x [round(y - hh), round(y + hh)), clipped to
the image. Non-centered keeps the patch in place; centered shifts it so the landmark lands on the image centre
(by whole pixels). Every image of the pairs gets 37 versions: the whole face (copy 0) and 4 parts x 9 factors
(copy 1 + 9 * part + factor index).

Protocols over the pairs (their README): holistic (whole vs whole); partial-holistic (left eye, nose, mouth
against the whole face; each pair doubled so either image is the partial one: 2 x pairs per part and factor);
partial-same (the same part on both: left eye, nose, mouth); partial-cross (left eye-right eye, left eye-nose,
left eye-mouth, nose-mouth; doubled).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from occgen import __version__
from occgen.align.transform import TEMPLATES, Template
from occgen.errors import UserError
from occgen.images import FORMATS, decode_array, encode
from occgen.occlude.plan import sample_key
from occgen.occlude.run import _complete, _prepare  # the build's resume rules, shared
from occgen.occlude.sources import Item, Source, read_input
from occgen.runner import Summary, parallel_map
from occgen.sets.pairs import Pair, resolve, row
from occgen.writer import SAMPLES_SCHEMA, ShardPlace, atomic_write, json_bytes, sha256, write_shard

PARTS = ("left_eye", "right_eye", "nose", "mouth")
FACTORS = (0.10, 0.15, 0.20, 0.25, 0.30, 0.35, 0.40, 0.45, 0.50)
FILL = 128
#: PartialLFW's geometry on its 160x160 crops.
REF_SIZE, REF_EYES = 160, 55.5
HOLISTIC_PARTS = ("left_eye", "nose", "mouth")
CROSS = (("left_eye", "right_eye"), ("left_eye", "nose"), ("left_eye", "mouth"), ("nose", "mouth"))

#: The samples schema plus what a partial face is (its part, factor, layout and kept rectangle).
PARTIAL_SCHEMA = pa.schema(
    list(SAMPLES_SCHEMA)
    + [
        pa.field("part", pa.string()),
        pa.field("factor", pa.float32()),
        pa.field("centered", pa.bool_()),
        pa.field("patch_x0", pa.int32()),
        pa.field("patch_y0", pa.int32()),
        pa.field("patch_x1", pa.int32()),
        pa.field("patch_y1", pa.int32()),
        pa.field("visible_area_ratio", pa.float32()),
    ]
)


def copy_of(part: str, factor_index: int) -> int:
    return 0 if part == "whole" else 1 + PARTS.index(part) * len(FACTORS) + factor_index


def version(copy: int) -> tuple[str, float | None]:
    """(part, factor) of a copy number."""
    if copy == 0:
        return "whole", None
    part, f = divmod(copy - 1, len(FACTORS))
    return PARTS[part], FACTORS[f]


def template_of(face: tuple[int, int]) -> Template:
    for t in TEMPLATES.values():
        if t.size == face:
            return t
    raise UserError(
        f"partial faces need faces aligned to a known template ({', '.join(TEMPLATES)} HxW); got {face[1]}x{face[0]}"
    )


def scale(template: Template) -> float:
    """Our pixels per PartialLFW pixel: the ratio of the template eye distances."""
    return float(np.linalg.norm(template.points[1] - template.points[0])) / REF_EYES


def landmark(part: str, template: Template) -> tuple[float, float]:
    p = template.points
    x, y = {"left_eye": p[0], "right_eye": p[1], "nose": p[2], "mouth": (p[3] + p[4]) / 2}[part]
    return float(x), float(y)


def patch(part: str, factor: float, template: Template) -> tuple[int, int, int, int]:
    """The kept rectangle (half-open, not yet clipped) around the part's landmark."""
    k = scale(template)
    (x, y), hw, hh = landmark(part, template), k * (15 + 120 * factor), k * (10 + 105 * factor)
    return round(x - hw), round(y - hh), round(x + hw), round(y + hh)


def partial_face(
    face: np.ndarray,
    part: str,
    factor: float,
    centered: bool,
    template: Template,
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The partial face and its kept rectangle clipped to the image (in the source face's coordinates)."""
    H, W = face.shape[:2]
    x0, y0, x1, y1 = patch(part, factor, template)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)
    out = np.full_like(face, FILL)
    dx, dy = 0, 0
    if centered:
        lx, ly = landmark(part, template)
        dx, dy = round(W / 2 - lx), round(H / 2 - ly)
    tx0, ty0, tx1, ty1 = max(x0 + dx, 0), max(y0 + dy, 0), min(x1 + dx, W), min(y1 + dy, H)
    if tx1 > tx0 and ty1 > ty0:
        out[ty0:ty1, tx0:tx1] = face[ty0 - dy : ty1 - dy, tx0 - dx : tx1 - dx]
    return out, (x0, y0, x1, y1)


def protocol_rows(pairs: list[Pair], items: dict[str, Item], centered: bool) -> list[dict[str, Any]]:
    """Every evaluated pair of the four protocols, block by block (protocol, parts, factor), pairs in list order."""

    def side(img: str, part: str, f: int) -> tuple[str, int]:
        return img, copy_of(part, f)

    rows = [
        row(p, p.first, 0, p.second, 0, items, "holistic", part1="whole", part2="whole", centered=centered)
        for p in pairs
    ]
    for f, factor in enumerate(FACTORS):
        extra: dict[str, Any] = {"factor": factor, "centered": centered}
        for part in HOLISTIC_PARTS:
            for p in pairs:
                for a, b in ((p.first, p.second), (p.second, p.first)):
                    rows.append(
                        row(
                            p,
                            *side(a, "whole", f),
                            *side(b, part, f),
                            items,
                            "partial-holistic",
                            part1="whole",
                            part2=part,
                            **extra,
                        )
                    )
        for part in HOLISTIC_PARTS:
            rows += [
                row(
                    p,
                    *side(p.first, part, f),
                    *side(p.second, part, f),
                    items,
                    "partial-same",
                    part1=part,
                    part2=part,
                    **extra,
                )
                for p in pairs
            ]
        for pa_, pb in CROSS:
            for p in pairs:
                for a, b in ((p.first, p.second), (p.second, p.first)):
                    rows.append(
                        row(p, *side(a, pa_, f), *side(b, pb, f), items, "partial-cross", part1=pa_, part2=pb, **extra)
                    )
    return rows


@dataclass(frozen=True)
class PartialOptions:
    centered: bool = False
    fmt: str = "jpg"
    quality: int = 95
    shard_size: int = 1000


@dataclass(frozen=True)
class PartialTask(ShardPlace):
    source_root: Path | None
    samples: tuple[tuple[str, Item, int], ...]  # (key, item, copy)
    options: PartialOptions


def render_shard(task: PartialTask) -> dict[str, Any]:
    """Worker: every partial face of one shard, into its tar and manifest parts (stats file last)."""
    rows: list[dict[str, Any]] = []
    errors: list[dict[str, str]] = []
    return write_shard(task, _samples(task, rows, errors), rows, errors, PARTIAL_SCHEMA)


def _samples(task: PartialTask, rows: list[dict[str, Any]], errors: list[dict[str, str]]):
    opts = task.options
    face, face_rel, template = None, None, None
    for key, item, copy in task.samples:
        if item.rel != face_rel:
            face_rel, face = item.rel, None
            try:
                face = decode_array(read_input(task.source_root, item), item.rel)
                template = template_of((face.shape[1], face.shape[0]))
            except UserError as exc:
                face = None
                if copy == 0:
                    errors.append(
                        {"input": item.rel, "reason": str(exc).removeprefix(f"{item.rel}: "), "kind": "error"}
                    )
        if face is None:
            continue
        H, W = face.shape[:2]
        part, factor = version(copy)
        if factor is None:  # the whole face
            image, box = face, (0, 0, W, H)
        else:
            assert template is not None  # set with face
            image, box = partial_face(face, part, factor, opts.centered, template)
        data = encode(image, opts.fmt, opts.quality)
        row_ = {
            "key": key,
            "shard": task.shard,
            "identity": item.identity,
            "identity_name": item.identity_name,
            "src": item.rel,
            "copy": copy,
            "occluded": False,
            "seed": 0,
            "width": W,
            "height": H,
            "format": opts.fmt,
            "bytes": len(data),
            "sha256": sha256(data),
            "part": part,
            "factor": factor,
            "centered": opts.centered,
            "patch_x0": box[0],
            "patch_y0": box[1],
            "patch_x1": box[2],
            "patch_y1": box[3],
            "visible_area_ratio": (box[2] - box[0]) * (box[3] - box[1]) / (W * H),
        }
        rows.append(row_)
        yield {
            "__key__": key,
            opts.fmt: data,
            "cls": str(item.identity).encode(),
            "json": json.dumps(row_, separators=(",", ":")).encode(),
        }


@dataclass
class PartialResult:
    manifest_dir: Path
    rows: list[dict[str, Any]]
    summary: Summary


def build_partial(
    source: Source,
    pairs: list[Pair],
    name: str,
    out: Path,
    manifests: Path,
    opts: PartialOptions,
    jobs: int,
    overwrite: bool = False,
    quiet: bool = False,
) -> PartialResult:
    """Render every version of every image the pairs name, then write pairs.parquet for the four protocols."""
    if opts.fmt not in FORMATS:
        raise UserError(f"--format {opts.fmt}: choose one of {', '.join(FORMATS)}")
    items = resolve(pairs, source)
    manifest_dir = manifests / name
    ordered = sorted(items.values(), key=lambda it: it.rel)
    listing = "\n".join(f"{it.rel}\t{it.identity_name}" for it in ordered)
    fingerprint = {
        "occgen": __version__,
        "src": source.spec,
        "inputs": len(ordered),
        "inputs_sha256": sha256(listing.encode()),
        "occluders_sha256": None,
        "options": {"kind": "partial", **asdict(opts)},
    }
    _prepare(manifest_dir, out, name, fingerprint, overwrite)
    samples = [(sample_key(it.rel, c), it, c) for it in ordered for c in range(1 + len(PARTS) * len(FACTORS))]
    n = opts.shard_size
    tasks = [
        PartialTask(
            i // n, name, out / f"{name}-{i // n:06d}.tar", manifest_dir, source.root, tuple(samples[i : i + n]), opts
        )
        for i in range(0, len(samples), n)
    ]
    summary = Summary(f"partial {name}")
    done = {t.index: s for t in tasks if (s := _complete(t)) is not None}
    todo = [t for t in tasks if t.index not in done]
    summary.skipped = sum(s["samples"] for s in done.values())
    for task, stats in zip(
        todo, parallel_map(render_shard, todo, jobs, f"partial {name}", [len(t.samples) for t in todo], quiet)
    ):
        done[task.index] = stats
        summary.done += stats["samples"]
        summary.errors += stats["errors"]
    atomic_write(manifest_dir / "shards.json", json_bytes({"name": name, "shards": [done[t.index] for t in tasks]}))
    return PartialResult(manifest_dir, protocol_rows(pairs, items, opts.centered), summary)


def area_range(template: Template) -> dict[str, float]:
    """The kept share of the face over all parts and factors: of our crop (clipped to it), and of PartialLFW's
    160x160 crop at the same scale (unclipped, the measure their 9% to 73.7% refers to)."""
    W, H = template.size
    ref = (REF_SIZE * scale(template)) ** 2
    visible, theirs = [], []
    for part in PARTS:
        for factor in FACTORS:
            x0, y0, x1, y1 = patch(part, factor, template)
            theirs.append((x1 - x0) * (y1 - y0) / ref)
            visible.append((min(x1, W) - max(x0, 0)) * (min(y1, H) - max(y0, 0)) / (W * H))
    return {
        "visible_min": min(visible),
        "visible_max": max(visible),
        "reference_min": min(theirs),
        "reference_max": max(theirs),
    }


def parts_sheet(face: np.ndarray, centered: bool, title: str):
    """A contact sheet of one face: a row per part, a column per factor."""
    from PIL import Image

    from occgen.report.preview import sheet

    template = template_of((face.shape[1], face.shape[0]))
    H, W = face.shape[:2]
    tiles, captions = [], []
    for part in PARTS:
        for factor in FACTORS:
            image, (x0, y0, x1, y1) = partial_face(face, part, factor, centered, template)
            tiles.append(Image.fromarray(image))
            captions.append(f"{part.replace('_eye', ' eye')} {factor:.2f} {100 * (x1 - x0) * (y1 - y0) / (W * H):.0f}%")
    return sheet(tiles, captions, title, len(FACTORS))
