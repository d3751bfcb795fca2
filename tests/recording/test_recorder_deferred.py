"""``Recorder(defer_rows=True)`` (what watch uses): statistics taken in the hook, rows made later.

The deferred rows must be exactly the rows of the ordinary path (same statistics, same firing
order, same trace), whatever the tensor: contiguous or not, finite or not, a tuple output, an
in-place successor; and none may be lost, also when the recording ends in an exception.
"""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from torch import nn

import hooklab
from hooklab.core.trace import Trace


class _Odd(nn.Module):
    """Outputs the deferred path must hand back: a transposed (non-contiguous) view whose
    gradient is non-contiguous too, a constant (a variance that cancels) and a pair."""

    def forward(self, x: torch.Tensor):
        return x.transpose(1, 2), x * 0.0 + 5.0, (x[:, :1], x[:, 1:])


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)  # rewrites bn's output after bn's hook saw it
        self.odd = _Odd()
        self.log = _Log()
        self.head = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu(self.bn(self.conv(x)))
        t, c, (a, b) = self.odd(h)
        z = torch.nan_to_num(self.log(h), neginf=0.0)
        h = z + t.transpose(1, 2) + 0.1 * c + torch.cat([a, b], 1)
        return self.head(h.flatten(1))


class _Log(nn.Module):
    """-inf where x is exactly zero (ReLU zeros): non-finite statistics, finite gradients."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.masked_fill(x == 0, float("-inf"))


def _record(model: nn.Module, defer: bool, no_leak
            ) -> tuple[Trace, list[dict[str, torch.Tensor]], list[int]]:
    g = torch.Generator().manual_seed(2)
    xs = [torch.randn(2, 3, 6, 6, generator=g) for _ in range(4)]
    grads: list[dict[str, torch.Tensor]] = []
    waiting = []  # rows kept back at the end of each step, and rows already made
    with no_leak(model):
        with hooklab.record(model, param_grads=True, inputs=False, keep_tensors=False,
                            batch_param_stats=True, defer_rows=defer) as rec:
            for step in range(2):
                model.zero_grad(set_to_none=True)
                for x in xs[2 * step: 2 * step + 2]:  # gradient accumulation
                    model(x).pow(2).sum().backward()
                with torch.no_grad():  # an evaluation forward: recorded as any other forward
                    model(xs[0])
                grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
                waiting.append(len(rec._deferred))
                rec.next_step()
    return rec.trace, grads, waiting


def test_deferred_rows_equal_the_ordinary_rows(no_leak, stats_path):
    model = _Net().train()
    deferred, grads, waiting = _record(model, True, no_leak)
    ordinary, grads_o, none = _record(model, False, no_leak)
    pd.testing.assert_frame_equal(deferred.events, ordinary.events, check_exact=True)
    ev = deferred.events
    assert none == [0, 0]
    per_step = ev.groupby("step").size().tolist()
    if stats_path == "native":  # plain outputs deferred; the odd ones took the other path
        assert all(20 <= waiting[i] <= per_step[i] - 20 for i in range(2)), (waiting, per_step)
    else:  # no kernels: nothing is deferred
        assert waiting == [0, 0]
    assert (ev["seq"].diff().dropna() == 1).all()
    assert set(ev.step) == {0, 1}
    # the cases above all happened: non-finite, non-contiguous, constant, tuple outputs
    assert (ev.inf_count > 0).any()
    assert ((ev.layer == "odd") & (ev["index"] == "2.1")).any()
    const = ev[(ev.layer == "odd") & (ev["index"] == "1") & (ev.role == "output")]
    assert (const["std"] == 0.0).all() and (const["mean"] == 5.0).all()
    for step, want in enumerate(grads):  # parameter gradients against the accumulated ones
        for name, g in want.items():
            mod, _, pname = name.rpartition(".")
            rows = ev[(ev.step == step) & (ev.layer == mod) & (ev["index"] == pname)
                      & (ev.role == "param_grad")]
            assert rows.iloc[-1]["norm"] == pytest.approx(float(g.double().norm()), rel=1e-5)
            torch.testing.assert_close(g, grads_o[step][name])


def test_deferred_output_gradients_equal_autograd(no_leak, stats_path):
    """Each deferred grad_output row summarises torch.autograd.grad of the loss w.r.t. that
    layer's output on the same graph."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 5, 3), nn.BatchNorm2d(5), nn.ReLU(inplace=True),
                          nn.Flatten(), nn.Linear(5 * 4 * 4, 2)).train()
    x = torch.randn(3, 3, 6, 6)
    outs: dict[str, torch.Tensor] = {}
    names = ["0", "1", "3", "4"]  # "2" is in place: its output is bn's tensor, rewritten
    handles = [model[int(n)].register_forward_hook(
        lambda m, a, o, n=n: outs.__setitem__(n, o)) for n in names]
    try:
        with no_leak(model):
            with hooklab.record(model, inputs=False, keep_tensors=False,
                                defer_rows=True) as rec:
                loss = model(x).pow(2).sum()
                want = torch.autograd.grad(loss, [outs[n] for n in ["0", "3", "4"]],
                                           retain_graph=True)
                loss.backward()
    finally:
        for h in handles:
            h.remove()
    ev = rec.trace.events
    for n, g in zip(["0", "3", "4"], want, strict=True):
        row = ev[(ev.layer == n) & (ev.role == "grad_output")].iloc[0]
        assert row["norm"] == pytest.approx(float(g.double().norm()), rel=1e-5)
        assert row["max"] == float(g.max()) and row["min"] == float(g.min())
        assert row["shape"] == "x".join(map(str, g.shape))


def test_deferred_rows_land_in_the_trace_current_when_the_hook_fired(no_leak):
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh())
    with no_leak(model):
        with hooklab.record(model, inputs=False, keep_tensors=False, defer_rows=True) as rec:
            first = rec.trace
            model(torch.randn(2, 4))
            second = rec.trace = Trace()
            model(torch.randn(5, 4))
            rec.flush_rows()
            assert not rec._deferred
    assert set(first.events["shape"]) == {"2x3"}
    assert set(second.events["shape"]) == {"5x3"}
    assert len(first) == len(second) == 2


def test_no_deferred_row_is_lost_when_the_recording_raises(no_leak):
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 1))
    with no_leak(model), pytest.raises(RuntimeError, match="boom"):
        with hooklab.record(model, inputs=False, keep_tensors=False, defer_rows=True) as rec:
            model(torch.randn(2, 4)).sum().backward()
            raise RuntimeError("boom")
    ev = rec.trace.events
    assert len(ev) == 6  # three outputs, three output gradients
    assert sorted(ev.role.unique()) == ["grad_output", "output"]
    assert not rec._deferred
