"""The CAM doctor: when a map is NaN, blank, uniform or the same for every class, say why.

:func:`diagnose` looks at a :class:`~hooklab.cam.engine.CamResult` and, given the model and
the input, probes the target layer once (one forward with the layer's output as a leaf, one
gradient of the target scores) to name the likely cause in one message:

=================== =============================================================================
``nan``             NaN/Inf in the activations or gradients (the input or the weights hold them)
``no_grad``         the output does not require grad although the layer does: part of the forward
                    after the layer runs under ``torch.no_grad`` / inference mode (or ``.detach()``)
``no_gradient``     the target score does not depend on the layer: no gradient reached it
``saturated``       the model ends in a softmax that is saturated (p ≈ 1): the gradients vanish
``after_pooling``   the layer's output is the same at every position (it comes after global
                    pooling, then broadcast): there is nothing spatial to show
``wrong_class``     the map is blank for a class the model does not predict
``class_agnostic``  the maps are identical for every class because the method ignores the class
``same_for_classes`` the maps are identical for every class (a class-specific method)
=================== =============================================================================

Example:
    >>> res = hooklab.cam.compute(model, x, "gradcam", target=3)
    >>> d = diagnose(res, model, x)
    >>> d[0].message if d else "the maps look fine"
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from hooklab.cam import engine
from hooklab.cam.methods import METHODS
from hooklab.core.modes import frozen
from hooklab.recording.scoped import HookScope

__all__ = ["Diagnosis", "diagnose", "probe", "CAUSES"]

#: Cause code -> the message's explanation and what to do.
CAUSES = {
    "nan": "the map holds NaN: the layer's activations or gradients contain NaN or Inf "
           "(check the input and the weights)",
    "no_grad": "no gradient can flow: the model's output does not require grad although the "
               "layer's does, so part of the forward after the layer runs under torch.no_grad() "
               "or torch.inference_mode() (or detaches the tensor); remove it from forward()",
    "no_gradient": "no gradient reached the layer: the target's score does not depend on it "
                   "(a branch not on the path to the output); pick a layer the output is "
                   "computed from",
    "saturated": "the model ends in a softmax that is saturated (the target's probability is "
                 "about 1), so its gradients vanish; explain the logits (drop the final "
                 "softmax) instead",
    "after_pooling": "the layer's output is the same at every position: it comes after global "
                     "pooling, so there is nothing spatial to show; pick a layer before the "
                     "pooling",
    "wrong_class": "the map is blank for a class the model does not predict: nothing in the "
                   "image speaks for it at this layer; explain the predicted class (target=None)",
    "class_agnostic": "the method ignores the class (it maps the layer's main component), so "
                      "every class gets the same map; use a class-specific method such as "
                      "'gradcam'",
    "same_for_classes": "every class gets the same map: the classes' scores depend on this "
                        "layer in the same way (e.g. duplicated outputs); try a later layer",
}


@dataclass(frozen=True)
class Diagnosis:
    """One finding: ``symptom`` (``"nan"``, ``"blank"``, ``"uniform"``, ``"same for every
    class"``), ``cause`` (a key of :data:`CAUSES`), the maps concerned and the message."""

    symptom: str
    cause: str
    maps: tuple[int, ...]
    message: str


def _constant(maps: torch.Tensor) -> torch.Tensor:
    flat = maps.flatten(1)
    return (flat.amax(1) - flat.amin(1)) <= 1e-6


def _probe(model: nn.Module, x: torch.Tensor, layer: str, targets: torch.Tensor
           ) -> tuple[str | None, torch.Tensor, torch.Tensor]:
    """One forward with the layer's output as a leaf: (cause or None, activation, logits)."""
    module = model.get_submodule(layer)
    store: dict[str, torch.Tensor] = {}

    def hook(_m: nn.Module, _i: object, out: torch.Tensor) -> torch.Tensor:
        a = out.detach().requires_grad_()
        store["a"] = a
        return a.clone()

    with HookScope() as hooks:
        hooks.forward(module, hook)
        with frozen(model), torch.inference_mode(False), torch.enable_grad():
            out = model(x.detach())
            logits = out[0] if isinstance(out, (tuple, list)) else out
            a = store["a"]
            if not logits.requires_grad:
                return "no_grad", a.detach(), logits.detach()
            score = logits.gather(1, targets.reshape(-1, 1).to(logits.device)).sum()
            (g,) = torch.autograd.grad(score, [a], allow_unused=True)
    if g is None or not bool(g.abs().gt(0).any()):
        return "no_gradient", a.detach(), logits.detach()
    if not bool(torch.isfinite(g).all()):
        return "nan", a.detach(), logits.detach()
    return None, a.detach(), logits.detach()


def probe(model: nn.Module, x: torch.Tensor, layer: str, target: int | torch.Tensor | None = None
          ) -> str | None:
    """The cause (a key of :data:`CAUSES`) found by probing ``layer`` once, or ``None``.

    For when no map came back at all: a forward under ``torch.no_grad`` after the layer makes
    the gradient itself fail. ``target``: a class for all images, one per image, or ``None``
    (each image's predicted class). No hook is left behind.
    """
    x = x if x.dim() == 4 else x[None]
    if target is None:
        with torch.no_grad():
            out = model(x)
        targets = (out[0] if isinstance(out, (tuple, list)) else out).argmax(1)
    else:
        targets = torch.as_tensor(target).long().reshape(-1).expand(x.shape[0])
    cause, a, _ = _probe(model, x, layer, targets)
    if cause is None and bool((a.flatten(2).std(dim=2) <= 1e-6).all()):
        return "after_pooling"
    return cause


def _blank_cause(res: engine.CamResult, idx: list[int], model: nn.Module | None,
                 x: torch.Tensor | None) -> str | None:
    if model is None or x is None:
        return None
    xs = (x if x.dim() == 4 else x[None])[res.sample[idx]]
    targets = res.targets[idx]
    spec = METHODS.get(res.method)
    cause, a, logits = _probe(model, xs, res.layers[0], targets)
    probs = logits.float()
    saturated = (bool((probs >= 0).all())
                 and torch.allclose(probs.sum(1), torch.ones(len(probs)), atol=1e-4)
                 and float(probs.gather(1, targets.reshape(-1, 1)).max()) > 0.999)
    if cause == "no_gradient" and saturated:  # the vanished gradient is the softmax's
        return "saturated"
    if cause is not None and (spec is None or spec.needs_grad):
        return cause
    if bool((a.flatten(2).std(dim=2) <= 1e-6).all()):
        return "after_pooling"
    if saturated:
        return "saturated"
    if bool((logits.argmax(1) != targets).any()):
        return "wrong_class"
    return None


def diagnose(res: engine.CamResult, model: nn.Module | None = None,
             x: torch.Tensor | None = None) -> list[Diagnosis]:
    """Findings for the maps of ``res`` (an empty list when every map looks fine).

    Args:
        res: what :func:`hooklab.cam.compute` returned.
        model, x: the model and input behind ``res``; with them the cause is probed (one
            forward and one gradient at the target layer; no hook is left behind).

    Returns:
        One :class:`Diagnosis` per symptom found (NaN, blank, uniform, same for every class).
    """
    out: list[Diagnosis] = []
    maps = res.maps.detach().float()
    raw = res.raw.detach().float()
    nan = (~torch.isfinite(raw.flatten(1))).any(1) | (~torch.isfinite(maps.flatten(1))).any(1)
    if bool(nan.any()):
        idx = nan.nonzero()[:, 0].tolist()
        out.append(Diagnosis("nan", "nan", tuple(idx), f"{len(idx)} map(s) are NaN: "
                             f"{CAUSES['nan']}"))
    const = _constant(raw) & ~nan
    for symptom, mask in (("blank", const & (raw.flatten(1).abs().amax(1) <= 1e-12)),
                          ("uniform", const & (raw.flatten(1).abs().amax(1) > 1e-12))):
        if not bool(mask.any()):
            continue
        idx = mask.nonzero()[:, 0].tolist()
        cause = _blank_cause(res, idx, model, x)
        text = CAUSES[cause] if cause else (
            "no cause found without the model; pass the model and the input to diagnose()"
            if model is None or x is None else "the layer's weighted activations cancel out; "
            "try another layer or method")
        out.append(Diagnosis(symptom, cause or "unknown", tuple(idx),
                             f"{len(idx)} map(s) are {symptom}: {text}"))
    k = len(res) // max(1, int(res.sample.max()) + 1) if len(res) else 1
    if k > 1:
        per = maps.reshape(-1, k, *maps.shape[1:])
        same = [i for i in range(per.shape[0]) if not bool(const[i * k])
                and all(torch.allclose(per[i, 0], per[i, j], atol=1e-5) for j in range(1, k))]
        if same:
            spec = METHODS.get(res.method)
            cause = "class_agnostic" if spec is not None and not spec.class_specific \
                else "same_for_classes"
            out.append(Diagnosis("same for every class", cause, tuple(same),
                                 f"{len(same)} image(s) have the same map for each of their "
                                 f"{k} classes: {CAUSES[cause]}"))
    return out
