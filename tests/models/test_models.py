"""Model zoo, hub-cache weights (never downloading), layer listing, automatic target layer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hooklab.core.errors import HooklabError, NonSpatialLayerError
from hooklab.models.weights import CheckpointError, hub_checkpoint_path, remap_torchvision_keys
from hooklab.models.zoo import (
    MODEL_NAMES,
    TORCHVISION_MODELS,
    SimpleCNN,
    SimpleModel,
    auto_target_layer,
    get_model,
    input_shape,
    list_layers,
    model_info,
    seed_model,
)
from tests.seed_reference import SeedSimpleCNN, SeedSimpleModel

SMALL = (3, 64, 64)  # torchvision models accept any size >= 32; keeps the tests light

EXPECTED_TARGET = {
    "simple_model": "conv", "simple_cnn": "conv3", "resnet18": "layer4", "resnet50": "layer4",
    "vgg11_bn": "features", "mobilenet_v3_small": "features", "densenet121": "features",
    "efficientnet_b0": "features",
}


def _same_as_seed(ours: nn.Module, seed: nn.Module, x: torch.Tensor) -> None:
    """Every parameter's name, shape and value, every buffer, the module tree and the output on
    ``x`` equal the seed's literal class."""
    assert [(n, tuple(p.shape)) for n, p in ours.named_parameters()] == \
        [(n, tuple(p.shape)) for n, p in seed.named_parameters()]
    for (name, p), (_, q) in zip(ours.named_parameters(), seed.named_parameters(), strict=True):
        assert torch.equal(p, q), f"{name}: initial values differ from the seed's"
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in seed.named_buffers()]
    assert [(n, repr(m)) for n, m in ours.named_children()] == \
        [(n, repr(m)) for n, m in seed.named_children()]
    ours.eval()
    seed.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), seed(x), rtol=0, atol=0)


def test_seed_models_unchanged():
    """hooklab's SimpleModel and SimpleCNN are the seed's literal classes (tests/seed_reference):
    the same parameters (names, shapes, initial values after the same manual_seed), the same
    outputs; seed_model() is the seed's manual_seed(42) model."""
    torch.manual_seed(42)
    ref = SeedSimpleModel()
    m = seed_model()
    assert isinstance(m, SimpleModel)
    _same_as_seed(m, ref, torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(42)))
    for seed in (0, 7):
        torch.manual_seed(seed)
        ref_cnn = SeedSimpleCNN()
        torch.manual_seed(seed)
        ours = SimpleCNN(num_classes=10)
        _same_as_seed(ours, ref_cnn,
                      torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed)))
    assert [(n, tuple(p.shape)) for n, p in SeedSimpleCNN().named_parameters()] == [
        ("conv1.weight", (32, 3, 3, 3)), ("conv1.bias", (32,)),
        ("conv2.weight", (64, 32, 3, 3)), ("conv2.bias", (64,)),
        ("conv3.weight", (128, 64, 3, 3)), ("conv3.bias", (128,)),
        ("fc1.weight", (512, 2048)), ("fc1.bias", (512,)),
        ("fc2.weight", (10, 512)), ("fc2.bias", (10,))]  # the seed's numbers, written out
    cnn = get_model("simple_cnn")
    assert isinstance(cnn, SimpleCNN) and not cnn.training
    assert input_shape(cnn) == (3, 32, 32)
    # get_model is deterministic for a seed and differs across seeds
    a, b, c = (get_model("simple_cnn", seed=s).conv1.weight for s in (0, 0, 1))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in MODEL_NAMES if n in EXPECTED_TARGET])
def test_zoo_builds_runs_and_picks_target(name, no_leak):
    """The CNNs (the ViTs, whose layers are token maps: tests/models/test_vit.py)."""
    model = get_model(name.upper().replace("_", "-"))
    shape = SMALL if name in TORCHVISION_MODELS else input_shape(model)
    info = model.hooklab_info
    assert info.name == name and info.weights.startswith("random")
    with no_leak(model):
        assert auto_target_layer(model, shape) == EXPECTED_TARGET[name]
    with torch.no_grad():
        out = model(torch.zeros(2, *shape))
    assert out.shape == (2, info.num_classes)


def test_model_info_metadata():
    assert model_info("simple_cnn").mean == (0.5, 0.5, 0.5)
    assert model_info("simple_cnn").class_names[0] == "airplane"
    r = model_info("resnet18")
    assert r.input_shape == (3, 224, 224) and r.num_classes == 1000
    assert r.mean == pytest.approx((0.485, 0.456, 0.406))
    assert model_info("simple_cnn", num_classes=4).class_names == tuple(f"class_{i}" for i in range(4))


def test_unknown_name_suggests():
    with pytest.raises(HooklabError, match="resnet18"):
        get_model("resnet-81")


@pytest.fixture
def hub_dir(tmp_path, monkeypatch):
    """An empty torch hub directory, and any download attempt fails the test."""
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))

    def no_download(*args, **kwargs):
        raise AssertionError("hooklab tried to download")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    return tmp_path / "hub"


def _resnet_url() -> str:
    from torchvision.models import ResNet18_Weights

    return ResNet18_Weights.IMAGENET1K_V1.url


def test_hub_weights_missing_never_download(hub_dir):
    with pytest.raises(CheckpointError) as info:
        get_model("resnet18", weights="imagenet")
    msg = str(info.value)
    assert "allow_download=True" in msg and str(hub_dir) in msg


def test_hub_weights_from_local_cache(hub_dir):
    torch.manual_seed(7)
    ref = get_model("resnet18", seed=7).state_dict()
    path = hub_checkpoint_path(_resnet_url())
    path.parent.mkdir(parents=True)
    torch.save(ref, path)
    for spec in ("imagenet", "IMAGENET1K_V1", "ResNet18_Weights.IMAGENET1K_V1"):
        model = get_model("resnet18", seed=0, weights=spec)
        assert model.hooklab_info.weights == f"hub:{path.name}"
        for k, v in ref.items():
            assert torch.equal(model.state_dict()[k], v), k


def test_hub_download_only_on_opt_in(hub_dir, monkeypatch):
    ref = get_model("resnet18", seed=3).state_dict()
    calls = []

    def fake_download(url, progress=True, check_hash=False, weights_only=False, **kw):
        calls.append((url, weights_only))
        p = hub_checkpoint_path(url)
        p.parent.mkdir(parents=True, exist_ok=True)
        torch.save(ref, p)

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake_download)
    model = get_model("resnet18", weights="imagenet", allow_download=True)
    assert calls == [(_resnet_url(), True)]
    assert torch.equal(model.fc.weight, ref["fc.weight"])


def test_hub_weights_refused_for_seed_models(hub_dir):
    with pytest.raises(HooklabError, match="no torchvision weights"):
        get_model("simple_cnn", weights="imagenet")


def test_densenet_legacy_keys_are_remapped():
    sd = {"features.denseblock1.denselayer1.norm.1.weight": torch.zeros(1),
          "features.denseblock1.denselayer1.conv.2.weight": torch.zeros(1),
          "classifier.weight": torch.zeros(1)}
    out = remap_torchvision_keys("densenet121", sd)
    assert set(out) == {"features.denseblock1.denselayer1.norm1.weight",
                        "features.denseblock1.denselayer1.conv2.weight", "classifier.weight"}
    assert remap_torchvision_keys("resnet18", sd) is sd


def test_state_dict_mapping_as_weights():
    ref = get_model("simple_cnn", seed=5).state_dict()
    model = get_model("simple_cnn", weights={"model": ref})
    assert torch.equal(model.fc2.bias, ref["fc2.bias"])
    with pytest.raises(TypeError):
        get_model("simple_cnn", weights=3.5)


def test_list_layers_matches_plain_hooks(no_leak):
    model = get_model("simple_cnn")
    seen: dict[str, tuple[int, ...]] = {}

    def keep(name):
        def hook(_mod, _inp, out):
            seen.setdefault(name, tuple(out.shape))  # returns None: the output is not replaced
        return hook

    handles = [m.register_forward_hook(keep(n)) for n, m in model.named_modules() if n]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, 32, 32))
    finally:
        for h in handles:
            h.remove()
    with no_leak(model):
        df = list_layers(model)
    assert list(df.name) == [n for n, _ in model.named_modules() if n]
    for row in df.itertuples():
        assert row.output_shape == seen[row.name]
        assert row.params == sum(p.numel() for p in dict(model.named_modules())[row.name].parameters())
    assert df.set_index("name").loc["pool", "calls"] == 3
    assert df[df.leaf].params.sum() == sum(p.numel() for p in model.parameters())
    assert df.set_index("name").loc["conv3", "output_shape"] == (1, 128, 8, 8)


def test_list_layers_restores_train_mode_and_bn_stats(no_leak):
    model = get_model("resnet18").train()
    before = model.bn1.running_mean.clone()
    with no_leak(model):
        df = list_layers(model, SMALL)
    assert model.training and all(m.training for m in model.modules())
    assert torch.equal(model.bn1.running_mean, before)
    assert df.set_index("name").loc["layer4", "output_shape"] == (1, 512, 2, 2)
    assert df.set_index("name").loc["fc", "output_shape"] == (1, 1000)


def test_failing_forward_removes_hooks(no_leak):
    model = get_model("simple_cnn")
    with no_leak(model), pytest.raises(HooklabError, match="dry forward"):
        list_layers(model, (3, 7, 7))  # wrong size: the view() to 2048 fails


def test_non_spatial_model_has_no_target(no_leak):
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(12, 4), nn.ReLU(), nn.Linear(4, 2))
    with no_leak(mlp), pytest.raises(NonSpatialLayerError):
        auto_target_layer(mlp, (3, 2, 2))


def test_target_skips_shared_pool_but_falls_back():
    pool_only = nn.Sequential(nn.MaxPool2d(2), nn.Flatten())
    assert auto_target_layer(pool_only, (3, 8, 8)) == "0"
