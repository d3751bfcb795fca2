"""Every examples/*.ipynb runs in a real Jupyter kernel (nbclient) without an error, and the
quickstart prints what the library computes here, in the test process.

The kernel is this interpreter (``sys.executable``): a kernelspec named ``python3`` is written to
a temporary ``JUPYTER_PATH`` entry, which Jupyter searches before the user's and the system's
kernels, so the test works in a fresh CI venv and never picks another Python.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest
import torch
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

import hooklab
from hooklab.cam import engine
from hooklab.core import edits
from hooklab.data.datasets import shapes_sample
from hooklab.models.zoo import get_model, seed_model
from hooklab.store.stream import open_watch
from hooklab.studies import lessons

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))
#: Seconds one cell may take (the whole quickstart takes well under a minute on 2 cores).
CELL_TIMEOUT = 600
PLOTLY = "application/vnd.plotly.v1+json"


def _kernel_env(mp: pytest.MonkeyPatch, tmp: Path) -> None:
    """Point Jupyter at a ``python3`` kernelspec that runs this interpreter; keep every file
    Jupyter and IPython write (connection files, profile) under ``tmp``."""
    spec = tmp / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (hooklab tests)", "language": "python"}))
    mp.setenv("JUPYTER_PATH", str(tmp / "jupyter"))
    mp.setenv("JUPYTER_RUNTIME_DIR", str(tmp / "runtime"))
    mp.setenv("JUPYTER_PLATFORM_DIRS", "1")
    mp.setenv("IPYTHONDIR", str(tmp / "ipython"))
    (tmp / "tmp").mkdir()
    mp.setenv("TMPDIR", str(tmp / "tmp"))  # the notebook's temporary store lands here


def execute(path: Path, tmp: Path) -> tuple[nbformat.NotebookNode, float]:
    """Run notebook ``path`` in a fresh kernel with ``tmp/work`` as working directory.

    Raises ``nbclient.exceptions.CellExecutionError`` on the first cell that raises.
    """
    nb = nbformat.read(path, as_version=4)
    work = tmp / "work"
    work.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        _kernel_env(mp, tmp)
        client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                                resources={"metadata": {"path": str(work)}})
        start = time.perf_counter()
        client.execute()
        return nb, time.perf_counter() - start


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory) -> nbformat.NotebookNode:
    nb, seconds = execute(EXAMPLES / "quickstart.ipynb", tmp_path_factory.mktemp("quickstart"))
    print(f"quickstart.ipynb executed in {seconds:.1f} s")
    return nb


def _tagged(nb: nbformat.NotebookNode, tag: str) -> Any:
    cells = [c for c in nb.cells if tag in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"expected one cell tagged {tag!r}, found {len(cells)}"
    return cells[0]


def _stdout(cell: Any) -> list[str]:
    text = "".join(o["text"] for o in cell.outputs
                   if o["output_type"] == "stream" and o["name"] == "stdout")
    return text.splitlines()


def _result(cell: Any, mime: str) -> str:
    """The ``mime`` part of the cell's result (the value of its last expression)."""
    found = [o["data"][mime] for o in cell.outputs
             if o["output_type"] in ("execute_result", "display_data") and mime in o["data"]]
    assert found, f"no {mime} output in cell {cell.get('id')}: {cell.outputs}"
    return found[-1]


def _line(lines: list[str], prefix: str) -> str:
    hits = [ln[len(prefix):] for ln in lines if ln.startswith(prefix)]
    assert len(hits) == 1, f"expected one line starting {prefix!r} in {lines}"
    return hits[0]


def _events_cell(html: str) -> int:
    return int(re.search(r">events</th><td[^>]*>(\d+)</td>", html).group(1))


# -- every notebook ---------------------------------------------------------------------------
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_without_error(path, tmp_path, request):
    nb = (request.getfixturevalue("quickstart") if path.name == "quickstart.ipynb"
          else execute(path, tmp_path)[0])
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o["output_type"] == "error"]
    assert not errors
    assert all(c.execution_count for c in nb.cells if c.cell_type == "code")


def test_a_failing_cell_fails_the_run(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1"),
                                         nbformat.v4.new_code_cell("1 / x / 0")])
    path = tmp_path / "bad.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(CellExecutionError, match="ZeroDivisionError"):
        execute(path, tmp_path)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebooks_have_no_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


def test_quickstart_is_what_its_generator_writes():
    sys.path.insert(0, str(EXAMPLES))
    try:
        import make_quickstart
    finally:
        sys.path.remove(str(EXAMPLES))
    assert (EXAMPLES / "quickstart.ipynb").read_text(encoding="utf-8") == make_quickstart.text(), \
        "run python examples/make_quickstart.py"


# -- the quickstart, executed once --------------------------------------------------------------
def test_quickstart_ran_every_cell(quickstart):
    code = [c for c in quickstart.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code)
    assert not [o for c in code for o in c.outputs if o["output_type"] == "error"]
    # every cell that ends in a figure shows a Plotly figure
    figure_cells = [c for c in code
                    if re.search(r"(\.plot\(|_panels\(|_bars\()", c.source.splitlines()[-1])]
    assert len(figure_cells) >= 6
    for c in figure_cells:
        fig = _result(c, PLOTLY)
        assert fig["data"], c.source


def test_forward_hook_cells(quickstart):
    lesson = lessons.forward_hook_lesson()
    assert _stdout(_tagged(quickstart, "check-forward")) == [*lesson.lines, "hook calls: 1"]
    cell = _tagged(quickstart, "check-forward-trace")
    assert _stdout(cell) == ["recorded conv output == the lesson's: True"]
    model = seed_model(42).eval()
    with hooklab.record(model, layers="conv") as rec:
        model(lesson.input)
    html = _result(cell, "text/html")
    assert "hooklab Trace" in html and _events_cell(html) == len(rec.trace.events) > 0


def test_backward_hook_cells(quickstart):
    lesson = lessons.backward_hook_lesson()
    got = _stdout(_tagged(quickstart, "check-backward"))
    assert got == [f"{k:18s} grad_input: {len(r.grad_input)}  grad_output: {len(r.grad_output)}"
                   for k, r in lesson.kinds.items()]
    assert got[0] == "backward           grad_input: 3  grad_output: 1"  # the seed's print
    demo = lesson.multi_op[0]
    line = _line(_stdout(_tagged(quickstart, "check-multi-op")), "deprecated: ")
    assert line == (f"{demo.deprecated.tolist()}  full: {demo.full.tolist()}  "
                    f"autograd: {demo.reference.tolist()}")
    assert demo.full.tolist() == demo.reference.tolist() != demo.deprecated.tolist()


def test_tensor_hook_cell_halves(quickstart):
    lesson = lessons.tensor_hook_lesson(k=0.5)
    out = _stdout(_tagged(quickstart, "check-tensor"))
    assert out[:len(lesson.lines)] == lesson.lines  # "gradient seen: tensor([48.])", "x.grad: ..."
    assert lesson.chain_rule in out
    assert _line(out, "halving ratio: ") == "0.5"
    assert lesson.x_grad == 96.0 and lesson.x_grad_without_hook == 192.0


def test_edit_cell_halves_upstream(quickstart):
    cell = _tagged(quickstart, "check-edit")
    out = _stdout(cell)
    model = seed_model(42).eval()
    x = lessons.forward_hook_lesson().input
    with hooklab.record(model, param_grads=True) as plain:
        plain.run(x)
    with hooklab.record(model, edits={"conv": edits.scale(0.5)}, param_grads=True) as halved:
        halved.run(x)
    before = halved.trace.find(layer="conv", role="grad_output")
    after = halved.trace.find(layer="conv", role="edited")
    torch.testing.assert_close(after, 0.5 * before)
    w_plain = plain.trace.find(layer="conv", role="param_grad", index="weight")
    w_half = halved.trace.find(layer="conv", role="param_grad", index="weight")
    ratio = (w_half.norm() / w_plain.norm()).item()
    assert float(_line(out, "edited / before at conv: ")) == pytest.approx(0.5, abs=1e-4)
    assert float(_line(out, "conv.weight.grad, edited / plain: ")) == pytest.approx(ratio,
                                                                                    abs=1e-4)
    assert ratio == pytest.approx(0.5, abs=1e-4)
    html = _result(cell, "text/html")
    assert "conv=scale(0.5)" in html and _events_cell(html) == len(halved.trace.events)


def test_gradcam_cell(quickstart):
    cnn = get_model("simple_cnn", weights="shapes")
    names = cnn.hooklab_info.class_names
    image, label, mask = shapes_sample(7, split="test")
    res = engine.compute(cnn, image, "gradcam", layer="conv3")
    share = (res.maps[0] * mask).sum().item() / res.maps[0].sum().item()
    cell = _tagged(quickstart, "check-cam")
    out = _stdout(cell)
    assert _line(out, "label: ") == f"{names[label]}  predicted: {names[int(res.targets[0])]}"
    assert float(_line(out, "CAM share on the object: ")) == pytest.approx(share, abs=2e-3)
    fig = _result(cell, PLOTLY)
    assert [d["type"] for d in fig["data"]] == ["image", "heatmap", "image"]


def _opened(cell: Any, store: hooklab.TraceStore | None = None
            ) -> tuple[hooklab.TraceStore, Any]:
    """The store (unless given) and the run a watch cell printed, opened here in the test
    process."""
    out = _stdout(cell)
    store = store or hooklab.TraceStore(_line(out, "store: "))
    return store, open_watch(store, _line(out, "run: "))


def test_watch_cells_show_the_stored_run(quickstart):
    cell = _tagged(quickstart, "check-watch")
    store, run = _opened(cell)
    assert run.status == "finished" and run.steps == list(range(12))
    assert set(run.scalars["name"]) >= {"loss", "acc"}
    assert _result(cell, "text/html") == run._repr_html_()  # the summary, as stored
    figs = [c for c in quickstart.cells if c.cell_type == "code"
            and c.source.startswith(("run.plot()", 'run.plot("scalars")'))]
    assert len(figs) == 2
    assert _result(figs[0], PLOTLY)["layout"]["title"]["text"] == run.plot().layout.title.text
    assert [d["name"] for d in _result(figs[1], PLOTLY)["data"]] == [
        d.name for d in run.plot("scalars").data]


def test_watch_ratio_cell_halves_upstream_at_step_0(quickstart):
    store, plain = _opened(_tagged(quickstart, "check-watch"))
    cell = _tagged(quickstart, "check-watch-ratio")
    _, halved = _opened(cell, store)
    assert halved.meta["edits"] and "conv2=scale(0.5)" in halved.summary()["edits"]
    out = _stdout(cell)

    def norm(events, layer):
        rows = events[(events.layer == layer) & (events.role == "grad_output")
                      & (events.step == 0)]
        return float(rows.norm.iloc[0])

    for layer in ("conv1", "conv2", "conv3"):
        ratio = norm(halved.events, layer) / norm(plain.events, layer)
        printed = float(_line(out, f"step 0, {layer} output-gradient norm, halved / plain: "))
        assert printed == pytest.approx(ratio, abs=1e-4)
    # upstream of the edit: exactly half; conv2's own (before the edit) and conv3: unchanged
    assert norm(halved.events, "conv1") / norm(plain.events, "conv1") == pytest.approx(0.5,
                                                                                      rel=1e-5)
    assert norm(halved.events, "conv3") == pytest.approx(norm(plain.events, "conv3"), rel=1e-6)
    fig = _result(cell, PLOTLY)
    assert fig["layout"]["title"]["text"] == halved.plot("ratio",
                                                         baseline=plain).layout.title.text
