"""fromnet.train.step alone: one step's forward, loss, backward and update, on hand-made micro-batches."""

from __future__ import annotations

import copy

import pytest
import torch

from fromnet.checkpoint import ModelSpec
from fromnet.train.distributed import World
from fromnet.train.params import TrainConfig
from fromnet.train.state import TrainState, build_state
from fromnet.train.step import NonFiniteLoss, StepSettings, step_seed, train_step

CLASSES = 6
SIZE = (48, 40)


def tiny_state(variant: str = "baseline") -> TrainState:
    cfg = TrainConfig(shards=["-"], variant=variant, backbone="r18", width_mult=0.125, lr=0.1, seed=1)
    return build_state(cfg, World(), ModelSpec(variant, 5, SIZE, "r18", 0.125), CLASSES)


def micro_batches(count: int, size: int, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    return [
        {
            "image": torch.randint(0, 256, (size, *SIZE, 3), dtype=torch.uint8, generator=g),
            "label": torch.randint(0, CLASSES, (size,), generator=g),
            "replica": replica,
        }
        for replica in range(count)
    ]


def weights(state: TrainState) -> list[torch.Tensor]:
    return [p.detach().clone() for p in [*state.model.parameters(), *state.head.parameters()]]


def test_a_step_averages_its_micro_batches_and_updates_every_weight_once():
    state = tiny_state()
    before = weights(state)
    twin = copy.deepcopy(state)
    micro = micro_batches(2, 4)
    settings = StepSettings(seed=1, replicas=2)
    stats = train_step(state, micro, 0.1, settings, World())
    assert state.step == 1 and stats["lr"] == 0.1 and stats["loss_pattern"] is None
    # the reported loss is the mean of the micro-batches' losses, each with its own seeded dropout
    expected = []
    for mb in micro:
        torch.manual_seed(step_seed(1, 0, mb["replica"]))
        out = twin.forward(mb["image"].permute(0, 3, 1, 2).float().sub(127.5).div(127.5))
        expected.append(twin.criterion(out, mb["label"]).total.item())
    assert stats["loss"] == pytest.approx(sum(expected) / 2, rel=1e-5)
    after = weights(state)
    assert all(not torch.equal(a, b) for a, b in zip(before, after) if a.requires_grad)
    # deterministic: the same state and micro-batches give the same weights, bit for bit
    again = tiny_state()
    train_step(again, micro, 0.1, settings, World())
    assert all(torch.equal(a, b) for a, b in zip(after, weights(again)))


def test_a_non_finite_loss_raises_before_any_update():
    state = tiny_state()
    micro = micro_batches(1, 4)
    with torch.no_grad():
        next(state.head.parameters()).fill_(float("nan"))
    before = weights(state)
    with pytest.raises(NonFiniteLoss, match="at step 1"):
        train_step(state, micro, 0.1, StepSettings(seed=1, replicas=1), World())
    assert state.step == 0
    assert all(torch.equal(a, b) or torch.isnan(a).all() for a, b in zip(before, weights(state)))
