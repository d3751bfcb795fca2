"""An evaluation on Ray Data: ``map_batches`` over index chunks with an actor pool.

What travels: the driver makes a data set of chunk descriptors ``{"start", "stop"}`` (16 bytes
of payload each), one per block; each actor of the pool (``concurrency=workers``,
``num_cpus=1`` each) builds the model and the data source **once** (or unpickles the model it
was given once) and, per chunk, loads its own images from the indices and returns the chunk's
result rows (a few hundred bytes per image). The driver iterates the results as they stream in
and is the only writer to the store (:func:`hooklab.studies.evaluation.evaluate` dedups by
image index before it writes).

A worker that dies mid-chunk: Ray Data's actor pool restarts actors and retries their tasks
(``max_restarts=-1`` and ``max_task_retries=-1`` are its defaults for an actor pool), so the
chunk is scored again by a fresh actor; a chunk that reaches the driver twice is written once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
from torch import nn

from hooklab.studies.evaluation.scorer import Scorer
from hooklab.studies.evaluation.spec import EvalSpec

__all__ = ["ChunkScorer", "run_on_ray"]

log = logging.getLogger(__name__)


class ChunkScorer:
    """The Ray actor: one :class:`~.scorer.Scorer` per worker process, held for the run."""

    def __init__(self, spec: dict[str, Any], model: nn.Module | None = None, threads: int = 1,
                 fault: str | None = None) -> None:
        self.scorer = Scorer(EvalSpec.from_dict(spec), model, threads=threads, fault=fault)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        frames = [self.scorer.score(int(s), int(e))
                  for s, e in zip(batch["start"], batch["stop"], strict=True)]
        return pd.concat(frames, ignore_index=True)


def run_on_ray(ray: Any, spec: EvalSpec, pending: Sequence[tuple[int, int]],
               sink: Callable[[pd.DataFrame], None], *, workers: int,
               model: nn.Module | None = None, threads: int = 1,
               fault: str | None = None) -> None:
    """Score ``pending`` chunks on the connected Ray; ``sink`` gets each result block."""
    import ray.data  # noqa: F401 - ray.data is a subpackage; `ray` is the module passed in

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    items = [{"start": int(s), "stop": int(e)} for s, e in pending]
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    out = ds.map_batches(
        ChunkScorer, batch_size=1, batch_format="pandas", num_cpus=1,
        compute=ray.data.ActorPoolStrategy(size=int(workers)),
        fn_constructor_kwargs={"spec": spec.to_dict(), "model": model, "threads": threads,
                               "fault": fault})
    log.info("evaluation on Ray: %d chunks, %d workers", len(items), workers)
    quiet = logging.getLogger("ray.data")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # its INFO lines ("execution finished") go to stderr
    try:
        for block in out.iter_batches(batch_size=None, batch_format="pandas"):
            sink(block)
    finally:
        quiet.setLevel(level)
