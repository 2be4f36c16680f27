"""fromnet embed / eval / export / occlusion on real lfw-mini shards and small generated embeddings files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner
from conftest import shared
from PIL import Image

from fromnet.checkpoint import ModelSpec, save
from fromnet.cli import main
from fromnet.embed import OnnxEmbedder, OnnxOptions, embed_faces, open_embedder
from fromnet.eval.identification import identify
from fromnet.eval.pairs import Embeddings, embeddings_table, read_embeddings, read_pairs, read_pairs_txt
from fromnet.eval.report import region_of
from fromnet.eval.verification import PairSet, evaluate_files, evaluate_set
from fromnet.models import build_model
from fromnet.occlusion import block_means, read_occlusion
from occgen.cli import main as occgen_main
from occgen.errors import UserError
from occgen.label.patterns import pattern_catalog
from occgen.writer import atomic_write, table_bytes

# >= 16 channels everywhere (oneDNN#6035), as tests/test_models.py's TINY
TINY = dict(
    widths=(16, 16, 32, 32),
    depths=(1, 1, 1, 1),
    stem_width=16,
    pyramid_width=16,
    decoder_width=16,
    fc_mask_reduced=4,
    embedding_dim=24,
)


def run(cli, *args: str, ok: bool = True):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def make_run(folder: Path, variant: str = "from", seed: int = 0) -> Path:
    """A run folder with a freshly initialised tiny network, saved the way the trainer saves."""
    torch.manual_seed(seed)
    spec = ModelSpec(variant, 5, (112, 96), "r50", 1.0, dict(TINY))
    model = build_model(**spec.build_kwargs())
    save(folder, 7, {"model_spec": spec.to_dict(), "model": model.state_dict(), "step": 7})
    return folder


@pytest.fixture(scope="module")
def lfw_sets(tmp_path_factory) -> dict[str, Path]:
    """Clean and s = 2 occluded builds of lfw-mini (48 faces each) and a tiny FROM run."""
    faces = shared("lfw-mini") / "aligned-112x96"
    root = tmp_path_factory.mktemp("lfw")
    common = [
        "--src",
        faces,
        "--out",
        root / "shards",
        "--manifests",
        root / "manifests",
        "-j",
        "1",
        "-q",
        "--shard-size",
        "20",
    ]
    run(occgen_main, "build", *common, "--clean-ratio", "1", "--name", "clean")
    run(occgen_main, "build", *common, "--scales", "2", "--name", "occ-2")
    return dict(
        root=root,
        clean=root / "manifests" / "clean",
        occ=root / "manifests" / "occ-2",
        run=make_run(root / "runs" / "tiny"),
        pairs=shared("lfw-mini") / "pairs_mini.txt",
    )


def test_pairs_txt_lfw_view2_and_mini():
    full = read_pairs_txt(shared("lfw-meta") / "pairs.txt")
    assert len(full) == 6000 and full["same"].sum() == 3000
    assert (full.groupby("fold")["same"].agg(["size", "sum"]).values == [600, 300]).all()
    assert full["fold"].tolist()[:600] == [0] * 600 and full["fold"].iloc[600] == 1
    assert full.iloc[0][["src1", "src2", "same"]].tolist() == [
        "Abel_Pacheco/Abel_Pacheco_0001.jpg",
        "Abel_Pacheco/Abel_Pacheco_0004.jpg",
        True,
    ]
    mini = read_pairs_txt(shared("lfw-mini") / "pairs_mini.txt")
    assert len(mini) == 40 and mini["same"].sum() == 20 and set(mini["fold"]) == {0}


def test_bad_pairs_files_are_user_errors(tmp_path):
    for text, message in [
        ("10 300\nA 1 2\n", "header says"),
        ("x y\n", "first line"),
        ("1 1\nA 1\nB 1 C 2\n", "3 fields"),
    ]:
        (tmp_path / "p.txt").write_text(text)
        with pytest.raises(UserError, match=message):
            read_pairs_txt(tmp_path / "p.txt")
    with pytest.raises(UserError, match="no pairs.parquet"):
        read_pairs(tmp_path)


def generated_pairs_manifest(folder: Path, rng) -> tuple[Path, Path]:
    """A pairs manifest in the schema `occgen build --pairs` writes, over 2 folds x 2 protocols, and its
    embeddings: identity vectors plus noise, more noise on occluded copies."""
    people = 40
    base = rng.normal(size=(people, 16))
    keys, srcs, vecs, area = [], [], [], []
    for p in range(people):
        for variant, noise, a in (("clean", 0.5, np.nan), ("occ", 1.5, 0.4)):
            for img in (1, 2):
                keys.append(f"p{p}_{img}-{variant}")
                srcs.append(f"P{p}/P{p}_{img:04d}.jpg")
                vecs.append(base[p] + rng.normal(scale=noise, size=16))
                area.append(a)
    emb = folder / "emb.parquet"
    atomic_write(
        emb, table_bytes(embeddings_table(keys, srcs, np.array(vecs), {"box_area_ratio": np.array(area, np.float32)}))
    )
    rows = []
    for protocol, second in (("N-O", "occ"), ("O-O", "occ")):
        first = "clean" if protocol == "N-O" else "occ"
        for p in range(people):
            q = (p + 1) % people
            same = p % 2 == 0
            other = p if same else q
            rows.append(
                dict(
                    pair=len(rows) % 40,
                    fold=(p * 2) // people,
                    same=same,
                    key1=f"p{p}_1-{first}",
                    key2=f"p{other}_2-{second}",
                    src1=f"P{p}/P{p}_0001.jpg",
                    src2=f"P{other}/P{other}_0002.jpg",
                    protocol=protocol,
                )
            )
    table = pd.DataFrame(rows).astype({"pair": "int32", "fold": "int16"})
    (folder / "pairs").mkdir()
    table.to_parquet(folder / "pairs" / "pairs.parquet", index=False)
    return folder / "pairs", emb


def test_pairs_manifest_is_grouped_by_protocol_and_matched_by_key(tmp_path):
    pairs_dir, emb_path = generated_pairs_manifest(tmp_path, np.random.default_rng(0))
    pairs, emb = read_pairs(pairs_dir), read_embeddings(emb_path)
    results = evaluate_set(pairs, PairSet("gen", emb, emb))
    assert [(r.name, r.pairs, r.genuine, r.folds) for r in results] == [("gen N-O", 40, 20, 2), ("gen O-O", 40, 20, 2)]
    n_o, o_o = results
    assert n_o.mean_area == pytest.approx(0.4) and o_o.mean_area == pytest.approx(0.4)
    assert n_o.accuracy > o_o.accuracy  # more noise on both sides costs accuracy
    assert [t.refused for t in n_o.tar] == [
        "FAR 0.001 needs >= 1,000 impostor pairs; have 20",
        "FAR 0.0001 needs >= 10,000 impostor pairs; have 20",
    ]
    # the same scores by hand: cosine of each pair's two rows, found by key
    rows = {k: i for i, k in enumerate(emb.keys)}
    first = emb.vectors[[rows[k] for k in pairs.key1[:40]]]
    second = emb.vectors[[rows[k] for k in pairs.key2[:40]]]
    from fromnet.eval import metrics

    kf = metrics.kfold_accuracy(metrics.cosine_scores(first, second), pairs.same[:40].to_numpy(), pairs.fold[:40])
    assert n_o.accuracy == pytest.approx(kf.mean) and n_o.fold_thresholds == pytest.approx(kf.thresholds.tolist())
    # one held-out fold, as an experiment evaluates its models: dealt round-robin into 10 folds
    held = evaluate_files(pairs_dir, {"m": (emb_path, emb_path)}, folds=[1])
    assert [(r.name, r.pairs, r.folds) for r in held] == [("m N-O", 20, 10), ("m O-O", 20, 10)]
    assert "round-robin" in held[0].folds_note
    with pytest.raises(UserError, match=r"fold\(s\) \[5\] not in the pairs"):
        evaluate_files(pairs_dir, {"m": (emb_path, emb_path)}, folds=[5])


def test_embeddings_from_elsewhere_match_lfw_pairs_by_src(tmp_path):
    pairs = read_pairs_txt(shared("lfw-mini") / "pairs_mini.txt")
    srcs = sorted(set(pairs.src1) | set(pairs.src2))
    rng = np.random.default_rng(1)
    # another tool's file: its own keys, PNG names; only src says which face is which
    table = embeddings_table(
        [f"row{i}" for i in range(len(srcs))],
        [s.replace(".jpg", ".png") for s in srcs],
        rng.normal(size=(len(srcs), 8)),
    )
    atomic_write(tmp_path / "ext.parquet", table_bytes(table))
    emb = read_embeddings(tmp_path / "ext.parquet")
    [r] = evaluate_set(pairs, PairSet("ext", emb, emb), metric="euclidean")
    assert r.pairs == 40 and r.folds == 10 and "round-robin" in r.folds_note and r.mean_area is None
    missing = emb.subset(np.arange(len(emb) - 1))
    with pytest.raises(UserError, match="1 of 40 first images of the pairs not found by key or by src|not found"):
        evaluate_set(pairs, PairSet("ext", missing, missing))


def test_identification_rank1_own_photo_excluded_and_distractors():
    def emb(srcs, vecs):
        return Embeddings("e", np.array(srcs, dtype=object), np.array(srcs, dtype=object), np.array(vecs, np.float32))

    gallery = emb(["A/1.jpg", "A/2.jpg", "B/1.jpg"], [[1, 0], [1, 0.2], [0, 1]])
    probes = emb(["A/1.jpg", "B/1.jpg", "C/1.jpg"], [[1, 0], [0.3, 1], [1, 1]])
    r = identify("p", gallery, probes)
    # A/1 is matched against A/2 (its own photo is excluded) -> rank 1; B/1's only mate is itself -> no mate; C none
    assert (r.probes, r.no_mate, r.rank1) == (1, 2, 1.0)
    close = emb(["D/9.jpg"], [[1, 0.01]])  # a distractor closer to A/1 than A/2 is
    r = identify("p", gallery, probes, [close])
    assert (r.rank1, r.rank5, r.distractors) == (0.0, 1.0, 1)


def test_region_names():
    assert [region_of(x) for x in ("occ-lfw-left_eye", "left-eye", "eyes", "occ-lfw-2.0", "right face")] == [
        "left_eye",
        "left_eye",
        "eyes",
        None,
        "right_face",
    ]


def test_embed_and_eval_cli_on_lfw_mini(lfw_sets, tmp_path):
    clean, occ = tmp_path / "clean.parquet", tmp_path / "occ.parquet"
    out = run(
        main, "embed", "--model", lfw_sets["run"], "--shards", lfw_sets["clean"], "--out", clean, "--batch-size", "20"
    ).output
    assert "48 faces, 24-d" in out
    run(main, "embed", "--model", lfw_sets["run"], "--shards", lfw_sets["occ"], "--out", occ, "--flip")
    table = pq.read_table(clean)
    assert table.column_names[:3] == ["key", "src", "embedding"]
    assert table.schema.field("embedding").type == pa.list_(pa.float32())
    manifest = pd.read_parquet(lfw_sets["clean"] / "samples.parquet")
    assert table["key"].to_pylist() == manifest["key"].tolist() and table["src"].to_pylist() == manifest["src"].tolist()
    o = read_embeddings(occ)
    assert o.column("occluded").all() and (o.column("box_area_ratio") > 0).all()
    # neither batch size nor decoding worker processes change the rows; flip fusion sums face and mirror
    again = tmp_path / "again.parquet"
    run(
        main,
        "embed",
        "--model",
        lfw_sets["run"],
        "--shards",
        lfw_sets["clean"],
        "--out",
        again,
        "--batch-size",
        "7",
        "-j",
        "2",
    )
    assert pq.read_table(again).drop_columns(["embedding"]).equals(table.drop_columns(["embedding"]))
    np.testing.assert_allclose(read_embeddings(again).vectors, read_embeddings(clean).vectors, atol=1e-5)
    embedder = open_embedder(str(lfw_sets["run"]), "cpu")
    face = np.asarray(Image.open(shared("lfw-mini") / "aligned-112x96/Amelia_Vega/Amelia_Vega_0001.jpg"))[None]
    np.testing.assert_allclose(
        embed_faces(embedder, face, flip=True),
        embedder(face) + embedder(np.ascontiguousarray(face[:, :, ::-1])),
        atol=1e-5,
    )

    res = tmp_path / "res"
    out = run(
        main,
        "eval",
        "--pairs",
        lfw_sets["pairs"],
        "--set",
        f"clean={clean}",
        "--set",
        f"N-O={clean},{occ}",
        "--set",
        f"O-O={occ}",
        "--gallery",
        clean,
        "--probes",
        f"clean={clean}",
        "--probes",
        f"occluded={occ}",
        "--out",
        res,
    ).output
    assert "| N-O " in out and "rank-1" in out
    result = json.loads((res / "results.json").read_text())
    names = [r["name"] for r in result["verification"]]
    assert names == ["clean", "N-O", "O-O"]
    n_o = result["verification"][1]
    assert n_o["pairs"] == 40 and n_o["impostors"] == 20 and len(n_o["fold_accuracies"]) == 10
    assert n_o["mean_area"] > 0.2 and result["verification"][0]["mean_area"] == 0
    assert [r["label"] for r in result["identification"]] == ["clean", "occluded"]
    assert result["identification"][0]["probes"] == 48  # every lfw-mini person has 4 photos
    assert result["plots"] == ["roc.png", "area.png", "identification.png"]
    for png in result["plots"]:
        assert Image.open(res / png).size[0] > 300
    assert "## Verification" in (res / "results.md").read_text()

    # --model embeds manifests on the way, and gives the same figures as the files did
    res2 = tmp_path / "res2"
    run(
        main,
        "eval",
        "--pairs",
        lfw_sets["pairs"],
        "--set",
        f"N-O={lfw_sets['clean']},{lfw_sets['occ']}",
        "--model",
        lfw_sets["run"],
        "--out",
        res2,
        "-q",
    )
    # (occ.parquet above used --flip; compare against a plain embedding of the occluded set)
    plain = tmp_path / "occ-plain.parquet"
    run(main, "embed", "--model", lfw_sets["run"], "--shards", lfw_sets["occ"], "--out", plain)
    res3 = tmp_path / "res3"
    run(main, "eval", "--pairs", lfw_sets["pairs"], "--set", f"N-O={clean},{plain}", "--out", res3)
    a, b = (json.loads((r / "results.json").read_text())["verification"][0] for r in (res2, res3))
    assert a["accuracy"] == pytest.approx(b["accuracy"]) and a["auc"] == pytest.approx(b["auc"])
    assert (res2 / "embeddings" / "occ-2.parquet").is_file()

    # key lists: gallery = first photo of each person, probes = the rest
    keys = manifest.groupby("identity_name")["key"]
    (tmp_path / "g.txt").write_text("\n".join(keys.nth(0)))
    (tmp_path / "p.txt").write_text("\n".join(manifest.key[~manifest.key.isin(keys.nth(0))]))
    res4 = tmp_path / "res4"
    run(
        main,
        "eval",
        "--gallery",
        clean,
        "--gallery-keys",
        tmp_path / "g.txt",
        "--probes",
        occ,
        "--probe-keys",
        tmp_path / "p.txt",
        "--distractors",
        clean,
        "--out",
        res4,
    )
    [ident] = json.loads((res4 / "results.json").read_text())["identification"]
    assert (ident["gallery"], ident["probes"], ident["distractors"]) == (12, 36, 48)


@pytest.mark.parametrize(
    "args,message",
    [
        (["eval", "--set", "x=a.parquet", "--out", "o"], "give --pairs"),
        (["eval", "--pairs", "PAIRS", "--set", "N-O=MANIFEST", "--out", "o"], "give --model to embed it"),
        (["eval", "--pairs", "PAIRS", "--out", "o"], "nothing to evaluate the pairs on"),
        (["embed", "--model", "nowhere", "--shards", "MANIFEST", "--out", "e.parquet"], "no such checkpoint"),
        (["occlusion", "--model", "RUN", "FACE_WRONG_SIZE"], "this model takes aligned 112x96"),
    ],
)
def test_cli_user_errors_are_one_line(lfw_sets, tmp_path, args, message):
    wrong = tmp_path / "wide.jpg"
    Image.new("RGB", (112, 112)).save(wrong)
    subs = {"PAIRS": lfw_sets["pairs"], "MANIFEST": lfw_sets["clean"], "RUN": lfw_sets["run"], "FACE_WRONG_SIZE": wrong}
    result = CliRunner().invoke(main, [str(subs.get(a, a)).replace("MANIFEST", str(lfw_sets["clean"])) for a in args])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_onnx_export_round_trip_and_onnx_embedder(lfw_sets, tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="the [onnx] extra is not installed (make setup installs it)")
    onnx_path = tmp_path / "model.onnx"
    out = run(main, "export", "--onnx", lfw_sets["run"], "--out", onnx_path).output
    assert "opset 17" in out and "batch dynamic" in out

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[0] == "batch"
    embedder = open_embedder(str(lfw_sets["run"]), "cpu")
    faces = np.stack(
        [
            np.asarray(Image.open(p))
            for p in sorted((shared("lfw-mini") / "aligned-112x96" / "Geoff_Hoon").glob("*.jpg"))
        ]
    )
    x = (faces.astype(np.float32).transpose(0, 3, 1, 2) - 127.5) / 127.5
    got = session.run(None, {"input": x})[0]
    assert np.abs(got - embedder(faces)).max() <= 1e-4  # batch of 4, exported with 2: the batch is dynamic
    onnx_embedder = OnnxEmbedder(onnx_path)
    assert onnx_embedder.input_size == (112, 96)
    assert np.abs(onnx_embedder(faces) - embedder(faces)).max() <= 1e-4
    # channel order and normalisation options reach the model: BGR input with BGR option gives the same
    bgr = OnnxEmbedder(onnx_path, OnnxOptions(channels="bgr"))
    assert np.abs(bgr(faces[..., ::-1]) - embedder(faces)).max() <= 1e-4
    # the ONNX model through fromnet embed gives the PyTorch embeddings file
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    run(main, "embed", "--model", f"onnx:{onnx_path}", "--shards", lfw_sets["clean"], "--out", a)
    run(main, "embed", "--model", lfw_sets["run"], "--shards", lfw_sets["clean"], "--out", b)
    assert np.abs(read_embeddings(a).vectors - read_embeddings(b).vectors).max() <= 1e-4


def test_missing_onnxruntime_is_a_clear_error(lfw_sets, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if the [onnx] extra were not installed
    for args in (
        ["export", "--onnx", lfw_sets["run"], "--out", tmp_path / "m.onnx"],
        ["embed", "--model", "onnx:m.onnx", "--shards", lfw_sets["clean"], "--out", tmp_path / "e.parquet"],
    ):
        result = run(main, *args, ok=False)
        assert result.exit_code == 2 and "pip install 'occgen-fromnet[onnx]'" in result.output


def test_block_means_hand_worked():
    # a 2x2 feature grid on a 4x4 face read on a 4x4 block grid: each block sits in one cell
    mask = np.array([[0.0, 1.0], [0.5, 0.25]])
    np.testing.assert_allclose(block_means(mask, 4, 4, 4), np.kron(mask, np.ones((2, 2))))
    # K = 3 on 6x6 pixels over 2x2 cells: the middle blocks straddle two cells and average them by area
    np.testing.assert_allclose(block_means(mask, 3, 6, 6)[1], [0.25, (0 + 1 + 0.5 + 0.25) / 4, 0.625])


def test_occlusion_readout_and_cli(lfw_sets, tmp_path):
    from fromnet.checkpoint import load_model

    loaded = load_model(lfw_sets["run"])
    paths = sorted((shared("lfw-mini") / "aligned-112x96" / "Muhammad_Ali").glob("*.jpg"))[:2]
    faces = np.stack([np.asarray(Image.open(p)) for p in paths])
    readouts = read_occlusion(loaded.model, 5, faces, [p.name for p in paths])
    with torch.inference_mode():
        out = loaded.model((torch.from_numpy(faces).permute(0, 3, 1, 2).float() - 127.5) / 127.5)
    catalog = pattern_catalog(5, 112, 96)
    for n, r in enumerate(readouts):
        assert r.pattern == int(out.pattern_logits[n].argmax())
        assert r.rect == (None if r.pattern == 0 else tuple(catalog[r.pattern].tolist()))
        assert r.grid.shape == (5, 5)
        assert r.grid.mean() == pytest.approx(out.mask[n].mean().item(), abs=0.02)
    drawn = tmp_path / "occ.png"
    text = run(main, "occlusion", "--model", lfw_sets["run"], *paths, "--draw", drawn).output
    assert f"pattern {readouts[0].pattern} " in text and "mask M" in text
    assert Image.open(drawn).size == (2 * 96 * 3, 112 * 3)
    baseline = make_run(tmp_path / "baseline", "baseline")
    result = run(main, "occlusion", "--model", baseline, paths[0], ok=False)
    assert result.exit_code == 2 and "no mask decoder" in result.output
    # The attention variant: its K maps and their importance, drawn as one strip per face.
    torch.manual_seed(0)
    spec = ModelSpec("attention", 4, (112, 96), "r18", 0.25)
    save(
        tmp_path / "attention",
        1,
        {"model_spec": spec.to_dict(), "model": build_model(**spec.build_kwargs()).state_dict(), "step": 1},
    )
    text = run(main, "occlusion", "--model", tmp_path / "attention", *paths, "--draw", drawn).output
    assert text.count("importance: map 0: s = ") == 2 and "map 3" in text
    assert Image.open(drawn).size == (5 * 96, 2 * 112)  # the face and 4 maps, two faces


def test_report_draws_region_bars_for_sets_named_after_regions(tmp_path):
    from fromnet.eval.report import write_report

    pairs_dir, emb_path = generated_pairs_manifest(tmp_path, np.random.default_rng(2))
    results = evaluate_files(pairs_dir, {name: (emb_path, emb_path) for name in ("occ-lfw-nose", "left_eye", "clean")})
    text = write_report(tmp_path / "out", results, [], {"metric": "cosine"})
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    assert data["plots"] == ["roc.png", "regions.png", "area.png"]
    assert Image.open(tmp_path / "out" / "regions.png").size[0] > 300
    assert text.count("| occ-lfw-nose ") == 2  # N-O and O-O rows


def test_partial_face_pairs_group_by_part_and_factor(tmp_path):
    pairs_dir, emb_path = generated_pairs_manifest(tmp_path, np.random.default_rng(3))
    table = pd.read_parquet(pairs_dir / "pairs.parquet")
    # the partial-face columns: holistic rows have no parts
    partial = table["protocol"] == "O-O"
    table["protocol"] = np.where(partial, "partial-same", "holistic")
    table["part1"] = pd.Series(np.where(partial, "nose", None), dtype=object)
    table["part2"] = table["part1"]
    table["factor"] = np.where(partial, np.where(np.arange(len(table)) % 2 == 0, 0.2, 0.4), np.nan).astype(np.float32)
    table["centered"] = pd.array(np.where(partial, False, None), dtype="boolean")
    table.to_parquet(pairs_dir / "pairs.parquet", index=False)
    results = evaluate_files(pairs_dir, {"p": (emb_path, emb_path)})
    assert [r.name for r in results] == [
        "p holistic",
        "p partial-same part1=nose part2=nose factor=0.2 centered=False",
        "p partial-same part1=nose part2=nose factor=0.4 centered=False",
    ]
    assert [r.pairs for r in results] == [40, 20, 20]


def test_partiallfw_protocol_prints_the_papers_table(lfw_sets, tmp_path):
    """Non-centered and centered `occgen partial` sets of lfw-mini's pairs, scored as the attention paper reports."""
    root = lfw_sets["root"]
    faces = shared("lfw-mini") / "aligned-112x96"
    common = [
        "partial",
        "--src",
        faces,
        "--pairs",
        lfw_sets["pairs"],
        "--out",
        root / "shards",
        "--manifests",
        root / "manifests",
        "-j",
        "1",
    ]
    run(occgen_main, *common, "--name", "pl")
    run(occgen_main, *common, "--centered", "--name", "pl-c")
    run_dir = make_run(tmp_path / "attention-like", variant="baseline")
    out = tmp_path / "res"
    result = run(
        main,
        "eval",
        "--model",
        run_dir,
        "--protocol",
        "partiallfw",
        "--pairs",
        root / "manifests" / "pl",
        "--pairs",
        root / "manifests" / "pl-c",
        "--out",
        out,
        "-q",
    )
    summary = json.loads((out / "results.json").read_text())["partiallfw"]
    assert [(r["protocol"], r["centered"]) for r in summary] == [
        ("holistic", None),
        ("partial-holistic", False),
        ("partial-same", False),
        ("partial-cross", False),
        ("partial-holistic", True),
        ("partial-same", True),
        ("partial-cross", True),
    ]
    # partial-holistic and partial-same: 3 parts x 9 factors; partial-cross: 4 pairs of parts x 9
    assert [r["groups"] for r in summary] == [1, 27, 27, 36, 27, 27, 36]
    groups = [
        v
        for v in json.loads((out / "results.json").read_text())["verification"]
        if v["group"].get("protocol") == "partial-same" and v["group"].get("centered") is False
    ]
    assert summary[2]["accuracy"] == pytest.approx(np.mean([v["accuracy"] for v in groups]))
    assert "## PartialLFW" in result.output and "non-centered" in result.output
    bad = run(
        main,
        "eval",
        "--model",
        run_dir,
        "--protocol",
        "partiallfw",
        "--pairs",
        lfw_sets["pairs"],
        "--out",
        out,
        ok=False,
    )
    assert bad.exit_code == 2 and "occgen partial" in bad.output
