"""Can this map be trusted? Sanity checks for saliency maps (Adebayo et al. 2018), as data.

* **Model-parameter randomisation cascade** (:func:`mprt`): on a *copy* of the model (the
  caller's model is never changed) the parameterised layers are re-initialised from the top
  (the logits) down, one more at each step (cascading), each with its module's default
  initialiser, seeded. At every step the same method's map is computed for the same images and
  the same target classes (the original model's), and compared with the original map by
  Spearman rank correlation and SSIM (:mod:`hooklab.cam.similarity`). A faithful method's maps
  fall apart as the weights that made the decision are destroyed; a map that stays alike
  although the model no longer knows anything (an edge detector's would) explains the image,
  not the model.
* **Data-randomisation test** (:func:`data_randomisation`): the same CAM for the SimpleCNN
  trained on the shapes with their labels permuted (shipped as ``simple_cnn_shuffled``: the
  default recipe, :class:`hooklab.studies.train.TrainConfig` with ``shuffle_labels=True``)
  beside the one trained on the true labels (``simple_cnn_shapes``). A faithful method's maps
  differ: the shuffled model learnt no relation between objects and labels.

Conventions: similarities are of the maps at the input's size (``CamResult.maps``, min-max
normalised). Where the original map is constant the similarity is undefined (NaN); where only
the randomised map is constant (blank: nothing of the original ranking survives) its Spearman
correlation counts as 0. A method **passes** the cascade when the mean Spearman correlation and
the mean SSIM at full randomisation are both at most ``threshold`` (0.3).

Example:
    >>> res = hooklab.sanity.mprt(model, x, "gradcam")
    >>> res.table()                  # step, randomised layer, Spearman, SSIM
    >>> res.passed, res.verdict
    >>> hooklab.sanity.data_randomisation(x, "gradcam").spearman.mean()
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from torch import nn

from hooklab.cam import engine
from hooklab.cam.methods import METHODS, method_name
from hooklab.cam.similarity import spearman, ssim
from hooklab.core.errors import HooklabError
from hooklab.core.modes import eval_mode
from hooklab.recording.scoped import HookScope

log = logging.getLogger(__name__)

__all__ = ["SanityError", "MPRTResult", "DataRandomisationResult", "mprt", "cascade_layers",
           "randomised_copy", "data_randomisation", "EXPECTED", "DATA_EXPECTED", "THRESHOLD",
           "TRAINED", "SHUFFLED"]

#: Similarity at full randomisation at or below which a method passes the cascade.
THRESHOLD = 0.3
#: Shipped weights of the data-randomisation test: true labels, permuted labels.
TRAINED, SHUFFLED = "simple_cnn_shapes", "simple_cnn_shuffled"

#: The cascade's expected outcome, in words.
EXPECTED = ("A faithful method's maps fall apart as the layers are randomised from the top "
            "down: the similarity to the original map drops towards 0. Maps that stay alike "
            "although the weights no longer know anything (an edge detector's would) show the "
            "image, not what the model uses.")
#: The data-randomisation test's expected outcome, in words.
DATA_EXPECTED = ("A faithful method's maps for a model trained on shuffled labels differ from "
                 "those of the model trained on the true labels: it learnt no relation between "
                 "objects and classes. Maps that stay alike follow the image, not the training.")


class SanityError(HooklabError, ValueError):
    """A sanity check that cannot run on this model, layer or input."""


def _similarities(orig: torch.Tensor, maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Spearman (blank randomised map -> 0, constant original -> NaN) and SSIM, ``(N,)``."""
    rho = spearman(orig, maps)
    flat_o, flat_m = orig.flatten(1), maps.flatten(1)
    const_o = (flat_o.amax(1) - flat_o.amin(1)) == 0
    const_m = (flat_m.amax(1) - flat_m.amin(1)) == 0
    rho = torch.where(const_m & ~const_o, torch.zeros_like(rho), rho)
    s = ssim(orig, maps)
    s = torch.where(const_o, torch.full_like(s, math.nan), s)
    return rho, s


def _nanmean(t: torch.Tensor) -> float:
    ok = ~torch.isnan(t)
    return float(t[ok].mean()) if bool(ok.any()) else math.nan


# -- the cascade's layers -----------------------------------------------------------------------

def _call_order(model: nn.Module, x: torch.Tensor) -> list[str]:
    """Names of the modules in the order their forward *starts*, from one no-grad forward."""
    order: list[str] = []

    def make(name: str):
        def pre(_m: nn.Module, _inp: Any) -> None:
            if name not in order:
                order.append(name)
        return pre

    try:
        with HookScope() as hooks:
            for name, m in model.named_modules():
                hooks.forward_pre(m, make(name))
            with eval_mode(model), torch.no_grad():
                model(x)
    except Exception as exc:
        raise SanityError(f"a forward of {type(model).__name__} on input "
                          f"{tuple(x.shape)} failed: {exc}") from exc
    return order


def _own_params(m: nn.Module) -> bool:
    return any(True for _ in m.parameters(recurse=False))


def cascade_layers(model: nn.Module, x: torch.Tensor, *, depth: str = "leaf") -> list[str]:
    """The layers the cascade randomises, top (logits) first.

    Args:
        model: the model.
        x: an input batch (one image is run) to find the order the modules run in.
        depth: ``"leaf"``: every module with parameters of its own (a convolution, a linear
            layer, a norm; a module's own tensors such as a class token count too), one step
            each; ``"top"``: the model's direct children that hold parameters (ResNet:
            ``fc``, ``layer4``, ..., ``conv1``), each randomised whole, for a shorter strip.

    Order: by when each module's forward starts, reversed; modules that do not run are left
    out. ``""`` names the model's own parameters (e.g. a class token on the root module).

    Raises:
        SanityError: bad ``depth`` or the model has no parameters.
    """
    if depth not in ("leaf", "top"):
        raise SanityError(f"depth must be 'leaf' or 'top', not {depth!r}")
    order = _call_order(model, x[:1])
    mods = dict(model.named_modules())
    if depth == "leaf":
        names = [n for n in order if _own_params(mods[n])]
    else:
        top = {n for n, c in model.named_children() if any(True for _ in c.parameters())}
        names = [n for n in order if n in top or (n == "" and _own_params(model))]
    if not names:
        raise SanityError(f"{type(model).__name__} has no parameters to randomise; the "
                          "cascade needs a model with trained layers")
    return names[::-1]


# -- randomisation ------------------------------------------------------------------------------

def _reinit(module: nn.Module) -> None:
    """Re-initialise ``module`` and everything inside it, in place: each module's default
    initialiser (``reset_parameters``), or N(0, 0.02²) for the tensors of a module without one
    (class tokens, position embeddings). Whole modules, so a weight a parent uses without
    calling its child (``MultiheadAttention.out_proj``) is randomised with the parent; a child
    that runs on its own comes earlier in the cascade and is already random."""
    with torch.no_grad():
        for m in module.modules():
            if not _own_params(m):
                continue
            reset = getattr(m, "reset_parameters", None) or getattr(m, "_reset_parameters", None)
            if callable(reset):
                reset()
            else:
                for p in m.parameters(recurse=False):
                    nn.init.normal_(p, std=0.02)


def _copy(model: nn.Module) -> nn.Module:
    try:
        return copy.deepcopy(model)
    except Exception as exc:  # noqa: BLE001 - any failure to copy is the same user problem
        raise SanityError(f"cannot copy {type(model).__name__} to randomise it ({exc}); the "
                          "cascade never changes the caller's model, so it needs a "
                          "deep-copyable model") from exc


def _randomise_step(clone: nn.Module, name: str, k: int, seed: int) -> None:
    """Re-initialise layer ``name`` of ``clone`` as step ``k`` (seed ``seed + k``)."""
    mods = dict(clone.named_modules())
    if name not in mods:
        raise SanityError(f"no layer {name!r} to randomise in {type(clone).__name__}; use "
                          "names from cascade_layers(model, x)")
    devices = sorted({p.device.index or 0 for p in clone.parameters() if p.is_cuda})
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed) + k)
        _reinit(mods[name])


def randomised_copy(model: nn.Module, layers: Sequence[str], seed: int = 0) -> nn.Module:
    """A deep copy of ``model`` with ``layers`` re-initialised, in this order (the model itself
    is not changed).

    Layer ``k`` of ``layers`` (with everything inside it) is re-initialised under
    ``torch.manual_seed(seed + k)`` (the global RNG is restored afterwards), so the same call
    gives the same weights, and :func:`mprt`'s step ``k`` is ``randomised_copy(model,
    layers[:k], seed)``.

    Raises:
        SanityError: the model cannot be copied, or a layer name is unknown.
    """
    clone = _copy(model)
    for k, name in enumerate(layers):
        _randomise_step(clone, name, k, seed)
    return clone


# -- the cascade --------------------------------------------------------------------------------

@dataclass
class MPRTResult:
    """The model-parameter randomisation cascade of one method (:func:`mprt`).

    Step 0 is the original model; step ``k`` has the top ``k`` layers of :attr:`randomised`
    re-initialised.

    Attributes:
        method: canonical method name; title: its display name.
        layer: the CAM's target layer(s) (``"+"``-joined).
        randomised: the layer re-initialised at steps ``1..S``, top first (``""``: the
            model's own parameters).
        maps: ``(S + 1, N, H, W)`` maps per step (step 0: the original model's).
        spearman: ``(S + 1, N)`` Spearman correlation of each map to the original one.
        ssim: ``(S + 1, N)`` SSIM of each map to the original one.
        targets: ``(N,)`` the target class of every map (the original model's choice).
        sample: ``(N,)`` the input image of every map.
        threshold: pass when both mean similarities at full randomisation are at most this.
        expected: the expected outcome in words (:data:`EXPECTED`).
    """

    method: str
    title: str
    layer: str
    randomised: list[str]
    maps: torch.Tensor
    spearman: torch.Tensor
    ssim: torch.Tensor
    targets: torch.Tensor
    sample: torch.Tensor
    threshold: float = THRESHOLD
    expected: str = EXPECTED

    @property
    def labels(self) -> list[str]:
        """Step labels: ``"original"``, then the randomised layer (``"(own parameters)"``)."""
        return ["original", *[n or "(own parameters)" for n in self.randomised]]

    def mean_spearman(self) -> list[float]:
        """Mean Spearman correlation per step (NaN entries left out)."""
        return [_nanmean(r) for r in self.spearman]

    def mean_ssim(self) -> list[float]:
        """Mean SSIM per step (NaN entries left out)."""
        return [_nanmean(r) for r in self.ssim]

    @property
    def final(self) -> dict[str, float]:
        """``{"spearman", "ssim"}``: the mean similarities at full randomisation (last step)."""
        return {"spearman": self.mean_spearman()[-1], "ssim": self.mean_ssim()[-1]}

    @property
    def passed(self) -> bool:
        """Whether the maps fell apart: both final similarities ``<= threshold``."""
        f = self.final
        return all(v <= self.threshold for v in f.values() if not math.isnan(v)) and not all(
            math.isnan(v) for v in f.values())

    @property
    def verdict(self) -> str:
        """One sentence: the similarity at full randomisation and what it means."""
        f = self.final
        head = (f"{self.title} at {self.layer}: with all {len(self.randomised)} layers "
                f"randomised, Spearman {f['spearman']:.2f}, SSIM {f['ssim']:.2f}")
        if self.passed:
            return f"{head} (at most {self.threshold:g}): the maps fall apart, as a faithful " \
                   "method's should."
        return (f"{head} (above {self.threshold:g}): the maps stay alike without the trained "
                "weights, so they show the image more than the model.")

    def table(self) -> pd.DataFrame:
        """One row per step: ``step``, ``layer``, ``spearman``, ``ssim`` (means over maps)."""
        return pd.DataFrame({"step": range(len(self.labels)), "layer": self.labels,
                             "spearman": self.mean_spearman(), "ssim": self.mean_ssim()})


def mprt(model: nn.Module, x: torch.Tensor, method: str = "gradcam", layer: Any = None,
         target: Any = None, *, layers: Sequence[str] | None = None, depth: str = "leaf",
         seed: int = 0, threshold: float = THRESHOLD, batch_size: int = 128) -> MPRTResult:
    """The model-parameter randomisation cascade (Adebayo et al. 2018) for one CAM method.

    Args:
        model: a classifier (never changed: the cascade runs on a copy).
        x: images ``(B, C, H, W)``.
        method: any key of :data:`hooklab.cam.METHODS` (model-calling methods too).
        layer: the CAM target layer (as :func:`hooklab.cam.compute`; ``None``: the auto layer).
        target: as :func:`hooklab.cam.compute`; the classes are fixed from the original model
            and used at every step.
        layers: the layers to randomise, top first (default :func:`cascade_layers` of
            ``depth``).
        depth: ``"leaf"`` or ``"top"`` (see :func:`cascade_layers`).
        seed: the randomisation seed (step ``k`` re-initialises under ``seed + k``).
        threshold: the pass mark for the final similarities.
        batch_size: passed to :func:`hooklab.cam.compute` (Score-CAM's masked images).

    Raises:
        SanityError: no parameterised layer at or above the target layer (the cascade would
            not touch what the map is made from), an unknown layer, a model that cannot be
            copied.
        CamError, LayerNotFoundError, NonSpatialLayerError: as :func:`hooklab.cam.compute`.

    Example:
        >>> res = mprt(model, x, "gradcam", depth="top")
        >>> res.final, res.passed
    """
    try:
        spec = METHODS[method_name(method)]
    except KeyError as exc:
        raise SanityError(f"unknown CAM method {method!r}; known: {', '.join(METHODS)}") from exc
    if not isinstance(x, torch.Tensor) or x.dim() not in (3, 4):
        raise SanityError("the cascade needs images (B, C, H, W), got "
                          f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if x.dim() == 3:
        x = x[None]
    base = engine.compute(model, x, spec.name, layer=layer, target=target,
                          batch_size=batch_size)
    order = _call_order(model, x[:1])
    names = list(layers) if layers is not None else cascade_layers(model, x, depth=depth)
    if not names:
        raise SanityError("no layers to randomise; give at least one (cascade_layers(model, x))")
    _check_above(model, order, base.layers)
    targets = base.targets.reshape(-1)
    xs = x[base.sample]  # one row per map (several with target="topk:K")
    rho0, s0 = _similarities(base.maps, base.maps)
    maps, rhos, ssims = [base.maps], [rho0], [s0]
    clone = _copy(model)
    for step, name in enumerate(names, start=1):
        _randomise_step(clone, name, step - 1, seed)  # cumulative: randomised_copy(names[:step])
        res = engine.compute(clone, xs, spec.name, layer=list(base.layers), target=targets,
                             batch_size=batch_size)
        rho, s = _similarities(base.maps, res.maps)
        maps.append(res.maps)
        rhos.append(rho)
        ssims.append(s)
        log.debug("mprt %s step %d (%s): spearman %.3f ssim %.3f", spec.name, step, name,
                  _nanmean(rho), _nanmean(s))
    return MPRTResult(method=spec.name, title=spec.title, layer=base.layer, randomised=names,
                      maps=torch.stack(maps), spearman=torch.stack(rhos),
                      ssim=torch.stack(ssims), targets=targets, sample=base.sample,
                      threshold=float(threshold))


def _check_above(model: nn.Module, order: list[str], targets: Sequence[str]) -> None:
    """Refuse a cascade when no layer at or above the CAM layer has parameters."""
    pos = {n: i for i, n in enumerate(order)}
    first_cam = min(pos.get(t, 0) for t in targets)
    mods = dict(model.named_modules())
    above = [n for n in order[first_cam:] if _own_params(mods[n])]
    if above:
        return
    params = [n for n in order if _own_params(mods[n])]
    hint = (f"; use a CAM layer at or below {params[-1]!r}, the last layer with parameters"
            if params else "")
    raise SanityError(
        f"no layer at or above {'+'.join(targets)!r} has parameters, so randomising the model "
        f"from the top down cannot change what the map is computed from{hint}")


# -- data randomisation -------------------------------------------------------------------------

@dataclass
class DataRandomisationResult:
    """The same CAM for a model trained on the true labels and one trained on shuffled labels.

    Attributes:
        method, title: the method.
        layer: the CAM layer.
        trained: ``(N, H, W)`` maps of the model trained on the true labels.
        shuffled: ``(N, H, W)`` maps of the model trained on shuffled labels.
        spearman, ssim: ``(N,)`` similarity of each pair.
        targets: ``(N,)`` the classes explained (the trained model's choice, or given).
        models: names of the two models' weights.
        threshold: pass when both mean similarities are at most this.
        expected: the expected outcome in words (:data:`DATA_EXPECTED`).
    """

    method: str
    title: str
    layer: str
    trained: torch.Tensor
    shuffled: torch.Tensor
    spearman: torch.Tensor
    ssim: torch.Tensor
    targets: torch.Tensor
    models: tuple[str, str]
    threshold: float = THRESHOLD
    expected: str = DATA_EXPECTED

    @property
    def final(self) -> dict[str, float]:
        """``{"spearman", "ssim"}``: mean similarities of the pairs."""
        return {"spearman": _nanmean(self.spearman), "ssim": _nanmean(self.ssim)}

    @property
    def passed(self) -> bool:
        """Whether the maps differ: both mean similarities ``<= threshold``."""
        vals = [v for v in self.final.values() if not math.isnan(v)]
        return bool(vals) and all(v <= self.threshold for v in vals)

    @property
    def verdict(self) -> str:
        """One sentence: the similarity and what it means."""
        f = self.final
        head = (f"{self.title}: maps of the model trained on shuffled labels vs true labels: "
                f"Spearman {f['spearman']:.2f}, SSIM {f['ssim']:.2f}")
        if self.passed:
            return f"{head} (at most {self.threshold:g}): they differ, as they should."
        return (f"{head} (above {self.threshold:g}): they stay alike, so the maps follow the "
                "image more than what the model learnt.")


def _shipped(name: str) -> nn.Module:
    from hooklab.models import zoo  # models sits below cam; loaded on first use only

    return zoo.shipped_model(name)


def data_randomisation(x: torch.Tensor, method: str = "gradcam", layer: Any = None,
                       target: Any = None, *, model: nn.Module | None = None,
                       shuffled: nn.Module | None = None, threshold: float = THRESHOLD,
                       batch_size: int = 128) -> DataRandomisationResult:
    """Adebayo et al.'s data-randomisation test for one CAM method.

    Args:
        x: images ``(B, 3, 32, 32)`` (e.g. a shapes test split).
        method: any key of :data:`hooklab.cam.METHODS`.
        layer, target: as :func:`hooklab.cam.compute` (targets come from ``model`` and are
            used for both models).
        model: the model trained on the true labels (default: the shipped
            ``simple_cnn_shapes``).
        shuffled: the same architecture trained on shuffled labels (default: the shipped
            ``simple_cnn_shuffled``).

    Raises:
        SanityError: the two models differ in their layers or outputs.
        DefaultWeightsError: a shipped weights file is missing or damaged.
    """
    try:
        spec = METHODS[method_name(method)]
    except KeyError as exc:
        raise SanityError(f"unknown CAM method {method!r}; known: {', '.join(METHODS)}") from exc
    trained = model if model is not None else _shipped(TRAINED)
    other = shuffled if shuffled is not None else _shipped(SHUFFLED)
    names = (getattr(trained, "hooklab_train", {}).get("name", type(trained).__name__),
             getattr(other, "hooklab_train", {}).get("name", type(other).__name__))
    base = engine.compute(trained, x, spec.name, layer=layer, target=target,
                          batch_size=batch_size)
    if not set(base.layers) <= dict(other.named_modules()).keys():
        raise SanityError(f"the shuffled-label model has no layer {base.layer!r}; both models "
                          "need the same architecture")
    xs = (x if x.dim() == 4 else x[None])[base.sample]
    res = engine.compute(other, xs, spec.name, layer=list(base.layers), target=base.targets,
                         batch_size=batch_size)
    rho, s = _similarities(base.maps, res.maps)
    return DataRandomisationResult(method=spec.name, title=spec.title, layer=base.layer,
                                   trained=base.maps, shuffled=res.maps, spearman=rho, ssim=s,
                                   targets=base.targets, models=names,
                                   threshold=float(threshold))
