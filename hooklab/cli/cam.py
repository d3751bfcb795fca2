"""``python -m hooklab cam``: Grad-CAM-family maps for one image, as PNG overlays and arrays."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from hooklab.cam import engine as cam
from hooklab.cam.engine import METHODS
from hooklab.cam.methods import method_name
from hooklab.cli.common import DEVICE_HELP, PathArg, check_output_file, resolve_device
from hooklab.cli.common import common_options as _common
from hooklab.cli.common import out as _out
from hooklab.core.errors import HooklabError
from hooklab.data import datasets as data
from hooklab.data import images
from hooklab.models import inputs
from hooklab.models import zoo as models

CAM_EPILOG = """\
examples:
  # the seed's Grad-CAM: trained SimpleCNN, conv3, shapes test image 102, overlay PNG
  python -m hooklab cam --index 102 --out cam.png
  # several methods side by side, top-3 classes, raw maps as .npy
  python -m hooklab cam --method gradcam gradcam++ scorecam --target topk:3 --npy maps.npy
  # your own picture through resnet18 with ImageNet weights from the local torch hub cache
  python -m hooklab cam --model resnet18 --weights imagenet --image cat.jpg --out cat-cam.png
"""


def add_cam_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cam", parents=[_common()], formatter_class=argparse.RawDescriptionHelpFormatter,
        help="class activation maps (Grad-CAM and family) for one image",
        description="Compute Grad-CAM-family maps of a zoo model for one image (a shapes test "
                    "sample by default, or --image FILE), print the target classes and where "
                    "each map peaks, and write overlays (0.4 jet + 0.6 image, as in the seed).",
        epilog=CAM_EPILOG)
    p.add_argument("--model", default="simple_cnn", help="zoo model (default: %(default)s)")
    p.add_argument("--weights", default=None, action=PathArg, kind="weights",
                   help="'shapes' (SimpleCNN trained on shapes, cached; the default for "
                        "simple_cnn), 'random', 'imagenet' (local torch hub cache only), or a "
                        ".safetensors / state-dict .pt file")
    p.add_argument("--device", default="cpu", help=DEVICE_HELP)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--index", type=int, default=102,
                     help="shapes test-split image (default: %(default)s, the seed's index)")
    src.add_argument("--image", metavar="FILE", action=PathArg, kind="input_file", help="an image file instead (png, jpg, ...)")
    p.add_argument("--method", nargs="+", default=["gradcam"], metavar="M",
                   help=f"one or more of {', '.join(METHODS)} (default: gradcam)")
    p.add_argument("--layer", nargs="+", default=None, metavar="LAYER",
                   help="target layer(s); several are fused (default: automatic)")
    p.add_argument("--target", default=None,
                   help="class index, or 'topk:K' (default: the predicted class)")
    p.add_argument("--alpha", type=float, default=0.4, help="heatmap opacity (default: 0.4)")
    p.add_argument("--out", metavar="PNG", default=None, action=PathArg, kind="output_file",
                   help="write the overlay here (one file per method: name-METHOD.png if several)")
    p.add_argument("--npy", metavar="FILE", default=None, action=PathArg, kind="output_file",
                   help="write the maps (N, H, W) here ('.npy' is added when missing)")
    p.set_defaults(func=cmd_cam)


def _load_model(args: argparse.Namespace):
    weights = args.weights
    if weights is None:
        weights = "shapes" if args.model == "simple_cnn" else None  # a registered model: its file
    return models.get_model(args.model, weights=weights)


def _input(args: argparse.Namespace, model):
    info = getattr(model, "hooklab_info", None)
    shape = tuple(info.input_shape) if info is not None else models.input_shape(model)
    if args.image:
        img = images.load_image(Path(args.image), size=(shape[1], shape[2]), normalise=info or "seed",
                                channels=shape[0])
        return img.tensor, img.display.astype(np.float32) / 255.0, f"image {args.image}"
    if shape != (3, 32, 32):
        raise_input_error(args.model, shape)
    sample = inputs.shapes_input(args.index, info or models.model_info(args.model))
    label = data.SHAPE_CLASSES[int(sample.label)]  # type: ignore[arg-type]
    return sample.x, sample.image, f"shapes test #{args.index} ({label})"


def raise_input_error(model: str, shape: tuple[int, ...]) -> None:
    raise HooklabError(f"{model} expects {shape} inputs; the shapes samples are 32x32: pass "
                       "--image FILE")


def _canonical(method: str) -> str:
    try:
        return method_name(method)
    except KeyError:  # cam.compute reports it, with the known names
        return method


def output_paths(args: argparse.Namespace) -> tuple[dict[str, Path], Path | None]:
    """The files ``cam`` will write: one overlay per method (``name-METHOD.png`` when several)
    and the maps (``np.save`` adds ``.npy``), each checked before any work."""
    pngs: dict[str, Path] = {}
    if args.out:
        for method in args.method:
            out = Path(args.out)
            if len(args.method) > 1:
                out = out.with_name(f"{out.stem}-{_canonical(method)}{out.suffix or '.png'}")
            pngs[method] = check_output_file(out, "--out")
    npy = None
    if args.npy:
        npy = Path(args.npy if args.npy.endswith(".npy") else args.npy + ".npy")
        check_output_file(npy, "--npy")
    return pngs, npy


def cmd_cam(args: argparse.Namespace) -> int:
    # lazy: charts pulls in plotly, which only this command needs
    from hooklab.charts.cam import overlay_png

    pngs, npy = output_paths(args)
    device = resolve_device(args.device)
    model = _load_model(args).to(device)
    x, display, what = _input(args, model)
    x = x.to(device)
    target = args.target
    if target is not None and not target.startswith("topk"):
        try:
            target = int(target)
        except ValueError:
            raise HooklabError(f"--target is a class index or topk:K, not {target!r}") from None
    info = getattr(model, "hooklab_info", None)
    names = list(getattr(info, "class_names", ()) or ())
    all_maps = []
    _out(f"{args.model} on {what}, device {device}")
    for method in args.method:
        res = cam.compute(model, x, method=method, layer=args.layer, target=target).to("cpu")
        all_maps.append(res.maps.numpy())
        for i in range(len(res)):
            t = int(res.targets[i])
            peak = np.unravel_index(int(res.maps[i].argmax()), tuple(res.maps[i].shape))
            label = names[t] if 0 <= t < len(names) else str(t)
            _out(f"  {res.method:<10} layer {res.layer:<10} class {label:<12} "
                 f"score {float(res.scores[i]):8.3f}  peak (row {peak[0]}, col {peak[1]})")
        if method in pngs:
            out = pngs[method]
            out.write_bytes(overlay_png(display, res.maps[0].numpy(), args.alpha,
                                        scale=max(1, 256 // display.shape[0])))
            _out(f"  wrote {out}")
    if npy is not None:
        np.save(npy, np.concatenate(all_maps).astype(np.float32))
        _out(f"wrote {npy}")
    return 0
