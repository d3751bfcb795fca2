"""Every hook kind and edit target honours the recording: another thread's backward on the same
shared model keeps its own, unedited gradients and adds nothing to the recording's trace, and
the recording's own graph is accepted whichever thread runs its backward (on CUDA autograd runs
hooks on device threads; a second Python thread is the CPU picture of that).

Harness: thread A enters ``record`` and runs its forward, then waits; this (main) thread, B,
runs a plain forward and backward on the same model; then A runs its backward. Each result is
compared with A's recording made alone and with ``torch.autograd.grad`` on a copy of the model.
"""

from __future__ import annotations

import copy
import queue
import threading
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

import hooklab
from hooklab.core.edits import scale, zero
from hooklab.recording.recorder import HOOK_KINDS, EditSpec
from tests.conftest import total_hooks

STRUCTURE = ["seq", "step", "phase", "kind", "layer", "call", "role", "index", "edit", "shape",
             "dtype", "key"]
STATS = ["mean", "std", "min", "max", "norm", "zero_frac"]
MODERN = [k for k in HOOK_KINDS if k != "backward"]

CASES: dict[str, dict] = {
    **{f"kind-{k}": {"layers": [], "hooks": {"2": [k]}} for k in HOOK_KINDS},
    "edit-grad": {"layers": [], "edits": [EditSpec("2", scale(0.5), "grad")]},
    "edit-activation": {"layers": [], "edits": [EditSpec("2", scale(-1.5), "activation")]},
    "edit-param_grad": {"layers": [], "edits": [EditSpec("2", zero(), "param_grad")]},
    "everything": {"layers": None, "param_grads": True, "input_grads": True,
                   "hooks": {"2": MODERN, "4": ["backward"]},
                   "edits": [EditSpec("0", scale(0.5)), EditSpec("4", zero(), "param_grad")]},
}


def _model(device: str = "cpu") -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 6), nn.Tanh(),
                         nn.Linear(6, 3)).eval().to(device)


XA = torch.randn(4, 5, generator=torch.Generator().manual_seed(1))
XB = torch.randn(3, 5, generator=torch.Generator().manual_seed(2)) * 2 + 1
WA = torch.tensor([1.0, -2.0, 0.5])
WB = torch.tensor([-0.75, 1.5, 3.0])


def loss_a(out: torch.Tensor) -> torch.Tensor:
    return (out * WA.to(out.device)).sum()


def loss_b(out: torch.Tensor) -> torch.Tensor:
    return (out.tanh() * WB.to(out.device)).sum()


def _interleave(a_body: Callable[[Callable[[], None]], None], b_body: Callable[[], None]) -> None:
    """Run ``a_body(pause)`` in a thread A; each time it calls ``pause()``, ``b_body()`` runs in
    this thread while A waits. Errors of either side are raised here after both finish."""
    to_main: queue.Queue[str] = queue.Queue()
    to_a: queue.Queue[str] = queue.Queue()
    errors: list[BaseException] = []

    def pause() -> None:
        to_main.put("paused")
        to_a.get()

    def run_a() -> None:
        try:
            a_body(pause)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            errors.append(exc)
        finally:
            to_main.put("done")

    t = threading.Thread(target=run_a)
    t.start()
    while to_main.get() == "paused":
        try:
            b_body()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            to_a.put("go")
    t.join()
    if errors:
        raise errors[0]


def _plain_b(model: nn.Module, out: list[dict[str, torch.Tensor]]) -> Callable[[], None]:
    """B: a plain forward and backward; A's accumulated ``.grad`` is set aside meanwhile."""
    def body() -> None:
        params = dict(model.named_parameters())
        stash = {n: p.grad for n, p in params.items()}
        for p in params.values():
            p.grad = None
        try:
            x = XB.to(next(model.parameters()).device, copy=True).requires_grad_()
            loss_b(model(x)).backward()
            out.append({**{n: p.grad.clone() for n, p in params.items()}, "x": x.grad.clone()})
        finally:
            for n, p in params.items():
                p.grad = stash[n]
    return body


def _reference(model: nn.Module, x: torch.Tensor, loss) -> dict[str, torch.Tensor]:
    """Plain autograd on a copy: d loss / d (every parameter, x, output and input of "2")."""
    ref = copy.deepcopy(model)
    seen: dict[str, torch.Tensor] = {}
    h = ref[2].register_forward_hook(lambda m, a, o: seen.update(in2=a[0], out2=o))
    try:
        x = x.to(next(ref.parameters()).device, copy=True).requires_grad_()
        out = ref(x)
    finally:
        h.remove()
    params = dict(ref.named_parameters())
    grads = torch.autograd.grad(loss(out), [*params.values(), x, seen["out2"], seen["in2"]])
    return {**dict(zip(params, grads)), "x": grads[-3], "out2": grads[-2], "in2": grads[-1],
            "value_out2": seen["out2"].detach(), "value_in2": seen["in2"].detach()}


def _record_a(model: nn.Module, kwargs: dict, pause: Callable[[], None], result: dict) -> None:
    """A: record, forward, pause (B runs), backward; keeps the trace and A's gradients."""
    with hooklab.record(model, **kwargs) as rec:
        x = XA.to(next(model.parameters()).device, copy=True).requires_grad_()
        out = model(x)
        pause()
        loss_a(out).backward()
    result["trace"] = rec.trace
    result["grads"] = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)


def assert_same_trace(got: hooklab.Trace, want: hooklab.Trace) -> None:
    """Same events in the same order with the same values (no foreign event, none missing)."""
    ge, we = got.events, want.events
    assert len(ge) == len(we) > 0
    assert ge[STRUCTURE].to_dict("records") == we[STRUCTURE].to_dict("records")
    np.testing.assert_allclose(ge[STATS].to_numpy(float), we[STATS].to_numpy(float),
                               rtol=1e-5, atol=1e-6)
    for key in ge.key:
        if key:
            torch.testing.assert_close(got.tensor(key), want.tensor(key))


def _check_values(name: str, trace: hooklab.Trace, grads: dict, ref: dict) -> None:
    """A's recorded values and gradients against plain autograd on A's graph."""
    kw = CASES[name]
    if "edits" not in kw:
        for n, g in grads.items():
            torch.testing.assert_close(g, ref[n], msg=n)
    if name.startswith("kind-"):
        kind = name[5:]
        ev = trace.events
        assert set(ev.kind) == {kind} and set(ev.layer) == {"2"}
        if kind == "forward_pre":
            torch.testing.assert_close(trace.find(role="input"), ref["value_in2"])
        elif kind == "forward":
            torch.testing.assert_close(trace.find(role="output"), ref["value_out2"])
        elif kind == "post_accumulate_grad":
            assert sorted(ev["index"]) == ["bias", "weight"]
            for pname in ("weight", "bias"):
                torch.testing.assert_close(trace.find(index=pname), ref[f"2.{pname}"])
        else:
            assert list(ev[ev.role == "grad_output"].call) == [0]
            torch.testing.assert_close(trace.find(role="grad_output"), ref["out2"])
            if kind == "full_backward":
                torch.testing.assert_close(trace.find(role="grad_input"), ref["in2"])
    elif name == "edit-grad":  # halved at the output of "2": everything upstream halves
        for n, g in grads.items():
            want = ref[n] * 0.5 if n.split(".")[0] in ("0", "2") else ref[n]
            torch.testing.assert_close(g, want, msg=n)
    elif name == "edit-param_grad":
        for n, g in grads.items():
            torch.testing.assert_close(g, torch.zeros_like(g) if n.startswith("2.") else ref[n])


@pytest.mark.parametrize("name", list(CASES))
def test_foreign_backward_during_a_recording(name, no_leak):
    """B's plain backward while A records: B's gradients are plain autograd's (no edit of A's
    reaches them), A's trace is what A records alone, and no hook is left."""
    _foreign_backward(name, no_leak, "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", list(CASES))
def test_foreign_and_own_backward_on_cuda(name, no_leak):
    """The same on CUDA, where autograd runs every backward hook on its device threads."""
    _foreign_backward(name, no_leak, "cuda")
    _own_graph_from_another_thread(name, no_leak, "cuda")


def _foreign_backward(name: str, no_leak, device: str) -> None:
    model = _model(device)
    kwargs = CASES[name]
    ref_b = _reference(model, XB, loss_b)
    ref_a = _reference(model, XA, loss_a)
    with no_leak(model):
        alone: dict = {}
        _record_a(model, kwargs, lambda: None, alone)
        shared: dict = {}
        b_grads: list[dict[str, torch.Tensor]] = []
        _interleave(lambda pause: _record_a(model, kwargs, pause, shared), _plain_b(model, b_grads))
    assert total_hooks(model) == 0
    assert len(b_grads) == 1
    for n, g in b_grads[0].items():
        torch.testing.assert_close(g, ref_b[n], msg=n)
    assert_same_trace(shared["trace"], alone["trace"])
    for n, g in shared["grads"].items():
        torch.testing.assert_close(g, alone["grads"][n], msg=n)
    _check_values(name, shared["trace"], shared["grads"], ref_a)


@pytest.mark.parametrize("name", list(CASES))
def test_own_graph_backward_from_another_thread_is_recorded(name, no_leak):
    """A's backward run by another Python thread (what CUDA's device threads look like): every
    hook kind and edit still acts, exactly as when A runs its backward itself."""
    _own_graph_from_another_thread(name, no_leak, "cpu")


def _own_graph_from_another_thread(name: str, no_leak, device: str) -> None:
    model = _model(device)
    kwargs = CASES[name]
    ref_a = _reference(model, XA, loss_a)
    with no_leak(model):
        alone: dict = {}
        _record_a(model, kwargs, lambda: None, alone)
        with hooklab.record(model, **kwargs) as rec:
            out = model(XA.to(device, copy=True).requires_grad_())
            errors: list[BaseException] = []

            def backward() -> None:
                try:
                    loss_a(out).backward()
                except BaseException as exc:  # noqa: BLE001
                    errors.append(exc)
            t = threading.Thread(target=backward)
            t.start()
            t.join()
            assert not errors, errors
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    assert_same_trace(rec.trace, alone["trace"])
    for n, g in grads.items():
        torch.testing.assert_close(g, alone["grads"][n], msg=n)
    _check_values(name, rec.trace, grads, ref_a)


def test_accumulation_retain_graph_and_foreign_backwards_between(no_leak):
    """Three backward calls of A (retain_graph, the second from another thread, a second forward
    for the third) with B's backward between each: A's hooks fire three times with A's
    accumulated gradients; B's gradients stay plain autograd's every time."""
    model = _model()
    kwargs = {"layers": [], "hooks": {"2": MODERN, "4": ["backward"]},
              "edits": [EditSpec("0", zero(), "param_grad")]}
    ref_a = _reference(model, XA, loss_a)
    ref_b = _reference(model, XB, loss_b)
    b_grads: list[dict[str, torch.Tensor]] = []
    result: dict = {}

    def a_body(pause: Callable[[], None]) -> None:
        with hooklab.record(model, **kwargs) as rec:
            out = model(XA.clone().requires_grad_())
            pause()
            loss_a(out).backward(retain_graph=True)
            pause()
            t = threading.Thread(target=lambda: loss_a(out).backward())
            t.start()
            t.join()
            pause()
            loss_a(model(XA.clone().requires_grad_())).backward()
            pause()
        result["trace"] = rec.trace
        result["grads"] = {n: p.grad.clone() for n, p in model.named_parameters()}

    with no_leak(model):
        _interleave(a_body, _plain_b(model, b_grads))
    assert len(b_grads) == 4
    for grads in b_grads:
        for n, g in grads.items():
            torch.testing.assert_close(g, ref_b[n], msg=n)
    trace, ev = result["trace"], result["trace"].events
    post = ev[ev.kind == "post_accumulate_grad"]
    assert sorted(post.call) == [0, 0, 1, 1, 2, 2]
    for c in range(3):  # .grad after c + 1 backward calls of the same loss
        torch.testing.assert_close(trace.find(kind="post_accumulate_grad", index="weight", call=c),
                                   (c + 1) * ref_a["2.weight"])
    for kind in ("full_backward_pre", "full_backward", "tensor"):
        rows = ev[(ev.kind == kind) & (ev.role == "grad_output") & (ev.layer == "2")]
        assert list(rows.call) == ([0, 0, 1] if kind == "tensor" else [0, 1, 2]), kind
        for key in rows.key:
            torch.testing.assert_close(trace.tensor(key), ref_a["out2"])
    assert list(ev[(ev.kind == "backward") & (ev.role == "grad_output")].call) == [0, 1, 2]
    edited = ev[(ev.role == "edited") & (ev.layer == "0")]
    assert sorted(edited["index"]) == ["bias"] * 3 + ["weight"] * 3
    assert (edited["norm"] == 0).all()
    for n, g in result["grads"].items():
        want = torch.zeros_like(g) if n.startswith("0.") else 3 * ref_a[n]
        torch.testing.assert_close(g, want, msg=n)


def test_exception_in_the_recording_while_another_thread_trains(no_leak):
    """A fails inside its block after B's backward: no hook is left, and B's next backward on
    the model is plain autograd's."""
    model = _model()
    ref_b = _reference(model, XB, loss_b)
    b_grads: list[dict[str, torch.Tensor]] = []
    kwargs = CASES["everything"]

    def a_body(pause: Callable[[], None]) -> None:
        with hooklab.record(model, **kwargs):
            model(XA)
            pause()
            raise KeyError("A fails")

    with no_leak(model):
        with pytest.raises(KeyError, match="A fails"):
            _interleave(a_body, _plain_b(model, b_grads))
        _plain_b(model, b_grads)()
    assert total_hooks(model) == 0 and len(b_grads) == 2
    for grads in b_grads:
        for n, g in grads.items():
            torch.testing.assert_close(g, ref_b[n], msg=n)


def test_full_backward_pre_hook_that_fires_before_any_marker(no_leak):
    """A submodule called directly: its full-backward-pre hook fires before the gradient reaches
    any tensor the recording marked, so its event is held until the marker on the module's own
    output fires (A's graph) or dropped at the end of the backward (B's graph, nothing kept)."""
    model = _model()
    x7a = torch.randn(2, 7, generator=torch.Generator().manual_seed(3))
    x7b = torch.randn(2, 7, generator=torch.Generator().manual_seed(4))
    seen: dict = {}

    def b_body() -> None:
        out = model[2](x7b.clone().requires_grad_())
        (out * 2).sum().backward()
        seen["pending_after_b"] = dict(seen["rec"]._pending)
        model.zero_grad(set_to_none=True)

    def a_body(pause: Callable[[], None]) -> None:
        with hooklab.record(model, [], hooks={"2": ["full_backward_pre", "full_backward"]}) as rec:
            seen["rec"] = rec
            out = model[2](x7a.clone().requires_grad_())
            pause()
            (out * WA.repeat(2)).sum().backward()
        seen["trace"] = rec.trace

    with no_leak(model):
        _interleave(a_body, b_body)
    assert seen["pending_after_b"] == {}
    ev = seen["trace"].events
    assert list(zip(ev.kind, ev.role)) == [("full_backward_pre", "grad_output"),
                                           ("full_backward", "grad_output"),
                                           ("full_backward", "grad_input")]
    want = WA.repeat(2).expand(2, 6)
    torch.testing.assert_close(seen["trace"].find(kind="full_backward_pre"), want)
    torch.testing.assert_close(seen["trace"].find(kind="full_backward", role="grad_input"),
                               want @ model[2].weight.detach())


def test_input_gradient_hook_on_a_leaf_both_threads_use(no_leak):
    """A's input-gradient hook sits on the very leaf B also feeds the model: B's backward through
    it adds no event to A's trace, and B's input gradient is plain autograd's."""
    model = _model()
    x = XA.clone().requires_grad_()  # one leaf, used by both threads
    ref_a = _reference(model, XA, loss_a)
    ref_b = _reference(model, XA, loss_b)
    seen: dict = {}

    def b_body() -> None:
        loss_b(model(x)).backward()
        seen["b_x"] = x.grad.clone()
        x.grad = None
        model.zero_grad(set_to_none=True)

    def a_body(pause: Callable[[], None]) -> None:
        with hooklab.record(model, "0", input_grads=True, inputs=False) as rec:
            out = model(x)
            pause()
            loss_a(out).backward()
        seen["trace"] = rec.trace

    with no_leak(model):
        _interleave(a_body, b_body)
    ev = seen["trace"].events
    assert list(zip(ev.phase, ev.role)) == [("forward", "output"), ("backward", "grad_output"),
                                           ("backward", "grad_input")]
    torch.testing.assert_close(seen["trace"].find(role="grad_input"), ref_a["x"])
    torch.testing.assert_close(seen["b_x"], ref_b["x"])
