"""`occgen label` / write_labels on small generated manifests and on real geometry, and `occgen patterns`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from conftest import shared
from PIL import Image

from occgen.cli import main
from occgen.errors import UserError
from occgen.label.labels import write_labels
from occgen.label.patterns import label_boxes, num_patterns, regression_target
from occgen.occlude.occluders import load_library
from occgen.occlude.render import place, scaled_size

BOX = ["box_x0", "box_y0", "box_x1", "box_y1"]


def sample_frame(n: int, height: int = 112, width: int = 96, seed: int = 0) -> pd.DataFrame:
    """n samples, a third clean, the rest with clipped Algorithm 1 boxes; boxes as nullable Int (null when clean)."""
    rng = np.random.default_rng(seed)
    w, h = rng.integers(1, width + 1, n), rng.integers(1, height + 1, n)
    cx, cy = rng.integers(0, width, n), rng.integers(0, height, n)
    x0, y0 = cx - w // 2, cy - h // 2
    boxes = np.stack([np.maximum(x0, 0), np.maximum(y0, 0), np.minimum(x0 + w, width), np.minimum(y0 + h, height)], 1)
    occluded = rng.random(n) > 1 / 3
    frame = pd.DataFrame({"key": [f"id{i % 7}/img_{i:05d}-s{i % 3}" for i in range(n)], "occluded": occluded})
    for i, name in enumerate(BOX):
        frame[name] = pd.array(np.where(occluded, boxes[:, i], 0), dtype="Int64")
        frame.loc[~occluded, name] = pd.NA
    frame["width"], frame["height"] = width, height
    frame["scale"] = 2.0  # other manifest columns are carried along untouched
    return frame


def write_manifest(root: Path, frame: pd.DataFrame, shards: int = 3) -> Path:
    """manifests/NAME/samples.parquet as a folder of per-shard files, the layout `occgen build` writes."""
    folder = root / "samples.parquet"
    folder.mkdir(parents=True)
    for i, part in enumerate(np.array_split(np.arange(len(frame)), shards)):
        frame.iloc[part].to_parquet(folder / f"shard-{i:05d}.parquet", index=False)
    return root


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("compat", ["paper", "from"])
@pytest.mark.parametrize("height,width", [(112, 96), (112, 112)])
def test_write_labels_matches_the_pure_function(tmp_path, compat, height, width):
    frame = sample_frame(500, height, width)
    manifest = write_manifest(tmp_path / "occ-test", frame)
    before = snapshot(manifest)
    path = write_labels(manifest, 5, compat).path
    assert path.name == ("labels-k5-from.parquet" if compat == "from" else "labels-k5.parquet")
    assert snapshot(manifest) == {**before, path.name: path.read_bytes()}  # nothing else written or rewritten

    labels = pd.read_parquet(path)
    assert list(labels.columns) == ["key", "pattern", "iou", "reg_x0", "reg_y0", "reg_x1", "reg_y1"]
    assert labels["key"].tolist() == sorted(frame["key"])
    ordered = frame.set_index("key").loc[labels["key"]]
    boxes = ordered[BOX].to_numpy(dtype=float, na_value=np.nan)
    pattern, iou = label_boxes(boxes, ordered["occluded"].to_numpy(), 5, height, width, compat)
    assert labels["pattern"].dtype == np.int16 and np.array_equal(labels["pattern"], pattern)
    assert np.array_equal(labels["iou"], iou)
    target = regression_target(boxes, ordered["occluded"].to_numpy(), height, width, compat)
    assert np.array_equal(labels[["reg_x0", "reg_y0", "reg_x1", "reg_y1"]].to_numpy(), target)
    assert (labels["pattern"][~ordered["occluded"].to_numpy()] == 0).all()

    meta = json.loads(pq.read_schema(path).metadata[b"occgen.labels"])
    assert meta == {
        "K": 5,
        "compat": compat,
        "num_patterns": 226,
        "height": height,
        "width": width,
        "x_edges": [i * width // 5 for i in range(6)],
        "y_edges": [i * height // 5 for i in range(6)],
    }


def test_output_is_independent_of_sharding_and_box_dtype(tmp_path):
    frame = sample_frame(300)
    a = write_labels(write_manifest(tmp_path / "a", frame, shards=1), 4).path
    as_float = frame.astype({c: "float64" for c in BOX})  # NaN instead of null
    b = write_labels(write_manifest(tmp_path / "b", as_float.iloc[::-1], shards=4), 4).path
    assert a.read_bytes() == b.read_bytes()


def test_shards_of_only_clean_samples_with_untyped_boxes(tmp_path):
    # Written from Python None values, an all-clean shard stores its box columns as type null.
    manifest = tmp_path / "m"
    (manifest / "samples.parquet").mkdir(parents=True)
    common = {"width": [96], "height": [112]}
    clean = pa.table({"key": ["a"], "occluded": [False], **{c: [None] for c in BOX}, **common})
    occluded = pa.table({"key": ["b"], "occluded": [True], **dict(zip(BOX, ([19], [22], [38], [44]))), **common})
    pq.write_table(clean, manifest / "samples.parquet" / "shard-00000.parquet")
    pq.write_table(occluded, manifest / "samples.parquet" / "shard-00001.parquet")
    labels = pd.read_parquet(write_labels(manifest, 5).path)
    assert labels["pattern"].tolist() == [0, 96] and labels["iou"].tolist() == [1.0, 1.0]


def test_real_geometry_from_real_occluders(tmp_path):
    """Boxes made by Algorithm 1 (occgen.occlude.render) from the real occluder library on the real face size."""
    library = load_library(shared("occluders-openclipart-fluent"))
    faces = sorted(shared("lfw-mini/aligned-112x96").rglob("*.jpg"))
    rng = np.random.default_rng(100)
    rows = []
    for face in faces:
        with Image.open(face) as im:
            W, H = im.size
        for geometry in ("paper", "from"):
            occ = library.occluders[library.choose(rng)]
            size = scaled_size(occ.size, float(rng.choice(np.arange(1.0, 5.5, 0.5))), (W, H), geometry)
            _, box = place((int(rng.integers(W)), int(rng.integers(H))), size, (W, H), geometry)
            rows.append(
                {
                    "key": f"{face.stem}-{geometry}",
                    "occluded": True,
                    **dict(zip(BOX, box.as_tuple())),
                    "width": W,
                    "height": H,
                }
            )
    frame = pd.DataFrame(rows)
    manifest = write_manifest(tmp_path / "real", frame, shards=2)
    result = CliRunner().invoke(main, ["label", "--K", "5", "--K", "4", "--compat", "from", str(manifest)])
    assert result.exit_code == 0, result.output
    assert f"{len(frame)} samples ({len(frame)} occluded), 112x96 (HxW)" in result.output
    for K in (5, 4):
        labels = pd.read_parquet(manifest / f"labels-k{K}-from.parquet").set_index("key").loc[frame["key"]]
        expected, _ = label_boxes(frame[BOX].to_numpy(), np.ones(len(frame), bool), K, 112, 96, "from")
        assert np.array_equal(labels["pattern"], expected)
        assert labels["pattern"].between(0, num_patterns(K) - 1).all() and (labels["pattern"] > 0).mean() > 0.9


def test_cli_writes_one_file_per_k(tmp_path):
    manifest = write_manifest(tmp_path / "m", sample_frame(60, 112, 112))
    result = CliRunner().invoke(main, ["label", "--K", "3", "--K", "6", str(manifest)])
    assert result.exit_code == 0, result.output
    assert "112x112 (HxW)" in result.output and "K=3:" in result.output and "K=6:" in result.output
    assert sorted(p.name for p in manifest.iterdir()) == ["labels-k3.parquet", "labels-k6.parquet", "samples.parquet"]


def run_error(args: list[str]) -> str:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    return result.output


def test_errors(tmp_path):
    assert "no manifest at" in run_error(["label", "--K", "5", str(tmp_path / "nowhere")])
    assert "'--K'" in run_error(["label", "--K", "9", str(tmp_path)])
    assert "'--K'" in run_error(["label", str(tmp_path)])  # required

    frame = sample_frame(20)
    no_boxes = write_manifest(tmp_path / "no-boxes", frame.drop(columns=["box_x1", "box_y1"]))
    assert "lacks the column(s) box_x1, box_y1" in run_error(["label", "--K", "5", str(no_boxes)])

    mixed = frame.copy()
    mixed.loc[:4, ["width", "height"]] = [112, 112]
    out = run_error(["label", "--K", "5", str(write_manifest(tmp_path / "mixed", mixed))])
    assert "mixes image sizes (HxW: 112x96, 112x112)" in out

    unknown = frame.astype({"width": "Int64"})
    unknown.loc[3, "width"] = pd.NA
    assert "unknown image size" in run_error(["label", "--K", "5", str(write_manifest(tmp_path / "unknown", unknown))])

    tiny = frame.assign(width=4, box_x0=pd.NA, box_x1=pd.NA, occluded=False)
    assert "too small for K=5" in run_error(["label", "--K", "5", str(write_manifest(tmp_path / "tiny", tiny))])

    outside = frame.copy()
    outside.loc[outside["occluded"].idxmax(), "box_x1"] = 97
    assert "not a clipped box" in run_error(["label", "--K", "5", str(write_manifest(tmp_path / "outside", outside))])

    dup = pd.concat([frame, frame.iloc[:1]])
    assert "unique" in run_error(["label", "--K", "5", str(write_manifest(tmp_path / "dup", dup))])

    corrupt = tmp_path / "corrupt"
    (corrupt / "samples.parquet").mkdir(parents=True)
    (corrupt / "samples.parquet" / "shard-00000.parquet").write_bytes(b"not parquet")
    assert "cannot read" in run_error(["label", "--K", "5", str(corrupt)])

    with pytest.raises(UserError, match="K must be"):
        write_labels(no_boxes, 0)


def test_patterns_command(tmp_path):
    out = tmp_path / "sheet.png"
    result = CliRunner().invoke(main, ["patterns", "--K", "5", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "226 patterns" in result.output and "[0, 19, 38, 57, 76, 96]" in result.output
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width > 96 * 10
    result = CliRunner().invoke(main, ["patterns", "--K", "4", "--size", "112x112", "--out", str(out)])
    assert result.exit_code == 0 and "101 patterns" in result.output
    assert "HEIGHTxWIDTH" in run_error(["patterns", "--K", "4", "--size", "112", "--out", str(out)])
    assert "'--K'" in run_error(["patterns", "--K", "0"])
