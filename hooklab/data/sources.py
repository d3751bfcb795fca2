"""Data sources by name: one way to say which data set, and to read image ``i`` of it.

A source is named by a string and read by integer index, so a worker on another machine can
rebuild the same source from its :meth:`DataSource.spec` and load its own images: what travels
per batch of a distributed evaluation is indices, never pixels.

Names:

* ``shapes`` / ``biased_shapes`` (the embedded data sets; they have object masks, and any size:
  ``n`` images of a split),
* ``cifar10`` or ``cifar10:ROOT`` (a local copy only; nothing is downloaded),
* ``imagefolder:PATH`` (any torchvision-style ImageFolder: one subfolder per class, images in
  them; classes sorted by folder name, images by file name, as torchvision orders them).

Images come out in the model's input space: resized to ``size`` and normalised with ``mean`` /
``std`` (the zoo's :class:`~hooklab.models.zoo.ModelInfo` gives both; the defaults are the
seed's 32 px transform). Masks (shapes only) are resized with nearest-neighbour sampling.

Example:
    >>> src = open_source("shapes", split="test", n=200)
    >>> x, labels, masks = src.batch(range(0, 32))
    >>> src = open_source("imagefolder:~/data/val", size=(224, 224), mean=IMAGENET_MEAN, ...)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from hooklab.core.errors import DataError
from hooklab.data import datasets
from hooklab.data.images import load_image

__all__ = ["IMAGE_EXTENSIONS", "SHAPES_DEFAULT_N", "SOURCE_KINDS", "DataSource", "open_source"]

log = logging.getLogger(__name__)

#: The kinds of source a name can start with.
SOURCE_KINDS = ("shapes", "biased_shapes", "cifar10", "imagefolder")
#: Images of a shapes split when no ``n`` is given (the generator has no fixed size).
SHAPES_DEFAULT_N = 1000
#: File endings an ImageFolder's images may have (torchvision's IMG_EXTENSIONS).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
_SEED_SIZE = (datasets.IMAGE_SIZE, datasets.IMAGE_SIZE)
_IMAGEFOLDER_HELP = ("an ImageFolder is a folder with one subfolder per class, each holding that "
                     "class's images (e.g. val/cat/1.jpg, val/dog/2.png)")


@dataclass(frozen=True)
class _Prep:
    size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def is_seed(self) -> bool:
        return (self.size == _SEED_SIZE and self.mean == datasets.SEED_MEAN
                and self.std == datasets.SEED_STD)


class DataSource:
    """A named data set, indexable by integer (see the module docstring).

    Attributes:
        name: the canonical name (``shapes``, ``biased_shapes``, ``cifar10``, or
            ``imagefolder:/absolute/path``).
        split: ``train`` / ``test`` / ``val`` (the shapes splits; CIFAR-10 ``train`` or
            ``test``; an ImageFolder has one, ``"folder"``).
        classes: class names, in label order.
        has_masks: whether :meth:`batch` returns object masks (the pointing game needs them).
    """

    def __init__(self, name: str, split: str, classes: Sequence[str], length: int,
                 prep: _Prep, *, seed: int = 0, has_masks: bool = False) -> None:
        self.name, self.split, self.seed = name, split, int(seed)
        self.classes = tuple(classes)
        self.has_masks = has_masks
        self._len = int(length)
        self._prep = prep

    def __len__(self) -> int:
        return self._len

    def __repr__(self) -> str:
        return f"DataSource({self.name!r}, split={self.split!r}, n={self._len})"

    def spec(self) -> dict[str, Any]:
        """Plain data that rebuilds this source with :func:`open_source` (``**spec``)."""
        return {"data": self.name, "split": self.split, "n": self._len, "seed": self.seed,
                "size": list(self._prep.size), "mean": list(self._prep.mean),
                "std": list(self._prep.std)}

    # -- reading -------------------------------------------------------------------------------
    def _check(self, i: int) -> int:
        if not isinstance(i, (int, np.integer)) or not 0 <= int(i) < self._len:
            raise DataError(f"index {i!r} is outside {self.name} ({self._len} images)")
        return int(i)

    def _raw(self, i: int) -> tuple[torch.Tensor, int, torch.Tensor | None, bool]:
        """Image ``i``: ``(tensor, label, mask, already in the model's space)``."""
        raise NotImplementedError

    def sample(self, i: int) -> tuple[torch.Tensor, int, torch.Tensor | None]:
        """Image ``i`` in the model's input space ``(C, H, W)``, its label, its mask (or None)."""
        x, label, mask, ready = self._raw(self._check(i))
        if not ready:
            x = self._prepare_pixels(x)
        if mask is not None and tuple(mask.shape) != self._prep.size:
            mask = F.interpolate(mask[None, None].float(), size=self._prep.size,
                                 mode="nearest")[0, 0] > 0.5
        return x, label, mask

    def _prepare_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1] ``(C, H, W)`` -> resized and normalised."""
        if tuple(pixels.shape[-2:]) != self._prep.size:
            pixels = F.interpolate(pixels[None], size=self._prep.size, mode="bilinear",
                                   align_corners=False)[0].clamp(0.0, 1.0)
        return datasets.normalise(pixels, self._prep.mean, self._prep.std)

    def batch(self, indices: Iterable[int]
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Images ``(B, C, H, W)``, labels ``(B,)`` and masks ``(B, H, W)`` (or None) of
        ``indices``."""
        items = [self.sample(i) for i in indices]
        if not items:
            raise DataError("batch() needs at least one index")
        x = torch.stack([it[0] for it in items])
        labels = torch.tensor([it[1] for it in items], dtype=torch.int64)
        masks = (torch.stack([it[2] for it in items])  # type: ignore[misc]
                 if self.has_masks else None)
        return x, labels, masks


class _Shapes(DataSource):
    def __init__(self, biased: bool, split: str, n: int, seed: int, prep: _Prep) -> None:
        datasets._split_code(split)  # unknown split: one DataError
        super().__init__("biased_shapes" if biased else "shapes", split, datasets.SHAPE_CLASSES,
                         n, prep, seed=seed, has_masks=True)
        self._biased = biased

    def _raw(self, i: int) -> tuple[torch.Tensor, int, torch.Tensor | None, bool]:
        x, label, mask = datasets.shapes_sample(i, split=self.split, seed=self.seed,
                                                biased=self._biased)
        if self._prep.is_seed:
            return x, label, mask, True
        return datasets.denormalise(x), label, mask, False


class _Cifar(DataSource):
    def __init__(self, root: str | None, split: str, n: int | None, prep: _Prep) -> None:
        if split not in ("train", "test"):
            raise DataError(f"CIFAR-10 has the splits train and test, not {split!r}")
        self._data = datasets.cifar10(root, train=split == "train", download=False)
        name = "cifar10" if root is None else f"cifar10:{Path(root).expanduser().resolve()}"
        total = len(self._data)
        super().__init__(name, split, datasets.CIFAR10_CLASSES, _take(n, total, name), prep)

    def _raw(self, i: int) -> tuple[torch.Tensor, int, torch.Tensor | None, bool]:
        pixels = torch.from_numpy(self._data.pixels(i).copy()).permute(2, 0, 1).float().div(255)
        return pixels, int(self._data.targets[i]), None, False


def _scan_imagefolder(path: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """Classes and ``(file, label)`` of an ImageFolder, or one DataError saying what was found."""
    shown = str(path)
    if not path.exists():
        raise DataError(f"{shown!r} does not exist; {_IMAGEFOLDER_HELP}")
    if not path.is_dir():
        raise DataError(f"{shown!r} is a file, not a folder; {_IMAGEFOLDER_HELP}")
    try:
        entries = sorted(os.scandir(path), key=lambda e: e.name)
    except OSError as exc:
        raise DataError(f"cannot read {shown!r}: {exc.strerror or exc}") from None
    dirs = [e for e in entries if e.is_dir() and not e.name.startswith(".")]
    loose = [e.name for e in entries if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS)]
    classes: list[str] = []
    files: list[tuple[Path, int]] = []
    for d in dirs:
        imgs = sorted(p for p in Path(d.path).rglob("*")
                      if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if imgs:
            files += [(p, len(classes)) for p in imgs]
            classes.append(d.name)
    if not classes:
        found = (f"{len(loose)} image(s) directly in it and no class subfolder" if loose else
                 f"{len(dirs)} subfolder(s) without images" if dirs else "nothing usable")
        raise DataError(f"{shown!r} is not an ImageFolder: found {found}; {_IMAGEFOLDER_HELP}")
    if loose:
        log.warning("%s: %d image(s) outside the class subfolders are left out", shown,
                    len(loose))
    return classes, files


class _ImageFolder(DataSource):
    def __init__(self, path: str, n: int | None, prep: _Prep) -> None:
        folder = Path(path).expanduser().resolve()
        classes, self._files = _scan_imagefolder(folder)
        name = f"imagefolder:{folder}"
        super().__init__(name, "folder", classes, _take(n, len(self._files), name), prep)

    def _raw(self, i: int) -> tuple[torch.Tensor, int, torch.Tensor | None, bool]:
        path, label = self._files[i]
        img = load_image(path, size=self._prep.size, normalise=(self._prep.mean, self._prep.std))
        return img.tensor[0] if img.tensor.dim() == 4 else img.tensor, label, None, True


def _take(n: int | None, total: int, name: str) -> int:
    if n is None:
        return total
    if n > total:
        raise DataError(f"{name} has {total} images; n={n} asks for more")
    return n


def _prep(size: Sequence[int] | None, mean: Sequence[float] | None,
          std: Sequence[float] | None) -> _Prep:
    hw = tuple(int(v) for v in (size if size is not None else _SEED_SIZE))
    if len(hw) != 2 or min(hw) < 1:
        raise DataError(f"size must be (H, W), got {size!r}")
    m = tuple(float(v) for v in (mean if mean is not None else datasets.SEED_MEAN))
    s = tuple(float(v) for v in (std if std is not None else datasets.SEED_STD))
    if len(m) != len(s) or any(v <= 0 for v in s):
        raise DataError(f"mean {m} and std {s} must have one positive std per channel")
    return _Prep((hw[0], hw[1]), m, s)


def open_source(data: str, *, split: str = "test", n: int | None = None, seed: int = 0,
                size: Sequence[int] | None = None, mean: Sequence[float] | None = None,
                std: Sequence[float] | None = None) -> DataSource:
    """The data set named ``data`` (see the module docstring), in a model's input space.

    Args:
        data: ``shapes``, ``biased_shapes``, ``cifar10[:ROOT]`` or ``imagefolder:PATH``.
        split: which split (shapes: train/test/val; CIFAR-10: train/test; ignored by an
            ImageFolder).
        n: the first ``n`` images (default: all; shapes: :data:`SHAPES_DEFAULT_N`).
        seed: the shapes generator's seed.
        size, mean, std: the model's input size ``(H, W)`` and normalisation (defaults: the
            seed's 32 px, mean = std = 0.5).

    Raises:
        DataError: an unknown name, a path that is not an ImageFolder (the message says what
            one is and what was found), no local CIFAR-10 copy, ``n`` beyond the data.
    """
    if not isinstance(data, str) or not data.strip():
        raise DataError(f"data must be a name like 'shapes' or 'imagefolder:PATH', got {data!r}")
    if n is not None and (not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1):
        raise DataError(f"n must be a positive integer, got {n!r}")
    kind, _, arg = data.strip().partition(":")
    kind = kind.lower().replace("-", "_")
    prep = _prep(size, mean, std)
    if kind in ("shapes", "biased_shapes") and not arg:
        return _Shapes(kind == "biased_shapes", split, int(n or SHAPES_DEFAULT_N), int(seed),
                       prep)
    if kind == "cifar10":
        return _Cifar(arg or None, split, n, prep)
    if kind == "imagefolder" and arg:
        return _ImageFolder(arg, n, prep)
    if kind == "imagefolder":
        raise DataError(f"name the folder: imagefolder:PATH; {_IMAGEFOLDER_HELP}")
    raise DataError(f"unknown data set {data!r}; use shapes, biased_shapes, cifar10[:ROOT] or "
                    "imagefolder:PATH")
