"""Where input faces come from: a folder tree, a list file, an insightface RecordIO set (train.rec + train.idx) or
verification set (.bin), a named source, or the built-in demo.

A source is just an ordered list of items (relative path, identity) plus a way to read an item's bytes; decoding
happens in the workers. Items of a container file (.rec, .bin) carry their position in it, so a worker reads only
its own shard's faces. Identities are numbered 0..N-1 in sorted order of their names. Inputs that cannot be
used (not a regular file, a broken symlink, a name that is not UTF-8, a second input with the same sample key) are
listed in ``skipped`` with the reason, never dropped silently.
"""

from __future__ import annotations

import configparser
import os
import posixpath
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from occgen.errors import UserError
from occgen.formats import recordio
from occgen.formats.binset import BinSet, read_bin
from occgen.images import IMAGE_EXTENSIONS
from occgen.occlude import demo
from occgen.occlude.plan import sample_key

#: Config files that register named sources (first found wins), INI sections like ``[webface] path = ...``.
CONFIG_ENV = "OCCGEN_SOURCES"
DEFAULT_CONFIGS = (Path("occgen-sources.ini"), Path.home() / ".config" / "occgen" / "sources.ini")


@dataclass(frozen=True)
class Item:
    rel: str  # posix path relative to the source root: the stable name a sample's key derives from
    identity: int
    identity_name: str
    offset: int | None = None  # position in a container file (.rec byte offset, .bin image number); None: own file


class Items(Sequence[Item]):
    """A source's inputs in order, held as two arrays (the paths, the identity numbers) rather than one Python
    object each, so that tens of millions of inputs take tens of bytes each; an Item is made when asked for."""

    def __init__(self, rels: pa.Array, identity: np.ndarray, names: tuple[str, ...], offsets: np.ndarray | None = None):
        self.rels, self.identity, self.names, self.offsets = rels, identity, names, offsets

    def __len__(self) -> int:
        return len(self.rels)

    def _offset(self, i: int) -> int | None:
        return None if self.offsets is None else int(self.offsets[i])

    def __getitem__(self, i: int) -> Item:  # type: ignore[override]
        identity = int(self.identity[i])
        return Item(self.rels[i].as_py(), identity, self.names[identity], self._offset(i))

    def __iter__(self) -> Iterator[Item]:
        for start in range(0, len(self), _CHUNK):
            rels = self.rels[start : start + _CHUNK].to_pylist()
            for i, (rel, identity) in enumerate(zip(rels, self.identity[start : start + _CHUNK].tolist()), start):
                yield Item(rel, identity, self.names[identity], self._offset(i))


#: Inputs handled at once while listing and iterating.
_CHUNK = 65_536


@dataclass(frozen=True, eq=False)
class Source:
    """An ordered, identity-labelled list of input images."""

    spec: str  # what the user passed to --src
    root: Path | None  # None for the demo source
    items: Items
    identities: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...] = ()  # (input, reason) found while listing
    path: Path | None = None  # the folder or list file --src resolved to, absolute (None for the demo)
    kind: str = "images"  # how it was read: one of KINDS
    selected: bool = False  # only some people of it (occgen.sets.split.select_identities): a build records whom


#: What each kind of source is, in words (dataset cards say it).
KINDS = {
    "images": "a folder of <identity>/<image> files",
    "list": "a 'path label' list file",
    "recordio": "an insightface RecordIO set (train.rec + train.idx)",
    "bin": "an insightface verification set (.bin)",
    "demo": "occgen's built-in synthetic faces",
}

#: Each worker's open container files and loaded verification sets, by path.
_RECORD_FILES: dict[Path, IO[bytes]] = {}
_BIN_SETS: dict[Path, BinSet] = {}


class _Listing:
    """(path, identity name) pairs gathered in chunks of arrays, not one Python tuple per input."""

    def __init__(self) -> None:
        self.rels: list[str] = []
        self.names: list[str] = []
        self.chunks: list[tuple[pa.Array, pa.Array]] = []

    def add(self, rel: str, name: str) -> None:
        self.rels.append(rel)
        self.names.append(name)
        if len(self.rels) == _CHUNK:
            self._flush()

    def _flush(self) -> None:
        if self.rels:
            self.chunks.append((pa.array(self.rels, pa.string()), pa.array(self.names, pa.string())))
            self.rels, self.names = [], []

    def __len__(self) -> int:
        return sum(len(r) for r, _ in self.chunks) + len(self.rels)

    def arrays(self, by_path: bool = False) -> tuple[pa.Array, pa.Array]:
        """(paths, identity names), in the order added or sorted by path."""
        self._flush()
        if not self.chunks:
            return pa.array([], pa.string()), pa.array([], pa.string())
        rels, names = (pa.concat_arrays(list(a)) for a in zip(*self.chunks))
        self.chunks = []
        if by_path:
            order = pc.sort_indices(rels)
            rels, names = rels.take(order), names.take(order)
        return rels, names


def read_bytes(root: Path | None, rel: str) -> bytes:
    """The raw bytes of one input (``root`` None: the demo source, drawn on the fly)."""
    if root is None:
        return demo.face_bytes(rel)
    try:
        with open(os.path.join(root, rel), "rb") as f:
            return f.read()
    except OSError as exc:
        raise UserError(f"{rel}: cannot read ({exc.strerror})") from None


def read_input(root: Path | None, item: Item) -> bytes:
    """The encoded image of an item: its own file, or its record in the container file ``root``."""
    if item.offset is None or root is None:
        return read_bytes(root, item.rel)
    if root.suffix == ".bin":
        return load_bin(root).images[item.offset]
    f = _RECORD_FILES.get(root)
    if f is None:
        try:
            f = _RECORD_FILES[root] = open(root, "rb")
        except OSError as exc:
            raise UserError(f"{root}: cannot read ({exc.strerror})") from None
    return recordio.read_at(f, item.offset, item.rel).image


def _repeats(values: pa.Array) -> list[tuple[int, int]]:
    """(position, position of its first occurrence) of every value seen before, in position order."""
    if len(values) < 2:
        return []
    order = pc.sort_indices(
        pa.table({"v": values, "at": np.arange(len(values))}), [("v", "ascending"), ("at", "ascending")]
    )
    ordered = values.take(order)
    at = order.to_numpy()
    firsts: dict[int, int] = {}
    found = []
    for i in (np.flatnonzero(pc.equal(ordered[1:], ordered[:-1]).to_numpy(zero_copy_only=False)) + 1).tolist():
        firsts[i] = firsts.get(i - 1, i - 1)  # sorted position i repeats the one before: its run's first is kept
        found.append((int(at[i]), int(at[firsts[i]])))
    return sorted(found)


def _without(arrays: tuple[pa.Array, ...], positions: list[int]) -> tuple[pa.Array, ...]:
    if not positions:
        return arrays
    keep = np.ones(len(arrays[0]), bool)
    keep[positions] = False
    return tuple(a.filter(pa.array(keep)) for a in arrays)


def _labelled(
    spec: str,
    root: Path | None,
    rels: pa.Array,
    names: pa.Array,
    skipped: list[tuple[str, str]],
    path: Path | None = None,
    kind: str = "images",
    offsets: pa.Array | None = None,
) -> Source:
    """Number identity names contiguously in sorted order (numerically when all are integers). Of inputs whose
    sample keys would coincide, the first is kept and the others are recorded. ``offsets``: each input's place in
    a container file (RecordIO, .bin), beside ``rels``."""
    keys = [pa.array([sample_key(r, 0) for r in rels[i : i + _CHUNK].to_pylist()]) for i in range(0, len(rels), _CHUNK)]
    repeats = _repeats(pa.concat_arrays(keys)) if keys else []
    for n, first in repeats:
        skipped.append((rels[n].as_py(), f"maps to the same sample key as {rels[first].as_py()}; rename one of them"))
    dropped = [n for n, _ in repeats]
    rels, names = _without((rels, names), dropped)
    distinct = pc.unique(names).to_pylist()
    key = (lambda n: (int(n), n)) if all(n.lstrip("-").isdigit() for n in distinct) else (lambda n: (0, n))
    identities = tuple(sorted(distinct, key=key))
    identity = pc.index_in(names, value_set=pa.array(identities, pa.string())).to_numpy().astype(np.int32)
    places = None if offsets is None else _without((offsets,), dropped)[0].to_numpy()
    items = Items(rels, identity, identities, places)
    return Source(spec, root, items, identities, tuple(skipped), path.absolute() if path else None, kind)


def _printable(rel: str) -> str:
    """A path that is valid UTF-8 (undecodable bytes of a file name shown as \\xNN)."""
    return os.fsencode(rel).decode("utf-8", "backslashreplace")


def from_tree(root: Path, spec: str | None = None) -> Source:
    """``<identity>/<image>`` (deeper nesting allowed). Known image extensions of any case are taken; files
    with no or an unknown extension are taken too and decoded by content (failures are recorded, not fatal).

    Symlinked folders and files are followed, as torchvision's ImageFolder does; a folder that leads back to one
    of its own ancestors (a symlink loop) is recorded and not entered.
    """
    listing = _Listing()
    skipped: list[tuple[str, str]] = []

    def walk(folder: Path, rel_dir: str, ancestors: dict[tuple[int, int], str]) -> None:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            skipped.append((_printable(rel_dir) + "/", f"cannot list folder ({exc.strerror})"))
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            try:
                rel.encode()
            except UnicodeEncodeError:
                skipped.append((_printable(rel), "name is not valid UTF-8; rename it"))
                continue
            try:
                is_dir, is_file = entry.is_dir(), entry.is_file()  # both follow symlinks
                st = entry.stat() if is_dir else None
            except OSError as exc:
                skipped.append((rel, f"cannot read ({exc.strerror})"))
                continue
            if st is not None:  # a folder
                seen = ancestors.get((st.st_dev, st.st_ino))
                if seen is not None:
                    skipped.append((rel + "/", f"symlink loop: leads back to {seen or '.'}/"))
                else:
                    walk(Path(entry.path), rel, {**ancestors, (st.st_dev, st.st_ino): rel})
            elif not is_file:
                why = (
                    "broken symlink (its target does not exist)"
                    if entry.is_symlink() and not os.path.exists(entry.path)
                    else "not a regular file"
                )
                skipped.append((rel, why))
            elif not rel_dir:
                skipped.append((rel, "file is not inside an <identity>/ folder"))
            else:
                listing.add(rel, rel.split("/", 1)[0])

    st = root.stat()
    walk(root, "", {(st.st_dev, st.st_ino): ""})
    if not len(listing):
        raise UserError(
            f"--src {root}: no images found; expected <identity>/<image> files "
            f"({', '.join(sorted(e.lstrip('.') for e in IMAGE_EXTENSIONS))})"
        )
    return _labelled(spec or str(root), root, *listing.arrays(by_path=True), skipped, root)


def from_list(path: Path, root: Path | None, spec: str | None = None) -> Source:
    """CASIA-WebFace style list: ``relative/path label`` per line, paths relative to ``root``
    (default: the list file's folder; paths may hold spaces). Paths are normalised, so ``a/./b.jpg`` and
    ``a/b.jpg`` are one input. Missing files are recorded as errors, not dropped."""
    root = root or path.parent
    if not root.is_dir():
        raise UserError(f"--root {root} is not a folder; it must hold the paths listed in {path}")
    listing = _Listing()
    numbers = array("q")  # the line of each listed path
    missing: dict[int, str] = {}  # line number -> why its file cannot be used
    try:
        with open(path, errors="replace") as lines:
            for n, line in enumerate(lines, 1):
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                fields = line.strip().rsplit(None, 1)
                if len(fields) != 2:
                    raise UserError(f"{path}:{n}: expected 'relative/path label', got {line.strip()!r}")
                rel = posixpath.normpath(fields[0])
                file = root / rel
                if not file.is_file():
                    missing[n] = "not a regular file" if file.exists() else f"missing under {root}"
                listing.add(rel, fields[1])
                numbers.append(n)
    except OSError as exc:
        raise UserError(f"--src {path}: cannot read ({exc.strerror})") from None
    rels, names = listing.arrays()
    skipped: dict[int, tuple[str, str]] = {}  # by line number
    repeats = _repeats(rels)
    for at, first in repeats:
        rel, n = rels[at].as_py(), numbers[at]
        skipped[n] = (rel, f"listed again on line {n} (first on line {numbers[first]})")
        missing.pop(n, None)  # a repeated line is reported as such, whether its file exists or not
    gone = {at for at, _ in repeats}
    for at, n in enumerate(numbers if missing else ()):
        if n in missing and at not in gone:
            skipped[n] = (rels[at].as_py(), f"listed on line {n} but {missing[n]}")
            gone.add(at)
    rels, names = _without((rels, names), sorted(gone))
    if not len(rels):
        raise UserError(f"--src {path}: the list names no existing images under {root}")
    return _labelled(spec or str(path), root, rels, names, [skipped[n] for n in sorted(skipped)], path, "list")


def recordio_files(path: Path) -> tuple[Path, Path] | None:
    """(train.rec, train.idx) when ``path`` is a RecordIO file or a folder holding one (insightface's layout)."""
    rec = path / "train.rec" if path.is_dir() else path
    if rec.suffix != ".rec" or not rec.is_file():
        return None
    idx = rec.with_suffix(".idx")
    if not idx.is_file():
        raise UserError(
            f"--src {path}: {rec.name} has no index {idx.name} beside it; faces are read by record through the "
            "index (MXNet's tools/im2rec.py or insightface's face2rec write it)"
        )
    return rec, idx


def from_recordio(path: Path, spec: str | None = None) -> Source:
    """An insightface training set: one item per face record, named ``<label>/<record key>`` (stable across runs
    and unique), identity = the record's label (the first element of a vector label). Records that cannot be read
    are listed in ``skipped``."""
    found = recordio_files(path)
    if found is None:
        raise UserError(f"--src {path}: no train.rec (and train.idx) there")
    rec, idx = found
    layout = recordio.layout(rec, idx)
    listing = _Listing()
    offsets = array("q")
    skipped: list[tuple[str, str]] = []
    for key, offset, identity in recordio.labels(rec, layout.faces):
        if isinstance(identity, str):
            skipped.append((f"record {key}", identity.removeprefix(f"record {key}: ")))
            continue
        listing.add(f"{identity}/{key:08d}", str(identity))
        offsets.append(offset)
    if not len(listing):
        raise UserError(
            f"--src {path}: none of the {len(layout.faces)} face records of {rec} can be read "
            f"({skipped[0][0]}: {skipped[0][1]})"
        )
    rels, names = listing.arrays()
    places = pa.array(np.frombuffer(offsets, np.int64))
    return _labelled(spec or str(path), rec.absolute(), rels, names, skipped, path, "recordio", places)


def bin_rels(path: Path, issame: tuple[bool, ...]) -> list[str]:
    """The names of a verification set's images, ``<person>/<image number>``. A .bin carries no identities, so the
    person is made up: the two images of a matched pair are one person (``lfw-pair000012``), those of a
    mismatched pair two (``lfw-pair000012a``, ``...b``); intervals that resample people then resample pairs.
    (Dots in the file's stem become underscores: a sample key is cut at its first dot.)"""
    stem = path.stem.replace(".", "_")
    return [
        f"{stem}-pair{k:06d}{'' if same else 'ab'[side]}/{2 * k + side:06d}"
        for k, same in enumerate(issame)
        for side in (0, 1)
    ]


def load_bin(path: Path) -> BinSet:
    """A verification set, read once per process."""
    path = Path(path).absolute()
    if path not in _BIN_SETS:
        _BIN_SETS[path] = read_bin(path)
    return _BIN_SETS[path]


def from_bin(path: Path, spec: str | None = None) -> Source:
    """The faces of an insightface verification set, in file order, named and given made-up identities by
    ``bin_rels``."""
    binset = load_bin(path)
    rels = bin_rels(path, binset.issame)
    names = pa.array([rel.split("/")[0] for rel in rels], pa.string())
    places = pa.array(np.arange(len(rels), dtype=np.int64))
    return _labelled(spec or str(path), path.absolute(), pa.array(rels, pa.string()), names, [], path, "bin", places)


def env_name(name: str) -> str:
    """The environment variable that registers a named source: OCCGEN_SRC_<NAME>."""
    return "OCCGEN_SRC_" + "".join(c if c.isalnum() else "_" for c in name.upper())


def _registered(name: str) -> tuple[Path, Path | None] | None:
    """(path, root) for a named source from $OCCGEN_SRC_<NAME> or the first config file that has it."""
    env = os.environ.get(env_name(name))
    if env:
        return Path(env).expanduser(), None
    configs = [Path(os.environ[CONFIG_ENV])] if os.environ.get(CONFIG_ENV) else list(DEFAULT_CONFIGS)
    for cfg_path in configs:
        if cfg_path.is_file():
            cfg = configparser.ConfigParser()
            cfg.read(cfg_path)
            if cfg.has_section(name):
                sec = cfg[name]
                if "path" not in sec:
                    raise UserError(f"{cfg_path}: [{name}] needs a 'path = ...' line")
                root = Path(sec["root"]).expanduser() if "root" in sec else None
                return Path(sec["path"]).expanduser(), root
    return None


def open_source(spec: str, root: Path | None = None) -> Source:
    """Resolve ``--src``: ``demo``, an existing path (see ``open_path``), or a registered name."""
    if spec == "demo":
        rels, names = zip(*demo.items())
        return _labelled("demo", None, pa.array(rels, pa.string()), pa.array(names, pa.string()), [], kind="demo")
    path = Path(spec).expanduser()
    if not path.exists():
        found = _registered(spec) if "/" not in spec else None
        if found is None:
            raise UserError(
                f"--src {spec}: no such folder or list file, and no source of that name is registered. "
                f"Register it with `export {env_name(spec)}=/path/to/aligned-faces` or a "
                f"section [{spec}] path = ... in ./occgen-sources.ini or ~/.config/occgen/sources.ini"
            )
        path, reg_root = found
        root = root or reg_root
        if not path.exists():
            raise UserError(f"--src {spec} is registered as {path}, which does not exist")
    return open_path(path, root, spec)


def open_path(path: Path, root: Path | None = None, spec: str | None = None) -> Source:
    """The source at ``path``: a RecordIO set, a .bin verification set, a folder tree or a list file."""
    if recordio_files(path):
        return from_recordio(path, spec)
    if path.suffix == ".bin" and path.is_file():
        return from_bin(path, spec)
    if path.is_dir():
        return from_tree(path, spec)
    return from_list(path, root, spec)
