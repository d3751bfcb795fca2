"""User images: a corpus of odd, broken and hostile files generated here, each answered properly."""

from __future__ import annotations

import io
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from hooklab.core.errors import HooklabError, ImageError
from hooklab.data.images import MAX_PIXELS, image_size, load_image


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def raw_png(width: int, height: int, bit_depth: int, colour_type: int, rows: bytes | None) -> bytes:
    """A PNG written by hand (no PIL), so headers can claim anything."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    body = zlib.compress(rows) if rows is not None else zlib.compress(b"\x00" * 64)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", body)
            + _png_chunk(b"IEND", b""))


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _noise_rgb(w: int = 64, h: int = 48, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), np.uint8))


# ---- valid images: correct conversion --------------------------------------------------------

def test_rgb_png_exact_pixels_and_seed_normalisation(tmp_path):
    img = _noise_rgb()
    path = tmp_path / "noise.png"
    img.save(path)
    out = load_image(path)  # no resize
    ref = torch.from_numpy(np.asarray(img, np.float32) / 255).permute(2, 0, 1)
    assert out.tensor.shape == (1, 3, 48, 64) and out.tensor.dtype == torch.float32
    assert torch.allclose(out.tensor[0], (ref - 0.5) / 0.5, atol=1e-6)
    assert np.array_equal(out.display, np.asarray(img))
    assert out.original_size == (48, 64) and out.format == "PNG" and out.mode == "RGB"
    # bytes and file objects give the same result as the path
    data = path.read_bytes()
    assert torch.equal(load_image(data).tensor, out.tensor)
    with path.open("rb") as fh:
        assert torch.equal(load_image(fh).tensor, out.tensor)


def test_resize_matches_pil_and_fit_modes():
    img = _noise_rgb(80, 40)
    data = _save(img, "PNG")
    out = load_image(data, size=(32, 32), normalise=None)
    ref = np.asarray(img.resize((32, 32), Image.Resampling.BILINEAR), np.float32) / 255
    assert out.tensor.shape == (1, 3, 32, 32)
    assert torch.allclose(out.tensor[0].permute(1, 2, 0), torch.from_numpy(ref), atol=1e-6)
    assert load_image(data, size=16, fit="crop").tensor.shape == (1, 3, 16, 16)
    padded = load_image(data, size=(40, 40), fit="pad", normalise=None)
    assert padded.display.shape == (40, 40, 3) and (padded.display[0] == 255).all()  # white pad
    out = load_image(data, size=(8, 8), normalise="imagenet")
    raw = load_image(data, size=(8, 8), normalise=None).tensor
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert torch.allclose(out.tensor, (raw - mean) / std, atol=1e-6)


def test_one_by_one_image():
    data = _save(Image.new("RGB", (1, 1), (255, 0, 0)), "PNG")
    out = load_image(data, size=(32, 32), normalise=None)
    assert out.tensor.shape == (1, 3, 32, 32)
    assert torch.allclose(out.tensor[0, 0], torch.ones(32, 32))
    assert out.tensor[0, 1:].abs().max() == 0


def test_grey_image_and_grey_channel():
    arr = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    out = load_image(_save(Image.fromarray(arr, "L"), "PNG"), normalise=None)
    assert out.tensor.shape == (1, 3, 8, 8)
    for c in range(3):
        assert torch.allclose(out.tensor[0, c], torch.from_numpy(arr / 255).float())
    one = load_image(_save(Image.fromarray(arr, "L"), "PNG"), channels=1, normalise=((0.5,), (0.5,)))
    assert one.tensor.shape == (1, 1, 8, 8)
    assert one.display.shape == (8, 8, 3)
    # the seed normalisation (3 channels) applies to a grey input as its channel average
    seed = load_image(_save(Image.fromarray(arr, "L"), "PNG"), channels=1, normalise="seed")
    assert torch.allclose(seed.tensor[0, 0], (torch.from_numpy(arr / 255).float() - 0.5) / 0.5)


def test_rgba_composited_on_white():
    img = Image.new("RGBA", (2, 1))
    img.putpixel((0, 0), (255, 0, 0, 255))  # opaque red
    img.putpixel((1, 0), (0, 0, 0, 0))      # fully transparent
    out = load_image(_save(img, "PNG"), normalise=None)
    assert out.display[0, 0].tolist() == [255, 0, 0]
    assert out.display[0, 1].tolist() == [255, 255, 255]
    half = Image.new("RGBA", (1, 1), (0, 0, 0, 128))
    v = load_image(_save(half, "PNG"), normalise=None).display[0, 0]
    assert all(abs(int(x) - 127) <= 1 for x in v)  # black at 50% over white


def test_palette_with_and_without_transparency():
    img = Image.new("P", (2, 1))
    img.putpalette([0, 0, 255, 0, 255, 0] + [0] * 762)
    img.putpixel((0, 0), 0)
    img.putpixel((1, 0), 1)
    out = load_image(_save(img, "PNG"), normalise=None)
    assert out.mode == "P"
    assert out.display[0].tolist() == [[0, 0, 255], [0, 255, 0]]
    out = load_image(_save(img, "PNG", transparency=0), normalise=None)
    assert out.display[0].tolist() == [[255, 255, 255], [0, 255, 0]]


def test_cmyk_jpeg_and_tiff():
    img = Image.new("CMYK", (4, 4), (0, 255, 255, 0))  # red in CMYK
    for fmt in ("JPEG", "TIFF"):
        out = load_image(_save(img, fmt), normalise=None)
        assert out.mode == "CMYK"
        r, g, b = out.display[1, 1].astype(int)
        assert r > 240 and g < 15 and b < 15, (fmt, r, g, b)


def test_16bit_grey_and_rgb():
    arr = np.array([[0, 65535], [32896, 257 * 10]], np.uint16)
    out = load_image(_save(Image.fromarray(arr), "PNG"), normalise=None)
    assert out.mode.startswith("I")
    assert out.display[..., 0].tolist() == [[0, 255], [128, 10]]
    # 48-bit RGB PNG written by hand: red = 65535, green = 32896, blue = 0
    row = b"\x00" + (struct.pack(">HHH", 65535, 32896, 0)) * 2
    out = load_image(raw_png(2, 2, 16, 2, row * 2), normalise=None)
    assert out.display[0, 0].tolist() == [255, 128, 0]


def test_float_and_int32_modes():
    f = Image.fromarray(np.array([[0.0, 1.0]], np.float32), "F")
    assert load_image(_save(f, "TIFF"), normalise=None).display[0, :, 0].tolist() == [0, 255]
    i32 = Image.fromarray(np.array([[0, 65535]], np.int32), "I")
    assert load_image(_save(i32, "TIFF"), normalise=None).display[0, :, 0].tolist() == [0, 255]


def test_exif_orientation_applied():
    arr = np.zeros((2, 4, 3), np.uint8)
    arr[:, :2] = (255, 0, 0)  # left half red, right half blue
    arr[:, 2:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    data = _save(Image.fromarray(arr), "PNG", exif=exif)
    out = load_image(data, normalise=None)
    assert out.display.shape == (4, 2, 3) and out.original_size == (4, 2)
    assert out.display[0, 0].tolist() == [255, 0, 0]    # red now on top
    assert out.display[-1, 0].tolist() == [0, 0, 255]


def test_animated_gif_first_frame():
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    data = _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    out = load_image(data, normalise=None)
    assert out.frames == 3
    assert out.display[4, 4].tolist() == [255, 0, 0]


# ---- broken and hostile files: ImageError -----------------------------------------------------

@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_images(fmt):
    data = _save(_noise_rgb(128, 128), fmt)
    for cut in (len(data) // 2, 40, 8):
        with pytest.raises(ImageError) as info:
            load_image(data[:cut])
        assert isinstance(info.value, HooklabError) and isinstance(info.value, ValueError)


def test_text_named_png_empty_missing_and_directory(tmp_path):
    (tmp_path / "notes.png").write_text("this is a text file, not a picture\n")
    (tmp_path / "empty.png").write_bytes(b"")
    cases = {
        tmp_path / "notes.png": "not an image",
        tmp_path / "empty.png": "empty",
        tmp_path / "missing.png": "does not exist",
        tmp_path: "not a file",
    }
    for path, words in cases.items():
        with pytest.raises(ImageError, match=words):
            load_image(path)
    with pytest.raises(ImageError, match="empty"):
        load_image(b"")
    with pytest.raises(ImageError):
        load_image(12345)  # type: ignore[arg-type]
    with pytest.raises(ImageError, match="text mode"):
        load_image(io.StringIO("abc"))  # type: ignore[arg-type]


def test_formats_outside_the_allow_list_never_reach_a_plugin(monkeypatch):
    from PIL import EpsImagePlugin

    def no_ghostscript(*a, **k):
        raise AssertionError("the EPS plugin ran")

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", no_ghostscript)
    eps = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"
           b"newpath 0 0 moveto 10 10 lineto stroke\n%%EOF\n")
    with pytest.raises(ImageError, match="PNG"):
        load_image(eps)
    pdf = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF"
    with pytest.raises(ImageError):
        load_image(pdf)


def test_decompression_bomb_refused_before_decoding(monkeypatch):
    # A 30000 x 30000 grey PNG header (900 M pixels) with a tiny body: only the header is read.
    bomb = raw_png(30_000, 30_000, 8, 0, rows=None)
    assert len(bomb) < 200
    decoded: list[object] = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load",  # PIL's pixel decoder, every format
                        lambda img: decoded.append(img.size) or real_load(img))
    tracemalloc.start()
    try:
        with pytest.raises(ImageError, match="decompression bomb"):
            load_image(bomb, size=(32, 32))
        # hooklab's own limit holds even when PIL's global guard is switched off
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
        assert image_size(bomb) == (30_000, 30_000)  # the header really claims 30000 x 30000
        with pytest.raises(ImageError, match="limit"):
            load_image(bomb, size=(32, 32))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert decoded == []  # refused from the header: the decoder never ran
    assert peak < 20 * 2**20
    assert 30_000 * 30_000 > MAX_PIXELS


def test_pixel_and_byte_limits_are_configurable():
    data = _save(_noise_rgb(20, 20), "PNG")
    with pytest.raises(ImageError, match="400 pixels"):
        load_image(data, max_pixels=399)
    assert load_image(data, max_pixels=400).tensor.shape == (1, 3, 20, 20)
    with pytest.raises(ImageError, match="limit"):
        load_image(data, max_bytes=10)


def test_bad_arguments():
    data = _save(_noise_rgb(4, 4), "PNG")
    for kwargs in ({"size": (0, 3)}, {"size": (3, 3, 3)}, {"fit": "zoom"}, {"channels": 2},
                   {"normalise": "cifar"}, {"normalise": ((0.5, 0.5), (0.5, 0.5))},
                   {"normalise": ((0.5,), (0.0,))}):
        with pytest.raises(ImageError):
            load_image(data, **kwargs)


def test_random_garbage_never_escapes_as_other_error():
    rng = np.random.default_rng(0)
    good = _save(_noise_rgb(16, 16), "PNG")
    for i in range(30):
        if i % 2:
            blob = bytearray(good)
            for j in rng.integers(8, len(blob), 6):
                blob[j] = int(rng.integers(0, 256))
            blob = bytes(blob)
        else:
            blob = rng.integers(0, 256, int(rng.integers(1, 300)), np.uint8).tobytes()
        try:
            load_image(blob, size=(8, 8))
        except ImageError:
            pass
