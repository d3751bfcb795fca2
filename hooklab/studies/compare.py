"""A/B comparison of edit configurations: gradient-norm ratios, input gradients, CAMs, training.

:func:`compare_edits` runs the same model and input under two edit configurations (for example
no edit vs ``scale(0.5)`` on the output gradient of ``conv2``) and returns, per layer, the
gradient norm under each and the ratio ``B / A``. For halving at ``conv2`` of a sequential model:
every parameter gradient upstream of the edit (``conv1``, and ``conv2``'s own weights) has ratio
0.5, every one downstream (``conv3``, ``fc1``, ``fc2``) ratio 1.0, and so does the input gradient
(0.5).

Example:
    >>> cmp = compare_edits(model, x, None, {"conv2": "scale(0.5)"})
    >>> cmp.ratios("param_grad")
    {'conv1': 0.5, 'conv2': 0.5, 'conv3': 1.0, 'fc1': 1.0, 'fc2': 1.0}
    >>> cmp2 = EditComparison.from_trace(store.load(store.save(cmp.to_trace())))  # same view
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from hooklab.cam.engine import auto_layer, cam_from_trace
from hooklab.core.edits import Edit, EditSpec, normalise_edits
from hooklab.core.errors import HooklabError
from hooklab.core.layers import leaf_names
from hooklab.core.trace import INPUT_LAYER, Trace
from hooklab.recording.recorder import record
from hooklab.studies import train as train_mod

log = logging.getLogger(__name__)

__all__ = ["EditsConfig", "EditComparison", "TrainingComparison", "compare_edits",
           "compare_runs", "compare_training", "norm_table", "normalise_config",
           "config_text", "config_specs", "split_trace", "comparison_from_traces",
           "predicted_target", "TABLE_COLUMNS", "SIDES"]

#: ``{"conv2": scale(0.5)}`` / ``{"conv2": "scale(0.5)"}`` / ``["conv2=scale(0.5)"]`` /
#: a list of :class:`hooklab.core.edits.EditSpec` or their ``spec()`` dicts; ``None`` = no edit.
EditsConfig = Mapping[str, Edit | str] | Sequence[Any] | None

#: Columns of :func:`norm_table`.
TABLE_COLUMNS = ("layer", "call", "label", "quantity", "order", "norm_a", "norm_b", "ratio")
#: The two sides of a comparison.
SIDES = ("A", "B")


# ----------------------------------------------------------------------------------------------
# Configurations
# ----------------------------------------------------------------------------------------------
def normalise_config(config: EditsConfig) -> list[EditSpec]:
    """A configuration as a list of :class:`hooklab.core.edits.EditSpec` (empty for no edit).

    Raises:
        EditError: a malformed edit (unknown name, bad arguments, no ``LAYER=EDIT``).
    """
    return normalise_edits(config)


def config_specs(config: EditsConfig) -> list[dict[str, Any]]:
    """JSON-ready form of a configuration."""
    return [e.spec() for e in normalise_config(config)]


def config_text(config: EditsConfig) -> str:
    """:func:`hooklab.core.edits.describe` of a configuration, ``"no edit"`` when empty.

    Raises:
        EditError: a malformed edit.
    """
    return "; ".join(str(s) for s in normalise_config(config)) or "no edit"


# ----------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------
def _last_step(events: pd.DataFrame) -> pd.DataFrame:
    if events.empty:
        return events
    return events[events["step"] == events["step"].max()]


def _side_norms(events: pd.DataFrame) -> pd.DataFrame:
    """Per (quantity, layer, call) L2 norm of one side; parameters of a layer combined."""
    ev = _last_step(events)
    rows: list[dict[str, Any]] = []
    fwd = ev[ev["phase"] == "forward"]
    first_seq = fwd.groupby("layer", sort=False)["seq"].min()
    first_call = fwd.groupby(["layer", "call"], sort=False)["seq"].min()
    for quantity, sel in (("param_grad", ev[ev["role"] == "param_grad"]),
                          ("grad_output", ev[ev["role"] == "grad_output"]),
                          ("input_grad", ev[(ev["role"] == "grad_input")
                                            & (ev["layer"] == INPUT_LAYER)])):
        if sel.empty:
            continue
        keys = ["layer"] if quantity == "param_grad" else ["layer", "call"]
        for key, grp in sel.groupby(keys, sort=False):
            layer, call = (key[0], 0) if quantity == "param_grad" else key
            if layer == INPUT_LAYER:
                order = -1.0
            elif quantity == "param_grad":
                order = float(first_seq.get(layer, grp["seq"].min()))
            else:
                order = float(first_call.get((layer, call), grp["seq"].min()))
            rows.append({"layer": layer, "call": int(call), "quantity": quantity,
                         "norm": float(np.sqrt(np.sum(grp["norm"].to_numpy() ** 2))),
                         "order": order})
    return pd.DataFrame(rows, columns=["layer", "call", "quantity", "norm", "order"])


def norm_table(events_a: pd.DataFrame, events_b: pd.DataFrame) -> pd.DataFrame:
    """Per-layer gradient norms of two runs and the ratio ``B / A``.

    Quantities (column ``quantity``): ``param_grad`` (L2 norm over all of a layer's parameter
    gradients, ``sqrt(Σ‖g_p‖²)``), ``grad_output`` (gradient w.r.t. the layer output, one row per
    module call; with an edit on that layer this is the value *before* the edit) and
    ``input_grad`` (the model input). Only the last step of each run is used. Rows are in
    forward order; ``ratio`` is NaN where A's norm is 0 and B's is not, 1 where both are 0.

    Returns:
        DataFrame with :data:`TABLE_COLUMNS`.
    """
    a, b = _side_norms(events_a), _side_norms(events_b)
    keys = ["quantity", "layer", "call"]
    m = a.merge(b, on=keys, how="outer", suffixes=("_a", "_b"))
    if m.empty:
        return pd.DataFrame(columns=list(TABLE_COLUMNS))
    m["order"] = m["order_a"].fillna(m["order_b"])
    na, nb = m["norm_a"].to_numpy(float), m["norm_b"].to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where((na == 0) & (nb == 0), 1.0, nb / na)
    ratio[~np.isfinite(ratio)] = np.nan
    m["ratio"] = ratio
    calls = m.groupby(["quantity", "layer"])["call"].transform("max")
    m["label"] = [
        "input" if layer == INPUT_LAYER else (f"{layer} (call {c})" if mx > 0 else layer)
        for layer, c, mx in zip(m["layer"], m["call"], calls, strict=True)]
    qorder = {"input_grad": 0, "param_grad": 1, "grad_output": 2}
    m = m.assign(_q=m["quantity"].map(qorder)).sort_values(["_q", "order", "call"])
    return m.loc[:, list(TABLE_COLUMNS)].reset_index(drop=True)


# ----------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------
@dataclass
class EditComparison:
    """Two configurations on one model and input.

    Attributes:
        table: :func:`norm_table` of the two traces.
        trace_a, trace_b: the recordings (every leaf layer, parameter gradients, input gradient).
        input_grad_a, input_grad_b: ``d score / d x`` under each configuration, shape of ``x``.
        cam_a, cam_b: Grad-CAM maps ``(N, H, W)`` at ``cam_layer`` from each trace (``None``
            when not computed).
        cam_layer: the CAM's layer.
        target: the class whose score was backpropagated, per sample (fixed from a plain forward,
            so both sides backpropagate the same score).
        config_a, config_b: the configurations as JSON-ready specs.
    """

    table: pd.DataFrame
    trace_a: Trace
    trace_b: Trace
    input_grad_a: torch.Tensor | None
    input_grad_b: torch.Tensor | None
    cam_a: torch.Tensor | None = None
    cam_b: torch.Tensor | None = None
    cam_layer: str | None = None
    target: list[int] = field(default_factory=list)
    config_a: list[dict[str, Any]] = field(default_factory=list)
    config_b: list[dict[str, Any]] = field(default_factory=list)

    @property
    def cam_diff(self) -> torch.Tensor | None:
        """``cam_b - cam_a`` (``None`` without CAMs)."""
        if self.cam_a is None or self.cam_b is None:
            return None
        return self.cam_b - self.cam_a

    def ratios(self, quantity: str = "param_grad") -> dict[str, float]:
        """``{label: ratio}`` for one quantity, in forward order."""
        sel = self.table[self.table["quantity"] == quantity]
        return dict(zip(sel["label"], sel["ratio"].astype(float), strict=True))

    @property
    def input_grad_ratio(self) -> float:
        """‖input grad B‖ / ‖input grad A‖."""
        r = self.ratios("input_grad")
        return float(next(iter(r.values()))) if r else float("nan")

    # -- one stored run holds both sides ---------------------------------------------------
    def to_trace(self, meta: Mapping[str, Any] | None = None) -> Trace:
        """Both recordings in one trace (for :meth:`hooklab.TraceStore.save`).

        B's events follow A's (its ``seq`` shifted by A's count); tensor keys get the prefix
        ``"A:"``/``"B:"``; ``meta["compare"]`` says which ``seq`` range is which side, plus the
        configurations, the target and the CAM layer. :meth:`from_trace` rebuilds the view.
        """
        parts, tensors = [], {}
        sides: dict[str, list[int]] = {}
        offset = 0
        for side, tr in zip(SIDES, (self.trace_a, self.trace_b), strict=True):
            ev = tr.events.copy()
            ev["seq"] = ev["seq"] + offset
            ev["key"] = [f"{side}:{k}" if k else "" for k in ev["key"]]
            for k in tr.tensor_keys():
                tensors[f"{side}:{k}"] = tr.tensor(k)
            sides[side] = [offset, offset + len(ev)]
            offset += len(ev)
            parts.append(ev)
        events = pd.concat(parts, ignore_index=True)
        base = dict(self.trace_a.meta)
        base.update(meta or {})
        base["compare"] = {"mode": "edits", "sides": sides, "config_a": self.config_a,
                           "config_b": self.config_b, "target": self.target,
                           "cam_layer": self.cam_layer}
        base["edits"] = self.config_b
        base["truncated"] = bool(self.trace_a.truncated or self.trace_b.truncated)
        base["stored_bytes"] = self.trace_a.stored_bytes + self.trace_b.stored_bytes
        return Trace(events=events, tensors=tensors, meta=base)

    @classmethod
    def from_trace(cls, trace: Trace) -> EditComparison:
        """Rebuild a comparison saved with :meth:`to_trace` (no model needed)."""
        info = trace.meta.get("compare")
        if not isinstance(info, Mapping) or info.get("mode") != "edits":
            raise HooklabError("this run is not an edit comparison (no meta['compare'])")
        a, b = split_trace(trace)
        cmp = comparison_from_traces(a, b, cam_layer=info.get("cam_layer"))
        cmp.target = list(info.get("target") or [])
        cmp.config_a = list(info.get("config_a") or [])
        cmp.config_b = list(info.get("config_b") or [])
        return cmp


class _Prefixed(Mapping):
    """Read-only view of a trace's tensors under a key prefix (keeps lazy loading lazy)."""

    def __init__(self, trace: Trace, prefix: str, keys: Iterable[str]) -> None:
        self._trace, self._prefix = trace, prefix
        self._keys = [k[len(prefix):] for k in keys if k.startswith(prefix)]

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._trace.tensor(self._prefix + key)

    def __iter__(self):
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def split_trace(trace: Trace) -> tuple[Trace, Trace]:
    """The two sides of a trace made by :meth:`EditComparison.to_trace`."""
    info = trace.meta.get("compare") or {}
    sides = info.get("sides")
    if not isinstance(sides, Mapping) or set(sides) != set(SIDES):
        raise HooklabError("this run does not hold two sides (meta['compare']['sides'])")
    out = []
    keys = trace.tensor_keys()
    for side in SIDES:
        lo, hi = (int(v) for v in sides[side])
        ev = trace.events[(trace.events["seq"] >= lo) & (trace.events["seq"] < hi)].copy()
        ev["seq"] = ev["seq"] - lo
        prefix = f"{side}:"
        ev["key"] = [k[len(prefix):] if k.startswith(prefix) else "" for k in ev["key"]]
        meta = {k: v for k, v in trace.meta.items() if k != "compare"}
        out.append(Trace(events=ev, tensors=_Prefixed(trace, prefix, keys), meta=meta))
    return out[0], out[1]


def _input_grad_of(trace: Trace) -> torch.Tensor | None:
    sel = trace.select(layer=INPUT_LAYER, role="grad_input")
    if sel.empty or not sel.iloc[-1]["key"]:
        return None
    return trace.tensor(sel.iloc[-1]["key"])


def _cam_of(trace: Trace, layer: str | None, size: tuple[int, int] | None
            ) -> torch.Tensor | None:
    if not layer:
        return None
    return cam_from_trace(trace, layer, "gradcam", size=size).maps


def comparison_from_traces(trace_a: Trace, trace_b: Trace, cam_layer: str | None = None
                           ) -> EditComparison:
    """An :class:`EditComparison` from two recorded traces (tables, input grads, CAMs)."""
    ga, gb = _input_grad_of(trace_a), _input_grad_of(trace_b)
    size = (int(ga.shape[-2]), int(ga.shape[-1])) if ga is not None and ga.dim() == 4 else None
    cam_a = _cam_of(trace_a, cam_layer, size)
    cam_b = _cam_of(trace_b, cam_layer, size)
    return EditComparison(table=norm_table(trace_a.events, trace_b.events), trace_a=trace_a,
                          trace_b=trace_b, input_grad_a=ga, input_grad_b=gb, cam_a=cam_a,
                          cam_b=cam_b, cam_layer=cam_layer if cam_a is not None else None)


def compare_runs(trace_a: Trace, trace_b: Trace, cam_layer: str | None = None
                 ) -> EditComparison:
    """Compare two stored runs (e.g. from the Runs page): per-layer norm ratios ``B / A``, input
    gradients when recorded, and CAMs at ``cam_layer`` when both runs stored its activation and
    gradient. A run that itself holds two sides (an edit comparison) contributes its side B.

    Example:
        >>> cmp = compare_runs(store.load(id_a), store.load(id_b))
        >>> cmp.table[cmp.table.quantity == "grad_output"][["label", "ratio"]]
    """
    def one(tr: Trace) -> Trace:
        return split_trace(tr)[1] if isinstance(tr.meta.get("compare"), Mapping) and \
            tr.meta["compare"].get("mode") == "edits" else tr

    a, b = one(trace_a), one(trace_b)
    cmp = comparison_from_traces(a, b, cam_layer=None)
    if cam_layer:
        try:
            cmp = comparison_from_traces(a, b, cam_layer=cam_layer)
        except HooklabError as exc:
            log.info("no CAM for the run comparison: %s", exc)
    cmp.config_a = list(a.meta.get("edits") or [])
    cmp.config_b = list(b.meta.get("edits") or [])
    return cmp


# ----------------------------------------------------------------------------------------------
# Running the two configurations
# ----------------------------------------------------------------------------------------------
def _add_input_grad(trace: Trace, grad: torch.Tensor | None) -> None:
    """Append the model input gradient as an event (layer "", role grad_input)."""
    if grad is None:
        return
    step = int(trace.events["step"].max()) if len(trace.events) else 0
    trace.record_event("backward", "tensor", INPUT_LAYER, "grad_input", grad, step=step,
                       key=f"input_grad_{trace.next_seq()}")


def _edit_layers(config: EditsConfig) -> list[str]:
    """Layers an edit configuration touches (a parameter name gives its module)."""
    out = []
    for e in normalise_config(config):
        name = e.layer
        if e.target == "param_grad" and "." in name and name.rsplit(".", 1)[1] in ("weight",
                                                                                   "bias"):
            name = name.rsplit(".", 1)[0]
        out.append(name)
    return out


def _record_side(model: nn.Module, x: torch.Tensor, config: EditsConfig,
                 layers: Any, target: list[int], meta: Mapping[str, Any],
                 max_bytes: int, cam_layer: str | None = None) -> Trace:
    xx = x.detach().clone().requires_grad_(True)
    try:
        # the CAM layer's activation and gradient are kept past the budget (on a large model
        # the leaves before it would use it all up)
        with record(model, layers=layers, edits=normalise_config(config), param_grads=True,
                    max_bytes=max_bytes, meta=dict(meta),
                    keep_layers=[cam_layer] if cam_layer else ()) as rec:
            rec.run(xx, target=target)
    finally:
        model.zero_grad(set_to_none=True)
    trace = rec.trace
    _add_input_grad(trace, xx.grad)
    return trace


def predicted_target(model: nn.Module, x: torch.Tensor) -> list[int]:
    """Each sample's predicted class from a plain forward (no hooks, no graph)."""
    with torch.no_grad():
        out = model(x)
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise HooklabError("compare_edits needs a classifier output (N, classes); pass target=")
    return out.argmax(dim=1).tolist()


def compare_edits(model: nn.Module, x: torch.Tensor, config_a: EditsConfig = None,
                  config_b: EditsConfig = None, layers: Any = None, *, target: Any = None,
                  cam_layer: str | None = "auto", max_bytes: int = 64 * 2**20,
                  meta: Mapping[str, Any] | None = None) -> EditComparison:
    """Run ``model(x)`` forward and backward under two edit configurations and compare.

    Both sides backpropagate the same score: each sample's predicted class from a plain forward
    (or ``target``). Parameter gradients of every layer are recorded, plus each layer's output
    gradient and the input gradient ``d score / d x``.

    Args:
        model: the model (its training flag and hooks are restored; ``.grad`` is cleared).
        x: the input batch.
        config_a, config_b: edit configurations (:data:`EditsConfig`); default none vs none.
        layers: layers to record (default every leaf module); edited layers are always added.
        target: class per sample, an int, ``"sum"`` or a callable (see ``Recorder.run``).
        cam_layer: Grad-CAM layer for the CAM difference: ``"auto"`` (hooklab.cam.engine.auto_layer),
            a layer name, or ``None`` for no CAM.
        max_bytes: tensor budget per side.
        meta: extra metadata for both traces.

    Returns:
        :class:`EditComparison`; ``ratios("param_grad")`` gives ``B / A`` per layer.

    Raises:
        EditError: a malformed edit. LayerNotFoundError: an unknown layer (close names listed).

    Example:
        >>> cmp = compare_edits(model, x, None, {"conv2": "scale(0.5)"})
        >>> cmp.ratios("param_grad")["conv1"], cmp.ratios("param_grad")["fc2"]
        (0.5, 1.0)
    """
    specs_a, specs_b = normalise_config(config_a), normalise_config(config_b)
    if target is None:
        target = predicted_target(model, x)
    elif isinstance(target, int):
        target = [int(target)] * int(x.shape[0])
    rec_layers: Any = layers
    if layers is not None:
        extra = [*_edit_layers(specs_a), *_edit_layers(specs_b)]
        rec_layers = ([layers] if isinstance(layers, str) else list(layers)) + extra
    chosen_cam: str | None = None
    if cam_layer == "auto":
        try:
            chosen_cam = auto_layer(model, x)
        except HooklabError as exc:
            log.info("no CAM layer: %s", exc)
    elif cam_layer:
        chosen_cam = cam_layer
    if chosen_cam and rec_layers is not None:
        rec_layers = list(rec_layers) + [chosen_cam]
    elif chosen_cam and chosen_cam not in leaf_names(model):  # a block (ResNet's layer4)
        rec_layers = [*leaf_names(model), chosen_cam]
    base = dict(meta or {})
    trace_a = _record_side(model, x, specs_a, rec_layers, target,
                           {**base, "side": "A"}, max_bytes, chosen_cam)
    trace_b = _record_side(model, x, specs_b, rec_layers, target,
                           {**base, "side": "B"}, max_bytes, chosen_cam)
    cmp = comparison_from_traces(trace_a, trace_b, cam_layer=chosen_cam)
    cmp.target = [int(t) for t in target] if isinstance(target, list) else []
    cmp.config_a = [e.spec() for e in specs_a]
    cmp.config_b = [e.spec() for e in specs_b]
    return cmp


# ----------------------------------------------------------------------------------------------
# Over training
# ----------------------------------------------------------------------------------------------
@dataclass
class TrainingComparison:
    """Two short trainings, one per configuration.

    Attributes:
        history_a, history_b: per-step history DataFrames from :func:`hooklab.studies.train.train`.
        config_a, config_b: the training configurations (as dicts).
    """

    history_a: pd.DataFrame
    history_b: pd.DataFrame
    config_a: dict[str, Any]
    config_b: dict[str, Any]
    models: tuple[nn.Module, nn.Module] | None = None
    test_accuracy_a: float = float("nan")
    test_accuracy_b: float = float("nan")

    def to_trace(self, meta: Mapping[str, Any] | None = None) -> Trace:
        """An events-free trace whose ``meta["compare"]`` holds both histories (JSON)."""
        base = dict(meta or {})
        base["compare"] = {
            "mode": "training", "config_a": self.config_a, "config_b": self.config_b,
            "history_a": json.loads(self.history_a.to_json(orient="split")),
            "history_b": json.loads(self.history_b.to_json(orient="split")),
            "test_accuracy_a": _json_float(self.test_accuracy_a),
            "test_accuracy_b": _json_float(self.test_accuracy_b),
        }
        base["edits"] = self.config_b.get("edits", [])
        return Trace(meta=base)

    @classmethod
    def from_trace(cls, trace: Trace) -> TrainingComparison:
        info = trace.meta.get("compare")
        if not isinstance(info, Mapping) or info.get("mode") != "training":
            raise HooklabError("this run is not a training comparison")

        def frame(d: Mapping[str, Any]) -> pd.DataFrame:
            return pd.DataFrame(d["data"], columns=d["columns"])

        def acc(v: Any) -> float:
            return float("nan") if v is None else float(v)

        return cls(frame(info["history_a"]), frame(info["history_b"]),
                   dict(info.get("config_a") or {}), dict(info.get("config_b") or {}),
                   test_accuracy_a=acc(info.get("test_accuracy_a")),
                   test_accuracy_b=acc(info.get("test_accuracy_b")))


def _json_float(v: float) -> float | None:
    return None if v is None or not np.isfinite(v) else float(v)


def _config_dict(config: Any) -> dict[str, Any]:
    if hasattr(config, "to_dict"):
        return json.loads(json.dumps(config.to_dict(), default=str))
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        d = dataclasses.asdict(config)
    elif isinstance(config, Mapping):
        d = dict(config)
    else:
        d = {"config": str(config)}
    return json.loads(json.dumps(d, default=str))


def compare_training(config_a: Any, config_b: Any, steps: int | None = None,
                     progress: Callable[[float, str], None] | None = None,
                     keep_models: bool = False) -> TrainingComparison:
    """Train under two configurations (``hooklab.studies.train.TrainConfig``) and return both histories.

    Args:
        config_a, config_b: training configurations (same data and seed, different edits).
        steps: overrides both configurations' number of steps when given.
        progress: ``progress(fraction, text)``; A covers [0, 0.5], B [0.5, 1]. (The trainer's
            own ``progress(step, total, metrics)`` is translated.)
        keep_models: also return the two trained models.

    """
    histories, models, cfgs = [], [], []
    for i, (side, cfg) in enumerate(zip(SIDES, (config_a, config_b), strict=True)):
        if steps is not None and dataclasses.is_dataclass(cfg) and not isinstance(cfg, type) \
                and "steps" in {f.name for f in dataclasses.fields(cfg)}:
            cfg = dataclasses.replace(cfg, steps=int(steps))
        cfgs.append(cfg)

        def side_progress(*args: Any, _i: int = i, _side: str = side) -> None:
            if progress is None:
                return
            frac = _fraction(args)
            progress(min(1.0, 0.5 * _i + 0.5 * frac), f"{_side}: {_describe(args)}")

        model, history = train_mod.train(cfg, side_progress)
        histories.append(history)
        models.append(model)
    if progress is not None:
        progress(1.0, "done")
    acc = [float(h.attrs.get("test_accuracy", float("nan"))) for h in histories]
    return TrainingComparison(histories[0], histories[1], _config_dict(cfgs[0]),
                              _config_dict(cfgs[1]),
                              (models[0], models[1]) if keep_models else None,
                              test_accuracy_a=acc[0], test_accuracy_b=acc[1])


def _fraction(args: tuple[Any, ...]) -> float:
    """Progress fraction from whatever the trainer's callback passes."""
    if len(args) >= 2 and all(isinstance(a, (int, float)) for a in args[:2]) and args[1]:
        return float(args[0]) / float(args[1])  # (step, total)
    if args and isinstance(args[0], (int, float)):
        return float(min(max(args[0], 0.0), 1.0))
    if args and isinstance(args[0], Mapping):
        d = args[0]
        if "step" in d and d.get("steps"):
            return float(d["step"]) / float(d["steps"])
    return 0.0


def _describe(args: tuple[Any, ...]) -> str:
    texts = [a for a in args if isinstance(a, str)]
    if texts:
        return texts[0]
    if len(args) >= 2 and all(isinstance(a, (int, float)) for a in args[:2]):
        return f"step {int(args[0])}/{int(args[1])}"
    return "training"
