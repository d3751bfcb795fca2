"""A Grad-CAM view as a stored run: what to record, and how to draw it again without the model.

Example:
    >>> trace = cam_run_trace(model, x, layer="conv3", target=3, meta={"cam": {...}})
    >>> store.save(trace)
    >>> res = rerender(store.load(run_id), "conv3", "gradcam")   # no model needed

The run keeps the target layer's activation and output gradient (for ``target``) and the model
input as an event of the root layer (``layer == ""``, role ``input``, key ``model_input``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hooklab.cam import engine
from hooklab.core.trace import INPUT_KEY, INPUT_LAYER, Trace
from hooklab.recording import record

__all__ = ["INPUT_KEY", "INPUT_LAYER", "cam_run_trace", "model_input", "rerender"]

def cam_run_trace(model: nn.Module, x: torch.Tensor, layer: str, target: int,
                  meta: dict[str, Any] | None = None) -> Trace:
    """Record what a CAM view needs to re-render without the model.

    The model's gradients are cleared afterwards (hold a shared model's lock around the call).
    """
    x = x.detach()
    try:
        with record(model, layers=[layer], meta=dict(meta or {})) as rec:
            rec.run(x, target=[int(target)])
    finally:
        model.zero_grad(set_to_none=True)
    trace = rec.trace
    x = x.cpu()
    trace.add_event(Trace.event_row(trace.next_seq(), "forward", "forward_pre", INPUT_LAYER,
                                    "input", x, key=INPUT_KEY), x.clone().float())
    return trace


def model_input(trace: Trace) -> torch.Tensor:
    """The model input stored by :func:`cam_run_trace`."""
    return trace.find(layer=INPUT_LAYER, role="input")


def rerender(trace: Trace, layer: str, method: str = "gradcam",
             model: nn.Module | None = None, target: int | None = None) -> engine.CamResult:
    """The stored view's CAM: from the stored activation and gradient, or, for Score-CAM (which
    needs forward passes), recomputed with ``model``.

    Raises:
        CamError: Score-CAM without a model.
    """
    x = model_input(trace)
    if not engine.METHODS[engine.method_name(method)].needs_model:
        size = (int(x.shape[-2]), int(x.shape[-1]))
        return engine.cam_from_trace(trace, layer, method, size=size)
    if model is None:
        raise engine.CamError(f"{engine.METHODS[engine.method_name(method)].title} needs the "
                              "model, and this run's model is not available")
    return engine.compute(model, x, method=method, layer=layer, target=target)
