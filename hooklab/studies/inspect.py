"""What the Inspector's "Run" does: record one forward + backward of a model on an input.

Example:
    >>> trace = inspect.run(model, x, layers=["conv2"], edits="conv2=scale(0.5)")
    >>> trace.meta["prediction"], len(trace.events)

The model may be shared (the dashboard's cached models): hold its lock around the call. Its
gradients are cleared afterwards; the recorder restores its hooks and state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch
from torch import nn

from hooklab.core import edits as edit_fns
from hooklab.core.layers import leaf_names
from hooklab.core.trace import Trace
from hooklab.models.zoo import seed_model
from hooklab.recording import record
from hooklab.studies.compare import config_text, normalise_config

__all__ = ["default_event", "partner", "record_seed_model", "run"]


def run(model: nn.Module, x: torch.Tensor, layers: Sequence[str] | None = None,
        kinds: Sequence[str] = (), edits: Any = "", target: Any = None,
        param_grads: bool = True, keep_tensors: bool = True,
        class_names: Sequence[str] = (), meta: dict[str, Any] | None = None) -> Trace:
    """Record ``model`` on ``x`` with the chosen layers, extra hook kinds and edits.

    Args:
        model: the module (put in eval mode by the caller when wanted).
        x: its input batch.
        layers: names / globs / types for :func:`hooklab.record` (``None``: every leaf module).
        kinds: extra PyTorch hook kinds to attach to those layers (every leaf when ``None``).
        edits: edit lines (``"conv2=scale(0.5)"``) or specs, as
            :func:`hooklab.studies.compare.normalise_config` reads them.
        target: what to backpropagate (``None``: the predicted class score; ``"sum"``; a class).
        param_grads, keep_tensors: passed to :func:`hooklab.record`.
        class_names: names of the logits, for ``meta["prediction_name"]``.
        meta: extra run metadata.

    Returns:
        The trace; ``meta`` gains ``prediction`` (and its name) for a ``(N, classes)`` output
        and ``edits_text``, the canonical edit lines.

    Raises:
        EditError, LayerNotFoundError, HookError: from parsing and recording.
    """
    specs = normalise_config(edits)
    hooks = None
    if kinds:
        where = list(layers) if layers else leaf_names(model)
        hooks = {w: list(kinds) for w in where}
    try:
        with record(model, list(layers) if layers else None, edits=specs, hooks=hooks,
                    param_grads=param_grads, keep_tensors=keep_tensors,
                    meta=dict(meta or {})) as rec:
            out = rec.run(x, target=target)
    finally:
        model.zero_grad(set_to_none=True)
    trace = rec.trace
    if out.dim() == 2:
        pred = int(out[0].argmax())
        trace.meta["prediction"] = pred
        if pred < len(class_names):
            trace.meta["prediction_name"] = class_names[pred]
    trace.meta["edits_text"] = config_text(specs)
    return trace


def record_seed_model(x: torch.Tensor, k: float, meta: dict[str, Any] | None = None) -> Trace:
    """The seed's SimpleModel (seed 42) recorded on ``x`` with the conv output gradient scaled
    by ``k`` and ``output.sum()`` backpropagated, parameter gradients included (Hook basics)."""
    model = seed_model(42)
    with record(model, edits={"conv": edit_fns.scale(k)}, param_grads=True,
                meta=dict(meta or {})) as rec:
        rec.run(x, target="sum")
    return rec.trace


def default_event(events: pd.DataFrame, seq: int | None = None) -> int:
    """Row position of the event to show first: the one with ``seq`` when present, else the
    first stored output, else 0."""
    seqs = events["seq"].tolist()
    if seq in seqs:
        return seqs.index(seq)
    outs = [i for i, (role, key) in enumerate(zip(events["role"], events["key"], strict=True))
            if role == "output" and key != ""]
    return outs[0] if outs else 0


def partner(trace: Trace, row: Any, role: str) -> torch.Tensor | None:
    """The stored tensor of ``role`` for the same layer, call and step as event ``row`` (the
    first one in firing order: for ``grad_output`` the value before an edit), or ``None``."""
    ev = trace.events
    sel = ev[(ev["layer"] == row["layer"]) & (ev["call"] == row["call"])
             & (ev["step"] == row["step"]) & (ev["role"] == role) & (ev["key"] != "")]
    sel = sel.sort_values("seq")
    return trace.tensor(sel.iloc[0]["key"]) if not sel.empty else None
