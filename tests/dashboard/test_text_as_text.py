"""A run's text is shown as text on every page that shows a run's fields (issue 16).

A run saved with author ``![y](http://…/pixel.png)`` and model name / notes / tags
``![x](http://…/pixel.png) [open results](http://…/phish)`` is opened on every page. Every
element whose text Streamlit renders as Markdown (markdown, captions, alerts, headings, toasts,
metric labels and values, widget, expander and tab labels, radio options) is read from the
AppTest and checked with :func:`markdown_risk`: the run's URL may appear only inside a code span
(a link, an image and a GFM autolink all need it outside one), and the literal text is shown.
Plotly figures built from the run carry no ``<a`` of its text. The browser check of the same
run (no request to the URL, the text visible, no link) is tests/e2e/test_text_browser.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from streamlit.testing.v1 import AppTest

import hooklab
from dashboard.components.text import code, plain
from hooklab.charts import runs as run_charts
from hooklab.charts.common import plain_text
from hooklab.models.zoo import SimpleCNN, seed_model
from hooklab.store.runs import TraceStore
from tests.dashboard.conftest import figures

VIEWS = Path(__file__).resolve().parents[2] / "dashboard" / "views"
TIMEOUT = 180
HOST = "127.0.0.1:9"  # nothing is fetched in AppTest; the browser test serves a real port
IMG = f"![y](http://{HOST}/pixel.png)"
PHISH = f"![x](http://{HOST}/pixel.png) [open results](http://{HOST}/phish)"
HOSTILE = [IMG, PHISH, f'<img src="http://{HOST}/raw.png"> <a href="http://{HOST}/a">a</a>',
           f"see http://{HOST}/bare www.example.org me@example.org",
           ":smile: :red[red] $x^2$ :material/search: **b** _i_ ~s~ snake_case_name",
           "# heading", "- item", "1. one", "> quote", "===", "a\\b `c` ``d``", "&lt;b&gt; &amp;",
           f"<http://{HOST}/auto>", f"[ref]: http://{HOST}/ref", "x | y", "`", "*a*",
           "two\nlines", "[open results][r]\n\n[r]: http://127.0.0.1:9/phish"]
_ESCAPABLE = set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
_TICKS = re.compile(r"`+")


# -- a small reader of Markdown source: code spans and backslash escapes (CommonMark) ----------

def _pieces(md: str) -> list[tuple[bool, str]]:
    """``md`` as ``(in_code, text)`` pieces in order, escapes resolved outside code spans."""
    out: list[tuple[bool, str]] = []
    i = 0
    while i < len(md):
        ch = md[i]
        if ch == "\\" and i + 1 < len(md) and md[i + 1] in _ESCAPABLE:
            out.append((False, md[i + 1]))
            i += 2
            continue
        if ch == "`":
            run = _TICKS.match(md, i).group(0)
            end = next((m for m in _TICKS.finditer(md, i + len(run)) if m.group(0) == run), None)
            if end is None:  # no closing run of the same length: literal backticks
                out.append((False, run))
                i += len(run)
                continue
            body = md[i + len(run):end.start()].replace("\n", " ")
            if len(body) > 2 and body.startswith(" ") and body.endswith(" ") and body.strip():
                body = body[1:-1]
            out.append((True, body))
            i = end.end()
            continue
        out.append((False, ch))
        i += 1
    return out


def markdown_risk(md: str, host: str = HOST) -> bool:
    """True when Markdown source ``md`` could render a link, an image or an autolink to
    ``host``: its URL text appears outside every code span."""
    return host in "".join(text for in_code, text in _pieces(md) if not in_code)


def shown_text(md: str) -> str:
    """The text a reader sees for Markdown ``md`` (code spans' content, escapes resolved,
    whitespace collapsed): enough to check that a field is shown literally."""
    return " ".join("".join(text for _, text in _pieces(md)).split())


def test_the_reader_finds_what_markdown_would_link():
    assert markdown_risk(IMG) and markdown_risk(PHISH)
    assert markdown_risk(f"\\[open results\\]\\(http://{HOST}/phish\\)")  # GFM autolink
    assert markdown_risk(f"`a` http://{HOST}/x `b`")
    assert not markdown_risk(f"`{PHISH}`") and not markdown_risk(f"``a ` {PHISH}``")
    assert shown_text("\\*a\\* `b` ``c ` d``") == "*a* b c ` d"


@pytest.mark.parametrize("s", HOSTILE)
def test_code_and_plain_show_the_text_and_no_link(s):
    for md in (code(s), plain(s), f"**Author:** {plain(s)} · {code(s)}"):
        assert not markdown_risk(md), md
    assert shown_text(code(s)) == " ".join(s.split())
    assert shown_text(plain(s)) == " ".join(s.split())
    assert "\n" not in code(s)


def test_plain_leaves_ordinary_text_alone():
    for s in ("conv2=scale(0.5)", "A: no edit · B: conv2=scale(0.5)", "no run 'abc-1' in /tmp/x",
              "CIFAR-10 test #5", "simple_cnn", "shape (1, 3, 32, 32) does not fit", "05:07",
              "作者 ana", ""):
        assert plain(s) == s
    assert code("conv2=scale(0.5)") == "`conv2=scale(0.5)`" and code("") == "" and code(None) == ""


def test_plotly_text_is_escaped():
    assert plain_text('<a href="http://x">t</a> & b') == '&lt;a href="http://x"&gt;t&lt;/a&gt; &amp; b'
    table = run_charts.runs_table(_listing())
    fig = run_charts.runs_timeline(table)
    blob = fig.to_json()
    assert "<a" not in blob and "&lt;a href" in blob  # notes in the hover, escaped
    assert plain_text(HOSTILE[2]) in [tr.name for tr in fig.data]  # the author's legend entry


def _listing():
    import pandas as pd

    return pd.DataFrame([
        {"run_id": "r1", "created": "2026-12-02T05:00:00+00:00", "author": HOSTILE[2],
         "page": "inspector", "model": PHISH, "tags": [IMG], "notes": HOSTILE[2], "n_events": 3},
        {"run_id": "r2", "created": "2026-12-02T05:01:00+00:00", "author": "ana",
         "page": "runs", "model": "simple_cnn", "tags": [], "notes": "", "n_events": 1}])


# -- the pages, opened on a hostile run -----------------------------------------------------------

def markdown_elements(at: AppTest) -> list[tuple[str, str]]:
    """``(what, source)`` of every element text Streamlit renders as Markdown."""
    out: list[tuple[str, str]] = []
    for kind in ("markdown", "caption", "info", "warning", "error", "success", "title", "header",
                 "subheader", "toast"):
        out += [(kind, str(el.value)) for el in getattr(at, kind)]
    for m in at.metric:
        out += [("metric label", m.label), ("metric value", str(m.value))]
    for kind in ("expander", "tabs", "button", "checkbox", "toggle", "selectbox", "multiselect",
                 "text_input", "text_area", "number_input", "slider", "select_slider", "radio"):
        out += [(f"{kind} label", str(el.label)) for el in getattr(at, kind)]
    for r in at.radio:
        out += [("radio option", str(o)) for o in r.options]
    return out


def _check_page(at: AppTest, must_show: tuple[str, ...] = ()) -> str:
    """No Markdown element can link the run's URL; each of ``must_show`` is shown literally in
    one of them. Returns the shown text of all of them."""
    assert not at.exception, at.exception[0].value if at.exception else ""
    elements = markdown_elements(at)
    risky = [(k, md) for k, md in elements if markdown_risk(md)]
    assert not risky, risky
    shown = "\n".join(shown_text(md) for _, md in elements)
    for s in must_show:
        assert " ".join(s.split()) in shown, (s, shown)
    for fig in figures(at):
        assert "<a" not in json.dumps(fig), "a link in a Plotly figure"
    return shown


@pytest.fixture
def hostile(store_dir):
    """Three runs: a recorded one and a watched training run by a hostile author, with hostile
    model name, notes and tags (and a scalar named like an image), plus a plain one."""
    torch.manual_seed(0)
    store = TraceStore(store_dir)
    model = SimpleCNN().eval()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with hooklab.record(model, meta={"model": PHISH, "author": IMG}) as rec:  # as a zip may
        rec.run(x)
    rid = store.save(rec.trace, author=IMG, notes=PHISH, tags=[IMG, PHISH])
    other = store.save(rec.trace, author="ana", notes="plain", tags=["ok"])
    small = seed_model()
    xs = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([1, 3])
    with hooklab.watch(small, store, every=1, segment_steps=1, author=IMG,
                       meta={"model": PHISH}) as w:
        for _ in range(3):
            small.zero_grad()
            loss = F.cross_entropy(small(xs), y)
            loss.backward()
            w.step(loss=loss.item(), **{IMG: 0.5})
    return store, rid, other, str(w.run_id)


def _open(view: str, **query) -> AppTest:
    at = AppTest.from_file(str(VIEWS / view), default_timeout=TIMEOUT)
    for k, v in query.items():
        at.query_params[k] = v
    return at.run()


@pytest.mark.parametrize("view", ["inspector.py", "compare.py", "hook_basics.py", "gradcam.py"])
def test_banner_shows_the_run_as_text(hostile, view):
    _, rid, _, _ = hostile
    at = _open(view, run=rid)
    _check_page(at, must_show=(IMG, PHISH))  # the banner: author and model, literally


def test_runs_list_and_detail_show_the_run_as_text(hostile):
    store, rid, _, _ = hostile
    at = _open("runs.py")
    _check_page(at)
    assert store.manifest(rid)["author"] == IMG  # the table holds it (cells are plain text)
    table = at.dataframe[0].value
    assert IMG in set(table["author"]) and PHISH in set(table["model"])
    at = _open("runs.py", run=rid)
    _check_page(at, must_show=(IMG, PHISH))
    assert at.text_area[0].value == PHISH  # notes, editable as they are


def test_training_header_shows_the_run_as_text(hostile):
    _, _, _, wid = hostile
    at = _open("training.py", run=wid)
    _check_page(at, must_show=(IMG, PHISH))
    assert any(shown_text(m.label) == IMG for m in at.metric)  # the scalar's name


@pytest.mark.parametrize("view", ["inspector.py", "runs.py", "training.py"])
def test_a_run_id_from_the_url_is_shown_as_text(hostile, view):
    at = _open(view, run=PHISH)
    assert at.error, "an unknown run id is one error"
    _check_page(at, must_show=(PHISH,))
