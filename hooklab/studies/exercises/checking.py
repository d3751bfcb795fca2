"""Check a student's answer against the live computation, and explain it.

Each exercise kind has one function that computes the truth *now*, with hooklab (the same code
the pages show), and one comparison. Answers:

* ``tensor_grad``: a number, the predicted ``x.grad`` (for the chosen ``k``);
* ``norm_ratio``: ``{layer: ratio}``, edited / plain norm of the gradient that flows on from the
  layer's output (the edited gradient where the layer is edited);
* ``cam_peak``: ``(row, col)`` in image pixels; right when the normalised map there is at least
  the exercise's threshold;
* ``backward_len``: ``{kind: len(grad_input)}``.

Example:
    >>> ex = load_set().get("tensor-k")
    >>> check(ex, 48.0, k=0.25).correct
    True
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hooklab.studies.exercises.spec import Exercise, ExerciseError

__all__ = ["Check", "cam_map", "check", "grad_input_lengths", "norm_ratios", "truth"]


@dataclass(frozen=True)
class Check:
    """The verdict on one answer."""

    exercise: str                 # exercise id
    correct: bool                 # every part right
    answer: Any                   # the answer as given (JSON-able)
    truth: Any                    # the live value(s) (JSON-able)
    parts: dict[str, bool] = field(default_factory=dict)  # per layer / kind, when several
    explanation: str = ""         # why, with the live numbers
    params: dict[str, Any] = field(default_factory=dict)  # what was asked (e.g. the chosen k)


def _number(value: Any, what: str) -> float:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ExerciseError(f"{what}: no answer given yet")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ExerciseError(f"{what}: {value!r} is not a number") from None
    if not math.isfinite(v):
        raise ExerciseError(f"{what}: {value!r} is not a finite number")
    return v


def _mapping(answer: Any, keys: list[str], what: str) -> dict[str, float]:
    if not isinstance(answer, Mapping):
        raise ExerciseError(f"{what}: the answer is one number per item ({', '.join(keys)})")
    missing = [k for k in keys if k not in answer or answer[k] is None]
    if missing:
        raise ExerciseError(f"{what}: no answer for {', '.join(missing)}")
    return {k: _number(answer[k], f"{what} [{k}]") for k in keys}


# -- live computations (deterministic: the seed's inputs and hooklab's shipped weights) -------

@functools.lru_cache(maxsize=32)
def _tensor_grad(k: float, x0: float) -> tuple[float, float]:
    from hooklab.studies.lessons import tensor_hook_lesson

    lesson = tensor_hook_lesson(k, x0=x0)
    return float(lesson.x_grad), float(lesson.dz_dy)


def _model(name: str, weights: str):
    from hooklab.models import zoo

    return zoo.get_model(name, weights=None if weights in ("", "random") else weights)


def _shapes_input(index: int):
    from hooklab.data import datasets

    x, _, _ = datasets.shapes_sample(index)
    return x[None]


@functools.lru_cache(maxsize=8)
def norm_ratios(model: str, weights: str, edit: str, layers: tuple[str, ...],
                index: int) -> dict[str, float]:
    """Edited / plain norm of the gradient flowing on from each layer's output (predicted
    class score of shapes test image ``index``)."""
    from hooklab.recording.recorder import record

    net, x = _model(model, weights), _shapes_input(index)
    norms: list[dict[str, float]] = []
    for edits in (None, edit):
        with record(net, list(layers), edits=edits, keep_tensors=False, inputs=False) as rec:
            rec.run(x)
        ev = rec.trace.events
        ev = ev[ev["phase"] == "backward"]
        out: dict[str, float] = {}
        for layer in layers:
            rows = ev[ev["layer"] == layer]
            flows = rows[rows["role"] == "edited"]
            if flows.empty:
                flows = rows[rows["role"] == "grad_output"]
            out[layer] = float(flows["norm"].iloc[-1])
        norms.append(out)
    return {layer: norms[1][layer] / norms[0][layer] if norms[0][layer] else float("nan")
            for layer in layers}


@functools.lru_cache(maxsize=8)
def cam_map(model: str, weights: str, index: int, layer: str, method: str) -> np.ndarray:
    """The normalised ``(H, W)`` map of shapes test image ``index`` (predicted class)."""
    from hooklab.cam.engine import compute

    res = compute(_model(model, weights), _shapes_input(index), method, layer=layer)
    return res.maps[0].detach().cpu().numpy().astype(np.float32)


@functools.lru_cache(maxsize=1)
def grad_input_lengths() -> dict[str, int]:
    """``len(grad_input)`` each backward hook kind received on the seed's conv."""
    from hooklab.studies.lessons import backward_hook_lesson

    return {k: len(r.grad_input) for k, r in backward_hook_lesson().kinds.items()}


def truth(ex: Exercise, **choice: Any) -> Any:
    """The live answer of ``ex`` (``choice``: e.g. ``k`` when the student picks it)."""
    p = ex.params
    if ex.kind == "tensor_grad":
        k = _number(choice.get("k", p["k"]), "k") if p["choose_k"] else float(p["k"])
        return _tensor_grad(k, float(p["x"]))[0]
    if ex.kind == "norm_ratio":
        return norm_ratios(p["model"], p["weights"], p["edit"], tuple(p["layers"]), p["index"])
    if ex.kind == "cam_peak":
        m = cam_map(p["model"], p["weights"], p["index"], p["layer"], p["method"])
        r, c = np.unravel_index(int(np.argmax(m)), m.shape)
        return [int(r), int(c)]
    if ex.kind == "backward_len":
        lengths = grad_input_lengths()
        return {k: lengths[k] for k in p["kinds"]}
    raise ExerciseError(f"exercise {ex.id!r}: unknown kind {ex.kind!r}")


def _zh(lang: str, en: str, zh: str) -> str:
    return zh if lang == "zh" else en


def check(ex: Exercise, answer: Any, *, lang: str = "en", **choice: Any) -> Check:
    """Compare ``answer`` with the live computation of ``ex``; explain in ``lang``.

    Raises:
        ExerciseError: the answer has the wrong shape (not a number, a missing layer...).
    """
    what = f"exercise {ex.id!r}"
    p = ex.params
    note = ex.note(lang)
    if ex.kind == "tensor_grad":
        k = _number(choice.get("k", p["k"]), "k") if p["choose_k"] else float(p["k"])
        got = _number(answer, what)
        grad, dz_dy = _tensor_grad(k, float(p["x"]))
        ok = abs(got - grad) <= float(p["tolerance"]) * max(1.0, abs(grad))
        x0 = float(p["x"])
        why = _zh(lang, f"dz/dx = dz/dy · k · dy/dx = {dz_dy:g} · {k:g} · {2 * x0:g} = {grad:g}.",
                  f"dz/dx = dz/dy · k · dy/dx = {dz_dy:g} · {k:g} · {2 * x0:g} = {grad:g}。")
        return Check(ex.id, ok, got, grad, {}, f"{why} {note}".strip(), {"k": k})
    if ex.kind == "norm_ratio":
        layers = list(p["layers"])
        got_map = _mapping(answer, layers, what)
        live = truth(ex)
        parts = {L: abs(got_map[L] - live[L]) <= float(p["tolerance"]) for L in layers}
        rows = ", ".join(f"{L}: {live[L]:.3g}" for L in layers)
        why = _zh(lang, f"Measured with {p['edit']}: {rows}.", f"用 {p['edit']} 实测：{rows}。")
        return Check(ex.id, all(parts.values()), got_map, live, parts, f"{why} {note}".strip())
    if ex.kind == "cam_peak":
        if not isinstance(answer, (list, tuple)) or len(answer) != 2:
            raise ExerciseError(f"{what}: the answer is a pixel (row, col)")
        m = cam_map(p["model"], p["weights"], p["index"], p["layer"], p["method"])
        r, c = (int(round(_number(v, what))) for v in answer)
        if not (0 <= r < m.shape[0] and 0 <= c < m.shape[1]):
            raise ExerciseError(f"{what}: ({r}, {c}) is outside the {m.shape[0]}x{m.shape[1]} "
                                "image")
        peak = truth(ex)
        value = float(m[r, c])
        ok = value >= float(p["threshold"])
        why = _zh(lang, f"The map peaks at (row {peak[0]}, col {peak[1]}); at your point "
                        f"(row {r}, col {c}) it is {value:.2f} (right from {p['threshold']:g}).",
                  f"热力图在 (行 {peak[0]}, 列 {peak[1]}) 最强；你点的 (行 {r}, 列 {c}) 处为 "
                  f"{value:.2f}（≥ {p['threshold']:g} 算对）。")
        return Check(ex.id, ok, [r, c], peak, {}, f"{why} {note}".strip(), {"value": value})
    if ex.kind == "backward_len":
        kinds = list(p["kinds"])
        got_map = _mapping(answer, kinds, what)
        live = truth(ex)
        parts = {k: int(got_map[k]) == live[k] and got_map[k] == int(got_map[k]) for k in kinds}
        from hooklab.studies.lessons import BACKWARD_KINDS

        lines = [f"{k}: {live[k]} — {BACKWARD_KINDS[k]['note']}" for k in kinds
                 if k in BACKWARD_KINDS]
        why = "\n".join(lines) if lang != "zh" else _zh(
            lang, "", "已弃用的 register_backward_hook：3 个（卷积的输入、权重、偏置，即最后一个操作的输入）；"
                      "register_full_backward_hook：1 个（模块输入）；full_backward_pre 与张量钩子："
                      "0 个（只收到 grad_output / grad）。")
        return Check(ex.id, all(parts.values()), {k: int(v) for k, v in got_map.items()}, live,
                     parts, f"{why} {note}".strip())
    raise ExerciseError(f"{what}: unknown kind {ex.kind!r}")
