"""The backward graph of one forward pass, with every hook drawn where PyTorch attaches it.

:func:`module_graph` runs ``model(x)`` inside :func:`hooklab.record` (with the caller's layers,
hook kinds and edits) and a :class:`GraphProbe`; it walks ``loss.grad_fn.next_functions``
before the backward pass, runs the backward, and numbers each hook by the recorded events.
:func:`tensor_graph` does the same for a plain tensor computation (``y = x**2; z = y**3``).

Where each hook sits (what PyTorch does, checked in tests/recording/test_graph.py by recording
``torch._C._current_autograd_node()`` inside hooks):

* a tensor hook (``t.register_hook``) on a non-leaf ``t``: a pre-hook of ``t.grad_fn``, the node
  that made ``t`` (it stays there when ``t`` is later modified in place); on a leaf (an input,
  a parameter): its ``AccumulateGrad`` node, like ``register_post_accumulate_grad_hook``;
* ``register_full_backward_pre_hook``: the ``BackwardHookFunctionBackward`` node PyTorch puts on
  the module's outputs; ``register_full_backward_hook``: the one on the module's inputs (on the
  output one when no input requires grad);
* the deprecated ``register_backward_hook``: the ``grad_fn`` of the module's output, i.e. the
  module's **last** autograd node, which is why its ``grad_input`` is wrong for modules of
  several operations.

Ownership: a node belongs to the innermost module whose forward made it (found in the
module's forward hook by walking back from its outputs to the gradient edges of its inputs);
nodes made in a parent's own ``forward`` (``F.relu``, ``view``) belong to the parent (``""``
for the model). Large graphs are collapsed by module with :meth:`BackwardGraph.collapsed`.

Example:
    >>> g = module_graph(model, x, layers=["conv1", "conv2"], edits={"conv2": "scale(0.5)"})
    >>> [(h.kind, h.layer, h.order) for h in g.hooks]
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.autograd.graph import get_gradient_edge

from hooklab.core.edits import EditsArg, from_json
from hooklab.core.errors import HooklabError
from hooklab.core.layers import LayerSpec
from hooklab.recording.inventory import describe_hook
from hooklab.recording.recorder import record, scalar_loss

log = logging.getLogger(__name__)

__all__ = ["BackwardGraph", "GraphEdge", "GraphNode", "GraphProbe", "HookMark", "module_graph",
           "tensor_graph", "walk"]

_HOOK_WRAPPER = "BackwardHookFunctionBackward"
#: Hooks hooklab adds only to know which backward is its own; not drawn.
_INTERNAL = ("._mark_hook",)
#: Functions of the recorder's own hooks start with this (any module of the recording layer,
#: so moving the recorder's hook code between its modules keeps them numbered).
_RECORDER = "hooklab.recording."


@dataclass(frozen=True)
class GraphNode:
    """One autograd node (``grad_fn``) of the backward graph."""

    id: str              # "n0" is the root (the loss's grad_fn)
    name: str            # the node's class, "ConvolutionBackward0", "AccumulateGrad"
    module: str          # the module that made it ("" the model's own forward)
    call: int = 0        # that module's call index (a module called 3 times: 0, 1, 2)
    variable: str = ""   # AccumulateGrad: the leaf ("conv.weight", "input", "x")
    count: int = 1       # how many nodes it stands for (collapsed graphs)

    @property
    def is_leaf(self) -> bool:
        return self.name == "AccumulateGrad"

    @property
    def is_hook_wrapper(self) -> bool:
        """PyTorch's BackwardHookFunctionBackward, made by full backward hooks."""
        return self.name == _HOOK_WRAPPER


@dataclass(frozen=True)
class GraphEdge:
    """``src -> dst``: ``dst`` is in ``src.next_functions`` (gradients flow src to dst)."""

    src: str
    dst: str


@dataclass(frozen=True)
class HookMark:
    """One hook drawn on the node PyTorch calls it from."""

    node: str                 # GraphNode.id
    kind: str                 # tensor, full_backward, full_backward_pre, backward, post_accumulate_grad
    layer: str                # module (or tensor name) it was registered on
    function: str             # the hook function's qualified name
    owner: str = ""           # "hooklab" for the recorder's hooks, else ""
    call: int = 0             # forward call of the layer it belongs to
    role: str = ""            # what it sees: grad_output, grad_input, param_grad
    index: str = ""           # output / input index, or the parameter name
    edit: str = ""            # the edit it applies ("scale(0.5)"), "" none
    order: int | None = None  # firing order among the numbered hooks (1 first), None unknown
    seqs: tuple[int, ...] = ()  # the recorded events' seq numbers of its firings


@dataclass
class BackwardGraph:
    """Nodes, edges and hooks of one backward graph (data only; charts draw it)."""

    nodes: list[GraphNode]
    edges: list[GraphEdge]
    hooks: list[HookMark]
    activation_edits: dict[str, str] = field(default_factory=dict)  # node id -> edit text
    title: str = ""
    _fns: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def node(self, node_id: str) -> GraphNode:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(node_id)

    def fn(self, node_id: str) -> Any:
        """The live autograd node object behind ``node_id`` (uncollapsed graphs only)."""
        return self._fns[node_id]

    def node_of(self, fn: Any) -> str:
        """The id of the node whose autograd object is ``fn``."""
        for nid, f in self._fns.items():
            if f is fn:
                return nid
        raise KeyError(f"{fn!r} is not in this graph")

    def numbered(self) -> list[HookMark]:
        """The hooks with a firing order, first to fire first."""
        return sorted((h for h in self.hooks if h.order is not None),
                      key=lambda h: h.order or 0)

    def hooks_table(self) -> pd.DataFrame:
        """One row per hook, in firing order (unnumbered last): order, kind, layer, node..."""
        names = {n.id: n.name for n in self.nodes}
        hooks = sorted(self.hooks, key=lambda h: (h.order is None, h.order or 0))
        rows = [{"order": h.order, "kind": h.kind, "layer": h.layer, "node": names.get(h.node),
                 "role": h.role, "edit": h.edit, "function": h.function} for h in hooks]
        return pd.DataFrame(rows, columns=["order", "kind", "layer", "node", "role", "edit",
                                           "function"])

    def collapsed(self, depth: int = 1) -> BackwardGraph:
        """One node per module (cut at ``depth`` name parts) and call; hooks move along.

        Nodes of the model's own forward (module ``""``) and leaves that are not parameters
        stay as they are. Edges inside one module vanish; parallel edges merge.
        """
        group: dict[str, str] = {}
        merged: dict[str, GraphNode] = {}
        keys: dict[tuple[str, int], str] = {}
        for n in self.nodes:
            owner = n.variable.rsplit(".", 1)[0] if n.is_leaf and "." in n.variable else n.module
            if not owner:
                group[n.id] = n.id
                merged[n.id] = n
                continue
            top = ".".join(owner.split(".")[:depth])
            call = n.call if top == owner and not n.is_leaf else 0
            key = keys.setdefault((top, call), f"m{len(keys)}")  # a plain DOT identifier
            group[n.id] = key
            if key in merged:
                merged[key] = replace(merged[key], count=merged[key].count + 1)
            else:
                merged[key] = GraphNode(key, "module", top, call, "", 1)
        edges: list[GraphEdge] = []
        seen: set[tuple[str, str]] = set()
        for e in self.edges:
            s, d = group[e.src], group[e.dst]
            if s != d and (s, d) not in seen:
                seen.add((s, d))
                edges.append(GraphEdge(s, d))
        hooks = [replace(h, node=group[h.node]) for h in self.hooks]
        edits = {group[k]: v for k, v in self.activation_edits.items()}
        return BackwardGraph(list(merged.values()), edges, hooks, edits, self.title)


def walk(root: Any) -> tuple[list[Any], list[tuple[int, int]]]:
    """Breadth-first walk of ``root.next_functions``: (node objects, edges as index pairs)."""
    fns: list[Any] = []
    index: dict[int, int] = {}
    edges: list[tuple[int, int]] = []
    if root is None:
        return fns, edges
    fns.append(root)
    index[id(root)] = 0
    i = 0
    while i < len(fns):
        for nxt, _ in fns[i].next_functions:
            if nxt is None:
                continue
            j = index.get(id(nxt))
            if j is None:
                j = len(fns)
                index[id(nxt)] = j
                fns.append(nxt)
            edges.append((i, j))
        i += 1
    return fns, edges


def _kind(fn: Any) -> str:
    """A node's class name: ``AccumulateGrad``, ``ConvolutionBackward0`` (``name()`` spells
    C++ leaves ``torch::autograd::AccumulateGrad``)."""
    return type(fn).__name__


def _tensors(obj: Any, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """Tensors inside a module's inputs/outputs, indexed as the recorder indexes them."""
    if isinstance(obj, torch.Tensor):
        yield prefix or "0", obj
    elif isinstance(obj, (tuple, list)):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{prefix}.{i}" if prefix else str(i))
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            yield from _tensors(v, f"{prefix}.{k}" if prefix else str(k))


def _edge_node(t: torch.Tensor) -> Any:
    """The node a gradient for ``t`` enters: ``t.grad_fn`` or the leaf's AccumulateGrad."""
    if t.grad_fn is not None:
        return t.grad_fn
    return get_gradient_edge(t).node


@dataclass
class _Pending:
    """A hook found during the forward, placed on a node object (ids come later)."""

    fn_node: Any
    kind: str
    layer: str
    function: str
    call: int = 0
    role: str = ""
    index: str = ""


class GraphProbe:
    """Forward hooks on every module that note which module made which autograd node and
    which hooks are on its tensors and on itself; removed in ``__exit__``, whatever happened.

    Enter it *after* any recorder, so its hooks run last and see the recorder's tensor hooks.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.owner: dict[int, tuple[str, int]] = {}   # id(node) -> (module, call)
        self.keep: list[Any] = []                     # node objects (ids stay valid)
        self.pending: list[_Pending] = []
        self.outputs: dict[tuple[str, int], set[int]] = {}  # (module, call) -> id(output node)
        self.module_hooks: list[tuple[str, int, nn.Module]] = []
        self.act_edits: dict[int, str] = {}
        self._placed: set[tuple[int, int]] = set()
        self._inputs: dict[str, list[set[int]]] = {}
        self._calls: dict[str, int] = {}
        self._handles: list[Any] = []

    def __enter__(self) -> GraphProbe:
        try:
            for name, module in self.model.named_modules():
                self._handles.append(module.register_forward_pre_hook(self._pre(name)))
                self._handles.append(module.register_forward_hook(self._post(name)))
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._remove()

    def _remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _tensor_hooks(self, t: torch.Tensor, layer: str, call: int, role: str, idx: str) -> None:
        hooks = t._backward_hooks or {}
        for hid, fn in list(hooks.items()):
            key = (id(hooks), int(hid))
            name, _ = describe_hook(fn)
            if key in self._placed or name.endswith(_INTERNAL):
                continue
            self._placed.add(key)
            self.pending.append(_Pending(_edge_node(t), "tensor", layer, name, call, role, idx))

    def _pre(self, name: str):
        def pre(module: nn.Module, args: Any) -> None:
            call = self._calls.get(name, 0)
            self._calls[name] = call + 1
            edges: set[int] = set()
            for idx, t in _tensors(args):
                if t.requires_grad:
                    node = _edge_node(t)
                    self.keep.append(node)
                    edges.add(id(node))
                    self._tensor_hooks(t, name, call, "grad_input", idx)
            self._inputs.setdefault(name, []).append(edges)
        return pre

    def _post(self, name: str):
        def post(module: nn.Module, args: Any, output: Any) -> None:
            stack = self._inputs.get(name) or [set()]
            stop = stack.pop()
            call = self._calls.get(name, 1) - 1
            outs: set[int] = set()
            for idx, t in _tensors(output):
                if t.grad_fn is None:
                    continue
                outs.add(id(t.grad_fn))
                self._own(t.grad_fn, stop, (name, call))
                self._tensor_hooks(t, name, call, "grad_output", idx)
            self.outputs[(name, call)] = outs
            if module._backward_hooks or module._backward_pre_hooks:
                self.module_hooks.append((name, call, module))
                if module._backward_hooks and not module._is_full_backward_hook:
                    last = next((t.grad_fn for _, t in _tensors(output)
                                 if t.grad_fn is not None), None)
                    for fn in module._backward_hooks.values():
                        self.pending.append(_Pending(last, "backward", name,
                                                     describe_hook(fn)[0], call, "grad_output"))
        return post

    def _own(self, root: Any, stop: set[int], who: tuple[str, int]) -> None:
        """Every node between ``root`` and the input edges ``stop`` not yet owned is ``who``'s
        (children ran first, so theirs are already taken; the walk passes through them)."""
        todo = [root]
        seen: set[int] = set()
        while todo:
            fn = todo.pop()
            if fn is None or id(fn) in seen or id(fn) in stop:
                continue
            seen.add(id(fn))
            if id(fn) not in self.owner:
                if _kind(fn) == "AccumulateGrad":
                    continue  # leaves are labelled by their variable, not by who used them
                self.owner[id(fn)] = who
                self.keep.append(fn)
            todo.extend(n for n, _ in fn.next_functions)

    def place_module_hooks(self, fns: list[Any]) -> None:
        """Full backward (pre) hooks onto the BackwardHookFunctionBackward nodes of ``fns``."""
        for name, call, module in self.module_hooks:
            outs = self.outputs.get((name, call), set())
            out_wrappers = [f for f in fns if _kind(f) == _HOOK_WRAPPER
                            and any(id(n) in outs for n, _ in f.next_functions if n is not None)]
            for f in out_wrappers:
                self.owner[id(f)] = (name, call)
            in_wrappers = [f for f in fns if _kind(f) == _HOOK_WRAPPER
                           and self.owner.get(id(f)) == (name, call) and f not in out_wrappers]
            for fn in module._backward_pre_hooks.values():
                for f in out_wrappers:
                    self.pending.append(_Pending(f, "full_backward_pre", name,
                                                 describe_hook(fn)[0], call, "grad_output"))
            if module._is_full_backward_hook:
                for fn in module._backward_hooks.values():
                    for f in (in_wrappers or out_wrappers):
                        self.pending.append(_Pending(f, "full_backward", name,
                                                     describe_hook(fn)[0], call, "grad_input"))


def _leaf_names(model: nn.Module | None, named: Mapping[str, torch.Tensor]) -> dict[int, str]:
    """id(AccumulateGrad) -> variable name for the model's parameters and named tensors."""
    out: dict[int, str] = {}
    items: list[tuple[str, torch.Tensor]] = list(named.items())
    if model is not None:
        items += [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    for name, t in items:
        if t.requires_grad and t.grad_fn is None:
            out[id(get_gradient_edge(t).node)] = name
    return out


def _param_hooks(model: nn.Module) -> Iterator[_Pending]:
    for mname, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            node = get_gradient_edge(p).node
            for fn in (p._backward_hooks or {}).values():
                yield _Pending(node, "tensor", mname, describe_hook(fn)[0], 0, "param_grad", pname)
            for fn in (getattr(p, "_post_accumulate_grad_hooks", None) or {}).values():
                yield _Pending(node, "post_accumulate_grad", mname, describe_hook(fn)[0], 0,
                               "param_grad", pname)


def _build(root: Any, owner: Mapping[int, tuple[str, int]], leaves: Mapping[int, str],
           pending: Iterable[_Pending], names: Mapping[int, str] | None = None,
           title: str = "") -> BackwardGraph:
    fns, pairs = walk(root)
    ids = {id(f): f"n{i}" for i, f in enumerate(fns)}
    nodes = []
    for i, f in enumerate(fns):
        module, call = owner.get(id(f), ("", 0))
        var = leaves.get(id(f), "")
        if _kind(f) == "AccumulateGrad" and not var:
            var = "input"
        if names and id(f) in names:
            var = names[id(f)]
        nodes.append(GraphNode(f"n{i}", _kind(f), module, call, var))
    edges = [GraphEdge(f"n{a}", f"n{b}") for a, b in pairs]
    hooks = []
    for p in pending:
        nid = ids.get(id(p.fn_node))
        if nid is None:
            continue  # a hook on a tensor outside this loss's graph
        hooks.append(HookMark(nid, p.kind, p.layer, p.function,
                              "hooklab" if p.function.startswith(_RECORDER) else "", p.call,
                              p.role, p.index))
    return BackwardGraph(nodes, edges, hooks, title=title,
                         _fns={f"n{i}": f for i, f in enumerate(fns)})


def _match(graph: BackwardGraph, cands: list[int], ev: Any) -> list[int]:
    """The recorder hook (indices into ``graph.hooks``) that emitted event ``ev``."""
    hooks = graph.hooks
    kind, role, idx = str(ev.kind), str(ev.role), str(ev.index)
    if kind in ("tensor", "post_accumulate_grad"):
        match = [i for i in cands if hooks[i].index == idx
                 and (hooks[i].role == "param_grad" or hooks[i].call == int(ev.call))]
        if role == "edited":  # only output-gradient and parameter hooks edit
            return [i for i in match if hooks[i].role in ("grad_output", "param_grad")]
        return [i for i in match if hooks[i].role == role] or match
    # module backward kinds count firings in backward order: the n-th is the n-th last call
    calls = sorted({hooks[i].call for i in cands}, reverse=True)
    if not calls:
        return []
    want = calls[min(int(ev.call), len(calls) - 1)]
    return [i for i in cands if hooks[i].call == want]


def _number(graph: BackwardGraph, events: pd.DataFrame) -> BackwardGraph:
    """Give each of the recorder's hooks its recorded firings and a firing order."""
    bwd = events[events["phase"] == "backward"].sort_values("seq")
    by_kind: dict[tuple[str, str], list[int]] = {}
    for i, h in enumerate(graph.hooks):
        if h.owner == "hooklab":
            by_kind.setdefault((h.kind, h.layer), []).append(i)
    seqs: dict[int, list[int]] = {}
    edit: dict[int, str] = {}
    for ev in bwd.itertuples(index=False):
        for i in _match(graph, by_kind.get((str(ev.kind), str(ev.layer)), []), ev)[:1]:
            seqs.setdefault(i, []).append(int(ev.seq))
            if ev.edit:
                edit[i] = str(ev.edit)
    first = sorted(seqs, key=lambda i: seqs[i][0])
    order = {i: r + 1 for r, i in enumerate(first)}
    hooks = [replace(h, seqs=tuple(seqs.get(i, ())), order=order.get(i),
                     edit=_edit_text(edit[i]) if i in edit else h.edit)
             for i, h in enumerate(graph.hooks)]
    return replace(graph, hooks=hooks)


def _edit_text(ej: str) -> str:
    """``"scale(0.5)"`` from an event's edit JSON (shown as written when it does not parse)."""
    try:
        return str(from_json(ej))
    except (HooklabError, ValueError, TypeError, KeyError):
        return ej


def module_graph(model: nn.Module, x: torch.Tensor, layers: LayerSpec = None, *,
                 hooks: Mapping[str, Iterable[str]] | None = None, edits: EditsArg = None,
                 target: Any = None, input_grads: bool = False, param_grads: bool = False,
                 title: str = "") -> BackwardGraph:
    """The backward graph of ``model(x)`` with the recorder's (and any other) hooks on it.

    Args:
        model: any ``nn.Module``; its hooks, ``training`` and parameters' ``.grad`` are as
            they were afterwards (the backward runs on cleared gradients, then they are put
            back), also when it raises.
        x: the input batch.
        layers, hooks, edits, input_grads, param_grads: as :func:`hooklab.record`.
        target: what to backpropagate (:meth:`hooklab.Recorder.run`'s ``target``).
        title: a caption for the drawing.

    Returns:
        A :class:`BackwardGraph`; each hook has ``order`` (1 fires first) from the recorded
        events, hooks of other code keep ``order=None``.
    """
    params = list(model.parameters())
    saved = [p.grad for p in params]  # the caller's .grad comes back afterwards
    try:
        model.zero_grad(set_to_none=True)
        with record(model, layers, hooks=hooks, edits=edits, input_grads=input_grads,
                    param_grads=param_grads, keep_tensors=False) as rec:
            with GraphProbe(model) as probe:
                xx = x.detach().requires_grad_() if input_grads else x
                loss = scalar_loss(model(xx), target)
            fns, _ = walk(loss.grad_fn)
            probe.place_module_hooks(fns)
            pending = [*probe.pending, *_param_hooks(model)]
            graph = _build(loss.grad_fn, probe.owner, _leaf_names(model, {"input": xx}),
                           pending, title=title)
            loss.backward()
            events = rec.trace.events
    finally:
        for p, g in zip(params, saved, strict=True):
            p.grad = g
    return _number(graph, events)


def tensor_graph(root: torch.Tensor, tensors: Mapping[str, torch.Tensor],
                 title: str = "") -> BackwardGraph:
    """The backward graph of ``root`` with the hooks on the named ``tensors`` (not run).

    Each named tensor labels the node that made it (or its AccumulateGrad, for a leaf); its
    tensor and post-accumulate-grad hooks are drawn there. Example:
    ``tensor_graph(z, {"x": x, "y": y, "z": z})``.
    """
    pending: list[_Pending] = []
    names: dict[int, str] = {}
    for name, t in tensors.items():
        if not t.requires_grad:
            continue
        node = _edge_node(t)
        names[id(node)] = name if id(node) not in names else f"{names[id(node)]}, {name}"
        for fn in (t._backward_hooks or {}).values():
            pending.append(_Pending(node, "tensor", name, describe_hook(fn)[0], 0, "grad"))
        for fn in (getattr(t, "_post_accumulate_grad_hooks", None) or {}).values():
            pending.append(_Pending(node, "post_accumulate_grad", name, describe_hook(fn)[0], 0,
                                    "grad"))
    graph = _build(root.grad_fn, {}, {}, pending, names, title)
    return graph
