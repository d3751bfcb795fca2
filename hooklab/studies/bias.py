"""The seed's bias remark as an experiment: does the CAM look at the spurious cue or the shape?

Two SimpleCNNs are trained on the *biased shapes* (:func:`hooklab.data.datasets.make_biased_shapes`): one
where a coloured corner marker (the cue) names the label with probability ``cue_prob`` (0.95 by
default), one on *rebalanced* data where the cue is independent of the label
(``cue_prob = 1 / classes``). Both are tested on the test split, where the cue is uniformly random.
The default arms (:func:`arm_config`) are shipped trained (:mod:`hooklab.models.defaults`), so the
experiment gives the same answer on every machine.
For every test image the CAM of the predicted class is computed, and its maximum is located:

* ``on_cue``: fraction of CAM maxima inside the cue marker,
* ``on_object``: fraction inside the shape's mask,
* ``elsewhere``: the rest (background).

(Ties for the maximum count fractionally, as in :func:`hooklab.cam.metrics.max_in_mask`.) The biased
model's maxima land on the cue and its accuracy collapses where cue and label disagree; the
rebalanced model's maxima land on the shape.

**Which CAM.** The default is HiResCAM. The SimpleCNN ends in flatten + fully connected layers,
and for such a head HiResCAM (gradient times activation, element by element) adds up exactly to
the class score's dependence on each position, while Grad-CAM first averages the gradient over
the whole map. The biased model bases its answer on a marker covering one conv3 cell; averaged
over 64 cells that evidence is swamped by the gradients on the shape, which the model hardly
uses. Grad-CAM then points at the shape (about half the time; at the marker almost never) even
though every prediction follows the marker. HiResCAM and Score-CAM (which measures the score
with each channel's map as a mask) point at the marker. ``benchmarks/bench_quality.py`` prints
all three; pass ``method="gradcam"`` to see the seed's CAM mislead.

Example:
    >>> result = run_bias_experiment(n_test=500)
    >>> result.table()[["arm", "on_cue", "on_object", "accuracy"]]
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd
import torch
from torch import nn

from hooklab.cam import engine as cam
from hooklab.cam.metrics import max_in_mask
from hooklab.core.modes import eval_mode
from hooklab.data import datasets
from hooklab.data.datasets import SHAPE_CLASSES
from hooklab.studies import train

log = logging.getLogger(__name__)

__all__ = ["BiasArm", "BiasResult", "location_fractions", "evaluate_arm", "run_bias_experiment",
           "train_arm", "arm_config", "MODELS"]


@dataclass
class BiasArm:
    """One trained model of the experiment and where its CAMs point.

    Attributes:
        name: ``"biased"`` or ``"rebalanced"``.
        cue_prob: probability that the training cue names the label.
        n: number of test images.
        accuracy: test accuracy.
        accuracy_conflict: accuracy on test images whose cue names another class.
        follows_cue: fraction of test predictions equal to the cue's class.
        on_cue, on_object, elsewhere: fractions of CAM maxima (sum to 1).
    """

    name: str
    cue_prob: float
    n: int
    accuracy: float
    accuracy_conflict: float
    follows_cue: float
    on_cue: float
    on_object: float
    elsewhere: float


@dataclass
class BiasResult:
    """Both arms, with the CAM method and layer used."""

    arms: dict[str, BiasArm]
    method: str
    layer: str

    def table(self) -> Any:
        """A pandas DataFrame, one row per arm."""
        return pd.DataFrame([{"arm": k, **{f: v for f, v in asdict(a).items() if f != "name"}}
                             for k, a in self.arms.items()])


def location_fractions(maps: torch.Tensor, object_masks: torch.Tensor, cue_masks: torch.Tensor,
                       tolerance: float = 0.0) -> dict[str, float]:
    """Fractions of map maxima on the cue, on the object and elsewhere.

    Args:
        maps: ``(N, H, W)`` saliency maps.
        object_masks, cue_masks: ``(N, H, W)`` bool, disjoint.
        tolerance: dilate the masks by this many pixels (see :func:`hooklab.cam.metrics.max_in_mask`).
    """
    cue = max_in_mask(maps, cue_masks, tolerance)
    obj = max_in_mask(maps, object_masks, tolerance)
    on_cue, on_obj = float(cue.mean()), float(obj.mean())
    return {"on_cue": on_cue, "on_object": on_obj, "elsewhere": max(0.0, 1.0 - on_cue - on_obj)}


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    with eval_mode(model):
        return torch.cat([model(x[s:s + batch_size]).argmax(1) for s in range(0, len(x),
                                                                               batch_size)])


def evaluate_arm(name: str, model: nn.Module, test: Any, *, cue_prob: float = float("nan"),
                 method: str = "hirescam", layer: Any = None, tolerance: float = 0.0,
                 batch_size: int = 256) -> BiasArm:
    """Where ``model``'s CAMs (predicted class) point on a biased ``test`` split.

    ``test`` is a :class:`hooklab.data.datasets.ShapesData` with ``cue_masks`` and ``cue_labels``.
    """
    x, labels = test.images, test.labels
    preds = _predict(model, x)
    maps = []
    for s in range(0, len(x), batch_size):
        maps.append(cam.compute(model, x[s:s + batch_size], method, layer=layer).maps)
    frac = location_fractions(torch.cat(maps), test.masks, test.cue_masks, tolerance)
    conflict = test.cue_labels != labels
    acc_conflict = (float((preds[conflict] == labels[conflict]).float().mean())
                    if bool(conflict.any()) else float("nan"))
    return BiasArm(name=name, cue_prob=float(cue_prob), n=len(x),
                   accuracy=float((preds == labels).float().mean()),
                   accuracy_conflict=acc_conflict,
                   follows_cue=float((preds == test.cue_labels).float().mean()), **frac)


#: Models the experiment runs on out of the box (their default arms are shipped trained).
MODELS = ("simple_cnn", "simple_vit")


def arm_config(arm: str, cue_prob: float = 0.95, *, seed: int = 0, model: str = "simple_cnn",
               **config: Any) -> Any:
    """The :class:`hooklab.studies.train.TrainConfig` of one arm (the defaults are the shipped models).

    ``arm="biased"``: data ``biased_shapes`` with ``cue_prob``; ``arm="rebalanced"``: data
    ``rebalanced_shapes``, where the cue is independent of the label (``cue_prob`` is then
    ``1 / classes`` whatever is passed). ``seed`` sets both the training and the data seed.
    ``model="simple_vit"`` trains the small ViT with its own recipe
    (:func:`hooklab.studies.train.vit_config`, without its activation penalty). Other keyword
    arguments are :class:`hooklab.studies.train.TrainConfig` fields.
    """
    data = {"biased": "biased_shapes", "rebalanced": "rebalanced_shapes"}.get(arm)
    if data is None:
        raise ValueError(f"arm must be 'biased' or 'rebalanced', not {arm!r}")
    prob = float(cue_prob) if arm == "biased" else 1.0 / len(SHAPE_CLASSES)
    fields = {"data": data, "cue_prob": prob, "seed": seed, "data_seed": seed, **config}
    if model == "simple_vit":
        # The ViT arms train without the activation penalty of the ViT default: with it the
        # biased ViT follows the cue on 0.775 of the biased test images instead of 0.955, a
        # weaker shortcut for the lesson to show.
        return train.vit_config(**{"act_penalty": 0.0, "act_layer": None, **fields})
    return train.TrainConfig(model=model, **fields)


def train_arm(arm: str, cue_prob: float = 0.95, *, seed: int = 0,
              progress: Callable[..., None] | None = None, model: str = "simple_cnn",
              **config: Any) -> nn.Module:
    """The model of one arm (a SimpleCNN unless ``model`` says otherwise): :func:`arm_config`
    given to :func:`hooklab.studies.train.trained_model` (the shipped default weights for the
    default arms, else trained and cached).
    """
    return train.trained_model(arm_config(arm, cue_prob, seed=seed, model=model, **config),
                               progress)


def run_bias_experiment(n_test: int = 1000, *, biased_cue_prob: float = 0.95,
                        method: str = "hirescam", layer: Any = None, seed: int = 0,
                        tolerance: float = 0.0,
                        train_fn: Callable[[str, float], nn.Module] | None = None,
                        progress: Callable[..., None] | None = None,
                        model: str = "simple_cnn") -> BiasResult:
    """Train (or load from the cache) both models and compare where their CAMs point.

    Args:
        n_test: test images (biased shapes, test split: cue uniformly random).
        biased_cue_prob: cue/label agreement in the biased training data.
        method, layer: CAM method and layer (default: HiResCAM, see the module docstring, at
            the auto layer, ``conv3``).
        seed: data and training seed.
        tolerance: mask dilation in pixels for the location fractions.
        train_fn: ``(arm, cue_prob) -> trained model`` (default :func:`train_arm`).
        progress: passed to the training loop.
        model: the architecture of both arms, ``"simple_cnn"`` (the seed's) or ``"simple_vit"``
            (its CAM layer is then the automatic ViT layer unless ``layer`` is given).
    """
    fit = train_fn or (lambda arm, p: train_arm(arm, p, seed=seed, progress=progress,
                                                model=model))
    test = datasets.make_biased_shapes(n_test, seed=seed, split="test")
    arms = {}
    layer_name = ""
    for name, p in (("biased", biased_cue_prob), ("rebalanced", 1.0 / len(SHAPE_CLASSES))):
        net = fit(name, p)
        arms[name] = evaluate_arm(name, net, test, cue_prob=p, method=method, layer=layer,
                                  tolerance=tolerance)
        if not layer_name:
            layer_name = str(layer) if layer is not None else cam.auto_layer(net, test.images)
        log.info("bias arm %s: %s", name, arms[name])
    return BiasResult(arms=arms, method=method, layer=layer_name)
