"""hooklab.cam.engine: the seed's Grad-CAM, targets, fused layers, state restoration, errors, traces."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import hooklab
from hooklab.cam import engine as cam
from hooklab.core.errors import HooklabError, LayerNotFoundError, NonSpatialLayerError
from hooklab.models.zoo import SimpleCNN, get_model
from tests.conftest import total_hooks
from tests.seed_reference import SeedSimpleCNN


class SeedGradCAM:
    """The seed's GradCAM class, verbatim in substance (SEED_NOTES §5), plus handle removal."""

    def __init__(self, model, target_layer):
        self.model = model
        self.target_layer = target_layer
        self.gradients = None
        self.activations = None
        self.handles = []
        self.register_hooks()

    def register_hooks(self):
        def forward_hook(module, input, output):
            self.activations = output.detach()

        def backward_hook(module, grad_input, grad_output):
            self.gradients = grad_output[0].detach()

        self.handles.append(self.target_layer.register_forward_hook(forward_hook))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.handles.append(self.target_layer.register_backward_hook(backward_hook))

    def remove(self):  # the seed never does this; hooklab must
        for h in self.handles:
            h.remove()

    def generate_cam(self, input_image, target_class=None):
        with warnings.catch_warnings():  # the deprecated hook warns at every forward
            warnings.simplefilter("ignore")
            model_output = self.model(input_image)
        if target_class is None:
            target_class = torch.argmax(model_output, dim=1).item()
        self.model.zero_grad()
        one_hot = torch.zeros_like(model_output)
        one_hot[0, target_class] = 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model_output.backward(gradient=one_hot)
        weights = torch.mean(self.gradients, dim=(2, 3), keepdim=True)
        cam_ = torch.sum(weights * self.activations, dim=1, keepdim=True)
        cam_ = F.relu(cam_)
        cam_ = F.interpolate(cam_, size=(32, 32), mode="bilinear", align_corners=False)
        cam_ = cam_ - cam_.min()
        cam_ = cam_ / cam_.max() if cam_.max() > 0 else cam_
        return cam_.cpu().squeeze().numpy(), target_class


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(42)
    return SimpleCNN().eval()


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(7)
    return torch.randn(4, 3, 32, 32)


def test_gradcam_reproduces_seed(model, images, no_leak):
    torch.manual_seed(42)  # the seed's literal SimpleCNN, initialised as the `model` fixture
    seed_cnn = SeedSimpleCNN().eval()
    ref = SeedGradCAM(seed_cnn, seed_cnn.conv3)
    try:
        expected = [ref.generate_cam(images[i:i + 1]) for i in range(len(images))]
    finally:
        ref.remove()
    model.zero_grad(set_to_none=True)
    with no_leak(model):
        res = cam.compute(model, images, method="gradcam")  # default layer: conv3, as the seed
    assert res.layer == "conv3"
    assert res.targets.tolist() == [t for _, t in expected]
    for i, (heat, _) in enumerate(expected):
        torch.testing.assert_close(res.maps[i], torch.from_numpy(heat), rtol=1e-5, atol=1e-6)
    assert all(p.grad is None for p in model.parameters()), "CAM must not compute weight grads"


def test_per_sample_targets_equal_single_image_runs(model, images, no_leak):
    targets = [3, 0, 9, 3]
    with no_leak(model):
        batch = cam.compute(model, images, "gradcam++", layer="conv2", target=targets)
        singles = [cam.compute(model, images[i:i + 1], "gradcam++", layer="conv2", target=t)
                   for i, t in enumerate(targets)]
    for i, s in enumerate(singles):
        torch.testing.assert_close(batch.maps[i], s.maps[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(batch.raw[i], s.raw[0], rtol=1e-5, atol=1e-7)
    with torch.no_grad():
        logits = model(images)
    torch.testing.assert_close(batch.scores, logits[torch.arange(4), torch.tensor(targets)])


def test_topk_targets(model, images, no_leak):
    with no_leak(model):
        res = cam.compute(model, images, "gradcam", target="topk:3")
    with torch.no_grad():
        top = model(images).topk(3, dim=1).indices
    assert res.maps.shape == (12, 32, 32)
    assert res.targets.tolist() == top.reshape(-1).tolist()
    assert res.sample.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    one = cam.compute(model, images, "gradcam", target=top[:, 1].tolist())
    torch.testing.assert_close(res.maps[1::3], one.maps)


def test_fused_layers(model, images, no_leak):
    with no_leak(model):
        fused = cam.compute(model, images, "layercam", layer=["conv2", "conv3"])
        a = cam.compute(model, images, "layercam", layer="conv2")
        b = cam.compute(model, images, "layercam", layer="conv3")
    mean = (a.maps + b.maps) / 2
    lo = mean.amin(dim=(1, 2), keepdim=True)
    hi = (mean - lo).amax(dim=(1, 2), keepdim=True)
    torch.testing.assert_close(fused.maps, (mean - lo) / hi, rtol=1e-5, atol=1e-6)
    assert fused.layers == ("conv2", "conv3") and fused.layer == "conv2+conv3"
    torch.testing.assert_close(fused.per_layer["conv2"], a.raw)
    torch.testing.assert_close(fused.per_layer["conv3"], b.raw)


def test_no_graph_below_target_layer(model, images):
    seen = []
    h = model.conv2.register_forward_hook(lambda _m, _i, out: seen.append(out.requires_grad))
    try:
        cam.compute(model, images, "gradcam", layer="conv3")
    finally:
        h.remove()
    assert seen == [False]


def test_state_restored_training_and_requires_grad(no_leak):
    torch.manual_seed(0)
    m = SimpleCNN()
    m.train()
    m.conv1.eval()
    m.conv1.weight.requires_grad_(False)
    x = torch.randn(2, 3, 32, 32)
    with no_leak(m):
        cam.compute(m, x, "gradcam")
        cam.compute(m, x, "scorecam", layer="conv1", batch_size=64)
    assert m.training and not m.conv1.training and not m.conv1.weight.requires_grad
    assert m.conv2.weight.requires_grad


class Exploding(nn.Module):
    """SimpleCNN whose forward raises after the target layer has run."""

    def __init__(self) -> None:
        super().__init__()
        self.net = SimpleCNN()
        self.boom = False

    def forward(self, x):
        out = self.net(x)
        if self.boom:
            raise RuntimeError("injected failure in forward")
        return out


@pytest.mark.parametrize("method", ["gradcam", "eigencam", "scorecam"])
def test_no_leak_after_exception_in_forward(no_leak, method):
    m = Exploding()
    m.train()
    x = torch.randn(2, 3, 32, 32)
    m.boom = True
    with no_leak(m):
        with pytest.raises(RuntimeError, match="injected"):
            cam.compute(m, x, method, layer="net.conv3")
    assert m.training


def test_no_leak_after_exception_in_backward(no_leak):
    class BadGrad(torch.autograd.Function):
        @staticmethod
        def forward(ctx, t):
            return t.clone()

        @staticmethod
        def backward(ctx, g):
            raise RuntimeError("injected failure in backward")

    class M(SimpleCNN):
        def forward(self, x):
            return BadGrad.apply(super().forward(x))

    m = M()
    with no_leak(m):
        with pytest.raises(RuntimeError, match="injected failure in backward"):
            cam.compute(m, torch.randn(1, 3, 32, 32), "gradcam")


def test_non_spatial_layer_names_a_suitable_one(model, images, no_leak):
    with no_leak(model):
        with pytest.raises(NonSpatialLayerError, match="fc1.*'conv3'") as info:
            cam.compute(model, images, layer="fc1")
    assert isinstance(info.value, HooklabError) and isinstance(info.value, ValueError)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    with no_leak(mlp):
        with pytest.raises(NonSpatialLayerError, match="spatial"):
            cam.compute(mlp, torch.randn(2, 3, 2, 2))


def test_bad_requests(model, images, no_leak):
    with no_leak(model):
        with pytest.raises(LayerNotFoundError, match="conv3"):
            cam.compute(model, images, layer="conv4")
        with pytest.raises(cam.CamError, match="unknown CAM method"):
            cam.compute(model, images, method="magic")
        with pytest.raises(cam.CamError, match="out of range"):
            cam.compute(model, images, target=10)
        with pytest.raises(cam.CamError, match="one per image"):
            cam.compute(model, images, target=[1, 2])
        with pytest.raises(cam.CamError, match="topk"):
            cam.compute(model, images, target="best")
        with pytest.raises(cam.CamError, match=r"\(B, C, H, W\)"):
            cam.compute(model, torch.randn(32, 32))


def test_cam_from_trace_equals_live(model, images, no_leak):
    with no_leak(model):
        with hooklab.record(model, layers="conv3") as rec:
            rec.run(images)  # each image's predicted-class logit, as compute's default
        model.zero_grad(set_to_none=True)
        for method in ("gradcam", "hirescam", "eigencam"):
            stored = cam.cam_from_trace(rec.trace, "conv3", method=method, size=(32, 32))
            live = cam.compute(model, images, method=method, layer="conv3")
            torch.testing.assert_close(stored.maps, live.maps, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(stored.raw, live.raw, rtol=1e-5, atol=1e-7)
    with pytest.raises(cam.CamError, match="Score-CAM needs the model"):
        cam.cam_from_trace(rec.trace, "conv3", method="scorecam")
    with pytest.raises(cam.CamError, match="no stored activation"):
        cam.cam_from_trace(rec.trace, "conv2")


def test_cam_from_a_saved_run_without_the_model(model, images, tmp_path):
    from hooklab.store.runs import TraceStore

    with hooklab.record(model, layers=["conv2", "conv3"]) as rec:
        rec.run(images, target=[1, 2, 3, 4])
    model.zero_grad(set_to_none=True)
    store = TraceStore(tmp_path / "runs", durable=False)
    run_id = store.save(rec.trace)
    loaded = store.load(run_id)  # a fresh Trace read from disk: no model involved
    stored = cam.cam_from_trace(loaded, "conv2", "layercam", size=(32, 32))
    live = cam.compute(model, images, "layercam", layer="conv2", target=[1, 2, 3, 4])
    torch.testing.assert_close(stored.maps, live.maps, rtol=1e-5, atol=1e-6)


def test_cam_from_trace_without_gradients(model, images):
    with hooklab.record(model, layers="conv3") as rec:
        with torch.no_grad():
            model(images)
    with pytest.raises(cam.CamError, match="no gradient"):
        cam.cam_from_trace(rec.trace, "conv3")
    assert cam.cam_from_trace(rec.trace, "conv3", "eigencam").maps.shape == (4, 8, 8)


# -- torchvision ResNet: in-place ReLU after the target layer -----------------------------------

@pytest.fixture(scope="module")
def resnet():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(1)
    return torchvision.models.resnet18(num_classes=10).eval()


def _resnet_reference(net, x, targets):
    """Activations and gradients at layer4.1.bn2 and layer4, by an explicit functional forward."""
    with torch.no_grad():
        h = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        h = net.layer3(net.layer2(net.layer1(h)))
        h = net.layer4[0](h)
    blk = net.layer4[1]
    identity = h
    with torch.no_grad():
        bn2_out = blk.bn2(blk.conv2(F.relu(blk.bn1(blk.conv1(h)))))
    a_bn2 = bn2_out.clone().requires_grad_()
    a_l4 = F.relu(a_bn2 + identity)  # what layer4 returns
    a_l4.retain_grad()
    logits = net.fc(torch.flatten(net.avgpool(a_l4), 1))
    logits.gather(1, torch.tensor(targets)[:, None]).sum().backward()
    net.zero_grad(set_to_none=True)
    return (a_bn2.detach(), a_bn2.grad), (a_l4.detach(), a_l4.grad)


@pytest.mark.slow
def test_resnet_inplace_relu_after_target(resnet, no_leak):
    x = torch.randn(2, 3, 64, 64)
    targets = [2, 7]
    (a_bn2, g_bn2), (a_l4, g_l4) = _resnet_reference(resnet, x, targets)
    from hooklab.cam.methods import gradcam
    with no_leak(resnet):
        r_bn2 = cam.compute(resnet, x, "gradcam", layer="layer4.1.bn2", target=targets)
        r_l4 = cam.compute(resnet, x, "gradcam", target=targets)  # auto: layer4
        fused = cam.compute(resnet, x, "hirescam", layer=["layer4.1.bn2", "layer4"],
                            target=targets)
    assert r_l4.layer == "layer4"
    torch.testing.assert_close(r_bn2.raw, gradcam(a_bn2, g_bn2), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(r_l4.raw, gradcam(a_l4, g_l4), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(fused.per_layer["layer4.1.bn2"],
                               F.relu((a_bn2 * g_bn2).sum(1)), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(fused.per_layer["layer4"],
                               F.relu((a_l4 * g_l4).sum(1)), rtol=1e-4, atol=1e-6)
    assert all(p.grad is None for p in resnet.parameters())


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_works_inside_callers_no_grad_or_inference_mode(model, images, no_leak, context):
    expected = cam.compute(model, images, "gradcam").maps
    with no_leak(model):
        with context():
            got = cam.compute(model, images.clone(), "gradcam").maps
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("method", ["gradcam", "scorecam"])
def test_a_strided_input_gives_the_same_maps_as_a_contiguous_one(method: str) -> None:
    """A permuted (HWC → CHW) image is not contiguous; the seed's SimpleCNN views its features."""
    model = get_model("simple_cnn", seed=0)
    hwc = torch.randn(2, 32, 32, 3, generator=torch.Generator().manual_seed(3))
    strided = hwc.permute(0, 3, 1, 2)
    assert not strided.is_contiguous()
    got = cam.compute(model, strided, method)
    want = cam.compute(model, strided.contiguous(), method)
    torch.testing.assert_close(got.maps, want.maps, rtol=0, atol=0)
    assert total_hooks(model) == 0


def test_layer_accepts_what_record_accepts(model, images, no_leak):
    """One LayerSpec: a type name, a type, a glob or a module select the same layers as in
    hooklab.record (issue 11: record(model, "Conv2d") worked, cam.compute(layer="Conv2d")
    raised)."""
    convs = ["conv1", "conv2", "conv3"]
    with no_leak(model):
        with hooklab.record(model, "Conv2d") as rec:
            pass
        assert rec.layers == convs
        by_name = cam.compute(model, images, "gradcam", layer=convs)
        for spec in ("Conv2d", nn.Conv2d, "conv?", ["conv3", "Conv2d"]):
            res = cam.compute(model, images, "gradcam", layer=spec)
            assert res.layers == tuple(convs), spec
            torch.testing.assert_close(res.maps, by_name.maps)
        one = cam.compute(model, images, "gradcam", layer=model.conv3)
        assert one.layers == ("conv3",)
        torch.testing.assert_close(one.maps, cam.compute(model, images, layer="conv3").maps)
        with pytest.raises(LayerNotFoundError, match="did you mean conv2"):
            cam.compute(model, images, layer="cnv2")
        with pytest.raises(LayerNotFoundError, match="model itself"):
            cam.compute(model, images, layer=model)
        with pytest.raises(cam.CamError, match="empty"):
            cam.compute(model, images, layer=[])
