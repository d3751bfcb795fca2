"""Hook-basics figures: the seed's three panels, chain-rule bars, backward-kind tables."""

from __future__ import annotations

import numpy as np
import torch

from hooklab.charts import basics as B
from hooklab.charts import common as C
from hooklab.studies import lessons


def test_forward_panels_are_the_seed_three_panels():
    r = lessons.forward_hook_lesson()
    fig = B.forward_panels(r.input_map, r.channel_maps)
    assert [d.type for d in fig.data] == ["heatmap"] * 3
    for d in fig.data:
        assert d.z.dtype == np.float32 and d.colorscale[0][1] in ("rgb(0,0,0)", "#000000",
                                                                 "rgb(0, 0, 0)")
    np.testing.assert_array_equal(fig.data[0].z, r.input[0, 0].numpy())
    np.testing.assert_array_equal(fig.data[1].z, r.output[0, 0].numpy())
    np.testing.assert_array_equal(fig.data[2].z, r.output[0, 1].numpy())
    titles = [a.text for a in fig.layout.annotations]
    assert titles == ["input", "channel 1", "channel 2"]
    assert fig.layout.yaxis.autorange == "reversed"  # row 0 on top, as plt.imshow


def test_tensor_hook_bars_show_live_numbers():
    r = lessons.tensor_hook_lesson(0.5)
    fig = B.tensor_hook_bars(r.dz_dy, r.k, r.dy_dx, r.x_grad, r.x_grad_without_hook)
    y = fig.data[0].y
    assert y.dtype == np.float32
    assert list(y) == [48.0, 24.0, 4.0, 96.0, 192.0]
    assert "= 96" in fig.layout.title.text


def test_multi_op_and_replace_bars():
    demo = lessons.backward_hook_lesson().multi_op[0]
    fig = B.multi_op_bars(demo.deprecated, demo.full, demo.reference)
    assert [list(d.y) for d in fig.data] == [[1.0, 1.0], [2.0, 2.0], [2.0, 2.0]]
    rep = lessons.forward_replace_lesson()
    fig = B.replace_bars(rep.logits[0], rep.logits_output_replaced[0], rep.fc_bias)
    np.testing.assert_allclose(fig.data[1].y, fig.data[2].y, rtol=1e-6)


def test_backward_kinds_table_marks_matches():
    t = B.backward_kinds_table(lessons.backward_hook_lesson().table())
    assert set(t["matches autograd"]) == {"✓"}
    assert (t["kind"] == "backward").sum() == 4  # 3 grad_input + 1 grad_output, as the seed


def test_common_helpers():
    a, step = C.downsample2d(np.zeros((3000, 3000), np.float32))
    assert a.size <= C.MAX_VALUES and step == 3
    assert C.budget_note(1) == "" and "downsampled" in C.budget_note(3)
    assert C.to_f32(torch.ones(2, dtype=torch.float16)).dtype == np.float32
    assert C.flag_text(2, 0) == "⚠ 2 NaN" and C.flag_text(0, 0) == ""
