"""Inputs for a CAM view: a model input with the image to show and, for shapes, the object mask.

Example:
    >>> info = zoo.model_info("simple_cnn")
    >>> s = shapes_input(102, info)
    >>> s.x.shape, s.image.shape, s.mask.shape      # (1, 3, 32, 32), (32, 32, 3), (32, 32)

Every builder fits the pixels to ``info.input_shape`` (bilinear) and normalises them with the
model's ``info.mean`` / ``info.std``; grey models get the channel mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from hooklab.core.errors import DataError, ImageError
from hooklab.data import datasets as datalib
from hooklab.models import zoo

__all__ = ["SHAPES_ZH", "Sample", "class_names", "class_samples", "cifar_input",
           "conflict_examples", "random_input", "shapes_input", "upload_input"]

#: Chinese names of the shapes classes.
SHAPES_ZH = {"circle": "圆形", "square": "正方形", "triangle": "三角形", "cross": "十字",
             "star": "星形", "diamond": "菱形"}


@dataclass
class Sample:
    """One model input and what a view shows with it."""

    x: torch.Tensor  # (1, C, H, W) normalised for the model
    image: np.ndarray  # (H, W, 3) float32 in [0, 1]
    label: int | None
    mask: np.ndarray | None  # (H, W) bool object mask (shapes only)
    description: str


def class_names(names: tuple[str, ...] | list[str], lang: str = "en") -> list[str]:
    """Class names in ``lang`` ("en" or "zh"): CIFAR-10 and shapes names have Chinese forms."""
    names = list(names)
    if lang == "zh":
        if tuple(names) == tuple(datalib.CIFAR10_CLASSES):
            return list(datalib.CIFAR10_CLASSES_ZH)
        return [SHAPES_ZH.get(n, n) for n in names]
    return names


def _fit(pixels: torch.Tensor, info: zoo.ModelInfo) -> torch.Tensor:
    """[0, 1] pixels (3, h, w) -> the model's input size (bilinear), still in [0, 1]."""
    _, h, w = info.input_shape
    if pixels.shape[-2:] != (h, w):
        pixels = F.interpolate(pixels[None], size=(h, w), mode="bilinear",
                               align_corners=False)[0].clamp(0, 1)
    return pixels


def from_pixels(pixels: torch.Tensor, info: zoo.ModelInfo, label: int | None,
                mask: torch.Tensor | None, description: str) -> Sample:
    """A :class:`Sample` from ``(3, h, w)`` pixels in [0, 1] (and an optional object mask)."""
    p = _fit(pixels.float(), info)
    model_p = p.mean(0, keepdim=True) if info.input_shape[0] == 1 else p
    x = datalib.normalise(model_p, info.mean, info.std)[None].contiguous()  # Score-CAM: NCHW
    m: np.ndarray | None = None
    if mask is not None:
        mt = mask.float()[None, None]
        if mt.shape[-2:] != p.shape[-2:]:
            mt = F.interpolate(mt, size=p.shape[-2:], mode="nearest")
        m = mt[0, 0].numpy() > 0.5
    shown = model_p.expand(3, -1, -1) if info.input_shape[0] == 1 else p
    return Sample(x, shown.permute(1, 2, 0).numpy().astype(np.float32), label, m, description)


def shapes_input(index: int, info: zoo.ModelInfo, biased: bool = False) -> Sample:
    """Shapes test image ``index`` (with its object mask)."""
    img, label, mask = datalib.shapes_sample(int(index), split="test", biased=biased)
    return from_pixels(datalib.denormalise(img), info, label, mask, f"shapes test #{int(index)}")


def cifar_input(ds: Any, index: int, info: zoo.ModelInfo) -> Sample:
    """Image ``index`` of a CIFAR-10 split ``ds`` (:func:`hooklab.data.datasets.cifar10`)."""
    if not 0 <= int(index) < len(ds):
        raise DataError(f"CIFAR-10 test index must be 0..{len(ds) - 1}, got {index}")
    pixels = torch.from_numpy(ds.pixels(int(index))).permute(2, 0, 1).float() / 255.0
    return from_pixels(pixels, info, int(ds.targets[int(index)]), None,
                       f"CIFAR-10 test #{int(index)}")


def upload_input(data: bytes, name: str, info: zoo.ModelInfo) -> Sample:
    """An uploaded image as a model input.

    Raises:
        ImageError: empty, or anything that is not a readable image.
    """
    if not data:
        raise ImageError("the uploaded file is empty")
    _, h, w = info.input_shape
    loaded = datalib.load_image(data, size=(h, w), normalise=None)
    pixels = torch.from_numpy(loaded.display.astype(np.float32) / 255.0).permute(2, 0, 1)
    return from_pixels(pixels, info, None, None, f"upload {Path(name).name}")


def random_input(seed: int, info: zoo.ModelInfo) -> Sample:
    """Uniform random pixels from ``seed``."""
    g = torch.Generator().manual_seed(int(seed))
    _, h, w = info.input_shape
    return from_pixels(torch.rand(3, h, w, generator=g), info, None, None,
                       f"random (seed {int(seed)})")


def class_samples(info: zoo.ModelInfo, cifar: Any = None) -> list[Sample]:
    """The first test image of each class, in class order: shapes for a shapes model, else the
    CIFAR-10 split ``cifar``.

    Raises:
        DataError: a CIFAR-10 model and no ``cifar`` split given.
    """
    n_classes = len(info.class_names)
    out: dict[int, Sample] = {}
    if tuple(info.class_names) == tuple(datalib.SHAPE_CLASSES):
        for i in range(200):
            s = shapes_input(i, info)
            out.setdefault(int(s.label), s)  # type: ignore[arg-type]
            if len(out) == n_classes:
                break
    else:
        if cifar is None:
            raise DataError("the class gallery of a CIFAR-10 model needs a local CIFAR-10 copy")
        for i in range(len(cifar)):
            lab = int(cifar.targets[i])
            if lab not in out:
                out[lab] = cifar_input(cifar, i, info)
            if len(out) == n_classes:
                break
    return [out[c] for c in sorted(out)]


def conflict_examples(test: Any, n: int = 6) -> torch.Tensor:
    """Indices of the first ``n`` biased-shapes images whose marker names another class."""
    return torch.nonzero(test.cue_labels != test.labels).flatten()[:n]
