"""The router's settings: a viewer toolbar (no "Deploy") and Material page icons (no emoji)."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

from streamlit.string_util import is_material_icon
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "dashboard" / "app.py"
PAGES_PY = ROOT / "dashboard" / "pages.py"  # the one page table
MATERIAL = re.compile(r":material/([a-z0-9_]+):")


def _assigned(name: str):
    """The literal value assigned to ``name`` at the top level of dashboard/pages.py."""
    tree = ast.parse(PAGES_PY.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == name
                                                for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{name} is not assigned in {PAGES_PY}")


def _page_icon() -> str:
    tree = ast.parse(APP.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "set_page_config":
            return next(ast.literal_eval(k.value) for k in node.keywords if k.arg == "page_icon")
    raise AssertionError("no st.set_page_config call")


def test_toolbar_is_viewer_mode():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text(encoding="utf-8"))
    assert config["client"]["toolbarMode"] == "viewer"


def test_page_icons_are_material_icons():
    pages = _assigned("PAGES")
    assert [p[0] for p in pages] == ["hook_basics.py", "inspector.py", "compare.py",
                                     "gradcam.py", "runs.py", "training.py"]
    for icon in [p[3] for p in pages] + [_page_icon()]:
        m = MATERIAL.fullmatch(icon)
        assert m, f"{icon!r} is not a :material/name: icon"
        assert is_material_icon(m.group(1)), f"{icon!r} is not in Streamlit's icon font"


def test_router_runs_with_these_icons(tmp_path, monkeypatch):
    monkeypatch.setenv("HOOKLAB_STORE", str(tmp_path / "runs"))
    at = AppTest.from_file(str(APP), default_timeout=120).run()
    assert not at.exception, at.exception[0].value if at.exception else ""
    assert not at.error, [e.value for e in at.error]
    assert at.title[0].value == "Hook basics"  # the first page of the table is the default
