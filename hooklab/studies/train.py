"""Short training loops on the shapes data set, optionally under gradient edits, with history.

The default trains the seed's SimpleCNN on :func:`hooklab.data.datasets.make_shapes` in about 13 s on
two CPU cores (test accuracy 1.0). Its weights, and those of the bias experiment's two arms, are
shipped in :mod:`hooklab.models.defaults` (the same bytes on every machine; CPUs and thread counts
round differently, so a local training differs): :func:`trained_model` returns them for those
configurations, checking their sha256. Other configurations are trained once and cached as
safetensors under ``$HOOKLAB_CACHE`` (default ``./.hooklab-cache``), keyed by a hash of the
configuration. :func:`train` and :func:`train_run` always train.

**The ViT.** :func:`vit_config` trains the small Vision Transformer
(:class:`hooklab.models.vit.SimpleViT`) on the same shapes with recipe ``"vit"``: AdamW, a
linear warm-up, cosine decay, 800 steps (a transformer learns the shapes much more slowly than
the CNN). Like the CNN's it adds the activation penalty, here on the output of block 2 (the
residual stream): without it the best class-specific CAM of the SimpleViT pointed 0.85 on the
shapes, with it 0.88-0.96 over training seeds (``benchmarks/bench_quality.py --only-vit
--vit-seeds 0 1 2``). Its weights and its two bias arms are shipped too (``simple_vit_shapes``,
``simple_vit_biased``, ``simple_vit_rebalanced``).

**The seed's own recipe.** :func:`seed_recipe_config` is the seed's CIFAR-10 training exactly
(``recipe="seed"``: ``torch.manual_seed(42)``, the 10-class SimpleCNN, one epoch of
``DataLoader(shuffle=True)`` batches of 64, Adam lr 1e-3, no penalty) on a local CIFAR-10 copy.

Every step runs inside :func:`hooklab.record` (statistics only, ``keep_tensors=False``), which
applies the configured edits (e.g. halve the gradient at ``conv2``) and yields the per-layer
gradient norms of the history:

* ``grad_norm/<layer>``: L2 norm of the gradient w.r.t. the layer's output *as it arrives* at the
  layer (role ``grad_output``, before an edit at that layer; a layer called several times
  gives the root of the summed squares; at the penalised layer it includes the activation
  penalty's share);
* ``param_grad_norm/<layer>``: L2 norm of the layer's parameter gradients the optimiser uses
  (after any ``param_grad`` edit).

**Activation penalty.** The loss is cross-entropy plus ``act_penalty * mean(a**2)`` over the
output ``a`` of ``act_layer`` (default: the CAM layer, the SimpleCNN's ``conv3``, before its
ReLU). Without it the plain background drives many conv3 channels to large negative values;
Grad-CAM multiplies those pre-ReLU values by its channel weights, and channels that speak against
the class then make the background the hottest spot (Grad-CAM's pointing game on the shapes was
about 0.5). With the penalty the background sits near zero and the pointing game is about 0.95
(``benchmarks/bench_quality.py`` prints both). The architecture and the Grad-CAM are the seed's;
only the training recipe differs.

Recording is passive (the weights are identical with and without it) but computing statistics
roughly doubles a SimpleCNN step on CPU; ``record_every`` thins it out, and :func:`trained_model`
trains without recording (``record_every`` and ``layers`` are not part of the cache key).

:func:`train_run` returns the same training as a :class:`hooklab.core.trace.Trace` for the store:
its events are the recorder's per-step events (``step`` column = training step) and
``trace.meta["history"]`` holds the history rows as a list of dicts (JSON), beside
``trace.meta["train"]`` (configuration, test accuracy, seconds).

Example:
    >>> model, history = train(TrainConfig(edits=["conv2=scale(0.5)"], steps=50))
    >>> history[["step", "loss", "accuracy", "grad_norm/conv1"]].tail(3)
    >>> model = trained_model()            # the shipped default weights
    >>> seed_cnn = trained_model(seed_recipe_config())   # needs a local CIFAR-10 copy
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pandas as pd
import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn

from hooklab.core.edits import normalise_edits
from hooklab.core.errors import HooklabError, LayerNotFoundError
from hooklab.core.layers import resolve_layer
from hooklab.core.modes import eval_mode
from hooklab.core.trace import Trace
from hooklab.data import datasets as data_mod
from hooklab.models import defaults, zoo
from hooklab.models import weights as weights_mod
from hooklab.models.zoo import get_model
from hooklab.recording.recorder import record
from hooklab.recording.scoped import HookScope

__all__ = ["TrainConfig", "train", "train_run", "trained_model", "seed_recipe_model",
           "config_key", "cache_path", "cache_dir", "evaluate", "seed_recipe_config", "DATA_KINDS", "RECIPES", "CACHE_ENV",
           "TrainingError", "vit_config", "VIT_WEIGHT_DECAY", "VIT_WARMUP", "VIT_ACT_LAYER"]

log = logging.getLogger(__name__)

#: Environment variable naming the weights cache folder.
CACHE_ENV = "HOOKLAB_CACHE"
#: Training data the trainer knows.
DATA_KINDS = ("shapes", "biased_shapes", "rebalanced_shapes", "cifar10")
#: Initialisation, batch order and optimiser: hooklab's (seeded generator, whole batches, Adam),
#: the seed's, or ``"vit"`` (hooklab's order; AdamW, linear warm-up, cosine decay: what a
#: transformer needs, :func:`vit_config`).
RECIPES = ("hooklab", "seed", "vit")
#: The ``"vit"`` recipe: AdamW's weight decay and the warm-up's share of the steps.
VIT_WEIGHT_DECAY, VIT_WARMUP = 0.05, 0.1
# Bump when the training loop changes what a configuration produces.
_LOOP_VERSION = 3  # 2: activation penalty; 3: data_root and recipe fields

Progress = Callable[[int, int, dict[str, float]], Any]
OnStep = Callable[[int, nn.Module], Any]  # (optimiser steps done, model): see train()


class TrainingError(HooklabError, ValueError):
    """A training configuration that cannot run (unknown data, bad sizes, unusable model)."""


@dataclass
class TrainConfig:
    """One short training run. Every field is JSON-able; the cache key hashes them all."""

    model: str = "simple_cnn"        # zoo name (hooklab.models.zoo); inputs are 32x32 RGB shapes
    data: str = "shapes"             # "shapes", "biased_shapes" (cue agrees w.p. cue_prob) or
    #                                  "rebalanced_shapes" (cue present but uninformative)
    cue_prob: float = 0.95           # biased_shapes: P(cue names the label) in the train split
    n_train: int = 4096              # training images generated (then reshuffled every epoch)
    n_test: int = 1000               # test-split images for the final accuracy (0: skip it)
    steps: int = 150                 # optimiser steps (batches); 150 x 64 = 2.3 epochs
    batch_size: int = 64             # images per step (the seed's batch size)
    lr: float = 2e-3                 # Adam learning rate (the seed trains with 1e-3 for a
    #                                  whole CIFAR-10 epoch; 2e-3 reaches the goal in 150 steps)
    act_penalty: float = 0.5         # weight of mean(a**2) over the CAM layer's output a (0: off);
    #                                  keeps the background's pre-ReLU activations near zero, so
    #                                  Grad-CAM's maximum lands on the object (see the docstring)
    act_layer: str | None = None     # layer of the penalty (None: the CAM layer, conv3 here)
    seed: int = 0                    # model initialisation and batch order
    data_seed: int = 0               # which shapes images (hooklab.data.datasets seed)
    edits: list[Any] = field(default_factory=list)  # applied every step: "conv2=scale(0.5)",
    #                                  {"layer", "edit", "target"} specs, EditSpec, or a mapping
    #                                  {"conv2": scale(0.5)}; see hooklab.core.edits.EditSpec
    record_every: int = 1            # gradient norms every k steps (0: never; edits still apply)
    layers: list[str] | None = None  # layers whose gradient norms are recorded
    #                                  (None: every module with its own parameters)
    data_root: str | None = None     # cifar10: folder holding the local copy's batches
    recipe: str = "hooklab"          # "seed": the seed's loop: torch.manual_seed(seed), the model,
    #                                  then DataLoader(shuffle=True) batches (last one partial);
    #                                  "vit": hooklab's batches, AdamW + warm-up + cosine decay
    shuffle_labels: bool = False     # permute the training labels (seeded by data_seed): the
    #                                  data-randomisation sanity check's model (hooklab.sanity)

    def edit_specs(self) -> list[dict[str, Any]]:
        """The edits as JSON specs ``{"layer", "target", "edit": {...}}`` (validated)."""
        return [s.spec() for s in normalise_edits(self.edits)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (edits as specs)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["edits"] = self.edit_specs()
        d["layers"] = list(self.layers) if self.layers is not None else None
        if not self.shuffle_labels:  # absent when off: the keys of earlier configs are unchanged
            del d["shuffle_labels"]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise TrainingError(f"unknown training setting(s) {unknown}; known: {sorted(names)}")
        return cls(**dict(d))


#: Zoo models whose input size is fixed at 224 px (they cannot train on 32x32 images).
_FIXED_224 = ("vit_b_16",)


def vit_config(**fields: Any) -> TrainConfig:
    """The SimpleViT's training on the shapes (the shipped ``simple_vit_shapes``): recipe
    ``"vit"`` (AdamW, weight decay :data:`VIT_WEIGHT_DECAY`, linear warm-up over the first
    :data:`VIT_WARMUP` of the steps, cosine decay to 0), more steps than the CNN, the activation
    penalty 0.5 on the residual stream after block 2 (:data:`VIT_ACT_LAYER`), training seed 1.
    Keyword arguments override :class:`TrainConfig` fields.
    """
    return TrainConfig(**{**_VIT_DEFAULTS, **fields})


#: The ViT's penalised layer: the residual stream after block 2, the input of block 3's ``ln_1``.
VIT_ACT_LAYER = "encoder.layers.encoder_layer_2"
#: Seed 1 of seeds 0-2, chosen by the pointing game on 200 *train* images
#: (``benchmarks/bench_quality.py --only-vit --vit-seeds 0 1 2`` prints all three on the test set).
_VIT_DEFAULTS: dict[str, Any] = {"model": "simple_vit", "recipe": "vit", "steps": 800, "lr": 3e-3,
                                 "act_penalty": 0.5, "act_layer": VIT_ACT_LAYER, "seed": 1}


def _optimiser(model: nn.Module, config: TrainConfig
               ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR | None]:
    """Adam (hooklab's and the seed's recipe) or AdamW with warm-up and cosine decay (``vit``)."""
    if config.recipe != "vit":
        return torch.optim.Adam(model.parameters(), lr=config.lr), None
    # decay on every tensor of >= 2 dimensions (weights, class token, position embedding);
    # none on norms and biases
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": VIT_WEIGHT_DECAY},
                             {"params": rest, "weight_decay": 0.0}], lr=config.lr)
    warm = max(1, round(VIT_WARMUP * config.steps))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1.0 + math.cos(math.pi * (step - warm) / max(1, config.steps - warm)))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _check(config: TrainConfig) -> None:
    if config.data not in DATA_KINDS:
        raise TrainingError(f"unknown training data {config.data!r}; use one of "
                            f"{', '.join(DATA_KINDS)}")
    if config.recipe not in RECIPES:
        raise TrainingError(f"unknown recipe {config.recipe!r}; use one of {', '.join(RECIPES)}")
    for name in ("n_train", "steps", "batch_size"):
        v = getattr(config, name)
        if not isinstance(v, int) or v < 1:
            raise TrainingError(f"{name} must be a positive integer, got {v!r}")
    if config.batch_size > config.n_train and config.recipe != "seed":
        raise TrainingError(f"batch_size {config.batch_size} exceeds n_train {config.n_train}")
    if not isinstance(config.n_test, int) or config.n_test < 0:
        raise TrainingError(f"n_test must be >= 0, got {config.n_test!r}")
    if not isinstance(config.record_every, int) or config.record_every < 0:
        raise TrainingError(f"record_every must be >= 0, got {config.record_every!r}")
    if not (isinstance(config.lr, (int, float)) and 0 < config.lr < 10):
        raise TrainingError(f"lr must be a positive number, got {config.lr!r}")
    if config.model.lower().replace("-", "_") == "simple_model":
        raise TrainingError("simple_model takes 1x4x4 inputs; train simple_cnn (or a "
                            "torchvision model) on the 32x32 shapes images")
    if config.model.lower().replace("-", "_") in _FIXED_224:
        raise TrainingError(f"{config.model} takes 224x224 inputs (its position embedding is "
                            "fixed); train simple_vit, the small ViT, on the 32x32 shapes images")
    if config.shuffle_labels and config.data == "cifar10":
        raise TrainingError("shuffle_labels works on the shapes data sets, not cifar10")
    if not 0.0 <= float(config.cue_prob) <= 1.0:
        raise TrainingError(f"cue_prob must be in [0, 1], got {config.cue_prob!r}")
    if not (isinstance(config.act_penalty, (int, float)) and 0 <= config.act_penalty < 1e6):
        raise TrainingError(f"act_penalty must be a number >= 0, got {config.act_penalty!r}")


#: Settings that do not change the trained weights (recording is passive), left out of the key.
_PASSIVE = ("record_every", "layers")


def config_key(config: TrainConfig) -> str:
    """16 hex digits of SHA-256 over the weight-relevant settings, data generator and loop
    versions (``record_every`` and ``layers`` only change what is recorded, not the weights)."""
    relevant = {k: v for k, v in config.to_dict().items() if k not in _PASSIVE}
    payload = {"config": relevant, "generator": data_mod.GENERATOR_VERSION,
               "loop": _LOOP_VERSION}
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_dir() -> Path:
    """``$HOOKLAB_CACHE`` or ``./.hooklab-cache``."""
    return Path(os.environ.get(CACHE_ENV) or ".hooklab-cache").expanduser()


def cache_path(config: TrainConfig) -> Path:
    """Where :func:`trained_model` keeps the weights for ``config``."""
    name = config.model.lower().replace("-", "_")
    return cache_dir() / f"{name}-{config.data}-{config_key(config)}.safetensors"


def _classes(config: TrainConfig) -> tuple[str, ...]:
    return data_mod.CIFAR10_CLASSES if config.data == "cifar10" else data_mod.SHAPE_CLASSES


def _cifar10(config: TrainConfig) -> tuple[Any, Any | None]:
    train_data = data_mod.cifar10(config.data_root, train=True)
    if config.n_train > len(train_data):
        raise TrainingError(f"n_train {config.n_train} exceeds the {len(train_data)} images of "
                            f"the CIFAR-10 train split in {train_data.root}")
    test_data = data_mod.cifar10(config.data_root, train=False) if config.n_test else None
    return train_data, test_data


def _batch(data: Any, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels ``idx`` of a shapes split or a CIFAR-10 split (the seed's transform)."""
    if isinstance(data, data_mod.CIFAR10Data):
        pixels = (torch.from_numpy(data.data[idx.numpy()]).permute(0, 3, 1, 2).contiguous()
                  .float().div(255))
        return data_mod.normalise(pixels), torch.as_tensor(data.targets)[idx]
    return data.images[idx], data.labels[idx]


def _datasets(config: TrainConfig) -> tuple[Any, Any | None]:
    k = len(data_mod.SHAPE_CLASSES)
    if config.data == "cifar10":
        return _cifar10(config)
    if config.data == "shapes":
        make = lambda n, split: data_mod.make_shapes(n, config.data_seed, split)  # noqa: E731
    else:
        prob = config.cue_prob if config.data == "biased_shapes" else 1.0 / k
        make = lambda n, split: data_mod.make_biased_shapes(  # noqa: E731
            n, config.data_seed, split, prob)
    train_data = make(config.n_train, "train")
    if config.shuffle_labels:  # labels permuted across the images: no label follows its image
        gen = torch.Generator().manual_seed(config.data_seed)
        train_data = dataclasses.replace(
            train_data, labels=train_data.labels[torch.randperm(config.n_train, generator=gen)])
    return train_data, (make(config.n_test, "test") if config.n_test else None)


def _build_model(config: TrainConfig) -> nn.Module:
    k = len(_classes(config))
    try:
        model = get_model(config.model, seed=config.seed, num_classes=k)
    except HooklabError as exc:
        raise TrainingError(f"cannot train {config.model!r}: {exc}") from exc
    zoo.attach(model, input_shape=(3, data_mod.IMAGE_SIZE, data_mod.IMAGE_SIZE))
    return model


def _label(model: nn.Module, config: TrainConfig, key: str, source: str = "trained") -> None:
    zoo.attach(model, hooklab_info=zoo.trained_info(config.model, _classes(config),
                                                    f"{source}({config.data}, {key})"))


def _model_and_order(config: TrainConfig, n: int) -> tuple[nn.Module, Callable[[int], Any]]:
    """The initial model and ``batch(step) -> (epoch, indices)``, per the recipe.

    ``"hooklab"``: the model seeded by ``config.seed``; a ``torch.Generator`` seeded likewise
    permutes the images every epoch; an epoch is ``n // batch_size`` whole batches.
    ``"seed"``: the seed's loop: ``torch.manual_seed(seed)``, the model, then for each epoch one
    ``DataLoader(shuffle=True, batch_size)`` pass (the last batch partial) drawing from the global
    RNG right after the initialisation, as the seed's script does; the global RNG is restored.
    """
    bs = config.batch_size
    if config.recipe == "seed":
        per_epoch = -(-n // bs)
        with torch.random.fork_rng(devices=[]):
            model = _build_model(config)  # torch.manual_seed(config.seed) + the model
            batches = []
            for _ in range(-(-config.steps // per_epoch)):
                order = cast(torch.utils.data.Dataset[int], range(n))  # a sequence of indices
                loader = torch.utils.data.DataLoader(order, batch_size=bs, shuffle=True)
                batches += [b.clone() for b in loader]
        return model, lambda step: (step // per_epoch, batches[step])
    model = _build_model(config)
    gen = torch.Generator().manual_seed(config.seed)
    per_epoch = n // bs
    orders: dict[int, torch.Tensor] = {}

    def batch(step: int) -> tuple[int, torch.Tensor]:
        epoch, pos = divmod(step, per_epoch)
        if epoch not in orders:  # drawn in epoch order: steps are asked for in order
            orders.clear()
            orders[epoch] = torch.randperm(n, generator=gen)
        return epoch, orders[epoch][pos * bs:(pos + 1) * bs]

    return model, batch


def _penalty_module(model: nn.Module, config: TrainConfig) -> nn.Module | None:
    """The module whose output the activation penalty acts on (None when the penalty is off)."""
    if not config.act_penalty:
        return None
    name = config.act_layer
    if name is None:
        name = zoo.auto_target_layer(model, (3, data_mod.IMAGE_SIZE, data_mod.IMAGE_SIZE))
    try:
        return model.get_submodule(resolve_layer(model, name))
    except LayerNotFoundError as exc:
        raise TrainingError(f"act_layer {name!r} is not a layer of {config.model}: {exc}") from exc


def _param_layers(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules()
            if n and any(True for _ in m.parameters(recurse=False))]


@torch.no_grad()
def evaluate(model: nn.Module, data: Any, batch_size: int = 500, limit: int | None = None
             ) -> float:
    """Accuracy of ``model`` on ``data`` (a shapes or CIFAR-10 split; its first ``limit``
    images when given; eval mode for the call, then restored)."""
    n = len(data) if limit is None else min(limit, len(data))
    correct = 0
    with eval_mode(model):
        for i in range(0, n, batch_size):
            x, y = _batch(data, torch.arange(i, min(i + batch_size, n)))
            correct += int((model(x).argmax(1) == y).sum())
    return correct / max(1, n)


def _norms(events: pd.DataFrame, layers: list[str]) -> dict[str, float]:
    """Per-layer gradient norms of one step from the recorder's events."""
    out: dict[str, float] = {}
    for layer in layers:
        rows = events[events["layer"] == layer]
        g = rows[rows["role"] == "grad_output"]["norm"]
        out[f"grad_norm/{layer}"] = math.sqrt(float((g ** 2).sum())) if len(g) else float("nan")
        p = rows[rows["role"] == "param_grad"]
        edited = rows[(rows["role"] == "edited") & (rows["kind"] == "post_accumulate_grad")]
        if len(edited):  # a param_grad edit: the optimiser used the edited gradient
            p = pd.concat([p[~p["index"].isin(edited["index"])], edited])
        out[f"param_grad_norm/{layer}"] = (math.sqrt(float((p["norm"] ** 2).sum()))
                                           if len(p) else float("nan"))
    return out


def _loop(config: TrainConfig, progress: Progress | None, keep_events: bool,
          on_step: OnStep | None = None
          ) -> tuple[nn.Module, pd.DataFrame, Trace | None, dict[str, Any]]:
    _check(config)
    specs = normalise_edits(config.edits)
    key = config_key(config)
    t0 = time.perf_counter()
    train_data, test_data = _datasets(config)
    n = config.n_train
    model, batch = _model_and_order(config, n)
    layers = list(config.layers) if config.layers is not None else _param_layers(model)
    opt, schedule = _optimiser(model, config)
    penalised = _penalty_module(model, config)
    captured: list[torch.Tensor] = []
    rows: list[dict[str, Any]] = []
    event_frames: list[pd.DataFrame] = []
    hooks = HookScope()
    if penalised is not None:
        hooks.forward(penalised, lambda _m, _i, out: captured.append(out))
    model.train()
    try:
        if on_step is not None:
            on_step(0, model)  # the initial weights
        for step in range(config.steps):
            epoch, idx = batch(step)
            x, y = _batch(train_data, idx)
            recorded = bool(config.record_every) and (
                step % config.record_every == 0 or step == config.steps - 1)
            rec_layers = layers if recorded else []
            with record(model, rec_layers, edits=specs, keep_tensors=False, inputs=False,
                        param_grads=recorded, step=step) as rec:
                opt.zero_grad(set_to_none=True)
                captured.clear()
                out = model(x)
                loss = F.cross_entropy(out, y)
                penalty = (torch.stack([a.float().pow(2).mean() for a in captured]).mean()
                           if captured else None)
                captured.clear()
                total = loss if penalty is None else loss + float(config.act_penalty) * penalty
                total.backward()
                opt.step()
                if schedule is not None:
                    schedule.step()
            acc = float((out.detach().argmax(1) == y).float().mean())
            row: dict[str, Any] = {"step": step, "epoch": epoch, "loss": loss.item(),
                                   "accuracy": acc, "acc": acc,
                                   "act_penalty": (float(penalty.detach()) if penalty is not None
                                                   else float("nan"))}
            if recorded:
                ev = rec.trace.events
                row.update(_norms(ev, layers))
                if keep_events:
                    event_frames.append(ev)
            rows.append(row)
            if not (math.isfinite(row["loss"]) and math.isfinite(float(total.detach()))):
                raise TrainingError(f"the loss became {row['loss']} at step {step}; lower lr "
                                    "or use a milder edit")
            if progress is not None:
                progress(step + 1, config.steps, {"loss": row["loss"], "accuracy": acc})
            if on_step is not None:
                on_step(step + 1, model)
    finally:
        hooks.close()
        captured.clear()
        model.eval()
    history = pd.DataFrame(rows)
    for layer in layers:
        for col in (f"grad_norm/{layer}", f"param_grad_norm/{layer}"):
            if col not in history:
                history[col] = float("nan")
    test_acc = (evaluate(model, test_data, limit=config.n_test) if test_data is not None
                else float("nan"))
    seconds = time.perf_counter() - t0
    summary = {"config": config.to_dict(), "key": key, "test_accuracy": test_acc,
               "seconds": round(seconds, 3), "classes": list(_classes(config)),
               "layers": layers}
    history.attrs.update({"test_accuracy": test_acc, "key": key, "seconds": seconds})
    _label(model, config, key)
    zoo.attach(model, hooklab_train=summary)
    log.info("trained %s on %s for %d steps in %.1f s: test accuracy %.3f", config.model,
             config.data, config.steps, seconds, test_acc)
    trace = None
    if keep_events:
        events = (pd.concat(event_frames, ignore_index=True) if event_frames else None)
        if events is not None:
            events["seq"] = range(len(events))
        trace = Trace(events=events, meta={
            "model": config.model, "kind": "training", "train": summary,
            "edits": config.edit_specs(), "layers": layers,
            "history": json.loads(history.to_json(orient="records")),
            "input": {"data": config.data, "n_train": config.n_train,
                      "data_seed": config.data_seed},
            "torch": torch.__version__,
        })
    return model, history, trace, summary


def train(config: TrainConfig | None = None, progress: Progress | None = None,
          *, on_step: OnStep | None = None) -> tuple[nn.Module, pd.DataFrame]:
    """Train per ``config`` (default :class:`TrainConfig`); return ``(model, history)``.

    Args:
        config: the run's settings.
        progress: ``progress(step, total, {"loss", "accuracy"})`` after every step (step is
            1-based); raise inside it to cancel (hooks are removed all the same).
        on_step: ``on_step(step, model)`` with the weights after ``step`` optimiser steps
            (``0``: the initial weights, then after every step); it may read (e.g. copy the
            ``state_dict``) but must not change the model (the CAMs-over-training checkpoints).

    Returns:
        The model in eval mode (``model.hooklab_info`` names the shape classes;
        ``model.hooklab_train`` holds the test accuracy) and a DataFrame with one row per step:
        ``step, epoch, loss, accuracy`` (``acc`` is the same value; batch accuracy before the
        update; ``loss`` is the cross-entropy), ``act_penalty`` (mean(a**2) at the penalised
        layer, before its weight; NaN when off), ``grad_norm/<layer>``,
        ``param_grad_norm/<layer>`` (NaN on steps not recorded).
        ``history.attrs["test_accuracy"]`` is the final test accuracy.
    """
    model, history, _, _ = _loop(config or TrainConfig(), progress, keep_events=False,
                                 on_step=on_step)
    return model, history


def train_run(config: TrainConfig | None = None, progress: Progress | None = None,
              *, return_model: bool = False) -> Trace | tuple[Trace, nn.Module]:
    """Train and return the run as a Trace for :meth:`hooklab.TraceStore.save`.

    ``trace.events``: the recorder's statistics for every recorded step (``step`` = training
    step). ``trace.meta["history"]``: the history rows (list of dicts, as :func:`train`).
    ``trace.meta["train"]``: configuration, cache key, test accuracy, seconds.
    """
    model, _, trace, _ = _loop(config or TrainConfig(), progress, keep_events=True)
    assert trace is not None
    return (trace, model) if return_model else trace


_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _lock_for(path: Path) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(str(path.resolve()), threading.Lock())


def _load_cached(path: Path, config: TrainConfig) -> nn.Module | None:
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        if meta.get("key") != config_key(config):
            log.warning("cache file %s belongs to another configuration; retraining", path)
            return None
        model = _build_model(config)
        weights_mod.apply_state_dict(model, weights_mod.load_state_dict(path), str(path))
    except Exception as exc:  # noqa: BLE001 - a bad cache file is rebuilt, never fatal
        log.warning("ignoring unreadable cache file %s: %s", path, exc)
        return None
    _label(model, config, meta["key"])
    zoo.attach(model, hooklab_train={**json.loads(meta.get("summary", "{}")), "cached": str(path)})
    return model.eval()


def _load_shipped(key: str) -> nn.Module | None:
    """The shipped default weights for ``key`` (sha256-checked), or None when none is shipped."""
    entry = defaults.entry_for_key(key)
    return None if entry is None else zoo.shipped_model(entry["name"])


def trained_model(config: TrainConfig | None = None, progress: Progress | None = None,
                  *, shipped: bool = True) -> nn.Module:
    """The model trained per ``config``: the shipped default, else the cache, else trained.

    When ``config_key(config)`` is the key of a shipped default (:mod:`hooklab.models.defaults`: the
    default :class:`TrainConfig` and the bias experiment's two arms), the shipped weights are
    returned, the same bytes on every machine (their sha256 is checked; a mismatch raises
    :class:`hooklab.models.defaults.DefaultWeightsError`); the cache is not touched.
    ``model.hooklab_train["shipped"]`` then names the file and ``hooklab_info.weights`` reads
    ``shipped(<data>, <key>)``. Other configurations (or ``shipped=False``) are read from
    ``cache_path(config)`` or trained and cached there: safetensors with the configuration, its
    key and the summary (test accuracy, seconds) in the header metadata; written atomically.
    :func:`train` always trains.
    """
    config = config or TrainConfig()
    _check(config)
    if shipped:
        model = _load_shipped(config_key(config))
        if model is not None:
            if progress is not None:
                progress(config.steps, config.steps, {})
            return model
    path = cache_path(config)
    with _lock_for(path):
        if path.is_file():
            model = _load_cached(path, config)
            if model is not None:
                if progress is not None:
                    progress(config.steps, config.steps, {})
                return model
        # Recording does not change the weights; training for the cache skips it (faster).
        fast = dataclasses.replace(config, record_every=0)
        model, _, _, summary = _loop(fast, progress, keep_events=False)
        try:
            weights_mod.save_safetensors(model, path, metadata={
                "key": summary["key"], "summary": json.dumps(summary),
                "config": json.dumps(summary["config"]), "format": "hooklab-trained-1"})
        except OSError as exc:
            log.warning("could not cache the trained weights in %s: %s", path, exc)
        zoo.attach(model, hooklab_train={**summary, "cached": None})
        return model


def seed_recipe_config(root: str | os.PathLike[str] | None = None) -> TrainConfig:
    """The seed's own CIFAR-10 training, exactly: what its script does before Grad-CAM.

    10-class SimpleCNN built right after ``torch.manual_seed(42)``, one epoch over the local
    train split in ``DataLoader(shuffle=True)`` order (batch 64, the last batch partial), Adam
    lr 1e-3, plain cross-entropy (no activation penalty), the seed's
    ``Normalize((0.5,)*3, (0.5,)*3)``; test accuracy on the local test split.
    ``trained_model(seed_recipe_config())`` trains it once and caches it.

    Args:
        root: the folder holding ``cifar-10-batches-py`` (default: ``$HOOKLAB_CIFAR10``,
            ``./data``, ``~/.cache/hooklab/data``; see :func:`hooklab.data.datasets.cifar10`).

    Raises:
        hooklab.data.datasets.DataError: no local CIFAR-10 copy (nothing is downloaded).
    """
    try:
        train_split = data_mod.cifar10(root, train=True)
    except data_mod.DataError as exc:
        raise data_mod.DataError(f"the seed's recipe trains on a local CIFAR-10 copy: {exc} "
                                 f"(e.g. export {data_mod.CIFAR10_ENV}=/path/holding/"
                                 f"{data_mod.CIFAR10_DIR})") from exc
    folder = Path(train_split.root).resolve()
    n_test = (len(data_mod.CIFAR10Data(folder, train=False))
              if (folder / data_mod.CIFAR10_TEST_FILES[0]).is_file() else 0)
    n = len(train_split)
    return TrainConfig(model="simple_cnn", data="cifar10", data_root=str(folder), n_train=n,
                       n_test=n_test, steps=-(-n // 64), batch_size=64, lr=1e-3,
                       act_penalty=0.0, seed=42, recipe="seed")


def seed_recipe_model(root: str | os.PathLike[str] | None = None,
                      progress: Progress | None = None) -> nn.Module:
    """The seed's SimpleCNN trained by the seed's own recipe (:func:`seed_recipe_config`).

    Trained once on the local CIFAR-10 copy, then read from the cache.

    Raises:
        DataError: there is no local CIFAR-10 copy (say where one is with ``HOOKLAB_CIFAR10``).
    """
    return trained_model(seed_recipe_config(root), progress).eval()
