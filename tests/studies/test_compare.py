"""A/B comparison: halving at conv2 gives ratio 0.5 upstream, 1.0 downstream; round trips."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from hooklab.charts import compare as CC
from hooklab.core.errors import EditError, HooklabError, LayerNotFoundError
from hooklab.models.zoo import SimpleCNN, SimpleModel
from hooklab.studies import compare as cmpmod


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(3)
    model = SimpleCNN().eval()
    x = torch.randn(2, 3, 32, 32)
    return model, x


@pytest.fixture(scope="module")
def halved(setup):
    model, x = setup
    from tests.conftest import hook_counts

    before = hook_counts(model)
    cmp = cmpmod.compare_edits(model, x, None, {"conv2": "scale(0.5)"})
    assert hook_counts(model) == before
    return cmp


def _plain_grads(model, x, target, k):
    """Parameter and input gradients with plain PyTorch: a tensor hook scales conv2's output."""
    xx = x.clone().requires_grad_(True)

    def scale_grad(module, inputs, output):  # returns None: the output is not replaced
        output.register_hook(lambda g: g * k)

    h = model.conv2.register_forward_hook(scale_grad)
    try:
        out = model(xx)
    finally:
        h.remove()
    score = out.gather(1, torch.tensor(target).view(-1, 1)).sum()
    params = dict(model.named_parameters())
    grads = torch.autograd.grad(score, [xx, *params.values()])
    return grads[0], dict(zip(params, grads[1:], strict=True))


def test_halving_at_conv2_upstream_half_downstream_one(halved):
    r = halved.ratios("param_grad")
    assert list(r) == ["conv1", "conv2", "conv3", "fc1", "fc2"]
    for layer in ("conv1", "conv2"):  # conv2's own weights get the halved gradient too
        assert r[layer] == pytest.approx(0.5, rel=1e-6)
    for layer in ("conv3", "fc1", "fc2"):
        assert r[layer] == pytest.approx(1.0, rel=1e-6)
    assert halved.input_grad_ratio == pytest.approx(0.5, rel=1e-6)
    out = halved.ratios("grad_output")
    assert out["conv1"] == pytest.approx(0.5) and out["pool (call 0)"] == pytest.approx(0.5)
    # conv2's recorded output gradient is the value before the edit: unchanged
    for label in ("conv2", "pool (call 1)", "conv3", "pool (call 2)", "fc1", "fc2"):
        assert out[label] == pytest.approx(1.0)
    # forward order of the output-gradient rows
    assert list(out) == ["conv1", "pool (call 0)", "conv2", "pool (call 1)", "conv3",
                         "pool (call 2)", "fc1", "fc2"]


def test_norms_equal_plain_pytorch(setup, halved):
    model, x = setup
    target = halved.target
    with torch.no_grad():
        assert target == model(x).argmax(1).tolist()
    for k, col, grad in ((1.0, "norm_a", halved.input_grad_a),
                         (0.5, "norm_b", halved.input_grad_b)):
        gx, gp = _plain_grads(model, x, target, k)
        torch.testing.assert_close(grad, gx)
        t = halved.table[halved.table["quantity"] == "param_grad"].set_index("layer")
        for layer in ("conv1", "conv2", "conv3", "fc1", "fc2"):
            ref = math.sqrt(sum(float(g.norm()) ** 2 for n, g in gp.items()
                                if n.startswith(layer + ".")))
            assert t.loc[layer, col] == pytest.approx(ref, rel=1e-5)


def test_cam_difference_present(halved):
    assert halved.cam_layer is not None
    assert halved.cam_a.shape == (2, 32, 32)
    # Grad-CAM normalises each map, and conv3 is downstream of the edit: no difference
    torch.testing.assert_close(halved.cam_diff, torch.zeros_like(halved.cam_diff))


def test_activation_edit_changes_cam(setup):
    model, x = setup
    cmp = cmpmod.compare_edits(model, x, None, ["conv3:activation=channel_mask([0, 1, 2, 3])"],
                               cam_layer="conv3")
    assert cmp.cam_diff is not None and float(cmp.cam_diff.abs().max()) > 0


def test_store_round_trip_rebuilds_same_view(halved, tmp_path):
    from hooklab.store.runs import TraceStore

    store = TraceStore(tmp_path)
    rid = store.save(halved.to_trace({"page": "compare"}), author="t")
    loaded = store.load(rid)
    assert loaded.meta["page"] == "compare"
    again = cmpmod.EditComparison.from_trace(loaded)
    pd.testing.assert_frame_equal(again.table, halved.table)
    torch.testing.assert_close(again.input_grad_b, halved.input_grad_b)
    torch.testing.assert_close(again.cam_b, halved.cam_b)
    assert again.config_b == halved.config_b and again.target == halved.target
    # the Runs page compares two stored runs: side B of this run against side A
    a, b = cmpmod.split_trace(loaded)
    runs = cmpmod.compare_runs(a, b)
    assert runs.ratios("param_grad")["conv1"] == pytest.approx(0.5)


def test_bad_config_and_layer_errors(setup):
    model, x = setup
    with pytest.raises(EditError):
        cmpmod.compare_edits(model, x, None, {"conv2": "halve_it(2)"})
    with pytest.raises(LayerNotFoundError, match="conv"):
        cmpmod.compare_edits(model, x, None, {"conv9": "scale(0.5)"})
    with pytest.raises(HooklabError):
        cmpmod.EditComparison.from_trace(cmpmod.Trace())


def test_config_text_and_specs():
    assert cmpmod.config_text(None) == "no edit"
    assert cmpmod.config_text({"conv2": "scale(0.5)"}) == "conv2=scale(0.5)"
    assert cmpmod.config_text("conv1=zero()\nconv2:activation=scale(2)") == \
        "conv1=zero(); conv2=scale(2.0)@activation"
    assert cmpmod.config_specs(["conv2=halve"])[0]["edit"] == {"name": "scale", "k": 0.5}


def test_norm_table_zero_and_missing():
    ev = pd.DataFrame({"seq": [0, 1], "step": [0, 0], "phase": ["forward", "backward"],
                       "layer": ["a", "a"], "call": [0, 0], "role": ["output", "grad_output"],
                       "norm": [1.0, 0.0]})
    t = cmpmod.norm_table(ev, ev)
    assert t["ratio"].tolist() == [1.0]  # 0 / 0 counts as unchanged
    ev2 = ev.assign(norm=[1.0, 2.0])
    assert math.isnan(cmpmod.norm_table(ev, ev2)["ratio"].iloc[0])


def test_ratio_chart_data(halved):
    fig = CC.ratio_bars(halved.table, "param_grad")
    bar = fig.data[0]
    assert list(bar.x) == ["conv1", "conv2", "conv3", "fc1", "fc2"]
    np.testing.assert_allclose(bar.y, [0.5, 0.5, 1.0, 1.0, 1.0], rtol=1e-6)
    assert bar.y.dtype == np.float32
    fig = CC.ratio_bars(halved.table)
    assert fig.data[0].x[0] == "input"


def test_input_grad_and_cam_charts(halved):
    fig = CC.input_grad_maps(halved.input_grad_a, halved.input_grad_b)
    a, b, d = (np.asarray(t.z) for t in fig.data)
    np.testing.assert_allclose(b, a * 0.5, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(d, b - a, rtol=1e-5, atol=1e-9)
    assert fig.data[0].zmax == fig.data[1].zmax  # one scale: half looks half as bright
    fig = CC.cam_difference(halved.cam_a, halved.cam_b, layer="conv3")
    assert "conv3" in fig.layout.title.text and np.asarray(fig.data[0].z).shape == (32, 32)


def test_training_charts_from_histories():
    steps = np.arange(5)
    ha = pd.DataFrame({"step": steps, "loss": 2.0 - 0.1 * steps, "accuracy": 0.1 * steps,
                       "grad_norm/conv1": 1.0 + steps, "grad_norm/fc": 2.0 + steps})
    hb = ha.assign(**{"grad_norm/conv1": ha["grad_norm/conv1"] * 0.5})
    fig = CC.training_curves(ha, hb)
    assert len(fig.data) == 4
    np.testing.assert_allclose(fig.data[0].y, ha["loss"])
    fig = CC.grad_norms_over_training(ha, hb)
    conv1 = [d for d in fig.data if d.name == "conv1"]
    np.testing.assert_allclose(conv1[1].y, conv1[0].y * 0.5)
    assert CC.grad_norm_columns(ha) == {"conv1": "grad_norm/conv1", "fc": "grad_norm/fc"}


def test_simple_model_compare_no_leak(no_leak):
    torch.manual_seed(0)
    model = SimpleModel().eval()
    x = torch.randn(3, 1, 4, 4)
    with no_leak(model):
        cmp = cmpmod.compare_edits(model, x, None, {"relu": "zero()"}, cam_layer=None)
    r = cmp.ratios("param_grad")
    assert r["conv"] == 0.0 and r["fc"] == 1.0
    with no_leak(model), pytest.raises(EditError):
        cmpmod.compare_edits(model, x, None, ["relu=scale('x')"], cam_layer=None)


def test_compare_training_halving_first_step(tmp_path, monkeypatch):
    monkeypatch.setenv("HOOKLAB_CACHE", str(tmp_path / "cache"))
    from hooklab.studies.train import TrainConfig

    base = dict(steps=4, n_train=128, n_test=64, batch_size=16)
    seen: list[tuple[float, str]] = []
    res = cmpmod.compare_training(TrainConfig(**base), TrainConfig(**base, edits=["conv2=halve"]),
                                  steps=3, progress=lambda f, msg: seen.append((f, msg)),
                                  keep_models=True)
    ha, hb = res.history_a, res.history_b
    assert len(ha) == len(hb) == 3  # `steps` overrides the configurations
    # step 0: same weights, same batch -> upstream halved, downstream unchanged
    a0, b0 = ha.iloc[0], hb.iloc[0]
    assert b0["loss"] == pytest.approx(a0["loss"])
    for layer in ("conv1", "conv2"):
        assert b0[f"param_grad_norm/{layer}"] == pytest.approx(0.5 * a0[f"param_grad_norm/{layer}"],
                                                               rel=1e-5)
    for layer in ("conv3", "fc1", "fc2"):
        assert b0[f"param_grad_norm/{layer}"] == pytest.approx(a0[f"param_grad_norm/{layer}"],
                                                               rel=1e-5)
    fracs = [f for f, _ in seen]
    assert fracs == sorted(fracs) and fracs[-1] == 1.0 and any("B:" in m for _, m in seen)
    assert res.config_b["edits"][0]["edit"] == {"name": "scale", "k": 0.5}
    # each side's test accuracy is its own model's, computed here on the 64 test images
    from hooklab.data.datasets import make_shapes

    test = make_shapes(64, 0, "test")
    for model, reported in zip(res.models, (res.test_accuracy_a, res.test_accuracy_b),
                               strict=True):
        with torch.no_grad():
            right = int((model.eval()(test.images).argmax(1) == test.labels).sum())
        assert reported == pytest.approx(right / 64, abs=1e-12)
    assert not torch.equal(res.models[0].conv1.weight, res.models[1].conv1.weight)
    from hooklab.studies.train import (
        train,  # side A's model is the one config A trains, for 3 steps
    )

    direct, _ = train(TrainConfig(**{**base, "steps": 3}))
    for (name, p), q in zip(direct.named_parameters(), res.models[0].parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-7, msg=name)
    # round trip through a trace (what the page saves)
    again = cmpmod.TrainingComparison.from_trace(res.to_trace({"page": "compare"}))
    pd.testing.assert_frame_equal(again.history_b, hb, check_dtype=False)
    assert again.test_accuracy_b == pytest.approx(res.test_accuracy_b)
    fig = CC.grad_norms_over_training(ha, hb, prefix="param_grad_norm")
    conv1 = [d for d in fig.data if d.name == "conv1"]
    assert conv1[1].y[0] == pytest.approx(0.5 * conv1[0].y[0], rel=1e-5)
