"""``record()``: the one context manager that owns every hook handle.

Example:
    >>> with hooklab.record(model, layers=["conv1", "conv2"],
    ...                     edits={"conv2": hooklab.core.edits.scale(0.5)}) as rec:
    ...     rec.run(x)                       # forward + backward of the predicted class score
    >>> rec.trace.select(layer="conv2", role="edited")

How gradients are captured: a forward hook registers a tensor hook on the layer's output, so
the gradient w.r.t. that output arrives even when the next operation is in place (where
``register_full_backward_hook`` raises, pytorch/pytorch#61519). Inputs are recorded (and input
gradient hooks registered) in a forward *pre*-hook, before an in-place module can overwrite
them. After the ``with`` block every module has exactly the hooks it had before, whatever
happened inside; tensor hooks left on a still-alive graph are removed too.

Threads: forward hooks act only for the thread that entered the recorder, so several threads
may record on one shared model at once (the dashboard's cached-model pattern). Backward-time
hooks act only inside a backward pass through this recording's own graph, whichever thread runs
it (on CUDA autograd runs hooks on its device threads): tensor hooks on the recording's own
forward outputs note the id of each graph task that reaches them
(``torch._C._current_graph_task_id()``), and parameter hooks (post-accumulate-grad,
``param_grad`` edits), module backward hooks and input-gradient hooks act only in a noted task.
Another thread's backward through the same shared parameters and modules is left alone: its
gradients are unedited and its events stay out of this trace.
"""

from __future__ import annotations

import collections
import ctypes
import itertools
import logging
import threading
import warnings
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

from hooklab.core.edits import Edit, EditsArg, EditSpec, normalise_edits
from hooklab.core.errors import EditError, HookKindError
from hooklab.core.hooks import (
    HOOK_KIND_HELP,
    HOOK_KINDS,
    MODULE_BACKWARD_KINDS,
    check_kinds,
)
from hooklab.core.layers import LayerSpec, is_leaf, resolve_layers
from hooklab.core.native import Kernels, accepts, kernels
from hooklab.core.stats import moments_stats, tensor_stats_many
from hooklab.core.trace import Trace, tensor_stats
from hooklab.recording.pool import POOL

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_MAX_BYTES", "HOOK_KINDS", "HOOK_KIND_HELP", "EditSpec", "EditsArg",
           "Recorder", "record", "scalar_loss"]

DEFAULT_MAX_BYTES = 256 * 2**20

#: A summarised tensor: (weak reference, version counter, statistics, stored key).
_Cached = tuple[weakref.ref[torch.Tensor], int, dict[str, float | int], str]
#: The five moments of a tensor summarised in a hook whose row is made later (``defer_rows``).
_Moments = ctypes.c_double * 5


def _flatten(obj: Any, prefix: str = "") -> list[tuple[str, torch.Tensor]]:
    """Tensors inside a hook argument, each with an index like "0" or "1.h"."""
    if isinstance(obj, torch.Tensor):
        return [(prefix or "0", obj)]
    out: list[tuple[str, torch.Tensor]] = []
    if isinstance(obj, (tuple, list)):
        for i, v in enumerate(obj):
            out += _flatten(v, f"{prefix}.{i}" if prefix else str(i))
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            out += _flatten(v, f"{prefix}.{k}" if prefix else str(k))
    return out


def _poolable(t: torch.Tensor) -> bool:
    return t.layout == torch.strided and not t.is_complex()


def stored_copy(t: torch.Tensor) -> torch.Tensor:
    """A detached float32 CPU copy of ``t``, in a buffer from :data:`~hooklab.recording.pool.POOL`
    (memory already mapped once the pool has warmed up: no page faults)."""
    src = t.detach()
    if not _poolable(src):  # rare: the plain converting copy
        return src.to("cpu", torch.float32, copy=True)
    return POOL.take(src.shape).copy_(src)


def _stats_and_copy(t: torch.Tensor) -> tuple[dict[str, float | int], torch.Tensor]:
    """:func:`tensor_stats` of ``t`` and its stored copy; a CPU tensor is copied into a pooled
    buffer chunk by chunk and summarised from the copy while it is in the cache."""
    src = t.detach()
    if not _poolable(src):
        return tensor_stats(src), stored_copy(src)
    buf = POOL.take(src.shape)
    return tensor_stats(src, out=buf), buf


def _map_tensors(obj: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # namedtuple
        return type(obj)(*(_map_tensors(v, fn) for v in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(_map_tensors(v, fn) for v in obj)
    if isinstance(obj, dict):
        return {k: _map_tensors(v, fn) for k, v in obj.items()}
    return obj


class Recorder:
    """Owns every hook of one recording; use through :func:`record`."""

    def __init__(self, model: nn.Module, layers: LayerSpec = None, *, edits: EditsArg = None,
                 hooks: Mapping[str, Iterable[str]] | None = None, param_grads: bool = False,
                 input_grads: bool = False, inputs: bool = True, keep_tensors: bool = True,
                 max_bytes: int | None = DEFAULT_MAX_BYTES, step: int = 0,
                 meta: Mapping[str, Any] | None = None,
                 keep_layers: Iterable[str] = (), batch_param_stats: bool = False,
                 defer_rows: bool = False,
                 on_output: Callable[[str, Any], None] | None = None) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"record() needs an nn.Module, got {type(model).__name__}")
        self.model = model
        self._edit_specs = normalise_edits(edits)
        self.layers = resolve_layers(model, layers)
        self._modules = dict(model.named_modules())
        self._grad_edits: dict[str, Edit] = {}
        self._act_edits: dict[str, Edit] = {}
        self._param_edits: dict[tuple[str, str], Edit] = {}
        self._resolve_edits()
        edit_layers = set(self._grad_edits) | set(self._act_edits)
        self.layers = [n for n in self._modules if n in set(self.layers) | edit_layers]
        self._explore = self._resolve_hooks(hooks or {})
        self.param_grads = param_grads
        self.input_grads = input_grads
        self.record_inputs = inputs
        self.keep_tensors = keep_tensors
        self.max_bytes = None if max_bytes is None else int(max_bytes)
        self.keep_layers = frozenset(keep_layers)
        self.batch_param_stats = bool(batch_param_stats)
        self.defer_rows = bool(defer_rows)
        self.on_output = on_output
        self.step = int(step)
        self.trace = Trace(meta={
            **dict(meta or {}),
            "model": dict(meta or {}).get("model", type(model).__name__),
            "layers": list(self.layers),
            "edits": [e.spec() for e in self._edit_specs],
            "hooks": {k: list(v) for k, v in self._explore.items()},
            "param_grads": param_grads, "input_grads": input_grads,
            "keep_tensors": keep_tensors, "max_bytes": self.max_bytes,
            "torch": torch.__version__,
        })
        self._handles: list[Any] = []
        self._tensor_handles: list[Any] = []
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self._thread: int | None = None
        self._calls: dict[str, int] = {}
        self._stack: dict[str, list[int]] = {}
        self._param_calls: dict[str, int] = {}
        # id(tensor) -> (weak ref, version, stats, key): a tensor two hooks see is summarised once
        self._cache: dict[int, _Cached] = {}
        self._active = False
        self._graphs: set[int] = set()  # graph tasks (backward calls) through this recording
        self._pending: dict[int, list[Callable[[], None]]] = {}
        # graph task -> parameter gradients whose statistics wait for the end of that pass
        self._param_batch: dict[int, list[tuple[int, str, str, str, int, int, torch.Tensor]]] \
            = {}
        # events summarised in their hook whose rows wait for flush_rows (defer_rows); a deque:
        # a backward on another thread may append while flush_rows takes them
        self._deferred: collections.deque[tuple[Any, ...]] = collections.deque()
        self._dk: Kernels | None = None
        self._full_backward_layers: list[str] = []
        self._flags: list[tuple[nn.Module, bool | None]] = []

    # -- set-up ---------------------------------------------------------------------------
    def _resolve_edits(self) -> None:
        params = dict(self.model.named_parameters())
        for spec in self._edit_specs:
            if spec.target == "param_grad":
                if spec.layer in params:
                    mod, _, pname = spec.layer.rpartition(".")
                    self._param_edits[(mod, pname)] = spec.edit
                    continue
                for name in resolve_layers(self.model, spec.layer):
                    own = dict(self._modules[name].named_parameters(recurse=False))
                    if not own:
                        raise EditError(f"layer {name!r} has no parameters to edit gradients of")
                    for pname in own:
                        self._param_edits[(name, pname)] = spec.edit
                continue
            target = self._grad_edits if spec.target == "grad" else self._act_edits
            for name in resolve_layers(self.model, spec.layer):
                target[name] = spec.edit

    def _resolve_hooks(self, hooks: Mapping[str, Iterable[str]]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for pattern, kinds in hooks.items():
            kinds = [kinds] if isinstance(kinds, str) else list(kinds)
            check_kinds(kinds)
            for name in resolve_layers(self.model, pattern):
                merged = out.setdefault(name, [])
                merged += [k for k in kinds if k not in merged]
        return out

    def __enter__(self) -> Recorder:
        if self._active:
            raise RuntimeError("this recorder is already active")
        self._thread = threading.get_ident()
        self._dk = kernels() if self.defer_rows else None
        self._active = True
        try:
            for name in self.layers:
                self._attach_recording(name)
            self._attach_markers()
            for (name, pname), edit in self._param_edits.items():
                self._attach_param_edit(name, pname, edit)
            for name, kinds in self._explore.items():
                for kind in kinds:
                    self._attach_explore(name, kind)
        except BaseException:
            self._remove_all()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._remove_all()
        if exc is not None:
            explained = self.explain(exc)
            if explained is not None:
                raise explained from exc

    def _remove_all(self) -> None:
        self._active = False
        self.flush_rows()
        for h in itertools.chain(self._handles, self._tensor_handles):
            try:
                h.remove()
            except Exception:  # noqa: BLE001 - removal must go on for every handle
                log.exception("could not remove a hook handle")
        self._handles.clear()
        self._tensor_handles.clear()
        self._cache.clear()
        self._graphs.clear()
        self._pending.clear()
        self._param_batch.clear()
        for module, prev in reversed(self._flags):
            if not module._backward_hooks and not module._backward_pre_hooks:
                module._is_full_backward_hook = prev
        self._flags.clear()

    def _mine(self) -> bool:
        """Forward time: the recording thread, while the recorder is active."""
        return self._active and threading.get_ident() == self._thread

    # -- the recording's own graph ------------------------------------------------------------
    def _attach_markers(self) -> None:
        """Graph markers on the model's output and on every module a backward-time hook of
        this recording lives on (recorded layers mark through their own gradient hooks)."""
        names = {""} | set(self._explore) | {n for n, _ in self._param_edits}
        for name in sorted(names - set(self.layers)):
            self._handles.append(self._modules[name].register_forward_hook(self._marker))

    def _marker(self, module: nn.Module, args: Any, output: Any) -> None:
        if self._mine():
            for _, t in _flatten(output):
                if t.requires_grad:
                    self._tensor_handles.append(t.register_hook(self._mark_hook))

    def _mark_hook(self, grad: torch.Tensor) -> None:
        if self._active:
            self._note_graph()

    def _note_graph(self) -> None:
        """A gradient reached one of this recording's own tensors: the running graph task is
        ours. Events a module hook held back for this task are emitted now, in order."""
        task = torch._C._current_graph_task_id()
        if task < 0:
            return
        self._graphs.add(task)
        for emit in self._pending.pop(task, ()):
            emit()

    def _in_my_graph(self) -> bool:
        """Backward time: the running backward passes through this recording's graph."""
        return self._active and torch._C._current_graph_task_id() in self._graphs

    def _hold(self, emit: Callable[[], None]) -> None:
        """Defer ``emit`` until a marker of this recording fires in the running graph task
        (a module's full-backward-pre hook fires before the marker on its own output); dropped
        at the end of a task that never reaches this recording's graph."""
        task = torch._C._current_graph_task_id()
        if task < 0:
            return
        if task not in self._pending:
            self._pending[task] = []
            me = weakref.ref(self)

            def drop() -> None:
                rec = me()
                if rec is not None:
                    rec._pending.pop(task, None)
            torch.autograd.Variable._execution_engine.queue_callback(drop)
        self._pending[task].append(emit)

    # -- default recording of one layer -----------------------------------------------------
    def _attach_recording(self, name: str) -> None:
        module = self._modules[name]
        # the pre-hook numbers a call when it starts (a module called inside its own forward
        # gets the lower number) and records inputs; a leaf whose inputs are not recorded is
        # numbered by its forward hook alone (one hook call per module call, not two)
        count_at_end = not (self.record_inputs or self.input_grads) and is_leaf(module)
        if not count_at_end:
            self._handles.append(module.register_forward_pre_hook(self._make_pre_hook(name)))
        self._handles.append(module.register_forward_hook(
            self._make_fwd_hook(name, count_at_end)))
        if self.param_grads:
            for pname, p in module.named_parameters(recurse=False):
                if p.requires_grad:
                    self._handles.append(p.register_post_accumulate_grad_hook(
                        self._make_param_hook(name, pname, "post_accumulate_grad")))

    def _make_pre_hook(self, name: str) -> Callable:
        def pre_hook(module: nn.Module, args: Any) -> None:
            if not self._mine():
                return None
            call = self._calls.get(name, 0)
            self._calls[name] = call + 1
            self._stack.setdefault(name, []).append(call)
            for idx, t in _flatten(args):
                if self.record_inputs:
                    self._emit("forward", "forward_pre", name, call, "input", idx, t)
                if self.input_grads and t.requires_grad:
                    self._tensor_handles.append(t.register_hook(
                        self._make_grad_hook(name, call, idx, "grad_input", None)))
            return None
        return pre_hook

    def _make_fwd_hook(self, name: str, count_at_end: bool = False) -> Callable:
        act_edit = self._act_edits.get(name)
        grad_edit = self._grad_edits.get(name)

        def fwd_hook(module: nn.Module, args: Any, output: Any) -> Any:
            if not self._mine():
                return None
            if count_at_end:
                call = self._calls.get(name, 0)
                self._calls[name] = call + 1
            else:
                stack = self._stack.get(name)
                call = stack.pop() if stack else self._calls.get(name, 0)
            new_output = None
            if act_edit is not None:
                ej = act_edit.to_json()
                for idx, t in _flatten(output):
                    self._emit("forward", "forward", name, call, "output", idx, t, ej)
                new_output = _map_tensors(output, act_edit)
                flat = _flatten(new_output)
                for idx, t in flat:
                    self._emit("forward", "forward", name, call, "edited", idx, t, ej)
                output = new_output
            elif self._defer(output, "forward", "forward", name, call, "output", "0"):
                flat = [("0", output)]
            else:
                flat = _flatten(output)
                for idx, t in flat:
                    self._emit("forward", "forward", name, call, "output", idx, t)
            for idx, t in flat:
                if t.requires_grad:
                    self._tensor_handles.append(t.register_hook(
                        self._make_grad_hook(name, call, idx, "grad_output", grad_edit)))
            if self.on_output is not None:
                self.on_output(name, output)
            return new_output
        return fwd_hook

    def _make_grad_hook(self, name: str, call: int, idx: str, role: str,
                        edit: Edit | None, kind: str = "tensor") -> Callable:
        def grad_hook(grad: torch.Tensor) -> torch.Tensor | None:
            if not self._active:
                return None
            if role == "grad_output":
                self._note_graph()  # the output is this recording's own tensor
            elif not self._in_my_graph():
                return None  # an input (say a shared leaf) reached by another graph
            if edit is None:
                if not self._defer(grad, "backward", kind, name, call, role, idx):
                    self._emit("backward", kind, name, call, role, idx, grad)
                return None
            ej = edit.to_json()
            self._emit("backward", kind, name, call, role, idx, grad, ej)
            new = edit(grad)
            self._emit("backward", kind, name, call, "edited", idx, new, ej)
            return new
        return grad_hook

    def _make_param_hook(self, name: str, pname: str, kind: str) -> Callable:
        key = f"{name}.{pname}"

        def param_hook(p: torch.Tensor) -> None:
            grad = p.grad
            if grad is None or not self._active:
                return
            task = torch._C._current_graph_task_id()
            if task not in self._graphs:
                return
            call = self._param_calls.get(key, 0)
            self._param_calls[key] = call + 1
            if self.batch_param_stats and not self.keep_tensors:
                # kept for _flush_params at the end of this backward pass, numbered now (its
                # event keeps its place in the firing order)
                batch = self._param_batch.get(task)
                if batch is None:
                    batch = self._new_param_batch(task)
                batch.append((next(self._seq), kind, name, pname, call, self.step, grad))
            else:
                self._emit("backward", kind, name, call, "param_grad", pname, grad)
        return param_hook

    def _new_param_batch(self, task: int) -> list[tuple[Any, ...]]:
        """The parameter gradients of backward pass ``task``, summarised when it ends."""
        batch: list[tuple[Any, ...]] = []
        self._param_batch[task] = batch
        me = weakref.ref(self)

        def flush() -> None:
            rec = me()
            if rec is not None:
                rec._flush_params(task)
        torch.autograd.Variable._execution_engine.queue_callback(flush)
        return batch

    def _flush_params(self, task: int) -> None:
        """The events of the parameter gradients one backward pass accumulated (statistics
        only), summarised together: one kernel call instead of one per parameter."""
        batch = self._param_batch.pop(task, None)
        if not batch or not self._active:
            return
        stats = tensor_stats_many([b[-1] for b in batch])
        with self._lock:
            for (seq, kind, name, pname, call, step, grad), st in zip(batch, stats,
                                                                      strict=True):
                self.trace.add_values(Trace.event_values(
                    seq, "backward", kind, name, "param_grad", grad, call=call, index=pname,
                    step=step, stats=st))

    def _attach_param_edit(self, name: str, pname: str, edit: Edit) -> None:
        p = getattr(self._modules[name], pname)
        if not p.requires_grad:
            raise EditError(f"parameter {name}.{pname} does not require grad; nothing to edit")
        key = f"{name}.{pname}:edit"

        def hook(grad: torch.Tensor) -> torch.Tensor | None:
            if not self._in_my_graph():
                return None  # another graph's backward through the shared parameter
            call = self._param_calls.get(key, 0)
            self._param_calls[key] = call + 1
            ej = edit.to_json()
            self._emit("backward", "tensor", name, call, "param_grad", pname, grad, ej)
            new = edit(grad)
            self._emit("backward", "tensor", name, call, "edited", pname, new, ej)
            return new
        self._handles.append(p.register_hook(hook))

    # -- exploration hooks ------------------------------------------------------------------
    def _next_call(self, name: str, kind: str) -> int:
        """Call index of an exploration hook: each kind counts its own firings on a layer (each
        fires once per call of the module, so the kinds agree); reset by :meth:`next_step`."""
        key = f"{name}#{kind}"  # '#' is never part of a module name
        call = self._calls.get(key, 0)
        self._calls[key] = call + 1
        return call

    def _attach_explore(self, name: str, kind: str) -> None:
        module = self._modules[name]
        if kind in MODULE_BACKWARD_KINDS:
            self._attach_module_backward(name, module, kind)
        elif kind == "post_accumulate_grad":
            self._attach_param_explore(name, module)
        elif name not in self.layers:  # the default recording already fires the others
            self._attach_forward_explore(name, module, kind)

    def _attach_forward_explore(self, name: str, module: nn.Module, kind: str) -> None:
        """``forward_pre``, ``forward`` and ``tensor`` hooks on a layer not recorded anyway."""
        if kind == "forward_pre":
            def pre(m, args, _n=name):
                if self._mine():
                    call = self._next_call(_n, kind)
                    for idx, t in _flatten(args):
                        self._emit("forward", "forward_pre", _n, call, "input", idx, t)
            self._handles.append(module.register_forward_pre_hook(pre))
        elif kind == "forward":
            def fwd(m, args, out, _n=name):
                if self._mine():
                    call = self._next_call(_n, kind)
                    for idx, t in _flatten(out):
                        self._emit("forward", "forward", _n, call, "output", idx, t)
            self._handles.append(module.register_forward_hook(fwd))
        elif kind == "tensor":
            def fwd_t(m, args, out, _n=name):
                if self._mine():
                    call = self._next_call(_n, kind)
                    for idx, t in _flatten(out):
                        if t.requires_grad:
                            self._tensor_handles.append(t.register_hook(
                                self._make_grad_hook(_n, call, idx, "grad_output", None)))
            self._handles.append(module.register_forward_hook(fwd_t))

    def _attach_param_explore(self, name: str, module: nn.Module) -> None:
        """Post-accumulate-grad hooks on a layer's own trainable parameters."""
        params = [(pn, p) for pn, p in module.named_parameters(recurse=False) if p.requires_grad]
        if not params:
            raise HookKindError(
                f"layer {name!r} ({type(module).__name__}) has no trainable parameters of its "
                "own, so a post-accumulate-grad hook has nothing to attach to (it lives on "
                "parameters). Use the 'tensor' kind for its output gradient instead.")
        if self.param_grads and name in self.layers:
            return  # the default recording already attaches them
        for pn, p in params:
            self._handles.append(p.register_post_accumulate_grad_hook(
                self._make_param_hook(name, pn, "post_accumulate_grad")))

    def _attach_module_backward(self, name: str, module: nn.Module, kind: str) -> None:
        full = kind != "backward"
        prev = module._is_full_backward_hook
        if prev is not None and prev != full and module._backward_hooks:
            raise HookKindError(
                f"PyTorch refuses the deprecated 'backward' hook and the full backward hooks "
                f"('full_backward', 'full_backward_pre') on one module ({name!r}). Record them in "
                "two runs, or use the 'tensor' kind for the output gradient.")
        # PyTorch remembers the kind of backward hook a module had even after removal;
        # restore the flag on exit so the module is left exactly as it was.
        self._flags.append((module, prev))

        me = weakref.ref(self)  # hooks left in a living graph must not keep the recorder alive

        def fire(events: list[tuple[str, str, torch.Tensor]]) -> None:
            rec = me()
            if rec is None or not rec._active:
                return

            def emit() -> None:
                c = rec._next_call(name, kind)
                for role, idx, g in events:
                    rec._emit("backward", kind, name, c, role, idx, g)
            if rec._in_my_graph():
                emit()
            else:  # not yet known to be ours (or another graph's): decided by the markers
                rec._hold(emit)

        if kind == "full_backward_pre":
            def bpre(m, grad_output):
                fire([("grad_output", idx, g) for idx, g in _flatten(grad_output)])
            self._handles.append(module.register_full_backward_pre_hook(bpre))
            self._full_backward_layers.append(name)
            return

        def bhook(m, grad_input, grad_output):
            fire([("grad_output", idx, g) for idx, g in _flatten(grad_output)]
                 + [("grad_input", idx, g) for idx, g in _flatten(grad_input)])
        if kind == "full_backward":
            self._handles.append(module.register_full_backward_hook(bhook))
            self._full_backward_layers.append(name)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                self._handles.append(module.register_backward_hook(bhook))

    # -- events -----------------------------------------------------------------------------
    def _defer(self, t: Any, phase: str, kind: str, layer: str, call: int, role: str,
               index: str) -> bool:
        """``defer_rows``: summarise ``t`` now and make its row in :meth:`flush_rows`, the
        least a hook can do (one kernel call; no statistics dict, no row). Returns False,
        having done nothing, where :meth:`_emit` must take it: a tensor to store, not a plain
        non-empty contiguous float32 CPU tensor, or moments that need the tensor again."""
        k = self._dk
        if k is None or self.keep_tensors or type(t) is not torch.Tensor or not accepts(t):
            return False
        n = t.numel()
        moments = _Moments()
        if not n or k.moments_into(t, moments):
            return False
        self._deferred.append((next(self._seq), self.trace, phase, kind, layer, call, role,
                               index, t.shape, t.dtype, t.device, self.step, n, moments))
        return True

    def flush_rows(self) -> None:
        """Make the rows of the events :meth:`_defer` kept back, each in the trace that was
        current when its hook fired (``defer_rows``; called by :meth:`next_step` and on exit,
        and by a caller before it reads the trace)."""
        items = self._deferred
        if not items:
            return
        with self._lock:
            while items:
                seq, trace, phase, kind, layer, call, role, index, shape, dtype, device, step, \
                    n, moments = items.popleft()
                trace.add_values(Trace.described_values(
                    seq, phase, kind, layer, role, shape, dtype, device,
                    moments_stats(n, *moments), call=call, index=index, step=step))

    def _emit(self, phase: str, kind: str, layer: str, call: int, role: str, index: str,
              t: torch.Tensor, edit: str = "") -> None:
        cached = self._cache.get(id(t))
        if cached is not None and cached[0]() is t and cached[1] == t._version:
            stats, key = cached[2], cached[3]
        else:
            key = ""
            tensor = None
            if self.keep_tensors:
                nbytes = t.numel() * 4
                with self._lock:
                    fits = (self.max_bytes is None or layer in self.keep_layers
                            or self.trace.stored_bytes + nbytes <= self.max_bytes)
                    if fits:
                        self.trace.meta["stored_bytes"] = self.trace.stored_bytes + nbytes
                    else:
                        self.trace.meta["truncated"] = True
                if fits:
                    stats, tensor = _stats_and_copy(t)
            if tensor is None:
                stats = tensor_stats(t)
            with self._lock:
                seq = next(self._seq)
                if tensor is not None:
                    key = f"t{seq:07d}"
                self._add(seq, phase, kind, layer, call, role, index, t, edit, stats, key, tensor)
            try:
                self._cache[id(t)] = (weakref.ref(t), t._version, stats, key)
            except (TypeError, RuntimeError):  # RuntimeError: inference tensors have no version
                pass
            return
        with self._lock:
            seq = next(self._seq)
            self._add(seq, phase, kind, layer, call, role, index, t, edit, stats, key, None)

    def _add(self, seq, phase, kind, layer, call, role, index, t, edit, stats, key, tensor):
        self.trace.add_values(Trace.event_values(
            seq, phase, kind, layer, role, t, call=call, index=index, edit=edit,
            step=self.step, stats=stats, key=key), tensor)

    # -- running ----------------------------------------------------------------------------
    def next_step(self) -> int:
        """Start the next step (training loops): resets call indices, bumps ``step``."""
        self.flush_rows()
        self.step += 1
        self._calls.clear()
        self._stack.clear()
        self._param_calls.clear()
        self._cache.clear()
        self._param_batch.clear()
        return self.step

    def run(self, x: torch.Tensor, target: Any = None, *,
            zero_grad: bool | None = None) -> torch.Tensor:
        """One forward and backward pass of ``model(x)``; returns the output, detached.

        ``target``: ``None`` backpropagates each sample's predicted class score; an int or a
        list of ints, those classes' scores; ``"sum"`` the sum of the output (the seed's
        ``output.sum()``); a callable ``output -> scalar`` any loss. ``zero_grad`` clears the
        parameters' ``.grad`` first so parameter-gradient events hold this pass alone; by
        default it does so only when parameter gradients are recorded or edited. (Clearing
        ``.grad`` while another thread runs backward on the same model is unsafe: threads
        sharing one model should record parameter gradients only under a lock, as the
        dashboard does.)
        """
        if not self._active:
            raise RuntimeError("call run() inside `with hooklab.record(...) as rec:`")
        if zero_grad is None:
            zero_grad = self.param_grads or bool(self._param_edits) or any(
                "post_accumulate_grad" in kinds for kinds in self._explore.values())
        if zero_grad:
            self.model.zero_grad(set_to_none=True)
        if self.input_grads and not x.requires_grad:
            x = x.detach().requires_grad_()
        try:
            out = self.model(x)
            loss = scalar_loss(out, target)
            loss.backward()
        except RuntimeError as exc:
            explained = self.explain(exc)
            if explained is not None:
                raise explained from exc
            raise
        return out.detach()

    def explain(self, exc: BaseException) -> HookKindError | None:
        """A HookKindError explaining a PyTorch refusal of a hook, or None if it is not one."""
        text = str(exc)
        if isinstance(exc, RuntimeError) and "BackwardHookFunction" in text:
            where = ", ".join(self._full_backward_layers) or "a module"
            return HookKindError(
                f"PyTorch refused the full backward hook on {where}: the module's output (or "
                "input) is modified in place afterwards, e.g. by ReLU(inplace=True), which full "
                "backward hooks cannot allow (pytorch/pytorch#61519). Use the 'tensor' hook kind "
                "(a tensor hook on the output, what hooklab records by default) to see the "
                "output gradient, or make the following op out of place (inplace=False).")
        return None


def scalar_loss(out: Any, target: Any = None) -> torch.Tensor:
    """The scalar that :meth:`Recorder.run` backpropagates (see there)."""
    if callable(target):
        return target(out)
    if not isinstance(out, torch.Tensor):
        raise TypeError("the model output is not a tensor; pass target=callable(output) -> loss")
    if isinstance(target, str) and target == "sum":
        return out.sum()
    if out.dim() != 2:
        return out.sum()
    n = out.shape[0]
    if target is None:
        idx = out.detach().argmax(dim=1)
    elif isinstance(target, int):
        idx = torch.full((n,), int(target), dtype=torch.long, device=out.device)
    else:
        idx = torch.as_tensor(list(target), dtype=torch.long, device=out.device)
        if idx.numel() != n:
            raise ValueError(f"{idx.numel()} targets for a batch of {n}")
    if int(idx.max()) >= out.shape[1] or int(idx.min()) < 0:
        raise ValueError(f"target class out of range for {out.shape[1]} classes")
    return out.gather(1, idx.view(-1, 1)).sum()


def record(model: nn.Module, layers: LayerSpec = None, **kwargs: Any) -> Recorder:
    """Record hook firings on ``model``; use as ``with record(model, ...) as rec:``.

    Args:
        model: any ``nn.Module``.
        layers: ``None`` (every leaf module), a name, a glob (``"layer4.*"``), a type name
            (``"Conv2d"``) or a list of these.
        edits: ``{"conv2": edits.scale(0.5)}`` (edit the output gradient) or a list of
            :class:`EditSpec` (targets ``grad``, ``activation``, ``param_grad``).
        hooks: exploration hooks by kind, ``{"conv": ["full_backward", "backward"]}``.
        param_grads: also record parameter gradients (post-accumulate-grad hooks).
        input_grads: also record gradients w.r.t. each layer's inputs.
        inputs: record forward inputs (default True).
        keep_tensors: store tensors (False: statistics only, fastest).
        max_bytes: tensor byte budget; past it only statistics are kept (``trace.truncated``).
        keep_layers: layers whose tensors are stored even past ``max_bytes`` (what a view
            cannot do without, e.g. the CAM layer of a comparison of a large model).
        step: the first step number.
        batch_param_stats: summarise the parameter gradients of a backward pass together at
            its end (statistics-only events; the same values and firing order, one kernel call
            per pass: what ``watch`` uses). A gradient changed in place later in the same pass
            is summarised as it is then.
        defer_rows: statistics-only events are summarised in their hooks but made into rows
            by :meth:`Recorder.flush_rows` (called by ``next_step`` and on exit): the cheapest
            hooks, for a caller that flushes before it reads the trace (what ``watch`` uses).
        on_output: ``f(layer, output)`` called with each recorded layer's output (after an
            activation edit) in the recording thread.
        meta: extra metadata for the trace (model name, input description, page...).

    Example:
        >>> with record(model, "Conv2d", param_grads=True) as rec:
        ...     model(x).sum().backward()
        >>> rec.trace.events.groupby("role").size()
    """
    return Recorder(model, layers, **kwargs)
