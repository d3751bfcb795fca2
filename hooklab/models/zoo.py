"""Model zoo addressed by name, layer listing and the automatic Grad-CAM target layer.

The seed's :class:`SimpleModel` and :class:`SimpleCNN` exactly as in the lesson, a small Vision
Transformer beside the CNN (:class:`hooklab.models.vit.SimpleViT`, ``"simple_vit"``), plus torchvision
architectures (:data:`TORCHVISION_MODELS`) built with random weights; weights come only from files
the user gives (loaded safely, :mod:`hooklab.models.weights`) or from torchvision's files already in the
local torch hub cache. Nothing downloads unless ``allow_download=True``.

Example:
    >>> model = get_model("resnet18")                   # random weights, offline
    >>> auto_target_layer(model)
    'layer4'
    >>> list_layers(model).head()                       # name, type, output_shape, params, ...
"""

from __future__ import annotations

import difflib
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from hooklab.core.errors import HooklabError, NonSpatialLayerError
from hooklab.core.layers import resolve_layer
from hooklab.core.modes import eval_mode
from hooklab.data.datasets import CIFAR10_CLASSES, IMAGE_SIZE, SEED_MEAN, SEED_STD, SHAPE_CLASSES
from hooklab.models import defaults, registry
from hooklab.models import weights as weights_mod
from hooklab.models.vit import SimpleViT, draw_head
from hooklab.recording.scoped import HookScope

log = logging.getLogger(__name__)


class SimpleModel(nn.Module):
    """The seed's hook example: ``Conv2d(1, 2, 3, padding=1) -> ReLU -> view(-1, 32) -> Linear(32, 10)``.

    Input ``(N, 1, 4, 4)``.
    """

    input_shape = (1, 4, 4)

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, kernel_size=3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(2 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        x = self.relu(x)
        x = x.view(-1, 2 * 4 * 4)
        return self.fc(x)


class SimpleCNN(nn.Module):
    """The seed's CIFAR-10 CNN: three conv/ReLU/max-pool blocks (3→32→64→128), fc 2048→512→10.

    Input ``(N, 3, 32, 32)``. ReLU is functional, exactly as in the seed, so the conv3 output a
    forward hook sees is the pre-ReLU activation the seed's Grad-CAM uses.
    """

    input_shape = (3, 32, 32)

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3, padding=1)
        self.conv3 = nn.Conv2d(64, 128, kernel_size=3, padding=1)
        self.pool = nn.MaxPool2d(2, 2)
        self.fc1 = nn.Linear(128 * 4 * 4, 512)
        self.fc2 = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = self.pool(F.relu(self.conv3(x)))
        x = x.view(-1, 128 * 4 * 4)
        x = F.relu(self.fc1(x))
        return self.fc2(x)


def seed_model(seed: int = 42) -> SimpleModel:
    """SimpleModel built right after ``torch.manual_seed(seed)``, as in the seed."""
    torch.manual_seed(seed)
    return SimpleModel()


def input_shape(model: nn.Module) -> tuple[int, ...]:
    """(C, H, W) the model expects, when it declares one."""
    shape = getattr(model, "input_shape", None)
    return tuple(shape) if shape else (3, 224, 224)


# --------------------------------------------------------------------------------------------
# The full zoo: seed models plus torchvision architectures (random weights unless given).
# --------------------------------------------------------------------------------------------

#: Torchvision architectures the zoo offers; built with ``weights=None`` (never downloads).
TORCHVISION_MODELS = ("resnet18", "resnet50", "vgg11_bn", "mobilenet_v3_small", "densenet121",
                      "efficientnet_b0", "vit_b_16", "swin_t")
#: The zoo's models trained by hooklab on 32×32 inputs (``weights="shapes"`` loads the shipped set).
SMALL_MODELS = ("simple_cnn", "simple_vit")
#: Every name :func:`get_model` accepts.
MODEL_NAMES = ("simple_model", *SMALL_MODELS, *TORCHVISION_MODELS)
registry.reserve(MODEL_NAMES)  # a registered model cannot shadow a zoo name

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
#: ``weights=`` words naming a shipped default (:mod:`hooklab.models.defaults`) per model.
SHIPPED_WEIGHTS = {("simple_cnn", "shapes"): "simple_cnn_shapes",
                   ("simple_vit", "shapes"): "simple_vit_shapes"}
#: Keywords for ``weights=`` meaning "torchvision's own ImageNet weights, from the local hub cache".
HUB_WEIGHT_WORDS = ("imagenet", "default", "pretrained", "torchvision")


@dataclass(frozen=True)
class ModelInfo:
    """What a caller needs to feed a zoo model and read its output.

    Attributes:
        name: zoo name.
        input_shape: ``(C, H, W)`` of one input.
        mean, std: per-channel normalisation after scaling pixels to [0, 1].
        class_names: one name per output logit (as in the weights' training data).
        weights: where the weights came from: ``"random(seed=0)"``, a file path, ``"hub:<file>"``.
        cam_layer: the Grad-CAM target a registered model names (``None``: automatic).
        description: one line about the model (registered models).
    """

    name: str
    input_shape: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]
    weights: str = "random"
    cam_layer: str | None = None
    description: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def all_model_names() -> tuple[str, ...]:
    """The zoo's names, then every registered model's (:mod:`hooklab.models.registry`)."""
    return (*MODEL_NAMES, *(r.name for r in registry.registered()))


def _norm_name(name: str) -> str:
    key = registry.normalise_name(name)
    if key in MODEL_NAMES or registry.entry(key) is not None:
        return key
    own = [r.name for r in registry.registered()]
    close = difflib.get_close_matches(key, [*own, *MODEL_NAMES], n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    known = f"registered: {', '.join(own)}; zoo: " if own else "registered: none; zoo: "
    failed = "".join(f" ({err})" for err in registry.load_errors())
    raise UnknownModelError(f"unknown model {name!r}.{hint} Known models: {known}"
                            f"{', '.join(MODEL_NAMES)}.{failed}")


class UnknownModelError(HooklabError, ValueError):
    """A model name that is not in the zoo."""


def _imagenet_classes(name: str) -> tuple[str, ...]:
    from torchvision.models import get_model_weights

    return tuple(get_model_weights(name).DEFAULT.meta["categories"])


def model_info(name: str, num_classes: int | None = None) -> ModelInfo:
    """Input shape, normalisation and class names of a zoo model (no model is built).

    Example:
        >>> model_info("simple_cnn").mean
        (0.5, 0.5, 0.5)
    """
    key = _norm_name(name)
    item = registry.entry(key)
    if item is not None:
        return _registered_info(item, item.class_names or (), num_classes)
    if key == "simple_model":
        classes: tuple[str, ...] = tuple(str(i) for i in range(10))
        info = ModelInfo(key, SimpleModel.input_shape, (0.0,), (1.0,), classes)
    elif key == "simple_cnn":
        info = ModelInfo(key, SimpleCNN.input_shape, SEED_MEAN, SEED_STD, CIFAR10_CLASSES)
    elif key == "simple_vit":
        info = ModelInfo(key, (3, IMAGE_SIZE, IMAGE_SIZE), SEED_MEAN, SEED_STD, CIFAR10_CLASSES)
    else:
        info = ModelInfo(key, (3, 224, 224), IMAGENET_MEAN, IMAGENET_STD, _imagenet_classes(key))
    if num_classes is not None and num_classes != info.num_classes:
        info = replace(info, class_names=tuple(f"class_{i}" for i in range(num_classes)))
    return info


def _registered_info(item: registry.RegisteredModel, classes: tuple[str, ...],
                     num_classes: int | None = None) -> ModelInfo:
    info = ModelInfo(item.name, item.input_shape, item.mean, item.std, tuple(classes),
                     item.weights or "random", item.cam_layer, item.description)
    if num_classes is not None and num_classes != info.num_classes:
        info = replace(info, class_names=tuple(f"class_{i}" for i in range(num_classes)))
    return info


def _registered_model(item: registry.RegisteredModel, seed: int | None, weights: Any,
                      num_classes: int | None) -> nn.Module:
    """Build a registered model: factory, weights (its own file unless told), checks, info."""
    if seed is not None:
        torch.manual_seed(seed)
    model = registry.build(item)
    try:
        attach(model, input_shape=item.input_shape)
    except AttributeError:  # the class defines input_shape as a read-only property
        log.debug("%s keeps its own input_shape property", item.name)
    random = isinstance(weights, str) and weights.lower() == "random"
    chosen = None if random else (item.weights if weights is None else weights)
    source = (_load_weights(item.name, model, chosen, False) if chosen is not None
              else f"random(seed={seed})")
    out = _probe_output(item, model)
    classes = item.class_names or tuple(f"class_{i}" for i in range(out))
    if num_classes is not None and num_classes != len(classes):
        raise HooklabError(f"registered model {item.name!r} has {len(classes)} outputs; "
                           f"num_classes={num_classes} cannot change that (register another)")
    if item.class_names is not None and out and out != len(classes):
        raise HooklabError(f"registered model {item.name!r} ({item.module}) gives {out} "
                           f"outputs but {len(classes)} class names are registered")
    if item.cam_layer is not None:
        try:
            resolve_layer(model, item.cam_layer)
        except HooklabError as exc:
            raise HooklabError(f"registered model {item.name!r} ({item.module}): cam_layer: "
                               f"{exc}") from exc
    attach(model, hooklab_info=replace(_registered_info(item, classes), weights=source))
    return model.eval()


def _probe_output(item: registry.RegisteredModel, model: nn.Module) -> int:
    """Logit count of ``model`` from one forward of a zero sample (0: not a (N, K) output)."""
    param = next(model.parameters(), None)
    x = torch.zeros((1, *item.input_shape), dtype=param.dtype if param is not None else None)
    try:
        with eval_mode(model), torch.no_grad():
            out = _first_tensor(model(x))
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise HooklabError(f"registered model {item.name!r} ({item.module}) fails on its "
                           f"registered input_shape {item.input_shape} (a batch "
                           f"{tuple(x.shape)}): {first}") from exc
    return int(out.shape[-1]) if out is not None and out.dim() == 2 else 0


def _build(key: str, num_classes: int | None) -> nn.Module:
    if key == "simple_model":
        if num_classes not in (None, 10):
            raise HooklabError("simple_model has a fixed 10-way output (the seed's Linear(32, 10))")
        return SimpleModel()
    if key == "simple_cnn":
        return SimpleCNN(num_classes or 10)
    if key == "simple_vit":
        return SimpleViT(num_classes or 10)
    from torchvision.models import get_model as tv_get_model

    kwargs = {"num_classes": num_classes} if num_classes else {}
    model = tv_get_model(key, weights=None, **kwargs)
    if key == "vit_b_16":
        draw_head(model)  # torchvision's zero head: every gradient of a random ViT would be 0
    model.input_shape = (3, 224, 224)
    return model


def _hub_weights(key: str, spec: Any, allow_download: bool) -> tuple[dict[str, torch.Tensor], str]:
    """torchvision's own weights for ``key``: from the torch hub cache, or downloaded on opt-in."""
    from torchvision.models import WeightsEnum, get_model_weights

    if key not in TORCHVISION_MODELS:
        raise HooklabError(f"{key} has no torchvision weights; pass a .safetensors/.pt file"
                           + (" or weights='shapes'" if key in SMALL_MODELS else ""))
    enum = get_model_weights(key)
    if isinstance(spec, WeightsEnum):
        w = spec
    elif str(spec).lower() in HUB_WEIGHT_WORDS:
        w = enum.DEFAULT
    else:
        try:
            w = enum[str(spec).split(".")[-1]]
        except KeyError as exc:
            raise HooklabError(f"unknown weights {spec!r} for {key}; known: "
                               f"{', '.join(e.name for e in enum)}") from exc
    path = weights_mod.hub_checkpoint_path(w.url)
    if not path.is_file():
        if not allow_download:
            raise weights_mod.CheckpointError(
                f"torchvision weights {w} are not in the local cache (looked for {path}); "
                "nothing is downloaded by default. Put the file there, pass a weights file "
                "(weights='path/to/file.pth'), or opt in with allow_download=True.")
        log.info("downloading %s to %s (allow_download=True)", w.url, path)
        torch.hub.load_state_dict_from_url(w.url, progress=False, check_hash=True,
                                           weights_only=True)
    sd = weights_mod.load_state_dict(path)
    return weights_mod.remap_torchvision_keys(key, sd), f"hub:{path.name}"


def get_model(name: str, seed: int | None = 0, *, weights: Any = None,
              allow_download: bool = False, num_classes: int | None = None) -> nn.Module:
    """Build a zoo model by name, in eval mode.

    Args:
        name: one of :data:`MODEL_NAMES` or a registered model's name
            (:func:`hooklab.models.register`; ``-`` and case are ignored).
        seed: seed for the random initialisation (``None``: leave the global RNG alone).
        weights: ``None`` for random weights (a registered model: its registered weights file,
            if it has one); ``"random"`` for random weights in every case; a path to a ``.safetensors``/``.pt``/``.pth`` state
            dict (loaded safely, see :mod:`hooklab.models.weights`); a mapping (a state dict);
            ``"imagenet"`` (or a torchvision weights enum/name) for torchvision's own weights
            from the local torch hub cache; ``"shapes"`` for the SimpleCNN trained on the shapes
            data set (the shipped default, :func:`shipped_model`). The seed's own CIFAR-10
            training is :func:`hooklab.studies.train.seed_recipe_model` (it trains).
        allow_download: allow torchvision weights to be downloaded when not cached.
        num_classes: output size when it differs from the default (10 or 1000).

    The model carries ``model.hooklab_info`` (:class:`ModelInfo`).

    Example:
        >>> m = get_model("resnet18")                          # random weights, offline
        >>> m = get_model("simple_cnn", weights="cnn.safetensors")
    """
    key = _norm_name(name)
    item = registry.entry(key)
    if item is not None:
        return _registered_model(item, seed, weights, num_classes)
    if isinstance(weights, str) and (key, weights.lower()) in SHIPPED_WEIGHTS:
        # the shipped default: the same bytes on every machine
        return shipped_model(SHIPPED_WEIGHTS[key, weights.lower()])
    if isinstance(weights, str) and weights.lower() == "random":
        weights = None
    if seed is not None:
        torch.manual_seed(seed)
    model = _build(key, num_classes)
    info = model_info(key, num_classes)
    source = f"random(seed={seed})"
    if weights is not None:
        source = _load_weights(key, model, weights, allow_download)
    attach(model, hooklab_info=replace(info, weights=source))
    return model.eval()


def _load_weights(key: str, model: nn.Module, weights: Any, allow_download: bool) -> str:
    """Load ``weights`` (a state dict, a hub spec or a file, read safely) into ``model``;
    returns where they came from."""
    if isinstance(weights, Mapping):
        sd, source = weights_mod.unwrap_state_dict(weights, "state dict"), "state dict"
    elif _is_hub_spec(weights):
        sd, source = _hub_weights(key, weights, allow_download)
    elif isinstance(weights, (str, os.PathLike)):
        sd, source = weights_mod.load_state_dict(weights), str(weights)
    else:
        raise TypeError(f"weights must be None, a path, a state dict or 'imagenet', "
                        f"got {type(weights).__name__}")
    weights_mod.apply_state_dict(model, sd, source=f"weights from {source}")
    return source


def attach(model: nn.Module, **attrs: Any) -> None:
    """Attach hooklab's plain-data attributes (``hooklab_info``, ``hooklab_train``) to a model.

    ``nn.Module.__setattr__`` is typed for tensors and modules only; plain values are stored as
    ordinary attributes all the same.
    """
    for name, value in attrs.items():
        setattr(model, name, value)


def trained_info(name: str, classes: tuple[str, ...], weights: str) -> ModelInfo:
    """The :class:`ModelInfo` of a zoo model trained by hooklab on 32×32 images with the seed's
    transform (the shipped defaults and :mod:`hooklab.studies.train`'s models)."""
    return replace(model_info(name, num_classes=len(classes)),
                   input_shape=(3, IMAGE_SIZE, IMAGE_SIZE), mean=SEED_MEAN, std=SEED_STD,
                   class_names=tuple(classes), weights=weights)


def shipped_model(name: str) -> nn.Module:
    """The shipped default ``name`` (:mod:`hooklab.models.defaults`), sha256-checked, in eval mode.

    ``model.hooklab_info.weights`` reads ``shipped(<data>, <key>)``; ``model.hooklab_train``
    holds the manifest's record (config, key, test accuracy, sha256, machine, torch).

    Raises:
        DefaultWeightsError: no such entry, or the file's bytes are not the recorded ones.
    """
    entry = defaults.entry_named(name)
    config = entry["config"]
    classes = CIFAR10_CLASSES if config["data"] == "cifar10" else SHAPE_CLASSES
    model = _build(_norm_name(config["model"]), len(classes))
    path = defaults.entry_path(entry)
    weights_mod.apply_state_dict(model, defaults.load_entry(entry), f"shipped default {path}")
    attach(model, hooklab_info=trained_info(config["model"], classes,
                                            f"shipped({config['data']}, {entry['key']})"))
    attach(model, hooklab_train={
        "config": config, "key": entry["key"], "test_accuracy": entry["test_accuracy"],
        "classes": list(classes), "shipped": str(path), "name": entry["name"],
        "sha256": entry["sha256"], "machine": entry.get("machine"), "torch": entry.get("torch"),
        "cached": None})
    log.info("loaded the shipped default %s (sha256 %s…)", entry["name"], entry["sha256"][:12])
    return model.eval()


def _is_hub_spec(weights: Any) -> bool:
    try:
        from torchvision.models import WeightsEnum
    except ImportError:  # pragma: no cover
        return False
    if isinstance(weights, WeightsEnum):
        return True
    if not isinstance(weights, str) or os.path.exists(weights):
        return False
    w = weights.lower()
    return w in HUB_WEIGHT_WORDS or w.split(".")[-1].startswith("imagenet1k")


# --------------------------------------------------------------------------------------------
# Layer listing and the automatic Grad-CAM target.
# --------------------------------------------------------------------------------------------

LAYER_COLUMNS = ("name", "type", "output_shape", "params", "leaf", "calls", "spatial")


def _first_tensor(out: Any) -> torch.Tensor | None:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        return next((t for t in map(_first_tensor, out) if t is not None), None)
    if isinstance(out, Mapping):
        return next((t for t in map(_first_tensor, out.values()) if t is not None), None)
    return None


def _dry_run(model: nn.Module, shape: tuple[int, ...] | None) -> tuple[dict[str, dict], list[str]]:
    """One forward of a zero batch of 1 under no_grad; returns per-module call records."""
    shape = tuple(shape) if shape else input_shape(model)
    param = next(model.parameters(), None)
    x = torch.zeros((1, *shape), dtype=param.dtype if param is not None else torch.float32,
                    device=param.device if param is not None else "cpu")
    rec: dict[str, dict] = {}
    clock = [0]
    me = threading.get_ident()

    def make_hook(name: str):
        def hook(_m: nn.Module, _inp: Any, out: Any) -> None:
            if threading.get_ident() != me:  # another thread's forward on a shared model
                return
            clock[0] += 1
            t = _first_tensor(out)
            r = rec.setdefault(name, {"calls": 0, "shape": None})
            r["calls"] += 1
            r["end"] = clock[0]
            if r["shape"] is None and t is not None:
                r["shape"] = tuple(t.shape)
        return hook

    names = [n for n, _ in model.named_modules() if n]
    try:
        with HookScope() as hooks:
            for name, m in model.named_modules():
                if name:
                    hooks.forward(m, make_hook(name))
            with eval_mode(model), torch.no_grad():
                model(x)
    except Exception as exc:
        raise HooklabError(f"a dry forward of {type(model).__name__} with input {tuple(x.shape)} "
                           f"failed: {exc}") from exc
    return rec, names


def _is_spatial(shape: tuple[int, ...] | None) -> bool:
    return shape is not None and len(shape) == 4 and shape[2] > 1 and shape[3] > 1


def list_layers(model: nn.Module, input_shape: tuple[int, ...] | None = None) -> pd.DataFrame:
    """Every named module with its type, output shape and parameter count, from one dry forward.

    The forward runs on a zero batch of one under ``torch.no_grad()`` in eval mode; its hooks are
    removed and the modules' ``training`` flags restored in ``finally``. The hooks ignore other
    threads' forwards, but the eval switch is visible to them: hold the model's lock when it is
    shared.

    Returns:
        DataFrame with columns :data:`LAYER_COLUMNS`: ``output_shape`` is the first output
        tensor's shape with batch 1 (``None`` if the module never ran), ``params`` counts the
        module's parameters including its children, ``calls`` how often it ran, ``spatial``
        whether the output is ``(N, C, H, W)`` with ``H, W > 1``.

    Example:
        >>> list_layers(SimpleCNN()).query("name == 'conv3'").output_shape.item()
        (1, 128, 8, 8)
    """
    rec, names = _dry_run(model, input_shape)
    mods = dict(model.named_modules())
    rows = []
    for n in names:
        m, r = mods[n], rec.get(n, {"calls": 0, "shape": None})
        rows.append({"name": n, "type": type(m).__name__, "output_shape": r["shape"],
                     "params": sum(p.numel() for p in m.parameters()),
                     "leaf": next(m.children(), None) is None, "calls": r["calls"],
                     "spatial": _is_spatial(r["shape"])})
    return pd.DataFrame(rows, columns=list(LAYER_COLUMNS))


def auto_target_layer(model: nn.Module, input_shape: tuple[int, ...] | None = None) -> str:
    """Name of the layer Grad-CAM users expect: the last module with a spatial output.

    "Last" is by the time the module's forward ends, so a block that wraps the final
    convolutions wins over its children (ResNet: ``layer4``; VGG/MobileNet/DenseNet/EfficientNet:
    ``features``; the seed's SimpleCNN: ``conv3``). Parameter-free modules (pooling, ReLU) and
    modules called more than once (a shared pool) are skipped unless nothing else qualifies.
    A registered model that names its ``cam_layer`` (``model.hooklab_info.cam_layer``) gets it.

    Transformers: a model with attention modules and token outputs ``(B, T, D)`` gets the first
    norm of its last encoder block (torchvision's ViT: ``encoder.layers.encoder_layer_11.ln_1``),
    as pytorch-grad-cam's documentation recommends: the head reads only the class token, so the
    last block's *output* patch tokens get no gradient, while the last attention's input still
    mixes every patch into the class token (:func:`hooklab.models.tokens.token_target_layer`).
    Channel-last maps ``(B, H, W, C)`` count as spatial, so torchvision's Swin gets the last
    stage's norm (``norm``, before the permute and the pooling).

    Raises:
        NonSpatialLayerError: no module produces an ``(N, C, H, W)`` output with ``H, W > 1``.
    """
    named = getattr(getattr(model, "hooklab_info", None), "cam_layer", None)
    if named and named in dict(model.named_modules()):
        return str(named)
    from hooklab.models.tokens import token_target_layer

    rec, names = _dry_run(model, input_shape)
    mods = dict(model.named_modules())
    shape = input_shape or getattr(model, "input_shape", None) or (3, 224, 224)
    vit = (token_target_layer(model, rec, names, (int(shape[-2]), int(shape[-1])))
           if len(shape) >= 3 else None)  # a non-image input (a vector) has no token grid
    if vit is not None:
        return vit
    spatial = [n for n in names if n in rec and _is_spatial(rec[n]["shape"])]
    preferred = [n for n in spatial if rec[n]["calls"] == 1
                 and any(True for _ in mods[n].parameters())]
    pool = preferred or spatial
    if not pool:
        raise NonSpatialLayerError(
            f"{type(model).__name__} has no layer with a spatial (N, C, H, W) output; "
            "CAM methods need a convolutional layer")
    return max(pool, key=lambda n: rec[n]["end"])


def cam_layers(model: nn.Module, input_shape: tuple[int, ...] | None = None) -> list[str]:
    """Every layer a CAM can use, in model order, from one dry forward: each layer whose output
    :func:`hooklab.models.tokens.infer_layout` reads as a map — a spatial ``(N, C, H, W)`` or
    channel-last output, or a token output ``(B, T, D)`` that is a grid of patches (a ViT's
    blocks, norms and MLPs; for tokens only modules with parameters, and not attention
    modules, whose output is a tuple).

    Example:
        >>> [n for n in cam_layers(SimpleViT(6)) if n.endswith("ln_1")][:2]
        ['encoder.layers.encoder_layer_0.ln_1', 'encoder.layers.encoder_layer_1.ln_1']
    """
    from hooklab.models.tokens import TokenLayoutError, infer_layout, patch_size

    table = list_layers(model, input_shape)
    shape = input_shape or getattr(model, "input_shape", None) or (3, 224, 224)
    hw = (int(shape[-2]), int(shape[-1])) if len(shape) >= 3 else None
    patch = patch_size(model)
    out = []
    for name, out_shape, params in zip(table["name"], table["output_shape"], table["params"],
                                       strict=True):
        if out_shape is None or len(out_shape) not in (3, 4):
            continue
        module = model.get_submodule(name)
        if len(out_shape) == 3 and (hw is None or not params
                                    or isinstance(module, nn.MultiheadAttention)):
            continue
        try:
            infer_layout(out_shape, hw, patch, module=module, name=name)
        except TokenLayoutError:
            continue
        out.append(str(name))
    return out
