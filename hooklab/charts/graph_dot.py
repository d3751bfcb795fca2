"""A backward graph with its hooks as Graphviz DOT text (``st.graphviz_chart`` draws it in the
browser; no system Graphviz needed).

Autograd nodes are boxes (grouped in one rounded cluster per module call), leaves
(``AccumulateGrad``) are ellipses named by their variable, PyTorch's
``BackwardHookFunctionBackward`` wrappers are dashed. Each hook is a note beside the node PyTorch
calls it from, coloured by kind, numbered in firing order (①, ②, …) and red with the edit
when it edits the gradient. Graphs over ``max_nodes`` nodes are collapsed by module first.

Example:
    >>> dot = graph_dot(module_graph(model, x, ["conv1", "conv2"],
    ...                              edits={"conv2": "scale(0.5)"}))
    >>> st.graphviz_chart(dot)
"""

from __future__ import annotations

from collections.abc import Mapping

from hooklab.charts.common import KIND_COLORS
from hooklab.recording.graph import BackwardGraph, GraphNode, HookMark

__all__ = ["EDIT_COLOR", "KIND_LABELS", "MAX_NODES", "circled", "graph_dot", "hook_label"]

#: Graphs with more nodes are collapsed by module before drawing.
MAX_NODES = 60
#: Colour of an edited hook and of an activation edit.
EDIT_COLOR = "#c0392b"
#: Short name of each hook kind in the drawing.
KIND_LABELS: dict[str, str] = {
    "tensor": "tensor hook",
    "full_backward": "full backward hook",
    "full_backward_pre": "full backward pre-hook",
    "backward": "register_backward_hook (deprecated)",
    "post_accumulate_grad": "post-accumulate-grad hook",
}


def circled(n: int) -> str:
    """``①`` … ``⑳`` for 1-20, else ``(n)``."""
    return chr(0x2460 + n - 1) if 1 <= n <= 20 else f"({n})"


def _q(text: str) -> str:
    """A DOT double-quoted string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _node_label(n: GraphNode) -> str:
    if n.name == "module":
        call = f" (call {n.call})" if n.call else ""
        return f"{n.module}{call}\n{n.count} node{'s' if n.count != 1 else ''}"
    if n.is_leaf:
        return f"{n.variable or 'leaf'}\nAccumulateGrad"
    return f"{n.variable} = {n.name}" if n.variable else n.name


def hook_label(h: HookMark, labels: Mapping[str, str] | None = None,
               words: tuple[str, str] = ("on", "edit")) -> str:
    """The text of one hook's note: number, kind, where it was registered, its edit.

    ``labels`` overrides :data:`KIND_LABELS` (another language), ``words`` the words "on" and
    "edit".
    """
    names = {**KIND_LABELS, **(labels or {})}
    head = f"{circled(h.order)} " if h.order is not None else ""
    where = h.layer + (f".{h.index}" if h.role == "param_grad" and h.index else "")
    who = "hooklab" if h.owner == "hooklab" else h.function.rsplit(".", 1)[-1]
    text = f"{head}{names.get(h.kind, h.kind)}\n{words[0]} {where} · {who}"
    if h.edit:
        text += f"\n{words[1]}: {h.edit}"
    return text


def _node_attrs(n: GraphNode) -> str:
    if n.name == "module":
        return 'shape=box3d, style="filled", fillcolor="#eaf2f8"'
    if n.is_leaf:
        return 'shape=ellipse, style="filled", fillcolor="#e9f7ef"'
    if n.is_hook_wrapper:
        return 'shape=box, style="dashed,rounded", color="#c0392b"'
    return 'shape=box, style="rounded,filled", fillcolor="#fbfcfc"'


def graph_dot(graph: BackwardGraph, *, max_nodes: int = MAX_NODES, title: str | None = None,
              clusters: bool = True, labels: Mapping[str, str] | None = None,
              words: tuple[str, str] = ("on", "edit")) -> str:
    """DOT text of ``graph`` (collapsed by module when it has more than ``max_nodes`` nodes).

    Args:
        graph: from :func:`hooklab.recording.graph.module_graph` or ``tensor_graph``.
        max_nodes: collapse above this many nodes (``0``: never).
        title: the caption (default ``graph.title``).
        clusters: draw one rounded box around each module call's nodes.
        labels, words: the hook notes' kind names and words, for another language
            (:func:`hook_label`).
    """
    if max_nodes and len(graph.nodes) > max_nodes:
        graph = graph.collapsed()
    caption = graph.title if title is None else title
    lines = ["digraph backward {",
             '  graph [rankdir=TB, fontname="Helvetica", fontsize=11, nodesep=0.25, '
             f"ranksep=0.3, labelloc=t, label={_q(caption)}];",
             '  node [fontname="Helvetica", fontsize=10, margin="0.08,0.03"];',
             '  edge [color="#566573", arrowsize=0.6];']
    groups: dict[tuple[str, int], list[GraphNode]] = {}
    for n in graph.nodes:
        owner = n.variable.rsplit(".", 1)[0] if n.is_leaf and "." in n.variable else n.module
        key = (owner, n.call) if clusters and owner and n.name != "module" else ("", -1)
        groups.setdefault(key, []).append(n)
    for i, ((module, call), nodes) in enumerate(groups.items()):
        body = [f"  {n.id} [label={_q(_node_label(n))}, {_node_attrs(n)}];" for n in nodes]
        if module:
            label = module + (f" · call {call}" if call else "")
            lines += [f"  subgraph cluster_{i} {{", f"    label={_q(label)};",
                      '    style="rounded"; color="#aab7b8"; fontcolor="#566573";',
                      *("  " + b for b in body), "  }"]
        else:
            lines += body
    for e in graph.edges:
        lines.append(f"  {e.src} -> {e.dst};")
    for node_id, edit in graph.activation_edits.items():
        lines.append(f"  {node_id} [color={_q(EDIT_COLOR)}, penwidth=2, "
                     f"xlabel={_q('activation edit: ' + edit)}];")
    for j, h in enumerate(graph.hooks):
        color = EDIT_COLOR if h.edit else KIND_COLORS.get(h.kind, "#7f8c8d")
        fill = "#fdedec" if h.edit else "#fef9e7"
        lines.append(f"  h{j} [label={_q(hook_label(h, labels, words))}, shape=note, style=filled, "
                     f"fillcolor={_q(fill)}, color={_q(color)}, fontcolor={_q(color)}, "
                     "fontsize=9];")
        lines.append(f"  h{j} -> {h.node} [style=dashed, color={_q(color)}, arrowhead=dot];")
    lines.append("}")
    return "\n".join(lines) + "\n"
