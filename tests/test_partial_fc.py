"""The sharded classifier (Partial FC, sample rate 1) against the full one, on two real Gloo processes."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fromnet.losses import Margin, MarginHead
from fromnet.train.distributed import World
from fromnet.train.partial_fc import ShardedMarginHead, class_slices

CLASSES, DIM, PER_RANK = 11, 8, 5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def data():
    gen = torch.Generator().manual_seed(3)
    emb = torch.randn(2 * PER_RANK, DIM, generator=gen)
    labels = torch.randint(0, CLASSES, (2 * PER_RANK,), generator=gen)
    weight = torch.randn(CLASSES, DIM, generator=gen)
    sample_weight = torch.rand(2 * PER_RANK, generator=gen)
    return emb, labels, weight, sample_weight


def _rank(rank: int, port: int, margin_name: str, out: dict) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        emb, labels, weight, sw = data()
        mine = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
        head = ShardedMarginHead(DIM, CLASSES, Margin.preset(margin_name), World(rank, 2))
        head.load_full_weight(weight)
        x = emb[mine].clone().requires_grad_(True)
        loss = head(x, labels[mine])
        loss.backward()
        weighted = head(emb[mine], labels[mine], sw[mine])
        out[rank] = {
            "loss": loss.item(),
            "weighted": weighted.item(),
            "emb_grad": x.grad.clone(),
            "weight_grad": head.weight.grad.clone(),
            "full": head.full_weight().clone(),
        }
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("margin_name", ["cosface", "arcface"])
def test_sharded_loss_and_gradients_equal_the_full_classifier(margin_name):
    manager = mp.Manager()
    out = manager.dict()
    mp.spawn(_rank, args=(free_port(), margin_name, out), nprocs=2, join=True)
    emb, labels, weight, sw = data()
    full = MarginHead(DIM, CLASSES, Margin.preset(margin_name))
    full.load_full_weight(weight)
    x = emb.clone().requires_grad_(True)
    loss = full(x, labels)
    loss.backward()
    for rank in (0, 1):
        got = out[rank]
        assert got["loss"] == pytest.approx(loss.item(), rel=1e-6)  # both ranks see the global batch's loss
        assert got["weighted"] == pytest.approx(full(emb, labels, sw).item(), rel=1e-6)
        # DDP will average the two ranks' backbone gradients: each rank's embedding gradient is world x its share.
        mine = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
        torch.testing.assert_close(got["emb_grad"] / 2, x.grad[mine], rtol=1e-5, atol=1e-7)
        start, end = class_slices(CLASSES, 2)[rank]
        torch.testing.assert_close(got["weight_grad"], full.classifier.weight.grad[start:end], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(got["full"], weight)


def test_class_slices_cover_every_class_once():
    assert class_slices(11, 2) == [(0, 6), (6, 11)]
    assert class_slices(3, 4) == [(0, 1), (1, 2), (2, 3), (3, 3)]


def test_single_process_sharded_head_is_the_full_head():
    emb, labels, weight, _ = data()
    head = ShardedMarginHead(DIM, CLASSES, Margin.preset("cosface"), World())
    head.load_full_weight(weight)
    full = MarginHead(DIM, CLASSES, Margin.preset("cosface"))
    full.load_full_weight(weight)
    assert head(emb, labels).item() == pytest.approx(full(emb, labels).item(), rel=1e-6)
