"""occgen split, build --identities and all-pairs sets (build --pairs all), on real LFW and lfw-mini."""

from __future__ import annotations

import json
from collections import Counter
from itertools import combinations

import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import shared

from occgen.cli import main
from occgen.errors import UserError
from occgen.occlude.plan import sample_key
from occgen.occlude.sources import open_source
from occgen.sets.allpairs import AllPairsOptions, all_pairs
from occgen.sets.pairs import read_pairs
from occgen.sets.split import read_identity_list, select_identities, split_at_random, split_by_folds


def run(*args, ok: bool = True):
    result = CliRunner().invoke(main, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output + repr(result.exception)
    return result


@pytest.fixture(scope="module")
def lfw():
    return open_source(str(shared("lfw-112x96")))


@pytest.fixture(scope="module")
def lfw_pairs():
    return read_pairs(shared("lfw-meta") / "pairs.txt")


def test_fold_split_of_real_lfw_keeps_the_tenth_fold_s_people_out_of_training(lfw, lfw_pairs, tmp_path):
    out = tmp_path / "split"
    result = run(
        "split", "--src", shared("lfw-112x96"), "--pairs", shared("lfw-meta") / "pairs.txt", "--fold", 9, "--out", out
    )
    assert "test: 451 people, 1,611 images (175 people with 2+ images)" in result.output
    train, test = read_identity_list(out / "train.txt"), read_identity_list(out / "test.txt")
    tenth = {img.split("/")[0] for p in lfw_pairs if p.fold == 9 for img in (p.first, p.second)}
    assert set(test) == tenth and not set(train) & tenth
    assert sorted(train + test) == sorted(lfw.identities) and len(train) == 5298
    record = json.loads((out / "split.json").read_text())
    assert record["method"] == "folds" and record["folds"] == [9]
    assert record["test"]["images"] + record["train"]["images"] == 13233
    assert record["train"]["identities_with_2_images"] + record["test"]["identities_with_2_images"] == 1680
    # the fold numbering is the one pairs.parquet and `fromnet eval --fold` use: 0..9
    assert (
        "LFW's tenth fold is 9"
        in run(
            "split",
            "--src",
            shared("lfw-112x96"),
            "--pairs",
            shared("lfw-meta") / "pairs.txt",
            "--fold",
            10,
            "--out",
            out,
            ok=False,
        ).output
    )


def test_a_person_in_the_test_fold_and_another_fold_is_on_the_test_side(lfw_mini, tmp_path):
    source = open_source(str(lfw_mini / "aligned-112x96"))
    a, b, c = source.identities[:3]
    (tmp_path / "p.txt").write_text(f"2 1\n{a} 1 2\n{a} 1 {b} 1\n{c} 1 2\n{a} 3 {c} 2\n")
    split = split_by_folds(source, read_pairs(tmp_path / "p.txt"), [1], "p.txt")
    assert split.test == (a, c)  # a is named in folds 0 and 1
    assert b in split.train and a not in split.train and len(split.train) == len(source.identities) - 2


def test_random_split_is_seeded_and_draws_only_people_with_enough_images(lfw):
    split = split_at_random(lfw, 0.2, seed=3, min_test_images=2)
    counts = Counter(it.identity_name for it in lfw.items)
    assert len(split.test) == round(0.2 * 1680) and all(counts[n] >= 2 for n in split.test)
    assert not set(split.test) & set(split.train) and len(split.test) + len(split.train) == 5749
    assert split_at_random(lfw, 0.2, seed=3, min_test_images=2).test == split.test
    assert split_at_random(lfw, 0.2, seed=4, min_test_images=2).test != split.test
    assert split.record["method"] == "random" and split.record["eligible"] == 1680
    with pytest.raises(UserError, match="between 0 and 1"):
        split_at_random(lfw, 1.5, 0)


def test_build_identities_keeps_keys_and_images_and_numbers_people_anew(lfw_mini, tmp_path):
    faces = lfw_mini / "aligned-112x96"
    common = [
        "--src",
        faces,
        "--out",
        tmp_path / "shards",
        "--manifests",
        tmp_path / "m",
        "-j",
        1,
        "-q",
        "--scales",
        "2",
    ]
    run("build", *common, "--name", "whole")
    names = sorted(open_source(str(faces)).identities)[3:6]
    (tmp_path / "ids.txt").write_text("\n".join(names) + "\n")
    run("build", *common, "--name", "part", "--identities", tmp_path / "ids.txt")
    whole = pd.read_parquet(tmp_path / "m" / "whole" / "samples.parquet").set_index("key")
    part = pd.read_parquet(tmp_path / "m" / "part" / "samples.parquet").set_index("key")
    assert set(part["identity_name"]) == set(names) and sorted(set(part["identity"])) == [0, 1, 2]
    assert (part["sha256"] == whole.loc[part.index, "sha256"]).all()  # same keys, same seeds, same bytes
    assert json.loads((tmp_path / "m" / "part" / "build.json").read_text())["identities"] == names
    tar = next((tmp_path / "shards").glob("part-*.tar"))
    original = tar.read_bytes()
    tar.unlink()
    assert "repaired 1 of 1" in run("verify", tmp_path / "m" / "part", "--repair", "-j", 1).output
    assert tar.read_bytes() == original  # --repair rebuilt the subset, not the whole source
    (tmp_path / "bad.txt").write_text("Nobody_Here\n")
    result = run("build", *common, "--name", "bad", "--identities", tmp_path / "bad.txt", ok=False)
    assert result.exit_code != 0 and "lacks (first: Nobody_Here)" in result.output


def test_all_pairs_of_lfw_s_tenth_fold(lfw, lfw_pairs):
    test = split_by_folds(lfw, lfw_pairs, [9], "pairs.txt").test
    source = select_identities(lfw, test)
    built = all_pairs(source, "N-O", AllPairsOptions(max_per_identity=10, seed=0))
    pairs = built.table.to_pandas()
    images = sorted(set(pairs["src1"]) | set(pairs["src2"]))
    per_person = Counter(src.split("/")[0] for src in images)
    full = Counter(it.identity_name for it in source.items)
    assert all(per_person[n] == min(full[n], 10) for n in test)  # at most 10 a person, all of the rest
    assert len(images) == 909
    # every pair of the chosen images is there once, in path order, genuine when the people match
    assert len(pairs) == 909 * 908 // 2
    expect_genuine = {(x, y) for x, y in combinations(images, 2) if x.split("/")[0] == y.split("/")[0]}
    genuine = set(zip(pairs.loc[pairs["same"], "src1"], pairs.loc[pairs["same"], "src2"]))
    assert genuine == expect_genuine and len(genuine) == 1365
    assert (pairs["src1"] < pairs["src2"]).all()
    # N-O: first clean (copy 0), second occluded (copy 1)
    assert (pairs["key1"] == pairs["src1"].map({s: sample_key(s, 0) for s in images})).all()
    assert (pairs["key2"] == pairs["src2"].map({s: sample_key(s, 1) for s in images})).all()
    # balanced: per identity fold as many impostor pairs as genuine ones, both people of that fold
    bal = pairs[pairs["balanced"]]
    per_fold = bal.groupby(["fold", "same"]).size().unstack()
    assert (per_fold[True] == per_fold[False]).all() and per_fold[True].sum() == 1365
    assert (bal["fold"] >= 0).all()
    person_fold = {}
    for src, fold in zip(pairs.loc[pairs["same"], "src1"], pairs.loc[pairs["same"], "fold"]):
        assert person_fold.setdefault(src.split("/")[0], fold) == fold  # one fold per person
    # a seeded sample of impostors keeps every genuine pair
    sampled = all_pairs(source, "N-O", AllPairsOptions(impostors=5000, seed=0)).table.to_pandas()
    assert sampled["same"].sum() == 1365 and (~sampled["same"]).sum() == 5000
    other = all_pairs(source, "N-O", AllPairsOptions(impostors=5000, seed=1)).table.to_pandas()
    assert set(other["src1"] + other["src2"]) != set(sampled["src1"] + sampled["src2"])


def test_all_pairs_build_is_the_same_for_any_job_count_and_protocol_picks(lfw_mini, tmp_path):
    faces = lfw_mini / "aligned-112x96"
    outputs = []
    for jobs in (1, 2):
        root = tmp_path / f"j{jobs}"
        run(
            "build",
            "--src",
            faces,
            "--pairs",
            "all",
            "--max-per-identity",
            3,
            "--scales",
            2,
            "--both",
            "--out",
            root / "shards",
            "--manifests",
            root / "m",
            "-j",
            jobs,
            "-q",
            "--shard-size",
            10,
            "--name",
            "oo",
        )
        outputs.append(
            [(root / "m" / "oo" / "pairs.parquet").read_bytes()]
            + [p.read_bytes() for p in sorted((root / "shards").glob("*.tar"))]
        )
    assert outputs[0] == outputs[1]
    pairs = pd.read_parquet(tmp_path / "j1" / "m" / "oo" / "pairs.parquet")
    assert set(pairs["protocol"]) == {"O-O"} and pairs["same"].sum() == 12 * 3 and len(pairs) == 36 * 35 // 2
    samples = pd.read_parquet(tmp_path / "j1" / "m" / "oo" / "samples.parquet")
    assert samples["occluded"].all() and set(samples["key"]) == set(pairs["key1"]) | set(pairs["key2"])
    result = run("build", "--src", faces, "--impostors", 10, "--name", "x", "--manifests", tmp_path / "m2", ok=False)
    assert "go with --pairs all" in result.output
