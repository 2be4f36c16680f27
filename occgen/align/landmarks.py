"""Readers for published five-point landmark files, with validation that names the file, line and fix.

Two formats, told apart by the first line:

* SphereFace: ``path x1 y1 x2 y2 x3 y3 x4 y4 x5 y5``, no header, whitespace separated (tab- or
  comma-separated rows work too, and let paths hold spaces).
* Delimited with a header naming the columns (tab, comma or whitespace separated; a leading ``#`` on the
  header is allowed), such as the project's MediaPipe files: a path column (``image``, ``path``, ``file``,
  ``filename`` or ``name``), ``<point>_x`` / ``<point>_y`` for each point, and optional ``status``, ``n_faces``
  and ``score`` (or ``confidence``) columns.

Points are in the order left eye, right eye, nose, left mouth corner, right mouth corner (``leye``, ``reye``,
``nose``, ``lmouth``, ``rmouth``; ``left_eye``, ``mouth_left`` ... and ``p1``..``p5`` are accepted too).
Coordinates ``NA``, ``nan`` or empty mean "no face found" for that image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from occgen.errors import UserError

_MISSING = frozenset({"", "na", "nan", "none", "null"})
_PATH_COLUMNS = ("image", "path", "file", "filename", "name")
_POINT_ALIASES: tuple[tuple[str, ...], ...] = (
    ("leye", "left_eye", "lefteye", "eye_left", "p1"),
    ("reye", "right_eye", "righteye", "eye_right", "p2"),
    ("nose", "nose_tip", "p3"),
    ("lmouth", "left_mouth", "mouth_left", "p4"),
    ("rmouth", "right_mouth", "mouth_right", "p5"),
)


@dataclass(frozen=True)
class LandmarkRow:
    """One image's row: points (5, 2) in source pixels (NaN where the file has none) and the file's extras."""

    points: np.ndarray
    status: str  # the file's status column, lower-case; "" when the file has none
    n_faces: int | None
    score: float  # NaN when the file has no score column
    line: int  # 1-based line number, for messages


def normalize_path(path: str) -> str:
    """A landmark file's image path as a relative POSIX path (``./a\\b.jpg`` -> ``a/b.jpg``)."""
    path = path.strip().replace("\\", "/")
    while path.startswith("./"):
        path = path[2:]
    return path


def read_landmarks(file: str | Path) -> dict[str, LandmarkRow]:
    """Read a landmark file of either format into {relative path: row}, in file order.

    Raises UserError for an unreadable file, wrong column counts, values that are not numbers, missing
    columns and duplicate paths.
    """
    file = Path(file)
    try:
        text = file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{file}: cannot read landmark file ({exc})") from None
    lines = [(i + 1, line) for i, line in enumerate(text.splitlines()) if line.strip()]
    if not lines:
        raise UserError(f"{file}: landmark file is empty")
    first = lines[0][1]
    fields = _sphereface_fields(first)
    if first.lstrip().startswith("#") or len(fields) < 2 or not all(_is_number(f) for f in fields[1:]):
        return _read_delimited(file, lines)
    return _read_sphereface(file, lines)


def _separator(line: str) -> str | None:
    """Tab if the line has one, else comma if it has one, else None (any whitespace)."""
    return "\t" if "\t" in line else "," if "," in line else None


def _split(line: str, sep: str | None) -> list[str]:
    return [f.strip() for f in line.split(sep)] if sep else line.split()


def _sphereface_fields(line: str) -> list[str]:
    """Split a SphereFace row on tabs or commas where that gives its 11 fields (paths may hold spaces), else on
    whitespace."""
    for sep in ("\t", ","):
        if sep in line and len(fields := _split(line, sep)) == 11:
            return fields
    return line.split()


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return text.strip().lower() in _MISSING
    return True


def _number(file: Path, line_no: int, column: str, text: str) -> float:
    if text.strip().lower() in _MISSING:
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise UserError(f"{file} line {line_no}: {column} is {text!r}, not a number") from None


def _add(rows: dict[str, LandmarkRow], file: Path, path: str, row: LandmarkRow) -> None:
    if not path:
        raise UserError(f"{file} line {row.line}: empty image path")
    if path in rows:
        raise UserError(f"{file}: {path} appears on lines {rows[path].line} and {row.line}; keep one row per image")
    rows[path] = row


def _read_sphereface(file: Path, lines: list[tuple[int, str]]) -> dict[str, LandmarkRow]:
    rows: dict[str, LandmarkRow] = {}
    for line_no, line in lines:
        fields = _sphereface_fields(line)
        if len(fields) != 11:
            raise UserError(
                f"{file} line {line_no}: {len(fields)} fields, expected 11 (path x1 y1 ... x5 y5; a path with "
                "spaces needs tab separators)"
            )
        values = [_number(file, line_no, f"field {k + 2}", v) for k, v in enumerate(fields[1:])]
        points = np.array(values).reshape(5, 2)
        _add(rows, file, normalize_path(fields[0]), LandmarkRow(points, "", None, math.nan, line_no))
    return rows


def _find(columns: dict[str, int], names: tuple[str, ...]) -> int | None:
    return next((columns[n] for n in names if n in columns), None)


def _read_delimited(file: Path, lines: list[tuple[int, str]]) -> dict[str, LandmarkRow]:
    header_no, header = lines[0]
    header = header.lstrip().lstrip("#")
    sep = _separator(header)
    names = [n.strip().lower() for n in _split(header, sep)]
    columns = {n: i for i, n in enumerate(names)}
    path_col = _find(columns, _PATH_COLUMNS)
    point_cols: list[tuple[int, int]] = []
    missing: list[str] = []
    for aliases in _POINT_ALIASES:
        x = _find(columns, tuple(f"{a}_x" for a in aliases))
        y = _find(columns, tuple(f"{a}_y" for a in aliases))
        if x is None or y is None:
            missing.append(f"{aliases[0]}_x/{aliases[0]}_y")
        else:
            point_cols.append((x, y))
    if path_col is None or missing:
        need = ([] if path_col is not None else ["a path column (image, path, file)"]) + missing
        raise UserError(f"{file} line {header_no}: header lacks {', '.join(need)}; found columns {', '.join(names)}")
    status_col = _find(columns, ("status",))
    faces_col = _find(columns, ("n_faces", "faces"))
    score_col = _find(columns, ("score", "confidence"))
    rows: dict[str, LandmarkRow] = {}
    for line_no, line in lines[1:]:
        fields = _split(line, sep)
        if len(fields) != len(names):
            raise UserError(f"{file} line {line_no}: {len(fields)} columns, expected {len(names)} as in the header")
        points = np.array([[_number(file, line_no, names[c], fields[c]) for c in pair] for pair in point_cols])
        n_faces = None
        if faces_col is not None:
            value = _number(file, line_no, names[faces_col], fields[faces_col])
            n_faces = None if math.isnan(value) else int(value)
        score = math.nan if score_col is None else _number(file, line_no, names[score_col], fields[score_col])
        status = "" if status_col is None else fields[status_col].strip().lower()
        _add(rows, file, normalize_path(fields[path_col]), LandmarkRow(points, status, n_faces, score, line_no))
    return rows
