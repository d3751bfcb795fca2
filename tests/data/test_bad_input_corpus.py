"""The issue-5 bad-input corpus, end to end through the public APIs (library and CLI).

Every item is generated here and pushed through what a user would do with it: an image is
loaded, recorded through a model, stored and given a Grad-CAM; a checkpoint is given to
``get_model`` and to ``python -m hooklab record --weights``; a run id goes to the store and the
CLI; a zip is imported; NaN/Inf gradients are recorded, stored and reloaded; a CAM is asked of a
non-spatial layer, live and from a stored run. Each item must give a clear HooklabError (one
``error:`` line and exit code 2 in the CLI) or, for odd but valid images, a correct conversion,
and after each item the run stored before the corpus is byte-for-byte unharmed, nothing else
appeared in the store, and the shared model carries no hook.

The per-module tests (tests/test_images.py, test_weights.py, test_store_safety.py,
test_cam.py) check each guard in detail; this file checks that they hold together.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import struct
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile
from safetensors.torch import save_file

import hooklab
from hooklab.cam import engine as cam
from hooklab.cli import main as cli
from hooklab.core.errors import (
    CorruptRunError,
    HooklabError,
    ImageError,
    NonSpatialLayerError,
    StoreError,
    UnsafeCheckpointError,
    WeightsMismatchError,
)
from hooklab.data.images import load_image
from hooklab.models.zoo import SimpleCNN, get_model
from hooklab.store.runs import TraceStore
from tests.conftest import total_hooks


# -- the world every item runs in ----------------------------------------------------------------
class World:
    def __init__(self, root: Path) -> None:
        self.dir = root
        torch.manual_seed(0)
        self.model = SimpleCNN().eval()
        self.store = TraceStore(root / "runs", durable=False)
        with hooklab.record(self.model, ["conv3", "fc1"], meta={"input_shape": [32, 32]}) as rec:
            rec.run(torch.randn(1, 3, 32, 32))
        self.precious = self.store.save(rec.trace, author="lab", notes="stored before the corpus")
        self.snapshot = self._files()
        self.expected_runs = {self.precious}

    def _files(self) -> dict[str, bytes]:
        d = self.store.root / self.precious
        return {p.name: p.read_bytes() for p in sorted(d.iterdir())}

    def check_unharmed(self) -> None:
        assert self._files() == self.snapshot, "the stored run changed"
        self.store.verify(self.precious)
        listing = self.store.list()
        assert set(listing["run_id"]) == self.expected_runs
        assert (listing["status"] == "ok").all()
        assert not [p for p in self.store.root.iterdir() if p.name.startswith(".tmp")]
        assert total_hooks(self.model) == 0

    def cli(self, *argv: str, capsys) -> tuple[int, str]:
        code = cli.main(["--store", str(self.store.root), *argv])
        err = capsys.readouterr().err
        return code, err


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    return World(tmp_path_factory.mktemp("corpus"))


def _cli_refuses(world: World, capsys, *argv: str, match: str) -> None:
    code, err = world.cli(*argv, capsys=capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == cli.EXIT_ERROR, err
    assert len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0], err
    assert "Traceback" not in err


# -- images --------------------------------------------------------------------------------------
def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def png_bomb(side: int = 30_000) -> bytes:
    """A valid 1-bit greyscale PNG of side x side pixels, all black: ~110 KB on disk, 900
    million pixels (~113 MB of scanlines, ~900 MB as 8-bit pixels) once decoded."""
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    comp = zlib.compressobj(9)
    block = row * 1000
    parts = [comp.compress(block) for _ in range(side // 1000)]
    parts.append(comp.compress(row * (side % 1000)))
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", b"".join(parts)) + _png_chunk(b"IEND", b""))


def _cmyk_jpeg() -> bytes:
    return _encode(Image.new("CMYK", (8, 8), (0, 255, 0, 0)), "JPEG", quality=95)


def _gif() -> bytes:
    frames = [Image.new("RGB", (6, 6), c).convert("P") for c in ((255, 0, 0), (0, 255, 0))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50,
                   loop=0)
    return buf.getvalue()


def _palette() -> bytes:
    img = Image.new("P", (5, 7), 0)
    img.putpalette([12, 34, 56] + [0, 0, 0] * 255)
    return _encode(img, "PNG")


# name -> (file name, bytes factory, expected RGB colour (or None: refused), tolerance)
BAD_IMAGES: dict[str, tuple[str, Callable[[], bytes], str]] = {
    "truncated PNG": ("cut.png", lambda: _encode(Image.effect_noise((64, 64), 50), "PNG")[:400],
                      "truncated or corrupt|not a readable image"),
    "truncated JPEG": ("cut.jpg",
                       lambda: _encode(Image.effect_noise((64, 64), 50).convert("RGB"),
                                       "JPEG")[:600], "truncated or corrupt|not a readable image"),
    "text named .png": ("notes.png", lambda: b"these are my lab notes, not a picture\n",
                        "not an image"),
    "empty file": ("empty.png", lambda: b"", "empty"),
    "30000x30000 PNG bomb": ("bomb.png", png_bomb, "decompression bomb"),
}
ODD_IMAGES: dict[str, tuple[str, Callable[[], bytes], tuple[int, int, int], int]] = {
    "1x1 image": ("dot.png", lambda: _encode(Image.new("RGB", (1, 1), (10, 200, 30)), "PNG"),
                  (10, 200, 30), 0),
    "grey": ("grey.png", lambda: _encode(Image.new("L", (9, 4), 77), "PNG"), (77, 77, 77), 0),
    "RGBA, transparent": ("clear.png",
                          lambda: _encode(Image.new("RGBA", (4, 4), (255, 0, 0, 0)), "PNG"),
                          (255, 255, 255), 0),
    "RGBA, opaque": ("blue.png", lambda: _encode(Image.new("RGBA", (4, 4), (0, 0, 255, 255)),
                                                 "PNG"), (0, 0, 255), 0),
    "palette": ("palette.png", _palette, (12, 34, 56), 0),
    "CMYK JPEG": ("magenta.jpg", _cmyk_jpeg, (255, 0, 255), 8),
    "16-bit grey": ("deep.png",
                    lambda: _encode(Image.fromarray(np.full((4, 6), 32768, np.uint16)), "PNG"),
                    (128, 128, 128), 1),
    "animated GIF": ("anim.gif", _gif, (255, 0, 0), 0),
}


#: Bad images refused from what precedes the pixel data: PIL's decoder must never run on them.
REFUSED_UNDECODED = ("text named .png", "empty file", "30000x30000 PNG bomb")


@pytest.mark.parametrize("name", list(BAD_IMAGES))
def test_bad_image_is_refused_and_nothing_is_harmed(world, name, monkeypatch):
    fname, make, match = BAD_IMAGES[name]
    path = world.dir / fname
    path.write_bytes(make())
    decoded: list[str] = []
    real_load = ImageFile.ImageFile.load

    def spy(img):  # PIL's pixel decoder, for every file format
        decoded.append(img.format)
        return real_load(img)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    for source in (path, path.read_bytes(), io.BytesIO(path.read_bytes())):
        with pytest.raises(ImageError, match=match) as err:
            load_image(source, size=(32, 32), normalise="seed")
        assert isinstance(err.value, HooklabError) and str(err.value)
    if name in REFUSED_UNDECODED:
        assert decoded == [], f"{name} reached the decoder"
    world.check_unharmed()


def test_the_bomb_is_real_and_refused_before_decoding(world, monkeypatch):
    """With PIL's own global guard switched off (a user script may do that), hooklab's
    pixel limit still refuses the bomb from its header, before decoding."""
    data = png_bomb()
    assert len(data) < 1_000_000
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with Image.open(io.BytesIO(data)) as img:
        assert img.size == (30_000, 30_000) and img.mode == "1"  # a valid 900-megapixel image
    with pytest.raises(ImageError, match="before decoding"):
        load_image(data)
    world.check_unharmed()


@pytest.mark.parametrize("name", list(ODD_IMAGES))
def test_odd_image_is_converted_recorded_stored_and_explained(world, name):
    """Converted to the right RGB colour, then recorded, stored, reloaded and given a Grad-CAM."""
    fname, make, rgb, tol = ODD_IMAGES[name]
    path = world.dir / fname
    path.write_bytes(make())
    img = load_image(path, size=(32, 32), normalise="seed")
    assert img.tensor.shape == (1, 3, 32, 32) and img.tensor.dtype == torch.float32
    assert img.display.shape == (32, 32, 3)
    diff = np.abs(img.display.astype(int) - np.array(rgb)).max()
    assert diff <= tol, (name, img.display[0, 0], rgb)
    expect = (torch.tensor(img.display, dtype=torch.float32).permute(2, 0, 1) / 255 - 0.5) / 0.5
    torch.testing.assert_close(img.tensor[0], expect)
    # through the pipeline: record, store, reload, CAM live and from the stored run
    with hooklab.record(world.model, ["conv1", "conv3"], meta={"input": name}) as rec:
        rec.run(img.tensor)
    rid = world.store.save(rec.trace, notes=name)
    world.expected_runs.add(rid)
    loaded = world.store.load(rid)
    assert loaded.meta["input"] == name
    assert torch.equal(loaded.find(layer="conv1", role="input"), img.tensor)
    live = cam.compute(world.model, img.tensor, "gradcam", layer="conv3")
    stored = cam.cam_from_trace(loaded, "conv3", size=(32, 32))
    torch.testing.assert_close(stored.maps, live.maps, rtol=1e-4, atol=1e-5)
    world.check_unharmed()


# -- checkpoints ---------------------------------------------------------------------------------
class _RunsCode:
    """Unpickling this calls exec(), which creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


@pytest.mark.parametrize("flavour", ["torch.save", "legacy pickle"])
def test_code_running_checkpoint_never_runs(world, capsys, flavour):
    marker = world.dir / f"pwned-{flavour.replace(' ', '-')}"
    path = world.dir / f"evil-{flavour.replace(' ', '-')}.pth"
    sd = {k: v.clone() for k, v in world.model.state_dict().items()}
    sd["conv1.weight"] = _RunsCode(marker)
    if flavour == "torch.save":
        torch.save(sd, path)
    else:
        path.write_bytes(pickle.dumps(sd, protocol=2))
    with pytest.raises(UnsafeCheckpointError, match="safetensors"):
        get_model("simple_cnn", weights=path)
    _cli_refuses(world, capsys, "record", "--model", "simple_cnn", "--weights", str(path),
                 match="refused")
    assert not marker.exists(), "the checkpoint's code ran"
    world.check_unharmed()
    if flavour == "legacy pickle":  # the payload is live: a plain unpickle runs it
        pickle.loads(path.read_bytes())  # noqa: S301 - the point of the test
        assert marker.exists()


@pytest.mark.parametrize("case", ["wrong keys", "wrong shapes"])
def test_mismatched_checkpoint_is_explained(world, capsys, case):
    sd = {k: v.clone() for k, v in world.model.state_dict().items()}
    if case == "wrong keys":
        sd["classifier.weight"] = sd.pop("fc2.weight")
        path = world.dir / "keys.pt"
        torch.save(sd, path)
        words = ("fc2.weight", "classifier.weight")
    else:
        sd["conv1.weight"] = torch.zeros(16, 3, 3, 3)
        path = world.dir / "shapes.safetensors"
        save_file(sd, str(path))
        words = ("conv1.weight", "16")
    with pytest.raises(WeightsMismatchError) as err:
        get_model("simple_cnn", weights=path)
    assert all(w in str(err.value) for w in words), str(err.value)
    _cli_refuses(world, capsys, "record", "--model", "simple_cnn", "--weights", str(path),
                 match=words[0])
    world.check_unharmed()


# -- run ids -------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["../" + "x", "../../etc/passwd", "/etc/passwd", "a\x00b",
                                 "runs/../../x"])
def test_unsafe_run_id_is_refused(world, capsys, bad):
    s = world.store
    for call in (lambda: s.load(bad), lambda: s.delete(bad), lambda: s.export(bad),
                 lambda: s.update(bad, notes="x"), lambda: s.save(hooklab.Trace(), run_id=bad)):
        with pytest.raises(StoreError, match="invalid run id"):
            call()
    if "\x00" not in bad:  # a NUL byte cannot even be passed as a command-line argument
        _cli_refuses(world, capsys, "runs", "show", bad, match="invalid run id")
        _cli_refuses(world, capsys, "runs", "delete", bad, match="invalid run id")
    world.check_unharmed()


# -- exported zips -------------------------------------------------------------------------------
def _members(world: World) -> dict[str, bytes]:
    z = world.store.export(world.precious, world.dir / "precious.zip")
    with zipfile.ZipFile(z) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def _write_zip(path: Path, items: list[tuple[str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in items:
            zf.writestr(zipfile.ZipInfo(name), data)
    return path


def _tampered(members: dict[str, bytes], change: Callable[[dict], None]) -> list:
    m = json.loads(members["manifest.json"])
    change(m)
    return [(n, json.dumps(m).encode() if n == "manifest.json" else d) for n, d in members.items()]


ZIPS: dict[str, tuple[Callable[[dict], list], str]] = {
    "zip slip ../": (lambda m: list(m.items()) + [("../evil.txt", b"pwned")], "zip slip"),
    "zip slip absolute": (lambda m: list(m.items()) + [("/tmp/hooklab-corpus-evil.txt", b"x")],
                          "zip slip"),
    "zip slip member": (lambda m: [(("../../" + n) if n == "manifest.json" else n, d)
                                   for n, d in m.items()], "zip slip"),
    "tampered manifest hash": (lambda m: _tampered(m, lambda d: d["files"][
        "tensors.safetensors"].update(sha256="0" * 64)), "does not match"),
    "tampered manifest run id": (lambda m: _tampered(m, lambda d: d.update(
        run_id="../../escape")), "not a valid run id"),
    "tampered manifest version": (lambda m: _tampered(m, lambda d: d.update(format_version=99)),
                                  "unknown format version"),
}


@pytest.mark.parametrize("name", list(ZIPS))
def test_bad_zip_is_refused(world, capsys, name):
    make, match = ZIPS[name]
    z = _write_zip(world.dir / "bad.zip", make(_members(world)))
    with pytest.raises(CorruptRunError, match=match):
        world.store.import_(z)
    _cli_refuses(world, capsys, "runs", "import", str(z), match=match)
    assert not (world.dir / "evil.txt").exists() and not (world.dir.parent / "evil.txt").exists()
    assert not Path("/tmp/hooklab-corpus-evil.txt").exists()
    world.check_unharmed()


# -- NaN and Inf gradients -----------------------------------------------------------------------
def test_nan_and_inf_gradients_are_recorded_flagged_and_stored(world):
    """A NaN pixel makes NaN activations and parameter gradients; a loss scaled by inf makes
    infinite output gradients (and NaN where 0 * inf). Both are recorded with their counts,
    stored and reloaded exactly; nothing raises."""
    x = torch.randn(1, 3, 32, 32)
    x[0, 0, 5, 5] = float("nan")
    with hooklab.record(world.model, ["conv1", "fc2"], param_grads=True) as rec:
        rec.run(x, target=lambda out: (out * float("inf")).sum())
    ev = rec.trace.events
    conv1_out = ev[(ev.layer == "conv1") & (ev.role == "output")].iloc[0]
    assert conv1_out["nan_count"] > 0
    fc2_grad = ev[(ev.layer == "fc2") & (ev.role == "grad_output")].iloc[0]
    assert fc2_grad["inf_count"] == 10 and fc2_grad["nan_count"] == 0
    w = ev[(ev.layer == "conv1") & (ev.role == "param_grad") & (ev["index"] == "weight")].iloc[0]
    assert w["nan_count"] + w["inf_count"] > 0
    rid = world.store.save(rec.trace, notes="nan and inf")
    world.expected_runs.add(rid)
    loaded = world.store.load(rid)
    cols = ["layer", "role", "index", "nan_count", "inf_count"]
    assert loaded.events[cols].equals(ev[cols])
    for key in rec.trace.tensor_keys():
        a, b = rec.trace.tensor(key), loaded.tensor(key)
        assert torch.equal(torch.isnan(a), torch.isnan(b))
        assert torch.equal(a.nan_to_num(0, 1, -1), b.nan_to_num(0, 1, -1))
    world.check_unharmed()


def test_huge_finite_gradients_are_recorded_with_exact_statistics(world):
    """A diverging run: gradients of 1e30 (finite in float32, but their squares overflow it).
    Recorded without error; statistics match a float64 reference; stored and reloaded."""
    x = torch.randn(2, 3, 32, 32)
    with hooklab.record(world.model, ["conv2", "fc2"],
                        edits={"fc2": hooklab.core.edits.scale(1e30)}) as rec:
        rec.run(x, target="sum")
    ev = rec.trace.events
    for _, row in ev[ev.role.isin(["edited", "grad_output"])].iterrows():
        g = rec.trace.tensor(row["key"]).double()
        assert row["nan_count"] == 0 and row["inf_count"] == 0
        assert row["norm"] == pytest.approx(float(g.norm()), rel=1e-5)
        assert row["max"] == pytest.approx(float(g.max()), rel=1e-6)
    assert ev[(ev.layer == "conv2") & (ev.role == "grad_output")]["norm"].iloc[0] > 1e25
    rid = world.store.save(rec.trace, notes="huge")
    world.expected_runs.add(rid)
    assert world.store.load(rid).events["norm"].tolist() == ev["norm"].tolist()
    world.check_unharmed()


# -- CAM of a non-spatial layer ------------------------------------------------------------------
def test_cam_of_a_non_spatial_layer_is_explained(world, capsys):
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(NonSpatialLayerError, match="conv3"):  # names a layer that works
        cam.compute(world.model, x, "gradcam", layer="fc1")
    stored = world.store.load(world.precious)
    with pytest.raises(NonSpatialLayerError, match="spatial"):
        cam.cam_from_trace(stored, "fc1")
    world.check_unharmed()


def _pil(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


#: What each item the issue names must really be: a check of the generated bytes (image items)
#: or of the zip members (zip items), so a generator that drifts fails here, not silently.
IS_WHAT_IT_SAYS: dict[str, Callable[[bytes | list], bool]] = {
    "truncated PNG": lambda d: (d[:8] == b"\x89PNG\r\n\x1a\n" and d[12:16] == b"IHDR"
                                and b"IDAT" in d and b"IEND" not in d),
    "truncated JPEG": lambda d: d[:2] == b"\xff\xd8" and not d.endswith(b"\xff\xd9"),
    "text named .png": lambda d: d.decode("ascii").strip().isprintable() and d[:4] != b"\x89PNG",
    "empty file": lambda d: d == b"",
    "30000x30000 PNG bomb": lambda d: (struct.unpack(">II", d[16:24]) == (30_000, 30_000)
                                       and d[12:16] == b"IHDR" and len(d) < 1_000_000),
    "1x1 image": lambda d: _pil(d).size == (1, 1),
    "grey": lambda d: _pil(d).mode == "L",
    "RGBA, transparent": lambda d: (_pil(d).mode == "RGBA"
                                    and _pil(d).getchannel("A").getextrema() == (0, 0)),
    "palette": lambda d: _pil(d).mode == "P",
    "CMYK JPEG": lambda d: _pil(d).format == "JPEG" and _pil(d).mode == "CMYK",
    "16-bit grey": lambda d: _pil(d).mode.startswith("I;16") or _pil(d).mode == "I",
    "animated GIF": lambda d: _pil(d).format == "GIF" and getattr(_pil(d), "n_frames", 1) >= 2,
    "zip slip ../": lambda items: any(n.startswith("../") for n, _ in items),
    "tampered manifest hash": lambda items: any(
        json.loads(dict(items)["manifest.json"])["files"][n]["sha256"]
        != hashlib.sha256(d).hexdigest() for n, d in items if n != "manifest.json"),
}


@pytest.mark.parametrize("name", list(IS_WHAT_IT_SAYS))
def test_the_corpus_items_issue_5_names_are_what_they_say(world, name):
    if name in ZIPS:
        subject = ZIPS[name][0](_members(world))
    else:
        subject = {**BAD_IMAGES, **ODD_IMAGES}[name][1]()
    assert IS_WHAT_IT_SAYS[name](subject), name


def test_the_untampered_export_passes_every_zip_check(world):
    """The checks above can fail: the honest export is no zip slip and no tampered hash."""
    honest = list(_members(world).items())
    assert not IS_WHAT_IT_SAYS["zip slip ../"](honest)
    assert not IS_WHAT_IT_SAYS["tampered manifest hash"](honest)
