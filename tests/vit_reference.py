"""A tiny torchvision ViT and its forward pass written out by hand, attention maps explicit.

The attention tests compare hooklab's captured weights, gradients, rollout and LeGrad with
values computed here in plain PyTorch on the same weights and input (no hook involved).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.vision_transformer import VisionTransformer


def tiny_vit(seed: int = 0, image_size: int = 32, patch_size: int = 8, num_layers: int = 2,
             num_heads: int = 4, hidden_dim: int = 32, num_classes: int = 5) -> VisionTransformer:
    """A small random torchvision ViT in eval mode (4×4 patches of a 32 px image by default).

    torchvision starts the head at zero and the class token at zero (every logit would be the
    bias and every gradient zero): both are drawn at random here.
    """
    torch.manual_seed(seed)
    model = VisionTransformer(image_size=image_size, patch_size=patch_size,
                              num_layers=num_layers, num_heads=num_heads, hidden_dim=hidden_dim,
                              mlp_dim=2 * hidden_dim, num_classes=num_classes).eval()
    with torch.no_grad():
        model.heads.head.weight.normal_(0, 0.5)
        model.class_token.normal_(0, 1.0)
    return model


def mha_by_hand(mha: nn.MultiheadAttention, y: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Self-attention of ``y`` ``(B, T, E)`` from the module's in_proj weights.

    Returns ``(out, A)``: ``A = softmax(q_h k_hᵀ / √d)`` per head ``(B, heads, T, T)`` and the
    output ``out_proj(A v)`` ``(B, T, E)``; ``A`` is the tensor the output is computed from.
    """
    b, t, e = y.shape
    h = mha.num_heads
    d = e // h
    q, k, v = F.linear(y, mha.in_proj_weight, mha.in_proj_bias).chunk(3, dim=-1)

    def heads(z: torch.Tensor) -> torch.Tensor:
        return z.reshape(b, t, h, d).transpose(1, 2)

    q, k, v = heads(q), heads(k), heads(v)
    a = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d), dim=-1)
    o = (a @ v).transpose(1, 2).reshape(b, t, e)
    return mha.out_proj(o), a


def vit_by_hand(model: VisionTransformer, x: torch.Tensor
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """torchvision's ViT forward (eval mode) written out: logits and each block's ``A``."""
    n = x.shape[0]
    tok = model._process_input(x)
    tok = torch.cat([model.class_token.expand(n, -1, -1), tok], dim=1)
    tok = tok + model.encoder.pos_embedding
    maps = []
    for blk in model.encoder.layers:
        out, a = mha_by_hand(blk.self_attention, blk.ln_1(tok))
        maps.append(a)
        tok = tok + out
        tok = tok + blk.mlp(blk.ln_2(tok))
    tok = model.encoder.ln(tok)
    return model.heads(tok[:, 0]), maps
