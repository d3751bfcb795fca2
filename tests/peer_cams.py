"""Run the peer CAM libraries (pytorch-grad-cam, torchcam, Captum) and plain-autograd oracles.

Helpers for ``tests/test_cam_peers.py``. Every function returns torch float32 tensors on CPU
and removes every hook it (or the peer) registered, also when the peer raises.

Peer conventions, read from their source (pytorch-grad-cam 1.5.7, torchcam 0.5.0, Captum 0.9):

* pytorch-grad-cam computes ``cam = get_cam_image(...)`` (the weighted sum, *before* its ReLU),
  then ``np.maximum(cam, 0)``, min-max (``+1e-7``), ``cv2.resize`` (bilinear, half-pixel
  centres), and min-max again. :func:`pgc` returns that pre-ReLU ``cam`` and the final maps.
* torchcam's ``normalized=False`` returns the map after its ReLU, before normalisation, at the
  layer's resolution.
* Captum's ``LayerGradCam.attribute`` has no ReLU unless ``relu_attributions=True``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from captum.attr import LayerGradCam
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn


class LogProb:
    """A peer target: ``log softmax(logits)[t]`` of one sample's output (1-D or batched)."""

    def __init__(self, t: int) -> None:
        self.t = t

    def __call__(self, out: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(out, dim=-1)[..., self.t]


class Prob:
    """A peer target: ``softmax(logits)[t]`` of one sample's output (1-D or batched)."""

    def __init__(self, t: int) -> None:
        self.t = t

    def __call__(self, out: torch.Tensor) -> torch.Tensor:
        return torch.softmax(out, dim=-1)[..., self.t]


def pgc(cls: type, model: nn.Module, layer: nn.Module, x: torch.Tensor, targets: Sequence[int],
        target_type: Callable[[int], Callable] = ClassifierOutputTarget,
        batch_size: int | None = None, eigen_smooth: bool = False,
        **init_kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """pytorch-grad-cam's method ``cls`` -> (pre-ReLU map ``(B, h, w)``, final maps ``(B, H, W)``).

    The pre-ReLU map is what the peer's ``get_cam_image`` returns (captured by wrapping it on
    the instance); the peer applies ``np.maximum(., 0)`` to it next. ``init_kwargs`` go to the
    peer's constructor (``kernel=`` for KPCA_CAM), ``eigen_smooth`` to its call.
    """
    extractor = cls(model=model, target_layers=[layer], **init_kwargs)
    if batch_size is not None:
        extractor.batch_size = batch_size  # Score-CAM's masked inputs per forward
    captured: list[np.ndarray] = []
    original = extractor.get_cam_image

    def keep(*args, **kwargs):
        out = original(*args, **kwargs)
        captured.append(np.array(out, copy=True))
        return out

    extractor.get_cam_image = keep
    try:
        final = extractor(input_tensor=x, targets=[target_type(int(t)) for t in targets],
                          eigen_smooth=eigen_smooth)
    finally:
        extractor.activations_and_grads.release()
    assert len(captured) == 1, "one target layer, one map"
    return torch.from_numpy(captured[0]).float(), torch.from_numpy(np.asarray(final)).float()


def pgc_maps(cls: type, model: nn.Module, layers: list[nn.Module], x: torch.Tensor,
             targets: Sequence[int], **call_kwargs) -> torch.Tensor:
    """pytorch-grad-cam's final maps ``(B, H, W)`` (``aug_smooth=True`` and the like)."""
    extractor = cls(model=model, target_layers=layers)
    try:
        final = extractor(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in targets],
                          **call_kwargs)
    finally:
        extractor.activations_and_grads.release()
    return torch.from_numpy(np.asarray(final)).float()


def pgc_fullgrad(model: nn.Module, x: torch.Tensor, targets: Sequence[int]
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """pytorch-grad-cam's FullGrad -> (the summed map before its final min-max, final maps)."""
    from pytorch_grad_cam import FullGrad

    extractor = FullGrad(model=model, target_layers=[])
    summed: list[np.ndarray] = []
    original = extractor.aggregate_multi_layers

    def keep(cams):
        summed.append(np.sum(cams, axis=1))
        return original(cams)

    extractor.aggregate_multi_layers = keep
    try:
        final = extractor(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in targets])
    finally:
        extractor.activations_and_grads.release()
        model.zero_grad(set_to_none=True)  # the peer's backward filled every weight's .grad
    return torch.from_numpy(summed[0]).float(), torch.from_numpy(np.asarray(final)).float()


def torchcam_raw(cls: type, model: nn.Module, layer: str, x: torch.Tensor, targets: Sequence[int],
                 **kwargs) -> torch.Tensor:
    """torchcam's method ``cls`` with class indices, ``normalized=False``: ``(B, h, w)``."""
    with cls(model, layer, input_shape=tuple(x.shape[1:])) as extractor:
        scores = model(x)
        maps = extractor([int(t) for t in targets], scores, normalized=False)
    return maps[0].detach().float()


def torchcam_scorecam(cls: type, model: nn.Module, layer: str, x: torch.Tensor,
                      targets: Sequence[int], batch_size: int = 128) -> torch.Tensor:
    """torchcam's Score-CAM with one :class:`LogProb` target per sample, ``normalized=False``."""
    with cls(model, layer, batch_size=batch_size, input_shape=tuple(x.shape[1:])) as extractor:
        with torch.no_grad():
            model(x)  # the extractor's hooks keep the activation and the input
        maps = extractor(targets=[LogProb(int(t)) for t in targets], normalized=False)
    return maps[0].detach().float()


def captum_gradcam(model: nn.Module, layer: nn.Module, x: torch.Tensor, targets: Sequence[int]
                   ) -> torch.Tensor:
    """Captum's ``LayerGradCam`` with ``relu_attributions=True``: ``(B, h, w)``."""
    attr = LayerGradCam(model, layer).attribute(x, target=[int(t) for t in targets],
                                                relu_attributions=True)
    return attr[:, 0].detach().float()


@contextlib.contextmanager
def no_grad_params(model: nn.Module):
    """``requires_grad=False`` on every parameter for the block (no weight gradients needed)."""
    flags = [p.requires_grad for p in model.parameters()]
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        yield
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)


# -- oracles: the model's forward written out at the target layer, no hooks at all ---------------

def _simple_cnn_split(model: nn.Module, x: torch.Tensor
                      ) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """hooklab's SimpleCNN at ``conv3``: (conv3 output, head from conv3's output to logits)."""
    a = model.conv3(model.pool(F.relu(model.conv2(model.pool(F.relu(model.conv1(x)))))))
    return a, lambda t: model.fc2(F.relu(model.fc1(model.pool(F.relu(t)).flatten(1))))


def _densenet_split(model: nn.Module, x: torch.Tensor
                    ) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """torchvision DenseNet at ``features.norm5`` (the last module of ``features``)."""
    a = model.features(x)
    return a, lambda t: model.classifier(torch.flatten(F.adaptive_avg_pool2d(F.relu(t), 1), 1))


def _densenet_relu_split(model: nn.Module, x: torch.Tensor
                         ) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """torchvision DenseNet just after the ReLU that follows ``features.norm5`` (in place there)."""
    a = F.relu(model.features(x))
    return a, lambda t: model.classifier(torch.flatten(F.adaptive_avg_pool2d(t, 1), 1))


#: where an oracle can differentiate: a layer name, or ``relu(name)`` for the point after the
#: ReLU that follows it.
SPLITS = {"conv3": _simple_cnn_split, "features.norm5": _densenet_split,
          "relu(features.norm5)": _densenet_relu_split}


def oracle(model: nn.Module, point: str, x: torch.Tensor, targets: Sequence[int]
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Activation ``A``, gradient ``dS/dA`` and logits from the written-out forward.

    ``A`` is the output at ``point`` (a key of :data:`SPLITS`) as a fresh leaf, so nothing
    downstream can alias it; ``S = Σ_i logits[i, targets[i]]``.
    """
    with no_grad_params(model), torch.enable_grad():
        out, head = SPLITS[point](model, x.detach())
        a = out.detach().clone().requires_grad_()
        logits = head(a)
        score = logits[torch.arange(x.shape[0]), torch.as_tensor(list(targets))].sum()
        (g,) = torch.autograd.grad(score, a)
    return a.detach(), g.detach(), logits.detach()


class GapNet(nn.Module):
    """conv -> ReLU -> conv (``features``) -> global average pool -> Linear: CAM's architecture.

    ``smooth=True`` puts a Softplus after ``features`` (before the pooling) and a GELU between
    two Linears, so the logit is a smooth function of ``features`` with a non-zero Hessian
    (ShapleyCAM's second-order term). ``batchnorm=True`` adds a BatchNorm2d after each conv and
    drops the convs' biases (FullGrad then uses the batch norms' effective biases).
    """

    def __init__(self, smooth: bool = False, batchnorm: bool = False, classes: int = 5) -> None:
        super().__init__()
        self.smooth = smooth
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=not batchnorm)
        self.bn1 = nn.BatchNorm2d(8) if batchnorm else nn.Identity()
        self.features = nn.Conv2d(8, 12, 3, padding=1, stride=2, bias=not batchnorm)
        self.bn2 = nn.BatchNorm2d(12) if batchnorm else nn.Identity()
        self.hidden = nn.Linear(12, 12) if smooth else nn.Identity()
        self.fc = nn.Linear(12, classes)

    def head(self, a: torch.Tensor) -> torch.Tensor:
        """Logits from ``features``' output (the written-out rest of the forward)."""
        a = self.bn2(a)
        if self.smooth:
            a = F.softplus(a)
        p = a.mean(dim=(2, 3))
        if self.smooth:
            p = F.gelu(self.hidden(p))
        return self.fc(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(F.relu(self.bn1(self.conv1(x)))))


def gapnet(**kwargs) -> GapNet:
    """A seeded :class:`GapNet` in eval mode; batch norms get non-trivial statistics."""
    torch.manual_seed(0)
    model = GapNet(**kwargs).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return model


#: The peer-comparison cases: model name -> (target layer, input shape).
PEER_CASES = {"simple_cnn": ("conv3", (2, 3, 32, 32)), "resnet18": ("layer4", (2, 3, 64, 64))}


def peer_case(name: str) -> tuple[nn.Module, str, torch.Tensor, list[int]]:
    """(model, layer, input, per-image targets [top-1 of image 0, top-2 of image 1]) for a key
    of :data:`PEER_CASES`: seeded random weights, eval mode, seeded input."""
    from hooklab.models.zoo import get_model

    layer, shape = PEER_CASES[name]
    model = get_model(name, seed=0).eval()
    torch.manual_seed(1)
    x = torch.randn(*shape)
    with torch.no_grad():
        logits = model(x)
    return model, layer, x, [int(logits[0].argmax()), int(logits[1].topk(2).indices[1])]


def reference_capture(model: nn.Module, x: torch.Tensor, layer: str, targets: Sequence[int]
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Activation and d(Σ target logits)/d(activation) via a retained grad and a full
    backward (float64), and the logits; the hook and the parameters' ``.grad`` are cleared."""
    store = {}

    def hook(_m, _i, out):
        out.retain_grad()
        store["a"] = out

    h = model.get_submodule(layer).register_forward_hook(hook)
    try:
        logits = model(x)
        sum(logits[i, int(t)] for i, t in enumerate(targets)).backward()
    finally:
        h.remove()
        model.zero_grad(set_to_none=True)
    a = store["a"]
    return a.detach().double(), a.grad.detach().double(), logits.detach()
