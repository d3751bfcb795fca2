"""The library is layered: each subpackage imports only from the layers above it, no cycles."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "hooklab"
#: The layers, top to bottom: a module may import from its own layer and the ones before it.
ORDER = ("core", "recording", "store", "data", "models", "cam", "studies", "charts", "cli",
         "testing")


def _imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.append((node.lineno, node.module))
            if node.module == "hooklab":
                out += [(node.lineno, f"hooklab.{a.name}") for a in node.names]
    return out


def _modules() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py") if len(p.relative_to(PKG).parts) > 1)


def test_every_subpackage_is_a_known_layer() -> None:
    subpackages = {p.relative_to(PKG).parts[0] for p in _modules()}
    assert subpackages == set(ORDER), "a subpackage outside the layer table (or one missing)"
    flat = sorted(p.name for p in PKG.glob("*.py"))
    assert flat == ["__init__.py", "__main__.py"], f"modules left at the top level: {flat}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PKG)))
def test_imports_point_only_up_the_layers(path: Path) -> None:
    layer = path.relative_to(PKG).parts[0]
    upward = []
    for line, name in _imports(path):
        parts = name.split(".")
        if parts[0] == "hooklab" and len(parts) > 1 and parts[1] in ORDER \
                and ORDER.index(parts[1]) > ORDER.index(layer):
            upward.append(f"line {line}: {name}")
        if parts[0] == "hooklab" and len(parts) > 1 and parts[1] not in ORDER \
                and parts[1] not in ("__version__",):
            upward.append(f"line {line}: {name} (not in a layer)")
    assert not upward, f"{layer} may import only from {ORDER[:ORDER.index(layer) + 1]}: {upward}"


def test_the_library_never_imports_streamlit_or_the_dashboard() -> None:
    found = [f"{p.relative_to(PKG)}:{line} {name}" for p in PKG.rglob("*.py")
             for line, name in _imports(p) if name.split(".")[0] in ("streamlit", "dashboard")]
    assert not found


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def test_no_import_cycle() -> None:
    """Every import counts, top level or inside a function (as ../shared/tools/import_cycles.py)."""
    paths = {_module_name(p): p for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for mod, path in paths.items():
        deps = set()
        for _, name in _imports(path):
            while name and name not in paths:
                name = name.rpartition(".")[0]
            is_pkg = path.name == "__init__.py"
            if name and name != mod and not (is_pkg and name.startswith(mod + ".")) \
                    and not (paths[name].name == "__init__.py" and mod.startswith(name + ".")):
                deps.add(name)
        graph[mod] = deps
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for mod in sorted(graph):
        if mod not in state:
            visit(mod, [])
    assert not cycles, " ; ".join(" -> ".join(c) for c in cycles)
