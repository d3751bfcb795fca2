"""Every gradient the recorder reports equals torch.autograd.grad on the same graph."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torch import nn

import hooklab
from hooklab.core.trace import shape_str
from hooklab.models.zoo import SimpleCNN, SimpleModel


def _capture_outputs(model: nn.Module, names: list[str]):
    """Plain forward hooks that keep each module's output tensor (no clone: same graph)."""
    outs: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    mods = dict(model.named_modules())
    handles = [mods[n].register_forward_hook(lambda m, a, o, n=n: outs[n].append(o))
               for n in names]
    return outs, handles


def _check_same_graph(model: nn.Module, x: torch.Tensor, no_leak) -> None:
    model.eval()
    x = x.clone().requires_grad_()
    params = dict(model.named_parameters())
    with no_leak(model):
        with hooklab.record(model, param_grads=True, input_grads=True) as rec:
            names = rec.layers
            outs, handles = _capture_outputs(model, names)
            try:
                out = model(x)
                loss = out[:, 1].sum() + 0.3 * out[:, 0].sum()
                flat = [(n, c, t) for n in names for c, t in enumerate(outs[n])]
                ref = torch.autograd.grad(
                    loss, [t for _, _, t in flat] + list(params.values()) + [x],
                    retain_graph=True)
                model.zero_grad(set_to_none=True)
                loss.backward()
            finally:
                for h in handles:
                    h.remove()
    k = len(flat)
    ref_out = {(n, c): g for (n, c, _), g in zip(flat, ref[:k])}
    ref_par = dict(zip(params, ref[k: k + len(params)]))
    ref_x = ref[-1]
    trace = rec.trace
    ev = trace.events
    # output gradients
    for (n, c), g in ref_out.items():
        # tensor hooks fire in both passes over the graph (autograd.grad, then backward);
        # a module called several times (SimpleCNN's pool) has one call index per use
        rows = ev[(ev.layer == n) & (ev.role == "grad_output") & (ev.call == c)]
        assert len(rows) == 2, (n, c)
        for _, row in rows.iterrows():
            torch.testing.assert_close(trace.tensor(row["key"]), g, rtol=1e-5, atol=1e-7)
            assert row["shape"] == shape_str(g.shape)
            assert row["norm"] == pytest.approx(float(g.norm()), rel=1e-4, abs=1e-7)
    # parameter gradients
    seen = 0
    for full, g in ref_par.items():
        mod, _, pname = full.rpartition(".")
        row = ev[(ev.layer == mod) & (ev.role == "param_grad") & (ev["index"] == pname)]
        assert len(row) == 1, full
        torch.testing.assert_close(trace.tensor(row.iloc[0]["key"]), g, rtol=1e-5, atol=1e-7)
        seen += 1
    assert seen == len(params)
    # input gradient of the first layer == d loss / d x
    first = names[0]
    rows = ev[(ev.layer == first) & (ev.role == "grad_input")]
    assert len(rows) == 2
    for key in rows["key"]:
        torch.testing.assert_close(trace.tensor(key), ref_x, rtol=1e-5, atol=1e-7)


def test_simple_model_grads_equal_autograd(no_leak):
    torch.manual_seed(0)
    _check_same_graph(SimpleModel(), torch.randn(3, 1, 4, 4), no_leak)


def test_simple_cnn_grads_equal_autograd(no_leak):
    torch.manual_seed(0)
    _check_same_graph(SimpleCNN(), torch.randn(2, 3, 32, 32), no_leak)


def _out_of_place(model: nn.Module) -> nn.Module:
    ref = copy.deepcopy(model)
    for m in ref.modules():
        if hasattr(m, "inplace"):
            m.inplace = False
    return ref


@pytest.mark.slow
def test_resnet18_inplace_relu_grads_equal_autograd(no_leak):
    """ResNet-18 uses ReLU(inplace=True) after BatchNorm: the recorded gradient w.r.t. each
    leaf's output must still be the gradient w.r.t. the value the layer produced."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    with no_leak(model):
        with hooklab.record(model, param_grads=True) as rec:
            model.zero_grad(set_to_none=True)
            out = model(x)
            out[:, 3].sum().backward()
    # reference: same weights, every in-place op made out of place, outputs captured
    ref = _out_of_place(model)
    names = rec.layers
    outs, handles = _capture_outputs(ref, names)
    try:
        loss = ref(x)[:, 3].sum()
        params = dict(ref.named_parameters())
        flat = [(n, c, t) for n in names for c, t in enumerate(outs[n])]
        grads = torch.autograd.grad(loss, [t for _, _, t in flat] + list(params.values()))
    finally:
        for h in handles:
            h.remove()
    ev = rec.trace.events
    go = ev[ev.role == "grad_output"]
    k = len(flat)
    assert len(go) == k
    for (n, c, _), g in zip(flat, grads[:k]):
        rows = go[(go.layer == n) & (go.call == c)]
        assert len(rows) == 1, (n, c)
        torch.testing.assert_close(rec.trace.tensor(rows.iloc[0]["key"]), g, rtol=1e-4, atol=1e-6)
    for (full, g) in zip(params, grads[k:]):
        mod, _, pname = full.rpartition(".")
        row = ev[(ev.layer == mod) & (ev.role == "param_grad") & (ev["index"] == pname)]
        torch.testing.assert_close(rec.trace.tensor(row.iloc[0]["key"]), g, rtol=1e-4, atol=1e-6)
    # the recorded forward values of in-place-followed layers are the pre-ReLU values
    bn1 = rec.trace.find(layer="bn1", role="output")
    assert float(bn1.min()) < 0


def _accumulated_trace(model: nn.Module, batch: bool, no_leak, extra: list | None = None):
    g = torch.Generator().manual_seed(5)
    xs = [torch.randn(3, 3, 32, 32, generator=g) for _ in range(2)]
    with no_leak(model):
        with hooklab.record(model, param_grads=True, keep_tensors=False,
                            batch_param_stats=batch) as rec:
            model.zero_grad(set_to_none=True)
            for x in xs:  # gradient accumulation: two backward passes, one step
                model(x).pow(2).mean().backward()
                if extra is not None:
                    extra.append({n: p.grad.clone() for n, p in model.named_parameters()})
            if batch:
                assert not rec._param_batch  # every pass flushed at its end
    return rec.trace


def test_batched_parameter_statistics_equal_the_per_hook_events(no_leak, stats_path):
    """``batch_param_stats`` (what watch uses) summarises a pass's parameter gradients in one
    call at the end of the pass: the same rows, the same statistics, the same firing order
    as one summary per hook, pass by pass; each checked against the accumulated gradient."""
    model = SimpleCNN().eval()
    grads: list[dict[str, torch.Tensor]] = []
    batched = _accumulated_trace(model, True, no_leak, grads).events
    per_hook = _accumulated_trace(model, False, no_leak).events
    pd_testing = pytest.importorskip("pandas").testing
    pd_testing.assert_frame_equal(batched, per_hook, check_exact=True)
    pg = batched[batched.role == "param_grad"]
    assert len(pg) == 2 * len(list(model.parameters()))
    assert (batched["seq"].diff().dropna() == 1).all()
    for _, r in pg.iterrows():
        want = grads[int(r["call"])][f"{r['layer']}.{r['index']}"]
        assert r["norm"] == pytest.approx(float(want.double().norm()), rel=1e-5)
        assert r["max"] == float(want.max())


def test_sparse_parameter_gradients_are_summarised_as_their_dense_values(no_leak):
    """nn.Embedding(sparse=True) gives a sparse weight gradient: summarised (implicit zeros
    included), not a crash of the training loop; equal to autograd's gradient made dense."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(10, 4, sparse=True), nn.Flatten(), nn.Linear(8, 2))
    idx = torch.tensor([[1, 2], [2, 7]])
    for batch in (False, True):
        with no_leak(model):
            with hooklab.record(model, param_grads=True, keep_tensors=False,
                                batch_param_stats=batch) as rec:
                model.zero_grad(set_to_none=True)
                loss = model(idx).sum()
                (ref,) = torch.autograd.grad(loss, [model[0].weight], retain_graph=True)
                loss.backward()
        row = rec.trace.select(layer="0", role="param_grad", index="weight").iloc[0]
        dense = ref.to_dense()
        assert ref.layout == torch.sparse_coo
        assert row["norm"] == pytest.approx(float(dense.norm()), rel=1e-6)
        assert row["zero_frac"] == pytest.approx(float((dense == 0).double().mean()))
        assert row["numel"] == 40 and row["shape"] == "10x4"
