"""The attention lesson: the snippet the page shows is the code that runs; the pre-hook with
kwargs gets the weights torchvision's ViT never returns; they equal attention by hand; no hook
is left behind, also after an error inside the attention."""

from __future__ import annotations

import contextlib
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as torch_module
from torchvision.models.vision_transformer import VisionTransformer

from hooklab.data.datasets import shapes_sample
from hooklab.studies import lessons
from tests.conftest import total_hooks


@pytest.fixture(scope="module")
def vit_choice():
    return lessons.attention_model()


@pytest.fixture(scope="module")
def lesson(vit_choice):
    return lessons.attention_lesson(model=vit_choice)


def test_the_lesson_gets_per_head_weights_the_caller_did_not_ask_for(lesson, vit_choice):
    assert lesson.asked is False  # torchvision's EncoderBlock passes need_weights=False
    assert lesson.weights.shape == (1, 4, 65, 65) and lesson.heads == 4
    torch.testing.assert_close(lesson.weights.sum(-1), torch.ones(1, 4, 65))
    assert lesson.matches_by_hand and lesson.max_error < 1e-5
    assert lesson.matches_library and lesson.output_unchanged
    torch.testing.assert_close(lesson.maps, lesson.weights[0, :, 0, 1:].reshape(4, 8, 8))
    assert not torch.allclose(lesson.maps[0], lesson.maps[1])
    assert lesson.layer == "encoder.layers.encoder_layer_3.self_attention"
    assert lesson.image.shape == (32, 32, 3) and 0 <= lesson.image.min() <= lesson.image.max() <= 1
    assert lesson.lines[:2] == ["the caller passed need_weights=False",
                                "attention weights: (1, 4, 65, 65)"]
    assert total_hooks(vit_choice[0]) == 0


def test_the_snippet_shown_is_the_code_that_runs(lesson, vit_choice):
    model = vit_choice[0]
    x = shapes_sample(0, "test")[0][None]
    ns = {"model": model, "x": x, "torch": torch, "F": F}
    out = io.StringIO()
    with contextlib.redirect_stdout(out), torch.no_grad():
        exec(lessons.code("attention"), ns)  # noqa: S102 - our own snippet, the point of the test
    assert out.getvalue().splitlines() == lesson.lines
    torch.testing.assert_close(ns["w"], lesson.weights)
    torch.testing.assert_close(ns["cls"], lesson.maps)
    torch.testing.assert_close(ns["by_hand"], lesson.by_hand)
    assert total_hooks(model) == 0


def test_block_choice_and_language(vit_choice):
    r = lessons.attention_lesson(block=1, index=3, lang="zh", model=vit_choice)
    assert r.layer == "encoder.layers.encoder_layer_1.self_attention"
    assert r.lines[1].startswith("注意力权重: ")
    text = lessons.code("attention", "zh", block=1)
    assert "encoder.layers.encoder_layer_1.self_attention" in text and "注意力权重: " in text
    assert "encoder_layer_3" not in text
    with pytest.raises(ValueError, match="block must be between 0 and 3"):
        lessons.attention_lesson(block=4, model=vit_choice)


def test_the_fallback_vit_runs_the_same_lesson():
    torch.manual_seed(1)
    vit = VisionTransformer(num_classes=6, **lessons.FALLBACK_VIT).eval()
    r = lessons.attention_lesson(model=(vit, "fallback", tuple("abcdef")))
    assert r.weights.shape == (1, 4, 65, 65) and r.matches_by_hand and r.output_unchanged
    assert total_hooks(vit) == 0


def test_no_hook_left_after_an_error_inside_attention(vit_choice):
    model = vit_choice[0]

    def boom(module, args, output):
        if isinstance(module, nn.MultiheadAttention) and output[1] is not None:
            raise RuntimeError("injected inside attention")

    handle = torch_module.register_module_forward_hook(boom)
    try:
        with pytest.raises(RuntimeError, match="injected"):
            lessons.attention_lesson(model=vit_choice)
    finally:
        handle.remove()
    assert total_hooks(model) == 0
    q = torch.randn(1, 65, 64)
    attn = model.get_submodule("encoder.layers.encoder_layer_3.self_attention")
    with torch.no_grad():
        assert attn(q, q, q, need_weights=False)[1] is None
