"""User images: any common format in, a normalised ``(1, C, H, W)`` tensor out — or an ImageError.

Uploads are untrusted. :func:`load_image` reads the header first and refuses images over
:data:`MAX_PIXELS` *before* decoding (decompression bombs), turns every decoding failure (empty,
truncated, not an image) into :class:`~hooklab.core.errors.ImageError`, and converts odd but valid
images: grey, grey+alpha, RGBA and palette transparency (composited on white), CMYK, 16-bit and
32-bit integer or float pixels, EXIF orientation; of an animation it takes the first frame.

Example:
    >>> img = load_image("cat.png", size=(32, 32), normalise="seed")
    >>> img.tensor.shape, img.display.shape
    (torch.Size([1, 3, 32, 32]), (32, 32, 3))
"""

from __future__ import annotations

import io
import logging
import os
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from hooklab.core.errors import ImageError

__all__ = ["LoadedImage", "load_image", "image_size", "MAX_PIXELS", "MAX_BYTES", "NORMALISATIONS",
           "ALLOWED_FORMATS"]

log = logging.getLogger(__name__)

#: Largest image (width × height) decoded: about a 7000 × 7000 photo.
MAX_PIXELS = 50_000_000
#: Largest encoded file read.
MAX_BYTES = 64 * 2**20
#: Named normalisations (mean, std) for ``normalise=``.
NORMALISATIONS = {
    "seed": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
_FITS = ("stretch", "crop", "pad")
#: Formats PIL may try. Others are refused before any plugin runs: EPS would start Ghostscript,
#: and rarely used plugins are where decoder bugs live.
ALLOWED_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "DIB", "TIFF", "WEBP", "PPM", "ICO", "TGA")


def _formats() -> list[str]:
    """The allowed formats this Pillow build has plugins for."""
    if not all(f in Image.OPEN for f in ALLOWED_FORMATS):
        Image.init()
    return [f for f in ALLOWED_FORMATS if f in Image.OPEN]


@dataclass
class LoadedImage:
    """A decoded, converted and resized image.

    Attributes:
        tensor: float32 ``(1, C, H, W)``, normalised as asked.
        display: uint8 ``(H, W, 3)``: the same pixels before normalisation, for showing.
        original_size: ``(H, W)`` of the file's first frame after EXIF orientation.
        mode: the file's PIL mode (``"RGBA"``, ``"P"``, ``"I;16"``, ...).
        format: the file format PIL detected (``"PNG"``, ``"JPEG"``, ...).
        frames: number of frames (> 1 for animations; the first is used).
    """

    tensor: torch.Tensor
    display: np.ndarray
    original_size: tuple[int, int]
    mode: str
    format: str | None
    frames: int = 1


def _read_bytes(source: Any, max_bytes: int) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, name = bytes(source), "the uploaded data"
    elif isinstance(source, (str, os.PathLike)):
        p = Path(source)
        name = repr(str(p))
        if not p.is_file():
            raise ImageError(f"image file {name} does not exist or is not a file")
        try:
            size = p.stat().st_size
            if size > max_bytes:
                raise ImageError(f"image file {name} is {size:,} bytes; the limit is {max_bytes:,}")
            data = p.read_bytes()
        except OSError as exc:
            raise ImageError(f"cannot read image file {name}: {exc}") from exc
    elif hasattr(source, "read"):
        name = repr(getattr(source, "name", "the uploaded file"))
        data = source.read(max_bytes + 1)
        if isinstance(data, str):
            raise ImageError(f"{name} was opened in text mode; open it with 'rb'")
    else:
        raise ImageError(f"cannot read an image from a {type(source).__name__}; "
                         "pass bytes, a path or a binary file object")
    if not data:
        raise ImageError(f"{name} is empty (0 bytes), not an image")
    if len(data) > max_bytes:
        raise ImageError(f"{name} is larger than the {max_bytes:,}-byte limit")
    return data, name


def _open(data: bytes, name: str, max_pixels: int) -> Image.Image:
    """Open (header only) and check the pixel count before any decoding."""
    with warnings.catch_warnings():
        # hooklab's own limit (max_pixels) governs; PIL's error still applies beyond its own.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data), formats=_formats())
        except Image.DecompressionBombError as exc:
            raise ImageError(f"{name} is too large to decode safely (decompression bomb?): "
                             f"{exc}") from exc
        except UnidentifiedImageError as exc:
            raise ImageError(f"{name} is not an image in a format hooklab reads "
                             f"({', '.join(ALLOWED_FORMATS)})") from exc
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ImageError(f"{name} is not a readable image: {exc}") from exc
    w, h = img.size
    if w <= 0 or h <= 0:
        raise ImageError(f"{name} has an empty size {w}x{h}")
    if w * h > max_pixels:
        raise ImageError(f"{name} is {w}x{h} = {w * h:,} pixels; the limit is {max_pixels:,} "
                         "(refused before decoding, as a guard against decompression bombs)")
    return img


def _decode(img: Image.Image, name: str) -> tuple[Image.Image, int]:
    frames = int(getattr(img, "n_frames", 1) or 1)
    try:
        if frames > 1:
            img.seek(0)
        img.load()
        img = ImageOps.exif_transpose(img) or img
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{name} is too large to decode safely: {exc}") from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError,
            struct.error) as exc:
        raise ImageError(f"{name} is truncated or corrupt and cannot be decoded: {exc}") from exc
    return img, frames


def _to_rgb(img: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """Any PIL mode to 8-bit RGB: high bit depths are scaled, alpha composited on ``background``."""
    mode = img.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(img).astype(np.float64)
        if mode == "F":
            top = 1.0 if arr.size and np.nanmax(arr) <= 1.0 else 255.0
        elif mode == "I" and arr.size and arr.max() <= 255 and arr.min() >= 0:
            top = 255.0
        else:
            top = 65535.0
        arr = np.nan_to_num(arr, nan=0.0)
        grey = np.clip(np.rint(arr * (255.0 / top)), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode in ("P", "L", "RGB") and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(base, rgba).convert("RGB")
    if mode == "RGB":
        return img
    try:
        return img.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ImageError(f"images in colour mode {mode!r} are not supported") from exc


def _fit(img: Image.Image, size: tuple[int, int], fit: str,
         background: tuple[int, int, int]) -> Image.Image:
    h, w = size
    if img.size == (w, h):
        return img
    resample = Image.Resampling.BILINEAR
    if fit == "stretch":
        return img.resize((w, h), resample)
    if fit == "crop":
        return ImageOps.fit(img, (w, h), method=resample)
    return ImageOps.pad(img, (w, h), method=resample, color=background)


def _norm(normalise: Any, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    if normalise is None or normalise is False:
        return None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    if isinstance(normalise, str):
        if normalise.lower() not in NORMALISATIONS:
            raise ImageError(f"unknown normalisation {normalise!r}; use one of "
                             f"{', '.join(NORMALISATIONS)}, (mean, std) or None")
        mean, std = NORMALISATIONS[normalise.lower()]
    elif hasattr(normalise, "mean") and hasattr(normalise, "std"):  # e.g. models.ModelInfo
        mean, std = tuple(normalise.mean), tuple(normalise.std)
    else:
        try:
            mean, std = (tuple(float(v) for v in t) for t in normalise)
        except (TypeError, ValueError) as exc:
            raise ImageError(f"normalise must be a name, (mean, std) or None, got {normalise!r}"
                             ) from exc
    if channels == 1 and len(mean) == len(std) == 3:  # an RGB normalisation for a grey input
        mean, std = (sum(mean) / 3,), (sum(std) / 3,)
    if len(mean) != len(std) or len(mean) not in (1, channels) or any(s == 0 for s in std):
        raise ImageError(f"normalise mean/std {mean}/{std} do not fit {channels} channel(s)")
    return mean, std


def image_size(source: bytes | str | os.PathLike[str] | BinaryIO) -> tuple[int, int]:
    """``(H, W)`` from the header only, without decoding pixels."""
    data, name = _read_bytes(source, MAX_BYTES)
    img = _open(data, name, max_pixels=2**62)
    return img.size[1], img.size[0]


def load_image(source: bytes | str | os.PathLike[str] | BinaryIO,
               size: tuple[int, int] | int | None = None, normalise: Any = "seed", *,
               fit: str = "stretch", channels: int = 3, max_pixels: int = MAX_PIXELS,
               max_bytes: int = MAX_BYTES,
               background: tuple[int, int, int] = (255, 255, 255)) -> LoadedImage:
    """Decode an image safely and turn it into a model input.

    Args:
        source: bytes, a path, or a binary file object (e.g. a Streamlit upload).
        size: ``(H, W)`` (or one int for a square) to resize to; ``None`` keeps the size.
        normalise: ``"seed"`` (mean = std = 0.5), ``"imagenet"``, ``(mean, std)``, an object with
            ``mean``/``std`` (a :class:`hooklab.models.zoo.ModelInfo`), or ``None`` for [0, 1] pixels:
            ``x = (p - mean) / std``.
        fit: ``"stretch"`` (resize, ignore aspect), ``"crop"`` (centre crop) or ``"pad"``.
        channels: 3 for RGB, 1 for grey (the seed's SimpleModel).
        max_pixels: refuse images with more pixels than this, before decoding.
        max_bytes: refuse encoded files larger than this.
        background: colour transparent pixels are composited on.

    Raises:
        ImageError: empty, unreadable, truncated, not an image, too large, or bad arguments.
    """
    if fit not in _FITS:
        raise ImageError(f"fit must be one of {', '.join(_FITS)}, got {fit!r}")
    if channels not in (1, 3):
        raise ImageError(f"channels must be 1 or 3, got {channels!r}")
    if size is not None:
        hw = (size, size) if isinstance(size, int) else tuple(size)
        if len(hw) != 2 or not all(isinstance(v, (int, np.integer)) and 0 < v <= 8192 for v in hw):
            raise ImageError(f"size must be (H, W) with 1..8192 pixels per side, got {size!r}")
        size = (int(hw[0]), int(hw[1]))
    stats = _norm(normalise, channels)
    data, name = _read_bytes(source, max_bytes)
    img = _open(data, name, max_pixels)
    mode, fmt = img.mode, img.format
    img, frames = _decode(img, name)
    original = (img.size[1], img.size[0])
    rgb = _to_rgb(img, background)
    if size is not None:
        rgb = _fit(rgb, size, fit, background)
    display = np.asarray(rgb, dtype=np.uint8).copy()
    pixels = display if channels == 3 else np.asarray(rgb.convert("L"), dtype=np.uint8)[..., None]
    t = torch.from_numpy(pixels.astype(np.float32) / 255.0).permute(2, 0, 1)
    if stats is not None:
        mean, std = stats
        t = (t - torch.tensor(mean).view(-1, 1, 1)) / torch.tensor(std).view(-1, 1, 1)
    return LoadedImage(t.unsqueeze(0).contiguous(), display, original, mode, fmt, frames)
