"""The scorer: the model and the data source held once, one index chunk scored per call.

The same class scores in-process and inside a Ray actor (:mod:`.on_ray`): given the same chunk
``[start, stop)`` it runs the same operations on the same tensors with the same number of torch
threads (pinned for the call), so both paths give bit-identical rows.

Every metric is :mod:`hooklab.cam.metrics` / :mod:`hooklab.cam.road` on the chunk's maps (no
metric is re-implemented here): the pointing game is :func:`~hooklab.cam.metrics.max_in_mask`
per image; AD / IC is :func:`~hooklab.cam.metrics.average_drop_increase` of each image on its
own (the function averages over what it is given); deletion / insertion are the per-image areas
under :func:`~hooklab.cam.metrics.deletion_insertion`'s curves (their mean is the function's
``deletion_auc``); ROAD is :func:`~hooklab.cam.road.road`'s per-image MoRF, LeRF and combined.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from hooklab.cam import engine
from hooklab.cam import metrics as cam_metrics
from hooklab.cam.road import road
from hooklab.data.sources import DataSource, open_source
from hooklab.studies.evaluation.spec import COLUMNS, EvalSpec

__all__ = ["Scorer", "build_model", "pinned_threads", "source_for"]

log = logging.getLogger(__name__)


@contextmanager
def pinned_threads(n: int) -> Iterator[None]:
    """``torch.set_num_threads(n)`` for the block, restored after (float sums depend on it)."""
    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def build_model(spec: EvalSpec) -> nn.Module:
    """The spec's zoo or registered model, in eval mode (registered modules loaded first)."""
    from hooklab.models import registry, zoo

    registry.load_env()  # a worker sees $HOOKLAB_MODELS (forwarded by ray_session)
    return zoo.get_model(spec.model, weights=spec.weights or None)


def source_for(model: nn.Module, data: str, split: str = "test", n: int | None = None,
               seed: int = 0) -> DataSource:
    """The data source in ``model``'s input space (size and normalisation from its
    :class:`~hooklab.models.zoo.ModelInfo`; the seed's 32 px transform without one)."""
    info = getattr(model, "hooklab_info", None)
    size = tuple(info.input_shape[-2:]) if info is not None else None
    return open_source(data, split=split, n=n, seed=seed, size=size,
                       mean=getattr(info, "mean", None), std=getattr(info, "std", None))


class Scorer:
    """Scores index chunks of one evaluation.

    Args:
        spec: the evaluation.
        model: the model (default: built from ``spec``, once).
        threads: torch threads during a call (pinned, restored after).
        fault: test-only: ``"die_once:PATH"`` makes the first call that finds no file at PATH
            create it and kill its process (a worker dying mid-run, for the retry test).
    """

    def __init__(self, spec: EvalSpec, model: nn.Module | None = None, *, threads: int = 1,
                 fault: str | None = None) -> None:
        self.spec = spec
        self.model = model if model is not None else build_model(spec)
        self.source = source_for(self.model, spec.data, spec.split, spec.n, spec.data_seed)
        self.threads = int(threads)
        self.fault = fault
        self.calls = 0

    def _maybe_die(self) -> None:
        if not self.fault or not self.fault.startswith("die_once:"):
            return
        marker = Path(self.fault.partition(":")[2])
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.close(fd)
        log.warning("fault injection: this worker (pid %d) dies now", os.getpid())
        os._exit(17)

    def score(self, start: int, stop: int) -> pd.DataFrame:
        """Rows of images ``start .. stop-1``: one per image × method × layer (columns
        :data:`~.spec.COLUMNS` and the spec's metric columns)."""
        self._maybe_die()
        self.calls += 1
        with pinned_threads(self.threads), torch.random.fork_rng(devices=[]):
            return self._score(list(range(int(start), int(stop))))

    def _score(self, idx: list[int]) -> pd.DataFrame:
        spec, model = self.spec, self.model
        x, labels, masks = self.source.batch(idx)
        target = labels if spec.target == "label" else None
        res = engine.compute_many(model, x, list(spec.methods), list(spec.layers), target)
        predicted = res.logits.argmax(1).cpu().numpy()
        frames = []
        for method, layer in spec.pairs:
            r = res[method, layer]
            t = r.targets.cpu()
            cols = self._metrics(x, r.maps.detach().cpu(), t, masks)
            frames.append(pd.DataFrame({
                "index": np.asarray(idx, dtype=np.int64),
                "label": labels.numpy().astype(np.int64),
                "target": t.numpy().astype(np.int64),
                "predicted": predicted.astype(np.int64),
                "method": method, "layer": layer,
                **{c: np.asarray(v, dtype=np.float64) for c, v in cols.items()}}))
        out = pd.concat(frames, ignore_index=True)
        return out.loc[:, [*COLUMNS, *spec.columns]]

    def _metrics(self, x: torch.Tensor, maps: torch.Tensor, t: torch.Tensor,
                 masks: torch.Tensor | None) -> dict[str, Any]:
        spec, model = self.spec, self.model
        cols: dict[str, Any] = {}
        if "pointing" in spec.metrics:
            assert masks is not None  # checked when the spec is made
            cols["pointing"] = cam_metrics.max_in_mask(maps, masks).numpy()
        if "ad_ic" in spec.metrics:
            pairs = [cam_metrics.average_drop_increase(model, x[i:i + 1], maps[i:i + 1],
                                                       t[i:i + 1]) for i in range(len(t))]
            cols["average_drop"] = [p[0] for p in pairs]
            cols["increase_confidence"] = [p[1] for p in pairs]
        if "deletion" in spec.metrics or "insertion" in spec.metrics:
            di = cam_metrics.deletion_insertion(model, x, maps, t, steps=spec.steps,
                                                seed=spec.seed)
            if "deletion" in spec.metrics:
                cols["deletion_auc"] = cam_metrics.curve_auc(di.fractions, di.deletion)
            if "insertion" in spec.metrics:
                cols["insertion_auc"] = cam_metrics.curve_auc(di.fractions, di.insertion)
        if "road" in spec.metrics:
            rr = road(model, x, maps, t, seed=spec.seed)
            cols["road_morf"], cols["road_lerf"] = rr.morf_score, rr.lerf_score
            cols["road_combined"] = rr.combined
        return cols
