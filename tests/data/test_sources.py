"""hooklab.data.sources: names, ImageFolder good and bad paths, masks, index stability."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

from hooklab.core.errors import DataError
from hooklab.data import datasets
from hooklab.data.sources import open_source


def _folder(root, classes=("cat", "dog"), per=3, size=(20, 24)):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per):
            arr = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / c / f"{i}.png")
    return root


def test_shapes_matches_the_generator_with_masks():
    src = open_source("shapes", split="test", n=40)
    x, labels, masks = src.batch([0, 7, 39])
    ref = datasets.make_shapes(40, split="test")
    assert torch.equal(x, ref.images[[0, 7, 39]])
    assert torch.equal(labels, ref.labels[[0, 7, 39]])
    assert torch.equal(masks, ref.masks[[0, 7, 39]])
    assert src.has_masks and len(src) == 40 and src.classes == datasets.SHAPE_CLASSES


def test_index_is_stable_whatever_n_and_batch():
    a = open_source("biased_shapes", n=300).batch(range(250, 260))
    b = open_source("biased_shapes", n=1000).batch([255])
    assert torch.equal(a[0][5], b[0][0]) and torch.equal(a[2][5], b[2][0])
    ref = datasets.make_biased_shapes(300, split="test")
    assert torch.equal(a[0], ref.images[250:260])


def test_model_preprocessing_resizes_and_renormalises():
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    src = open_source("shapes", n=5, size=(64, 64), mean=mean, std=std)
    x, _, masks = src.batch([1])
    assert x.shape == (1, 3, 64, 64) and masks.shape == (1, 64, 64)
    pixels = x[0] * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1)
    assert float(pixels.min()) >= -1e-5 and float(pixels.max()) <= 1 + 1e-5
    # the mask is the 32 px mask, nearest-upsampled
    small = open_source("shapes", n=5).batch([1])[2][0]
    assert torch.equal(masks[0][::2, ::2], small)


def test_imagefolder_reads_classes_in_order(tmp_path):
    root = _folder(tmp_path / "val")
    src = open_source(f"imagefolder:{root}", size=(16, 16))
    assert src.classes == ("cat", "dog") and len(src) == 6 and not src.has_masks
    x, labels, masks = src.batch(range(6))
    assert x.shape == (6, 3, 16, 16) and labels.tolist() == [0, 0, 0, 1, 1, 1] and masks is None
    assert src.name == f"imagefolder:{root.resolve()}"
    again = open_source(**src.spec())           # what a worker rebuilds
    assert torch.equal(again.batch([4])[0], x[4:5])


@pytest.mark.parametrize("make, found", [
    (lambda p: p, "does not exist"),
    (lambda p: (p.parent.mkdir(exist_ok=True), p.write_text("x"), p)[-1], "is a file"),
    (lambda p: (p.mkdir(), Image.new("RGB", (4, 4)).save(p / "a.png"), p)[-1],
     "1 image(s) directly in it and no class subfolder"),
    (lambda p: (p.mkdir(), (p / "empty").mkdir(), p)[-1], "1 subfolder(s) without images"),
])
def test_not_an_imagefolder_is_one_clear_error(tmp_path, make, found):
    path = make(tmp_path / "data")
    with pytest.raises(DataError, match=re.escape(found)) as err:
        open_source(f"imagefolder:{path}")
    assert "one subfolder per class" in str(err.value)


def test_bad_names_and_arguments():
    for bad in ("mnist", "imagefolder", "", "shapes:x"):
        with pytest.raises(DataError):
            open_source(bad)
    with pytest.raises(DataError, match="unknown split"):
        open_source("shapes", split="dev")
    with pytest.raises(DataError, match="positive integer"):
        open_source("shapes", n=0)
    with pytest.raises(DataError, match="outside"):
        open_source("shapes", n=3).sample(3)


def test_cifar10_never_downloads(tmp_path):
    with pytest.raises(DataError, match="no local CIFAR-10 copy"):
        open_source(f"cifar10:{tmp_path}")
    assert list(tmp_path.iterdir()) == []
