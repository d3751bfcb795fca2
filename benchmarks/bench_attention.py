"""Attention capture, rollout and LeGrad as ratios over one ``torch.no_grad()`` forward.

torchvision's ViT at SimpleViT's sizes (32 px, patch 4, 4 blocks, 4 heads, width 64; random
weights, eval), batch 8, CPU; or ``--vit-b`` for ViT-B/16 at 224 px (batch 2). Each round
times a baseline forward and then each variant; the figure is the median over rounds of
(variant time / that round's forward time), which cancels most of a shared machine's drift.

* ``hooklab.attention``: the same forward with the two hooks per block and the weights kept
  (``need_weights=True`` takes MultiheadAttention off its fused kernel).
* ``rollout``: :func:`hooklab.cam.attention.rollout` (one forward with the capture + the
  rollout product).
* ``legrad``: :func:`hooklab.cam.attention.legrad` (one forward with gradient probes + one
  ``autograd.grad``).

Usage: ``python benchmarks/bench_attention.py [--rounds 20] [--batch 8] [--vit-b]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _machine import machine_line  # noqa: E402  (benchmarks/_machine.py)
from torchvision.models import vit_b_16  # noqa: E402
from torchvision.models.vision_transformer import VisionTransformer  # noqa: E402

import hooklab  # noqa: E402
from hooklab.cam import attention as attention_maps  # noqa: E402
from hooklab.studies.lessons import FALLBACK_VIT  # noqa: E402


def _time(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--vit-b", action="store_true", help="ViT-B/16 at 224 px instead")
    args = ap.parse_args()
    torch.manual_seed(0)
    if args.vit_b:
        model, size, batch = vit_b_16().eval(), 224, args.batch or 2
        with torch.no_grad():
            model.heads.head.weight.normal_(0, 0.02)  # torchvision's zero head: no gradient
        name = "ViT-B/16 224 px"
    else:
        model = VisionTransformer(num_classes=6, **FALLBACK_VIT).eval()
        size, batch, name = 32, args.batch or 8, "ViT 32 px, patch 4, 4 blocks (SimpleViT sizes)"
    x = torch.randn(batch, 3, size, size)

    def forward() -> None:
        with torch.no_grad():
            model(x)

    def capture() -> None:
        with hooklab.attention(model), torch.no_grad():
            model(x)

    variants = {"hooklab.attention": capture,
                "rollout": lambda: attention_maps.rollout(model, x),
                "legrad": lambda: attention_maps.legrad(model, x)}
    for fn in (forward, *variants.values()):  # warm-up
        fn()
    ratios: dict[str, list[float]] = {k: [] for k in variants}
    base: list[float] = []
    for _ in range(args.rounds):
        b = _time(forward)
        base.append(b)
        for k, fn in variants.items():
            ratios[k].append(_time(fn) / b)
    print(machine_line())
    print(f"{name}, batch {batch}, {args.rounds} rounds; no-grad forward "
          f"{statistics.median(base) * 1e3:.1f} ms (median)")
    for k, r in ratios.items():
        print(f"  {k:<18} {statistics.median(r):.2f}× one no-grad forward")


if __name__ == "__main__":
    main()
