"""Shared dashboard controls: model, input, layer, hook-kind and edit pickers.

(Open / save / share a run: :mod:`dashboard.components.run_flow`.)

Pages import these so every page offers the same choices. Signatures are stable:

* :func:`model_picker` ``(key, default=None, *, seed_recipe=False) -> ModelChoice`` — zoo or
  registered model (:mod:`hooklab.models.registry`, ``$HOOKLAB_MODELS``) + weights (random,
  trained on shapes, a registered model's own file, an uploaded file, or with ``seed_recipe`` and
  a local CIFAR-10 copy the seed's own CIFAR-10 training); cached across sessions with a lock.
* :func:`load_model` ``(spec) -> ModelChoice`` — the same without UI (reopening a run).
* :func:`input_picker` ``(key, model, default=None) -> InputChoice`` — shapes sample, CIFAR-10
  sample (when a local copy exists), uploaded image, random, the seed's input.
* :func:`make_input` ``(spec, model, upload=None) -> InputChoice`` — the same without UI.
* :func:`default_edit` ``(model) -> str`` — an example edit line for the model's layers.
* :func:`layer_picker` ``(key, model, default=None, label=None) -> list[str] | None`` — a
  ``layers=`` argument for :func:`hooklab.record` (``None`` = every leaf module).
* :func:`hook_kind_picker` ``(key, default=()) -> list[str]`` — extra PyTorch hook kinds.
* :func:`edit_picker` ``(key, default="", label=None, placeholder=None) -> str`` — edit
  lines ``LAYER=EDIT``; parse with :func:`hooklab.studies.compare.normalise_config` inside
  ``state.guard()``.

Every label goes through :func:`dashboard.i18n.t`. Errors raised while loading are hooklab
errors; call the pickers inside ``state.guard()`` where a bad upload must become one st.error.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import streamlit as st
import torch
import torch.nn.functional as F
from torch import nn

from dashboard import state
from dashboard.components.text import plain
from dashboard.i18n import lang, t
from hooklab.core.errors import DataError, HooklabError
from hooklab.core.hooks import HOOK_KIND_HELP, HOOK_KINDS
from hooklab.data import datasets as datalib
from hooklab.models import inputs, registry, zoo
from hooklab.studies import train

log = logging.getLogger(__name__)

MODEL_NAMES_SHOWN = ("simple_cnn", "simple_vit", "simple_model", "resnet18", "mobilenet_v3_small",
                     "vgg11_bn", "resnet50", "densenet121", "efficientnet_b0", "vit_b_16",
                     "swin_t")
WEIGHT_SOURCES = ("auto", "random", "shapes", "upload")
#: The seed's SimpleCNN trained by the seed's own recipe on a local CIFAR-10 copy.
SEED_RECIPE = "cifar10-seed"
#: A registered model's own weights file (``register(..., weights=...)``).
REGISTERED = "registered"
INPUT_SOURCES = ("shapes", "cifar10", "upload", "random", "seed")


# ----------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------
@dataclass
class ModelChoice:
    """A model ready to run, shared between sessions (hold :attr:`lock` while hooking it).

    Attributes:
        name: zoo name (``"simple_cnn"``).
        weights: ``"random"``, ``"shapes"`` (trained on the shapes set), ``"cifar10-seed"``
            (:data:`SEED_RECIPE`), ``"registered"`` (a registered model's own file,
            :data:`REGISTERED`) or ``"upload:<sha12>"``.
        model: the cached module (eval mode).
        input_shape: ``(C, H, W)`` it expects.
        class_names: one per logit.
        spec: JSON-ready ``{"name", "weights"}`` to rebuild it (:func:`load_model`).
    """

    name: str
    weights: str
    model: nn.Module
    input_shape: tuple[int, ...]
    class_names: tuple[str, ...]
    spec: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.name}|{self.weights}"

    @property
    def lock(self):
        """The lock of this cached model (``state.model_lock``)."""
        return state.model_lock(self.key)

    @property
    def label(self) -> str:
        return f"{self.name} ({self.weights})"


@st.cache_resource(show_spinner=False, max_entries=8)
def _cached_model(name: str, weights: str, _blob: bytes | None = None) -> nn.Module:
    if weights == "shapes":
        return zoo.get_model(name, weights="shapes")
    if weights.startswith("upload:"):
        if _blob is None:
            raise HooklabError("the uploaded weights are not available any more; upload again")
        suffix = ".safetensors" if _blob[:8] != b"PK\x03\x04" and _blob[8:9] == b"{" else ".pt"
        with tempfile.NamedTemporaryFile(suffix=suffix, delete=False) as f:
            f.write(_blob)
            path = f.name
        try:
            return zoo.get_model(name, weights=path)
        finally:
            os.unlink(path)
    if weights == REGISTERED:
        return zoo.get_model(name)  # the registered file, read safely
    return zoo.get_model(name, weights="random")


@st.cache_resource(show_spinner=False)
def _seed_recipe_slot(cifar_root: str) -> dict[str, nn.Module]:
    """Where the seed-recipe model is kept once trained (shared by sessions, per CIFAR-10 root).

    Training runs outside ``st.cache_resource`` so that its progress can be drawn.
    """
    return {}


def _slot() -> dict[str, nn.Module]:
    return _seed_recipe_slot(os.environ.get(datalib.CIFAR10_ENV, ""))


def seed_recipe_ready() -> bool:
    """True when the seed-recipe model is already in memory (no training to show)."""
    return "model" in _slot()


def _seed_recipe_model(name: str, progress: Any = None) -> nn.Module:
    """The seed's SimpleCNN trained on the local CIFAR-10 (trained once, cached on disk too).

    Raises:
        DataError: no local CIFAR-10 copy (training split included).
    """
    if name != "simple_cnn":
        raise HooklabError(f"the seed's CIFAR-10 recipe trains the SimpleCNN, not {name}")
    slot = _slot()
    with state.model_lock(f"{name}|{SEED_RECIPE}"):
        if "model" not in slot:
            slot["model"] = train.trained_model(train.seed_recipe_config(),
                                                progress=progress).eval()
    return slot["model"]


def _class_names(model: nn.Module, name: str) -> tuple[str, ...]:
    info = getattr(model, "hooklab_info", None)
    names = tuple(getattr(info, "class_names", ()) or ())
    if not names and name in zoo.SMALL_MODELS:
        names = _cifar_names()
    return names


def _cifar_names() -> tuple[str, ...]:
    return datalib.CIFAR10_CLASSES_ZH if lang() == "zh" else datalib.CIFAR10_CLASSES


def default_weights(name: str) -> str:
    """``"shapes"`` (trained on the shapes set, the shipped weights) for the SimpleCNN and the
    SimpleViT, ``"registered"`` for a registered model with a weights file, else ``"random"``."""
    if name in zoo.SMALL_MODELS:
        return "shapes"
    item = registry.entry(name)
    return REGISTERED if item is not None and item.weights else "random"


def model_names() -> list[str]:
    """The picker's models: the zoo's, then the registered ones (``$HOOKLAB_MODELS``, entry
    points; imported once per process by :func:`dashboard.state.model_module_errors`)."""
    state.model_module_errors()
    return [*MODEL_NAMES_SHOWN, *(r.name for r in registry.registered())]


def model_label(name: str) -> str:
    """A picker label: the name, and for a registered model its description (or module)."""
    item = registry.entry(name) if name not in MODEL_NAMES_SHOWN else None
    if item is None:
        return name
    return f"{name} — {item.description or item.module}"


def load_model(spec: dict[str, Any] | None = None, blob: bytes | None = None,
               progress: Any = None) -> ModelChoice:
    """A cached model from ``{"name": ..., "weights": "auto"|"random"|"shapes"|"cifar10-seed"|
    "registered"|"upload:<sha>"}``.

    ``blob``: the uploaded checkpoint bytes for ``"upload:..."`` weights. ``progress``:
    ``(step, total, info)`` callback while the seed-recipe model trains (first use only).
    """
    spec = dict(spec or {})
    name = str(spec.get("name") or "simple_cnn")
    weights = str(spec.get("weights") or "auto")
    if weights == "auto":
        weights = default_weights(name)
    model = (_seed_recipe_model(name, progress) if weights == SEED_RECIPE
             else _cached_model(name, weights, blob))
    info = getattr(model, "hooklab_info", None)
    shape = tuple(getattr(info, "input_shape", ()) or zoo.input_shape(model))
    return ModelChoice(name, weights, model, shape, _class_names(model, name),
                       {"name": name, "weights": weights})


def model_picker(key: str, default: dict[str, Any] | None = None, *,
                 seed_recipe: bool = False) -> ModelChoice:
    """Model selectbox, weights radio (auto / random / trained on shapes / upload).

    Args:
        key: widget key prefix (unique per page).
        default: a :attr:`ModelChoice.spec` to preselect (e.g. from a reopened run).
        seed_recipe: also offer "seed recipe (CIFAR-10)" for the SimpleCNN when a local CIFAR-10
            copy exists; its first use trains inside ``st.status`` with a progress bar.

    Raises (inside ``state.guard()``): WeightsMismatchError, UnsafeCheckpointError, ...
    """
    default = default or {}
    state.show_model_module_errors()
    names = model_names()
    name0 = default.get("name", "simple_cnn")
    if name0 not in names:
        shown = plain(repr(name0))  # from a run's settings: shown as text
        st.warning(t(f"Model {shown} is not available on this server (a registered model: "
                     "start the server with its module in HOOKLAB_MODELS); showing the default.",
                     f"此服务器上没有模型 {shown}（注册的模型：启动服务器时在 HOOKLAB_MODELS "
                     "中给出其模块）；显示默认模型。"))
    name = st.selectbox(t("Model", "模型"), names, index=names.index(name0) if name0 in names
                        else 0, format_func=model_label, key=f"{key}_model")
    labels = {"auto": t("default", "默认"), "random": t("random", "随机"),
              "shapes": t("trained on shapes", "在 shapes 上训练"),
              "upload": t("upload weights", "上传权重"),
              SEED_RECIPE: t("seed recipe (CIFAR-10)", "课程配方（CIFAR-10）")}
    options = [w for w in WEIGHT_SOURCES if w != "shapes" or name in zoo.SMALL_MODELS]
    if seed_recipe and name == "simple_cnn" and cifar_available():
        options.insert(options.index("upload"), SEED_RECIPE)
    w0 = str(default.get("weights", "auto")).split(":")[0]
    src = st.radio(t("Weights", "权重"), options, index=options.index(w0) if w0 in options
                   else 0, format_func=labels.get, horizontal=True, key=f"{key}_weights")
    blob = None
    weights = src
    if src == "auto" and default_weights(name) == REGISTERED:
        # (a caption, not another radio label: relabelling the checked option unchecks it)
        file = os.path.basename(str(getattr(registry.entry(name), "weights", "")))
        st.caption(t(f"Default: its registered weights file {file}.",
                     f"默认：其注册的权重文件 {file}。"))
    if src == "upload":
        up = st.file_uploader(t("Weights file (.safetensors, .pt, .pth)",
                                "权重文件 (.safetensors, .pt, .pth)"),
                              type=["safetensors", "pt", "pth", "bin"], key=f"{key}_wfile")
        if up is None:
            st.caption(t("No file yet: random weights.", "尚未上传：使用随机权重。"))
            weights = "random"
        else:
            blob = up.getvalue()
            weights = "upload:" + hashlib.sha256(blob).hexdigest()[:12]
    if weights == SEED_RECIPE and not seed_recipe_ready():
        return _train_seed_recipe(name)
    with st.spinner(t("Loading model…", "加载模型…")):
        return load_model({"name": name, "weights": weights}, blob)


def _train_seed_recipe(name: str) -> ModelChoice:
    """First use of the seed-recipe model: train (or read the disk cache) with progress."""
    with st.status(t("Training the seed's SimpleCNN on the local CIFAR-10 (one epoch, Adam, "
                     "batch 64; once, then cached)…",
                     "在本地 CIFAR-10 上按课程配方训练 SimpleCNN（1 个 epoch，Adam，batch 64；"
                     "只训练一次，之后使用缓存）…"), expanded=True) as status:
        bar = st.progress(0.0)

        def progress(step: int, total: int, info: dict[str, float]) -> None:
            loss = info.get("loss")
            bar.progress(min(1.0, step / max(total, 1)),
                         text=f"{step}/{total}" + (f" · loss {loss:.3f}" if loss is not None
                                                   else ""))

        choice = load_model({"name": name, "weights": SEED_RECIPE}, progress=progress)
        acc = (getattr(choice.model, "hooklab_train", None) or {}).get("test_accuracy")
        done = t("Seed-recipe SimpleCNN ready", "课程配方 SimpleCNN 已就绪")
        if acc is not None:
            done += t(f" (CIFAR-10 test accuracy {acc:.1%})", f"（CIFAR-10 测试准确率 {acc:.1%}）")
        status.update(label=done, state="complete", expanded=False)
    return choice


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------
@dataclass
class InputChoice:
    """One model input.

    Attributes:
        x: ``(1, C, H, W)`` float32, normalised, fitted to the model's input shape.
        label: the true class when known, else ``None``.
        label_name: its name ("" when unknown).
        display: ``(H, W, 3)`` float32 in [0, 1] for showing, or ``None``.
        spec: JSON-ready description (``{"source": "shapes", "index": 102}``...).
        mask: ``(H, W)`` bool object mask (shapes samples), else ``None``.
    """

    x: torch.Tensor
    label: int | None
    label_name: str
    display: np.ndarray | None
    spec: dict[str, Any]
    mask: np.ndarray | None = None
    text: str = ""  # the image pipeline's description ("shapes test #102"), when it made it

    @property
    def description(self) -> str:
        if self.text:
            return self.text
        s = self.spec
        src = s.get("source", "?")
        detail = s.get("index", s.get("seed", s.get("name", "")))
        extra = f" — {self.label_name}" if self.label_name else ""
        return f"{src} {detail}{extra}".strip()


def fit_input(x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Resize a ``(1, C, H, W)`` input to ``shape`` ``(C, H, W)`` (bilinear; grey <-> RGB)."""
    c, h, w = shape[-3:] if len(shape) >= 3 else (shape[0], 1, 1)
    if x.shape[1] != c:
        x = x.mean(dim=1, keepdim=True) if c == 1 else x[:, :1].expand(-1, c, -1, -1)
    if tuple(x.shape[-2:]) != (h, w):
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    return x.contiguous()


def _display(x: torch.Tensor) -> np.ndarray:
    img = datalib.denormalise(x[0]).permute(1, 2, 0).numpy().astype(np.float32)
    return np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img


@st.cache_data(show_spinner=False, ttl=300)
def cifar_available() -> bool:
    """True when a local CIFAR-10 copy exists (checked at most every 5 minutes)."""
    try:
        cifar_test()
        return True
    except DataError:
        return False
    except Exception:  # noqa: BLE001 - a malformed copy counts as absent here
        log.exception("CIFAR-10 copy unusable")
        return False


@st.cache_resource(show_spinner=False)
def cifar_test():
    """The local CIFAR-10 test split (read once per server; DataError when there is none)."""
    return datalib.cifar10(train=False)


def model_info(choice: ModelChoice) -> zoo.ModelInfo:
    """Normalisation and class names of a picked model (shapes classes for the trained CNN)."""
    info = getattr(choice.model, "hooklab_info", None) or zoo.model_info(choice.name)
    if choice.weights == "shapes" and tuple(info.class_names) != tuple(datalib.SHAPE_CLASSES):
        info = replace(info, class_names=tuple(datalib.SHAPE_CLASSES), weights="shapes")
    return replace(info, input_shape=tuple(choice.input_shape))


def make_input(spec: dict[str, Any], model: ModelChoice, upload: bytes | None = None
               ) -> InputChoice:
    """Build an input from its spec (no UI). Raises DataError / ImageError on bad input.

    Images (shapes sample, CIFAR-10 test sample, upload, random pixels) come from
    :mod:`hooklab.models.inputs`, the one image pipeline (fitted to the model, normalised with
    its mean/std) that the Grad-CAM page uses too; the seed's input is a standard-normal tensor.
    """
    source = spec.get("source", "shapes")
    shape = tuple(model.input_shape)
    if source in ("shapes", "cifar10", "upload", "random"):
        if not image_like(shape):
            raise DataError(f"{model.name} takes inputs of shape {shape}, not images: choose "
                            "the random normal tensor")
        info = model_info(model)
        if source == "shapes":
            sample = inputs.shapes_input(int(spec.get("index", 102)), info)
        elif source == "cifar10":
            sample = inputs.cifar_input(cifar_test(), int(spec.get("index", 102)), info)
        elif source == "random":
            sample = inputs.random_input(int(spec.get("seed", 0)), info)
        else:
            if upload is None:
                raise DataError("no image uploaded yet")
            sample = inputs.upload_input(upload, str(spec.get("name", "upload")), info)
        names = inputs.class_names(info.class_names, lang())
        label = sample.label
        name = names[label] if label is not None and 0 <= label < len(names) else ""
        return InputChoice(sample.x, label, name, sample.image, dict(spec), sample.mask,
                           sample.description)
    # the seed's input: a standard-normal tensor of the model's input shape
    g = torch.Generator().manual_seed(int(spec.get("seed", 42)))
    x = torch.randn(1, *shape, generator=g)
    if not image_like(shape):  # a registered model's non-image input (a vector, a sequence...)
        return InputChoice(x, None, "", None, dict(spec), text=f"randn{tuple(x.shape)} "
                                                             f"seed={int(spec.get('seed', 42))}")
    x = fit_input(x, shape)
    return InputChoice(x, None, "", _display(x), dict(spec))


def image_like(shape: tuple[int, ...]) -> bool:
    """True for ``(C, H, W)`` with 1 or 3 channels: images (shapes, CIFAR-10, uploads) fit it."""
    return len(shape) == 3 and shape[0] in (1, 3)


def input_picker(key: str, model: ModelChoice, default: dict[str, Any] | None = None
                 ) -> InputChoice:
    """Input source radio and its parameter (index, seed or upload).

    The seed's SimpleModel (1×4×4 input) defaults to the seed's input; the others to shapes
    sample 102 (the seed's test index). CIFAR-10 is offered only when a local copy exists.
    """
    default = default or {}
    grey_small = tuple(model.input_shape) == (1, 4, 4)
    sources = ["seed", "random", "upload"] if grey_small else \
        ["shapes", *(["cifar10"] if cifar_available() else []), "upload", "random"]
    labels = {"shapes": t("shapes sample", "shapes 样本"), "cifar10": t("CIFAR-10 sample",
                                                                         "CIFAR-10 样本"),
              "upload": t("upload an image", "上传图片"), "random": t("random", "随机"),
              "seed": t("the seed's input", "课程中的输入")}
    if not image_like(tuple(model.input_shape)):  # no image fits: a seeded normal tensor
        sources = ["seed"]
        labels["seed"] = t(f"random normal tensor {tuple(model.input_shape)}",
                           f"随机正态张量 {tuple(model.input_shape)}")
    s0 = default.get("source", sources[0])
    source = st.radio(t("Input", "输入"), sources, index=sources.index(s0) if s0 in sources
                      else 0, format_func=labels.get, horizontal=True, key=f"{key}_source")
    spec: dict[str, Any] = {"source": source}
    upload = None
    if source in ("shapes", "cifar10"):
        spec["index"] = int(st.number_input(t("Sample index", "样本编号"), min_value=0,
                                            max_value=9999, value=int(default.get("index", 102)),
                                            key=f"{key}_index"))
    elif source in ("random", "seed"):
        spec["seed"] = int(st.number_input(t("Random seed", "随机种子"), min_value=0,
                                           value=int(default.get("seed", 42 if source == "seed"
                                                                 else 0)),
                                           key=f"{key}_seed"))
    else:
        up = st.file_uploader(t("Image", "图片"), key=f"{key}_image")
        if up is not None:
            upload = up.getvalue()
            spec["name"] = up.name
            spec["sha256"] = hashlib.sha256(upload).hexdigest()[:12]
    if source == "upload" and upload is None:
        st.caption(t("No image yet: a random input is used.", "尚未上传：使用随机输入。"))
        return make_input({"source": "random", "seed": 0}, model)
    return make_input(spec, model, upload)


# ----------------------------------------------------------------------------------------------
# Layers, hook kinds, edits
# ----------------------------------------------------------------------------------------------
@st.cache_data(show_spinner=False, max_entries=32)
def _layer_options(_model: nn.Module, key: str) -> list[tuple[str, str]]:
    return [(n, type(m).__name__) for n, m in _model.named_modules() if n]


def layer_picker(key: str, model: ModelChoice, default: Any = None, label: str | None = None
                 ) -> list[str] | None:
    """Searchable multiselect of module names plus a free-text field (name, glob or type).

    Returns:
        A ``layers=`` value for :func:`hooklab.record`: ``None`` (nothing chosen: every leaf
        module) or a list of names/globs/types. Unknown entries raise LayerNotFoundError when
        recording (inside ``state.guard()``).
    """
    options = _layer_options(model.model, model.key)
    types = dict(options)
    names = [n for n, _ in options]
    chosen0 = [d for d in (default or []) if d in types] if isinstance(default, list) else []
    free0 = ", ".join(d for d in (default or []) if d not in types) if isinstance(default, list) \
        else (default or "")
    picked = st.multiselect(label or t("Layers (empty: every leaf module)",
                                       "层（留空：所有叶子模块）"), names, default=chosen0,
                            format_func=lambda n: f"{n} · {types.get(n, '')}",
                            key=f"{key}_layers")
    free = st.text_input(t("…or by name / glob / type, comma separated",
                           "…或按名称 / 通配符 / 类型，用逗号分隔"), value=free0,
                         placeholder="conv*, Linear", key=f"{key}_layers_free")
    extra = [s.strip() for s in free.split(",") if s.strip()]
    out = [*picked, *extra]
    return out or None


def hook_kind_picker(key: str, default: tuple[str, ...] | list[str] = ()) -> list[str]:
    """Extra PyTorch hook kinds to attach to the chosen layers (besides the recording)."""
    return st.multiselect(t("Extra hook kinds", "额外的钩子类型"), list(HOOK_KINDS),
                          default=[k for k in default if k in HOOK_KINDS],
                          help="\n".join(f"- {k}: {v}" for k, v in HOOK_KIND_HELP.items()),
                          key=f"{key}_hooks")


EDIT_HELP = ("One edit per line: LAYER=EDIT, or LAYER:TARGET=EDIT with TARGET grad (default), "
             "activation or param_grad. Edits: scale(k), halve, clip(v), clip_norm(m), zero(), "
             "channel_mask([0, 3]), noise(std, seed=0). Example: conv2=scale(0.5)")


def _is_attention_block(module: nn.Module) -> bool:
    """A transformer block: a module with an attention module among its direct children
    (torchvision's ViT ``EncoderBlock``: ``self_attention``; Swin's blocks: ``attn``)."""
    return any(isinstance(c, nn.MultiheadAttention) or "attention" in type(c).__name__.lower()
               for c in module.children())


@st.cache_data(show_spinner=False, max_entries=32)
def _default_edit(_model: nn.Module, key: str) -> str:
    names = {n for n, _ in _model.named_modules()}
    if "conv2" in names:
        return "conv2=scale(0.5)"
    blocks = [n for n, m in _model.named_modules() if n and _is_attention_block(m)]
    if blocks:  # a transformer: halve the gradient at a block's (B, T, D) output
        return f"{blocks[max(0, len(blocks) // 2 - 1)]}=scale(0.5)"
    with_params = [n for n, m in _model.named_modules() if n and next(m.children(), None) is None
                   and any(True for _ in m.parameters(recurse=False))]
    if not with_params:
        return "conv2=scale(0.5)"
    return f"{with_params[max(0, len(with_params) // 2 - 1)]}=scale(0.5)"


def default_edit(model: ModelChoice) -> str:
    """An example edit line for ``model``: halve the gradient at ``conv2`` (the seed's layer)
    when it has one; for a transformer at a block near the middle (SimpleViT:
    ``encoder.layers.encoder_layer_1``); else at a parametrised leaf near the middle (a
    registered model)."""
    return _default_edit(model.model, model.key)


def edit_picker(key: str, default: str = "", label: str | None = None,
                placeholder: str | None = None) -> str:
    """A text area of edit lines (``conv2=scale(0.5)``); returns the text.

    Parse it with :func:`hooklab.studies.compare.normalise_config` inside ``state.guard()``.
    When ``default`` changes (another model picked) and the text is still the old default, the
    text follows the new default; text the user typed stays.
    """
    widget, memo = f"{key}_edits", f"{key}_edits_default"
    old = st.session_state.get(memo)
    if old is not None and old != default and st.session_state.get(widget) == old:
        st.session_state[widget] = default  # untouched: set (the browser shows it) the new one
    st.session_state[memo] = default
    # ``value`` only seeds a new widget; once it has state, the state is its value (and a value
    # beside a state set here would draw Streamlit's "default value and Session State" warning)
    value = "" if widget in st.session_state else default
    return st.text_area(label or t("Edits", "梯度/激活修改"), value=value, height=80,
                        placeholder=placeholder if placeholder is not None else
                        t("e.g. conv2=scale(0.5) — empty: no edit",
                          "例如 conv2=scale(0.5) —— 留空：不修改"),
                        help=EDIT_HELP, key=f"{key}_edits")
