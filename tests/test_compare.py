"""fromnet compare (paired differences, seeds) and the intervals of fromnet eval, on an all-pairs set of lfw-mini."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import shared
from test_eval import make_run

from fromnet.cli import main
from fromnet.cli.embed import ModelRunner
from fromnet.embed import write_embeddings
from fromnet.eval.compare import Figure, differences, figures
from fromnet.eval.pairs import embeddings_table
from fromnet.eval.verification import verify
from occgen.cli import main as occgen_main


def run(cli, *args, ok: bool = True):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output + repr(result.exception)
    return result


@pytest.fixture(scope="module")
def mini(tmp_path_factory) -> dict:
    """Every N-O pair of lfw-mini (12 people x 4 faces, 3 a person), and embeddings of two made-up models: a
    person's own direction plus a little noise ('good') or much noise ('poor'), one folder per model."""
    root = tmp_path_factory.mktemp("cmp")
    run(
        occgen_main,
        "build",
        "--src",
        shared("lfw-mini") / "aligned-112x96",
        "--pairs",
        "all",
        "--max-per-identity",
        3,
        "--scales",
        2,
        "--out",
        root / "shards",
        "--manifests",
        root / "m",
        "-j",
        1,
        "-q",
        "--name",
        "mini-no",
    )
    manifest = root / "m" / "mini-no"
    samples = pd.read_parquet(manifest / "samples.parquet")
    rng = np.random.default_rng(0)
    direction = rng.normal(size=(samples["identity"].max() + 1, 16))
    folders = {}
    for name, noise in (("good", 0.6), ("poor", 1.6)):
        folders[name] = root / name
        vectors = direction[samples["identity"]] + rng.normal(0, noise, (len(samples), 16))
        write_embeddings(embeddings_table(samples["key"], samples["src"], vectors), folders[name] / "mini-no.parquet")
    return dict(root=root, manifest=manifest, **folders)


def three_models(mini) -> list[str]:
    """Good, Poor, and Good again under another name (a model compared with itself)."""
    return [
        "--embeddings",
        f"Good={mini['good']}",
        "--embeddings",
        f"Poor={mini['poor']}",
        "--embeddings",
        f"Again={mini['good']}",
    ]


def test_eval_writes_intervals_with_their_resamples_and_seed(mini, tmp_path):
    out = tmp_path / "ev"
    result = run(
        main,
        "eval",
        "--pairs",
        mini["manifest"],
        "--embeddings",
        mini["good"] / "mini-no.parquet",
        "--bootstrap",
        300,
        "--bootstrap-seed",
        4,
        "--far",
        0.01,
        "--out",
        out,
    )
    assert "300 resamples of the people of each set with replacement (seed 4)" in result.output
    [r] = json.loads((out / "results.json").read_text())["verification"]
    assert r["bootstrap"] == {"unit": "identity", "people": 12, "resamples": 300, "seed": 4, "level": 0.95}
    assert r["accuracy_low"] <= r["accuracy"] <= r["accuracy_high"] and r["balanced_pairs"] == 72
    assert r["tar"][0]["low"] <= r["tar"][0]["tar"] <= r["tar"][0]["high"]
    line = next(ln for ln in result.output.splitlines() if ln.startswith("| mini-no N-O"))
    assert f"{100 * r['accuracy']:.2f} [{100 * r['accuracy_low']:.2f}, {100 * r['accuracy_high']:.2f}]" in line


def test_compare_a_model_with_itself_and_with_a_worse_one(mini, tmp_path):
    out = tmp_path / "cmp"
    result = run(
        main,
        "compare",
        "--pairs",
        mini["manifest"],
        *three_models(mini),
        "--reference",
        "Good",
        "--bootstrap",
        300,
        "--far",
        0.01,
        "--out",
        out,
    )
    report = json.loads((out / "compare.json").read_text())
    by = {(d["model"], d["metric"]): d for d in report["differences"]}
    same = by[("Again", "accuracy")]
    assert (same["value"], same["low"], same["high"], same["verdict"]) == (0.0, 0.0, 0.0, "within noise")
    assert "Again - Good: +0.00 [+0.00, +0.00]: within noise" in result.output
    worse = by[("Poor", "accuracy")]
    assert worse["high"] < 0 and worse["verdict"] == "worse"
    assert f"Poor - Good: {100 * worse['value']:+.2f} [" in result.output
    assert (out / "differences.png").stat().st_size > 0 and (out / "compare.md").is_file()
    assert report["bootstrap"]["resamples"] == 300 and report["reference"] == "Good"


def test_seeds_are_averaged_in_every_resample_and_their_spread_reported():
    def result(acc: float, samples: list[float]):
        r = verify("set", {}, np.array([0.9, 0.1]), np.array([True, False]), np.array([0, 1]), ())
        r.accuracy, r.samples["accuracy"], r.bootstrap = acc, np.array(samples), {"people": 2}
        return r

    figs = figures(
        {
            "B": [[result(0.80, [0.7, 0.8, 0.9])], [result(0.84, [0.74, 0.84, 0.94])]],
            "A": [[result(0.90, [0.9, 0.9, 0.9])]],
        }
    )
    b = next(f for f in figs if f.model == "B")
    assert b.value == pytest.approx(0.82) and b.seeds == [0.80, 0.84]
    assert b.std == pytest.approx(np.std([0.80, 0.84], ddof=1))
    assert b.samples == pytest.approx([0.72, 0.82, 0.92])
    assert b.to_json()["min"] == 0.80 and b.to_json()["max"] == 0.84
    [d] = differences(figs, "A")
    assert d.value == pytest.approx(-0.08) and d.verdict == "within noise"  # per resample: -0.18, -0.08, +0.02


def test_verdicts_and_lines():
    def fig(model, value, samples):
        return Figure("s", "accuracy", model, value, None, None, [value], None, 5, np.array(samples))

    ref = fig("Baseline-Aug", 0.80, [0.79, 0.80, 0.81, 0.80])
    better = fig("FROM", 0.818, [0.80, 0.818, 0.836, 0.818])
    [d] = differences([ref, better], "Baseline-Aug")
    assert (
        d.verdict == "better" and d.line().startswith("FROM - Baseline-Aug: +1.80 [+") and d.line().endswith(": better")
    )
    [d] = differences([ref, fig("X", 0.78, [0.77, 0.78, 0.79, 0.78])], "Baseline-Aug")
    assert d.verdict == "worse"


def test_compare_embeds_runs_of_several_seeds(mini, tmp_path):
    runs = [make_run(tmp_path / f"r{s}", "baseline", seed=s) for s in range(3)]
    out = tmp_path / "cmp"
    run(
        main,
        "compare",
        "--pairs",
        mini["manifest"],
        "--model",
        f"A={runs[0]},{runs[1]}",
        "--model",
        f"B={runs[2]}",
        "--bootstrap",
        100,
        "--far",
        0.01,
        "--device",
        "cpu",
        "-q",
        "--out",
        out,
    )
    report = json.loads((out / "compare.json").read_text())
    acc = {f["model"]: f for f in report["figures"] if f["metric"] == "accuracy"}
    assert len(acc["A"]["seeds"]) == 2 and len(acc["B"]["seeds"]) == 1
    assert acc["A"]["value"] == pytest.approx(np.mean(acc["A"]["seeds"]))
    saved = out / "models" / "A" / "1" / "embeddings" / "mini-no.parquet"
    assert saved.is_file()
    # the saved embeddings compare again without embedding
    again = tmp_path / "again"
    run(
        main,
        "compare",
        "--pairs",
        mini["manifest"],
        "--embeddings",
        f"A={out / 'models/A/0/embeddings'},{saved.parent}",
        "--embeddings",
        f"B={out / 'models/B/0/embeddings'}",
        "--bootstrap",
        100,
        "--far",
        0.01,
        "--out",
        again,
    )
    assert json.loads((again / "compare.json").read_text())["figures"] == report["figures"]


def test_compare_user_errors(mini, tmp_path):
    for args, message in [
        (["--embeddings", f"A={mini['good']}"], "at least two models"),
        (["--embeddings", f"A={mini['good']}", "--embeddings", f"A={mini['poor']}"], "given twice"),
        (["--embeddings", f"A={mini['good']}", "--embeddings", f"B={mini['poor']}", "--reference", "C"], "not one of"),
        (["--embeddings", f"A={mini['good']}", "--embeddings", f"B={tmp_path}"], "no mini-no.parquet"),
    ]:
        result = run(main, "compare", "--pairs", mini["manifest"], *args, "--out", tmp_path / "x", ok=False)
        assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output


def test_compare_identification_rank1_with_paired_intervals(mini, tmp_path):
    out = tmp_path / "id"
    # leave-one-out on the set's own faces: a probe's own photo (either copy) is never its match
    result = run(
        main,
        "compare",
        "--gallery",
        mini["manifest"],
        "--probes",
        f"all={mini['manifest']}",
        *three_models(mini),
        "--bootstrap",
        200,
        "--out",
        out,
    )
    report = json.loads((out / "compare.json").read_text())
    good = next(f for f in report["figures"] if f["model"] == "Good")
    assert good["metric"] == "rank-1" and good["people"] == 12 and good["low"] <= good["value"] <= good["high"]
    diffs = {d["model"]: d for d in report["differences"]}
    assert diffs["Again"]["verdict"] == "within noise" and diffs["Again"]["low"] == diffs["Again"]["high"] == 0
    assert diffs["Poor"]["value"] < 0 and "all, rank-1: Poor - Good:" in result.output


def test_embed_reuse_takes_the_clean_faces_from_an_earlier_file(mini, tmp_path):
    # An N-N set and the N-O set of the same faces share their clean images (same bytes, same keys); the occluded
    # copies are new. --reuse must give exactly the vectors a full embedding gives, running only the new faces.
    faces = shared("lfw-mini") / "aligned-112x96"
    common = ["--src", faces, "--pairs", "all", "--max-per-identity", 3, "-j", 1, "-q"]
    common += ["--out", tmp_path / "shards", "--manifests", tmp_path / "m"]
    run(occgen_main, "build", *common, "--clean-ratio", 1, "--name", "mini-nn")
    model = make_run(tmp_path / "run", "baseline")
    emb = ["--model", model, "--device", "cpu", "-q"]
    run(main, "embed", *emb, "--shards", tmp_path / "m" / "mini-nn", "--out", tmp_path / "nn.parquet")
    full = run(main, "embed", *emb, "--shards", mini["manifest"], "--out", tmp_path / "full.parquet")
    reused = run(
        main,
        "embed",
        *emb,
        "--shards",
        mini["manifest"],
        "--reuse",
        tmp_path / "nn.parquet",
        "--out",
        tmp_path / "r.pq",
    )
    samples = pd.read_parquet(mini["manifest"] / "samples.parquet")
    clean = int((~samples["occluded"].astype(bool)).sum())
    assert "taken from --reuse" not in full.output and f"{clean:,} taken from --reuse" in reused.output
    a, b = pd.read_parquet(tmp_path / "full.parquet"), pd.read_parquet(tmp_path / "r.pq")
    assert a["key"].tolist() == b["key"].tolist() and a["image_digest"].tolist() == b["image_digest"].tolist()
    np.testing.assert_allclose(np.stack(a["embedding"]), np.stack(b["embedding"]), atol=1e-5)
    # one runner over several sets (eval, compare --model) reuses across them the same way
    settings = dict(device="cpu", precision="fp32", batch_size=256, flip=False, quiet=True, workers=0, onnx={})
    runner = ModelRunner(str(model), settings)
    runner.embed(tmp_path / "m" / "mini-nn")
    again = runner.embed(mini["manifest"])
    assert runner.reused == clean
    np.testing.assert_allclose(np.stack(again.to_pandas()["embedding"]), np.stack(a["embedding"]), atol=1e-5)
    # occluded copies share keys across sets but not bytes: reuse goes by the bytes
    assert not set(b.loc[b["occluded"], "image_digest"]) & set(pd.read_parquet(tmp_path / "nn.parquet")["image_digest"])
    # a file of another model is refused, with what to do
    other = make_run(tmp_path / "other", "baseline", seed=1)
    bad = run(
        main,
        "embed",
        "--model",
        other,
        "--device",
        "cpu",
        "--shards",
        mini["manifest"],
        "--reuse",
        tmp_path / "nn.parquet",
        "--out",
        tmp_path / "x.pq",
        ok=False,
    )
    assert bad.exit_code != 0 and "reuse only embeddings of the same model" in bad.output
    assert "Traceback" not in bad.output
