"""``occgen build``: the source's images, times copies, through Algorithm 1 into WebDataset shards.

Samples are laid out in a fixed order (sorted inputs, copies inner) and cut into shards of ``shard_size``;
each shard is one task for a worker process, which renders its samples and writes the shard's tar, its manifest
part, its errors part and finally its stats file (the completion mark). Every file is written under a temporary
name and renamed, so a build killed at any moment (SIGKILL included) leaves only whole files and temporaries; a
rerun removes the temporaries, skips shards whose stats file and parts are present and rebuilds the rest. A lock
on the manifest folder keeps two runs of one build apart. Results come back in shard order, so outputs are
identical for any -j and any backend.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from occgen import __version__
from occgen.errors import UserError
from occgen.images import FORMATS, crop_center, decode_array, encode, resize
from occgen.occlude.anchors import (
    GROUPS,
    LARGE_COVER,
    LARGE_TRIES,
    Anchor,
    anchored,
    check_categories,
    choose_solid,
    face_area,
    group_place,
    read_anchors,
)
from occgen.occlude.face import Face, LandmarkTable, Points, problem, read_table, template_points
from occgen.occlude.masks import MaskLibrary, load_masks, warp_mask
from occgen.occlude.occluders import OccluderLibrary, load_library
from occgen.occlude.plan import SampleRandom, draw, sample_key, sample_seed
from occgen.occlude.render import ALPHA_COVER, Box, Compat, ScaledOccluder, occlude, place, scaled_size
from occgen.occlude.sources import Item, Source, read_input
from occgen.runner import Backend, Summary, parallel_map
from occgen.sets.regions import fit_region
from occgen.writer import (
    ERRORS_SCHEMA,
    SAMPLES_SCHEMA,
    ShardPlace,
    atomic_write,
    exclusive,
    json_bytes,
    parquet_bytes,
    remove_temporaries,
    sha256,
    write_shard,
)


@dataclass(frozen=True)
class BuildOptions:
    """Everything that decides the bytes of a build (and so must match when a build is resumed)."""

    scales: tuple[float, ...]
    copies: int = 1
    clean_ratio: float = 0.0
    seed: int = 0
    compat: Compat = "paper"
    fmt: str = "jpg"
    quality: int = 95
    shard_size: int = 1000
    occluders: str | None = None  # library folder; None = the project's own
    categories: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()
    clean_copies: int = 0  # copies numbered below this stay clean (the clean halves of verification pairs)
    region: str | None = None  # a named region (occgen.sets.regions): the occluder is fitted to its box
    size: tuple[int, int] | None = None  # (height, width) of every face; None: the first readable input's
    strict_size: bool = False  # refuse inputs of another size instead of resizing them
    placement: str = "random"  # one of PLACEMENTS: Algorithm 1, anchored, an O_LFW-style group, or a face mask
    landmarks: str | None = None  # raw photos' landmark file or align record; None: aligned faces (template)
    colors: tuple[str, ...] = ()  # mask colours (#rrggbb or "original") drawn per sample; () keeps the templates'
    crop: tuple[int, int] | None = None  # (height, width) window cut from the centre of each input first


#: How an occluder goes on a face: Algorithm 1 (random), where its category sits (anchored), one of the O_LFW-style
#: region groups (group-*), or a face mask from MaskTheFace-layout templates (mask, occgen mask).
PLACEMENTS = ("random", "anchored", *(f"group-{g}" for g in GROUPS), "mask")

#: The samples schema plus what landmark-based placements record.
PLACED_SCHEMA = pa.schema(
    list(SAMPLES_SCHEMA)
    + [
        pa.field("placement", pa.string()),
        pa.field("anchor", pa.string()),  # anchored: where the category sits (anchors.csv)
        pa.field("yaw", pa.float32()),  # degrees the nose leaves the eye-mouth line (+: to the image's right)
        pa.field("mask_view", pa.string()),  # mask: front | left | right
        pa.field("mask_color", pa.string()),  # mask: #rrggbb, null for the template's own colours
    ]
)


@dataclass(frozen=True)
class Occluders:
    """What a worker occludes with: an occluder library (with the anchor table for anchored placement) or a
    mask library, and one digest over all of it."""

    library: OccluderLibrary | MaskLibrary
    anchors: dict[str, Anchor] | None = None
    anchors_sha256: str | None = None

    @property
    def occluder_library(self) -> OccluderLibrary:
        if not isinstance(self.library, OccluderLibrary):
            raise TypeError("mask templates cannot be placed as occluders")
        return self.library

    @property
    def masks(self) -> MaskLibrary:
        if not isinstance(self.library, MaskLibrary):
            raise TypeError("an occluder library holds no mask templates")
        return self.library

    @cached_property
    def choose_solid(self) -> Callable[[SampleRandom], int]:
        """The large group's occluder rule (occgen.occlude.anchors.choose_solid) for this library."""
        library = self.occluder_library
        return choose_solid(library.by_category, tuple(f for _, _, f in library.shapes))

    @property
    def digest(self) -> str:
        if self.anchors_sha256 is None:
            return self.library.digest
        return sha256(f"{self.library.digest}\n{self.anchors_sha256}".encode())


def load_occluders(opts: BuildOptions) -> Occluders:
    """The build's occluders, checked: fails fast with a UserError before any worker starts."""
    if opts.placement not in PLACEMENTS:
        raise UserError(f"placement {opts.placement!r}: choose one of {', '.join(PLACEMENTS)}")
    if opts.placement == "mask":
        return Occluders(load_masks(opts.occluders, opts.categories))
    library = load_library(opts.occluders, opts.categories, opts.exclude)
    if opts.placement != "anchored":
        occluders = Occluders(library)
        if opts.placement == "group-large":
            occluders.choose_solid  # noqa: B018 - refuses a library without solid occluders, before any work
        return occluders
    path, rows, digest = read_anchors(library.root)
    check_categories(path, rows, library.categories)
    return Occluders(library, rows, digest)


@dataclass(frozen=True)
class ShardTask(ShardPlace):
    source_root: Path | None
    picks: tuple[tuple[Item, range], ...]  # its inputs, in order, each with the copies of it the shard holds
    options: BuildOptions
    library_digest: str  # which occluders the workers must use (Occluders.digest)
    library_root: Path  # its folder, absolute: workers of a cluster may run in another working directory
    landmarks: tuple[tuple[str, Points | None, str | None], ...] = ()  # raw photos: (rel, points, problem)

    @property
    def size(self) -> int:
        return sum(len(copies) for _, copies in self.picks)

    def samples(self) -> Iterator[tuple[str, int, Item, int]]:
        """(key, seed, input, copy) of each sample, made where the shard is rendered."""
        for item, copies in self.picks:
            for copy in copies:
                key = sample_key(item.rel, copy)
                yield key, sample_seed(self.options.seed, key), item, copy


class Plan(Sequence[ShardTask]):
    """The shard tasks of a build, each made with its inputs (and their landmarks, for raw photos) only when it is
    asked for, and dropped after: the process that drives a build never lists it sample by sample. Samples are the
    inputs in order times ``copies`` (copies inner), or the given (input, copy) picks, cut into shards of
    ``shard_size``."""

    def __init__(
        self,
        source: Source,
        name: str,
        out: Path,
        manifest_dir: Path,
        opts: BuildOptions,
        library: OccluderLibrary | Occluders,
        picks: Sequence[tuple[Item, int]] | None = None,
        landmarks: LandmarkTable | None = None,
        shards: Sequence[int] | None = None,
    ):
        self.source, self.name, self.opts, self.library, self.picks = source, name, opts, library, picks
        self.out, self.manifest_dir, self.landmarks = out, manifest_dir, landmarks
        self.total = len(picks) if picks is not None else len(source.items) * opts.copies
        self.shards = shards if shards is not None else range(-(-self.total // opts.shard_size))

    def __len__(self) -> int:
        return len(self.shards)

    def place(self, index: int) -> ShardPlace:
        """Where shard ``index`` goes, in absolute paths: workers of a cluster may run in another working directory."""
        tar = self.out.absolute() / f"{self.name}-{index:06d}.tar"
        return ShardPlace(index, self.name, tar, self.manifest_dir.absolute())

    def __getitem__(self, i: int) -> ShardTask:  # type: ignore[override]
        place = self.place(self.shards[i])
        first = place.index * self.opts.shard_size
        picks = self._runs(first, min(first + self.opts.shard_size, self.total))
        library = self.library
        return ShardTask(
            place.index,
            place.name,
            place.tar_path,
            place.manifest_dir,
            self.source.root and self.source.root.absolute(),
            picks,
            self.opts,
            library.digest,
            library.library.root.absolute() if isinstance(library, Occluders) else library.root.absolute(),
            self._points(picks),
        )

    def sizes(self) -> list[int]:
        """Samples per shard, without making the tasks."""
        n = self.opts.shard_size
        return [min(n, self.total - i * n) for i in self.shards]

    def only(self, shards: Sequence[int]) -> Plan:
        """The plan of these shard indices alone, in this order."""
        return Plan(
            self.source, self.name, self.out, self.manifest_dir, self.opts, self.library, self.picks, self.landmarks,
            shards,
        )  # fmt: skip

    def _runs(self, start: int, stop: int) -> tuple[tuple[Item, range], ...]:
        """Samples start..stop-1 as (input, copies) runs."""
        runs: list[tuple[Item, range]] = []
        if self.picks is None:
            copies, j = self.opts.copies, start
            while j < stop:
                first = j % copies
                last = min(copies, first + stop - j)
                runs.append((self.source.items[j // copies], range(first, last)))
                j += last - first
            return tuple(runs)
        for item, copy in self.picks[start:stop]:
            if runs and runs[-1][0] is item and runs[-1][1].stop == copy:
                runs[-1] = (item, range(runs[-1][1].start, copy + 1))
            else:
                runs.append((item, range(copy, copy + 1)))
        return tuple(runs)

    def _points(self, picks: tuple[tuple[Item, range], ...]) -> tuple[tuple[str, Points | None, str | None], ...]:
        """The landmarks of the shard's inputs when the faces are raw photos."""
        if self.landmarks is None:
            return ()
        found = {}
        for item, _ in picks:
            pts, why = self.landmarks.lookup(item.rel)
            found[item.rel] = (item.rel, None if pts is None else tuple(pts.ravel().tolist()), why)
        return tuple(found.values())


@dataclass
class BuildResult:
    name: str
    manifest_dir: Path
    shards: list[dict[str, Any]] = field(default_factory=list)
    summary: Summary = field(default_factory=lambda: Summary("build"))  # this run's counts
    inputs: int = 0  # input files listed, usable or not
    errors: int = 0  # inputs not used, over the whole build (all runs)
    warnings: int = 0  # inputs used after a fix (resized), over the whole build


#: The lock file in a manifest folder, held by the run that writes it.
LOCK = ".lock"

#: Occluders a process has loaded, by digest: each worker loads a library once, and a library whose
#: files changed between two builds in one process is loaded anew.
_LIBRARIES: dict[str, Occluders] = {}


def _library(task: ShardTask) -> Occluders:
    digest = task.library_digest
    if digest not in _LIBRARIES:
        occluders = load_occluders(replace(task.options, occluders=str(task.library_root)))
        if occluders.digest != digest:
            raise UserError(f"the occluders in {task.library_root} changed while the build was running; run it again")
        _LIBRARIES[digest] = occluders
    return _LIBRARIES[digest]


def occlude_sample(
    face: np.ndarray,
    seed: int,
    opts: BuildOptions,
    lib: OccluderLibrary | Occluders,
    clean: bool = False,
    points: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """One sample: draw its choices from its seed and occlude (never, when ``clean``). Returns the face (a new array
    when occluded) and its geometry columns. The offline build and fromnet's online occlusion both call this;
    placements other than Algorithm 1's need the face's landmarks ``points`` (5, 2)."""
    occluders = lib if isinstance(lib, Occluders) else Occluders(lib)
    if opts.placement == "mask":
        return _mask_sample(face, seed, opts, occluders.masks, clean, None if points is None else Face(points))
    library = occluders.occluder_library
    H, W = face.shape[:2]
    choose = occluders.choose_solid if opts.placement == "group-large" else library.choose
    choice = draw(seed, (W, H), opts.scales, 1.0 if clean else opts.clean_ratio, choose)
    row: dict[str, Any] = {"occluded": choice.occluded}
    if opts.placement != "random":
        row.update(placement=opts.placement, yaw=None if points is None else Face(points).yaw)
    if choice.occluded:
        index, scale = choice.occluder, choice.scale if opts.placement == "random" else None
        if opts.placement != "random":
            index, size, center = _place(face, seed, opts, occluders, index, _face(points), row)
            scaled = ScaledOccluder(library.occluders[index].image, size, opts.compat)  # sizes vary: not cached
        else:
            if opts.region:
                size, center = fit_region(opts.region, (W, H))
            else:
                size = scaled_size(library.occluders[index].size, choice.scale, (W, H), opts.compat)
                center = choice.center
            scaled = library.scaled(index, size, opts.compat)
        occ = library.occluders[index]
        result = occlude(face, scaled, center)
        face = result.image
        row.update(scale=scale, occluder=occ.name, occluder_category=occ.category)
        row.update(_geometry(center, result.raw_box, result.box, result.pixel_area, (W, H)))
    return face, row


def _geometry(center: tuple[int, int], raw: Box, box: Box, pixels: int, face: tuple[int, int]) -> dict[str, Any]:
    """The manifest's geometry columns of an occluded sample."""
    area = face[0] * face[1]
    return {
        "center_x": center[0],
        "center_y": center[1],
        **{f"raw_{k}": v for k, v in zip(("x0", "y0", "x1", "y1"), raw.as_tuple())},
        **{f"box_{k}": v for k, v in zip(("x0", "y0", "x1", "y1"), box.as_tuple())},
        "box_area_ratio": box.area / area,
        "pixel_area_ratio": pixels / area,
    }


def _face(points: np.ndarray | None) -> Face:
    """The face frame an occluded sample needs; faces without usable landmarks never get this far."""
    if points is None:
        raise ValueError("a placement from the face needs its landmarks")
    return Face(points)


def _place(
    face: np.ndarray, seed: int, opts: BuildOptions, occluders: Occluders, index: int, where: Face, row: dict[str, Any]
) -> tuple[int, tuple[int, int], tuple[int, int]]:
    """(occluder, size, centre) on this face for a landmark-based placement, from the sample's own placement stream:
    the occluder is the one drawn (as Algorithm 1 would), but for ``large``, which draws another when the first
    cannot cover half the face however it grows (a pair of glasses whose gap lands on the face)."""
    H, W = face.shape[:2]
    library = occluders.occluder_library
    rng = SampleRandom(sample_seed(seed, "placement"))
    if opts.placement == "anchored":
        occ = library.occluders[index]
        anchor = (occluders.anchors or {})[occ.category]  # load_occluders checked every category has a row
        row["anchor"] = anchor.anchor
        cx, cy, _ = library.shapes[index]
        return index, *anchored(where, anchor, occ.image.height / occ.image.width, (cx, cy), rng, (W, H))
    fx0, fy0, fx1, fy1 = (round(v) for v in face_area(where, (W, H)))

    def cover(size: tuple[int, int], center: tuple[int, int]) -> float:
        raw, _ = place(center, size, (W, H), opts.compat)
        x0, y0, x1, y1 = max(fx0, raw.x0), max(fy0, raw.y0), min(fx1, raw.x1), min(fy1, raw.y1)
        if x1 <= x0 or y1 <= y0:
            return 0.0
        scaled = ScaledOccluder(library.occluders[index].image, size, opts.compat)
        covered = scaled.covered(x0 - raw.x0, y0 - raw.y0, x1 - raw.x0, y1 - raw.y0)
        return covered / max(1, (fx1 - fx0) * (fy1 - fy0))

    group = opts.placement.removeprefix("group-")
    for attempt in range(LARGE_TRIES if group == "large" else 1):
        if attempt:
            index = occluders.choose_solid(rng)
        image = library.occluders[index].image
        size, center = group_place(
            group, where, image.height / image.width, library.shapes[index][2], rng, (W, H), cover
        )
        if group != "large" or cover(size, center) >= LARGE_COVER:
            break
    return index, size, center


def _mask_sample(
    face: np.ndarray, seed: int, opts: BuildOptions, masks: MaskLibrary, clean: bool, where: Face | None
) -> tuple[np.ndarray, dict[str, Any]]:
    """A face mask: the type (and colour) drawn from the sample's seed, warped onto the face through its anchors.
    ``where`` is None for the clean copy of a face without usable landmarks (the gallery side of a pair)."""
    H, W = face.shape[:2]
    rng = SampleRandom(seed)
    row: dict[str, Any] = {"occluded": not (clean or rng.random() < opts.clean_ratio)}
    row.update(placement="mask", yaw=None if where is None else where.yaw)
    if not row["occluded"]:
        return face, row
    kind = masks.kinds[rng.integers(len(masks.kinds))]
    drawn = opts.colors[rng.integers(len(opts.colors))] if opts.colors else "original"
    color = None if drawn == "original" else drawn
    warped = warp_mask(masks, kind, _face(where.points if where else None), (W, H), color)
    result = occlude(face, ScaledOccluder(warped.image, (W, H), "paper"), (W // 2, H // 2))  # alpha, always
    cover = warped.image.getchannel("A").point(lambda a: 255 if a >= ALPHA_COVER else 0)
    box = Box(*(cover.getbbox() or (0, 0, 0, 0)))  # the covering pixels' box: what pattern labels describe
    row.update(occluder=warped.template.name, occluder_category=kind)
    center = ((box.x0 + box.x1) // 2, (box.y0 + box.y1) // 2)
    row.update(_geometry(center, Box(*warped.raw_box), box, result.pixel_area, (W, H)))
    row.update(mask_view=warped.template.view, mask_color=color)
    return result.image, row


def render_sample(
    face: np.ndarray,
    key: str,
    seed: int,
    item: Item,
    copy: int,
    shard: str,
    opts: BuildOptions,
    lib: OccluderLibrary | Occluders,
    points: np.ndarray | None = None,
) -> tuple[dict[str, Any], bytes]:
    """One sample: draw its choices, occlude, encode. Returns its manifest row and image bytes."""
    H, W = face.shape[:2]
    face, geometry = occlude_sample(face, seed, opts, lib, copy < opts.clean_copies, points)
    row: dict[str, Any] = {
        "key": key,
        "shard": shard,
        "identity": item.identity,
        "identity_name": item.identity_name,
        "src": item.rel,
        "copy": copy,
        "occluded": geometry.pop("occluded"),
        "seed": seed,
        "width": W,
        "height": H,
        "format": opts.fmt,
    }
    row.update(geometry)
    data = encode(face, opts.fmt, opts.quality)
    row.update(bytes=len(data), sha256=sha256(data))
    return row, data


def schema(opts: BuildOptions) -> pa.Schema:
    return SAMPLES_SCHEMA if opts.placement == "random" else PLACED_SCHEMA


def render_shard(task: ShardTask) -> dict[str, Any]:
    """Worker: render every sample of one shard and write its tar and manifest parts atomically."""
    rows: list[dict[str, Any]] = []
    errors: list[dict[str, str]] = []
    return write_shard(task, _render_samples(task, rows, errors), rows, errors, schema(task.options))


def _load_face(task: ShardTask, item: Item) -> tuple[np.ndarray | None, str | None, tuple[float, float]]:
    """Decode one input and bring it to the build's face size: (face or None, what to record or None, the
    (x, y) factors it was resized by)."""
    try:
        face = decode_array(read_input(task.source_root, item), item.rel)
        if task.options.crop:
            face = crop_center(face, task.options.crop)
    except UserError as exc:
        return None, str(exc).removeprefix(f"{item.rel}: "), (1.0, 1.0)
    want, got = task.options.size, face.shape[:2]
    if want is None or got == want:
        return face, None, (1.0, 1.0)
    if task.options.strict_size:
        return None, f"is {got[0]}x{got[1]}, not {want[0]}x{want[1]} like the other inputs (--strict-size)", (1.0, 1.0)
    factors = (want[1] / got[1], want[0] / got[0])
    return resize(face, want), f"resized from {got[0]}x{got[1]} to {want[0]}x{want[1]}", factors


def _face_points(
    task: ShardTask, item: Item, face: np.ndarray, factors: tuple[float, float]
) -> tuple[np.ndarray | None, str | None]:
    """The face's landmarks for a landmark-based placement (None, None for Algorithm 1): the listed points of a
    raw photo (scaled as the photo was), else the crop template's; or None and why they cannot be used."""
    if task.options.placement == "random":
        return None, None
    if not task.options.landmarks:
        return template_points(*face.shape[:2]), None
    listed = {rel: (pts, why) for rel, pts, why in task.landmarks}
    pts, why = listed.get(item.rel, (None, "no landmarks given for it"))
    if pts is None:
        return None, why
    points = np.reshape(np.asarray(pts, dtype=np.float64), (5, 2)) * np.asarray(factors)
    why = problem(points, face.shape[:2])
    return (None, why) if why else (points, None)


def _render_samples(
    task: ShardTask, rows: list[dict[str, Any]], errors: list[dict[str, str]]
) -> Iterator[dict[str, Any]]:
    """The shard's WebDataset samples, appending each manifest row and each unusable or fixed input as it goes.
    A face whose landmarks cannot be used is recorded (once, with the first copy that would be occluded) and its
    occluded copies left out; its clean copies (the gallery side of N-O pairs) are still written."""
    library = _library(task)
    face, face_rel, points, unusable = None, None, None, None
    for key, seed, item, copy in task.samples():
        if item.rel != face_rel:  # copies of one input are adjacent: decode it once
            face_rel = item.rel
            face, note, factors = _load_face(task, item)
            if note and copy == 0:  # recorded once, by the shard that holds the input's first copy
                errors.append({"input": item.rel, "reason": note, "kind": "error" if face is None else "warning"})
            if face is not None:
                points, unusable = _face_points(task, item, face, factors)
        if face is None:
            continue
        if unusable and copy >= task.options.clean_copies:
            if copy == task.options.clean_copies:
                errors.append({"input": item.rel, "reason": unusable, "kind": "error"})
            continue
        row, data = render_sample(face, key, seed, item, copy, task.shard, task.options, library, points)
        meta = json.dumps(row, separators=(",", ":")).encode()  # row order is fixed by render_sample
        rows.append(row)
        yield {"__key__": key, task.options.fmt: data, "cls": str(item.identity).encode(), "json": meta}


def _complete(task: ShardPlace) -> dict[str, Any] | None:
    """The stats of a shard finished by an earlier run, or None if it must be (re)built."""
    try:
        stats = json.loads(task.stats_path.read_text())
    except (OSError, ValueError):
        return None
    parts = [task.manifest_dir / table / f"{task.shard}.parquet" for table in ("samples.parquet", "errors.parquet")]
    ok = (
        task.tar_path.is_file()
        and task.tar_path.stat().st_size == stats.get("bytes")
        and all(p.is_file() for p in parts)
    )
    return stats if ok else None


def fingerprint(
    source: Source,
    library: OccluderLibrary | Occluders,
    opts: BuildOptions,
    picks: Sequence[tuple[Item, int]] | None = None,
    landmarks: LandmarkTable | None = None,
) -> dict[str, Any]:
    """What a resumed build must share with the first run: inputs (and picked samples), occluders, landmarks,
    options."""
    listing = hashlib.sha256()  # of the lines "rel<TAB>identity", joined by newlines, input by input
    for n, it in enumerate(source.items):
        listing.update(f"{chr(10) if n else ''}{it.rel}\t{it.identity_name}".encode())
    if picks is not None:
        listing.update(("\npicks:\n" + "\n".join(f"{it.rel}\t{copy}" for it, copy in picks)).encode())
    opts_dict = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(opts).items()}
    root = library.library.root if isinstance(library, Occluders) else library.root
    return {
        "occgen": __version__,
        "src": source.spec,
        "inputs": len(source.items),
        "inputs_sha256": listing.hexdigest(),
        "occluders_sha256": library.digest,
        "landmarks_sha256": landmarks.sha256 if landmarks else None,
        "options": opts_dict,
        "src_kind": source.kind,
        "src_path": str(source.path) if source.path else None,  # where `occgen verify
        "root": str(source.root.absolute()) if source.root else None,  # --repair` reads the inputs again
        "occluders_path": str(root.absolute()),
        "identities": list(source.identities) if source.selected else None,  # --identities: whom --repair keeps
    }


#: Options added after builds were first made, with the value older builds were made with.
_OPTION_DEFAULTS: dict[str, Any] = {"placement": "random", "landmarks": None, "colors": []}


def _prepare(manifest_dir: Path, out: Path, name: str, fingerprint: dict[str, Any], overwrite: bool) -> None:
    """Refuse to resume a build made with other inputs, occluders or options, unless told to start over."""
    build_json = manifest_dir / "build.json"
    if build_json.is_file() and not overwrite:
        previous = json.loads(build_json.read_text())
        before = {**_OPTION_DEFAULTS, **previous.get("options", {})}  # builds made before an option existed
        changed = [f"option {k}" for k, v in fingerprint["options"].items() if before.get(k) != v]
        changed += [
            what
            for key, what in (
                ("inputs_sha256", "input images"),
                ("occluders_sha256", "occluder images"),
                ("landmarks_sha256", "landmarks"),
                ("occgen", "occgen version"),
            )
            if previous.get(key) != fingerprint.get(key)
        ]
        if changed:
            raise UserError(
                f"{manifest_dir} holds a build of {name} with other {', '.join(changed)}; "
                "rerun with --overwrite to replace it, or choose another --name"
            )
    if overwrite and manifest_dir.is_dir():
        for old in manifest_dir.iterdir():
            if old.name != LOCK:
                shutil.rmtree(old) if old.is_dir() else old.unlink()
        for old in out.glob(shard_files(name)):
            old.unlink()
    atomic_write(build_json, json_bytes(fingerprint))


def first_size(source: Source) -> tuple[int, int] | None:
    """(height, width) of the first input, in build order, that decodes: the size every face is brought to."""
    for item in source.items:
        try:
            return decode_array(read_input(source.root, item), item.rel).shape[:2]
        except UserError:
            continue
    return None


def shard_files(name: str) -> str:
    """The glob pattern of a build's tars in ``out``."""
    return f"{glob.escape(name)}-[0-9][0-9][0-9][0-9][0-9][0-9].tar"


def build(
    source: Source,
    name: str,
    out: Path,
    manifests: Path,
    opts: BuildOptions,
    jobs: int,
    overwrite: bool = False,
    quiet: bool = False,
    picks: Sequence[tuple[Item, int]] | None = None,
    backend: Backend = Backend(),
) -> BuildResult:
    """Build (or finish building) dataset ``name``; returns per-shard stats and the run summary.

    ``picks`` (item, copy) replaces the default samples (every input times ``copies``): a pairs set renders
    only the clean and occluded copies its pairs use (occgen.sets.pairs)."""
    if opts.fmt not in FORMATS:
        raise UserError(f"--format {opts.fmt}: choose one of {', '.join(FORMATS)}")
    backend.check()
    library = load_occluders(opts)  # fails fast, before any worker starts
    _LIBRARIES[library.digest] = library
    landmarks = read_table(opts.landmarks) if opts.landmarks else None
    if opts.size is None:
        opts = replace(opts, size=opts.crop or first_size(source))
    if opts.placement != "random" and landmarks is None and opts.size is not None:
        template_points(*opts.size)  # aligned faces of a size no template knows: say so before any work
    manifest_dir = manifests / name
    with exclusive(manifest_dir / LOCK, f"another run of the build {name} is using {manifest_dir}; wait for it to end"):
        _remove_temporaries(manifest_dir, out, name)  # left by a run that was killed
        _prepare(manifest_dir, out, name, fingerprint(source, library, opts, picks, landmarks), overwrite)
        try:
            plan = Plan(source, name, out, manifest_dir, opts, library, picks, landmarks)
            return _run(plan, jobs, quiet, backend)
        finally:
            _remove_temporaries(manifest_dir, out, name)  # left by workers stopped mid-write (Ctrl-C, an error)


def _remove_temporaries(manifest_dir: Path, out: Path, name: str) -> None:
    remove_temporaries(manifest_dir, "**/.*.tmp-*")
    remove_temporaries(out, f".{shard_files(name)}.tmp-*")


def _run(plan: Plan, jobs: int, quiet: bool, backend: Backend) -> BuildResult:
    source, name, manifest_dir = plan.source, plan.name, plan.manifest_dir
    atomic_write(
        manifest_dir / "errors.parquet" / "listing.parquet",
        parquet_bytes([{"input": i, "reason": r, "kind": "error"} for i, r in source.skipped], ERRORS_SCHEMA),
    )
    result = BuildResult(name, manifest_dir, inputs=len(source.items) + len(source.skipped))
    result.summary.errors = len(source.skipped)
    done = {i: stats for i in plan.shards if (stats := _complete(plan.place(i))) is not None}
    todo = plan.only([i for i in plan.shards if i not in done])
    result.summary.skipped = sum(stats["samples"] for stats in done.values())
    fresh = parallel_map(render_shard, todo, jobs, f"build {name}", todo.sizes(), quiet, backend)
    with contextlib.closing(fresh):  # stops the workers however the loop ends
        for index, stats in zip(todo.shards, fresh):
            done[index] = stats
            result.summary.done += stats["samples"]
            result.summary.errors += stats["errors"]
            result.summary.warnings += stats.get("warnings", 0)
    result.shards = [done[i] for i in plan.shards]
    result.errors = len(source.skipped) + sum(s["errors"] for s in result.shards)
    result.warnings = sum(s.get("warnings", 0) for s in result.shards)
    atomic_write(manifest_dir / "shards.json", json_bytes({"name": name, "shards": result.shards}))
    return result
