"""Maps from attention weights: per-head class-token attention, attention rollout, LeGrad.

All three read ``nn.MultiheadAttention`` weights through
:func:`hooklab.recording.attention.attention` (this module registers no hook itself) and put
the patch-token columns back on the patch grid ``(gh, gw)``, inferred from the number of key
tokens, the input size and the model's patch size (:func:`patch_grid`, which reads the keys as
:func:`hooklab.models.tokens.infer_layout` reads a token layer; the class token and any
register tokens are the extra tokens in front).

Attention rollout (Abnar & Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020):
per layer ``l`` the heads are fused (mean by default; max or min), the residual connection is
accounted for by adding the identity and renormalising the rows,
``Â_l = (Ā_l + I) / rowsum``, and the layers are multiplied through,
``R = Â_L · … · Â_1``; the map is the class token's row of ``R`` over the patch tokens
(``R[0, k:]``, ``k`` extra tokens; the mean over all rows when the model has no extra token).
Class-agnostic: the target is ignored.

LeGrad (Bousselham et al., "LeGrad: An Explainability Method for Vision Transformers via
Feature Formation Sensitivity", 2024, ICCV 2025), the variant implemented here: one forward
and one backward; per layer ``l``, ``∇_l = ∂S/∂A_l`` — the gradient of each image's target
logit ``S`` with respect to that layer's attention map ``A_l`` ``(heads, T, S)`` — ReLU, averaged
over heads and over all query tokens (class token included), the patch-token columns kept;
the layers summed, ``E = Σ_l mean_{h,i} ReLU(∇_l)[h, i, k:]``. The paper's own code scores
each layer ``l`` by the *intermediate* tokens of block ``l`` pushed through the final norm and
head (one backward per layer) and starts at the second-to-last block by default; here every
layer uses the model's final target logit, so the map is one ``autograd.grad`` call over all
layers (pass ``layers`` to :func:`legrad` to keep the last blocks only).

Example:
    >>> heads = class_token_attention(vit, x, "encoder.layers.encoder_layer_3.self_attention")
    >>> heads.maps.shape                          # (B, heads, gh, gw)
    >>> hooklab.cam.compute(vit, x, method="rollout").maps      # (B, H, W) in [0, 1]
    >>> hooklab.cam.compute(vit, x, method="legrad", target=3).maps
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hooklab.cam.context import CamContext
from hooklab.cam.methods import CamMethod, register
from hooklab.core.layers import LayerSpec
from hooklab.models.tokens import TokenLayoutError, infer_layout, patch_size
from hooklab.recording.attention import AttentionError, attention, resolve_attention

log = logging.getLogger(__name__)

__all__ = ["HEAD_FUSIONS", "AttentionError", "HeadMaps", "class_token_attention", "legrad",
           "patch_grid", "rollout", "rollout_matrix"]

#: How :func:`rollout` fuses the heads of one layer.
HEAD_FUSIONS = ("mean", "max", "min")


def patch_grid(model: nn.Module, x: torch.Tensor, tokens: int) -> tuple[tuple[int, int], int]:
    """``((gh, gw), extra)``: the patch grid of ``tokens`` key tokens and the number of extra
    tokens in front of the patch tokens (class + register tokens), for input ``x``, as
    :func:`hooklab.models.tokens.infer_layout` reads a ``(B, T, D)`` token layer (the input
    size over the model's patch size; without one, the grid with the fewest extra tokens).

    Raises:
        AttentionError: no grid fits ``tokens`` (the message says what was tried).
    """
    hw = (int(x.shape[-2]), int(x.shape[-1]))
    try:
        lay = infer_layout((int(x.shape[0]), int(tokens), 1), hw, patch_size(model),
                           name="attention keys")
    except TokenLayoutError as exc:
        raise AttentionError(f"cannot put the attention's {tokens} key tokens on a patch grid: "
                             f"{exc}") from exc
    return lay.grid, lay.dropped


def _patches(rows: torch.Tensor, grid: tuple[int, int], extra: int) -> torch.Tensor:
    """``(..., S)`` rows over the key tokens -> ``(..., gh, gw)`` over the patch tokens."""
    return rows[..., extra:].reshape(*rows.shape[:-1], *grid)


@dataclass(frozen=True)
class HeadMaps:
    """The class token's attention over the patch grid, one map per head.

    Attributes:
        layer: the ``nn.MultiheadAttention`` module.
        maps: ``(B, heads, gh, gw)``; a head's map sums to one minus what the class token
            gives to itself and the other extra tokens (see :attr:`to_extra`).
        to_extra: ``(B, heads)`` attention of the query on the extra tokens (itself included).
        grid: ``(gh, gw)``.
        extra: extra tokens in front of the patch tokens.
        query: the query token whose row is shown (0: the class token).
    """

    layer: str
    maps: torch.Tensor
    to_extra: torch.Tensor
    grid: tuple[int, int]
    extra: int
    query: int = 0

    @property
    def heads(self) -> int:
        """Number of heads."""
        return int(self.maps.shape[1])


def class_token_attention(model: nn.Module, x: torch.Tensor, layer: LayerSpec = None,
                          query: int = 0) -> HeadMaps:
    """Per-head attention of the class token (or of token ``query``) over the patch grid.

    One no-grad forward of ``model`` on ``x`` with :func:`hooklab.recording.attention.attention`
    on one ``nn.MultiheadAttention`` (``layer``; default the last one).

    Raises:
        AttentionError: no ``nn.MultiheadAttention``, a named module is not one, or no patch
            grid fits its key tokens.
    """
    names = resolve_attention(model, layer)
    name = names[-1]
    if len(names) > 1 and layer is not None:
        raise AttentionError(f"{layer!r} selects {len(names)} attention modules; name one "
                             f"(e.g. {names[-1]!r})")
    x = _batch(x)
    with attention(model, name) as att, torch.no_grad(), torch.inference_mode(False):
        model(x)
    if name not in att.weights:
        raise AttentionError(f"attention module {name!r} did not run in the forward pass")
    w = att.weights[name]  # (B, heads, T, S)
    if not 0 <= query < w.shape[2]:
        raise AttentionError(f"query token {query} out of range: {w.shape[2]} tokens")
    grid, extra = patch_grid(model, x, w.shape[-1])
    row = w[:, :, query]  # (B, heads, S)
    return HeadMaps(layer=name, maps=_patches(row, grid, extra), to_extra=row[..., :extra].sum(-1),
                    grid=grid, extra=extra, query=query)


def _batch(x: Any) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise AttentionError(f"input must be a tensor, not {type(x).__name__}")
    x = x[None] if x.dim() == 3 else x
    if x.dim() != 4 or x.shape[0] == 0:
        raise AttentionError(f"input must be images (B, C, H, W), got shape {tuple(x.shape)}")
    return x.detach()


def rollout_matrix(maps: list[torch.Tensor], head_fusion: str = "mean") -> torch.Tensor:
    """Attention rollout ``R = Â_L · … · Â_1`` ``(B, T, T)`` of per-head maps ``(B, h, T, T)``
    (first layer first), ``Â_l = (fuse_heads(A_l) + I) / rowsum``.

    Raises:
        AttentionError: unknown fusion, no maps, or maps that are not square and alike.
    """
    if head_fusion not in HEAD_FUSIONS:
        raise AttentionError(f"head_fusion must be one of {', '.join(HEAD_FUSIONS)}, not "
                             f"{head_fusion!r}")
    if not maps:
        raise AttentionError("attention rollout needs at least one attention map")
    shape = tuple(maps[0].shape)
    if len(shape) != 4 or shape[-1] != shape[-2] or any(tuple(m.shape) != shape for m in maps):
        raise AttentionError("attention rollout needs self-attention maps (B, heads, T, T) of "
                             f"one shape; got {sorted({tuple(m.shape) for m in maps})}")
    eye = torch.eye(shape[-1], dtype=torch.float64, device=maps[0].device)
    result = None
    for a in maps:
        a = a.double()
        fused = (a.mean(1) if head_fusion == "mean" else
                 a.amax(1) if head_fusion == "max" else a.amin(1))
        fused = fused + eye
        fused = fused / fused.sum(dim=-1, keepdim=True)
        result = fused if result is None else fused @ result
    assert result is not None
    return result.float()


def _rows_to_map(rows: torch.Tensor, extra: int, grid: tuple[int, int]) -> torch.Tensor:
    """The class token's row of ``(B, T, T)`` (mean of all rows without one) on the grid."""
    row = rows[:, 0] if extra else rows.mean(dim=1)
    return _patches(row, grid, extra)


def _logits(out: Any) -> torch.Tensor:
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        out = out[0]
    if isinstance(out, dict):
        out = out.get("out", out.get("logits"))
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise AttentionError("the model must return logits of shape (B, classes)")
    return out


def rollout(model: nn.Module, x: torch.Tensor, *, head_fusion: str = "mean",
            layers: LayerSpec = None) -> torch.Tensor:
    """Attention rollout map ``(B, gh, gw)`` (not normalised) of ``model`` on ``x``.

    Args:
        model: a ViT with ``nn.MultiheadAttention`` self-attention (in eval mode for
            dropout-free maps).
        x: images ``(B, C, H, W)``.
        head_fusion: ``"mean"`` (the paper), ``"max"`` or ``"min"``.
        layers: which attention modules to roll out (default all, first to last).

    Raises:
        AttentionError: no ``nn.MultiheadAttention``, no patch grid, bad fusion.
    """
    x = _batch(x)
    with attention(model, layers) as att, torch.no_grad(), torch.inference_mode(False):
        model(x)
    maps = att.stacked()
    grid, extra = patch_grid(model, x, maps.shape[-1])
    return _rows_to_map(rollout_matrix(list(maps), head_fusion), extra, grid)


def legrad(model: nn.Module, x: torch.Tensor, targets: torch.Tensor | None = None, *,
           layers: LayerSpec = None) -> torch.Tensor:
    """LeGrad map ``(B, gh, gw)`` (not normalised): ``Σ_l mean_{heads, queries}
    ReLU(∂S/∂A_l)`` over the patch-token columns (see the module docstring for the variant).

    Args:
        model: a ViT with ``nn.MultiheadAttention`` (eval mode; parameters may be frozen).
        x: images ``(B, C, H, W)``.
        targets: ``(B,)`` class per image (default the predicted class).
        layers: which attention modules (default all; the paper's code keeps the last two).

    Raises:
        AttentionError: no ``nn.MultiheadAttention``, no patch grid, bad targets.
    """
    x = _batch(x)
    with torch.inference_mode(False), torch.enable_grad():
        with attention(model, layers, grad=True) as att:
            logits = _logits(model(x))
        if targets is None:
            targets = logits.detach().argmax(dim=1)
        t = torch.as_tensor(targets, device=logits.device).long().reshape(-1, 1)
        if t.shape[0] != logits.shape[0]:
            raise AttentionError(f"{t.shape[0]} targets for {logits.shape[0]} images")
        if int(t.min()) < 0 or int(t.max()) >= logits.shape[1]:
            raise AttentionError(f"target class out of range: {logits.shape[1]} classes")
        missing = [n for n in att.names if n not in att.weights]
        if missing:
            raise AttentionError(f"attention module(s) {missing} did not run in the forward")
        probes = [att.weights[n] for n in att.names]
        score = logits.gather(1, t).sum()
        grads = torch.autograd.grad(score, probes, allow_unused=True)
    total = None
    for name, g, a in zip(att.names, grads, probes, strict=True):
        if g is None:
            log.warning("the target score does not depend on the attention of %s", name)
            g = torch.zeros_like(a)
        per = F.relu(g.detach().float()).mean(dim=(1, 2))  # (B, S)
        total = per if total is None else total + per
    assert total is not None
    grid, extra = patch_grid(model, x, total.shape[-1])
    return _patches(total, grid, extra)


def _rollout_run(ctx: CamContext) -> torch.Tensor:
    return rollout(ctx.model, ctx.x)


def _legrad_run(ctx: CamContext) -> torch.Tensor:
    return legrad(ctx.model, ctx.x, ctx.targets)


ROLLOUT = register(CamMethod(
    "rollout", None, False, False, "Attention rollout",
    "Abnar & Zuidema, ACL 2020", run=_rollout_run), "attentionrollout", "attnrollout")
LEGRAD = register(CamMethod(
    "legrad", None, False, True, "LeGrad",
    "Bousselham et al., 2024 (ICCV 2025)", run=_legrad_run))
