"""Every view follows the one convention (dashboard/__init__.py): it defines ``main()``, runs it
only as ``__main__``, imports no other view, registers no hook, and keeps no scaffolding."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from dashboard import pages

VIEWS = Path(__file__).resolve().parents[2] / "dashboard" / "views"
FILES = sorted(VIEWS.glob("*.py"))


def test_the_page_table_names_every_view_once():
    assert sorted(p.file for p in pages.TABLE.values()) == sorted(f.name for f in FILES)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_view_convention(path):
    src = path.read_text(encoding="utf-8")
    tree = ast.parse(src)
    assert any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body), path
    last = tree.body[-1]
    assert isinstance(last, ast.If) and ast.unparse(last.test) == "__name__ == '__main__'"
    assert ast.unparse(last.body[0]) == "main()"
    # nothing else runs at import: only imports, definitions, constants and docstrings
    for node in tree.body[:-1]:
        assert isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef,
                                 ast.Assign, ast.AnnAssign, ast.Expr)), ast.unparse(node)[:80]
        if isinstance(node, ast.Expr):
            assert isinstance(node.value, ast.Constant), ast.unparse(node)[:80]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert not (node.module or "").startswith("dashboard.views"), path
            if node.module == "dashboard":
                assert "views" not in {a.name for a in node.names}, path
    for word in (".register_forward_hook(", ".register_hook(", ".register_full_backward_hook(",
                 "trained_available", "until hooklab", "hooklab.record("):
        assert word not in src, (path.name, word)
