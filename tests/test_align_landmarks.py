"""Landmark-file readers: both formats, the shared MediaPipe files, and clear messages for broken files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from occgen.align.landmarks import read_landmarks
from occgen.errors import UserError
from tests.conftest import shared


def write(tmp_path: Path, text: str, name: str = "lm.txt") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_reads_the_shared_mediapipe_file():
    rows = read_landmarks(shared("lfw-mini/landmarks_mediapipe.txt"))
    assert len(rows) == 48
    first = rows["Amelia_Vega/Amelia_Vega_0001.jpg"]
    np.testing.assert_allclose(first.points[0], [103.5, 115.8])  # left eye
    np.testing.assert_allclose(first.points[4], [144.9, 159.7])  # right mouth corner
    assert first.status == "ok" and first.n_faces == 1 and math.isnan(first.score) and first.line == 2
    assert {r.status for r in rows.values()} == {"ok"}


def test_reads_outlier_and_na_rows_of_full_lfw():
    rows = read_landmarks(shared("lfw-meta/lfw_deepfunneled_landmarks_mediapipe.txt"))
    assert len(rows) == 13233
    statuses = [r.status for r in rows.values()]
    assert statuses.count("outlier") == 97 and statuses.count("na") == 2
    na = rows["Jacques_Chirac/Jacques_Chirac_0006.jpg"]
    assert np.isnan(na.points).all() and na.n_faces == 0


def test_sphereface_format_tabs_spaces_and_na(tmp_path):
    file = write(
        tmp_path,
        "a/one.jpg\t107 112 147 112 126 137 111 155 144 155\n"
        "\n"
        "./b/two.jpg 1.5 2 3 4 5 6 7 8 9 10\n"
        "c/three.jpg NA NA NA NA NA NA NA NA NA NA\n",
    )
    rows = read_landmarks(file)
    assert list(rows) == ["a/one.jpg", "b/two.jpg", "c/three.jpg"]
    np.testing.assert_allclose(rows["a/one.jpg"].points[2], [126, 137])
    assert rows["b/two.jpg"].line == 3 and rows["b/two.jpg"].status == ""
    assert np.isnan(rows["c/three.jpg"].points).all()


def test_csv_header_with_aliases_and_score(tmp_path):
    cols = [f"{p}_{c}" for p in ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right") for c in "xy"]
    text = "path," + ",".join(cols) + ",confidence\n" + "x/y.png," + ",".join(map(str, range(10))) + ",0.98\n"
    file = write(tmp_path, text, "lm.csv")
    row = read_landmarks(file)["x/y.png"]
    np.testing.assert_allclose(row.points.ravel(), range(10))
    assert row.score == 0.98 and row.n_faces is None


@pytest.mark.parametrize(
    "text, message",
    [
        ("a.jpg 1 2 3 4 5 6 7 8 9\n", r"line 1: 10 fields, expected 11"),
        ("a.jpg 1 2 3 4 5 6 7 8 9 10\nb.jpg 1 2 3 4 5 6 7 8 9 10 11\n", r"line 2: 12 fields, expected 11"),
        ("a.jpg 1 2 3 4 5 6 7 8 9 10\nb.jpg 1 2 3 4 5 6 7 8 9 ten\n", r"line 2: field 11 is 'ten', not a number"),
        ("a.jpg 1 2 3 4 5 6 7 8 9 10\n./a.jpg 1 2 3 4 5 6 7 8 9 10\n", r"a.jpg appears on lines 1 and 2"),
        ("# image\tleye_x\tleye_y\nx.jpg\t1\t2\n", r"header lacks reye_x/reye_y, nose_x/nose_y"),
        (
            "# image\tleye_x\tleye_y\treye_x\treye_y\tnose_x\tnose_y\tlmouth_x\tlmouth_y\trmouth_x\trmouth_y\tstatus\n"
            "x.jpg\t1\t2\t3\t4\t5\t6\t7\t8\t9\t10\n",
            r"line 2: 11 columns, expected 12 as in the header",
        ),
        ("\n\n", r"landmark file is empty"),
    ],
)
def test_broken_files_say_what_and_where(tmp_path, text, message):
    with pytest.raises(UserError, match=message):
        read_landmarks(write(tmp_path, text))


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="cannot read landmark file"):
        read_landmarks(tmp_path / "absent.txt")
