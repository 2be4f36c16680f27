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
from dataclasses import dataclass
from pathlib import Path
from typing import IO

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


@dataclass(frozen=True)
class Source:
    """An ordered, identity-labelled list of input images."""

    spec: str  # what the user passed to --src
    root: Path | None  # None for the demo source
    items: tuple[Item, ...]
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


def _labelled(
    spec: str,
    root: Path | None,
    pairs: list[tuple[str, str]],
    skipped: list[tuple[str, str]],
    path: Path | None = None,
    kind: str = "images",
    offsets: dict[str, int] | None = None,
) -> Source:
    """Number identity names contiguously in sorted order (numerically when all are integers). Of inputs whose
    sample keys would coincide, the first is kept and the others are recorded."""
    first: dict[str, str] = {}
    unique = []
    for rel, name in pairs:
        other = first.setdefault(sample_key(rel, 0), rel)
        if other == rel:
            unique.append((rel, name))
        else:
            skipped.append((rel, f"maps to the same sample key as {other}; rename one of them"))
    names = {name for _, name in unique}
    key = (lambda n: (int(n), n)) if all(n.lstrip("-").isdigit() for n in names) else (lambda n: (0, n))
    ordered = tuple(sorted(names, key=key))
    index = {n: i for i, n in enumerate(ordered)}
    offsets = offsets or {}
    items = tuple(Item(rel, index[name], name, offsets.get(rel)) for rel, name in unique)
    return Source(spec, root, items, ordered, tuple(skipped), path.absolute() if path else None, kind)


def _printable(rel: str) -> str:
    """A path that is valid UTF-8 (undecodable bytes of a file name shown as \\xNN)."""
    return os.fsencode(rel).decode("utf-8", "backslashreplace")


def from_tree(root: Path, spec: str | None = None) -> Source:
    """``<identity>/<image>`` (deeper nesting allowed). Known image extensions of any case are taken; files
    with no or an unknown extension are taken too and decoded by content (failures are recorded, not fatal).

    Symlinked folders and files are followed, as torchvision's ImageFolder does; a folder that leads back to one
    of its own ancestors (a symlink loop) is recorded and not entered.
    """
    pairs: list[tuple[str, str]] = []
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
                pairs.append((rel, rel.split("/", 1)[0]))

    st = root.stat()
    walk(root, "", {(st.st_dev, st.st_ino): ""})
    pairs.sort()
    if not pairs:
        raise UserError(
            f"--src {root}: no images found; expected <identity>/<image> files "
            f"({', '.join(sorted(e.lstrip('.') for e in IMAGE_EXTENSIONS))})"
        )
    return _labelled(spec or str(root), root, pairs, skipped, root)


def from_list(path: Path, root: Path | None, spec: str | None = None) -> Source:
    """CASIA-WebFace style list: ``relative/path label`` per line, paths relative to ``root``
    (default: the list file's folder; paths may hold spaces). Paths are normalised, so ``a/./b.jpg`` and
    ``a/b.jpg`` are one input. Missing files are recorded as errors, not dropped."""
    root = root or path.parent
    if not root.is_dir():
        raise UserError(f"--root {root} is not a folder; it must hold the paths listed in {path}")
    pairs: list[tuple[str, str]] = []
    skipped: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.strip().rsplit(None, 1)
        if len(fields) != 2:
            raise UserError(f"{path}:{n}: expected 'relative/path label', got {line.strip()!r}")
        rel, label = posixpath.normpath(fields[0]), fields[1]
        if rel in seen:
            skipped.append((rel, f"listed again on line {n} (first on line {seen[rel]})"))
            continue
        seen[rel] = n
        file = root / rel
        if not file.is_file():
            why = "not a regular file" if file.exists() else f"missing under {root}"
            skipped.append((rel, f"listed on line {n} but {why}"))
            continue
        pairs.append((rel, label))
    if not pairs:
        raise UserError(f"--src {path}: the list names no existing images under {root}")
    return _labelled(spec or str(path), root, pairs, skipped, path, "list")


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
    pairs: list[tuple[str, str]] = []
    skipped: list[tuple[str, str]] = []
    offsets: dict[str, int] = {}
    for key, offset, identity in recordio.labels(rec, layout.faces):
        if isinstance(identity, str):
            skipped.append((f"record {key}", identity.removeprefix(f"record {key}: ")))
            continue
        rel = f"{identity}/{key:08d}"
        pairs.append((rel, str(identity)))
        offsets[rel] = offset
    if not pairs:
        raise UserError(
            f"--src {path}: none of the {len(layout.faces)} face records of {rec} can be read "
            f"({skipped[0][0]}: {skipped[0][1]})"
        )
    return _labelled(spec or str(path), rec.absolute(), pairs, skipped, path, "recordio", offsets)


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
    pairs = [(rel, rel.split("/")[0]) for rel in bin_rels(path, binset.issame)]
    offsets = {rel: i for i, (rel, _) in enumerate(pairs)}
    return _labelled(spec or str(path), path.absolute(), pairs, [], path, "bin", offsets)


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
        return _labelled("demo", None, demo.items(), [], kind="demo")
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
