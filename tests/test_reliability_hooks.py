"""Hooks never leak: many recordings with faults injected at random points (inside forward,
inside backward, inside an edit, inside saving), several threads on one shared model, and a
memory soak. The long versions are in benchmarks/reliability.py."""

from __future__ import annotations

import gc
import random
import threading
import weakref

import psutil
import pytest
import torch
from torch import nn

import hooklab
from hooklab import faults
from hooklab.errors import HookKindError, StoreError
from hooklab.faults import InjectedFault, inject
from hooklab.models import SimpleCNN
from hooklab.recorder import EditSpec
from hooklab.store import TraceStore
from tests.conftest import hook_counts, total_hooks

LAYER_CHOICES = [None, "conv*", "Conv2d", ["fc1", "conv2"], "pool", "relu"]
EDIT_LAYERS = ["conv1", "bn1", "relu", "conv2", "fc1", "pool"]


class TinyNet(nn.Module):
    """Small, but with what matters for hooks: BatchNorm, a shared in-place ReLU and a shared
    pool (modules called twice), functional ops between modules. Input (N, 3, 16, 16)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc1 = nn.Linear(16 * 4 * 4, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu(self.bn1(self.conv1(x))))
        x = self.pool(self.relu(self.conv2(x)))
        return self.fc2(torch.tanh(self.fc1(x.flatten(1))))


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


def _random_recording(rng: random.Random, fault: faults.Fault) -> dict:
    kwargs: dict = {"layers": rng.choice(LAYER_CHOICES),
                    "param_grads": rng.random() < 0.5,
                    "input_grads": rng.random() < 0.3,
                    "keep_tensors": rng.random() < 0.8,
                    "max_bytes": rng.choice([None, 20_000, 10**8])}
    edits = [EditSpec(rng.choice(EDIT_LAYERS), fault.edit, rng.choice(["grad", "activation"]))]
    if rng.random() < 0.5:
        edits.append(EditSpec(rng.choice(EDIT_LAYERS), hooklab.edits.scale(0.5)))
    kwargs["edits"] = edits
    r = rng.random()
    if r < 0.25:
        kwargs["hooks"] = {"conv1": ["full_backward", "full_backward_pre", "forward_pre"]}
    elif r < 0.4:
        kwargs["hooks"] = {"fc1": ["backward"], "fc2": ["post_accumulate_grad", "tensor"]}
    elif r < 0.5:  # refused by PyTorch: bn1's output is modified in place by the ReLU
        kwargs["hooks"] = {"bn1": ["full_backward"]}
    return kwargs


def test_random_faults_leave_no_hook_and_no_partial_run(tmp_path):
    """50 recordings, a fault at a random point of each (or none); every module keeps exactly
    its hooks and flags, the model computes what it did, the store holds only whole runs."""
    model, user_handles = _model_with_user_state()
    store = TraceStore(tmp_path / "runs", durable=False)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected = model(x).clone()
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    before = faults.module_state(model)
    rng = random.Random(1234)
    # a run stored first must survive everything that follows
    with hooklab.record(model, "conv1") as rec:
        rec.run(x)
    first = store.save(rec.trace, notes="before the faults")
    first_norms = store.load(first).events["norm"].tolist()
    saved, fired, refused = [first], {p: 0 for p in faults.POINTS}, 0
    recorders: list[weakref.ref] = []
    for i in range(50):
        point = rng.choice(faults.POINTS)
        # a recording passes 10-20 forward and backward points, 1-4 edit calls and 3 file
        # writes: some draws fall beyond them (no fault; the recording must then succeed)
        nth = rng.randrange(0, {"forward": 14, "backward": 14, "edit": 3, "save": 4}[point])
        with inject(point, nth) as fault:
            kwargs = _random_recording(rng, fault)
            try:
                with hooklab.record(model, **kwargs) as rec:
                    recorders.append(weakref.ref(rec))
                    rec.run(x, target=rng.choice([None, 3, "sum"]))
                    if rng.random() < 0.5:
                        rec.next_step()
                        rec.run(x)
                    saved.append(store.save(rec.trace, notes=str(i)))
            except InjectedFault:
                assert fault.fired and point != "save"
                fired[point] += 1
            except StoreError as exc:  # the injected ENOSPC, chained, as a hooklab error
                assert point == "save" and fault.fired
                assert isinstance(exc.__cause__, OSError)
                assert isinstance(exc.__cause__.__cause__, InjectedFault)
                fired[point] += 1
            except HookKindError as exc:
                assert "bn1" in kwargs.get("hooks", {}) and "inplace" in str(exc)
                refused += 1
            else:
                assert not fault.fired, (point, nth)
                assert "bn1" not in kwargs.get("hooks", {})
            del rec
        after = faults.module_state(model)
        assert faults.leaked_hooks(before, after) == 0, (i, point, nth, kwargs)
        assert faults.changed_flags(before, after) == [], (i, point)
    assert all(n > 0 for n in fired.values()) and refused > 0, (fired, refused)
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
    listing = store.list()
    assert sorted(listing["run_id"]) == sorted(saved)
    assert (listing["status"] == "ok").all()
    for rid in saved:
        store.verify(rid)
    assert store.load(first).events["norm"].tolist() == first_norms
    assert not [p for p in store.root.iterdir() if p.name.startswith(".tmp")]
    # nothing keeps a finished recording alive (no reference cycle through the model)
    gc.collect()
    assert sum(r() is not None for r in recorders) == 0


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
                    with hooklab.record(model, "fc2",
                                        hooks={"conv1": ["full_backward", "full_backward_pre"]}) as rec:
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
        h = model.conv2.register_forward_hook(lambda m, a, o: act.setdefault("o", o))
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
    """40 recordings after a warm-up of 15 (with tensors, edits, saves and faults): resident
    memory grows by less than 10 % (benchmarks/reliability.py checks 5 % over 200)."""
    torch.manual_seed(0)
    model = TinyNet().eval()
    store = TraceStore(tmp_path / "runs", durable=False)
    x = torch.randn(4, 3, 16, 16)

    def one(i: int) -> None:
        point = faults.POINTS[i % 4]
        with inject(point, 2 if i % 3 == 0 else 10**6) as fault:
            try:
                with hooklab.record(model, param_grads=True,
                                    edits=[EditSpec("conv2", fault.edit)]) as rec:
                    rec.run(x)
                    store.save(rec.trace)
            except (InjectedFault, StoreError):
                pass
        for rid in store.run_ids()[:-2]:  # keep the folder small
            store.delete(rid)
            store.purge(rid)

    for i in range(15):
        one(i)
    start = _rss()
    for i in range(15, 55):
        one(i)
    growth = (_rss() - start) / start
    assert growth < 0.10, f"resident memory grew {growth:.1%}"
    assert total_hooks(model) == 0
