"""CAM cost as a ratio over one ``torch.no_grad()`` forward of the same batch, measured here.

ResNet-18 (torchvision, random weights, eval), batch 16, 224×224, CPU, target layer ``layer4``
(what ``hooklab.cam.engine.auto_layer`` picks). Each method is timed right after a baseline forward, in
interleaved rounds after a warm-up; the figure is the median over rounds of (method time /
that round's forward time), which cancels most of the drift of a shared machine. The goal for
Grad-CAM is ≤ 1.15×.

For context the table also times the seed-style Grad-CAM (hooks + a full ``.backward()`` that
builds the whole graph and every weight gradient), and, when they are installed (they are not
requirements), pytorch-grad-cam, Captum and torchcam on the same batch.

Every method of ``hooklab.cam.METHODS`` is in the table (the methods other helpers register appear
by themselves). Methods that run the model again (Score-CAM: one masked forward per channel, 512 at
``layer4``; AblationCAM, SS-CAM, ...) are timed on one image against a one-image forward, once,
with the number of forwards they ran (a forward hook on the model counts the calls).

Two more sections (issues 13 and 14):

* **ViT-B/16** (torchvision, random weights with a random head, batch 8, 224 px): Grad-CAM at the
  last block's ``ln_1`` (the automatic layer) over one no-grad forward, goal ≤ 1.15×, beside
  pytorch-grad-cam's GradCAM with its documented ``reshape_transform`` on the same batch.
* **24 maps, one pass**: the five gradient methods and EigenCAM × ResNet-18 ``layer1``…``layer4``
  from one ``compute(methods=[...], layers=[...])``, goal ≤ 1.7× one no-grad forward, beside
  pytorch-grad-cam making the same 24 maps (24 calls, one per method and layer), and the floor
  of any one-pass method: a forward keeping the graph above ``layer1`` plus one backward of the
  scores to the four layers, weights frozen. hooklab's pass runs channels-last on a torchvision
  CNN (``memory_format="auto"``, :mod:`hooklab.cam.memory`): the floor is timed in that layout,
  and a no-grad forward of the channels-last input is printed beside the (contiguous) baseline.

Usage: ``python benchmarks/bench_cam.py [--rounds 4] [--batch 16] [--size 224] [--no-scorecam]
[--vit-batch 8] [--no-vit] [--no-many] [--quick]`` (``--quick``: 2 rounds, batch 4, ViT batch 2,
one-image methods skipped; a smoke run, not the figure).
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
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchvision  # noqa: E402
from _machine import machine_line  # noqa: E402  (benchmarks/_machine.py)

from hooklab.cam import engine as cam  # noqa: E402
from hooklab.cam import memory  # noqa: E402
from hooklab.core.errors import HooklabError  # noqa: E402


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


def interleaved(forward: Callable[[], object], candidates: dict[str, Callable[[], object]],
                rounds: int) -> tuple[dict[str, list[float]], dict[str, list[float]], list[float]]:
    """Each candidate timed right after a baseline forward, in rounds after one warm-up call.

    Returns (ratios per label, times per label, baseline times).
    """
    forward()
    for fn in candidates.values():  # warm-up
        fn()
    ratios: dict[str, list[float]] = {k: [] for k in candidates}
    times: dict[str, list[float]] = {k: [] for k in candidates}
    base: list[float] = []
    for _ in range(rounds):
        for label, fn in candidates.items():
            b = timed(forward)
            t = timed(fn)
            base.append(b)
            times[label].append(t)
            ratios[label].append(t / b)
    return ratios, times, base


def table(ratios: dict[str, list[float]], times: dict[str, list[float]], base: list[float]
          ) -> None:
    print(f"forward: median {statistics.median(base) * 1000:.0f} ms")
    print(f"{'method':<40} {'median ms':>10} {'ratio':>7} {'min/min':>8}")
    for label in ratios:
        med = statistics.median(ratios[label])
        mm = min(times[label]) / min(base)
        print(f"{label:<40} {statistics.median(times[label]) * 1000:>10.0f} {med:>6.2f}x "
              f"{mm:>7.2f}x")


def goal_line(what: str, ratio: float, goal: float) -> None:
    print(f"{what} ratio {ratio:.2f}x (goal <= {goal}x): {'met' if ratio <= goal else 'NOT met'}")


def model_calling(model: torch.nn.Module, x1: torch.Tensor, layer: str) -> None:
    """Methods that run the model again, on one image: time, ratio, forwards."""
    def forward() -> None:
        with torch.no_grad():
            model(x1)

    forward()
    b1 = statistics.median([timed(forward) for _ in range(3)])
    print(f"model-calling methods, 1 image (forward {b1 * 1000:.0f} ms):")
    print(f"{'method':<40} {'ms':>10} {'ratio':>7} {'forwards':>9}")
    for name, spec in cam.METHODS.items():
        if spec.run is None:
            continue
        calls = [0]
        h = model.register_forward_pre_hook(lambda *_, c=calls: c.__setitem__(0, c[0] + 1))
        try:
            t1 = timed(lambda n=name: cam.compute(model, x1, n, layer=layer, batch_size=64))
        except HooklabError as exc:
            print(f"{'hooklab ' + name:<40} n/a: {str(exc).splitlines()[0][:70]}")
            continue
        finally:
            h.remove()
        print(f"{'hooklab ' + name:<40} {t1 * 1000:>10.0f} {t1 / b1:>6.1f}x {calls[0]:>9}")


def bench_resnet(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    x = torch.randn(args.batch, 3, args.size, args.size)
    layer = cam.auto_layer(model, x)

    def forward(inp: torch.Tensor = x) -> None:
        with torch.no_grad():
            model(inp)

    candidates: dict[str, Callable[[], object]] = {}
    for name, spec in cam.METHODS.items():
        if spec.run is None:
            candidates[f"hooklab {name}"] = lambda n=name: cam.compute(model, x, n, layer=layer)
    candidates["seed-style hooks + full backward"] = lambda: seed_style_gradcam(
        model, x, model.get_submodule(layer))
    for label, fn in peers(model, model.get_submodule(layer)).items():
        candidates[label] = lambda f=fn: f(x)
    ratios, times, base = interleaved(forward, candidates, args.rounds)
    print(f"CAM cost over one torch.no_grad() forward — resnet18 (random weights), "
          f"batch {args.batch}, {args.size}px, CPU, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, target layer {layer!r}, {args.rounds} rounds")
    table(ratios, times, base)
    if not args.no_scorecam:
        model_calling(model, x[:1], layer)
    missing = [p for p in ("pytorch_grad_cam", "captum", "torchcam")
               if not importlib.util.find_spec(p)]
    if missing:
        print("not installed (not compared): " + ", ".join(missing))
    goal_line("Grad-CAM", statistics.median(ratios["hooklab gradcam"]), 1.15)


def vit_model(size: int) -> torch.nn.Module:
    """torchvision ViT-B/16, random weights; torchvision zero-initialises the head (every
    gradient would be 0), so the head is drawn at random."""
    torch.manual_seed(0)
    model = torchvision.models.vit_b_16(image_size=size)
    torch.nn.init.normal_(model.heads.head.weight, std=0.02)
    return model.eval()


def bench_vit(args: argparse.Namespace) -> None:
    model = vit_model(args.size)
    x = torch.randn(args.vit_batch, 3, args.size, args.size)
    layer = cam.auto_layer(model, x)
    grid = args.size // 16

    def forward() -> None:
        with torch.no_grad():
            model(x)

    candidates: dict[str, Callable[[], object]] = {
        "hooklab gradcam": lambda: cam.compute(model, x, "gradcam", layer=layer)}
    if importlib.util.find_spec("pytorch_grad_cam"):
        from pytorch_grad_cam import GradCAM

        def reshape_transform(t: torch.Tensor) -> torch.Tensor:  # the peer's vit_example.py
            r = t[:, 1:, :].reshape(t.size(0), grid, grid, t.size(2))
            return r.transpose(2, 3).transpose(1, 2)

        def pgc() -> None:
            with GradCAM(model=model, target_layers=[model.get_submodule(layer)],
                         reshape_transform=reshape_transform) as g:
                g(input_tensor=x, targets=None)

        candidates["pytorch-grad-cam GradCAM + reshape_transform"] = pgc
    ratios, times, base = interleaved(forward, candidates, args.rounds)
    note = cam.compute(model, x[:1], "gradcam", layer=layer).note
    print(f"ViT-B/16 (torchvision, random weights), batch {args.vit_batch}, {args.size}px, CPU, "
          f"layer {layer!r} ({note}), {args.rounds} rounds")
    table(ratios, times, base)
    goal_line("ViT-B/16 Grad-CAM", statistics.median(ratios["hooklab gradcam"]), 1.15)


MANY_METHODS = ["gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "eigencam"]
MANY_LAYERS = ["layer1", "layer2", "layer3", "layer4"]


def bench_many(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    x = torch.randn(args.batch, 3, args.size, args.size)

    def forward() -> None:
        with torch.no_grad():
            model(x)

    xl = memory.pass_input(model, x, "auto")  # the layout of hooklab's pass (channels-last)

    def forward_cl() -> None:
        with torch.no_grad():
            model(xl)

    def floor() -> None:
        """The least any one-pass method can cost: a forward keeping the graph above layer1
        and one backward of the predicted scores to the four layers (weights frozen), in the
        memory format of hooklab's pass."""
        for p in model.parameters():
            p.requires_grad_(False)
        try:
            acts: list[torch.Tensor] = []
            hooks = [model.get_submodule(n).register_forward_hook(
                lambda _m, _i, o: acts.append(o.requires_grad_() if not acts else o))
                for n in MANY_LAYERS]
            try:
                logits = model(xl)
            finally:
                for h in hooks:
                    h.remove()
            score = logits.gather(1, logits.argmax(1, keepdim=True)).sum()
            torch.autograd.grad(score, acts)
        finally:
            for p in model.parameters():
                p.requires_grad_(True)

    candidates: dict[str, Callable[[], Any]] = {
        "hooklab one pass (24 maps)": lambda: cam.compute(model, x, methods=MANY_METHODS,
                                                          layers=MANY_LAYERS),
        "floor: forward + backward to layer1": floor,
        "forward, channels-last input": forward_cl}
    if importlib.util.find_spec("pytorch_grad_cam"):
        import pytorch_grad_cam as pgc_lib

        classes = {"gradcam": pgc_lib.GradCAM, "gradcam++": pgc_lib.GradCAMPlusPlus,
                   "xgradcam": pgc_lib.XGradCAM, "hirescam": pgc_lib.HiResCAM,
                   "layercam": pgc_lib.LayerCAM, "eigencam": pgc_lib.EigenCAM}

        def pgc24() -> None:
            for cls in classes.values():
                for name in MANY_LAYERS:
                    with cls(model=model, target_layers=[model.get_submodule(name)]) as c:
                        c(input_tensor=x, targets=None)

        candidates["pytorch-grad-cam, 24 calls"] = pgc24
    ratios, times, base = interleaved(forward, candidates, args.rounds)
    print(f"24 maps ({', '.join(MANY_METHODS)} x {', '.join(MANY_LAYERS)}) — resnet18 (random "
          f"weights), batch {args.batch}, {args.size}px, CPU, {args.rounds} rounds")
    table(ratios, times, base)
    one, low = (statistics.median(ratios[k]) for k in ("hooklab one pass (24 maps)",
                                                       "floor: forward + backward to layer1"))
    print(f"hooklab one pass / floor: {one / low:.2f}x (the 24 maps' own work beyond the pass)")
    cl = statistics.median(ratios["forward, channels-last input"])
    print(f"hooklab one pass / a channels-last forward: {one / cl:.2f}x (hooklab's pass runs "
          "channels-last: memory_format='auto' on a torchvision CNN)")
    goal_line("24 maps in one pass", one, 1.7)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--vit-batch", type=int, default=8)
    ap.add_argument("--no-scorecam", action="store_true",
                    help="skip the model-calling methods (one image each)")
    ap.add_argument("--no-vit", action="store_true", help="skip the ViT-B/16 section")
    ap.add_argument("--no-many", action="store_true", help="skip the 24-maps section")
    ap.add_argument("--only", choices=("resnet", "vit", "many"), help="run one section")
    ap.add_argument("--quick", action="store_true",
                    help="2 rounds, batch 4, ViT batch 2, no one-image methods (a smoke run)")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.batch, args.vit_batch, args.no_scorecam = 2, 4, 2, True
    print(machine_line(), flush=True)
    warnings.filterwarnings("ignore")
    sections = {"resnet": bench_resnet, "vit": bench_vit, "many": bench_many}
    skip = {"vit": args.no_vit, "many": args.no_many}
    for name, fn in sections.items():
        if (args.only and name != args.only) or (not args.only and skip.get(name)):
            continue
        fn(args)
        print(flush=True)


if __name__ == "__main__":
    main()
