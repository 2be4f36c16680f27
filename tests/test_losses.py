"""Margin losses (Eq. 1) against values worked out by hand, pattern and box losses, and the total (Eq. 6)."""

from __future__ import annotations

import math

import pytest
import torch

from fromnet.losses import (
    FromLoss,
    Margin,
    MarginClassifier,
    MarginHead,
    box_loss,
    margin_logits,
    margin_loss,
    pattern_loss,
    target_cosine,
)
from fromnet.models.net import FromOutput

COSFACE, ARCFACE, SPHEREFACE = (Margin.preset(n) for n in ("cosface", "arcface", "sphereface"))


def test_presets_follow_the_paper_notation():
    assert (COSFACE.m1, COSFACE.m2, COSFACE.m3) == (0, 0, 0.35)
    assert (ARCFACE.m1, ARCFACE.m2, ARCFACE.m3) == (0, 0.5, 0)
    assert SPHEREFACE.m1 == 1.5 and SPHEREFACE.m2 == SPHEREFACE.m3 == 0
    assert Margin.preset("cosface", s=64).s == 64
    with pytest.raises(ValueError, match="unknown margin preset"):
        Margin.preset("normface")


def test_cosface_loss_by_hand():
    # cos = (0.5, 0.2), true class 0, s = 30, m3 = 0.35: logits (30 * 0.15, 30 * 0.2) = (4.5, 6.0),
    # loss = -log(e^4.5 / (e^4.5 + e^6)) = log(1 + e^1.5) = 1.70141.
    logits = margin_logits(torch.tensor([[0.5, 0.2]]), torch.tensor([0]), COSFACE)
    assert logits[0].tolist() == pytest.approx([4.5, 6.0])
    assert margin_loss(logits, torch.tensor([0])).item() == pytest.approx(1.70141, abs=1e-5)


def test_arcface_target_by_hand():
    # cos(theta) = 0.5 -> theta = pi/3; cos(pi/3 + 0.5) = 0.5 cos 0.5 - (sqrt(3)/2) sin 0.5
    # = 0.438791 - 0.415195 = 0.023596; the other class keeps its cosine.
    logits = margin_logits(torch.tensor([[-0.1, 0.5]]), torch.tensor([1]), ARCFACE)
    assert logits[0, 1].item() == pytest.approx(30 * 0.023596, abs=1e-4)
    assert logits[0, 0].item() == pytest.approx(-3.0)


def test_arcface_threshold_past_pi():
    # cos = -0.95 -> theta = 2.824, theta + 0.5 > pi: fallback cos - m2 sin m2 = -0.95 - 0.5 * 0.479426 = -1.189713.
    assert target_cosine(torch.tensor([-0.95]), ARCFACE).item() == pytest.approx(-1.189713, abs=1e-5)


def test_sphereface_psi_by_hand():
    m = Margin(1.5, 0, 0, s=64)
    # cos = 0: theta = pi/2, 1.5 theta = 3pi/4 < pi: cos(3pi/4) = -0.707107.
    # cos = -0.8 (sin = 0.6, cos(theta/2) = sqrt(0.1), sin(theta/2) = sqrt(0.9)): 1.5 theta > pi, so k = 1 and
    # psi = -cos(1.5 theta) - 2 = -(-0.8 * 0.316228 - 0.6 * 0.948683) - 2 = 0.822192 - 2 = -1.177808.
    got = target_cosine(torch.tensor([0.0, -0.8]), m)
    assert got.tolist() == pytest.approx([-0.707107, -1.177808], abs=1e-5)


def test_combined_margin_by_hand():
    # m = (0, 0.5, 0.2): cos(pi/3 + 0.5) - 0.2 = 0.023596 - 0.2.
    assert target_cosine(torch.tensor([0.5]), Margin(0, 0.5, 0.2)).item() == pytest.approx(-0.176404, abs=1e-5)


@pytest.mark.parametrize("margin", [COSFACE, ARCFACE, SPHEREFACE, Margin(4, 0, 0), Margin(2, 0.3, 0.1)])
def test_target_is_monotone_with_finite_gradients(margin):
    cos = torch.linspace(-1, 1, 4001, requires_grad=True)
    delta = target_cosine(cos, margin)
    assert (delta[1:] - delta[:-1] >= -1e-6).all()  # never rewards a larger angle
    assert (delta <= cos + 1e-6).all()  # a margin never makes the target easier
    delta.sum().backward()
    assert torch.isfinite(cos.grad).all()


def test_classifier_normalizes_and_keeps_fp32_under_autocast():
    clf = MarginClassifier(4, 3, COSFACE)
    with torch.no_grad():
        clf.weight.copy_(torch.tensor([[2.0, 0, 0, 0], [0, 3.0, 0, 0], [0, 0, 0, 5.0]]))
    emb = torch.tensor([[1.0, 1.0, 0, 0]])
    assert clf.cosine(emb)[0].tolist() == pytest.approx([0.707107, 0.707107, 0.0], abs=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = clf(emb.bfloat16(), torch.tensor([2]))
    assert logits.dtype == torch.float32
    assert logits[0].tolist() == pytest.approx([21.21320, 21.21320, -10.5], abs=1e-4)


def test_pattern_and_box_losses_by_hand():
    # logits (0, ln 3), class 0: p = 1/4, loss ln 4.
    assert pattern_loss(torch.tensor([[0.0, math.log(3)]]), torch.tensor([0])).item() == pytest.approx(math.log(4))
    # Euclidean distances 0.5 (3-4-5) and 0, mean 0.25; the zero distance must not give NaN gradients.
    pred = torch.tensor([[0.1, 0.2, 0.5, 0.6], [0.3, 0.3, 0.7, 0.9]], requires_grad=True)
    target = torch.tensor([[0.4, 0.6, 0.5, 0.6], [0.3, 0.3, 0.7, 0.9]])
    loss = box_loss(pred, target)
    assert loss.item() == pytest.approx(0.25)
    loss.backward()
    assert torch.isfinite(pred.grad).all()


def test_total_is_margin_plus_lambda_times_prediction():
    torch.manual_seed(0)
    crit = FromLoss(MarginHead(8, 5, COSFACE), lam=0.5)
    labels = torch.tensor([0, 3])
    out = FromOutput(embedding=torch.randn(2, 8), mask=None, pattern_logits=torch.randn(2, 7))
    parts = crit(out, labels, patterns=torch.tensor([6, 1]))
    expected_margin = margin_loss(margin_logits(crit.head.classifier.cosine(out.embedding), labels, COSFACE), labels)
    assert parts.margin.item() == pytest.approx(expected_margin.item())
    assert parts.pred.item() == pytest.approx(pattern_loss(out.pattern_logits, torch.tensor([6, 1])).item())
    assert parts.total.item() == pytest.approx(parts.margin.item() + 0.5 * parts.pred.item())
    reg = crit(FromOutput(embedding=out.embedding, box=torch.full((2, 4), 0.5)), labels, boxes=torch.zeros(2, 4))
    assert reg.pred.item() == pytest.approx(1.0)  # |(0.5, 0.5, 0.5, 0.5)| = 1
    base = crit(FromOutput(embedding=out.embedding), labels)
    assert base.pred is None and base.total.item() == pytest.approx(parts.margin.item())
    with pytest.raises(ValueError, match="pass their labels"):
        crit(out, labels)


def test_bad_margins_are_rejected():
    with pytest.raises(ValueError):
        Margin(0, -0.1, 0)
    with pytest.raises(ValueError):
        Margin(0, 2.0, 0)


def test_margin_head_weights_per_sample_losses():
    torch.manual_seed(0)
    head = MarginHead(8, 5, COSFACE)
    emb, labels = torch.randn(3, 8), torch.tensor([0, 4, 2])
    per = torch.nn.functional.cross_entropy(head.classifier(emb, labels), labels, reduction="none")
    assert head(emb, labels).item() == pytest.approx(per.mean().item())
    w = torch.tensor([0.5, 0.0, 2.0])
    assert head(emb, labels, w).item() == pytest.approx((0.5 * per[0] + 2.0 * per[2]).item() / 3)
