"""hooklab.models.tokens: the layout of a layer output, inferred from shapes (no model run)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hooklab.core.errors import NonSpatialLayerError
from hooklab.models.tokens import (
    TokenLayout,
    TokenLayoutError,
    infer_layout,
    patch_size,
)


def numbered_tokens(b: int, extra: int, gh: int, gw: int, d: int) -> torch.Tensor:
    """Tokens whose value says where they are: ``t[b, i, c] = 1000 b + i + c / 100``."""
    t = torch.arange(extra + gh * gw, dtype=torch.float64)[None, :, None]
    return t + 1000 * torch.arange(b, dtype=torch.float64)[:, None, None] + (
        torch.arange(d, dtype=torch.float64)[None, None, :] / 100)


def test_vit_b_16_tokens_read_as_a_14x14_grid_without_the_class_token():
    lay = infer_layout((2, 197, 768), (224, 224), (16, 16))
    assert (lay.kind, lay.grid, lay.dropped, lay.channels) == ("tokens", (14, 14), 1, 768)
    assert lay.note == "tokens (B, 197, 768) → grid 14×14, class token dropped"
    # without the patch size the smallest extra-token count whose grid tiles the input wins
    assert infer_layout((2, 197, 768), (224, 224)) == lay
    assert infer_layout((2, 197, 768)).grid == (14, 14)  # no input size: a square grid


def test_patch_tokens_land_row_major_and_come_back_with_the_extra_tokens():
    b, extra, gh, gw, d = 2, 5, 3, 4, 6  # class token + 4 registers, a 3×4 grid
    t = numbered_tokens(b, extra, gh, gw, d)
    lay = infer_layout(t.shape, (12, 16), (4, 4))
    assert (lay.grid, lay.dropped) == ((3, 4), 5)
    assert lay.note == "tokens (B, 17, 6) → grid 3×4, 5 extra tokens dropped (class + 4 register)"
    sp = lay.to_spatial(t)
    assert sp.shape == (b, d, gh, gw)
    for i in range(gh):
        for j in range(gw):
            torch.testing.assert_close(sp[:, :, i, j], t[:, extra + i * gw + j, :], rtol=0, atol=0)
    assert torch.equal(lay.to_layout(sp, t), t)
    # one sample's extra tokens broadcast over a batch of replacements
    rep = torch.zeros(3, d, gh, gw, dtype=t.dtype)
    back = lay.to_layout(rep, t[1:2])
    assert torch.equal(back[:, :extra], t[1:2, :extra].expand(3, -1, -1))
    assert int(torch.count_nonzero(back[:, extra:])) == 0


def test_swin_channel_last_maps_are_permuted():
    lay = infer_layout((2, 7, 7, 768), (224, 224), (4, 4), name="norm")
    assert (lay.kind, lay.grid, lay.channels) == ("channels_last", (7, 7), 768)
    assert lay.note == "channels-last (B, 7, 7, 768) → (B, 768, 7, 7)"
    t = torch.randn(2, 7, 7, 768)
    assert torch.equal(lay.to_spatial(t), t.permute(0, 3, 1, 2))
    assert torch.equal(lay.to_layout(lay.to_spatial(t), t), t)
    # a Swin stage on a non-square input, and the first stage of a 512 px input
    assert infer_layout((1, 8, 16, 96), (64, 128)).kind == "channels_last"
    assert infer_layout((1, 128, 128, 96), (512, 512)).kind == "channels_last"


@pytest.mark.parametrize("shape,hw", [
    ((2, 512, 7, 7), (224, 224)),      # ResNet layer4
    ((2, 64, 56, 56), (224, 224)),     # ResNet layer1
    ((2, 512, 2, 2), (40, 64)),        # a non-square input, rounded strides
    ((1, 2, 4, 4), (4, 4)),            # the seed's SimpleModel conv
    ((4, 128, 8, 8), (32, 32)),        # the seed's conv3
    ((4, 128, 8, 8), None),            # from a trace without the input size
])
def test_convolutional_maps_stay_spatial(shape, hw):
    lay = infer_layout(shape, hw)
    assert (lay.kind, lay.grid, lay.note) == ("spatial", shape[2:], "")
    t = torch.randn(shape)
    assert lay.to_spatial(t) is t


def test_a_layer_norm_over_the_last_dim_breaks_a_tie_towards_channel_last():
    assert infer_layout((2, 8, 8, 8), (32, 32)).kind == "spatial"
    assert infer_layout((2, 8, 8, 8), (32, 32), module=nn.LayerNorm(8)).kind == "channels_last"
    assert infer_layout((2, 8, 8, 8), (32, 32), layout="channels_last").kind == "channels_last"


def test_an_ungriddable_token_count_is_one_clear_error():
    with pytest.raises(TokenLayoutError, match=r"190 tokens.*14×14 grid \(196 patch tokens\)"):
        infer_layout((2, 190, 768), (224, 224), (16, 16), name="blocks.3")
    with pytest.raises(NonSpatialLayerError, match="'blocks.3'.*not a grid"):
        infer_layout((2, 190, 768), (224, 224), name="blocks.3")


def test_a_swin_map_forced_as_vit_tokens_says_what_it_is():
    with pytest.raises(TokenLayoutError, match=r"channel-last.*Swin.*not a token sequence.*"
                                               r"'channels_last'"):
        infer_layout((2, 7, 7, 768), (224, 224), layout="tokens", name="norm")
    with pytest.raises(TokenLayoutError, match="3-D output.*layout='spatial' needs a 4-D"):
        infer_layout((2, 197, 768), (224, 224), layout="spatial")


@pytest.mark.parametrize("shape", [(2, 512, 1, 1), (2, 10), (2, 1, 1, 768)])
def test_outputs_without_positions_are_refused(shape):
    with pytest.raises(TokenLayoutError, match="CAM needs"):
        infer_layout(shape, (224, 224), layout="auto" if len(shape) != 4 or shape[1] != 1
                     else "channels_last")


def test_unknown_layout():
    with pytest.raises(TokenLayoutError, match="unknown layout 'rows'"):
        infer_layout((2, 197, 768), (224, 224), layout="rows")


def test_patch_size_from_the_attribute_or_the_patch_embedding():
    torchvision = pytest.importorskip("torchvision")
    assert patch_size(torchvision.models.VisionTransformer(
        32, 8, num_layers=1, num_heads=1, hidden_dim=8, mlp_dim=8)) == (8, 8)

    class Embed(nn.Module):
        def __init__(self):
            super().__init__()
            self.patch_embed = nn.Module()
            self.patch_embed.proj = nn.Conv2d(3, 8, 14, stride=14)

    assert patch_size(Embed()) == (14, 14)
    assert patch_size(torchvision.models.swin_t()) == (4, 4)  # features.0.0: kernel = stride 4
    assert patch_size(torchvision.models.resnet18()) is None


def test_layout_is_a_value():
    a = TokenLayout("tokens", (2, 197, 768), (14, 14), 1)
    assert a == infer_layout((2, 197, 768), (224, 224), (16, 16)) and hash(a) == hash(
        TokenLayout("tokens", (2, 197, 768), (14, 14), 1))
