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

**Transformers.** A layer whose output is tokens ``(B, T, D)`` (ViT) or channel-last
``(B, H, W, C)`` (torchvision's Swin) is read through a :class:`hooklab.models.tokens.TokenLayout`
inferred from the shapes and the model's patch size: the hook takes the spatial view
``(B, D, gh, gw)`` of the patch tokens as the leaf ``A`` and hands the network the tokens rebuilt
from it (the class and register tokens put back in front), so ``G = dS/dA`` is the gradient of the
patch tokens, in the same view. Methods only ever see spatial tensors; the result says what was
inferred (``CamResult.note``).

**One pass, many methods and layers.** ``compute(model, x, methods=[...], layers=[...])`` (or
:func:`compute_many`) captures ``A`` and ``G`` at every layer in one forward and one
``autograd.grad`` and computes every gradient method (and EigenCAM) from them; methods that call
the model (Score-CAM and kin) run after, on their own. Each map equals the single-method call's.

Method formulas are in :mod:`hooklab.cam.methods`. Maps are resized bilinearly to the input size
(``align_corners=False``) and min-max normalised per map, as in the seed.

Example:
    >>> res = hooklab.cam.engine.compute(model, x, method="gradcam", layer="conv3")
    >>> res.maps.shape            # (B, 32, 32), values in [0, 1]
    >>> res = hooklab.cam.engine.compute(model, x, target="topk:3")   # 3 maps per image
    >>> many = compute(model, x, methods=["gradcam", "eigencam"], layers=["layer3", "layer4"])
    >>> many["gradcam", "layer4"].maps
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from hooklab.cam import memory, smoothing
from hooklab.cam.context import CamContext
from hooklab.cam.methods import METHODS, CamMethod, method_name, minmax
from hooklab.core.errors import HooklabError, NonSpatialLayerError
from hooklab.core.layers import LayerItem, LayerSpec, resolve_layers
from hooklab.core.modes import frozen
from hooklab.models.tokens import LAYOUTS, TokenLayout, TokenLayoutError, infer_layout, patch_size
from hooklab.models.zoo import auto_target_layer, cam_layers
from hooklab.recording.scoped import HookScope

log = logging.getLogger(__name__)

__all__ = ["CamError", "CamResult", "CamResults", "METHODS", "compute", "compute_many",
           "cam_from_trace", "auto_layer", "frozen", "resize", "NonSpatialLayerError",
           "TokenLayout"]

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
        layouts: how each layer's output was read (:class:`~hooklab.models.tokens.TokenLayout`:
            spatial, tokens with the grid and the dropped tokens, or channel-last).
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
    layouts: dict[str, TokenLayout] = field(default_factory=dict)

    @property
    def layer(self) -> str:
        """The target layer name (names joined by ``"+"`` when several were fused)."""
        return "+".join(self.layers)

    @property
    def layout(self) -> TokenLayout | None:
        """The first layer's layout (``None`` when unknown)."""
        return self.layouts.get(self.layers[0]) if self.layers else None

    @property
    def note(self) -> str:
        """What was inferred about token or channel-last layers, in words (``""`` for plain
        spatial layers), e.g. ``"tokens (B, 197, 768) → grid 14×14, class token dropped"``."""
        notes = [(n, lay.note) for n, lay in self.layouts.items() if lay.note]
        if len(self.layouts) == 1:
            return notes[0][1] if notes else ""
        return "; ".join(f"{n}: {text}" for n, text in notes)

    def __len__(self) -> int:
        return int(self.maps.shape[0])

    def to(self, device: torch.device | str) -> CamResult:
        """The same result with every tensor on ``device`` (e.g. ``"cpu"`` before ``.numpy()``)."""
        logits = self.logits.to(device) if self.logits is not None else None
        return CamResult(maps=self.maps.to(device), raw=self.raw.to(device),
                         targets=self.targets.to(device), scores=self.scores.to(device),
                         logits=logits, sample=self.sample.to(device), layers=self.layers,
                         method=self.method,
                         per_layer={k: v.to(device) for k, v in self.per_layer.items()},
                         layouts=dict(self.layouts))


class CamResults(dict[tuple[str, str], CamResult]):
    """What ``compute(..., methods=[...])`` returns: ``(method, layer) -> CamResult``.

    Keys use canonical method names and resolved layer names, in the order asked (methods
    outer). :meth:`get_map` accepts any spelling of a method.

    Attributes:
        methods: canonical method names, in order.
        layers: layer names, in order.
        logits: ``(B, K)`` of the one shared forward.
        forwards: forward passes the call ran (1 for gradient methods and EigenCAM, plus what
            model-calling methods ran; counted by a forward hook on the model).
    """

    def __init__(self, methods: tuple[str, ...], layers: tuple[str, ...],
                 logits: torch.Tensor, forwards: int = 0) -> None:
        super().__init__()
        self.methods, self.layers, self.logits, self.forwards = methods, layers, logits, forwards

    def get_map(self, method: str, layer: str) -> CamResult:
        """The result of ``method`` (any spelling) at ``layer``."""
        try:
            return self[method_name(method), layer]
        except KeyError as exc:
            raise CamError(f"no map for ({method!r}, {layer!r}); computed methods "
                           f"{', '.join(self.methods)} at {', '.join(self.layers)}") from exc

    def by_method(self, method: str) -> Iterator[CamResult]:
        """Every layer's result of one method, in layer order."""
        key = method_name(method)
        return (self[key, n] for n in self.layers)


# -- state handling ----------------------------------------------------------------------------

class _NonSpatial(Exception):
    """Raised inside a hook when a target layer's output cannot be read as a spatial map."""

    def __init__(self, name: str, what: str, message: str = "") -> None:
        super().__init__(name, what)
        self.name, self.what, self.message = name, what, message


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
    seed's layer), torchvision's ResNet ``layer4``; a ViT the last block's first norm
    (``encoder.layers.encoder_layer_11.ln_1``), torchvision's Swin ``norm``. Cached per model
    and input shape.

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


def _map_layers(model: nn.Module, x: torch.Tensor, limit: int = 4) -> str:
    """``"; layers that give a map: a, b, … (N in all)"`` of the same kind as the auto layer
    (its encoder blocks' ``ln_1`` for a ViT), from :func:`hooklab.models.zoo.cam_layers`;
    ``""`` on failure."""
    try:
        auto = auto_layer(model, x)
        layers = cam_layers(model, tuple(int(s) for s in x.shape[1:]))
    except HooklabError:
        return ""
    kind = type(model.get_submodule(auto))
    good = [n for n in layers if n != auto and type(model.get_submodule(n)) is kind]
    if not good:
        return ""
    shown = ", ".join(good[-limit:])
    return f"; other {kind.__name__} layers that give a map: {shown} ({len(good)} in all)"


def _suggestion(model: nn.Module, x: torch.Tensor) -> str:
    try:
        auto = auto_layer(model, x)
    except HooklabError:
        return ""
    return f"; try {auto!r} (the automatic layer){_map_layers(model, x)}"


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


def _layout_of(name: str, module: nn.Module, out: Any, hw: tuple[int, int],
               patch: tuple[int, int] | None, layout: str) -> TokenLayout:
    if not isinstance(out, torch.Tensor):
        raise _NonSpatial(name, _describe(out))
    try:
        return infer_layout(out.shape, hw, patch, layout=layout, module=module, name=name)
    except TokenLayoutError as exc:
        raise _NonSpatial(name, _describe(out), str(exc)) from exc


def _capture(model: nn.Module, x: torch.Tensor, names: list[str], need_grad: bool,
             layout: str = "auto", layouts: dict[str, TokenLayout] | None = None
             ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One forward with a hook per layer; returns the captured activations (the spatial view
    ``(B, C, h, w)``; the gradient leaves when ``need_grad``) and the logits.

    ``layouts``, when given, receives each layer's :class:`TokenLayout`.
    """
    store: dict[str, torch.Tensor] = {}
    found: dict[str, TokenLayout] = {} if layouts is None else layouts
    hw = (int(x.shape[-2]), int(x.shape[-1]))
    patch = patch_size(model)

    def make(name: str):
        def hook(m: nn.Module, _i: Any, out: Any) -> torch.Tensor | None:
            lay = _layout_of(name, m, out, hw, patch, layout)
            found[name] = lay
            if lay.kind == "spatial":
                if not need_grad:
                    # a copy: a later in-place op (ReLU(inplace=True), DenseNet's norm5 ->
                    # relu) would otherwise change the stored activation
                    store[name] = out.detach().clone()
                    return None
                # A leaf at the first captured layer (nothing below needs a graph); a layer
                # above an earlier captured one keeps its graph so the gradient reaches both.
                act = out if out.requires_grad else out.detach().requires_grad_()
                store[name] = act
                return act.clone()  # in-place ops downstream modify the clone, never `act`
            if not need_grad:
                store[name] = lay.to_spatial(out.detach()).clone()
                return None
            # Tokens / channel-last: the spatial view is the leaf; the network gets the layer
            # output rebuilt from it (the extra tokens from the output itself, keeping their
            # graph when a lower captured layer has one).
            base = out if out.requires_grad else out.detach()
            act = lay.to_spatial(base)
            if not act.requires_grad:
                act = act.contiguous().requires_grad_()
            store[name] = act
            rebuilt = lay.to_layout(act, base)
            return rebuilt.clone() if rebuilt._is_view() else rebuilt
        return hook

    with HookScope() as hooks:
        for name in names:
            hooks.forward(model.get_submodule(name), make(name))
        if need_grad:  # attention above the layer: one input-projection matmul, not T of them
            for m in model.modules():
                if isinstance(m, nn.MultiheadAttention) and m.batch_first:
                    hooks.forward_pre(m, memory.mha_sequence_first, with_kwargs=True)
        grad_mode = torch.enable_grad() if need_grad else torch.no_grad()
        with torch.inference_mode(False), grad_mode:  # works under a caller's inference_mode
            out = model(x)
    missing = [n for n in names if n not in store]
    if missing:
        raise CamError(f"layer(s) {', '.join(missing)} did not run in the forward pass")
    return store, _logits(out)


def _replace_output(model: nn.Module, x: torch.Tensor, name: str, sample: int,
                    acts: torch.Tensor, batch_size: int,
                    layout: TokenLayout | None = None) -> torch.Tensor:
    """Logits of image ``sample`` with layer ``name``'s output replaced by each of ``acts``
    (spatial view; put back in the layer's own layout)."""
    module = model.get_submodule(name)
    outs = []
    for s in range(0, acts.shape[0], batch_size):
        chunk = acts[s:s + batch_size]

        def hook(_m: nn.Module, _i: Any, out: Any, chunk: torch.Tensor = chunk) -> torch.Tensor:
            new = layout.to_layout(chunk, out) if layout is not None else chunk
            return new.to(dtype=out.dtype, device=out.device)

        with HookScope() as hooks, torch.no_grad():
            hooks.forward(module, hook)
            z = x[sample:sample + 1].expand(chunk.shape[0], *x.shape[1:])
            outs.append(_logits(model(z)).float())
    return torch.cat(outs)


def _graph_score(score: torch.Tensor, names: Sequence[str]) -> torch.Tensor:
    """``score`` if autograd can differentiate it; else the one clear error (instead of
    autograd's "element 0 of tensors does not require grad")."""
    if score.requires_grad:
        return score
    raise CamError(
        f"the model's output has no autograd graph back to {', '.join(map(repr, names))}: the "
        "layer does not feed the output, or the forward runs under torch.no_grad() (or "
        "detaches) after it, so a gradient CAM cannot be computed there; pick a layer after "
        "that point or a gradient-free method (eigencam, scorecam, ablationcam)")


def _capture_grads(model: nn.Module, z: torch.Tensor, name: str, targets: torch.Tensor,
                   create_graph: bool, layout: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """The layer's activation and ``d(Σ target logits)/dA`` for inputs ``z`` (spatial view)."""
    z = z.detach().contiguous()
    # CPU's fused attention kernels have no double backward; the math kernel has (a Hessian-
    # vector product through a ViT's attention needs it)
    kernels = (sdpa_kernel([SDPBackend.MATH]) if create_graph else contextlib.nullcontext())
    with torch.enable_grad(), kernels:
        acts, logits = _capture(model, z, [name], need_grad=True, layout=layout)
        a = acts[name]
        t = targets.to(logits.device).long().reshape(-1, 1)
        if t.shape[0] != logits.shape[0]:
            raise CamError(f"{t.shape[0]} targets for {logits.shape[0]} inputs")
        score = _graph_score(logits.gather(1, t).sum(), [name])
        (g,) = torch.autograd.grad(score, [a], create_graph=create_graph, allow_unused=True)
    if g is None:
        g = torch.zeros_like(a)
    if create_graph:
        return a, g
    return a.detach().float(), g.detach().float()


def _context(model: nn.Module, x: torch.Tensor, name: str, acts: torch.Tensor,
             grads: torch.Tensor | None, targets: torch.Tensor, batch_size: int,
             eigen_smooth: bool = False, *, layout: TokenLayout | None = None) -> CamContext:
    """The :class:`CamContext` of one layer for a model-calling method."""

    def logits_fn(z: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return _logits(model(z)).float()

    kind = layout.kind if layout is not None else "auto"
    return CamContext(
        model=model, x=x, layer=name, acts=acts, grads=grads, targets=targets,
        batch_size=batch_size, eigen_smooth=eigen_smooth, logits_fn=logits_fn,
        replace_fn=lambda i, a: _replace_output(model, x, name, i, a, batch_size, layout),
        capture_fn=lambda z, t, cg: _capture_grads(model, z, name, t, cg, kind))


def _check_input(x: Any) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise CamError(f"input must be a tensor, not {type(x).__name__}")
    if x.dim() == 3:
        x = x[None]
    if x.dim() != 4 or x.shape[0] == 0:
        raise CamError(f"input must be images (B, C, H, W), got shape {tuple(x.shape)}")
    # A strided view (a permuted HWC image, a crop) would reach models that call .view() on
    # their features (the seed's SimpleCNN does) in a layout they cannot view; same values.
    return x.detach().contiguous()


def _spec(method: str) -> CamMethod:
    try:
        return METHODS[method_name(method)]
    except KeyError as exc:
        raise CamError(f"unknown CAM method {method!r}; known: {', '.join(METHODS)}") from exc


@dataclass
class _Pass:
    """What one shared forward (+ backward) gave: raw maps per (method, layer)."""

    raws: dict[tuple[str, str], torch.Tensor]
    targets: torch.Tensor  # (B, k)
    logits: torch.Tensor
    layouts: dict[str, TokenLayout]


def _run(model: nn.Module, x: torch.Tensor, names: list[str], specs: list[CamMethod],
         target: Target, batch_size: int, eigen_smooth: bool, layout: str,
         memory_format: str = "auto") -> _Pass:
    """Capture every layer in one forward, the gradients of every layer in one
    ``autograd.grad`` per target rank, and every method's raw map from them."""
    if layout not in LAYOUTS:
        raise CamError(f"unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    if memory_format not in memory.MEMORY_FORMATS:
        raise CamError(f"unknown memory_format {memory_format!r}; use one of "
                       f"{', '.join(memory.MEMORY_FORMATS)}")
    xp = memory.pass_input(model, x, memory_format)
    # a model-calling method gets its own gradients (ctx.capture)
    layer_grads = any(s.needs_grad and s.run is None for s in specs)
    layouts: dict[str, TokenLayout] = {}
    grad_mode = torch.enable_grad() if layer_grads else torch.no_grad()
    with frozen(model), torch.inference_mode(False), grad_mode:
        try:
            acts, logits = _capture(model, xp, names, layer_grads, layout, layouts)
        except RuntimeError as exc:
            msg = memory.view_error(exc, xp)
            if msg is None:
                raise
            raise CamError(msg) from exc
        except _NonSpatial as exc:
            reason = exc.message or (f"layer {exc.name!r} has output {exc.what}; a CAM needs a "
                                     "spatial (N, C, H, W), token (B, T, D) or channel-last "
                                     "(B, H, W, C) output")
            raise NonSpatialLayerError(reason + _suggestion(model, x)) from exc
        targets = _targets(target, logits.detach())
        b, k = targets.shape
        per: dict[tuple[str, str], list[torch.Tensor]] = {
            (s.name, n): [] for s in specs for n in names}
        for j in range(k):
            tj = targets[:, j]
            grads: dict[str, torch.Tensor] = {}
            if layer_grads:
                selected = _graph_score(logits.gather(1, tj[:, None]).sum(), names)
                gs = torch.autograd.grad(selected, [acts[n] for n in names],
                                         retain_graph=j < k - 1, allow_unused=True)
                for n, g in zip(names, gs, strict=True):
                    if g is None:
                        log.warning("the target score does not depend on layer %s", n)
                        g = torch.zeros_like(acts[n])
                    grads[n] = g.detach().float()
            for n in names:
                a = acts[n].detach().float()
                for spec in specs:
                    out = per[spec.name, n]
                    if spec.run is not None:
                        ctx = _context(model, x, n, a, None, tj, batch_size, eigen_smooth,
                                       layout=layouts[n])
                        out.append(spec.run(ctx).float())
                    elif spec.needs_grad:
                        out.append(spec.map(a, grads[n], eigen_smooth))
                    else:  # class-agnostic (EigenCAM): the same map for every target rank
                        out.append(out[0] if j else spec.map(a, None, eigen_smooth))
    raws = {key: torch.stack(v, dim=1).flatten(0, 1).detach() for key, v in per.items()}
    return _Pass(raws, targets, logits.detach(), layouts)


def _result(p: _Pass, method: str, names: list[str], size: tuple[int, ...], fuse: str
            ) -> CamResult:
    b, k = p.targets.shape
    sample = torch.arange(b, device=p.targets.device).repeat_interleave(k)
    flat_t = p.targets.reshape(-1)
    raws = {n: p.raws[method, n] for n in names}
    maps, raw = _finish(raws, size, fuse)
    return CamResult(maps=maps, raw=raw, targets=flat_t, scores=p.logits[sample, flat_t],
                     logits=p.logits, sample=sample, layers=tuple(names), method=method,
                     per_layer=raws, layouts={n: p.layouts[n] for n in names})


@overload
def compute(model: nn.Module, x: torch.Tensor, method: str = ..., layer: LayerSpec = ...,
            target: Target = ..., *, layers: Sequence[LayerItem] | None = ...,
            size: tuple[int, int] | None = ..., fuse: str = ..., batch_size: int = ...,
            eigen_smooth: bool = ..., aug_smooth: bool = ..., layout: str = ...,
            methods: None = ..., memory_format: str = ...) -> CamResult: ...


@overload
def compute(model: nn.Module, x: torch.Tensor, method: str = ..., layer: LayerSpec = ...,
            target: Target = ..., *, layers: Sequence[LayerItem] | None = ...,
            size: tuple[int, int] | None = ..., fuse: str = ..., batch_size: int = ...,
            eigen_smooth: bool = ..., aug_smooth: bool = ..., layout: str = ...,
            methods: Sequence[str], memory_format: str = ...) -> CamResults: ...


def compute(model: nn.Module, x: torch.Tensor, method: str = "gradcam", layer: LayerSpec = None,
            target: Target = None, *, layers: Sequence[LayerItem] | None = None,
            size: tuple[int, int] | None = None, fuse: str = "mean",
            batch_size: int = 128, eigen_smooth: bool = False,
            aug_smooth: bool = False, layout: str = "auto",
            methods: Sequence[str] | None = None,
            memory_format: str = "auto") -> CamResult | CamResults:
    """Class activation maps for a batch.

    Args:
        model: a classifier returning logits ``(B, K)``.
        x: images ``(B, C, H, W)`` (a single ``(C, H, W)`` image is accepted).
        method: a key of :data:`METHODS` (``"gradcam"``, ``"gradcam++"``, ``"xgradcam"``,
            ``"hirescam"``, ``"layercam"``, ``"scorecam"``, ``"eigencam"``, ...).
        layer: a :data:`hooklab.core.layers.LayerSpec` like :func:`hooklab.record`'s: a
            name, glob, type (``"Conv2d"``) or module; ``None`` picks :func:`auto_layer`;
            several layers (a list, a glob or a type matching several) are fused.
            A module called several times in one forward (a shared pool) gives its last call.
            Token layers ``(B, T, D)`` and channel-last ones ``(B, H, W, C)`` are reshaped
            (see the module docstring; ``result.note`` says how).
        target: ``None`` (each image's predicted class), a class index for all images, one
            index per image, or ``"topk:K"`` (K maps per image, best class first).
        layers: several layers to fuse (same as passing a list as ``layer``); with
            ``methods``, the layers to map one by one (see :func:`compute_many`).
        size: output size; the input's ``(H, W)`` by default.
        fuse: how per-layer maps (each resized and normalised) combine: ``"mean"`` or ``"max"``.
        batch_size: masked images per forward for Score-CAM.
        eigen_smooth: the map is the first principal component of the method's weighted
            activations instead of their channel sum (:func:`hooklab.cam.methods.project`).
        aug_smooth: average over flipped and brightness-scaled copies of the input
            (:func:`hooklab.cam.smoothing.aug_smooth`; six times the cost).
        layout: ``"auto"`` infers how a layer's output maps to ``(B, C, h, w)``;
            ``"spatial"``, ``"tokens"`` or ``"channels_last"`` forces one reading
            (:func:`hooklab.models.tokens.infer_layout`).
        methods: several methods at once: returns :func:`compute_many`'s :class:`CamResults`
            (one shared pass; ``layer`` and ``layers`` are then mapped one by one, not fused).
        memory_format: the captured pass's input layout: ``"auto"`` (channels-last for
            torchvision's CNNs, which run faster so; the caller's layout otherwise),
            ``"contiguous"`` or ``"channels_last"`` (:mod:`hooklab.cam.memory`).

    Returns:
        A :class:`CamResult` (a :class:`CamResults` with ``methods``).

    Raises:
        CamError: unknown method, bad target or input.
        LayerNotFoundError: unknown layer (close names are suggested).
        NonSpatialLayerError: a layer's output is not spatial and no token grid fits; names
            the layers that would.

    Example:
        >>> res = compute(model, x, "gradcam", layer="conv3", target=[3, 5])
        >>> res.maps.shape, res.targets
    """
    if methods is not None:
        if aug_smooth or fuse != "mean":
            raise CamError("methods=[...] maps each layer on its own (no fuse) and has no "
                           "aug_smooth; call compute once per method for those")
        wanted = [] if layer is None else ([layer] if isinstance(layer, (str, type, nn.Module))
                                           else list(layer))
        return compute_many(model, x, methods, [*wanted, *(layers or [])] or None,
                            target, size=size, batch_size=batch_size,
                            eigen_smooth=eigen_smooth, layout=layout,
                            memory_format=memory_format)
    spec = _spec(method)
    x = _check_input(x)
    if fuse not in ("mean", "max"):
        raise CamError(f"fuse must be 'mean' or 'max', not {fuse!r}")
    if aug_smooth:
        return smoothing.aug_smooth(compute, model, x, method, layer, target, layers=layers,
                                    size=size, fuse=fuse, batch_size=batch_size,
                                    eigen_smooth=eigen_smooth, layout=layout,
                                    memory_format=memory_format)
    if layers is not None:
        layer = list(layers) if layer is None else [layer, *layers]  # type: ignore[list-item]
    names = _resolve_layers(model, layer, x)
    out_size = tuple(size) if size is not None else tuple(x.shape[-2:])
    p = _run(model, x, names, [spec], target, batch_size, eigen_smooth, layout, memory_format)
    return _result(p, spec.name, names, out_size, fuse)


def compute_many(model: nn.Module, x: torch.Tensor, methods: Sequence[str],
                 layers: Sequence[LayerItem] | LayerSpec = None, target: Target = None, *,
                 size: tuple[int, int] | None = None, batch_size: int = 128,
                 eigen_smooth: bool = False, layout: str = "auto",
                 memory_format: str = "auto") -> CamResults:
    """Every requested method at every requested layer from one forward and one backward.

    ``A`` and ``G`` of every layer are captured in one forward (the lowest captured layer is
    the leaf; the layers above keep their graph) and one ``torch.autograd.grad`` per target
    rank gives every layer's gradient; each gradient method (and EigenCAM) is a pure function
    of them. Methods that call the model (Score-CAM, AblationCAM, ...) run after, on their own
    (their forwards are counted in ``forwards``). Each map equals :func:`compute` with that
    method and layer alone.

    Args:
        model, x, target, size, batch_size, eigen_smooth, layout, memory_format: as for
            :func:`compute`.
        methods: method names (any spelling); duplicates are dropped.
        layers: a layer, a list, a glob or a type; every match is mapped on its own (no fusion).
            ``None``: the automatic layer.

    Returns:
        :class:`CamResults`: ``results[method, layer]`` is a :class:`CamResult`.

    Example:
        >>> res = compute_many(model, x, ["gradcam", "layercam", "eigencam"],
        ...                    ["layer1", "layer2", "layer3", "layer4"])
        >>> res["layercam", "layer2"].maps.shape, res.forwards
    """
    if isinstance(methods, str):
        methods = [methods]
    specs = list({s.name: s for s in map(_spec, methods)}.values())
    if not specs:
        raise CamError("methods=[] names no method; give at least one")
    x = _check_input(x)
    names = list(dict.fromkeys(_resolve_layers(model, layers, x)))
    out_size = tuple(size) if size is not None else tuple(x.shape[-2:])
    calls = [0]

    def count(*_: Any) -> None:
        calls[0] += 1

    with HookScope() as hooks:
        hooks.forward_pre(model, count)
        p = _run(model, x, names, specs, target, batch_size, eigen_smooth, layout,
                 memory_format)
    results = CamResults(tuple(s.name for s in specs), tuple(names), p.logits, calls[0])
    for spec in specs:
        for n in names:
            results[spec.name, n] = _result(p, spec.name, [n], out_size, "mean")
    return results


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
                   call: int | None = None, patch: int | tuple[int, int] | None = None,
                   layout: str = "auto") -> CamResult:
    """Re-render a CAM from a stored run, without the model.

    Uses the layer's stored activation (event role ``"output"``) and the gradient w.r.t. that
    output (role ``"grad_output"``; with a gradient edit, the value before the edit). The map
    equals :func:`compute` on the live model when the run's backward used the same score
    (e.g. ``rec.run(x)``: each image's predicted-class logit). A recorded token layer
    ``(B, T, D)`` is reshaped like :func:`compute` does, with the grid inferred from the
    recorded input size (``meta["input_shape"]``) and ``patch`` when given.

    Args:
        trace: a :class:`hooklab.core.trace.Trace` (recorded or loaded from the store).
        layer: the layer name as recorded.
        method: any method that does not need the model (not Score-CAM and its kin).
        size: output size; default the recorded input's ``(H, W)`` when the trace's metadata
            has it (``meta["input_shape"]``), else the layer's own resolution.
        step: training step (default the last); call: module call (default the last).
        patch: the model's patch size (a ViT's); without it the smallest number of extra
            tokens whose grid tiles the input is assumed (the class token of a ViT).
        layout: as for :func:`compute`.

    Raises:
        CamError: unknown method, a method that needs the model, or events/tensors missing.
        NonSpatialLayerError: the stored activation is neither spatial nor a token grid.

    Example:
        >>> with hooklab.record(model, layers="conv3") as rec:
        ...     rec.run(x)
        >>> cam_from_trace(rec.trace, "conv3", size=(32, 32)).maps
    """
    spec = _spec(method)
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
    shape = trace.meta.get("input_shape") if isinstance(trace.meta, dict) else None
    input_hw = (int(shape[-2]), int(shape[-1])) if shape and len(shape) >= 2 else None
    pt = (patch, patch) if isinstance(patch, int) else patch
    try:
        lay = infer_layout(acts.shape, input_hw, pt, layout=layout, name=layer)
    except TokenLayoutError as exc:
        raise NonSpatialLayerError(f"{exc} — record a convolutional layer or a ViT block's "
                                   "norm (e.g. encoder.layers.encoder_layer_11.ln_1)") from exc
    grads = None
    if spec.needs_grad:
        g_row = _pick_event(trace, layer, "grad_output", int(act_row["step"]),
                            int(act_row["call"]))
        if g_row is None:
            raise CamError(f"the run has no gradient for layer {layer!r}; record with a "
                           "backward pass (e.g. rec.run(x)) or use 'eigencam'")
        try:
            grads = lay.to_spatial(trace.tensor(g_row["key"]).float())
        except KeyError as exc:
            raise CamError(f"the gradient of {layer!r} was not stored (byte budget?): {exc}"
                           ) from exc
    raw = spec.map(lay.to_spatial(acts), grads if spec.needs_grad else None)
    hw = size if size is not None else (input_hw or raw.shape[-2:])
    n = raw.shape[0]
    maps, raw = _finish({layer: raw}, (int(hw[0]), int(hw[1])), "mean")
    targets = trace.meta.get("targets") if isinstance(trace.meta, dict) else None
    t = (torch.as_tensor(targets).long().reshape(-1) if targets is not None
         and len(targets) == n else torch.full((n,), -1, dtype=torch.long))
    return CamResult(maps=maps, raw=raw, targets=t, scores=torch.full((n,), float("nan")),
                     logits=None, sample=torch.arange(n), layers=(layer,), method=spec.name,
                     per_layer={layer: raw}, layouts={layer: lay})
