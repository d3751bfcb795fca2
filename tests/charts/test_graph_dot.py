"""charts.graph_dot: DOT text of a backward graph — every node and edge of the graph, one
numbered note per hook on its node, edits in red, large graphs collapsed by module."""

from __future__ import annotations

import re

import pytest

from hooklab.charts.graph_dot import EDIT_COLOR, circled, graph_dot
from hooklab.studies.graphs import EXAMPLES, example_graph


def parse(dot: str) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Node ids -> label, and edges, of our DOT output (one statement per line)."""
    assert dot.startswith("digraph backward {") and dot.rstrip().endswith("}")
    assert dot.count("{") == dot.count("}")
    nodes = dict(re.findall(r'^\s*(\w+) \[label="((?:[^"\\]|\\.)*)"', dot, flags=re.M))
    edges = re.findall(r"^\s*(\w+) -> (\w+)", dot, flags=re.M)
    statements = [ln.strip() for ln in dot.splitlines() if "[label=" in ln or " -> " in ln]
    assert all(re.match(r"^[A-Za-z_]\w* (\[|->)", ln) for ln in statements), "bad DOT id"
    return nodes, edges


@pytest.fixture(scope="module")
def cnn():
    return example_graph("simple_cnn", edits="conv2=scale(0.5)")


def test_every_node_edge_and_hook_is_drawn(cnn):
    nodes, edges = parse(graph_dot(cnn, max_nodes=0))
    graph_ids = {n.id for n in cnn.nodes}
    hook_ids = {f"h{i}" for i in range(len(cnn.hooks))}
    assert set(nodes) == graph_ids | hook_ids
    assert {(e.src, e.dst) for e in cnn.edges} | {(f"h{i}", h.node) for i, h in
                                                   enumerate(cnn.hooks)} == set(edges)
    for i, h in enumerate(cnn.hooks):
        assert nodes[f"h{i}"].startswith(circled(h.order))
    assert all(a in nodes and b in nodes for a, b in edges)


def test_edit_is_red_and_labelled(cnn):
    dot = graph_dot(cnn, max_nodes=0)
    (i,) = [i for i, h in enumerate(cnn.hooks) if h.edit]
    line = next(ln for ln in dot.splitlines() if ln.strip().startswith(f"h{i} [label"))
    assert "edit: scale(0.5)" in line and EDIT_COLOR in line
    others = [ln for ln in dot.splitlines() if re.match(r"\s*h\d+ \[label", ln) and
              not ln.strip().startswith(f"h{i} ")]
    assert others and not any("edit:" in ln for ln in others)


def test_module_clusters_hold_their_nodes(cnn):
    dot = graph_dot(cnn, max_nodes=0)
    block = dot[dot.index('label="conv2";'):]
    block = block[:block.index("  }")]
    conv2 = {n.id for n in cnn.nodes if n.module == "conv2" or n.variable.startswith("conv2.")}
    assert conv2 and all(f"{nid} [label" in block for nid in conv2)


def test_large_graph_is_collapsed_by_module(cnn):
    full_nodes, _ = parse(graph_dot(cnn, max_nodes=0))
    small_nodes, small_edges = parse(graph_dot(cnn, max_nodes=10))
    assert len(small_nodes) < len(full_nodes)
    assert any(lbl.startswith("conv2\\n") for lbl in small_nodes.values())
    assert all(a in small_nodes and b in small_nodes for a, b in small_edges)
    assert sum(1 for k in small_nodes if k.startswith("h")) == len(cnn.hooks)


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_every_seed_example_renders(name):
    g = example_graph(name)
    nodes, edges = parse(graph_dot(g))
    assert len(nodes) >= len(g.hooks) + 2 and edges
    assert g.hooks, "each example carries at least one hook"


def test_quotes_and_newlines_are_escaped():
    g = example_graph("tensor")
    g.title = 'a "quoted"\ntitle'
    dot = graph_dot(g)
    assert 'label="a \\"quoted\\"\\ntitle"' in dot
