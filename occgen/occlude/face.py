"""Where the parts of a face are, from its five landmarks: the frame that masks, anchored occluders and the
O_LFW-style region groups are placed in. Pure functions, no I/O but reading a landmark table.

A face's landmarks are the crop template's when the faces are aligned (occgen.align.transform.TEMPLATES: every
aligned face has its landmarks exactly there), or the points a landmark file or an ``occgen align`` record gives
for raw photos. The frame: ``down`` runs from the eye midpoint to the mouth midpoint, ``side`` is perpendicular
to it (pointing to the image's right on an upright face); lengths are measured in eye distances across and in
eye-to-mouth distances down. Head yaw is read, as MaskTheFace does, from how far the nose leaves the eye-mouth
line: the angle at the eye midpoint between the nose and the mouth (positive: the nose points to the image's
right). The contour of the face (cheeks, jaw, chin), which five points do not give, comes from fixed proportions
checked on LFW crops (``FACE_HALF_WIDTH`` and friends), shifted against the yaw like the silhouette of a turning
cylinder.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from occgen.align.landmarks import read_landmarks
from occgen.align.transform import TEMPLATES, fit_face
from occgen.errors import UserError

#: Half the face's width at the nose tip and at the lips, in eye distances; chin and forehead below the mouth and
#: above the eyes, in eye-to-mouth distances. Measured by eye on the SphereFace 112x96 crops of LFW.
FACE_HALF_WIDTH = 1.05
JAW_HALF_WIDTH = 0.92
CHIN_BELOW_MOUTH = 0.55
FOREHEAD_ABOVE_EYES = 0.75
#: How far the cheek contour moves against the nose's sideways offset (the silhouette of a cylinder of the face's
#: half-width turning under a nose that stands out about half an eye distance).
CONTOUR_SHIFT = 1.9
#: The frontal ratio of eye distance to eye-mouth distance (the 112x96 template's).
EYES_PER_LENGTH = 0.866
#: How far (frontal eye distances) the near cheek's contour stays beyond the nose tip on a turned head.
NOSE_MARGIN = 0.15
#: Beyond this yaw (degrees) the face is seen in profile and no frontal geometry fits: the sample is recorded.
MAX_YAW = 45.0

Points = tuple[float, ...]  # x1, y1, ..., x5, y5: left eye, right eye, nose, left and right mouth corner


@dataclass(frozen=True)
class Face:
    """The frame of one face, from its landmarks (5, 2)."""

    points: np.ndarray

    @property
    def eye(self) -> np.ndarray:
        return (self.points[0] + self.points[1]) / 2

    @property
    def mouth(self) -> np.ndarray:
        return (self.points[3] + self.points[4]) / 2

    @property
    def nose(self) -> np.ndarray:
        return self.points[2]

    @property
    def eye_distance(self) -> float:
        return float(np.linalg.norm(self.points[1] - self.points[0]))

    @property
    def length(self) -> float:
        """Eye midpoint to mouth midpoint."""
        return float(np.linalg.norm(self.mouth - self.eye))

    @property
    def down(self) -> np.ndarray:
        return (self.mouth - self.eye) / self.length

    @property
    def side(self) -> np.ndarray:
        return np.array([self.down[1], -self.down[0]])

    @property
    def nose_offset(self) -> float:
        """The nose's sideways distance (pixels) from the eye-mouth line; positive to the image's right."""
        return float((self.nose - self.eye) @ self.side)

    @property
    def yaw(self) -> float:
        """Degrees between eye->nose and eye->mouth; positive when the nose points to the image's right."""
        rel = self.nose - self.eye
        return math.degrees(math.atan2(float(rel @ self.side), float(rel @ self.down)))

    def at(self, down: float, side: float) -> np.ndarray:
        """The point ``down`` eye-to-mouth distances below the eye midpoint and ``side`` eye distances to the
        right (of the eye-mouth line)."""
        return self.eye + down * self.length * self.down + side * self.eye_distance * self.side

    @property
    def width_unit(self) -> float:
        """The eye distance a frontal view of this face would show: a turned head shortens the eye distance but
        not the eye-to-mouth distance, a nodding one the other way round (EYES_PER_LENGTH is their frontal ratio)."""
        return max(self.eye_distance, EYES_PER_LENGTH * self.length)

    def contour(self, down: float, half_width: float) -> tuple[np.ndarray, np.ndarray]:
        """The left and right face contour at height ``down``, ``half_width`` frontal eye distances out, moved
        against the yaw; the near side never comes closer to the eye-mouth line than the nose tip."""
        unit, nose = self.width_unit, self.nose_offset
        shift = -CONTOUR_SHIFT * nose
        left, right = -half_width * unit + shift, half_width * unit + shift
        if nose > 0:
            right = max(right, nose + NOSE_MARGIN * unit)
        else:
            left = min(left, nose - NOSE_MARGIN * unit)
        base = self.at(down, 0.0)
        return base + left * self.side, base + right * self.side

    @property
    def nose_down(self) -> float:
        """The nose tip's height in eye-to-mouth distances."""
        return float((self.nose - self.eye) @ self.down) / self.length

    @property
    def chin(self) -> np.ndarray:
        return self.at(1 + CHIN_BELOW_MOUTH, 0.0) + 0.3 * self.nose_offset * self.side

    def box(self) -> tuple[float, float, float, float]:
        """The face's extent (x0, y0, x1, y1), not clipped to the image: cheeks, forehead and chin."""
        left, right = self.contour(self.nose_down, FACE_HALF_WIDTH)
        corners = np.stack([left, right, self.at(-FOREHEAD_ABOVE_EYES, 0.0), self.chin])
        corners = np.concatenate([corners, self.points])
        (x0, y0), (x1, y1) = corners.min(axis=0), corners.max(axis=0)
        return float(x0), float(y0), float(x1), float(y1)


def template_points(height: int, width: int) -> np.ndarray:
    """The landmarks of every aligned face of this size: its crop template's."""
    for t in TEMPLATES.values():
        if (t.height, t.width) == (height, width):
            return t.points.copy()
    raise UserError(
        f"the faces are {height}x{width} (HxW), which matches no crop template ({', '.join(TEMPLATES)}), so their "
        "landmarks are unknown; align them with `occgen align`, or give --landmarks FILE with their five landmarks"
    )


def problem(points: np.ndarray, size: tuple[int, int]) -> str | None:
    """Why these landmarks cannot place anything on a face of ``size`` (H, W), or None when they can."""
    H, W = size
    fit = fit_face(points, (W, H), TEMPLATES["112x96"])
    if fit.matrix is None or fit.problem:
        return f"unusable landmarks: {fit.problem}"
    yaw = Face(np.asarray(points, dtype=np.float64)).yaw
    if abs(yaw) > MAX_YAW:
        return f"unusable landmarks: head turned {abs(yaw):.0f} degrees (more than {MAX_YAW:g}), a profile view"
    return None


@dataclass(frozen=True)
class LandmarkTable:
    """Landmarks of raw photos by relative path: the points, or why there are none."""

    path: Path
    sha256: str
    points: dict[str, np.ndarray]
    missing: dict[str, str]  # path -> why the file gives no usable points

    def lookup(self, rel: str) -> tuple[np.ndarray | None, str | None]:
        if rel in self.points:
            return self.points[rel], None
        return None, self.missing.get(rel, f"no landmarks: {self.path.name} has no row for it")


def read_table(path: str | Path) -> LandmarkTable:
    """A landmark file (occgen.align.landmarks formats) or an ``occgen align`` record (align.parquet)."""
    path = Path(path)
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise UserError(f"--landmarks {path}: cannot read ({exc.strerror})") from None
    points: dict[str, np.ndarray] = {}
    missing: dict[str, str] = {}
    if path.suffix == ".parquet":
        try:
            rows = pq.read_table(path, columns=["path", "landmarks", "status", "reason"]).to_pylist()
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several kinds for a file that is not a record
            raise UserError(f"--landmarks {path}: not an `occgen align` record ({exc})") from None
        for row in rows:
            if row["landmarks"] and len(row["landmarks"]) == 10:
                points[row["path"]] = np.reshape(np.asarray(row["landmarks"], dtype=np.float64), (5, 2))
            else:
                missing[row["path"]] = f"no landmarks: `occgen align` found none ({row['reason'] or row['status']})"
    else:
        for rel, row in read_landmarks(path).items():
            if not np.isfinite(row.points).all():
                missing[rel] = f"no landmarks: {path.name} has none for it"
            elif row.status not in ("", "ok"):
                missing[rel] = f"no landmarks: {path.name} marks it {row.status!r}"
            else:
                points[rel] = row.points
    return LandmarkTable(path.absolute(), digest, points, missing)
