"""Data: the embedded "shapes" data set (plain and biased) and CIFAR-10 from a local copy.

Everything here is offline and deterministic. User images (uploads, files) are in
:mod:`hooklab.data.images`; :func:`load_image` is re-exported here.

**Shapes.** 32×32 RGB images like CIFAR-10: one bright shape of :data:`SHAPE_CLASSES` at a random
position, size and tint on a plain, noisy mid-grey background, with its exact object mask, so a
CAM can be scored against ground truth. Images are normalised with the seed's transform
(``ToTensor`` then ``Normalize((0.5,)*3, (0.5,)*3)``, i.e. ``x = (p - 0.5) / 0.5`` for pixels
``p`` in [0, 1]). Images are made in chunks of :data:`CHUNK` with their own random stream, so image
``i`` is the same whatever ``n`` you ask for.

**Biased shapes** (the seed's bias remark): the same images plus a 6×6 coloured marker in a corner
(the *cue*; colour and corner identify a class). In the train split the cue's class equals the
label with probability ``cue_prob`` (otherwise another class, uniformly); in the other splits it is
uniform, so the correlation is broken. ``cue_prob = 1 / len(SHAPE_CLASSES)`` gives rebalanced
training data.

Example:
    >>> train = make_shapes(2000)                   # ShapesData: images, labels, masks
    >>> train.images.shape, train.labels[:4]
    (torch.Size([2000, 3, 32, 32]), tensor([...]))
    >>> biased = make_biased_shapes(2000, cue_prob=0.95)
    >>> image, label, mask = shapes_sample(102)      # one test image, like the seed's index 102
"""

from __future__ import annotations

import codecs
import logging
import os
import pickle
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hooklab.core.errors import DataError
from hooklab.data.images import LoadedImage, load_image  # noqa: F401  (re-exported)

__all__ = [
    "SHAPE_CLASSES", "CUE_COLOURS", "CUE_CORNERS", "CUE_SIZE", "IMAGE_SIZE", "CHUNK", "SPLITS",
    "SEED_MEAN", "SEED_STD", "ShapesData", "make_shapes", "make_biased_shapes", "shapes_sample",
    "normalise", "denormalise", "to_display",
    "CIFAR10_CLASSES", "CIFAR10_CLASSES_ZH", "CIFAR10Data", "cifar10", "cifar10_search_paths",
    "load_image", "LoadedImage",
]

log = logging.getLogger(__name__)

#: Class names of the shapes data set, in label order.
SHAPE_CLASSES = ("circle", "square", "triangle", "cross", "star", "diamond")
#: Image side in pixels.
IMAGE_SIZE = 32
#: Images per independently seeded chunk (image i depends only on seed, split and i).
CHUNK = 256
#: Split names and their stream codes.
SPLITS = {"train": 0, "test": 1, "val": 2}
#: The seed's normalisation.
SEED_MEAN, SEED_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)

#: Side of the biased set's cue marker, in pixels (a 6 px marker covers at least one conv3 cell
#: of the SimpleCNN, whose map is 8x8 for a 32 px image).
CUE_SIZE = 6
#: Cue colour (RGB in [0, 1]) per class.
CUE_COLOURS = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (1.0, 1.0, 0.0),
               (1.0, 0.0, 1.0), (0.0, 1.0, 1.0))
#: Cue top-left corner (row, col) per class.
CUE_CORNERS = ((0, 0), (0, IMAGE_SIZE - CUE_SIZE), (IMAGE_SIZE - CUE_SIZE, 0),
               (IMAGE_SIZE - CUE_SIZE, IMAGE_SIZE - CUE_SIZE), (0, 0), (0, IMAGE_SIZE - CUE_SIZE))

# Generator version: bump when the pictures change (the training cache keys on it).
# v2: plain mid-grey backgrounds (no blotch texture: conv3 fired on it), bright objects, smaller
# shapes (the whole shape fits one conv3 receptive field) and a thicker ring.
# v3: a five-pointed star replaces the ring (a CAM points at a ring's middle, which is its hole,
# so a pointing game over exact masks cannot count it a hit), thicker cross arms (the conv3 map
# has a 4 px grid; a 3 px arm often fell between its points) and a 6 px cue marker.
GENERATOR_VERSION = 3
# Picture parameters: shape radius range (px); background colour range per channel (around the
# seed normalisation's zero, so the conv layers' zero padding adds no edge at the image border);
# object colour range per channel (brighter than any background); pixel noise (std, [0, 1]).
_RADIUS = (5.0, 8.0)
_BACKGROUND = (0.4, 0.6)
_OBJECT = (0.85, 1.0)
_NOISE_STD = 0.05
# Cross arm half-width: max(_ARM_MIN px, _ARM * radius).
_ARM, _ARM_MIN = 0.4, 2.0
# Star: inner radius (between the points) as a fraction of the outer radius.
_STAR_INNER = 0.45


@dataclass(eq=False)
class ShapesData:
    """A split of the shapes data set (a ``torch.utils.data.Dataset`` of ``(image, label)``).

    Attributes:
        images: float32 ``(N, 3, 32, 32)``, normalised with the seed's transform.
        labels: int64 ``(N,)``, indices into :attr:`classes`.
        masks: bool ``(N, 32, 32)``, the object's pixels.
        cue_masks: bool ``(N, 32, 32)`` of the cue marker (biased variant), else ``None``.
        cue_labels: int64 ``(N,)`` class the cue stands for (biased variant), else ``None``.
        classes: class names.
        split, seed, cue_prob: how it was made.
    """

    images: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor
    cue_masks: torch.Tensor | None = None
    cue_labels: torch.Tensor | None = None
    classes: tuple[str, ...] = SHAPE_CLASSES
    split: str = "train"
    seed: int = 0
    cue_prob: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])

    @property
    def biased(self) -> bool:
        return self.cue_masks is not None

    def cue_agreement(self) -> float:
        """Fraction of images whose cue names their label (biased variant only)."""
        if self.cue_labels is None:
            raise DataError("this shapes split has no cue (use make_biased_shapes)")
        return float((self.cue_labels == self.labels).float().mean())


def _split_code(split: str) -> int:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    return SPLITS[split]


def _shape_masks(dx: np.ndarray, dy: np.ndarray, r: np.ndarray) -> np.ndarray:
    """All class masks, stacked: ``(K, M, H, W)`` for offsets dx, dy ``(M, H, W)``, radii r."""
    r = r[:, None, None]
    d2 = dx * dx + dy * dy
    ax, ay = np.abs(dx), np.abs(dy)
    arm = np.maximum(_ARM_MIN, _ARM * r)
    # star: five points, one up; the radius falls linearly from a point to the inner radius
    seg = 2 * np.pi / 5
    phase = np.mod(np.arctan2(dy, dx) + np.pi / 2, seg) / seg        # 0 and 1 at the points
    star_r = r * (_STAR_INNER + (1 - _STAR_INNER) * np.abs(2 * phase - 1))
    return np.stack([
        d2 <= r * r,                                               # circle
        np.maximum(ax, ay) <= 0.8 * r,                             # square
        (dy >= -r) & (dy <= 0.7 * r) & (ax <= (dy + r) / 1.7),      # triangle, apex up
        ((ax <= arm) & (ay <= r)) | ((ay <= arm) & (ax <= r)),     # cross
        d2 <= star_r * star_r,                                     # star, a point up
        ax + ay <= r,                                              # diamond
    ])


@lru_cache(maxsize=8)  # ~3.4 MB per chunk; enough for shapes_sample browsing
def _chunk(seed: int, split_code: int, index: int) -> tuple[np.ndarray, ...]:
    """One chunk of plain shapes: pixels in [0, 1] (M, 3, H, W) float32, labels, masks."""
    rng = np.random.default_rng([seed, split_code, index, 0])
    m, k, s = CHUNK, len(SHAPE_CLASSES), IMAGE_SIZE
    labels = rng.permutation(np.arange(m) % k).astype(np.int64)
    r = rng.uniform(*_RADIUS, m)
    cx = rng.uniform(r, s - 1 - r)
    cy = rng.uniform(r, s - 1 - r)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    dx = xx[None] - cx[:, None, None].astype(np.float32)
    dy = yy[None] - cy[:, None, None].astype(np.float32)
    masks = _shape_masks(dx, dy, r.astype(np.float32))[labels, np.arange(m)]  # (M, H, W)

    bg = rng.uniform(*_BACKGROUND, (m, 3)).astype(np.float32)
    obj = rng.uniform(*_OBJECT, (m, 3)).astype(np.float32)       # >= 0.25 brighter per channel
    img = np.where(masks[:, None], obj[:, :, None, None], bg[:, :, None, None])
    img += rng.standard_normal(img.shape, dtype=np.float32) * _NOISE_STD
    np.clip(img, 0.0, 1.0, out=img)
    for a in (img, labels, masks):
        a.flags.writeable = False
    return img, labels, masks


@lru_cache(maxsize=64)
def _cue_chunk(seed: int, split_code: int, index: int, cue_prob: float) -> tuple[np.ndarray, ...]:
    """Cue classes for one chunk: agree with the label w.p. cue_prob in train, uniform otherwise."""
    _, labels, _ = _chunk(seed, split_code, index)
    rng = np.random.default_rng([seed, split_code, index, 1])
    k = len(SHAPE_CLASSES)
    if split_code == SPLITS["train"]:
        agree = rng.random(CHUNK) < cue_prob
        other = (labels + rng.integers(1, k, CHUNK)) % k
        cue = np.where(agree, labels, other)
    else:
        cue = rng.integers(0, k, CHUNK)
    cue = cue.astype(np.int64)
    cue.flags.writeable = False
    return (cue,)


def _cue_mask(cue_class: int) -> np.ndarray:
    m = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=bool)
    r0, c0 = CUE_CORNERS[cue_class]
    m[r0:r0 + CUE_SIZE, c0:c0 + CUE_SIZE] = True
    return m


def _gather(n: int, seed: int, split: str, cue_prob: float | None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    if not isinstance(n, (int, np.integer)) or n < 0:
        raise DataError(f"n must be a non-negative integer, got {n!r}")
    code = _split_code(split)
    chunks = range(-(-int(n) // CHUNK))
    parts = [_chunk(seed, code, i) for i in chunks]
    if not parts:
        empty = np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), dtype=bool)
        return (np.zeros((0, 3, IMAGE_SIZE, IMAGE_SIZE), np.float32), np.zeros(0, np.int64),
                empty, empty.copy() if cue_prob is not None else None,
                np.zeros(0, np.int64) if cue_prob is not None else None)
    img = np.concatenate([p[0] for p in parts])[:n].copy()
    labels = np.concatenate([p[1] for p in parts])[:n].copy()
    masks = np.concatenate([p[2] for p in parts])[:n].copy()
    if cue_prob is None:
        return img, labels, masks, None, None
    cue = np.concatenate([_cue_chunk(seed, code, i, float(cue_prob))[0] for i in chunks])[:n].copy()
    cue_masks = np.stack([_cue_mask(int(c)) for c in range(len(SHAPE_CLASSES))])[cue]
    colours = np.asarray(CUE_COLOURS, dtype=np.float32)[cue]                   # (N, 3)
    img = np.where(cue_masks[:, None], colours[:, :, None, None], img).astype(np.float32)
    masks &= ~cue_masks
    return img, labels, masks, cue_masks, cue


def normalise(pixels: torch.Tensor | np.ndarray, mean: tuple[float, ...] = SEED_MEAN,
              std: tuple[float, ...] = SEED_STD) -> torch.Tensor:
    """``(p - mean) / std`` per channel for pixels in [0, 1], channels first."""
    t = torch.as_tensor(pixels, dtype=torch.float32)
    shape = (-1, 1, 1)
    return (t - torch.tensor(mean).view(shape)) / torch.tensor(std).view(shape)


def denormalise(x: torch.Tensor | np.ndarray, mean: tuple[float, ...] = SEED_MEAN,
                std: tuple[float, ...] = SEED_STD) -> torch.Tensor:
    """Inverse of :func:`normalise`, clamped to [0, 1]: ``p = x * std + mean``.

    Works on ``(C, H, W)`` or ``(N, C, H, W)``.
    """
    t = torch.as_tensor(x, dtype=torch.float32).detach().cpu()
    shape = (-1, 1, 1)
    return (t * torch.tensor(std).view(shape) + torch.tensor(mean).view(shape)).clamp(0.0, 1.0)


def to_display(x: torch.Tensor | np.ndarray, mean: tuple[float, ...] = SEED_MEAN,
               std: tuple[float, ...] = SEED_STD) -> np.ndarray:
    """A normalised ``(3, H, W)`` (or ``(1, 3, H, W)``) image as float32 ``(H, W, 3)`` in [0, 1]."""
    t = denormalise(x, mean, std)
    if t.dim() == 4:
        if t.shape[0] != 1:
            raise DataError(f"to_display takes one image, got a batch of {t.shape[0]}")
        t = t[0]
    return t.permute(1, 2, 0).numpy().astype(np.float32)


def make_shapes(n: int, seed: int = 0, split: str = "train") -> ShapesData:
    """``n`` plain shapes images of ``split`` (see the module docstring)."""
    img, labels, masks, _, _ = _gather(n, seed, split, None)
    return ShapesData(normalise(torch.from_numpy(img)), torch.from_numpy(labels),
                      torch.from_numpy(masks), split=split, seed=seed)


def make_biased_shapes(n: int, seed: int = 0, split: str = "train",
                       cue_prob: float = 0.95) -> ShapesData:
    """``n`` shapes with a class cue marker; the cue agrees with the label w.p. ``cue_prob`` in
    the train split and is uniformly random in the other splits. The object mask excludes the cue.
    """
    if not 0.0 <= float(cue_prob) <= 1.0:
        raise DataError(f"cue_prob must be in [0, 1], got {cue_prob!r}")
    img, labels, masks, cue_masks, cue = _gather(n, seed, split, float(cue_prob))
    return ShapesData(normalise(torch.from_numpy(img)), torch.from_numpy(labels),
                      torch.from_numpy(masks), torch.from_numpy(cue_masks), torch.from_numpy(cue),
                      split=split, seed=seed, cue_prob=float(cue_prob))


def shapes_sample(index: int, split: str = "test", seed: int = 0, biased: bool = False,
                  cue_prob: float = 0.95) -> tuple[torch.Tensor, int, torch.Tensor]:
    """Image ``index`` of a split: ``(image (3, 32, 32) normalised, label, mask (32, 32))``.

    Equal to ``make_shapes(n, seed, split)[index]`` for any ``n > index``; only the image's
    chunk is generated.
    """
    if not isinstance(index, (int, np.integer)) or index < 0:
        raise DataError(f"index must be a non-negative integer, got {index!r}")
    base = (int(index) // CHUNK) * CHUNK
    # Build only the chunk that holds the image (chunks before it are not generated).
    code = _split_code(split)
    img, labels, masks = (a[int(index) - base] for a in _chunk(seed, code, int(index) // CHUNK))
    img, masks = img.copy(), masks.copy()
    if biased:
        cue = int(_cue_chunk(seed, code, int(index) // CHUNK, float(cue_prob))[0][int(index) - base])
        cm = _cue_mask(cue)
        img = np.where(cm[None], np.asarray(CUE_COLOURS[cue], np.float32)[:, None, None], img)
        masks &= ~cm
    return normalise(torch.from_numpy(img.astype(np.float32))), int(labels), torch.from_numpy(masks)


# --------------------------------------------------------------------------------------------
# CIFAR-10 from a local copy (torchvision's "cifar-10-batches-py" layout), read without pickle code.
# --------------------------------------------------------------------------------------------

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
#: The seed's class names (SEED_NOTES §5).
CIFAR10_CLASSES_ZH = ("飞机", "汽车", "鸟", "猫", "鹿", "狗", "青蛙", "马", "船", "卡车")
CIFAR10_DIR = "cifar-10-batches-py"
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILES = ("test_batch",)
#: Environment variable naming the CIFAR-10 root (the folder holding cifar-10-batches-py).
CIFAR10_ENV = "HOOKLAB_CIFAR10"


def _np_reconstruct() -> Any:
    # imported here, not at the top: the module moved in numpy 2 (numpy._core), the fallback
    # keeps numpy 1 working
    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar  # type: ignore[no-redef]
    return _reconstruct, scalar


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batch files allowing only numpy arrays, dicts, lists and strings.

    torchvision itself uses a full ``pickle.load``; a tampered batch file could run code there.
    """

    def find_class(self, module: str, name: str) -> Any:
        reconstruct, scalar = _np_reconstruct()
        allowed = {
            ("numpy.core.multiarray", "_reconstruct"): reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): reconstruct,
            ("numpy.core.multiarray", "scalar"): scalar,
            ("numpy._core.multiarray", "scalar"): scalar,
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
            ("_codecs", "encode"): codecs.encode,
        }
        if (module, name) in allowed:
            return allowed[(module, name)]
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")


def _read_batch(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            obj = _BatchUnpickler(fh, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, OSError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, MemoryError) as exc:
        raise DataError(f"CIFAR-10 file {str(path)!r} is unreadable or not a CIFAR batch: "
                        f"{exc}") from exc
    if not isinstance(obj, dict):
        raise DataError(f"CIFAR-10 file {str(path)!r} does not hold a batch dictionary")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def cifar10_search_paths(root: str | os.PathLike[str] | None = None) -> list[Path]:
    """Folders checked for ``cifar-10-batches-py``, in order (``root`` alone when given)."""
    if root is not None:
        return [Path(root).expanduser()]
    paths = []
    if os.environ.get(CIFAR10_ENV):
        paths.append(Path(os.environ[CIFAR10_ENV]).expanduser())
    paths += [Path("data"), Path("~/.cache/hooklab/data").expanduser()]
    return paths


def _find_batches(candidates: list[Path]) -> Path | None:
    for c in candidates:
        for d in (c / CIFAR10_DIR, c):
            if (d / "test_batch").is_file() or (d / "data_batch_1").is_file():
                return d
    return None


class CIFAR10Data(torch.utils.data.Dataset):
    """CIFAR-10 read from a local copy; items are ``(image, label)`` with the seed's transform.

    Attributes:
        data: uint8 ``(N, 32, 32, 3)`` as in torchvision. targets: list of int labels.
        classes / classes_zh: English and Chinese class names. root: the batches folder.
    """

    classes = CIFAR10_CLASSES
    classes_zh = CIFAR10_CLASSES_ZH

    def __init__(self, folder: Path, train: bool) -> None:
        self.root, self.train = folder, train
        files = CIFAR10_TRAIN_FILES if train else CIFAR10_TEST_FILES
        missing = [f for f in files if not (folder / f).is_file()]
        if missing:
            raise DataError(f"CIFAR-10 copy in {str(folder)!r} is incomplete: missing "
                            f"{', '.join(missing)}")
        data, targets = [], []
        for f in files:
            batch = _read_batch(folder / f)
            try:
                arr = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
                labels = [int(v) for v in batch.get("labels", batch.get("fine_labels", []))]
            except (KeyError, ValueError, TypeError) as exc:
                raise DataError(f"CIFAR-10 file {str(folder / f)!r} has an unexpected layout: "
                                f"{exc}") from exc
            if len(labels) != len(arr) or any(not 0 <= v < 10 for v in labels):
                raise DataError(f"CIFAR-10 file {str(folder / f)!r}: labels do not match the data")
            data.append(arr)
            targets += labels
        self.data = np.concatenate(data).transpose(0, 2, 3, 1).copy()
        self.targets = targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        pixels = torch.from_numpy(self.data[i]).permute(2, 0, 1).float().div(255)
        return normalise(pixels), self.targets[i]

    def pixels(self, i: int) -> np.ndarray:
        """Image ``i`` as uint8 ``(32, 32, 3)`` for display."""
        return self.data[i]


def cifar10(root: str | os.PathLike[str] | None = None, train: bool = False,
            download: bool = False) -> CIFAR10Data:
    """CIFAR-10 from a local copy in torchvision's layout (``<root>/cifar-10-batches-py``).

    Args:
        root: the folder holding ``cifar-10-batches-py`` (or that folder itself). ``None``: the
            ``HOOKLAB_CIFAR10`` environment variable, ``./data``, ``~/.cache/hooklab/data``.
        train: the 50,000 training images instead of the 10,000 test images.
        download: fetch the archive with torchvision into ``root`` (default ``./data``) when no
            copy is found. Never done unless asked.

    Raises:
        DataError: no copy found (the message lists where it looked), or a copy is malformed.
    """
    candidates = cifar10_search_paths(root)
    folder = _find_batches(candidates)
    if folder is None and download:
        target = Path(root).expanduser() if root is not None else candidates[-2]
        log.info("downloading CIFAR-10 into %s (download=True)", target)
        from torchvision.datasets import CIFAR10  # lazy: torchvision only for this download

        CIFAR10(str(target), train=train, download=True)
        folder = _find_batches([target])
    if folder is None:
        looked = ", ".join(str(c / CIFAR10_DIR) for c in candidates)
        raise DataError(
            f"no local CIFAR-10 copy found (looked in: {looked}). Pass root='path/to/folder' "
            f"holding {CIFAR10_DIR}, set {CIFAR10_ENV}, or opt in with download=True.")
    return CIFAR10Data(folder, train)
