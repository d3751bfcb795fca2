"""Hooks never leak: many recordings with faults injected at random points (inside forward,
inside backward, inside an edit, inside saving), several threads on one shared model, and a
memory soak. The long versions are in benchmarks/reliability.py."""

from __future__ import annotations

import gc
import threading
import weakref

import psutil
import pytest
import torch
from torch import nn

import hooklab
from hooklab.core.errors import StoreError
from hooklab.models.zoo import SimpleCNN
from hooklab.recording.recorder import EditSpec
from hooklab.store.runs import TraceStore
from hooklab.testing import faults
from hooklab.testing.faults import InjectedFault, TinyNet, inject
from tests.conftest import hook_counts, total_hooks


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: intra-op threads only add contention on a shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _model_with_user_state() -> tuple[nn.Module, list]:
    """TinyNet with a user's own hooks and unusual flags, which a recording must keep."""
    torch.manual_seed(0)
    model = TinyNet()
    model.train()
    model.bn1.eval()  # train mode elsewhere, but no running statistics change
    model.conv1.weight.requires_grad_(False)
    seen: list[int] = []
    handles = [
        model.conv2.register_forward_hook(lambda m, a, o: seen.append(1)),
        model.fc2.weight.register_post_accumulate_grad_hook(lambda p: seen.append(2)),
        model.fc1.register_forward_pre_hook(lambda m, a: None),
    ]
    return model, handles


def test_random_faults_leave_no_hook_and_no_partial_run(tmp_path):
    """50 recordings, a fault at a random point of each (or none, when the draw falls beyond
    the recording): every module keeps exactly its hooks and flags, each fault surfaces as the
    error it implies, the model computes what it did, the store holds only whole runs."""
    model, user_handles = _model_with_user_state()
    store = TraceStore(tmp_path / "runs", durable=False)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected = model(x).clone()
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    # a run stored first must survive everything that follows
    with hooklab.record(model, "conv1") as rec:
        rec.run(x)
    first = store.save(rec.trace, notes="before the faults")
    first_norms = store.load(first).events["norm"].tolist()
    recorders: list[weakref.ref] = []
    fig = faults.campaign(model, x, 50, store, seed=1234,
                          on_recorder=lambda r: recorders.append(weakref.ref(r)))
    assert fig["unexpected"] == []
    assert fig["hooks_leaked"] == 0 and fig["flags_changed"] == 0
    assert all(n > 0 for n in fig["per_point"].values()) and fig["refused"] > 0, fig
    assert fig["injected"] + fig["refused"] < fig["attempts"]  # some recordings succeeded
    for h in user_handles:
        h.remove()
    assert total_hooks(model) == 0
    # same parameters and buffers, same function
    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), params[n]), n
    for n, b in model.named_buffers():
        assert torch.equal(b, buffers[n]), n
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=0, atol=0)
    # the store: exactly the committed runs, each intact; no temporary directory left
    saved = [first, *fig["saved"]]
    listing = store.list()
    assert sorted(listing["run_id"]) == sorted(saved)
    assert (listing["status"] == "ok").all()
    for rid in saved:
        store.verify(rid)
    assert store.load(first).events["norm"].tolist() == first_norms
    assert not [p for p in store.root.iterdir() if p.name.startswith(".tmp")]
    # nothing keeps a finished recording alive (no reference cycle through the model)
    gc.collect()
    assert len(recorders) == 50 and sum(r() is not None for r in recorders) == 0


def test_campaign_counts_what_goes_wrong(tmp_path):
    """The campaign's figures can fail: a recorder that forgets to remove one hook is caught."""
    model = TinyNet().eval()
    store = TraceStore(tmp_path / "runs", durable=False)
    fig = faults.campaign(model, torch.randn(1, 3, 16, 16), 3, store, seed=5,
                          on_recorder=lambda r: model.fc1.register_forward_hook(
                              lambda m, a, o: None))
    assert fig["hooks_leaked"] == 1 + 2 + 3  # the stray hooks accumulate: 1, 2, 3


def test_fault_in_backward_with_full_backward_hooks_restores_flags(no_leak):
    """A fault inside autograd while full backward hooks are attached: PyTorch's per-module
    backward-hook flag is restored too, so a later deprecated hook is still allowed."""
    torch.manual_seed(0)
    model = TinyNet().eval()
    x = torch.randn(1, 3, 16, 16)
    for nth in range(0, 9, 2):
        with no_leak(model):
            with pytest.raises(InjectedFault):
                with inject("backward", nth):
                    kinds = ["full_backward", "full_backward_pre"]
                    with hooklab.record(model, "fc2", hooks={"conv1": kinds}) as rec:
                        rec.run(x)
        assert model.conv1._is_full_backward_hook is None
    with no_leak(model):
        with hooklab.record(model, "fc2", hooks={"conv1": ["backward"]}) as rec:
            rec.run(x)
    assert (rec.trace.events.kind == "backward").any()


def test_fault_points_fire_where_they_say():
    """The injector itself: a forward fault stops the forward pass (no backward event), a
    backward fault comes after every forward event, an edit fault inside the edited layer's
    gradient hook; none leaves a hook."""
    torch.manual_seed(0)
    model = TinyNet().eval()
    x = torch.randn(1, 3, 16, 16)
    with hooklab.record(model) as rec:
        rec.run(x)
    n_forward = int((rec.trace.events.phase == "forward").sum())
    with inject("forward", 2), pytest.raises(InjectedFault, match="forward point 2"):
        with hooklab.record(model) as rec:
            rec.run(x)
    ev = rec.trace.events
    assert set(ev.phase) == {"forward"} and len(ev) < n_forward
    with inject("backward", 1), pytest.raises(InjectedFault, match="backward point 1"):
        with hooklab.record(model) as rec:
            rec.run(x)
    ev = rec.trace.events
    assert (ev.phase == "backward").any() and int((ev.phase == "forward").sum()) == n_forward
    with inject("edit", 0) as fault, pytest.raises(InjectedFault, match="edit call 0"):
        with hooklab.record(model, "fc2", edits={"fc1": fault.edit}) as rec:
            rec.run(x)
    bwd = rec.trace.events[rec.trace.events.phase == "backward"]
    assert list(bwd.layer) == ["fc2", "fc1"] and list(bwd.role) == ["grad_output", "grad_output"]
    assert total_hooks(model) == 0


def test_threads_on_one_shared_model_with_faults():
    """8 threads record on one model at once, 3 of them hit a fault on their second recording:
    every last trace holds only its own events with its own gradients, and no hook is left."""
    torch.manual_seed(0)
    model = SimpleCNN().eval()
    inputs = [torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(i)) + i
              for i in range(8)]
    ref_grads = {}
    for i, x in enumerate(inputs):  # reference gradients, one thread, plain autograd
        act = {}
        h = model.conv2.register_forward_hook(lambda m, a, o, act=act: act.setdefault("o", o))
        try:
            loss = model(x)[:, 0].sum()
        finally:
            h.remove()
        ref_grads[i] = torch.autograd.grad(loss, act["o"])[0]
    before = hook_counts(model)
    traces: dict[int, hooklab.Trace] = {}
    errors: dict[int, BaseException] = {}
    barrier = threading.Barrier(8)
    faulty = {1: "forward", 4: "backward", 6: "edit"}

    def work(i: int) -> None:
        try:
            barrier.wait()
            for rep in range(3):
                point = faulty.get(i) if rep == 1 else None
                with inject(point or "edit", 3 if point else -1) as fault:
                    try:
                        with hooklab.record(model, ["conv1", "conv2"],
                                            edits=[EditSpec("conv1", fault.edit)]) as rec:
                            rec.run(inputs[i], target=0, zero_grad=False)
                    except InjectedFault:
                        assert point is not None
                        continue
                traces[i] = rec.trace
        except BaseException as exc:  # noqa: BLE001
            errors[i] = exc

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert hook_counts(model) == before
    assert sorted(traces) == list(range(8))
    for i, tr in traces.items():
        ev = tr.events
        assert len(ev[ev.role == "input"]) == 2 and len(ev[ev.role == "grad_output"]) == 2
        assert torch.equal(tr.find(layer="conv1", role="input"), inputs[i])
        torch.testing.assert_close(tr.find(layer="conv2", role="grad_output"), ref_grads[i])


def _rss() -> int:
    gc.collect()
    return psutil.Process().memory_info().rss


def test_memory_is_flat_over_repeated_recordings(tmp_path):
    """32 recordings after a warm-up of 8 (tensors, edits, saves, faults): resident memory
    grows by less than 10 %, and by less than half of what keeping the recordings' traces alive
    would cost (benchmarks/reliability.py checks 5 % over 200)."""
    torch.manual_seed(0)
    model = TinyNet().eval()
    store = TraceStore(tmp_path / "runs", durable=False)
    x = torch.randn(16, 3, 16, 16)
    stored: dict[int, int] = {}

    def one(i: int) -> None:
        point = faults.POINTS[i % 4]
        with inject(point, 2 if i % 3 == 0 else 10**6) as fault:
            try:
                with hooklab.record(model, param_grads=True, max_bytes=None,
                                    edits=[EditSpec("conv2", fault.edit)]) as rec:
                    rec.run(x)
                    if point == "save":
                        store.save(rec.trace)
                        for rid in store.run_ids():
                            store.delete(rid)
                            store.purge(rid)
            except (InjectedFault, StoreError):
                pass
        stored[i] = rec.trace.stored_bytes

    for i in range(8):
        one(i)
    start = _rss()
    for i in range(8, 40):
        one(i)
    growth = (_rss() - start) / start
    # what keeping the measured recordings' traces alive would cost
    kept = sum(v for i, v in stored.items() if i >= 8)
    assert growth < 0.10, f"resident memory grew {growth:.1%}"
    assert growth * start < 0.5 * kept, (growth * start, kept)
    assert total_hooks(model) == 0
