"""The model registry: register (and as a decorator), entry points, load_modules, bad names and
factories, registered weights loaded safely, the example lab model end to end (gradients equal
torch.autograd.grad, no hook left)."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

import hooklab
from hooklab.cam import engine as cam
from hooklab.core.errors import (
    HooklabError,
    NonSpatialLayerError,
    UnsafeCheckpointError,
    WeightsMismatchError,
)
from hooklab.data.datasets import SHAPE_CLASSES, make_shapes
from hooklab.models import registry, zoo
from hooklab.models.registry import ModelFactoryError, ModelModuleError, RegistryError
from hooklab.models.weights import save_safetensors
from tests.models.registry_helpers import LAB, LAB_MODULE, forget_lab, saved_registry


class TinyCNN(nn.Module):
    """conv -> relu -> conv -> global pool -> linear (3 classes), any image size."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.gap(self.conv2(self.relu(self.conv1(x)))), 1))


def tiny_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2))


@pytest.fixture(autouse=True)
def clean_registry(monkeypatch):
    """Every test starts and ends with the registry as it was (no entry points loaded again)."""
    monkeypatch.delenv(registry.ENV_VAR, raising=False)
    with saved_registry():
        yield


@pytest.fixture
def modules_dir(tmp_path, monkeypatch):
    """A folder on sys.path for throw-away model modules; they are forgotten afterwards."""
    folder = tmp_path / "mods"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    before = set(sys.modules)
    yield folder
    for name in set(sys.modules) - before:
        sys.modules.pop(name, None)


@pytest.fixture
def lab(monkeypatch):
    """The example lab package imported from examples/ (not installed), as HOOKLAB_MODELS does."""
    monkeypatch.syspath_prepend(str(LAB))
    forget_lab()
    assert registry.load_modules(LAB_MODULE) == []
    yield sys.modules[LAB_MODULE]
    forget_lab()


def _write(folder: Path, name: str, body: str) -> None:
    (folder / f"{name}.py").write_text(textwrap.dedent(body))


# -- register -----------------------------------------------------------------------------------

def test_register_a_factory_builds_it_like_a_zoo_model():
    assert hooklab.models.register is registry.register
    returned = registry.register("tiny-CNN", TinyCNN, input_shape=(3, 20, 20),
                                 class_names=("a", "b", "c"), normalise=((0.5,), (0.25,)),
                                 description="  a tiny\n test net ")
    assert returned is TinyCNN
    model = zoo.get_model("Tiny_cnn", seed=3)
    assert isinstance(model, TinyCNN) and not model.training
    info = model.hooklab_info
    assert (info.name, info.input_shape, info.class_names) == ("tiny_cnn", (3, 20, 20),
                                                               ("a", "b", "c"))
    assert (info.mean, info.std) == ((0.5,) * 3, (0.25,) * 3)  # one value: every channel
    assert info.weights == "random(seed=3)" and info.description == "a tiny test net"
    assert zoo.input_shape(model) == (3, 20, 20)
    assert zoo.model_info("tiny_cnn") == zoo.replace(info, weights="random")
    # the seed makes the initialisation: the same as building the class after manual_seed(3)
    torch.manual_seed(3)
    ref = TinyCNN()
    for (n, p), (_, q) in zip(model.named_parameters(), ref.named_parameters(), strict=True):
        assert torch.equal(p, q), n
    assert "tiny_cnn" in zoo.all_model_names()
    assert [r.name for r in registry.registered()] == ["tiny_cnn"]


def test_decorator_on_a_function_and_on_a_class():
    @registry.register("dec_fn", input_shape=(16,))
    def build() -> nn.Module:
        return tiny_mlp()

    @registry.register("dec_cls", input_shape=(3, 8, 8), cam_layer="conv2")
    class Net(TinyCNN):
        pass

    assert callable(build) and build.__name__ == "build"  # returned unchanged
    assert issubclass(Net, TinyCNN)
    mlp = zoo.get_model("dec_fn")
    assert isinstance(mlp, nn.Sequential)
    # no class names registered: one per output logit, from a forward of the registered shape
    assert mlp.hooklab_info.class_names == ("class_0", "class_1")
    assert (mlp.hooklab_info.mean, mlp.hooklab_info.std) == ((0.0,), (1.0,))
    with pytest.raises(NonSpatialLayerError):
        zoo.auto_target_layer(mlp)
    net = zoo.get_model("dec_cls")
    assert isinstance(net, Net)
    # the registered CAM layer wins over the automatic one (which would be conv2 too: check it
    # is the registration that decides by registering conv1 under another name)
    registry.register("dec_cls1", Net, input_shape=(3, 8, 8), cam_layer="conv1")
    assert zoo.auto_target_layer(zoo.get_model("dec_cls1")) == "conv1"
    assert zoo.auto_target_layer(TinyCNN(), (3, 8, 8)) == "conv2"
    x = torch.randn(1, 3, 8, 8)
    assert cam.compute(zoo.get_model("dec_cls1"), x).layer == "conv1"


def test_same_factory_again_replaces_another_is_refused_and_unregister():
    registry.register("again", TinyCNN, input_shape=(3, 8, 8))
    registry.register("again", TinyCNN, input_shape=(3, 16, 16))  # a reloaded module
    assert registry.entry("again").input_shape == (3, 16, 16)
    with pytest.raises(RegistryError, match=r"already registered by .*TinyCNN"):
        registry.register("again", tiny_mlp, input_shape=(16,))
    assert registry.unregister("AGAIN") is True
    assert registry.unregister("again") is False
    assert registry.entry("again") is None


@pytest.mark.parametrize("kwargs, match", [
    ({"name": "simple_cnn"}, "is a zoo model"),
    ({"name": "Simple-CNN"}, "is a zoo model"),
    ({"input_shape": "332"}, "input_shape"),
    ({"name": "bad name!"}, "letters, digits"),
    ({"input_shape": ()}, "input_shape"),
    ({"input_shape": (3, 0, 8)}, "input_shape"),
    ({"input_shape": "3x32x32"}, "input_shape"),
    ({"normalise": (0.5, 0.5)}, "normalise is"),
    ({"normalise": ((0.5, 0.5), (0.5, 0.5))}, "give 1 or one per channel"),
    ({"normalise": ((0.5,), (0.0,))}, "std must be > 0"),
    ({"class_names": ()}, "class_names is empty"),
    ({"factory": TinyCNN()}, "not a built TinyCNN instance"),
    ({"factory": 42}, "must be callable"),
])
def test_bad_registrations_are_one_clear_error(kwargs, match):
    args = {"name": "ok_name", "factory": TinyCNN, "input_shape": (3, 8, 8), **kwargs}
    with pytest.raises(RegistryError, match=match) as info:
        registry.register(args.pop("name"), args.pop("factory"), **args)
    assert isinstance(info.value, HooklabError)
    assert registry.entry("ok_name") is None


# -- bad names and bad factories ---------------------------------------------------------------

def test_unknown_name_lists_the_registered_ones_close_names_first():
    registry.register("lab_alpha", TinyCNN, input_shape=(3, 8, 8))
    registry.register("lab_beta", TinyCNN, input_shape=(3, 8, 8))
    with pytest.raises(zoo.UnknownModelError) as info:
        zoo.get_model("lab_alpah")
    msg = str(info.value)
    assert msg.startswith("unknown model 'lab_alpah'. Did you mean lab_alpha")
    assert "registered: lab_alpha, lab_beta; zoo: simple_model, simple_cnn" in msg
    with pytest.raises(zoo.UnknownModelError, match="registered: lab_alpha"):
        zoo.model_info("nothing_like_it")
    assert isinstance(info.value, HooklabError) and isinstance(info.value, ValueError)


def test_a_factory_that_raises_is_one_message_naming_the_model_and_module():
    def broken() -> nn.Module:
        raise RuntimeError("CUDA kernels not built\nsecond line")

    registry.register("broken", broken, input_shape=(3, 8, 8))
    with pytest.raises(ModelFactoryError) as info:
        zoo.get_model("broken")
    msg = str(info.value)
    assert "'broken'" in msg and f"module {__name__}" in msg
    assert "RuntimeError: CUDA kernels not built" in msg and "second line" not in msg
    assert isinstance(info.value.__cause__, RuntimeError)


@pytest.mark.parametrize("returned", [None, "a model", nn.Linear])
def test_a_factory_that_returns_no_module_is_one_message(returned):
    registry.register("not_a_module", lambda: returned, input_shape=(3, 8, 8))
    with pytest.raises(ModelFactoryError, match=rf"'not_a_module' .*module {__name__}\) "
                                                r"returned \w+, not a torch.nn.Module"):
        zoo.get_model("not_a_module")


def test_a_model_that_fails_on_its_registered_shape_or_names_a_missing_layer():
    registry.register("wrong_shape", tiny_mlp, input_shape=(3, 8, 8))
    with pytest.raises(HooklabError, match=rf"'wrong_shape' \({__name__}\) fails on its "
                                           r"registered input_shape \(3, 8, 8\)"):
        zoo.get_model("wrong_shape")
    registry.register("wrong_names", TinyCNN, input_shape=(3, 8, 8), class_names=("a", "b"))
    with pytest.raises(HooklabError, match="gives 3 outputs but 2 class names"):
        zoo.get_model("wrong_names")
    registry.register("wrong_cam", TinyCNN, input_shape=(3, 8, 8), cam_layer="conv9")
    with pytest.raises(HooklabError, match="cam_layer: unknown layer 'conv9'.*conv1"):
        zoo.get_model("wrong_cam")
    with pytest.raises(HooklabError, match="num_classes"):
        registry.register("fixed", TinyCNN, input_shape=(3, 8, 8))
        zoo.get_model("fixed", num_classes=10)


# -- load_modules and HOOKLAB_MODELS -----------------------------------------------------------

def test_load_modules_one_error_per_failing_module_and_the_zoo_keeps_working(modules_dir,
                                                                              monkeypatch):
    _write(modules_dir, "good_mod", """
        from torch import nn
        import hooklab

        @hooklab.models.register("good_net", input_shape=(16,))
        def good_net():
            return nn.Sequential(nn.Linear(16, 4))
        """)
    _write(modules_dir, "syntax_mod", "def broken(:\n")
    _write(modules_dir, "raising_mod", "raise RuntimeError('no licence server')\n")
    errors = registry.load_modules(" no_such_mod_xyz , good_mod,syntax_mod, raising_mod,,good_mod")
    assert [type(e) for e in errors] == [ModelModuleError] * 3
    texts = [str(e) for e in errors]
    assert texts[0].startswith("could not load model module 'no_such_mod_xyz' (named in "
                               "--models): ModuleNotFoundError")
    assert "'syntax_mod'" in texts[1] and "SyntaxError" in texts[1]
    assert "'raising_mod'" in texts[2] and "RuntimeError: no licence server" in texts[2]
    assert all("\n" not in t for t in texts)
    assert registry.entry("good_net") is not None
    assert {str(e) for e in registry.load_errors()} == set(texts)
    assert isinstance(zoo.get_model("simple_model"), zoo.SimpleModel)  # the zoo still works
    # the failed modules are named where the missing model is asked for
    with pytest.raises(zoo.UnknownModelError, match="no_such_mod_xyz.*ModuleNotFoundError"):
        zoo.get_model("their_net")
    # $HOOKLAB_MODELS: loaded once per value
    monkeypatch.setenv(registry.ENV_VAR, "good_mod")
    assert registry.load_env() == []
    registry.unregister("good_net")
    assert registry.load_env() == [] and registry.entry("good_net") is None  # not again
    monkeypatch.setenv(registry.ENV_VAR, "good_mod,missing_too_xyz")
    [err] = registry.load_env()
    assert "'missing_too_xyz' (named in $HOOKLAB_MODELS)" in str(err)


def test_entry_points_are_loaded_lazily_once_module_and_callable(tmp_path, monkeypatch):
    """A fake installed distribution (``*.dist-info/entry_points.txt``) on sys.path: what
    ``pip install`` of a lab package leaves behind."""
    site = tmp_path / "site"
    dist = site / "fake_lab-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-lab\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(textwrap.dedent("""
        [hooklab.models]
        by_module = fakelab_models
        by_callable = fakelab_setup:setup
        broken = fakelab_missing
        [console_scripts]
        other = fakelab_models:nothing
        """))
    _write(site, "fakelab_models", """
        import hooklab
        from torch import nn
        LOADS = []
        LOADS.append(1)
        hooklab.models.register("ep_module_net", lambda: nn.Linear(4, 2), input_shape=(4,))
        """)
    _write(site, "fakelab_setup", """
        import hooklab
        from torch import nn
        CALLS = []

        def setup():
            CALLS.append(1)
            hooklab.models.register("ep_callable_net", lambda: nn.Linear(4, 3), input_shape=(4,))
        """)
    monkeypatch.syspath_prepend(str(site))
    try:
        registry.reload_entry_points()
        assert "fakelab_models" not in sys.modules  # lazy: nothing imported before a listing
        names = [r.name for r in registry.registered()]
        assert {"ep_module_net", "ep_callable_net"} <= set(names)
        assert zoo.get_model("ep_callable_net").hooklab_info.class_names == ("class_0",
                                                                            "class_1", "class_2")
        [err] = [e for e in registry.load_errors() if "fakelab_missing" in str(e)]
        assert "entry point broken = fakelab_missing" in str(err)
        registry.registered()
        zoo.get_model("ep_module_net")
        assert sys.modules["fakelab_models"].LOADS == [1]  # once
        assert sys.modules["fakelab_setup"].CALLS == [1]
    finally:
        for name in ("fakelab_models", "fakelab_setup"):
            sys.modules.pop(name, None)


# -- weights -------------------------------------------------------------------------------------

def test_registered_weights_file_is_loaded_safely_and_random_overrides_it(tmp_path):
    torch.manual_seed(11)
    trained = TinyCNN()
    path = save_safetensors(trained, tmp_path / "tiny.safetensors")
    registry.register("with_weights", TinyCNN, input_shape=(3, 8, 8), weights=path)
    model = zoo.get_model("with_weights", seed=0)
    for (n, p), (_, q) in zip(model.named_parameters(), trained.named_parameters(), strict=True):
        assert torch.equal(p, q), n
    assert model.hooklab_info.weights == str(path)
    rand = zoo.get_model("with_weights", seed=0, weights="random")
    assert not torch.equal(rand.conv1.weight, trained.conv1.weight)
    assert rand.hooklab_info.weights == "random(seed=0)"
    # a file given at the call wins over the registered one (the dashboard's upload)
    torch.manual_seed(12)
    other = TinyCNN()
    torch.save(other.state_dict(), tmp_path / "other.pt")
    given = zoo.get_model("with_weights", weights=tmp_path / "other.pt")
    assert torch.equal(given.fc.bias, other.fc.bias)
    with pytest.raises(HooklabError, match="no torchvision weights"):
        zoo.get_model("with_weights", weights="imagenet")


class _Payload:
    """Unpickling this object would create the marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_registered_pickle_that_needs_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "payload_ran"
    evil = tmp_path / "evil.pt"
    torch.save({"conv1.weight": torch.zeros(1), "x": _Payload(str(marker))}, evil)
    registry.register("evil_weights", TinyCNN, input_shape=(3, 8, 8), weights=evil)
    with pytest.raises(UnsafeCheckpointError, match="refused"):
        zoo.get_model("evil_weights")
    assert not marker.exists(), "the checkpoint's payload ran"
    registry.register("bad_fit", tiny_mlp, input_shape=(16,),
                      weights=save_safetensors(TinyCNN(), tmp_path / "cnn.safetensors"))
    with pytest.raises(WeightsMismatchError, match="missing keys"):
        zoo.get_model("bad_fit")
    registry.register("missing_file", TinyCNN, input_shape=(3, 8, 8),
                      weights=tmp_path / "nowhere.safetensors")
    with pytest.raises(HooklabError, match="nowhere.safetensors"):
        zoo.get_model("missing_file")


# -- the example lab package ---------------------------------------------------------------------

def test_example_lab_model_with_its_shipped_weights(lab):
    model = zoo.get_model("lab_resnet")
    info = model.hooklab_info
    assert type(model).__module__ == LAB_MODULE
    assert (info.input_shape, info.class_names, info.cam_layer) == ((3, 32, 32), SHAPE_CLASSES,
                                                                    "block2")
    assert info.weights == str(lab.WEIGHTS) and lab.WEIGHTS.stat().st_size < 1_000_000
    assert zoo.auto_target_layer(model) == "block2"
    assert "residual" in info.description
    test = make_shapes(300, split="test")
    with torch.no_grad():
        acc = (model(test.images).argmax(1) == test.labels).float().mean().item()
    assert acc > 0.7, acc  # 0.86 on 1000 test images when the file was made; chance is 1/6


def test_example_lab_recorded_gradients_equal_autograd_and_no_hook_left(lab, no_leak):
    model = zoo.get_model("lab_resnet")
    x = make_shapes(2, split="test").images.clone().requires_grad_()
    params = dict(model.named_parameters())
    with no_leak(model):
        with hooklab.record(model, param_grads=True, input_grads=True) as rec:
            names = rec.layers
            outs: dict[str, torch.Tensor] = {}
            handles = [dict(model.named_modules())[n].register_forward_hook(
                lambda _m, _i, o, n=n: outs.__setitem__(n, o)) for n in names]
            try:
                out = model(x)
                loss = out[:, 2].sum() + 0.3 * out[:, 0].sum()
                ref = torch.autograd.grad(loss, [outs[n] for n in names] + list(params.values())
                                          + [x], retain_graph=True)
                model.zero_grad(set_to_none=True)
                loss.backward()
            finally:
                for h in handles:
                    h.remove()
    ev, trace = rec.trace.events, rec.trace
    assert {"stem", "block1.conv1", "block1.relu2", "down", "block2.conv2", "fc"} <= set(names)
    for n, g in zip(names, ref[:len(names)], strict=True):
        rows = ev[(ev.layer == n) & (ev.role == "grad_output")]
        assert len(rows) == 2, n  # the autograd.grad pass and the backward
        for key in rows["key"]:
            torch.testing.assert_close(trace.tensor(key), g, rtol=1e-5, atol=1e-7)
    for (full, g) in zip(params, ref[len(names):-1], strict=True):
        mod, _, pname = full.rpartition(".")
        row = ev[(ev.layer == mod) & (ev.role == "param_grad") & (ev["index"] == pname)]
        assert len(row) == 1, full
        torch.testing.assert_close(trace.tensor(row.iloc[0]["key"]), g, rtol=1e-5, atol=1e-7)
    # an exception inside the recording leaves no hook either
    with no_leak(model), pytest.raises(ValueError, match="out of range"):
        with hooklab.record(model, edits=["block2.conv1=halve"]) as rec2:
            rec2.run(x.detach(), target=99)  # no class 99


def test_example_lab_halving_halves_the_gradient_upstream(lab, no_leak):
    model = zoo.get_model("lab_resnet")
    x = make_shapes(1, split="test").images
    with no_leak(model):
        with hooklab.record(model, ["stem", "down"], param_grads=True) as plain:
            plain.run(x, target=1)
        with hooklab.record(model, ["stem", "down"], edits=["down=halve"],
                            param_grads=True) as halved:
            halved.run(x, target=1)

    def grad(trace, layer, role="param_grad", index="weight"):
        ev = trace.events
        rows = ev[(ev.layer == layer) & (ev.role == role) & (ev["index"] == index)]
        return trace.tensor(rows.iloc[-1]["key"])

    torch.testing.assert_close(grad(halved.trace, "stem"), 0.5 * grad(plain.trace, "stem"))
    torch.testing.assert_close(grad(halved.trace, "down"), 0.5 * grad(plain.trace, "down"))
