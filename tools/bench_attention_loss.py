"""Forward + backward time of the attention variant's weighted cross-entropy: `losses.weighted_ce` (one head call
on the N*K parts) against the simple way in the same run (K head calls, one per part, summed).

Both give the same value (tests/test_attention.py holds them to it); the figure is what the single call saves.

    python tools/bench_attention_loss.py                       # N=128, K=4, 10,575 classes (CASIA-WebFace)
    python tools/bench_attention_loss.py --classes 85742 --batch 64
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fromnet.losses import Margin, MarginHead, weighted_ce  # noqa: E402


def per_part(head: MarginHead, parts: torch.Tensor, labels: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """The simple way: one identity-head call per part, weighted by that part's importance."""
    return sum(head(parts[:, k], labels, weight=s[:, k]) for k in range(parts.shape[1]))


def step(fn, head, parts, labels, s) -> tuple[float, float]:
    """Seconds of one forward + backward, and the loss value."""
    head.zero_grad()
    parts.grad = None
    if parts.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    loss = fn(head, parts, labels, s)
    loss.backward()
    if parts.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start, loss.item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--K", type=int, default=4)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--classes", type=int, default=10575)
    ap.add_argument("--margin", default="cosface")
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    torch.manual_seed(0)
    dev = torch.device(args.device)
    head = MarginHead(args.dim, args.classes, Margin.preset(args.margin)).to(dev)
    parts = torch.randn(args.batch, args.K, args.dim, device=dev, requires_grad=True)
    labels = torch.randint(args.classes, (args.batch,), device=dev)
    s = torch.randn(args.batch, args.K, device=dev).softmax(1)
    ways = {"per part (simple)": per_part, "weighted_ce": weighted_ce}
    times: dict[str, list[float]] = {name: [] for name in ways}
    values: dict[str, float] = {}
    for i in range(args.repeats + 1):  # interleaved, so load from other processes hits both alike; 1st is warm-up
        for name, fn in ways.items():
            sec, values[name] = step(fn, head, parts, labels, s)
            if i:
                times[name].append(sec)
    print(
        f"N={args.batch} K={args.K} D={args.dim} classes={args.classes} margin={args.margin} on {dev}, "
        f"{args.repeats} interleaved repeats"
    )
    for name in ways:
        t = sorted(times[name])
        print(f"  {name:<18} min {t[0] * 1e3:7.1f} ms  median {t[len(t) // 2] * 1e3:7.1f} ms  loss {values[name]:.6f}")


if __name__ == "__main__":
    main()
