"""CAMs over training: the same images' maps at chosen training steps.

A shapes training (:func:`hooklab.studies.train.train`) keeps the weights at chosen steps
(:func:`train_checkpoints`; ``0`` is the initialisation, step ``s`` the weights after ``s``
optimiser steps) through the trainer's ``on_step`` callback; :func:`cams_over_training` computes
the CAM of each checkpoint on the same images. In the bias experiment
(:func:`bias_over_training`: the biased arm, :func:`hooklab.studies.bias.arm_config`) the
test images are ones whose corner marker names another class, and every checkpoint is also
scored on a biased test split (:func:`hooklab.studies.bias.evaluate_arm`): where the maps'
maxima lie (on the marker, on the shape) and how often the prediction follows the marker, so
the shortcut is seen to emerge — the maxima move from the shape to the marker as the model
learns that the marker names the class.

Checkpoints are cached like the other trainings: one safetensors file per configuration and
step list under :func:`hooklab.studies.train.cache_dir` (keyed by
:func:`hooklab.studies.train.config_key`), written atomically; a second call reads it. They
come from a local training (the shipped default weights are the final step's of a training on
another machine, so the last frame can differ from the shipped model by CPU rounding).

Example:
    >>> ck = train_checkpoints(TrainConfig(), steps=[0, 10, 50, 150])
    >>> cams = cams_over_training(ck, x, method="gradcam")
    >>> cams.maps.shape           # (4 steps, N, 32, 32)
    >>> hooklab.charts.cam_training.training_animation(images, cams.maps.numpy(), cams.steps)
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from hooklab.cam import engine as cam
from hooklab.data import datasets
from hooklab.models import inputs, zoo
from hooklab.studies import bias
from hooklab.studies import train as train_mod
from hooklab.studies.train import TrainConfig, TrainingError

log = logging.getLogger(__name__)

__all__ = ["Checkpoints", "TrainingCams", "checkpoint_steps", "train_checkpoints",
           "checkpoints_path", "cams_over_training", "bias_over_training"]

_FORMAT = "hooklab-checkpoints-1"


def checkpoint_steps(total: int, n: int = 8) -> list[int]:
    """About ``n`` steps from 0 to ``total``, closer together early (where maps change most):
    0, then a geometric series ending at ``total``.

    Example:
        >>> checkpoint_steps(150)
        [0, 1, 2, 5, 12, 28, 65, 150]
    """
    if not isinstance(total, int) or total < 1:
        raise TrainingError(f"total steps must be a positive integer, got {total!r}")
    if n < 2:
        raise TrainingError(f"need at least 2 checkpoints (the start and the end), got {n}")
    geo = np.geomspace(1, total, num=n - 1)
    return sorted({0, *(int(round(v)) for v in geo), total})


@dataclass
class Checkpoints:
    """A training's weights at chosen steps.

    Attributes:
        config: the training's configuration.
        steps: the steps kept, ascending.
        states: ``{step: state_dict}`` (CPU tensors).
        history: the training's per-step history (loss, accuracy; empty when read from the
            cache).
        cached: the file the checkpoints were read from or written to (``None``: not cached).
    """

    config: TrainConfig
    steps: tuple[int, ...]
    states: dict[int, dict[str, torch.Tensor]]
    history: pd.DataFrame = field(default_factory=pd.DataFrame)
    cached: str | None = None
    _template: nn.Module | None = field(default=None, repr=False)

    def model(self, step: int) -> nn.Module:
        """A fresh model with the weights of ``step``, in eval mode.

        Raises:
            TrainingError: ``step`` was not kept.
        """
        if step not in self.states:
            raise TrainingError(f"no checkpoint at step {step}; kept: "
                                f"{', '.join(map(str, self.steps))}")
        if self._template is None:
            classes = (datasets.CIFAR10_CLASSES if self.config.data == "cifar10"
                       else datasets.SHAPE_CLASSES)
            self._template = zoo.get_model(self.config.model, seed=self.config.seed,
                                           num_classes=len(classes))
        model = copy.deepcopy(self._template)
        model.load_state_dict(self.states[step])
        return model.eval()


def _steps_key(config: TrainConfig, steps: Sequence[int]) -> str:
    text = json.dumps({"config": train_mod.config_key(config), "steps": list(steps)})
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def checkpoints_path(config: TrainConfig, steps: Sequence[int]) -> Path:
    """Where :func:`train_checkpoints` caches ``config``'s checkpoints at ``steps``."""
    name = config.model.lower().replace("-", "_")
    return train_mod.cache_dir() / f"checkpoints-{name}-{config.data}-{_steps_key(config, steps)}" \
        ".safetensors"


def _check_steps(config: TrainConfig, steps: Sequence[int] | None) -> tuple[int, ...]:
    if steps is None:
        return tuple(checkpoint_steps(config.steps))
    try:
        kept = sorted({int(s) for s in steps})
    except (TypeError, ValueError) as exc:
        raise TrainingError(f"checkpoint steps must be integers, got {steps!r}") from exc
    if not kept:
        raise TrainingError("no checkpoint steps given; e.g. steps=[0, 10, 50, 150]")
    if kept[0] < 0 or kept[-1] > config.steps:
        raise TrainingError(f"checkpoint steps must lie in 0..{config.steps} (the training's "
                            f"steps), got {kept[0]}..{kept[-1]}")
    return tuple(kept)


def _read(path: Path, config: TrainConfig, steps: tuple[int, ...]) -> Checkpoints | None:
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        if meta.get("format") != _FORMAT or meta.get("key") != _steps_key(config, steps):
            log.warning("checkpoint file %s belongs to another training; retraining", path)
            return None
        flat = load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - a bad cache file is rebuilt, never fatal
        log.warning("ignoring unreadable checkpoint file %s: %s", path, exc)
        return None
    states: dict[int, dict[str, torch.Tensor]] = {s: {} for s in steps}
    for key, tensor in flat.items():
        step, name = key.split("/", 1)
        if int(step) in states:
            states[int(step)][name] = tensor
    if any(not v for v in states.values()):
        return None
    return Checkpoints(config, steps, states, cached=str(path))


def _write(path: Path, ck: Checkpoints) -> None:
    flat = {f"{s}/{k}": v.contiguous() for s, st in ck.states.items() for k, v in st.items()}
    meta = {"format": _FORMAT, "key": _steps_key(ck.config, ck.steps),
            "config": json.dumps(ck.config.to_dict()), "steps": json.dumps(list(ck.steps))}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        try:
            save_file(flat, tmp, metadata=meta)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        ck.cached = str(path)
    except OSError as exc:
        log.warning("could not cache the checkpoints in %s: %s", path, exc)


_LOCKS: dict[str, threading.Lock] = {}
_GUARD = threading.Lock()


def train_checkpoints(config: TrainConfig | None = None, steps: Sequence[int] | None = None,
                      progress: train_mod.Progress | None = None, *, cache: bool = True
                      ) -> Checkpoints:
    """Train per ``config`` and keep the weights at ``steps`` (default
    :func:`checkpoint_steps`); read from the cache when this training was kept before.

    Args:
        config: the training (default :class:`TrainConfig`: the shapes SimpleCNN).
        steps: steps to keep, each in ``0..config.steps`` (0: the initialisation).
        progress: the trainer's ``progress(step, total, info)``.
        cache: read and write the cache file (:func:`checkpoints_path`).

    Raises:
        TrainingError: bad steps or configuration.
    """
    config = config or TrainConfig()
    kept = _check_steps(config, steps)
    path = checkpoints_path(config, kept)
    with _GUARD:
        lock = _LOCKS.setdefault(str(path), threading.Lock())
    with lock:
        if cache and path.is_file():
            found = _read(path, config, kept)
            if found is not None:
                if progress is not None:
                    progress(config.steps, config.steps, {})
                return found
        states: dict[int, dict[str, torch.Tensor]] = {}

        def keep(step: int, model: nn.Module) -> None:
            if step in kept:
                states[step] = {k: v.detach().to("cpu", copy=True)
                                for k, v in model.state_dict().items()}

        fast = dataclasses.replace(config, record_every=0)  # recording is passive
        model, history = train_mod.train(fast, progress, on_step=keep)
        missing = [s for s in kept if s not in states]
        if missing:  # the trainer stopped early (cannot happen without an error)
            raise TrainingError(f"the training never reached step(s) {missing}")
        ck = Checkpoints(config, kept, states, history=history, _template=_blank(model))
        if cache:
            _write(path, ck)
        return ck


def _blank(model: nn.Module) -> nn.Module:
    """A hook-free copy of the trained model to load checkpoints into."""
    return copy.deepcopy(model).eval()


@dataclass
class TrainingCams:
    """The same images' CAMs at every checkpoint.

    Attributes:
        steps: the checkpoints' steps.
        maps: ``(S, N, H, W)`` maps in [0, 1].
        targets: ``(S, N)`` the class each map explains.
        preds: ``(S, N)`` each checkpoint's predicted class.
        probs: ``(S, N)`` the softmax probability of the target.
        method, layer: the CAM method and layer.
        scores: per step, for the bias experiment: ``step, accuracy, accuracy_conflict,
            follows_cue, on_cue, on_object, elsewhere`` on a biased test split (empty
            otherwise).
    """

    steps: tuple[int, ...]
    maps: torch.Tensor
    targets: torch.Tensor
    preds: torch.Tensor
    probs: torch.Tensor
    method: str
    layer: str
    scores: pd.DataFrame = field(default_factory=pd.DataFrame)


def cams_over_training(ck: Checkpoints, x: torch.Tensor, *, method: str = "gradcam",
                       layer: Any = None, target: Any = None) -> TrainingCams:
    """The CAM of every checkpoint on the same images ``x``.

    Args:
        ck: checkpoints from :func:`train_checkpoints`.
        x: images ``(N, C, H, W)``.
        method, layer: as :func:`hooklab.cam.engine.compute` (layer ``None``: the automatic
            layer, the same at every step).
        target: ``None``: each checkpoint's predicted class (what the model looks at for its
            own answer); a class index or one per image (e.g. the true labels).

    Raises:
        CamError: bad images, method, layer or target.
    """
    if x.dim() == 3:
        x = x[None]
    maps, targets, preds, probs = [], [], [], []
    name = ""
    for step in ck.steps:
        model = ck.model(step)
        res = cam.compute(model, x, method=method, layer=layer, target=target)
        if res.logits is None or len(res) != x.shape[0]:
            raise cam.CamError("CAMs over training explain one class per image (not top-k)")
        maps.append(res.maps)
        targets.append(res.targets)
        preds.append(res.logits.argmax(1))
        probs.append(torch.softmax(res.logits.float(), 1).gather(1, res.targets[:, None])[:, 0])
        name = res.layer
    return TrainingCams(steps=ck.steps, maps=torch.stack(maps), targets=torch.stack(targets),
                        preds=torch.stack(preds), probs=torch.stack(probs),
                        method=cam.METHODS[cam.method_name(method)].name, layer=name)


def bias_over_training(cue_prob: float = 0.95, steps: Sequence[int] | None = None, *,
                       n_images: int = 6, n_test: int = 300, method: str = "hirescam",
                       seed: int = 0, progress: train_mod.Progress | None = None,
                       checkpoints: Callable[..., Checkpoints] | None = None
                       ) -> tuple[TrainingCams, Any, torch.Tensor]:
    """The bias experiment's biased arm over training: the shortcut emerging.

    Args:
        cue_prob: P(marker names the class) in the biased training set.
        steps: checkpoint steps (default :func:`checkpoint_steps` of the arm's training).
        n_images: test images shown (their marker names another class than their shape).
        n_test: biased test images each checkpoint is scored on.
        method: the CAM method (default HiResCAM, see :mod:`hooklab.studies.bias`).
        seed: training and data seed.
        progress: the trainer's progress callback.
        checkpoints: ``(config, steps, progress) -> Checkpoints`` (default
            :func:`train_checkpoints`; the dashboard passes its cached one).

    Returns:
        ``(cams, test, idx)``: the :class:`TrainingCams` of the shown images ``test.images[idx]``
        (:func:`hooklab.models.inputs.conflict_examples`) with ``cams.scores`` one row per step,
        and the biased test split.
    """
    config = bias.arm_config("biased", cue_prob, seed=seed)
    fetch = checkpoints or train_checkpoints
    ck = fetch(config, steps, progress)
    test = datasets.make_biased_shapes(int(n_test), seed=seed, split="test")
    idx = inputs.conflict_examples(test, int(n_images))
    cams = cams_over_training(ck, test.images[idx], method=method)
    rows = []
    for step in ck.steps:
        arm = bias.evaluate_arm("biased", ck.model(step), test, cue_prob=cue_prob, method=method)
        rows.append({"step": step, "accuracy": arm.accuracy,
                     "accuracy_conflict": arm.accuracy_conflict, "follows_cue": arm.follows_cue,
                     "on_cue": arm.on_cue, "on_object": arm.on_object,
                     "elsewhere": arm.elsewhere})
    cams.scores = pd.DataFrame(rows)
    return cams, test, idx
