"""Verification metrics on hand-worked examples, and the ROC against scikit-learn's."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_curve as sk_roc_curve

from fromnet.eval import metrics
from occgen.errors import UserError


def test_best_threshold_hand_worked_ties_go_to_the_lowest():
    # sorted: 0.1i 0.3i 0.4g 0.5i 0.8g 0.9g; right decisions at t = 0.35 and t = 0.65 are both 5 of 6
    scores = np.array([0.9, 0.8, 0.4, 0.5, 0.3, 0.1])
    same = np.array([1, 1, 1, 0, 0, 0], bool)
    t, acc = metrics.best_threshold(scores, same)
    assert t == pytest.approx(0.35) and acc == pytest.approx(5 / 6)
    assert metrics.accuracy_at(scores, same, 0.65) == pytest.approx(5 / 6)
    assert metrics.accuracy_at(scores, same, 0.45) == pytest.approx(4 / 6)


def test_kfold_thresholds_are_chosen_on_the_other_folds():
    # fold 0: g 0.9, i 0.2 | fold 1: g 0.7, i 0.6 | fold 2: g 0.5, i 0.4
    scores = np.array([0.9, 0.2, 0.7, 0.6, 0.5, 0.4])
    same = np.array([1, 0, 1, 0, 1, 0], bool)
    folds = np.array([0, 0, 1, 1, 2, 2])
    r = metrics.kfold_accuracy(scores, same, folds)
    # worked by hand: fold 0 from {0.7g 0.6i 0.5g 0.4i} -> 0.45; fold 1 from {0.9g 0.2i 0.5g 0.4i} -> 0.45;
    # fold 2 from {0.9g 0.2i 0.7g 0.6i} -> 0.65
    assert r.thresholds == pytest.approx([0.45, 0.45, 0.65])
    assert r.accuracies == pytest.approx([1.0, 0.5, 0.5])
    assert r.correct.tolist() == [True, True, True, False, False, True]
    assert r.mean == pytest.approx(2 / 3)
    assert r.std == pytest.approx(np.sqrt(1 / 18))  # population std of 1, 0.5, 0.5


def test_kfold_needs_two_folds_and_round_robin_gives_both_classes_to_every_fold():
    same = np.array([True] * 20 + [False] * 20)
    with pytest.raises(UserError, match="at least 2 folds"):
        metrics.kfold_accuracy(np.linspace(0, 1, 40), same, np.zeros(40))
    folds = metrics.round_robin_folds(same, 10)
    for f in range(10):
        assert same[folds == f].sum() == 2 and (~same[folds == f]).sum() == 2


def test_tar_at_far_with_tied_impostor_scores():
    impostor = [0.9, 0.8, 0.8, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0, -0.1]
    genuine = [0.95, 0.85, 0.8, 0.7, 0.6]
    scores = np.array(genuine + impostor)
    same = np.array([True] * 5 + [False] * 10)
    r = metrics.tar_at_far(scores, same, 0.1)  # k = 1: threshold = 2nd highest impostor, 0.8
    assert (r.threshold, r.far_actual, r.tar, r.impostors) == (0.8, 0.1, 0.4, 10)  # genuine 0.8 ties: rejected
    r = metrics.tar_at_far(scores, same, 0.2)  # k = 2: the 3rd highest is 0.8 again; the tie keeps FAR at 0.1
    assert (r.threshold, r.far_actual, r.tar) == (0.8, 0.1, 0.4)
    r = metrics.tar_at_far(scores, same, 0.3)
    assert (r.threshold, r.far_actual, r.tar) == (0.5, 0.3, 1.0)
    r = metrics.tar_at_far(scores, same, 0.05)  # below 1/10: refused, not extrapolated
    assert r.tar is None and "needs >= 20 impostor pairs; have 10" in r.refused


def test_roc_points_agree_with_sklearn_including_ties():
    rng = np.random.default_rng(0)
    same = rng.random(500) < 0.5
    scores = np.round(rng.normal(same * 1.0, 1.0), 1)  # coarse rounding: many ties
    fpr, tpr, thr = metrics.roc_curve(scores, same)
    sk_fpr, sk_tpr, sk_thr = sk_roc_curve(same, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    np.testing.assert_allclose(thr[1:], sk_thr[1:])
    assert metrics.auc(fpr, tpr) == pytest.approx(np.trapezoid(sk_tpr, sk_fpr))


def test_scores():
    a = np.array([[1.0, 0.0], [3.0, 4.0], [0.0, 0.0]])
    b = np.array([[0.0, 2.0], [6.0, 8.0], [1.0, 1.0]])
    assert metrics.cosine_scores(a, b) == pytest.approx([0.0, 1.0, 0.0])
    assert metrics.euclidean_scores(a, b) == pytest.approx([-np.sqrt(5), -5.0, -np.sqrt(2)])
