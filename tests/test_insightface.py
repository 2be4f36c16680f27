"""insightface's formats in: RecordIO training sets (train.rec/.idx/property) and .bin verification sets.

The fixtures are written here from the formats' specifications (dmlc-core's RecordIO writer, MXNet's IRHeader,
insightface's face2rec layout and its pickled .bin), independently of the readers under test.
"""

from __future__ import annotations

import copyreg
import importlib.util
import io
import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import shared
from PIL import Image

from fromnet.cli import main as fromnet_main
from occgen.cli import main as occgen_main
from occgen.errors import UserError
from occgen.formats.binset import folds, parse
from occgen.images import crop_center, decode_array
from occgen.occlude.sources import open_source, read_input
from occgen.sets.pairs import bin_pairs, read_pairs

MAGIC = 0xCED7230A


def dmlc_record(data: bytes) -> bytes:
    """One record as dmlc-core's RecordIOWriter writes it: split wherever the magic number occurs at a 4-byte
    aligned position (cflag 1 first, 2 middle, 3 last part; the magic itself dropped), each part padded to 4."""
    magic = struct.pack("<I", MAGIC)
    cuts, start = [], 0
    for i in range(0, len(data) // 4 * 4, 4):
        if data[i : i + 4] == magic:
            cuts.append(data[start:i])
            start = i + 4
    parts = [*cuts, data[start:]]
    out = b""
    for n, part in enumerate(parts):
        cflag = 0 if len(parts) == 1 else 1 if n == 0 else 3 if n == len(parts) - 1 else 2
        out += struct.pack("<II", MAGIC, cflag << 29 | len(part)) + part + b"\0" * (-len(part) % 4)
    return out


def ir_pack(label, image: bytes, id_: int = 0, id2: int = 0) -> bytes:
    """MXNet's recordio.pack: IRHeader 'IfQQ'; a vector label sets flag = its length and follows the header."""
    if np.ndim(label):
        vec = np.asarray(label, "<f4")
        return struct.pack("<IfQQ", len(vec), 0.0, id_, id2) + vec.tobytes() + image
    return struct.pack("<IfQQ", 0, float(label), id_, id2) + image


def write_rec(folder: Path, records: list[tuple[int, bytes]], classes: int | None = None) -> Path:
    """train.rec + train.idx ('key\\toffset' lines, as MXIndexedRecordIO writes) + property."""
    folder.mkdir(parents=True, exist_ok=True)
    rec, idx = bytearray(), []
    for key, payload in records:
        idx.append(f"{key}\t{len(rec)}\n")
        rec += dmlc_record(payload)
    (folder / "train.rec").write_bytes(bytes(rec))
    (folder / "train.idx").write_text("".join(idx))
    if classes is not None:
        (folder / "property").write_text(f"{classes},112,112")
    return folder


def arcface(path: Path, fmt: str = "JPEG") -> bytes:
    """A 112x96 SphereFace crop padded to insightface's 112x112 ArcFace crop (the template 8 px to the right),
    encoded; PNG keeps the face's pixels exact."""
    face = decode_array(path.read_bytes())
    buf = io.BytesIO()
    padded = Image.fromarray(np.pad(face, ((0, 0), (8, 8), (0, 0)), mode="edge"))
    padded.save(buf, fmt, **({"quality": 95} if fmt == "JPEG" else {"compress_level": 1}))
    return buf.getvalue()


def insightface_set(folder: Path, faces: list[tuple[int, bytes]], header: bool = True, vector: bool = False) -> Path:
    """faces (label, image) in face2rec's layout: record 0 the header (label [first identity record, end],
    no image), faces 1..N, then one record per identity with the range [start, end) of its faces."""
    records = []
    for n, (label, image) in enumerate(faces, 1):
        lab = [label, 0.5] if vector and n % 2 else label
        records.append((n, ir_pack(lab, image, id_=MAGIC if n == 2 else 0, id2=MAGIC if n == 3 else n)))
    labels = sorted({lab for lab, _ in faces})
    if header:
        first_identity = len(faces) + 1
        records.insert(0, (0, ir_pack([first_identity, first_identity + len(labels)], b"")))
        for i, lab in enumerate(labels):
            keys = [n for n, (label, _) in enumerate(faces, 1) if label == lab]
            records.append((first_identity + i, ir_pack([keys[0], keys[-1] + 1], b"")))
    return write_rec(folder, records, len(labels))


@pytest.fixture(scope="module")
def mini_faces() -> list[tuple[int, bytes, str]]:
    """(label, 112x112 JPEG, source path) of 4 lfw-mini people x 3 images."""
    root = shared("lfw-mini") / "aligned-112x96"
    people = sorted(p for p in root.iterdir() if p.is_dir())[:4]
    return [(i, arcface(f), f) for i, p in enumerate(people) for f in sorted(p.iterdir())[:3]]


def run(*args, ok: bool = True, cli=occgen_main):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def test_dmlc_writer_splits_at_the_magic():
    data = struct.pack("<III", 1, MAGIC, 2) + b"xy"
    rec = dmlc_record(data)
    assert struct.unpack_from("<II", rec) == (MAGIC, 1 << 29 | 4)
    assert struct.unpack_from("<II", rec, 12) == (MAGIC, 3 << 29 | 6)


@pytest.mark.parametrize("header", [True, False])
def test_recordio_source_labels_vectors_and_split_records(tmp_path, mini_faces, header):
    faces = [(label, image) for label, image, _ in mini_faces]
    folder = insightface_set(tmp_path / "faces_test_112x112", faces, header=header, vector=True)
    source = open_source(str(folder))
    assert source.kind == "recordio" and not source.skipped
    assert [it.rel for it in source.items] == [f"{lab}/{n:08d}" for n, (lab, _) in enumerate(faces, 1)]
    assert [it.identity for it in source.items] == [lab for lab, _ in faces]  # vector labels: the first element
    # records 2 and 3 hold the magic number in their header, so they were written in parts
    for item, (_, image) in zip(source.items, faces):
        assert read_input(source.root, item) == image


def test_recordio_build_and_train_end_to_end(tmp_path, mini_faces):
    faces = [(label, image) for label, image, _ in mini_faces]
    folder = insightface_set(tmp_path / "faces_test_112x112", faces, vector=True)
    out, manifests = tmp_path / "shards", tmp_path / "manifests"
    common = ["--out", out, "--manifests", manifests, "-q", "--shard-size", "5"]
    text = run("build", "--src", folder, "-j", "2", *common, "--scales", "1").output
    assert "12 samples" in text or "12 done" in text, text
    rows = pd.read_parquet(manifests / "occ-faces_test_112x112" / "samples.parquet")
    assert len(rows) == 12 and set(rows["width"]) == {112} and set(rows["height"]) == {112}
    assert rows["identity"].tolist() == [lab for lab, _ in faces]
    assert rows["src"].tolist()[0] == "0/00000001"
    # on a Dask cluster (each task seeks to its own records) the samples are the same; verify --repair reads back
    dask = ["--backend", "dask", "-j", "2"] if importlib.util.find_spec("distributed") else ["-j", "1"]
    run("build", "--src", folder, *dask, *common, "--scales", "1", "--name", "again")
    again = pd.read_parquet(manifests / "again" / "samples.parquet")
    assert again["key"].tolist() == rows["key"].tolist() and again["sha256"].tolist() == rows["sha256"].tolist()
    a = sorted(p.read_bytes() for p in out.glob("occ-faces_test_112x112-*.tar"))
    (out / "occ-faces_test_112x112-000001.tar").unlink()
    run("verify", manifests / "occ-faces_test_112x112", "--repair", "-j", "1", "-q")
    assert sorted(p.read_bytes() for p in out.glob("occ-faces_test_112x112-*.tar")) == a
    # --crop 112x96 gives FROM's input size; train on it a few steps and evaluate on a .bin of the same faces
    run("build", "--src", folder, "-j", "1", *common, "--crop", "112x96", "--name", "crop", "--K", "5")
    rows = pd.read_parquet(manifests / "crop" / "samples.parquet")
    assert set(rows["width"]) == {96} and set(rows["height"]) == {112}
    model = tmp_path / "run"
    tiny = ["--backbone", "r18", "--width-mult", "0.25", "--batch-size", "4", "--steps", "1", "-j", "0"]
    run("train", "--shards", manifests / "crop", "--K", "5", *tiny, "--out", model, cli=fromnet_main)
    pairs = [(0, 1, True), (3, 6, False), (4, 5, True), (7, 9, False), (9, 11, True), (2, 10, False)]
    images = [faces[i][1] for a, b, _ in pairs for i in (a, b)]
    (tmp_path / "mini.bin").write_bytes(pickle.dumps((images, [s for _, _, s in pairs]), protocol=4))
    out = tmp_path / "res"
    run("eval", "--bin", tmp_path / "mini.bin", "--crop", "112x96", "--model", model, "--out", out, cli=fromnet_main)
    result = json.loads((out / "results.json").read_text())["verification"][0]
    assert result["pairs"] == 6 and result["genuine"] == 3 and 0 <= result["accuracy"] <= 1


def test_registered_name_card_names_the_path_and_format(tmp_path, mini_faces, monkeypatch):
    folder = insightface_set(tmp_path / "faces_webface_112x112", [(lab, img) for lab, img, _ in mini_faces[:4]])
    monkeypatch.setenv("OCCGEN_SRC_WEBFACE", str(folder))
    run("build", "--src", "webface", "--out", tmp_path / "s", "--manifests", tmp_path / "m", "-q", "-j", "1")
    card = (tmp_path / "m" / "occ-webface" / "README.md").read_text()
    assert f"source: `webface` = `{folder}` (an insightface RecordIO set (train.rec + train.idx))" in card


def test_truncated_record_and_bad_magic_are_recorded(tmp_path, mini_faces):
    faces = [(label, image) for label, image, _ in mini_faces]
    folder = insightface_set(tmp_path / "set", faces)
    rec = folder / "train.rec"
    offsets = {int(k): int(o) for k, o in (ln.split("\t") for ln in (folder / "train.idx").read_text().splitlines())}
    data = bytearray(rec.read_bytes())
    data[offsets[5] : offsets[5] + 4] = b"\0\0\0\0"  # record 5: bad magic
    rec.write_bytes(bytes(data[: offsets[12] + 100]))  # record 12 (the last face) cut short; identity records gone
    source = open_source(str(folder))
    assert [why for what, why in source.skipped if what == "record 5"][0].startswith("no RecordIO record at byte")
    assert len(source.items) == 11  # record 12's header is there; its image is not
    out, manifests = tmp_path / "shards", tmp_path / "manifests"
    result = run("build", "--src", folder, "--out", out, "--manifests", manifests, "-q", "-j", "1", ok=False)
    assert result.exit_code == 1  # 2 of 12 inputs unusable: over the default --max-errors 1%
    errors = pd.read_parquet(manifests / "occ-set" / "errors.parquet")
    reasons = dict(zip(errors["input"], errors["reason"]))
    assert "no RecordIO record" in reasons["record 5"]
    assert "truncated record" in reasons["3/00000012"]
    assert len(pd.read_parquet(manifests / "occ-set" / "samples.parquet")) == 10


def test_recordio_user_errors(tmp_path, mini_faces):
    folder = insightface_set(tmp_path / "set", [(0, mini_faces[0][1])])
    (folder / "train.idx").unlink()
    assert "no index train.idx" in run("build", "--src", folder, ok=False).output
    (folder / "train.idx").write_text("0\t0\n1\t999999\n")
    assert "truncated record at byte 999999" in run("build", "--src", folder, ok=False).output
    (folder / "train.idx").write_text("zero\t0\n")
    assert "expected 'key<TAB>offset'" in run("build", "--src", folder, ok=False).output
    (folder / "train.rec").write_bytes(b"\0" * 64)
    (folder / "train.idx").write_text("1\t0\n")
    out = run("build", "--src", folder, "--out", tmp_path / "o", "--manifests", tmp_path / "m", ok=False).output
    assert "none of the 1 face records" in out and "Traceback" not in out


# ---- .bin verification sets ----


def py2_bin(images: list[bytes], issame: list[bool]) -> bytes:
    """A pickle as Python 2's pickle.dump(..., protocol=2) writes (bins, issame): images as str (BINSTRING),
    flags as NEWTRUE/NEWFALSE, with the memo puts Python 2 adds."""
    out = [b"\x80\x02", b"]q\x00(", b""]
    for n, img in enumerate(images, 1):
        op = b"U" + bytes([len(img)]) if len(img) < 256 else b"T" + struct.pack("<i", len(img))
        out.append(op + img + b"q" + bytes([n % 256]))
    out += [b"e]q\x01(", *(b"\x88" if s else b"\x89" for s in issame), b"e\x86q\x02."]
    return b"".join(out)


def test_bin_reads_python2_and_python3_pickles():
    images, issame = [b"a" * 10, b"b" * 300, b"c", b"d"], [True, False]
    assert parse(py2_bin(images, issame), "py2") == (tuple(images), tuple(issame))
    for protocol in (2, 3, 4, 5):  # Python 3's writers; protocol 2 spells bytes as _codecs.encode(str, 'latin1')
        assert parse(pickle.dumps((images, issame), protocol=protocol), f"p{protocol}") == (
            tuple(images),
            (True, False),
        )
    assert folds(6000).tolist() == np.repeat(np.arange(10), 600).tolist()
    assert np.bincount(folds(23)).tolist() == [3, 3, 3, 2, 2, 2, 2, 2, 2, 2]


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_bin_with_code_is_refused_and_nothing_runs(tmp_path, protocol):
    marker = tmp_path / "ran"
    payload = pickle.dumps(([b"x", b"y"], [_Evil(marker)]), protocol=protocol)
    evil = tmp_path / "lfw.bin"
    evil.write_bytes(payload)
    with pytest.raises(UserError, match="refused.*posix.system|refused.*os.system|refused.*nt.system"):
        parse(payload, "evil")
    out = run(
        "build", "--src", evil, "--pairs-from-bin", "--out", tmp_path / "o", "--manifests", tmp_path / "m", ok=False
    )
    assert out.exit_code != 0 and "refused" in out.output and "Traceback" not in out.output
    # a global hidden behind a data-looking codecs call is refused too
    sneaky = b"\x80\x02c_codecs\nencode\nq\x00X\x02\x00\x00\x00xyX\x05\x00\x00\x00utf-8\x86R."
    with pytest.raises(UserError):
        parse(sneaky, "sneaky")
    assert not marker.exists()


@pytest.mark.parametrize(
    "opcodes",
    [
        b"(S'touch {m}'\nios\nsystem\n.",  # INST
        b"\x80\x02(cos\nsystem\nS'touch {m}'\no.",  # OBJ
        b"\x80\x02(S'touch {m}'\n\x82\xf0\x85R.",  # EXT1: code 240, registered below as os.system
        b"Ptouch {m}\n.",  # PERSID
        b"\x80\x04\x95\x1c\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x8c\x06system\x93S'touch {m}'\n\x85R.",
    ],
)
def test_bin_code_opcodes_are_refused(tmp_path, opcodes):
    marker = tmp_path / "ran"
    copyreg.add_extension("os", "system", 240)
    try:
        with pytest.raises(UserError, match="refused"):
            parse(opcodes.replace(b"{m}", str(marker).encode()), "evil.bin")
    finally:
        copyreg.remove_extension("os", "system", 240)
    assert not marker.exists()


@pytest.mark.parametrize(
    "obj, message",
    [
        (([b"x", "text"], [True]), "image 1 is a str"),
        (([b"x", b"y"], [2]), "is-same flag 0 is 2"),
        (([b"x", b"y", b"z"], [True]), "3 images for 1 pairs"),
        ({"bins": []}, "expected a pickled pair"),
    ],
)
def test_bin_wrong_contents(obj, message):
    with pytest.raises(UserError, match=message):
        parse(pickle.dumps(obj, protocol=4), "x.bin")
    with pytest.raises(UserError, match="not a readable verification set"):
        parse(b"\x80\x04garbage", "x.bin")


# ---- a .bin written as insightface writes it, from LFW's own pairs list ----


def lfw_pairs(path: Path) -> tuple[str, list[tuple[str, str, bool]]]:
    """LFW pairs.txt -> (header line, [(first, second image path under the faces folder, same)]) in file order."""
    header, *lines = path.read_text().splitlines()
    pairs = []
    for fields in (ln.split() for ln in lines if ln.strip()):
        a, i, b, j = fields if len(fields) == 4 else (fields[0], fields[1], fields[0], fields[2])
        pairs.append((f"{a}/{a}_{int(i):04d}.jpg", f"{b}/{b}_{int(j):04d}.jpg", len(fields) == 3))
    return header, pairs


def write_bin(path: Path, faces: Path, pairs: list[tuple[str, str, bool]], fmt: str) -> Path:
    """insightface's lfw2pack: pickle.dump((bins, issame_list), f, protocol=pickle.HIGHEST_PROTOCOL)."""
    encoded: dict[str, bytes] = {}
    bins = [encoded.setdefault(rel, arcface(faces / rel, fmt)) for a, b, _ in pairs for rel in (a, b)]
    with open(path, "wb") as f:
        pickle.dump((bins, [same for _, _, same in pairs]), f, protocol=pickle.HIGHEST_PROTOCOL)
    return path


def test_lfw_bin_pairs_are_lfw_pairs_txt(tmp_path):
    """All 6,000 pairs of LFW view 2 come back from a .bin in pairs.txt order, with its flags and folds."""
    pairs_file = shared("lfw-meta") / "pairs.txt"
    faces = shared("lfw-112x96")
    header, pairs = lfw_pairs(pairs_file)
    binfile = write_bin(tmp_path / "lfw.bin", faces, pairs, "JPEG")
    source = open_source(str(binfile))
    got = bin_pairs(source)
    expected = read_pairs(pairs_file)  # occgen's own reading of pairs.txt: folds of 600 under the '10 300' header
    assert header.split() == ["10", "300"] and len(got) == 6000
    assert [(p.same, p.fold) for p in got] == [(p.same, p.fold) for p in expected]
    items = {it.rel: it for it in source.items}
    for p in got[::397]:  # the faces behind a sample of pairs are the pairs.txt images, padded
        for rel, name in ((p.first, pairs[p.index][0]), (p.second, pairs[p.index][1])):
            face = crop_center(decode_array(read_input(source.root, items[rel])), (112, 96))
            want = decode_array((faces / name).read_bytes())
            assert np.abs(face.astype(int) - want).mean() < 3  # JPEG again: close, not exact


def test_model_scores_a_bin_as_the_same_pixels_from_folders(tmp_path):
    """eval --bin --crop 112x96 on a .bin of padded PNG faces = eval of the folder's faces through a pairs build =
    eval of a pairs build made from the .bin itself (--pairs-from-bin --crop 112x96)."""
    import test_eval  # the tiny network's saved run

    mini = shared("lfw-mini")
    _, pairs = lfw_pairs(mini / "pairs_mini.txt")  # 20 matched, then 20 mismatched
    matched, mismatched = pairs[:20], pairs[20:]
    tenths = [p for f in range(10) for p in matched[2 * f : 2 * f + 2] + mismatched[2 * f : 2 * f + 2]]
    listing = tmp_path / "pairs10.txt"  # the same 40 pairs as ten folds of 2 + 2
    listing.write_text("10\t2\n" + "".join(f"{pair_line(a, b)}\n" for a, b, _ in tenths))
    binfile = write_bin(tmp_path / "mini.bin", mini / "aligned-112x96", tenths, "PNG")
    model = test_eval.make_run(tmp_path / "run")
    m = tmp_path / "manifests"
    common = ["--clean-ratio", "1", "--format", "png", "--out", tmp_path / "shards", "--manifests", m, "-q", "-j", "1"]
    run("build", "--src", mini / "aligned-112x96", "--pairs", listing, *common, "--name", "nn")
    run("build", "--src", binfile, "--pairs-from-bin", "--crop", "112x96", *common, "--name", "nn-bin")
    fromnet = dict(cli=fromnet_main)
    for name in ("nn", "nn-bin"):
        run("eval", "--pairs", m / name, "--model", model, "--out", tmp_path / name, "-q", **fromnet)
    text = run("eval", "--bin", binfile, "--crop", "112x96", "--model", model, "--out", tmp_path / "bin", **fromnet)
    assert "mini" in text.output
    a, b, c = (json.loads((tmp_path / d / "results.json").read_text())["verification"] for d in ("nn", "bin", "nn-bin"))
    assert len(a) == len(b) == len(c) == 1 and a[0]["pairs"] == b[0]["pairs"] == c[0]["pairs"] == 40
    assert b[0]["folds"] == c[0]["folds"] == 10
    for k in ("accuracy", "fold_accuracies", "fold_thresholds", "auc"):
        np.testing.assert_allclose(a[0][k], b[0][k], atol=1e-6)
        np.testing.assert_allclose(c[0][k], b[0][k], atol=1e-6)
    # without the crop the 112x112 faces do not fit the 112x96 model: a clear error
    out = run("eval", "--bin", binfile, "--model", model, "--out", tmp_path / "x", ok=False, **fromnet).output
    assert "--crop 112x96" in out and "Traceback" not in out


def pair_line(a: str, b: str) -> str:
    """A pairs.txt line for two image paths 'Name/Name_0001.jpg'."""
    (na, ia), (nb, ib) = ((p.split("/")[0], int(p.rsplit("_", 1)[1][:4])) for p in (a, b))
    return f"{na}\t{ia}\t{ib}" if na == nb else f"{na}\t{ia}\t{nb}\t{ib}"
