"""CAM cost as a ratio over one ``torch.no_grad()`` forward of the same batch, measured here.

ResNet-18 (torchvision, random weights, eval), batch 16, 224×224, CPU, target layer ``layer4``
(what ``hooklab.cam.engine.auto_layer`` picks). Each method is timed right after a baseline forward, in
interleaved rounds after a warm-up; the figure is the median over rounds of (method time /
that round's forward time), which cancels most of the drift of a shared machine. The goal for
Grad-CAM is ≤ 1.15×.

For context the table also times the seed-style Grad-CAM (hooks + a full ``.backward()`` that
builds the whole graph and every weight gradient), and, when they are installed (they are not
requirements), pytorch-grad-cam, Captum and torchcam on the same batch.

Score-CAM runs one masked forward per channel (512 at ``layer4``), so it is timed on one image
against a one-image forward, once.

Usage: ``python benchmarks/bench_cam.py [--rounds 4] [--batch 16] [--size 224] [--no-scorecam]``
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchvision  # noqa: E402
from _machine import machine_line  # noqa: E402  (benchmarks/_machine.py)

from hooklab.cam import engine as cam  # noqa: E402


def seed_style_gradcam(model: torch.nn.Module, x: torch.Tensor, layer: torch.nn.Module) -> None:
    """The textbook way: forward hook + tensor hook, full backward (weight grads included)."""
    store = {}

    def fwd(_m, _i, out):
        store["a"] = out
        out.register_hook(lambda g: store.__setitem__("g", g))

    h = layer.register_forward_hook(fwd)
    try:
        out = model(x)
        idx = out.argmax(1)
        model.zero_grad(set_to_none=True)
        out.gather(1, idx[:, None]).sum().backward()
    finally:
        h.remove()
    w = store["g"].mean((2, 3), keepdim=True)
    c = F.relu((w * store["a"].detach()).sum(1, keepdim=True))
    F.interpolate(c, size=x.shape[-2:], mode="bilinear", align_corners=False)


def peers(model: torch.nn.Module, layer: torch.nn.Module) -> dict[str, Callable]:
    """Peer libraries' Grad-CAM, only those installed."""
    out: dict[str, Callable] = {}
    if importlib.util.find_spec("pytorch_grad_cam"):
        from pytorch_grad_cam import GradCAM

        def pgc(x):
            with GradCAM(model=model, target_layers=[layer]) as g:
                g(input_tensor=x, targets=None)  # None: each image's predicted class
        out["pytorch-grad-cam GradCAM"] = pgc
    if importlib.util.find_spec("captum"):
        from captum.attr import LayerAttribution, LayerGradCam

        lgc = LayerGradCam(model, layer)
        predicted: dict[int, torch.Tensor] = {}

        def cap(x):
            # Captum needs the targets up front; they are computed once, outside the timing
            # of later rounds, so Captum is not charged an extra forward pass.
            if id(x) not in predicted:
                with torch.no_grad():
                    predicted[id(x)] = model(x).argmax(1)
            a = lgc.attribute(x, target=predicted[id(x)])
            LayerAttribution.interpolate(a, x.shape[-2:])
        out["captum LayerGradCam"] = cap
    if importlib.util.find_spec("torchcam"):
        from torchcam.methods import GradCAM as TCGradCAM

        def tc(x):
            with TCGradCAM(model, target_layer="layer4") as ext:
                scores = model(x)
                ext(scores.argmax(1).tolist(), scores)
        out["torchcam GradCAM"] = tc
    return out


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--no-scorecam", action="store_true")
    args = ap.parse_args()
    print(machine_line(), flush=True)
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    x = torch.randn(args.batch, 3, args.size, args.size)
    layer = cam.auto_layer(model, x)

    def forward(inp=x):
        with torch.no_grad():
            model(inp)

    candidates: dict[str, Callable[[], object]] = {}
    for name in cam.METHODS:
        if name != "scorecam":
            candidates[f"hooklab {name}"] = lambda n=name: cam.compute(model, x, n, layer=layer)
    candidates["seed-style hooks + full backward"] = lambda: seed_style_gradcam(
        model, x, model.get_submodule(layer))
    for label, fn in peers(model, model.get_submodule(layer)).items():
        candidates[label] = lambda f=fn: f(x)

    forward()
    for fn in candidates.values():  # warm-up
        fn()
    ratios: dict[str, list[float]] = {k: [] for k in candidates}
    base_times: list[float] = []
    times: dict[str, list[float]] = {k: [] for k in candidates}
    for _ in range(args.rounds):
        for label, fn in candidates.items():
            b = timed(forward)
            t = timed(fn)
            base_times.append(b)
            times[label].append(t)
            ratios[label].append(t / b)

    print(f"CAM cost over one torch.no_grad() forward — resnet18 (random weights), "
          f"batch {args.batch}, {args.size}px, CPU, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, target layer {layer!r}, {args.rounds} rounds")
    print(f"forward: median {statistics.median(base_times) * 1000:.0f} ms")
    print(f"{'method':<36} {'median ms':>10} {'ratio':>7} {'min/min':>8}")
    for label in candidates:
        med = statistics.median(ratios[label])
        mm = min(times[label]) / min(base_times)
        print(f"{label:<36} {statistics.median(times[label]) * 1000:>10.0f} {med:>6.2f}x "
              f"{mm:>7.2f}x")
    if not args.no_scorecam:
        x1 = x[:1]
        forward(x1)
        b1 = statistics.median([timed(lambda: forward(x1)) for _ in range(3)])
        t1 = timed(lambda: cam.compute(model, x1, "scorecam", layer=layer, batch_size=64))
        print(f"{'hooklab scorecam (1 image, 512 ch)':<36} {t1 * 1000:>10.0f} {t1 / b1:>6.1f}x "
              f"{'':>8}")
    missing = [p for p in ("pytorch_grad_cam", "captum", "torchcam")
               if not importlib.util.find_spec(p)]
    if missing:
        print("not installed (not compared): " + ", ".join(missing))
    goal = statistics.median(ratios["hooklab gradcam"])
    print(f"Grad-CAM ratio {goal:.2f}x (goal <= 1.15x): {'met' if goal <= 1.15 else 'NOT met'}")


if __name__ == "__main__":
    main()
