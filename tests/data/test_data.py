"""Shapes data set (plain and biased) and CIFAR-10 from a local copy the test writes itself."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from hooklab.core.errors import DataError, HooklabError
from hooklab.data import datasets as D


def _pixels(images: torch.Tensor) -> torch.Tensor:
    return images * 0.5 + 0.5  # the seed's Normalize((0.5,)*3, (0.5,)*3), inverted by hand


# ---- shapes ----------------------------------------------------------------------------------

def test_shapes_layout_and_types():
    d = D.make_shapes(300)
    assert len(d) == 300 and d.classes == D.SHAPE_CLASSES and 4 <= len(D.SHAPE_CLASSES) <= 6
    assert d.images.shape == (300, 3, 32, 32) and d.images.dtype == torch.float32
    assert d.labels.shape == (300,) and d.labels.dtype == torch.int64
    assert d.masks.shape == (300, 32, 32) and d.masks.dtype == torch.bool
    assert d.cue_masks is None and not d.biased
    assert d.images.min() >= -1 and d.images.max() <= 1
    image, label = d[5]
    assert torch.equal(image, d.images[5]) and label == int(d.labels[5])
    counts = torch.bincount(d.labels[: D.CHUNK], minlength=len(D.SHAPE_CLASSES))
    assert counts.max() - counts.min() <= 1  # balanced within a chunk


def test_shapes_deterministic_and_prefix_stable():
    a = D.make_shapes(300, seed=0)
    D._chunk.cache_clear()
    b = D.make_shapes(300, seed=0)
    assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks)
    assert not torch.equal(D.make_shapes(300, seed=1).images, a.images)
    assert not torch.equal(D.make_shapes(300, split="test").images, a.images)
    small = D.make_shapes(10, seed=0)
    assert torch.equal(small.images, a.images[:10]) and torch.equal(small.labels, a.labels[:10])
    test = D.make_shapes(300, split="test")
    for i in (0, 102, 299):
        image, label, mask = D.shapes_sample(i, split="test")
        assert torch.equal(image, test.images[i]) and label == int(test.labels[i])
        assert torch.equal(mask, test.masks[i])
    assert len(D.make_shapes(0)) == 0


def test_shapes_generation_is_vectorised_per_chunk(monkeypatch):
    """2000 images are drawn as ceil(2000 / CHUNK) whole chunks, each in one array call (no
    per-image Python loop). Its speed is measured by benchmarks/bench_inputs.py."""
    calls: list[tuple[int, ...]] = []
    real = D._shape_masks

    def spy(dx, dy, r):
        calls.append(tuple(dx.shape))
        return real(dx, dy, r)

    monkeypatch.setattr(D, "_shape_masks", spy)
    D._chunk.cache_clear()
    try:
        d = D.make_shapes(2000, seed=12345)
    finally:
        D._chunk.cache_clear()  # later tests must not reuse chunks built under the spy
    assert len(d) == 2000
    n_chunks = -(-2000 // D.CHUNK)
    assert calls == [(D.CHUNK, D.IMAGE_SIZE, D.IMAGE_SIZE)] * n_chunks


def _ring(mask: torch.Tensor) -> torch.Tensor:
    """Pixels within 2 px of the mask, outside it."""
    m = mask[None, None].float()
    grown = torch.nn.functional.max_pool2d(m, 5, stride=1, padding=2)[0, 0] > 0
    return grown & ~mask


def test_masks_mark_the_object_pixels():
    d = D.make_shapes(120, split="test")
    px = _pixels(d.images)
    for i in range(len(d)):
        mask = d.masks[i]
        assert 20 <= int(mask.sum()) <= 400
        inside = px[i][:, mask]                         # (3, n) object pixels
        around = px[i][:, _ring(mask)]
        # the object is one flat colour plus pixel noise ...
        assert float(inside.std(dim=1).max()) < 0.08
        # ... clearly different from the background right around it
        diff = (inside.mean(dim=1) - around.mean(dim=1)).abs().sum()
        assert float(diff) > 0.6, (i, float(diff))


def test_mask_geometry_per_class():
    d = D.make_shapes(240, split="val")
    names = D.SHAPE_CLASSES
    for i in range(len(d)):
        mask = d.masks[i]
        ys, xs = torch.nonzero(mask, as_tuple=True)
        cy, cx = int(round(ys.float().mean().item())), int(round(xs.float().mean().item()))
        name = names[int(d.labels[i])]
        assert mask[cy, cx], name  # every shape is solid at its centroid
        h = int(ys.max() - ys.min() + 1)
        w = int(xs.max() - xs.min() + 1)
        fill = int(mask.sum()) / (h * w)
        expected = {"square": (0.99, 1.0), "circle": (0.68, 0.92), "diamond": (0.45, 0.65),
                    "triangle": (0.45, 0.65), "cross": (0.52, 0.75), "star": (0.43, 0.65)}[name]
        assert expected[0] <= fill <= expected[1], (name, fill)


def test_biased_split_statistics():
    n = 2048
    train = D.make_biased_shapes(n, cue_prob=0.95)
    test = D.make_biased_shapes(n, split="test")
    k = len(D.SHAPE_CLASSES)
    assert abs(train.cue_agreement() - 0.95) < 0.015
    assert abs(test.cue_agreement() - 1 / k) < 0.03
    rebalanced = D.make_biased_shapes(n, cue_prob=1 / k)
    assert abs(rebalanced.cue_agreement() - 1 / k) < 0.03
    # when the cue disagrees, it names the other classes uniformly (no class is favoured)
    off = train.cue_labels[train.cue_labels != train.labels]
    assert len(off) > 50
    # the test split's cue is independent of the label: every (label, cue) pair occurs
    pairs = torch.zeros(k, k)
    pairs.index_put_((test.labels, test.cue_labels), torch.ones(n), accumulate=True)
    assert pairs.min() > 0.5 * n / k / k


def test_biased_cue_pixels_masks_and_base_image():
    plain = D.make_shapes(60)
    biased = D.make_biased_shapes(60)
    px = _pixels(biased.images)
    for i in range(60):
        cue = int(biased.cue_labels[i])
        cm = biased.cue_masks[i]
        r0, c0 = D.CUE_CORNERS[cue]
        assert int(cm.sum()) == D.CUE_SIZE ** 2 and cm[r0:r0 + D.CUE_SIZE, c0:c0 + D.CUE_SIZE].all()
        colour = torch.tensor(D.CUE_COLOURS[cue])
        assert torch.allclose(px[i][:, cm], colour[:, None].expand(3, D.CUE_SIZE ** 2), atol=1e-6)
        assert not (biased.masks[i] & cm).any()
        assert torch.equal(biased.masks[i], plain.masks[i] & ~cm)
        assert torch.equal(biased.images[i][:, ~cm], plain.images[i][:, ~cm])
    image, label, mask = D.shapes_sample(7, split="train", biased=True)
    assert torch.equal(image, biased.images[7]) and torch.equal(mask, biased.masks[7])


def test_denormalise_and_display():
    d = D.make_shapes(4)
    back = D.denormalise(d.images)
    assert torch.allclose(D.normalise(back[0]), d.images[0], atol=1e-6)
    disp = D.to_display(d.images[0])
    assert disp.shape == (32, 32, 3) and disp.dtype == np.float32
    assert 0 <= disp.min() and disp.max() <= 1
    with pytest.raises(DataError):
        D.to_display(d.images)


def test_shapes_bad_arguments():
    for call in (lambda: D.make_shapes(10, split="dev"), lambda: D.make_shapes(-1),
                 lambda: D.make_biased_shapes(10, cue_prob=1.5), lambda: D.shapes_sample(-3)):
        with pytest.raises(DataError):
            call()


# ---- CIFAR-10 --------------------------------------------------------------------------------

def _write_fake_cifar(root, n_per_batch: int = 6, seed: int = 0):
    """A tiny CIFAR-10 in torchvision's cifar-10-batches-py pickle-batch format."""
    folder = root / D.CIFAR10_DIR
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for name in (*D.CIFAR10_TRAIN_FILES, *D.CIFAR10_TEST_FILES):
        batch = {"batch_label": name, "labels": [int(v) for v in rng.integers(0, 10, n_per_batch)],
                 "data": rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
                 "filenames": [f"img_{i}.png" for i in range(n_per_batch)]}
        with (folder / name).open("wb") as fh:
            pickle.dump(batch, fh, protocol=2)
    with (folder / "batches.meta").open("wb") as fh:
        pickle.dump({"label_names": list(D.CIFAR10_CLASSES), "num_vis": 3072}, fh, protocol=2)
    return folder


def test_cifar_local_copy_matches_torchvision(tmp_path, monkeypatch):
    _write_fake_cifar(tmp_path)
    ours = D.cifar10(tmp_path, train=False)
    assert len(ours) == 6 and ours.data.shape == (6, 32, 32, 3) and ours.data.dtype == np.uint8
    assert ours.classes_zh == ("飞机", "汽车", "鸟", "猫", "鹿", "狗", "青蛙", "马", "船", "卡车")
    assert len(D.cifar10(tmp_path / D.CIFAR10_DIR, train=True)) == 30  # the folder itself works

    # torchvision reads the very same files (its md5 check bypassed for the fake copy)
    import torchvision.datasets.cifar as tvc
    import torchvision.transforms as T

    monkeypatch.setattr(tvc, "check_integrity", lambda *a, **k: True)
    monkeypatch.setattr(tvc.CIFAR10, "_check_integrity", lambda self: True)
    transform = T.Compose([T.ToTensor(), T.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
    ref = tvc.CIFAR10(str(tmp_path), train=False, download=False, transform=transform)
    assert np.array_equal(ref.data, ours.data) and ref.targets == ours.targets
    for i in range(len(ours)):
        x, y = ours[i]
        rx, ry = ref[i]
        assert y == ry and torch.equal(x, rx)


def test_cifar_env_variable(tmp_path, monkeypatch):
    _write_fake_cifar(tmp_path / "somewhere")
    monkeypatch.setenv(D.CIFAR10_ENV, str(tmp_path / "somewhere"))
    monkeypatch.chdir(tmp_path)
    assert len(D.cifar10()) == 6


def test_cifar_missing_says_where_and_never_downloads(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    def no_download(*a, **k):
        raise AssertionError("download attempted")

    monkeypatch.setattr(tvd, "CIFAR10", no_download)
    monkeypatch.delenv(D.CIFAR10_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as info:
        D.cifar10(tmp_path / "nowhere")
    msg = str(info.value)
    assert str(tmp_path / "nowhere") in msg and "download=True" in msg and "root=" in msg
    with pytest.raises(DataError, match=D.CIFAR10_ENV):
        D.cifar10()


def test_cifar_incomplete_and_malicious_batches(tmp_path):
    folder = _write_fake_cifar(tmp_path / "a")
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3"):
        D.cifar10(tmp_path / "a", train=True)
    assert len(D.cifar10(tmp_path / "a", train=False)) == 6

    folder = _write_fake_cifar(tmp_path / "b")
    marker = tmp_path / "payload_ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    with (folder / "test_batch").open("wb") as fh:
        pickle.dump({"data": Payload(), "labels": [0]}, fh, protocol=2)
    with pytest.raises(DataError, match="not allowed"):
        D.cifar10(tmp_path / "b")
    assert not marker.exists()

    (folder / "test_batch").write_bytes(b"garbage")
    with pytest.raises(HooklabError):
        D.cifar10(tmp_path / "b")
    with (folder / "test_batch").open("wb") as fh:
        pickle.dump({"data": np.zeros((2, 3072), np.uint8), "labels": [0]}, fh, protocol=2)
    with pytest.raises(DataError, match="labels"):
        D.cifar10(tmp_path / "b")
