"""Defaults that fit the machine: loader workers from the cores there are, and a step's memory estimated from the
model, micro-batch and precision before a new run starts, so a too-big recipe is refused with what to pass instead
of being killed by the kernel's out-of-memory killer a minute later."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from fromnet.checkpoint import ModelSpec
from fromnet.models import build_model

GIB = 2**30
#: Saved activations are not all a step holds: the backward's temporaries and the allocator's slack come on top.
ACTIVATION_OVERHEAD = 1.5
#: The share of the free memory a step may plan to use (the loader, the OS and other processes need the rest).
USABLE = 0.8


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def default_workers(local_processes: int) -> int:
    """Loader processes per training process: the cores left after one per training process, up to 4."""
    return max(0, min(4, cpu_count() // max(1, local_processes) - 1))


def free_bytes(device: torch.device) -> int:
    """Memory a step can use on `device`: the GPU's free memory, or the system's available memory."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
        return info["MemAvailable"]
    except (OSError, KeyError, ValueError):  # pragma: no cover - not Linux
        return 1 << 62


@dataclass(frozen=True)
class StepMemory:
    fixed: int  # weights, gradients and momentum of the network and the classifier
    per_sample: int  # activations kept for the backward, per sample of a micro-batch

    def total(self, micro_batch: int) -> int:
        return self.fixed + micro_batch * self.per_sample


def step_memory(spec: ModelSpec, num_classes: int, precision: str) -> StepMemory:
    """Measured on the meta device (shapes only, no compute): the tensors autograd saves in a training forward, at
    two batch sizes, so that what does not grow with the batch (weights saved for the backward) is not counted per
    sample."""
    with torch.device("meta"):
        model = build_model(**spec.build_kwargs())
    model.train()

    def saved_bytes(batch: int) -> int:
        total = 0

        def pack(t: torch.Tensor) -> torch.Tensor:
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(torch.zeros(batch, 3, *spec.input_size, device="meta"))
        return total

    per_sample = (saved_bytes(4) - saved_bytes(2)) / 2
    dim = model.config.embedding_dim
    params = sum(p.numel() for p in model.parameters()) + num_classes * dim
    activations = per_sample * (0.5 if precision in ("bf16", "fp16") else 1.0)  # autocast halves most of them
    logits = num_classes * 4 * 3  # cosines, margin logits, their gradient
    return StepMemory(fixed=params * 4 * 3, per_sample=int(activations * ACTIVATION_OVERHEAD) + logits)


def fitting_micro_batch(memory: StepMemory, per_process: int, free: int) -> int | None:
    """The largest micro-batch that divides this process's share of the batch and fits in the usable part of
    `free`; None if even 1 does not."""
    for m in range(per_process, 0, -1):
        if per_process % m == 0 and memory.total(m) <= USABLE * free:
            return m
    return None


def gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"
