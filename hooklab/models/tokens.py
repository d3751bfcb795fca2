"""Token maps → spatial maps: the layout of a layer's output, inferred from shapes.

CAM methods read a spatial activation ``(B, C, h, w)``. A Vision Transformer's blocks give
tokens ``(B, T, D)``: ``T = k + gh·gw`` with ``k`` extra tokens at the front (the class token;
DINOv2-style register tokens after it) and one token per patch, row-major. torchvision's Swin
stages (and their LayerNorms) give channel-last maps ``(B, H, W, C)``. :func:`infer_layout`
tells which of these a layer's output is, from its shape, the input's ``(H, W)`` and the
model's patch size (:func:`patch_size`), and returns a :class:`TokenLayout` that converts to the
spatial view and back (the dropped tokens put back), so a CAM engine can differentiate with
respect to the token tensor itself and show methods the reshaped view. This is what the peers'
hand-written ``reshape_transform`` does, inferred instead of written.

Example:
    >>> lay = infer_layout((2, 197, 768), (224, 224), patch=(16, 16))
    >>> lay.note
    'tokens (B, 197, 768) → grid 14×14, class token dropped'
    >>> lay.to_spatial(torch.zeros(2, 197, 768)).shape
    torch.Size([2, 768, 14, 14])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from hooklab.core.errors import NonSpatialLayerError

__all__ = ["LAYOUTS", "MAX_EXTRA_TOKENS", "TokenLayout", "TokenLayoutError", "infer_layout",
           "patch_size", "token_target_layer"]

#: What a caller may ask for: ``"auto"`` infers; the others force one reading.
LAYOUTS = ("auto", "spatial", "tokens", "channels_last")
#: At most this many extra tokens (class + registers) in front of the patch tokens.
MAX_EXTRA_TOKENS = 16


class TokenLayoutError(NonSpatialLayerError):
    """A layer's output cannot be read as a spatial map (no grid fits, or a forced layout that
    does not match)."""


def _dims(shape: Sequence[int]) -> str:
    return "(B, " + ", ".join(str(int(s)) for s in shape[1:]) + ")"


@dataclass(frozen=True)
class TokenLayout:
    """How a layer's output maps to the spatial view ``(B, C, gh, gw)`` the CAM methods read.

    Attributes:
        kind: ``"spatial"`` (already ``(B, C, h, w)``), ``"tokens"`` (``(B, T, D)``) or
            ``"channels_last"`` (``(B, H, W, C)``).
        shape: the layer output's shape (batch included).
        grid: ``(gh, gw)`` of the spatial view.
        dropped: extra tokens in front of the patch tokens (class + register tokens), removed
            from the spatial view and put back by :meth:`to_layout`.
    """

    kind: str
    shape: tuple[int, ...]
    grid: tuple[int, int]
    dropped: int = 0

    @property
    def channels(self) -> int:
        """Channels of the spatial view."""
        return int(self.shape[1] if self.kind == "spatial" else self.shape[-1])

    @property
    def note(self) -> str:
        """What was inferred, in words (``""`` for a plain spatial layer)."""
        gh, gw = self.grid
        if self.kind == "tokens":
            if self.dropped == 0:
                what = "no extra token"
            elif self.dropped == 1:
                what = "class token dropped"
            else:
                what = (f"{self.dropped} extra tokens dropped (class + "
                        f"{self.dropped - 1} register)")
            return f"tokens {_dims(self.shape)} → grid {gh}×{gw}, {what}"
        if self.kind == "channels_last":
            return (f"channels-last {_dims(self.shape)} → (B, {self.channels}, {gh}, {gw})")
        return ""

    def to_spatial(self, t: torch.Tensor) -> torch.Tensor:
        """``(B, C, gh, gw)`` view of an output (or of its gradient) in this layout."""
        if self.kind == "spatial":
            return t
        if self.kind == "channels_last":
            return t.permute(0, 3, 1, 2)
        gh, gw = self.grid
        return t[:, self.dropped:].transpose(1, 2).reshape(t.shape[0], t.shape[2], gh, gw)

    def to_layout(self, spatial: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`to_spatial`: ``spatial`` ``(N, C, gh, gw)`` back in this layout.

        ``like`` is an output in this layout whose extra tokens are put back in front (its
        first ``dropped`` tokens, broadcast over ``N`` when ``like`` has one sample).
        """
        if self.kind == "spatial":
            return spatial
        if self.kind == "channels_last":
            return spatial.permute(0, 2, 3, 1)
        n, d = spatial.shape[:2]
        patches = spatial.reshape(n, d, -1).transpose(1, 2)
        if not self.dropped:
            return patches
        extra = like[:, :self.dropped].to(dtype=spatial.dtype, device=spatial.device)
        return torch.cat([extra.expand(n, -1, -1), patches], dim=1)


def patch_size(model: nn.Module) -> tuple[int, int] | None:
    """The model's patch size: ``model.patch_size`` (torchvision ViT, hooklab's SimpleViT), else
    the stride of the patch embedding (a ``Conv2d`` named ``conv_proj`` or ``*patch*``, or the
    first ``Conv2d`` whose kernel equals its stride > 1, as Swin's ``features.0.0``); ``None``
    when the model has none."""
    own = getattr(model, "patch_size", None)
    if isinstance(own, int) and own > 0:
        return own, own
    if isinstance(own, (tuple, list)) and len(own) == 2 and all(isinstance(p, int) for p in own):
        return int(own[0]), int(own[1])
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    named = [m for n, m in convs if n.endswith("conv_proj") or "patch" in n.lower()]
    embed = [m for _, m in convs if tuple(m.kernel_size) == tuple(m.stride)
             and max(m.stride) > 1]
    for m in named + embed:
        s = tuple(int(v) for v in m.stride)
        return s[0], s[1]
    return None


def _stride_fits(size: int, cells: int, s: int) -> bool:
    return cells in (size // s, -(-size // s))


def _grid_fits(hw: tuple[int, int], gh: int, gw: int) -> bool:
    """Whether ``gh × gw`` cells tile ``hw`` with one integer stride (floor or ceil)."""
    h, w = hw
    if gh < 1 or gw < 1 or gh * gw < 2 or gh > h or gw > w:
        return False
    guesses = {max(1, h // gh + d) for d in (-1, 0, 1)}
    return any(_stride_fits(h, gh, s) and _stride_fits(w, gw, s) for s in guesses)


def _token_grid(t: int, hw: tuple[int, int] | None, patch: tuple[int, int] | None
                ) -> tuple[tuple[int, int], int] | None:
    """``((gh, gw), extra)`` for ``t`` tokens, or ``None``."""
    if hw is not None and patch is not None:
        for k in range(6):  # the patch grid, then the grids of merged (downsampled) stages
            gh, gw = hw[0] // (patch[0] << k), hw[1] // (patch[1] << k)
            if gh * gw >= 2 and 0 <= t - gh * gw <= MAX_EXTRA_TOKENS:
                return (gh, gw), t - gh * gw
        return None
    for extra in range(min(MAX_EXTRA_TOKENS, t - 2) + 1):
        n = t - extra
        for gh in range(1, n + 1):
            if n % gh:
                continue
            gw = n // gh
            ok = _grid_fits(hw, gh, gw) if hw is not None else gh == gw
            if ok and (hw is None or hw[0] % gh == 0 and hw[1] % gw == 0):
                return (gh, gw), extra
    return None


def infer_layout(shape: Sequence[int], input_hw: tuple[int, int] | None = None,
                 patch: tuple[int, int] | None = None, *, layout: str = "auto",
                 module: nn.Module | None = None, name: str = "") -> TokenLayout:
    """The layout of a layer output of ``shape`` (batch first).

    * 4-D ``(B, d1, d2, d3)``: spatial ``(B, C, h, w)`` unless it reads as channel-last
      ``(B, H, W, C)`` — ``(d1, d2)`` tiles the input with one integer stride and
      ``(d2, d3)`` does not, or the module is a ``LayerNorm`` over ``d3`` — as torchvision's
      Swin stages and norms are.
    * 3-D ``(B, T, D)``: tokens; the grid is the input size over the patch size (or over 2ᵏ
      times it, for merged stages), the ``T - gh·gw`` extra tokens (at most
      :data:`MAX_EXTRA_TOKENS`) are at the front. Without a patch size, the smallest number of
      extra tokens for which a grid tiles the input (a square grid without ``input_hw``).

    Args:
        shape: the output's shape.
        input_hw: the model input's ``(H, W)``.
        patch: the model's patch size (:func:`patch_size`).
        layout: one of :data:`LAYOUTS`; anything but ``"auto"`` forces that reading.
        module: the module that produced the output (a ``LayerNorm`` breaks a 4-D tie).
        name: the layer's name, for messages.

    Raises:
        TokenLayoutError: no grid fits, ``T`` is not a grid, or the forced layout does not match.
    """
    shape = tuple(int(s) for s in shape)
    if layout not in LAYOUTS:
        raise TokenLayoutError(f"unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    who = f"layer {name!r}" if name else "the layer"
    if len(shape) == 4:
        _, d1, d2, d3 = shape
        cf = input_hw is not None and _grid_fits(input_hw, d2, d3)
        cl = input_hw is not None and _grid_fits(input_hw, d1, d2)
        norm_last = (isinstance(module, nn.LayerNorm)
                     and tuple(module.normalized_shape) == (d3,))
        if layout == "tokens":
            raise TokenLayoutError(
                f"{who} has a 4-D output {_dims(shape)}"
                + (" — a channel-last (B, H, W, C) map like a Swin stage's" if cl else "")
                + "; it is not a token sequence (B, T, D); use layout='auto'"
                + (" or 'channels_last'" if cl else " or 'spatial'"))
        if layout == "channels_last" or (layout == "auto" and cl and (not cf or norm_last)):
            if d1 * d2 < 2:
                raise TokenLayoutError(f"{who} has output {_dims(shape)}: a 1×1 grid as "
                                       "channels-last; a CAM needs at least 2 positions")
            return TokenLayout("channels_last", shape, (d1, d2))
        if d2 * d3 < 2:
            raise TokenLayoutError(f"{who} has output {_dims(shape)}: a 1×1 map; a CAM needs "
                                   "a spatial (N, C, H, W) output with H·W > 1")
        return TokenLayout("spatial", shape, (d2, d3))
    if len(shape) == 3:
        if layout in ("spatial", "channels_last"):
            raise TokenLayoutError(f"{who} has a 3-D output {_dims(shape)}; layout={layout!r} "
                                   "needs a 4-D one; use layout='auto' or 'tokens'")
        _, t, d = shape
        found = _token_grid(t, input_hw, patch)
        if found is None:
            if input_hw is not None and patch is not None:
                gh, gw = input_hw[0] // patch[0], input_hw[1] // patch[1]
                why = (f"the input {input_hw[0]}×{input_hw[1]} with patch size "
                       f"{patch[0]}×{patch[1]} gives a {gh}×{gw} grid ({gh * gw} patch tokens)")
            else:
                why = "no grid of patches fits"
            raise TokenLayoutError(
                f"{who} has {t} tokens of width {d} {_dims(shape)}, and {t} is not a grid plus "
                f"at most {MAX_EXTRA_TOKENS} extra tokens: {why}")
        grid, extra = found
        return TokenLayout("tokens", shape, grid, extra)
    raise TokenLayoutError(f"{who} has output {_dims(shape) if shape else '()'}; a CAM needs "
                           "a spatial (N, C, H, W), token (B, T, D) or channel-last (B, H, W, C) "
                           "output")


def _is_attention(m: nn.Module) -> bool:
    return isinstance(m, nn.MultiheadAttention) or type(m).__name__.endswith("Attention")


def token_target_layer(model: nn.Module, records: dict[str, dict], names: Sequence[str],
                       input_hw: tuple[int, int]) -> str | None:
    """The CAM layer of a Vision Transformer from a dry run's records, or ``None``.

    The first norm of the last encoder block: the last ``LayerNorm`` that ends before the last
    attention module ends, whose output is a token grid (torchvision's ViT:
    ``encoder.layers.encoder_layer_11.ln_1``; timm's: ``blocks.11.norm1``). That is the layer
    pytorch-grad-cam's documentation recommends for ViTs: after the last block only the class
    token reaches the head, so the patch tokens of the last block's *output* get no gradient
    and every gradient CAM there is blank; the input of the last attention still mixes every
    patch into the class token. Channel-last (Swin) models are left to the spatial rule (the
    last stage's norm). ``records`` maps names to ``{"shape", "end", "calls"}``.
    """
    mods = dict(model.named_modules())
    attn = [n for n in names if n in records and _is_attention(mods[n])]
    if not attn:
        return None
    last = max(attn, key=lambda n: records[n]["end"])
    patch = patch_size(model)
    norms = []
    for n in names:
        r = records.get(n)
        if (r is None or not isinstance(mods[n], nn.LayerNorm) or r["end"] >= records[last]["end"]
                or r["shape"] is None or len(r["shape"]) != 3):
            continue
        try:
            infer_layout(r["shape"], input_hw, patch, module=mods[n], name=n)
        except TokenLayoutError:
            continue
        norms.append(n)
    return max(norms, key=lambda n: records[n]["end"]) if norms else None
