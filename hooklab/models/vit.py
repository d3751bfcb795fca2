"""A small Vision Transformer for the 32×32 shapes images, built like torchvision's ViT.

:class:`SimpleViT` is torchvision's :class:`~torchvision.models.VisionTransformer` with small
sizes, so every module has the name and type it has in ``vit_b_16``: ``conv_proj`` (the patch
embedding, a ``Conv2d`` with kernel = stride = patch size), ``class_token``,
``encoder.pos_embedding``, ``encoder.layers.encoder_layer_<i>`` (an ``EncoderBlock`` of
``ln_1``, ``self_attention`` — an :class:`torch.nn.MultiheadAttention` called with
``need_weights=False`` —, ``ln_2``, ``mlp``), ``encoder.ln`` and ``heads.head`` on the class
token. What a hook, an attention capture or a token-map CAM does on ``vit_b_16`` it does here
in milliseconds.

Shapes with the defaults: input ``(N, 3, 32, 32)`` → ``conv_proj`` ``(N, 64, 8, 8)`` → 64 patch
tokens plus the class token → every block ``(N, 65, 64)`` → logits ``(N, num_classes)``.

Example:
    >>> model = SimpleViT(num_classes=6)
    >>> model(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 6])
    >>> model.patch_size, model.input_shape
    (4, (3, 32, 32))
"""

from __future__ import annotations

from torch import nn
from torchvision.models.vision_transformer import VisionTransformer

__all__ = ["SimpleViT", "draw_head"]


class SimpleViT(VisionTransformer):
    """torchvision's ViT at 32×32: patch 4 (an 8×8 grid), 4 blocks, width 64, 4 heads.

    Args:
        num_classes: logits of the head on the class token.
        image_size: input height = width (the shapes images are 32).
        patch_size: side of a patch; ``image_size`` must be a multiple of it.
        num_layers: encoder blocks.
        num_heads: attention heads per block (``hidden_dim`` must be a multiple of it).
        hidden_dim: token width.
        mlp_dim: hidden width of each block's MLP.
        dropout: dropout after the position embedding and inside the MLPs (0: none).

    Unlike torchvision's, the head starts random (:func:`draw_head`).

    Attributes:
        input_shape: ``(3, image_size, image_size)``, read by hooklab's pickers and dry runs.
        patch_size: read by the token-map CAMs to infer the token grid.
    """

    def __init__(self, num_classes: int = 10, *, image_size: int = 32, patch_size: int = 4,
                 num_layers: int = 4, num_heads: int = 4, hidden_dim: int = 64,
                 mlp_dim: int = 128, dropout: float = 0.0) -> None:
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size "
                             f"{patch_size}")
        if hidden_dim % num_heads:
            raise ValueError(f"hidden_dim {hidden_dim} is not a multiple of num_heads "
                             f"{num_heads}")
        super().__init__(image_size=image_size, patch_size=patch_size, num_layers=num_layers,
                         num_heads=num_heads, hidden_dim=hidden_dim, mlp_dim=mlp_dim,
                         dropout=dropout, attention_dropout=0.0, num_classes=num_classes)
        self.input_shape = (3, image_size, image_size)
        draw_head(self)


def draw_head(model: VisionTransformer) -> None:
    """Draw the classification head's weights like the other linear layers (truncated normal,
    std 0.02) instead of torchvision's zeros.

    With torchvision's zero head an untrained ViT gives every class the same logit and every
    gradient below the head is zero, so hooks on a "random weights" ViT would show nothing but
    zeros; trained weights overwrite the head anyway.
    """
    head = getattr(getattr(model, "heads", None), "head", None)
    if isinstance(head, nn.Linear):
        nn.init.trunc_normal_(head.weight, std=0.02)
