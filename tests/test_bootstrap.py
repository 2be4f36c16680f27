"""Intervals that resample people: hand-worked resamples, the resample written out, scikit-learn's weighted ROC
and accuracy on real LFW pairs, seeding, and intervals that narrow as people are added."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import shared
from PIL import Image
from sklearn.metrics import accuracy_score
from sklearn.metrics import roc_curve as sk_roc_curve

from fromnet.eval import bootstrap as bs
from fromnet.eval import metrics
from fromnet.eval.verification import verify

# faces A1 A2 B1 B2 C1; two genuine pairs (A 0.9, B 0.4) and four impostor pairs
SRC1 = ["A/1.jpg", "B/1.jpg", "A/1.jpg", "A/2.jpg", "A/1.jpg", "B/2.jpg"]
SRC2 = ["A/2.jpg", "B/2.jpg", "B/1.jpg", "B/2.jpg", "C/1.jpg", "C/1.jpg"]
SCORES = np.array([0.9, 0.4, 0.5, 0.7, 0.2, 0.3])
SAME = np.array([True, True, False, False, False, False])


def test_hand_worked_resamples():
    people = bs.People.of_pairs(SRC1, SRC2)
    assert people.names.tolist() == ["A", "B", "C"]
    # resample 1 draws A once, B twice, C never; resample 2 draws A twice and C once (last column: 'nobody')
    c = np.array([[1, 2, 0, 1], [2, 0, 1, 1], [1, 1, 1, 1]], dtype=float)
    correct = (SCORES > 0.45) == SAME  # A's genuine, A-C and B-C right
    # weights: r1 = 1, 2, 2, 2, 0, 0 -> 1 of 7 right; r2 = 2, 0, 0, 0, 2, 0 -> 4 of 4; r3 = all 1 -> 3 of 6
    assert bs.share(c, people, correct) == pytest.approx([1 / 7, 1.0, 0.5])
    tar = bs.tar_at_far(c, people, SCORES, SAME, [0.5, 0.25])
    # r1: impostors 0.7 (x2), 0.5 (x2); FAR 0.5: k = 2, threshold 0.5 -> genuine weight above: A's 1 of 3
    #     FAR 0.25: k = 1, threshold 0.7 -> 1 of 3
    # r2: impostor 0.2 (x2) only; FAR 0.5: k = 1, threshold 0.2 -> A's genuine (x2) of 2; FAR 0.25: 0.5 < 1: n/a
    # r3: as metrics.tar_at_far on the pairs themselves
    assert tar[0] == pytest.approx([1 / 3, 1 / 3])
    assert tar[1, 0] == pytest.approx(1.0) and np.isnan(tar[1, 1])
    assert tar[2] == pytest.approx([metrics.tar_at_far(SCORES, SAME, f).tar for f in (0.5, 0.25)])
    assert bs.interval(tar[:, 1]) is None  # a resample without enough impostors: no interval, not a guess
    folds = np.array([0, 1, 0, 1, 1, 0])
    kfold = bs.kfold_accuracy(c, people, SCORES, SAME, folds)
    # r3 (every pair once) is metrics.kfold_accuracy itself. r2 holds only fold 0's A genuine (x2) and fold 1's
    # A-C impostor (x2): fold 0 at the threshold of {0.2 impostor} = 0.2 -> 0.9 accepted, right; fold 1 at the
    # threshold of {0.9 genuine} = 0.9 - 1 -> 0.2 accepted, wrong: 2 of 4
    assert kfold[2] == pytest.approx(metrics.kfold_accuracy(SCORES, SAME, folds).correct.mean())
    assert kfold[1] == pytest.approx(0.5)


def written_out(scores, same, people, c_row):
    """The resample as explicit pairs: each pair repeated as often as its people were drawn together."""
    w = (c_row[people.first] * c_row[people.second]).astype(int)
    return np.repeat(scores, w), np.repeat(same, w)


def test_weighted_statistics_equal_the_resample_written_out():
    rng = np.random.default_rng(0)
    person = np.sort(rng.integers(0, 25, 90))
    i, j = np.triu_indices(len(person), 1)
    src = np.array([f"p{p}/{k}.jpg" for k, p in enumerate(person)], dtype=object)
    same = person[i] == person[j]
    scores = np.round(rng.normal(same * 1.5, 1.0), 2)  # rounded: ties at thresholds
    people = bs.People.of_pairs(src[i], src[j])
    c = bs.counts(people.n, bs.Bootstrap(5, seed=1))
    correct = (scores > 0.7) == same
    fars = (1e-2, 1e-3)
    tar = bs.tar_at_far(c, people, scores, same, fars)
    acc = bs.share(c, people, correct)
    folds = person[i] % 4  # identity folds: each fold's threshold chosen on the other folds
    kfold = bs.kfold_accuracy(c, people, scores, same, folds)
    for b in range(len(c)):
        s, y = written_out(scores, same, people, c[b])
        assert acc[b] == pytest.approx(np.mean((s > 0.7) == y))
        w = (c[b, people.first] * c[b, people.second]).astype(int)
        assert kfold[b] == pytest.approx(metrics.kfold_accuracy(s, y, np.repeat(folds, w)).correct.mean())
        for f, far in enumerate(fars):
            assert tar[b, f] == pytest.approx(metrics.tar_at_far(s, y, far).tar)


def pixel_embedding(path) -> np.ndarray:
    """A cheap fixed embedding: the 4x4-pooled grey face, centred, unit norm (tools/pixel_embeddings.py)."""
    grey = np.asarray(Image.open(path).convert("L"), dtype=np.float32)
    v = grey.reshape(28, 4, 24, 4).mean(axis=(1, 3)).ravel()
    v -= v.mean()
    return v / np.linalg.norm(v)


@pytest.fixture(scope="module")
def lfw_all_pairs():
    """Every pair among the tenth fold's people (at most 10 images each), scored with pixel embeddings."""
    from occgen.occlude.sources import open_source
    from occgen.sets.allpairs import AllPairsOptions, all_pairs
    from occgen.sets.pairs import read_pairs
    from occgen.sets.split import select_identities, split_by_folds

    faces = shared("lfw-112x96")
    source = open_source(str(faces))
    split = split_by_folds(source, read_pairs(shared("lfw-meta") / "pairs.txt"), [9], "pairs.txt")
    table = all_pairs(select_identities(source, split.test), "N-N", AllPairsOptions()).table.to_pandas()
    srcs = sorted(set(table["src1"]) | set(table["src2"]))
    vectors = np.stack([pixel_embedding(faces / s) for s in srcs]).astype(np.float64)
    row = {s: k for k, s in enumerate(srcs)}
    gram = vectors @ vectors.T  # unit vectors: cosine similarity of every pair of faces
    return table, gram[table["src1"].map(row).to_numpy(), table["src2"].map(row).to_numpy()]


def test_tar_at_far_and_its_resamples_agree_with_sklearn_on_real_lfw(lfw_all_pairs):
    table, scores = lfw_all_pairs
    same = table["same"].to_numpy()
    assert len(scores) == 412_686 and same.sum() == 1365
    for far in (1e-3, 1e-4):
        fpr, tpr, _ = sk_roc_curve(same, scores, drop_intermediate=False)
        assert metrics.tar_at_far(scores, same, far).tar == pytest.approx(tpr[fpr <= far].max())
    people = bs.People.of_pairs(table["src1"], table["src2"])
    assert people.n == 451
    c = bs.counts(people.n, bs.Bootstrap(3, seed=7))
    tar = bs.tar_at_far(c, people, scores, same, (1e-3, 1e-4))
    bal = table["balanced"].to_numpy()
    correct = (scores[bal] > np.median(scores[bal])) == same[bal]
    acc = bs.share(c, people.subset(np.flatnonzero(bal)), correct)
    for b in range(len(c)):
        w = c[b, people.first] * c[b, people.second]
        fpr, tpr, _ = sk_roc_curve(same, scores, sample_weight=w, drop_intermediate=False)
        for f, far in enumerate((1e-3, 1e-4)):
            assert tar[b, f] == pytest.approx(tpr[fpr <= far].max())
        assert acc[b] == pytest.approx(
            accuracy_score(same[bal], scores[bal] > np.median(scores[bal]), sample_weight=w[bal])
        )


def test_verify_on_an_all_pairs_set_gives_seeded_intervals(lfw_all_pairs):
    table, scores = lfw_all_pairs
    same, folds, bal = table["same"].to_numpy(), table["fold"].to_numpy(), table["balanced"].to_numpy()
    people = bs.People.of_pairs(table["src1"], table["src2"])
    boot = bs.Bootstrap(200, seed=5)
    r = verify("pixels", {}, scores, same, folds, (1e-3, 1e-4), None, people, boot, bal)
    assert r.balanced_pairs == 2730 and r.folds == 10 and r.impostors == 411_321
    assert r.accuracy_low < r.accuracy < r.accuracy_high
    assert all(t.low < t.tar < t.high for t in r.tar)  # FAR 1e-4 is measured on 411k impostor pairs
    assert r.bootstrap == {"unit": "identity", "people": 451, "resamples": 200, "seed": 5, "level": 0.95}
    again = verify("pixels", {}, scores, same, folds, (1e-3, 1e-4), None, people, boot, bal)
    assert (again.accuracy_low, again.accuracy_high) == (r.accuracy_low, r.accuracy_high)
    other = verify("pixels", {}, scores, same, folds, (1e-3,), None, people, bs.Bootstrap(200, seed=6), bal)
    assert (other.accuracy_low, other.accuracy_high) != (r.accuracy_low, r.accuracy_high)


def synthetic(people: int, seed: int):
    """4 faces a person; genuine scores shift with a per-person difficulty, so pairs of a person correlate."""
    rng = np.random.default_rng(seed)
    person = np.repeat(np.arange(people), 4)
    i, j = np.triu_indices(len(person), 1)
    same = person[i] == person[j]
    scores = rng.normal(0, 1, len(i)) + same * (1.5 + rng.normal(0, 1, people)[person[i]])
    src = np.array([f"p{p}/{k}.jpg" for k, p in enumerate(person)], dtype=object)
    return bs.People.of_pairs(src[i], src[j]), scores, same


def test_intervals_narrow_with_more_people():
    widths = []
    for n in (30, 300):
        people, scores, same = synthetic(n, 0)
        c = bs.counts(people.n, bs.Bootstrap(300, seed=0))
        lo, hi = bs.interval(bs.share(c, people, (scores > 0.75) == same))
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2  # ~ 1/sqrt(10) in theory
