"""The layer sweep: which target layer gives the most faithful maps, measured, not guessed.

Every **candidate layer** × every chosen CAM method is computed on the same images and the same
target classes, and scored with :mod:`hooklab.cam.metrics`: deletion and insertion AUC, Average
Drop / Increase in Confidence and, when object masks are given, the pointing game. A seeded
random map is scored beside them (the baseline).

**Candidate layers** (:func:`candidate_layers`): from one dry forward
(:func:`hooklab.models.zoo.list_layers`), the modules with a spatial ``(N, C, H, W)`` output
(``H, W > 1``) that have parameters and run once (pooling, ReLU and shared modules are
skipped, as for the automatic layer); they are grouped by output resolution and each group gives
its outermost module that comes last: one layer per stage. ResNet at 224 px: ``bn1``
(112 px), ``layer1`` … ``layer4``; VGG: the last convolution of each resolution and
``features``; the seed's SimpleCNN: ``conv1``, ``conv2``, ``conv3``. A registered model's own
``cam_layer`` is always a candidate. A model with token outputs ``(B, T, D)`` that read as a patch
grid (a ViT) also gets its transformer blocks (the items of one
``Sequential``/``ModuleList`` of a single type) and its automatic layer. Pass
``layers=[...]`` to sweep other layers.

**Ranking rule.** A (layer, method) pair scores ``insertion AUC − deletion AUC`` (both are
target-class probabilities integrated over the fraction of pixels; a faithful map's pixels
raise the score fast when inserted and drop it fast when deleted). A layer's score is the mean
over the chosen methods. Layers are ranked by that score (rounded to 3 decimals), ties by the
lower mean Average Drop, then by the higher mean pointing game; the first is recommended, with
one sentence saying why.

The maps of every pair come from one :func:`hooklab.cam.engine.compute_many` call (one forward
and one backward for all gradient methods and layers), on the same images and targets.

Example:
    >>> res = sweep(model, x, masks=masks)           # every non-model-calling method
    >>> res.layers[["layer", "score", "average_drop", "rank"]]
    >>> res.recommended, res.reason
    >>> auto_target_layer(model, x, by="faithfulness")   # the recommended layer
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from torch import nn

from hooklab.cam import engine, metrics
from hooklab.cam.engine import CamError
from hooklab.cam.methods import METHODS, method_name
from hooklab.core.errors import NonSpatialLayerError
from hooklab.models import tokens, zoo

log = logging.getLogger(__name__)

__all__ = ["SweepResult", "candidate_layers", "default_methods", "sweep", "auto_target_layer",
           "TABLE_COLUMNS", "LAYER_COLUMNS"]

#: Columns of :attr:`SweepResult.table` (``pointing`` only with masks).
TABLE_COLUMNS = ("layer", "method", "score", "insertion_auc", "deletion_auc", "average_drop",
                 "increase_confidence", "pointing")
#: Columns of :attr:`SweepResult.layers`.
LAYER_COLUMNS = ("rank", "layer", "resolution", "score", "insertion_auc", "deletion_auc",
                 "average_drop", "increase_confidence", "pointing", "best_method")
_METRIC_COLS = ("score", "insertion_auc", "deletion_auc", "average_drop", "increase_confidence",
                "pointing")


@dataclass
class SweepResult:
    """What :func:`sweep` returns.

    Attributes:
        table: one row per (layer, method), best first (:data:`TABLE_COLUMNS`).
        layers: one row per layer, ranked (``rank`` 1 is recommended; :data:`LAYER_COLUMNS`);
            the metric columns are means over the methods.
        random: the random baseline's metrics (same keys as a table row's metrics).
        recommended: the recommended layer.
        reason: one sentence saying why.
        methods: the methods swept (canonical names).
        targets: ``(N,)`` the target class of each image (the same for every pair).
        maps: ``{(layer, method): (N, H, W) maps}`` that were scored.
        seconds: ``{"maps": ..., "metrics": ...}`` wall time of the two parts.
    """

    table: pd.DataFrame
    layers: pd.DataFrame
    random: dict[str, float]
    recommended: str
    reason: str
    methods: tuple[str, ...]
    targets: torch.Tensor
    maps: dict[tuple[str, str], torch.Tensor] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def default_methods() -> list[str]:
    """Every registered method that does not call the model again (gradient methods, EigenCAM
    and kin): one forward and one backward each. Score-CAM-like methods can be asked for."""
    return [name for name, spec in METHODS.items() if not spec.needs_model]


def _shape(x: torch.Tensor | Sequence[int]) -> tuple[int, ...]:
    if isinstance(x, torch.Tensor):
        return tuple(int(s) for s in (x.shape[1:] if x.dim() == 4 else x.shape))
    return tuple(int(s) for s in x)


def _no_spatial(model: nn.Module, table: pd.DataFrame, shape: tuple[int, ...]) -> str:
    shown = [f"{n} {tuple(s)[1:] if s is not None else '(did not run)'}"
             for n, s in zip(table["name"], table["output_shape"], strict=True)][:6]
    return (f"{type(model).__name__} has no layer with a spatial (N, C, H, W) output for input "
            f"{shape} (its layers output {', '.join(shown) or 'nothing'}); a layer sweep needs "
            "convolutional feature maps: a CNN such as simple_cnn or resnet18, or layers=[...] "
            "naming modules whose output is (N, C, H, W) with H, W > 1")


def _token_blocks(model: nn.Module, table: pd.DataFrame, shape: tuple[int, ...]) -> list[str]:
    """A transformer's blocks: token outputs ``(B, T, D)`` that read as a grid
    (:func:`hooklab.models.tokens.infer_layout`), of modules that are items of one
    ``Sequential``/``ModuleList`` of a single type; plus the automatic layer."""
    mods = dict(model.named_modules())
    patch = tokens.patch_size(model)
    hw = (shape[-2], shape[-1]) if len(shape) == 3 else None
    picked = []
    for name, out, calls in zip(table["name"], table["output_shape"], table["calls"],
                                strict=True):
        if out is None or len(out) != 3 or calls != 1 or "." not in name:
            continue
        parent = mods[name.rsplit(".", 1)[0]]
        if not isinstance(parent, (nn.Sequential, nn.ModuleList)):
            continue
        if len({type(c) for c in parent.children()}) != 1:
            continue
        try:
            tokens.infer_layout(out, hw, patch, module=mods[name], name=name)
        except NonSpatialLayerError:
            continue
        picked.append(str(name))
    if picked:
        try:
            auto = zoo.auto_target_layer(model, shape)
        except NonSpatialLayerError:
            auto = None
        if auto is not None and auto not in picked:
            picked.append(auto)
    return picked


def candidate_layers(model: nn.Module, x: torch.Tensor | Sequence[int]) -> list[str]:
    """The layers a sweep tries, input side first (see the module docstring for the rule).

    Args:
        model: the classifier.
        x: an input batch (or one image's shape ``(C, H, W)``); only its shape is used.

    Raises:
        NonSpatialLayerError: no module has a spatial output; the message says what would work.
    """
    shape = _shape(x)
    table = zoo.list_layers(model, shape)
    usable = table[table["spatial"] & (table["calls"] == 1) & (table["params"] > 0)]
    if usable.empty:
        usable = table[table["spatial"]]
    blocks = _token_blocks(model, table, shape)
    if usable.empty:
        if blocks:
            return blocks
        raise NonSpatialLayerError(_no_spatial(model, table, shape))
    order = {n: i for i, n in enumerate(table["name"])}
    groups: dict[tuple[int, int], list[str]] = {}
    for name, out in zip(usable["name"], usable["output_shape"], strict=True):
        groups.setdefault((int(out[2]), int(out[3])), []).append(str(name))
    picked = []
    for _res, names in sorted(groups.items(), key=lambda kv: -kv[0][0] * kv[0][1]):
        members = set(names)
        outer = [n for n in names if not any(n.startswith(m + ".") for m in members)]
        picked.append(max(outer, key=order.__getitem__))
    named = getattr(getattr(model, "hooklab_info", None), "cam_layer", None)
    if named and named in order and named not in picked:
        picked.append(str(named))
    return picked + [b for b in blocks if b not in picked]


def _maps(model: nn.Module, x: torch.Tensor, methods: Sequence[str], layers: Sequence[str],
          targets: list[int], batch_size: int) -> dict[tuple[str, str], torch.Tensor]:
    """``{(layer, method): maps (N, H, W)}`` from :func:`hooklab.cam.engine.compute_many`: every
    gradient method at every layer from one forward and one backward (each map equals a
    :func:`hooklab.cam.engine.compute` of that pair alone)."""
    res = engine.compute_many(model, x, list(methods), list(layers), target=targets,
                              batch_size=batch_size)
    return {(layer, m): res[m, layer].maps for m in res.methods for layer in res.layers}


def _check_inputs(x: Any, masks: torch.Tensor | None) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise CamError(f"a layer sweep needs images as a tensor, not {type(x).__name__}")
    if x.dim() == 3:
        x = x[None]
    if x.dim() != 4 or x.shape[0] == 0:
        raise CamError(f"a layer sweep needs images (N, C, H, W), got shape {tuple(x.shape)}")
    if masks is not None and tuple(masks.shape) != (x.shape[0], *x.shape[-2:]):
        raise CamError(f"masks {tuple(masks.shape)} do not fit the images {tuple(x.shape)}: "
                       f"give one (H, W) mask per image, i.e. {(x.shape[0], *x.shape[-2:])}")
    return x


def _rank_layers(table: pd.DataFrame, resolutions: dict[str, str]) -> pd.DataFrame:
    cols = [c for c in _METRIC_COLS if c in table.columns]
    means = table.groupby("layer", sort=False)[cols].mean().reset_index()
    best = (table.sort_values(["score", "average_drop"], ascending=[False, True])
            .drop_duplicates("layer").set_index("layer")["method"])
    means["best_method"] = means["layer"].map(best)
    means["resolution"] = means["layer"].map(resolutions)
    means["_key"] = means["score"].round(3)
    sort_by, asc = ["_key", "average_drop"], [False, True]
    if "pointing" in means.columns:
        sort_by, asc = [*sort_by, "pointing"], [*asc, False]
    ranked = means.sort_values(sort_by, ascending=asc, kind="stable").drop(columns="_key")
    ranked.insert(0, "rank", range(1, len(ranked) + 1))
    return ranked[[c for c in LAYER_COLUMNS if c in ranked.columns]].reset_index(drop=True)


def _reason(ranked: pd.DataFrame, random: dict[str, float], n_methods: int) -> str:
    top = ranked.iloc[0]
    what = f"{n_methods} method{'s' if n_methods != 1 else ''}"
    text = (f"{top['layer']} ranks first: insertion − deletion {top['score']:.3f} averaged over "
            f"{what} (random map {random['score']:.3f}), Average Drop {top['average_drop']:.1f}%")
    if len(ranked) > 1:
        nxt = ranked.iloc[1]
        if round(float(top["score"]), 3) == round(float(nxt["score"]), 3):
            text += (f"; tied with {nxt['layer']} on the score, it has the lower Average Drop"
                     if float(top["average_drop"]) < float(nxt["average_drop"]) else
                     f"; tied with {nxt['layer']} on the score and Average Drop, it comes "
                     "first in the ranking's order")
        else:
            text += f"; next is {nxt['layer']} ({nxt['score']:.3f})"
    else:
        text += "; it is the only candidate layer"
    return text + "."


def sweep(model: nn.Module, x: torch.Tensor, *, masks: torch.Tensor | None = None,
          methods: Sequence[str] | None = None, layers: Sequence[str] | None = None,
          target: Any = None, steps: int = 16, seed: int = 0, tolerance: float = 0.0,
          batch_size: int = 512) -> SweepResult:
    """Score every candidate layer × method on ``x`` and recommend a layer.

    Args:
        model: a classifier returning logits.
        x: images ``(N, C, H, W)`` (one ``(C, H, W)`` image is accepted).
        masks: optional ``(N, H, W)`` object masks (adds the pointing game).
        methods: method names (default :func:`default_methods`).
        layers: layer names (default :func:`candidate_layers`).
        target: as :func:`hooklab.cam.engine.compute` (default each image's predicted class);
            resolved once, so every pair explains the same classes.
        steps: deletion / insertion curve steps.
        seed: ties in the pixel ranking and the random baseline.
        tolerance: pointing-game tolerance in pixels.
        batch_size: images per forward for the metrics.

    Returns:
        A :class:`SweepResult` (ranking rule in the module docstring).

    Raises:
        NonSpatialLayerError: no candidate layer (the model has no spatial output).
        CamError: bad images, masks, methods or target.

    Example:
        >>> res = sweep(model, x[:8], masks=masks[:8], methods=["gradcam", "hirescam"])
        >>> res.recommended
    """
    x = _check_inputs(x, masks)
    names = list(methods) if methods is not None else default_methods()
    if not names:
        raise CamError("no methods to sweep; pick at least one of " + ", ".join(METHODS))
    try:
        names = list(dict.fromkeys(method_name(m) for m in names))
    except KeyError as exc:
        raise CamError(f"unknown CAM method {exc.args[0]!r}; known: {', '.join(METHODS)}"
                       ) from exc
    cands = list(layers) if layers is not None else candidate_layers(model, x)
    if not cands:
        raise CamError("no layers to sweep; pass layer names or leave layers=None")
    first = engine.compute(model, x, method=names[0], layer=cands[0], target=target,
                           batch_size=batch_size)
    if int(first.maps.shape[0]) != int(x.shape[0]):
        raise CamError("a layer sweep explains one class per image; use a single class index, "
                       "one index per image or None, not top-k")
    targets = [int(v) for v in first.targets]
    shapes = zoo.list_layers(model, _shape(x)).set_index("name")["output_shape"]
    resolutions = {n: (f"{shapes[n][2]}×{shapes[n][3]}" if n in shapes.index
                       and shapes[n] is not None and len(shapes[n]) == 4 else "?")
                   for n in cands}
    start = time.perf_counter()
    maps = _maps(model, x, names, cands, targets, batch_size)
    mid = time.perf_counter()
    rows = []
    for (layer, m), mp in maps.items():
        row = metrics.evaluate(model, x, mp, targets, masks, random_baseline=False, steps=steps,
                               tolerance=tolerance, seed=seed, batch_size=batch_size)["cam"]
        rows.append({"layer": layer, "method": m, **row})
    rnd_maps = metrics.random_maps(x.shape[0], (x.shape[-2], x.shape[-1]), seed=seed)
    random = metrics.evaluate(model, x, rnd_maps.to(x.device), targets, masks,
                              random_baseline=False, steps=steps, tolerance=tolerance,
                              seed=seed, batch_size=batch_size)["cam"]
    random["score"] = random["insertion_auc"] - random["deletion_auc"]
    table = pd.DataFrame(rows)
    table["score"] = table["insertion_auc"] - table["deletion_auc"]
    table = table[[c for c in TABLE_COLUMNS if c in table.columns]]
    table = table.sort_values(["score", "average_drop"], ascending=[False, True],
                              kind="stable").reset_index(drop=True)
    ranked = _rank_layers(table, resolutions)
    reason = _reason(ranked, random, len(names))
    log.info("layer sweep over %d layers x %d methods: %s", len(cands), len(names), reason)
    return SweepResult(table=table, layers=ranked, random=random,
                       recommended=str(ranked.iloc[0]["layer"]), reason=reason,
                       methods=tuple(names), targets=torch.tensor(targets),
                       maps=maps, seconds={"maps": mid - start,
                                           "metrics": time.perf_counter() - mid})


def auto_target_layer(model: nn.Module, x: torch.Tensor | Sequence[int], *,
                      by: str = "structure", **options: Any) -> str:
    """The CAM target layer, chosen by structure or by measured faithfulness.

    Args:
        model: the classifier.
        x: input images (``by="faithfulness"`` needs real images; ``by="structure"`` also takes
            one image's shape ``(C, H, W)``).
        by: ``"structure"``: the last module with a spatial output
            (:func:`hooklab.models.zoo.auto_target_layer`, the old behaviour);
            ``"faithfulness"``: the layer :func:`sweep` recommends on ``x``.
        options: keyword arguments of :func:`sweep` (``masks``, ``methods``, ``layers``, ...).

    Raises:
        CamError: unknown ``by``, or a shape where images are needed.
        NonSpatialLayerError: the model has no spatial layer.

    Example:
        >>> auto_target_layer(resnet, x, by="faithfulness", methods=["gradcam"])
    """
    if by == "structure":
        if options:
            raise CamError(f"by='structure' takes no options, got {sorted(options)}")
        return zoo.auto_target_layer(model, _shape(x))
    if by == "faithfulness":
        if not isinstance(x, torch.Tensor):
            raise CamError("by='faithfulness' measures the maps on images: pass an image batch "
                           "(N, C, H, W), not a shape")
        return sweep(model, x, **options).recommended
    raise CamError(f"unknown by={by!r}; use 'structure' or 'faithfulness'")
