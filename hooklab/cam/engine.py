"""Class activation maps (the Grad-CAM family) from a live model or from a stored run.

:func:`compute` runs one forward pass with a forward hook on each target layer and, for gradient
methods, one ``torch.autograd.grad`` of the selected scores with respect to the captured
activations. The fast path costs close to one forward pass:

* parameters are frozen (``requires_grad=False``) and the input detached for the call, so no
  autograd graph is built below the target layer and no weight gradient is ever computed;
* the hook replaces the layer output with a detached leaf ``A`` that requires grad (and hands the
  network a clone, so an in-place op after the layer, e.g. torchvision's ``ReLU(inplace=True)``,
  cannot modify ``A``; the gradient is therefore the gradient w.r.t. the layer output itself);
* the model is put in eval mode; every flag and every hook handle is restored in ``finally``,
  also when the forward raises.

Method formulas are in :mod:`hooklab.cam.methods`. Maps are resized bilinearly to the input size
(``align_corners=False``) and min-max normalised per map, as in the seed.

Example:
    >>> res = hooklab.cam.engine.compute(model, x, method="gradcam", layer="conv3")
    >>> res.maps.shape            # (B, 32, 32), values in [0, 1]
    >>> res = hooklab.cam.engine.compute(model, x, target="topk:3")   # 3 maps per image
"""

from __future__ import annotations

import difflib
import logging
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hooklab.cam.context import CamContext
from hooklab.cam.methods import METHODS, CamMethod, method_name, minmax
from hooklab.core.errors import HooklabError, NonSpatialLayerError
from hooklab.core.layers import LayerItem, LayerSpec, resolve_layers
from hooklab.core.modes import frozen
from hooklab.models.zoo import auto_target_layer

log = logging.getLogger(__name__)

__all__ = ["CamError", "CamResult", "METHODS", "compute", "cam_from_trace", "auto_layer",
           "frozen", "resize", "NonSpatialLayerError"]

Target = int | str | Sequence[int] | torch.Tensor | None


class CamError(HooklabError, ValueError):
    """A CAM request is malformed: unknown method, bad target, bad input, missing events."""


@dataclass
class CamResult:
    """What :func:`compute` and :func:`cam_from_trace` return.

    With ``k`` targets per image (``k = 1`` unless ``target="topk:k"``) there are ``N = B·k``
    maps, ordered image-major (image 0's targets first).

    Attributes:
        maps: ``(N, H, W)`` float32 in [0, 1] (min-max per map).
        raw: ``(N, h, w)`` raw map at the layer's resolution, after the method's ReLU, before
            resizing and normalisation. With several layers fused: ``(N, H, W)``, the fused map
            before its final normalisation.
        targets: ``(N,)`` target class of each map (``-1`` when unknown, e.g. from a trace).
        scores: ``(N,)`` the target's logit (NaN when unknown).
        logits: ``(B, K)`` model output, or ``None`` when unknown.
        sample: ``(N,)`` index of the input image of each map.
        layers: the target layer names.
        method: canonical method name.
        per_layer: raw map ``(N, h_l, w_l)`` per layer.
    """

    maps: torch.Tensor
    raw: torch.Tensor
    targets: torch.Tensor
    scores: torch.Tensor
    logits: torch.Tensor | None
    sample: torch.Tensor
    layers: tuple[str, ...]
    method: str
    per_layer: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def layer(self) -> str:
        """The target layer name (names joined by ``"+"`` when several were fused)."""
        return "+".join(self.layers)

    def __len__(self) -> int:
        return int(self.maps.shape[0])

    def to(self, device: torch.device | str) -> CamResult:
        """The same result with every tensor on ``device`` (e.g. ``"cpu"`` before ``.numpy()``)."""
        logits = self.logits.to(device) if self.logits is not None else None
        return CamResult(maps=self.maps.to(device), raw=self.raw.to(device),
                         targets=self.targets.to(device), scores=self.scores.to(device),
                         logits=logits, sample=self.sample.to(device), layers=self.layers,
                         method=self.method,
                         per_layer={k: v.to(device) for k, v in self.per_layer.items()})


# -- state handling ----------------------------------------------------------------------------

class _NonSpatial(Exception):
    """Raised inside a hook when a target layer's output is not (N, C, H, W) with H·W > 1."""

    def __init__(self, name: str, what: str) -> None:
        super().__init__(name, what)
        self.name, self.what = name, what


def _describe(output: Any) -> str:
    if isinstance(output, torch.Tensor):
        return "shape (" + ", ".join(str(s) for s in output.shape) + ")"
    return f"a {type(output).__name__}, not a tensor"


def _is_spatial(output: Any) -> bool:
    return (isinstance(output, torch.Tensor) and output.dim() == 4
            and output.shape[2] * output.shape[3] > 1)


# -- layers -------------------------------------------------------------------------------------

_AUTO_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, ...], str]] = (
    weakref.WeakKeyDictionary())


def auto_layer(model: nn.Module, x: torch.Tensor) -> str:
    """The default CAM layer: :func:`hooklab.models.zoo.auto_target_layer` for ``x``'s shape.

    That is the last module (by the end of its forward) with a spatial output, skipping
    parameter-free modules and modules called several times: the SimpleCNN gives ``conv3`` (the
    seed's layer), torchvision's ResNet ``layer4``. Cached per model and input shape.

    Raises:
        NonSpatialLayerError: no module has a spatial output.
    """
    key = tuple(int(s) for s in x.shape[1:])
    cached = _AUTO_CACHE.get(model, {}).get(key)
    if cached is None:
        cached = auto_target_layer(model, key)
        _AUTO_CACHE.setdefault(model, {})[key] = cached
    return cached


def _resolve_layers(model: nn.Module, layer: LayerSpec, x: torch.Tensor) -> list[str]:
    """``None``: the auto layer; else :func:`hooklab.core.layers.resolve_layers` (a glob or a
    type such as ``"Conv2d"`` selects every match, and their maps are fused)."""
    if layer is None:
        return [auto_layer(model, x)]
    if not isinstance(layer, (str, type, nn.Module)):
        layer = list(layer)
        if not layer:
            raise CamError("empty list of layers")
    return resolve_layers(model, layer)


def _suggestion(model: nn.Module, x: torch.Tensor) -> str:
    try:
        return f"; try {auto_layer(model, x)!r} (the last layer with a spatial output)"
    except HooklabError:
        return ""


# -- targets ------------------------------------------------------------------------------------

def _targets(target: Target, logits: torch.Tensor) -> torch.Tensor:
    """Target classes as ``(B, k)`` long tensor."""
    b, k = logits.shape
    if target is None:
        t = logits.argmax(dim=1, keepdim=True)
    elif isinstance(target, str):
        text = target.strip().lower()
        if not text.startswith("topk"):
            raise CamError(f"unknown target {target!r}; use None, a class index, a list of "
                           "indices (one per image) or 'topk:K'")
        try:
            n = int(text.split(":", 1)[1]) if ":" in text else 1
        except ValueError as exc:
            raise CamError(f"bad top-k target {target!r}; write e.g. 'topk:3'") from exc
        if not 1 <= n <= k:
            raise CamError(f"top-k must be between 1 and the number of classes ({k}), got {n}")
        t = logits.topk(n, dim=1).indices
    elif isinstance(target, bool):
        raise CamError("a target is a class index, not a bool")
    elif isinstance(target, int):
        t = torch.full((b, 1), int(target), dtype=torch.long, device=logits.device)
    else:
        try:
            t = torch.as_tensor(target, device=logits.device).long().reshape(-1, 1)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise CamError(f"cannot read targets {target!r}: {exc}") from exc
        if t.shape[0] != b:
            raise CamError(f"{t.shape[0]} targets for a batch of {b} images; give one per image")
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= k):
        raise CamError(f"target class out of range: the model has {k} outputs (0..{k - 1})")
    return t.long()


def _logits(out: Any) -> torch.Tensor:
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        out = out[0]
    if isinstance(out, dict):
        out = out.get("out", out.get("logits"))
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise CamError(f"the model must return logits of shape (B, classes), got {_describe(out)}")
    return out


# -- the live path ------------------------------------------------------------------------------

def resize(raw: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``(N, h, w)`` maps to ``size`` (``align_corners=False``, as the seed)."""
    if tuple(raw.shape[-2:]) == tuple(size):
        return raw
    return F.interpolate(raw[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def _capture(model: nn.Module, x: torch.Tensor, names: list[str], need_grad: bool
             ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One forward with a hook per layer; returns the captured activations and the logits."""
    store: dict[str, torch.Tensor] = {}
    handles = []

    def make(name: str):
        def hook(_m: nn.Module, _i: Any, out: Any) -> torch.Tensor | None:
            if not _is_spatial(out):
                raise _NonSpatial(name, _describe(out))
            if not need_grad:
                store[name] = out.detach()
                return None
            # A leaf at the first captured layer (nothing below needs a graph); a layer above
            # an earlier captured one keeps its graph so the gradient reaches both.
            act = out if out.requires_grad else out.detach().requires_grad_()
            store[name] = act
            return act.clone()  # in-place ops downstream modify the clone, never `act`
        return hook

    try:
        for name in names:
            handles.append(model.get_submodule(name).register_forward_hook(make(name)))
        grad_mode = torch.enable_grad() if need_grad else torch.no_grad()
        with torch.inference_mode(False), grad_mode:  # works under a caller's inference_mode
            out = model(x)
    finally:
        for h in handles:
            h.remove()
    missing = [n for n in names if n not in store]
    if missing:
        raise CamError(f"layer(s) {', '.join(missing)} did not run in the forward pass")
    return store, _logits(out)


def _replace_output(model: nn.Module, x: torch.Tensor, name: str, sample: int,
                    acts: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Logits of image ``sample`` with layer ``name``'s output replaced by each of ``acts``."""
    module = model.get_submodule(name)
    outs = []
    for s in range(0, acts.shape[0], batch_size):
        chunk = acts[s:s + batch_size]

        def hook(_m: nn.Module, _i: Any, out: Any, chunk: torch.Tensor = chunk) -> torch.Tensor:
            return chunk.to(dtype=out.dtype, device=out.device)

        handle = module.register_forward_hook(hook)
        try:
            with torch.no_grad():
                z = x[sample:sample + 1].expand(chunk.shape[0], *x.shape[1:])
                outs.append(_logits(model(z)).float())
        finally:
            handle.remove()
    return torch.cat(outs)


def _capture_grads(model: nn.Module, z: torch.Tensor, name: str, targets: torch.Tensor,
                   create_graph: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The layer's activation and ``d(Σ target logits)/dA`` for inputs ``z``."""
    z = z.detach().contiguous()
    with torch.enable_grad():
        acts, logits = _capture(model, z, [name], need_grad=True)
        a = acts[name]
        t = targets.to(logits.device).long().reshape(-1, 1)
        if t.shape[0] != logits.shape[0]:
            raise CamError(f"{t.shape[0]} targets for {logits.shape[0]} inputs")
        score = logits.gather(1, t).sum()
        (g,) = torch.autograd.grad(score, [a], create_graph=create_graph, allow_unused=True)
    if g is None:
        g = torch.zeros_like(a)
    if create_graph:
        return a, g
    return a.detach().float(), g.detach().float()


def _context(model: nn.Module, x: torch.Tensor, name: str, acts: torch.Tensor,
             grads: torch.Tensor | None, targets: torch.Tensor, batch_size: int,
             eigen_smooth: bool = False) -> CamContext:
    """The :class:`CamContext` of one layer for a model-calling method."""

    def logits_fn(z: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return _logits(model(z)).float()

    return CamContext(
        model=model, x=x, layer=name, acts=acts, grads=grads, targets=targets,
        batch_size=batch_size, eigen_smooth=eigen_smooth, logits_fn=logits_fn,
        replace_fn=lambda i, a: _replace_output(model, x, name, i, a, batch_size),
        capture_fn=lambda z, t, cg: _capture_grads(model, z, name, t, cg))


def compute(model: nn.Module, x: torch.Tensor, method: str = "gradcam", layer: LayerSpec = None,
            target: Target = None, *, layers: Sequence[LayerItem] | None = None,
            size: tuple[int, int] | None = None, fuse: str = "mean",
            batch_size: int = 128) -> CamResult:
    """Class activation maps for a batch.

    Args:
        model: a classifier returning logits ``(B, K)``.
        x: images ``(B, C, H, W)`` (a single ``(C, H, W)`` image is accepted).
        method: a key of :data:`METHODS` (``"gradcam"``, ``"gradcam++"``, ``"xgradcam"``,
            ``"hirescam"``, ``"layercam"``, ``"scorecam"``, ``"eigencam"``).
        layer: a :data:`hooklab.core.layers.LayerSpec` like :func:`hooklab.record`'s: a
            name, glob, type (``"Conv2d"``) or module; ``None`` picks :func:`auto_layer`;
            several layers (a list, a glob or a type matching several) are fused.
            A module called several times in one forward (a shared pool) gives its last call.
        target: ``None`` (each image's predicted class), a class index for all images, one
            index per image, or ``"topk:K"`` (K maps per image, best class first).
        layers: several layers to fuse (same as passing a list as ``layer``).
        size: output size; the input's ``(H, W)`` by default.
        fuse: how per-layer maps (each resized and normalised) combine: ``"mean"`` or ``"max"``.
        batch_size: masked images per forward for Score-CAM.

    Returns:
        A :class:`CamResult`.

    Raises:
        CamError: unknown method, bad target or input.
        LayerNotFoundError: unknown layer (close names are suggested).
        NonSpatialLayerError: a layer's output is not ``(N, C, H, W)``; names a suitable layer.

    Example:
        >>> res = compute(model, x, "gradcam", layer="conv3", target=[3, 5])
        >>> res.maps.shape, res.targets
    """
    try:
        spec: CamMethod = METHODS[method_name(method)]
    except KeyError as exc:
        raise CamError(f"unknown CAM method {method!r}; known: {', '.join(METHODS)}") from exc
    if not isinstance(x, torch.Tensor):
        raise CamError(f"input must be a tensor, not {type(x).__name__}")
    if x.dim() == 3:
        x = x[None]
    if x.dim() != 4 or x.shape[0] == 0:
        raise CamError(f"input must be images (B, C, H, W), got shape {tuple(x.shape)}")
    if fuse not in ("mean", "max"):
        raise CamError(f"fuse must be 'mean' or 'max', not {fuse!r}")
    # A strided view (a permuted HWC image, a crop) would reach models that call .view() on
    # their features (the seed's SimpleCNN does) in a layout they cannot view; same values.
    x = x.detach().contiguous()
    if layers is not None:
        layer = list(layers) if layer is None else [layer, *layers]  # type: ignore[list-item]
    names = _resolve_layers(model, layer, x)
    out_size = tuple(size) if size is not None else tuple(x.shape[-2:])

    grad_mode = torch.enable_grad() if spec.needs_grad else torch.no_grad()
    with frozen(model), torch.inference_mode(False), grad_mode:
        try:
            acts, logits = _capture(model, x, names, spec.needs_grad)
        except _NonSpatial as exc:
            raise NonSpatialLayerError(
                f"layer {exc.name!r} has output {exc.what}; a CAM needs a spatial "
                f"(N, C, H, W) output{_suggestion(model, x)}") from exc
        targets = _targets(target, logits.detach())
        b, k = targets.shape
        per_layer: dict[str, list[torch.Tensor]] = {n: [] for n in names}
        for j in range(k):
            tj = targets[:, j]
            if spec.needs_grad:
                selected = logits.gather(1, tj[:, None]).sum()
                grads = torch.autograd.grad(selected, [acts[n] for n in names],
                                            retain_graph=j < k - 1, allow_unused=True)
                for n, g in zip(names, grads, strict=True):
                    a = acts[n].detach().float()
                    if g is None:
                        log.warning("the target score does not depend on layer %s", n)
                        g = torch.zeros_like(a)
                    per_layer[n].append(spec.map(a, g.float()))
            elif spec.run is not None:
                for n in names:
                    ctx = _context(model, x, n, acts[n].detach().float(), None, tj, batch_size)
                    per_layer[n].append(spec.run(ctx).float())
            else:
                for n in names:
                    raw = per_layer[n][0] if j else spec.map(acts[n].detach().float(), None)
                    per_layer[n].append(raw)

    raws = {n: torch.stack(v, dim=1).flatten(0, 1).detach() for n, v in per_layer.items()}
    sample = torch.arange(b, device=targets.device).repeat_interleave(k)
    flat_t = targets.reshape(-1)
    scores = logits.detach()[sample, flat_t]
    maps, raw = _finish(raws, out_size, fuse)
    return CamResult(maps=maps, raw=raw, targets=flat_t, scores=scores,
                     logits=logits.detach(), sample=sample, layers=tuple(names),
                     method=spec.name, per_layer=raws)


def _finish(raws: dict[str, torch.Tensor], size: tuple[int, ...], fuse: str
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize, normalise and (for several layers) fuse raw maps -> (maps, raw)."""
    if len(raws) == 1:
        raw = next(iter(raws.values()))
        return minmax(resize(raw, size)), raw  # type: ignore[arg-type]
    stacked = torch.stack([minmax(resize(r, size))  # type: ignore[arg-type]
                           for r in raws.values()])
    fused = stacked.mean(0) if fuse == "mean" else stacked.amax(0)
    return minmax(fused), fused


# -- from a stored run --------------------------------------------------------------------------

def _pick_event(trace: Any, layer: str, role: str, step: int | None, call: int | None) -> Any:
    rows = trace.select(layer=layer, role=role)
    if rows.empty:
        return None
    if step is None:
        step = int(rows["step"].max())
    rows = rows[rows["step"] == step]
    if call is None:
        call = int(rows["call"].max())
    rows = rows[rows["call"] == call]
    if rows.empty:
        return None
    return rows.iloc[-1]


def cam_from_trace(trace: Any, layer: str, method: str = "gradcam",
                   size: tuple[int, int] | None = None, *, step: int | None = None,
                   call: int | None = None) -> CamResult:
    """Re-render a CAM from a stored run, without the model.

    Uses the layer's stored activation (event role ``"output"``) and the gradient w.r.t. that
    output (role ``"grad_output"``; with a gradient edit, the value before the edit). The map
    equals :func:`compute` on the live model when the run's backward used the same score
    (e.g. ``rec.run(x)``: each image's predicted-class logit).

    Args:
        trace: a :class:`hooklab.core.trace.Trace` (recorded or loaded from the store).
        layer: the layer name as recorded.
        method: any method that does not need the model (not Score-CAM and its kin).
        size: output size; default the recorded input's ``(H, W)`` when the trace's metadata
            has it (``meta["input_shape"]``), else the layer's own resolution.
        step: training step (default the last); call: module call (default the last).

    Raises:
        CamError: unknown method, a method that needs the model, or events/tensors missing.
        NonSpatialLayerError: the stored activation is not ``(N, C, H, W)``.

    Example:
        >>> with hooklab.record(model, layers="conv3") as rec:
        ...     rec.run(x)
        >>> cam_from_trace(rec.trace, "conv3", size=(32, 32)).maps
    """
    try:
        spec = METHODS[method_name(method)]
    except KeyError as exc:
        raise CamError(f"unknown CAM method {method!r}; known: {', '.join(METHODS)}") from exc
    if spec.needs_model:
        raise CamError(f"{spec.title} needs the model (it runs the model again); it cannot be "
                       "computed from a stored run — pick another method or load the model")
    act_row = _pick_event(trace, layer, "output", step, call)
    if act_row is None:
        known = sorted(set(trace.select(role="output")["layer"]))
        close = difflib.get_close_matches(layer, known, n=5, cutoff=0.4)
        hint = (f"; recorded layers include {', '.join(map(repr, close or known[:5]))}"
                if known else "")
        raise CamError(f"the run has no stored activation for layer {layer!r}{hint}")
    try:
        acts = trace.tensor(act_row["key"]).float()
    except KeyError as exc:
        raise CamError(f"the activation of {layer!r} was not stored (byte budget?): {exc}") from exc
    if not _is_spatial(acts):
        raise NonSpatialLayerError(
            f"layer {layer!r} has output {_describe(acts)}; a CAM needs a spatial (N, C, H, W) "
            "output — record a convolutional layer")
    grads = None
    if spec.needs_grad:
        g_row = _pick_event(trace, layer, "grad_output", int(act_row["step"]),
                            int(act_row["call"]))
        if g_row is None:
            raise CamError(f"the run has no gradient for layer {layer!r}; record with a "
                           "backward pass (e.g. rec.run(x)) or use 'eigencam'")
        try:
            grads = trace.tensor(g_row["key"]).float()
        except KeyError as exc:
            raise CamError(f"the gradient of {layer!r} was not stored (byte budget?): {exc}"
                           ) from exc
    raw = spec.map(acts, grads if spec.needs_grad else None)
    if size is None:
        shape = trace.meta.get("input_shape") if isinstance(trace.meta, dict) else None
        hw = shape[-2:] if shape and len(shape) >= 2 else raw.shape[-2:]
    else:
        hw = size
    n = raw.shape[0]
    maps, raw = _finish({layer: raw}, (int(hw[0]), int(hw[1])), "mean")
    targets = trace.meta.get("targets") if isinstance(trace.meta, dict) else None
    t = (torch.as_tensor(targets).long().reshape(-1) if targets is not None
         and len(targets) == n else torch.full((n,), -1, dtype=torch.long))
    return CamResult(maps=maps, raw=raw, targets=t, scores=torch.full((n,), float("nan")),
                     logits=None, sample=torch.arange(n), layers=(layer,), method=spec.name,
                     per_layer={layer: raw})
