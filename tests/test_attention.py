"""Attention variant (Hoermann et al. 2021): recalibration, pooling and both losses against hand-worked values,
shapes, size, a real training step, and the overlay picture."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn

from fromnet.checkpoint import ModelSpec, load_model, save
from fromnet.cli import main
from fromnet.losses import (
    AttentionLoss,
    FromLoss,
    LossParts,
    Margin,
    MarginHead,
    diversity_loss,
    make_criterion,
    weighted_ce,
)
from fromnet.models import AttentionOutput, FromOutput, build_model
from fromnet.models.attention import attentional_pool, part_weights, recalibrate
from fromnet.models.iresnet import IRBlock, IResNet
from fromnet.models.summary import count_flops, count_parameters, summarize
from fromnet.shards import to_input
from fromnet.viz import attention_overlay
from occgen.errors import UserError
from occgen.images import load_rgb
from tests.conftest import shared

# >= 16 channels into strided 1x1 shortcuts (oneDNN#6035, see test_models.py); stage 3 needs >= 2 blocks to split.
TINY = dict(widths=(16, 16, 32, 32), depths=(1, 1, 2, 1), stem_width=16, embedding_dim=24)
SIZES = {(112, 96): (14, 12), (112, 112): (14, 14)}


def tiny(K: int = 4, input_size=(112, 96), variant: str = "attention", **kw):
    torch.manual_seed(0)
    return build_model(variant, K, input_size, **TINY, **kw)


# -- Attend: recalibration and pooling ------------------------------------------------------------------------------


def test_recalibration_by_hand():
    # Map 0 is 0 everywhere (sigmoid 0.5), map 1 is 40 everywhere (sigmoid 1): GAP (0.5, 1), so
    # s = softmax(0.5, 1) = (1 / (1 + e^0.5), e^0.5 / (1 + e^0.5)) = (0.377541, 0.622459).
    a = torch.stack([torch.zeros(3, 2), torch.full((3, 2), 40.0)])[None]
    s, maps = recalibrate(a)
    assert s[0].tolist() == pytest.approx([0.377541, 0.622459], abs=1e-6)
    assert torch.allclose(maps[0, 0], torch.full((3, 2), 0.5 * 0.377541), atol=1e-6)
    assert torch.allclose(maps[0, 1], torch.full((3, 2), 0.622459), atol=1e-6)


def test_recalibration_sums_to_one_and_scales_squashed_maps():
    torch.manual_seed(0)
    a = torch.relu(torch.randn(5, 4, 14, 12) * 3)
    s, maps = recalibrate(a)
    assert torch.allclose(s.sum(1), torch.ones(5))
    assert torch.allclose(maps, s[:, :, None, None] * torch.sigmoid(a))
    # ReLU'd maps squash into [0.5, 1), so no importance exceeds e^0.5 times another.
    assert (s.max(1).values / s.min(1).values).max() < math.exp(0.5)


def test_attentional_pooling_by_hand():
    # F has 2 channels on a 2x2 map; map 0 picks the top-left pixel, map 1 weighs all pixels by 1, map 2 by
    # (0, 0.5, 0, 0.5) (the right column): v = spatial mean of map * F.
    feats = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[10.0, 20.0], [30.0, 40.0]]])[None]
    maps = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]], [[0.0, 0.5], [0.0, 0.5]]])[None]
    v = attentional_pool(feats, maps)
    assert v.shape == (1, 3, 2)
    assert v[0].flatten().tolist() == pytest.approx([0.25, 2.5, 2.5, 25.0, 0.75, 7.5])


def flat_maps(model, value: float = 2.0) -> None:
    """1x1 attention conv zeroed with bias ``value``: A = value everywhere, so s = 1/K and every map is flat."""
    conv = model.attention_branch[-2]
    torch.nn.init.zeros_(conv.weight)
    torch.nn.init.constant_(conv.bias, value)


def test_pooled_parts_wire_extract_attend_aggregate():
    # With A = 2 everywhere: s = 1/K, every recalibrated map is sigmoid(2)/K, so v_k = sigmoid(2)/K * GAP(F) and
    # f_k = FC_k(v_k); the embedding is their mean.
    model = tiny(K=3, variant="attention-pooled").eval()
    assert model.head is None and len(model.backbone.stages) == 3  # stage 4 is not built
    flat_maps(model)
    x = torch.randn(2, 3, 112, 96)
    out = model(x)
    assert torch.allclose(out.attention, torch.full_like(out.attention, 2.0))
    assert torch.allclose(out.importance, torch.full((2, 3), 1 / 3))
    h = model.backbone.stem(x)
    for stage in model.backbone.stages:
        h = stage(h)  # the feature branch is the unsplit backbone
    v = torch.sigmoid(torch.tensor(2.0)) / 3 * h.mean(dim=(2, 3))
    for k in range(3):
        assert torch.allclose(out.parts[:, k], model.parts[k](v), atol=1e-5)
    assert torch.allclose(out.embedding, out.parts.mean(1))


def test_part_weights_by_hand():
    # Flat maps with equal importance leave F unchanged; otherwise a map is divided by its own pixel mean and
    # scaled by K * s_k.
    assert torch.allclose(part_weights(torch.full((1, 4, 3, 2), 0.7), torch.full((1, 4), 0.25)), torch.ones(1, 4, 3, 2))
    a = torch.tensor([[[[0.0, 2.0]], [[1.0, 1.0]]]])  # (1, K=2, 1, 2)
    s = torch.tensor([[0.4, 0.6]])
    sig = torch.sigmoid(a)
    want = 2 * s[:, :, None, None] * sig / sig.mean(dim=(2, 3), keepdim=True)
    assert torch.allclose(part_weights(a, s), want)
    assert torch.allclose(part_weights(a, s).mean(dim=(2, 3)), 2 * s)


def test_top_parts_start_as_the_plain_network_a_baseline_checkpoint_fills():
    # The default head: F weighted by each map goes through stage 4 and the shared embedding head. Freshly built,
    # the maps are flat, so every part, and the embedding, is the baseline network's embedding; every tensor
    # but the attention branch has a baseline's name and shape, so stage 2 starts from the stage-1 Baseline.
    model = tiny(K=3).eval()
    baseline = build_model("baseline", 5, (112, 96), **TINY).eval()
    ours, theirs = model.state_dict(), baseline.state_dict()
    assert sorted({k.split(".")[0] for k in ours if k not in theirs}) == ["attention_branch"]
    assert all(ours[k].shape == v.shape for k, v in theirs.items())
    model.load_state_dict(theirs, strict=False)
    x = torch.randn(2, 3, 112, 96)
    out, plain = model(x), baseline(x).embedding
    for k in range(3):
        assert torch.allclose(out.parts[:, k], plain, atol=1e-4)
    # with maps that differ, the parts differ and the embedding is still their mean
    torch.nn.init.normal_(model.attention_branch[-2].weight, std=0.5)
    out = model(x)
    assert not torch.allclose(out.parts[:, 0], out.parts[:, 1], atol=1e-3)
    assert torch.allclose(out.embedding, out.parts.mean(1), atol=1e-6)


# -- shapes, configuration, size --------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["attention", "attention-pooled"])
@pytest.mark.parametrize("size", list(SIZES))
def test_output_shapes(size, variant):
    for K in (1, 3, 4):
        out = tiny(K, size, variant)(torch.randn(3, 3, *size))
        assert isinstance(out, AttentionOutput) and isinstance(out, FromOutput)
        assert out.embedding.shape == (3, 24) and out.parts.shape == (3, K, 24)
        assert out.attention.shape == (3, K, *SIZES[size]) and out.importance.shape == (3, K)
        assert torch.allclose(out.importance.sum(1), torch.ones(3))
        assert (out.attention >= 0).all()  # the branch ends in a ReLU
        assert out.mask is None and out.pattern_logits is None and out.box is None


def test_backbone_presets_and_width():
    model = build_model("attention", 4, (112, 96), backbone="r18", width_mult=0.25)
    assert model.config.branch_depth == 1 and model.config.channels == 64  # r18's stage 3 has two blocks
    assert model(torch.randn(2, 3, 112, 96)).attention.shape == (2, 4, 14, 12)
    with torch.device("meta"):
        assert build_model("attention", 4, backbone="r34").config.branch_depth == 3


def test_bad_configurations_are_rejected():
    with pytest.raises(ValueError, match="attention maps"):
        tiny(K=0)
    with pytest.raises(ValueError, match="branch_blocks"):
        tiny(branch_blocks=2)  # stage 3 of TINY has 2 blocks: at most 1 can follow the split
    with pytest.raises(ValueError, match=r"takes \(112, 96\)"):
        tiny()(torch.zeros(1, 3, 112, 112))
    with pytest.raises(ValueError, match="part_head"):
        tiny(part_head="gap")


def test_full_size_parameters_and_flops():
    s = summarize("attention-pooled", 4, (112, 96))
    block = count_parameters(IRBlock(256, 256, 1))
    assert s.parts["attention_branch"] == 3 * block + 256 * 4 + 4  # copied blocks + 1x1 conv with bias
    assert s.parts["parts"] == 4 * (256 * 256 + 256 + 2 * 256 + 2 * 256)  # K unshared BN-FC-BN heads
    with torch.device("meta"):
        cut = IResNet((64, 128, 256), (3, 4, 14))
    assert s.parts["backbone"] == count_parameters(cut)  # stage 4 is not built
    assert s.params == 21_437_380
    assert s.flops == pytest.approx(10.59e9, rel=0.01)
    result = CliRunner().invoke(main, ["summary", "--variant", "attention-pooled", "--K", "4"])
    assert result.exit_code == 0, result.output
    assert "21.44M params" in result.output and "10.59 GFLOPs" in result.output
    assert "feature map F 256x14x12" in result.output and "K=4 attention maps" in result.output


def test_full_size_top_head_is_the_baseline_plus_the_attention_branch():
    top, base = summarize("attention", 4, (112, 96)), summarize("baseline", 5, (112, 96))
    block = count_parameters(IRBlock(256, 256, 1))
    assert top.parts["attention_branch"] == 3 * block + 256 * 4 + 4
    assert top.params == base.params + top.parts["attention_branch"]
    with torch.device("meta"):
        net = build_model("baseline", 5, (112, 96))
        stage4_and_head = count_flops(nn.Sequential(net.backbone.stages[3], net.head), (1, 256, 14, 12))
    branch = top.flops - base.flops - 3 * stage4_and_head  # stage 4 and the head run K = 4 times
    assert 0 < branch < 1.5e9 and top.flops == pytest.approx(16.27e9, rel=0.01)  # baseline r50: 10.82e9


# -- losses ---------------------------------------------------------------------------------------------------------


def _maps(*rows: list[float]) -> torch.Tensor:
    """Raw maps (1, K, 1, P) whose pixel softmax is known: -inf pixels get probability exactly 0."""
    return torch.tensor([rows])[:, :, None, :]


def test_diversity_zero_when_maps_do_not_overlap():
    inf = float("-inf")
    a = _maps([0, inf, inf, inf], [inf, 0, inf, inf], [inf, inf, 0, 0])  # P: pixel 0, pixel 1, pixels 2-3
    for s in ([1 / 3] * 3, [0.5, 0.3, 0.2]):
        assert diversity_loss(a, torch.tensor([s])).item() == pytest.approx(0.0, abs=1e-7)


def test_diversity_maximum_when_all_maps_are_one():
    # Identical maps: sum_x max_k s_k P(x) = max_k s_k, so the loss is 1 - max_k s_k, its upper bound.
    a = _maps([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert diversity_loss(a, torch.full((1, 4), 0.25)).item() == pytest.approx(0.75)
    assert diversity_loss(a, torch.tensor([[0.4, 0.3, 0.2, 0.1]])).item() == pytest.approx(0.6)
    torch.manual_seed(0)
    rand, s = torch.randn(6, 4, 5, 5) * 3, torch.randn(6, 4).softmax(1)
    per_sample = torch.stack([diversity_loss(rand[i : i + 1], s[i : i + 1]) for i in range(6)])
    assert (per_sample >= 0).all() and (per_sample <= 1 - s.max(1).values + 1e-6).all()
    assert diversity_loss(rand, s).item() == pytest.approx(per_sample.mean().item())  # batch mean


def test_diversity_weighting_by_importance_by_hand():
    # P_0 = (0.5, 0.5), P_1 = (1, 0); s = (0.6, 0.4): pixel maxima max(0.3, 0.4) + max(0.3, 0) = 0.7 -> 0.3.
    a = _maps([0.0, 0.0], [0.0, float("-inf")])
    assert diversity_loss(a, torch.tensor([[0.6, 0.4]])).item() == pytest.approx(0.3)
    # A map with no importance does not count: only P_0 is left, and it is a whole distribution -> 0.
    assert diversity_loss(a, torch.tensor([[1.0, 0.0]])).item() == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("preset", ["cosface", "arcface", "softmax"])
def test_weighted_ce_is_the_importance_weighted_sum(preset):
    torch.manual_seed(0)
    head = MarginHead(8, 5, Margin.preset(preset))
    parts, labels = torch.randn(3, 4, 8), torch.tensor([0, 4, 2])
    s = torch.randn(3, 4).softmax(1)
    per = torch.stack(
        [F.cross_entropy(head.classifier(parts[:, k], labels), labels, reduction="none") for k in range(4)], dim=1
    )  # (N, K) cross-entropies
    expected = (s * per).sum(1).mean()  # sum over k of the batch mean of s_k * CE_k
    got = weighted_ce(head, parts, labels, s)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    assert got.item() == pytest.approx(
        sum(head(parts[:, k], labels, weight=s[:, k]) for k in range(4)).item(), rel=1e-5
    )
    # Equal importance on identical parts is the plain identity loss of that part.
    same = parts[:, :1].expand(3, 4, 8)
    assert weighted_ce(head, same, labels, torch.full((3, 4), 0.25)).item() == pytest.approx(
        head(parts[:, 0], labels).item(), rel=1e-5
    )


def test_softmax_preset_is_plain_cross_entropy_on_raw_logits():
    m = Margin.preset("softmax")
    assert (m.m1, m.m2, m.m3, m.s, m.normalized) == (0, 0, 0, 1.0, False)
    assert Margin.preset("softmax", s=2.0).normalized is False
    torch.manual_seed(0)
    head = MarginHead(6, 4, m)
    emb, labels = torch.randn(5, 6) * 4, torch.tensor([0, 1, 2, 3, 0])
    logits = emb @ head.classifier.weight.T  # unnormalised, no bias
    assert torch.allclose(head.classifier(emb, labels), logits, atol=1e-5)
    assert head(emb, labels).item() == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-5)
    with pytest.raises(ValueError, match="need normalized=True"):
        Margin(0, 0, 0.35, s=1.0, normalized=False)


def test_attention_loss_total_and_parts():
    torch.manual_seed(0)
    model = tiny(K=3)
    out = model(torch.randn(4, 3, 112, 96))
    labels = torch.tensor([0, 1, 2, 1])
    head = MarginHead(24, 3, Margin.preset("softmax"))
    parts = AttentionLoss(head, lambda_wce=0.5, lambda_div=2.0)(out, labels, patterns=None, boxes=None)
    assert isinstance(parts, LossParts)
    assert parts.margin.item() == pytest.approx(weighted_ce(head, out.parts, labels, out.importance).item())
    assert parts.pred.item() == pytest.approx(diversity_loss(out.attention, out.importance).item())
    assert parts.total.item() == pytest.approx(0.5 * parts.margin.item() + 2.0 * parts.pred.item(), rel=1e-6)
    with pytest.raises(ValueError, match="output of an attention model"):
        AttentionLoss(head)(FromOutput(embedding=out.embedding), labels)


def test_make_criterion_picks_the_variant_family():
    head = MarginHead(8, 5)
    crit = make_criterion("attention", head, lam=3.0, lambda_wce=0.5, lambda_div=0.1)
    assert isinstance(crit, AttentionLoss) and (crit.lambda_wce, crit.lambda_div) == (0.5, 0.1)
    for variant in ("baseline", "from", "reg"):
        crit = make_criterion(variant, head, lam=3.0, lambda_wce=0.5, lambda_div=0.1)
        assert isinstance(crit, FromLoss) and crit.lam == 3.0 and crit.head is head
    with pytest.raises(ValueError, match="unknown variant"):
        make_criterion("pdsn", head)


# -- training -------------------------------------------------------------------------------------------------------


def real_batch(people: int = 4, per_person: int = 4) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Real aligned LFW faces: (N, 3, 112, 96) inputs in [-1, 1], identity labels, and the uint8 faces."""
    root = shared("lfw-mini/aligned-112x96")
    faces, labels = [], []
    for label, person in enumerate(sorted(p for p in root.iterdir() if p.is_dir())[:people]):
        for path in sorted(person.glob("*.jpg"))[:per_person]:
            faces.append(np.asarray(load_rgb(path)))
            labels.append(label)
    uint8 = np.stack(faces)
    return to_input(torch.from_numpy(uint8)), torch.tensor(labels), uint8


@pytest.mark.parametrize("preset", ["softmax", "cosface"])
def test_training_steps_decrease_the_loss_on_real_faces(preset):
    x, labels, _ = real_batch(people=4, per_person=2)
    model = tiny(K=3)
    head = MarginHead(24, 4, Margin.preset(preset))
    crit = make_criterion("attention", head, lambda_wce=1.0, lambda_div=1.0)
    opt = torch.optim.SGD([*model.parameters(), *head.parameters()], lr=0.05, momentum=0.9, weight_decay=5e-4)
    losses = []
    for step in range(6):
        parts = crit(model(x), labels)
        opt.zero_grad()
        parts.total.backward()
        if step == 0:
            assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
            assert model.attention_branch[-2].weight.grad.abs().sum() > 0  # the 1x1 conv giving A learns
        opt.step()
        losses.append(parts.total.item())
    assert losses[-1] < 0.8 * losses[0], losses


def test_identity_loss_falls_well_below_chance_on_real_faces():
    # Issue #17: with a bare FC per part the plain-softmax identity loss stayed at ln C, because the pooled parts
    # start tiny. On these 24 real faces of 8 people (ln 8 = 2.08) a bare FC reaches 2.02 after 12 steps; the
    # BN-FC-BN parts reach 0.57.
    x, labels, _ = real_batch(people=8, per_person=3)
    model = tiny(K=4, variant="attention-pooled")
    head = MarginHead(24, 8, Margin.preset("softmax"))
    crit = make_criterion("attention", head, lambda_wce=1.0, lambda_div=1.0)
    opt = torch.optim.SGD([*model.parameters(), *head.parameters()], lr=0.1, momentum=0.9, weight_decay=5e-4)
    for _ in range(12):
        parts = crit(model(x), labels)
        opt.zero_grad()
        parts.total.backward()
        opt.step()
    assert parts.margin.item() < 0.5 * math.log(8), parts.margin.item()


def test_channels_last_bf16_autocast_step():
    model = tiny(K=4, channels_last=True)
    head = MarginHead(24, 4, Margin.preset("cosface"))
    x = torch.randn(4, 3, 112, 96).to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
        loss = AttentionLoss(head)(out, torch.tensor([0, 1, 2, 3])).total
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


# -- picture --------------------------------------------------------------------------------------------------------


def test_attention_overlay_on_a_real_face():
    _, _, faces = real_batch(people=1, per_person=1)
    face = faces[0]
    maps = torch.zeros(3, 14, 12)
    maps[1, 10:, 8:] = 5.0  # map 1 responds at the bottom right only; map 0 nowhere; map 2 everywhere
    maps[2] = 1.0
    img = attention_overlay(face, maps, torch.tensor([0.2, 0.5, 0.3]))
    assert img.shape == (112, 4 * 96, 3) and img.dtype == np.uint8
    panels = [img[:, i * 96 : (i + 1) * 96].astype(int) for i in range(4)]
    below_label = slice(14, None)
    assert np.array_equal(panels[0], face)
    assert np.array_equal(panels[1][below_label], face[below_label])  # no response: the face unchanged
    assert np.array_equal(panels[2][below_label, :48], face[below_label, :48])  # left half: no response there
    warm = panels[2][90:, 80:] - face[90:, 80:].astype(int)
    assert warm[..., 0].mean() > 20  # red added where the map responds
    assert (np.abs(panels[3][below_label] - face[below_label]).mean(axis=(0, 1)) > 20).any()
    assert not np.array_equal(panels[1][:14], face[:14])  # the label "1: s=0.50" is drawn
    with pytest.raises(ValueError, match="one importance per map"):
        attention_overlay(face, maps, torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="uint8 RGB"):
        attention_overlay(face.astype(np.float32), maps, torch.ones(3) / 3)


def test_checkpoints_of_pooled_parts_saved_as_attention_load_as_attention_pooled(tmp_path):
    # Before the top part head, `attention` saved pooled parts (parts.*): such a checkpoint is that network.
    pooled = tiny(K=3, variant="attention-pooled").eval()
    spec = ModelSpec("attention", 3, (112, 96), "r50", 1.0, dict(TINY))
    save(tmp_path / "old", 5, {"model_spec": spec.to_dict(), "model": pooled.state_dict(), "step": 5})
    loaded = load_model(tmp_path / "old")
    assert loaded.spec.variant == "attention-pooled"
    x = torch.randn(2, 3, 112, 96)
    assert torch.allclose(loaded.model(x).embedding, pooled(x).embedding, atol=1e-6)
    # weights that fit neither are one clear error, not torch's list of every tensor
    save(tmp_path / "odd", 5, {"model_spec": ModelSpec("from", 5).to_dict(), "model": pooled.state_dict(), "step": 5})
    with pytest.raises(UserError, match="its weights do not fit a from r50 x1 network"):
        load_model(tmp_path / "odd")
