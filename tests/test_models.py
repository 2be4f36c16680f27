"""FROM network: size against the paper's Table 1 (less the release's dead layers), shapes of every variant, mask."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from fromnet.cli import main
from fromnet.models import VARIANTS, NetConfig, build_model, num_patterns
from fromnet.models.iresnet import IResNet
from fromnet.models.pyramid import Pyramid
from fromnet.models.summary import summarize

# >= 16 channels into every strided 1x1 shortcut: below that, oneDNN (torch 2.13 CPU, AVX-512) corrupts memory in the
# channels_last weight gradient (uxlfoundation/oneDNN#6035). The full-size model starts at 64.
TINY = dict(
    widths=(16, 16, 32, 32),
    depths=(1, 2, 1, 1),
    stem_width=16,
    pyramid_width=16,
    decoder_width=16,
    fc_mask_reduced=4,
    embedding_dim=24,
)
SIZES = [(112, 96), (112, 112)]


def tiny(variant: str, K: int = 5, input_size=(112, 96), **kw):
    torch.manual_seed(0)
    return build_model(variant, K, input_size, **TINY, **kw)


@pytest.mark.parametrize(
    "variant,K,expected",
    [("from", 5, 49.29e6), ("from", 4, 46.60e6), ("baseline", 5, 41.80e6)],
)
def test_full_size_parameters_match_paper_less_dead_layers(variant, K, expected):
    # Paper: 52.24M (K=5) / 49.55M (K=4); the release adds 2.95M of never-used FPN layers (P4/P5 smoothing, P6, P7).
    assert summarize(variant, K).params == pytest.approx(expected, rel=0.005)


def test_full_size_forward_flops_match_paper_less_dead_layers():
    s = summarize("from", 5, (112, 96))
    assert s.flops == pytest.approx(11.99e9, rel=0.03)
    assert s.parts["predictor"] == 21504 * 2 + 21504 * 226 + 2 * 226  # BN + FC(no bias) + BN on the 512x7x6 mask


def test_num_patterns():
    assert [num_patterns(k) for k in (1, 3, 4, 5, 6)] == [2, 37, 101, 226, 442]
    with pytest.raises(ValueError):
        num_patterns(0)


def test_backbone_stage_shapes_and_top_map():
    feats = IResNet(widths=(8, 16, 24, 32), depths=(1, 1, 2, 1), stem_width=8)(torch.zeros(2, 3, 112, 96))
    assert [tuple(f.shape[1:]) for f in feats] == [(8, 56, 48), (16, 28, 24), (24, 14, 12), (32, 7, 6)]


def test_pyramid_gives_x3_at_four_times_x1_resolution():
    feats = [torch.randn(2, 16, 28, 24), torch.randn(2, 24, 14, 12), torch.randn(2, 32, 7, 6)]
    x3 = Pyramid([16, 24, 32], width=8)(feats)
    assert x3.shape == (2, 8, 28, 24)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("variant", [v for v, spec in VARIANTS.items() if spec.family == "from"])
def test_output_shapes_every_variant(variant, size):  # "attention": tests/test_attention.py
    spec = VARIANTS[variant]
    grid = (7, 6) if size == (112, 96) else (7, 7)
    for K in (3, 4, 5, 6):
        out = tiny(variant, K, size)(torch.randn(3, 3, *size))
        assert out.embedding.shape == (3, 24)
        mask_shape = {None: None, "3d": (3, 32, *grid), "2d": (3, 1, *grid), "fc": (3, 24)}[spec.mask]
        assert (None if out.mask is None else tuple(out.mask.shape)) == mask_shape
        logits_shape = (3, num_patterns(K)) if spec.predictor == "classify" else None
        assert (None if out.pattern_logits is None else tuple(out.pattern_logits.shape)) == logits_shape
        assert (None if out.box is None else tuple(out.box.shape)) == ((3, 4) if spec.predictor == "regress" else None)


def test_mask_lies_strictly_between_zero_and_one():
    for variant in ("from", "2d", "fc"):
        out = tiny(variant)(torch.randn(4, 3, 112, 96) * 3)
        assert out.mask.min() > 0 and out.mask.max() < 1


def test_regression_outputs_are_normalized_corners():
    box = tiny("reg")(torch.randn(4, 3, 112, 96)).box
    assert box.min() >= 0 and box.max() <= 1


def test_from_forward_runs_embedding_head_once():
    model = tiny("from")
    calls = []
    model.head.register_forward_hook(lambda *_: calls.append(1))
    model(torch.randn(2, 3, 112, 96))
    assert len(calls) == 1


def test_mask_cleans_features_before_embedding():
    # The embedding is exactly head(X1 * M): zeroing the mask decoder's last conv gives M = 0.5 everywhere.
    model = tiny("from").eval()
    torch.nn.init.zeros_(model.decoder.layers[3].weight)
    x = torch.randn(2, 3, 112, 96)
    out = model(x)
    assert torch.allclose(out.mask, torch.full_like(out.mask, 0.5))
    x1 = model.backbone(x)[-1]
    assert torch.allclose(out.embedding, model.head(x1 * 0.5), atol=1e-5)


def test_channels_last_and_bf16_autocast_train_step():
    model = tiny("from").eval()
    x = torch.randn(2, 3, 112, 96)
    ref = model(x)
    cl = tiny("from", channels_last=True).eval()
    out = cl(x.to(memory_format=torch.channels_last))
    assert torch.allclose(out.embedding, ref.embedding, atol=1e-4)
    cl.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = cl(torch.randn(4, 3, 112, 96).to(memory_format=torch.channels_last))
    assert out.embedding.dtype == torch.bfloat16
    loss = out.embedding.float().square().mean() + out.pattern_logits.float().logsumexp(1).mean()
    loss.backward()
    grads = [p.grad for p in cl.parameters() if p.grad is not None]
    assert len(grads) == len(list(cl.parameters())) and all(torch.isfinite(g).all() for g in grads)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="unknown variant"):
        build_model("pdsn")
    with pytest.raises(ValueError, match="needs a mask decoder"):
        NetConfig(mask=None, predictor="classify")
    with pytest.raises(ValueError, match=r"takes \(112, 96\)"):
        tiny("baseline")(torch.zeros(2, 3, 112, 112))


def test_cli_summary_prints_size_and_cost():
    result = CliRunner().invoke(main, ["summary", "--variant", "from", "--K", "5", "--size", "112x96"])
    assert result.exit_code == 0, result.output
    assert "49.29M params" in result.output and "11.99 GFLOPs" in result.output
    assert "226 predictor outputs" in result.output


def test_cli_summary_bad_size_is_one_line_exit_2():
    result = CliRunner().invoke(main, ["summary", "--size", "112by96"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "Error: --size must be HEIGHTxWIDTH in pixels, like 112x96 or 112x112; got '112by96'"
    ]
