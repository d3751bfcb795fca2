"""hooklab.watch / Watcher: what a watched training step records, checked against plain PyTorch.

Every gradient is compared with ``torch.autograd.grad`` of the same loss on the same graph; the
update ratio and the dead-unit fraction with a hand computation; every test checks that no hook
is left on the model (also after an exception in the loop body).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import hooklab
from hooklab.core.errors import LayerNotFoundError
from hooklab.recording.watch import Watcher


class Net(nn.Module):
    """Conv -> ReLU -> pool -> linear; ``relu`` gives exactly-zero channels on demand."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(6, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flat(self.pool(self.conv2(self.relu(self.conv1(x))))))


def _data(n: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(4, 3, 6, 6, generator=g), torch.randint(0, 3, (4,), generator=g))
            for _ in range(n)]


def _net(seed: int = 0) -> Net:
    torch.manual_seed(seed)
    return Net()


def _train(model, w, data, lr=0.1):
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for x, y in data:
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        if w is not None:
            w.step(loss=loss.item())
    return opt


def _events(w: Watcher):
    import pandas as pd
    return pd.concat([s.events for s in w.segments], ignore_index=True)


def _scalars(w: Watcher):
    import pandas as pd
    return pd.concat([s.scalars for s in w.segments], ignore_index=True)


def test_recorded_step_grads_equal_autograd_on_the_same_graph(no_leak, stats_path):
    model = _net()
    data = _data(3)
    params = dict(model.named_parameters())
    names = ["conv1", "relu", "conv2", "pool", "flat", "fc"]
    mods = dict(model.named_modules())
    refs = []
    with no_leak(model):
        with Watcher(model, every=1, segment_steps=10) as w:
            opt = torch.optim.SGD(model.parameters(), lr=0.1)
            for x, y in data:
                outs: dict[str, torch.Tensor] = {}
                handles = [mods[n].register_forward_hook(
                    lambda m, a, o, n=n, outs=outs: outs.__setitem__(n, o)) for n in names]
                try:
                    opt.zero_grad()
                    loss = F.cross_entropy(model(x), y)
                finally:
                    for h in handles:
                        h.remove()
                ref = torch.autograd.grad(loss, [outs[n] for n in names] + list(params.values()),
                                          retain_graph=True)
                refs.append((dict(zip(names, ref[:len(names)], strict=True)),
                             dict(zip(params, ref[len(names):], strict=True))))
                loss.backward()
                opt.step()
                w.step(loss=loss.item())
    ev = _events(w)
    assert sorted(set(ev["step"])) == [0, 1, 2]
    for step, (ref_out, ref_par) in enumerate(refs):
        at = ev[ev.step == step]
        for n, g in ref_out.items():
            # tensor hooks fire in both passes (autograd.grad, then backward): two equal rows
            rows = at[(at.layer == n) & (at.role == "grad_output")]
            assert len(rows) == 2, (step, n)
            for norm in rows["norm"]:
                assert norm == pytest.approx(float(g.norm()), rel=1e-5, abs=1e-8)
        for full, g in ref_par.items():
            mod, _, pname = full.rpartition(".")
            row = at[(at.layer == mod) & (at.role == "param_grad") & (at["index"] == pname)]
            assert len(row) == 1, (step, full)
            r = row.iloc[0]
            assert r["norm"] == pytest.approx(float(g.norm()), rel=1e-5)
            assert r["mean"] == pytest.approx(float(g.mean()), rel=1e-4, abs=1e-8)
        outputs = at[at.role == "output"]
        assert sorted(outputs["layer"]) == sorted(names)
    assert (ev["seq"].diff().dropna() == 1).all() and ev["seq"].iloc[0] == 0
    assert (ev["key"] == "").all()  # statistics only by default


def test_update_ratio_and_dead_frac_equal_hand_computation(no_leak, stats_path):
    model = _net()
    with torch.no_grad():  # channels 0 and 3 of conv1 dead for every input: relu(-big) = 0
        model.conv1.weight[[0, 3]] = 0.0
        model.conv1.bias[[0, 3]] = -1.0
    data = _data(2)
    before = copy.deepcopy(model)
    with no_leak(model):
        with Watcher(model, every=1) as w:
            opt = torch.optim.SGD(model.parameters(), lr=0.1)
            x, y = data[0]
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
            w.step()
    sc = _scalars(w)
    got = dict(zip(sc["name"], sc["value"], strict=True))
    for (name, p0), (_, p1) in zip(before.named_parameters(), model.named_parameters(),
                                   strict=True):
        expect = float((p1.detach() - p0.detach()).norm() / p0.detach().norm())
        assert got[f"update_ratio/{name}"] == pytest.approx(expect, rel=1e-5), name
    with torch.no_grad():
        a = before.relu(before.conv1(x))
    dead_by_hand = float((a.abs().amax(dim=(0, 2, 3)) == 0).float().mean())
    assert dead_by_hand == pytest.approx(2 / 6)
    assert got["dead_frac/relu"] == pytest.approx(dead_by_hand)
    assert got["dead_frac/conv1"] == pytest.approx(0.0)  # before the ReLU: -1, not zero
    # (N, F) output: features zero for every sample
    flat = before.flat(before.pool(before.conv2(a)))
    assert got["dead_frac/flat"] == pytest.approx(float((flat == 0).all(0).float().mean()))


@pytest.mark.parametrize("every", [1, 2])
@pytest.mark.parametrize("update", ["optimizer", "p.data", "load_state_dict"])
def test_update_ratio_over_steps_equals_hand_computation(no_leak, stats_path, every, update):
    """Five steps, weights changed by an optimizer (version counters bumped), by ``p.data``
    arithmetic (no bump) or also by loading a state dict: each recorded step's ratio is
    ‖w_after - w_before‖ / ‖w_before‖ between its w.step and the one before (no stale snapshot
    carried over)."""
    model = _net()
    data = _data(5)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    expect: dict[int, dict[str, float]] = {}
    with no_leak(model):
        with Watcher(model, every=every) as w:
            for step, (x, y) in enumerate(data):
                before = {n: p.detach().clone() for n, p in model.named_parameters()}
                if update == "load_state_dict" and step == 3:
                    # a change between two w.step calls is part of the next step's update
                    model.load_state_dict(_net(seed=1).state_dict())
                opt.zero_grad()
                F.cross_entropy(model(x), y).backward()
                if update == "p.data":
                    for p in model.parameters():
                        p.data -= 0.1 * p.grad
                else:
                    opt.step()
                expect[step] = {n: float((p.detach() - before[n]).norm() / before[n].norm())
                                for n, p in model.named_parameters()}
                w.step()
    sc = _scalars(w)
    sc = sc[sc.name.str.startswith("update_ratio/")]
    assert sorted(set(sc["step"])) == list(range(0, 5, every))
    for r in sc.itertuples():
        want = expect[r.step][r.name.removeprefix("update_ratio/")]
        assert r.value == pytest.approx(want, rel=1e-4), (r.step, r.name)


def test_every_n_records_exactly_those_steps_and_no_hooks_between(no_leak):
    model = _net()
    counts = []
    with no_leak(model):
        from tests.conftest import total_hooks
        bare = total_hooks(model)
        with Watcher(model, every=3, segment_steps=2) as w:
            opt = torch.optim.SGD(model.parameters(), lr=0.1)
            for x, y in _data(8):
                counts.append(total_hooks(model))
                opt.zero_grad()
                loss = F.cross_entropy(model(x), y)
                loss.backward()
                opt.step()
                w.step(loss=loss.item())
    ev = _events(w)
    assert sorted(set(ev["step"])) == [0, 3, 6]
    assert [s.steps for s in w.segments] == [[0, 3], [6]]
    recorded = [c > bare for c in counts]
    assert recorded == [k % 3 == 0 for k in range(8)]  # no hooklab hook on unrecorded steps
    sc = _scalars(w)
    assert sc[sc.name == "loss"]["step"].tolist() == list(range(8))  # every step's scalars
    assert set(sc[sc.name.str.startswith("update_ratio/")]["step"]) == {0, 3, 6}
    assert w.steps_done == 8


def test_edits_act_on_every_step_exactly_as_record(no_leak):
    """conv2's gradient halved: an unrecorded step's parameter update equals record()'s."""
    edits = {"conv2": hooklab.edits.scale(0.5)}
    data = _data(3)
    a, b = _net(), _net()
    with no_leak(a):
        with Watcher(a, every=2, edits=edits) as w:
            _train(a, w, data)
    # the same three steps, each under record() with the same edit
    opt = torch.optim.SGD(b.parameters(), lr=0.1)
    for x, y in data:
        with hooklab.record(b, [], edits=edits, keep_tensors=False):
            opt.zero_grad()
            F.cross_entropy(b(x), y).backward()
        opt.step()
    for (n, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0, msg=n)
    # and the edit did change the training (vs no edit)
    c = _net()
    _train(c, None, data)
    assert not torch.equal(c.conv1.weight, a.conv1.weight)
    ev = _events(w)
    edited = ev[ev.role == "edited"]
    assert set(edited["step"]) == {0, 2} and set(edited["layer"]) == {"conv2"}


def test_gradient_accumulation_gives_one_event_per_pass(no_leak):
    model = _net()
    data = _data(4)
    with no_leak(model):
        with Watcher(model, every=1) as w:
            opt = torch.optim.SGD(model.parameters(), lr=0.1)
            for i in range(2):
                opt.zero_grad()
                for x, y in data[2 * i: 2 * i + 2]:
                    F.cross_entropy(model(x), y).backward()
                total = model.fc.weight.grad.norm().item()
                opt.step()
                w.step()
    ev = _events(w)
    for step in (0, 1):
        at = ev[ev.step == step]
        out = at[(at.layer == "conv1") & (at.role == "output")]
        assert out["call"].tolist() == [0, 1]
        pg = at[(at.layer == "fc") & (at.role == "param_grad") & (at["index"] == "weight")]
        assert pg["call"].tolist() == [0, 1]
    # the last param-grad event of the last step is the accumulated gradient
    assert pg["norm"].iloc[-1] == pytest.approx(total, rel=1e-5)


def test_no_grad_evaluation_adds_no_events(no_leak):
    model = _net()
    data = _data(3)
    with no_leak(model):
        with Watcher(model, every=1) as w:
            opt = torch.optim.SGD(model.parameters(), lr=0.1)
            for x, y in data:
                with torch.no_grad():  # evaluation before the training forward
                    model(x)
                opt.zero_grad()
                F.cross_entropy(model(x), y).backward()
                with torch.inference_mode():  # and after it
                    model(x)
                opt.step()
                w.step()
    ev = _events(w)
    for step in range(3):
        out = ev[(ev.step == step) & (ev.role == "output") & (ev.layer == "fc")]
        assert out["call"].tolist() == [0]
    assert len(ev[ev.role == "output"]) == 3 * 6


def test_two_models_two_watchers(no_leak):
    m1, m2 = _net(1), _net(2)
    data = _data(2)
    with no_leak(m1), no_leak(m2):
        with Watcher(m1, every=1, layers="conv1") as w1, Watcher(m2, every=1, layers="fc") as w2:
            o1 = torch.optim.SGD(m1.parameters(), lr=0.1)
            o2 = torch.optim.SGD(m2.parameters(), lr=0.1)
            for x, y in data:
                for m, o, w in ((m1, o1, w1), (m2, o2, w2)):
                    o.zero_grad()
                    F.cross_entropy(m(x), y).backward()
                    o.step()
                    w.step()
    assert set(_events(w1)["layer"]) == {"conv1"} and set(_events(w2)["layer"]) == {"fc"}
    g = _events(w1)
    assert len(g[g.role == "grad_output"]) == 2


def test_exception_in_the_body_removes_every_hook(no_leak):
    model = _net()
    with no_leak(model):
        with pytest.raises(InterruptedError):
            with Watcher(model, every=1, edits={"conv1": hooklab.edits.scale(0.5)}) as w:
                _train(model, w, _data(2))
                model(torch.randn(2, 3, 6, 6)).sum().backward()  # a step begun, never ended
                raise InterruptedError("stop")
    ev = _events(w)
    assert sorted(set(ev["step"])) == [0, 1]  # the unfinished step 2 is dropped
    with pytest.raises(RuntimeError, match="outside|after leaving"):
        w.step()


def test_bad_input():
    model = _net()
    with pytest.raises(LayerNotFoundError, match="conv"):
        Watcher(model, layers="conv9")
    with pytest.raises(LayerNotFoundError):
        hooklab.watch(model, layers="nope")
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="every"):
            Watcher(model, every=bad)
    w = Watcher(model)
    with pytest.raises(RuntimeError, match="inside `with hooklab.watch"):
        w.step()
    with w:
        with pytest.raises(TypeError, match="needs a number"):
            w.step(loss="high")
        with pytest.raises(ValueError, match="one number"):
            w.step(loss=torch.ones(3))
        w.step(loss=torch.tensor(2.0))  # bad scalars lost nothing: this is step 0
    assert w.steps_done == 1 and _scalars(w)["value"].tolist()[0] == 2.0
    with pytest.raises(TypeError, match="nn.Module"):
        Watcher("model")  # type: ignore[arg-type]


def test_tensors_at_keeps_tensors_of_that_step_only():
    model = _net()
    with Watcher(model, every=1, tensors_at=[1]) as w:
        _train(model, w, _data(3))
    ev = _events(w)
    kept = ev[ev.key != ""]
    assert set(kept["step"]) == {1} and len(kept) == len(ev[ev.step == 1])
    tensors = {k: v for s in w.segments for k, v in s.tensors.items()}
    row = kept[(kept.layer == "conv1") & (kept.role == "output")].iloc[0]
    assert float(tensors[row["key"]].norm()) == pytest.approx(row["norm"], rel=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_stats_on_device_stored_on_cpu(no_leak):
    model = _net().cuda()
    data = [(x.cuda(), y.cuda()) for x, y in _data(2)]
    ref = copy.deepcopy(model)
    with no_leak(model):
        with Watcher(model, every=1, tensors_at=[0]) as w:
            _train(model, w, data)
    ev = _events(w)
    assert set(ev["device"]) == {"cuda:0"}
    tensors = {k: v for s in w.segments for k, v in s.tensors.items()}
    assert tensors and all(t.device.type == "cpu" for t in tensors.values())
    x, y = data[0]
    out = ref(x)
    g = torch.autograd.grad(F.cross_entropy(out, y), ref.fc.weight)[0]
    row = ev[(ev.step == 0) & (ev.layer == "fc") & (ev.role == "param_grad")
             & (ev["index"] == "weight")].iloc[0]
    assert row["norm"] == pytest.approx(float(g.norm()), rel=1e-4)
    sc = _scalars(w)
    assert sc[sc.name.str.startswith("update_ratio/")]["value"].gt(0).all()


def test_automatic_segments_by_time_grow_with_the_run_age(monkeypatch):
    import hooklab.recording.watch as watch_mod

    now = [0.0]
    monkeypatch.setattr(watch_mod.time, "monotonic", lambda: now[0])
    model = _net()
    data = _data(1)
    with Watcher(model, every=1, segment_seconds=1.0) as w:  # segment_steps=None: automatic
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for dt in [0.5, 0.6, 0.5, 0.5, 998.0, 2.0, 2.0, 2.0]:
            now[0] += dt
            x, y = data[0]
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
            w.step()
    # 1 s interval at first; at age ~1000 s the interval is 1000/200 = 5 s: steps 5-7 wait
    assert [s.steps for s in w.segments] == [[0, 1], [2, 3], [4], [5, 6, 7]]
    monkeypatch.setattr(watch_mod, "AUTO_SEGMENT_STEPS", 3)
    with Watcher(model, every=1, segment_seconds=None) as w:
        _train(model, w, _data(7))
    assert [s.steps for s in w.segments] == [[0, 1, 2], [3, 4, 5], [6]]


def test_update_ratio_follows_frozen_and_unfrozen_parameters():
    model = _net()
    model.fc.requires_grad_(False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with Watcher(model, every=1) as w:
        for i, (x, y) in enumerate(_data(3)):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
            w.step()  # also takes the weights before step i + 1
            if i == 0:
                model.fc.requires_grad_(True)  # unfrozen after step 0's end: tracked from step 2
    sc = _scalars(w)
    fc = sc[sc.name == "update_ratio/fc.weight"]
    assert fc["step"].tolist() == [2] and fc["value"].iloc[0] > 0
    assert sc[sc.name == "update_ratio/conv1.weight"]["step"].tolist() == [0, 1, 2]
