"""Every page, given each bad input of the issue-5 corpus, shows exactly one ``st.error`` (never
an exception) and keeps working for the next action; the server binds 127.0.0.1 and refuses
uploads over the configured limit.

The corpus items come from tests/test_bad_input_corpus.py. Each page runs in one AppTest that
goes bad input -> one error -> a good action -> no error -> next bad input, so a page that
breaks after an error (stale state, a lock left held, a hook left on the shared model) fails.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import pickle
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from streamlit.testing.v1 import AppTest

import hooklab
from hooklab.models.zoo import SimpleCNN
from hooklab.store.runs import TraceStore
from tests.data.test_bad_input_corpus import BAD_IMAGES, _RunsCode

ROOT = Path(__file__).resolve().parents[2]
VIEWS = ROOT / "dashboard" / "views"
TIMEOUT = 180
BAD_IDS = ["../x", "../../etc/passwd", "/etc/passwd", "a\x00b"]


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("HOOKLAB_STORE", str(tmp_path / "runs"))
    from dashboard import state

    state.store.clear()
    s = TraceStore(tmp_path / "runs")
    model = SimpleCNN().eval()
    with hooklab.record(model, ["conv3"], meta={"model": "simple_cnn", "page": "inspector"}) as rec:
        rec.run(torch.randn(1, 3, 32, 32))
    rid = s.save(rec.trace, notes="stored before the bad inputs")
    before = {p.name: p.read_bytes() for p in (s.root / rid).iterdir()}
    yield s
    # nothing stored was harmed, nothing half-written is visible
    assert {p.name: p.read_bytes() for p in (s.root / rid).iterdir()} == before
    assert (s.list()["status"] == "ok").all()
    assert not [p for p in s.root.iterdir() if p.name.startswith(".tmp")]
    state.store.clear()


def _app(page: str, **query) -> AppTest:
    at = AppTest.from_file(str(VIEWS / f"{page}.py"), default_timeout=TIMEOUT)
    for k, v in query.items():
        at.query_params[k] = v
    return at.run()


def _errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def _one_error(at: AppTest, what: str) -> str:
    assert not at.exception, (what, [e.value for e in at.exception])
    errs = _errors(at)
    assert len(errs) == 1, (what, errs)
    assert "Traceback" not in errs[0]
    return errs[0]


def _fine(at: AppTest, what: str) -> None:
    assert not at.exception, (what, [e.value for e in at.exception])
    assert not at.error, (what, _errors(at))


def _png(colour=(200, 120, 40)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((36, 40, 3), colour, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


# -- image uploads: Inspector, Compare, Grad-CAM -------------------------------------------------
def _submit(at: AppTest, page: str) -> AppTest:
    """The page's main action after changing an input."""
    if page == "gradcam":
        return at.button[0].click().run()  # the form's submit button
    return at.button(key=f"{page}_run").click().run()


def _upload_image(at: AppTest, page: str, name: str, data: bytes) -> AppTest:
    """Choose "upload" as the input, give the file, and run the page's main action (Grad-CAM's
    controls live in a form: they apply together when it is submitted)."""
    at.radio(key=f"{page}_source").set_value("upload")
    if page == "gradcam":
        at.file_uploader(key=f"{page}_image").set_value((name, data, "image/png"))
        return _submit(at, page)
    at.run()
    at.file_uploader(key=f"{page}_image").set_value((name, data, "image/png")).run()
    return at if at.error else _submit(at, page)


@pytest.mark.parametrize("page", ["inspector", "compare", "gradcam"])
def test_every_bad_image_is_one_error_and_the_page_goes_on(store, tmp_path, page):
    at = _app(page)
    _fine(at, "first view")
    for i, (name, (fname, make, _)) in enumerate(BAD_IMAGES.items()):
        _upload_image(at, page, fname, make())
        msg = _one_error(at, name)
        assert "image" in msg.lower() or "empty" in msg.lower(), (name, msg)
        # the next action works: a good image, run
        _upload_image(at, page, f"ok{i}.png", _png((40 * i, 100, 200)))
        _fine(at, f"good image after {name}")
        assert at.get("plotly_chart") or at.dataframe, page


# -- weight uploads ------------------------------------------------------------------------------
def _checkpoints(tmp_path: Path) -> dict[str, tuple[bytes, Path | None]]:
    sd = SimpleCNN().state_dict()
    out: dict[str, tuple[bytes, Path | None]] = {}
    marker = tmp_path / "pwned-torch"
    evil = dict(sd, **{"conv1.weight": _RunsCode(marker)})
    buf = io.BytesIO()
    torch.save(evil, buf)
    out["code-running torch.save"] = (buf.getvalue(), marker)
    marker2 = tmp_path / "pwned-pickle"
    out["code-running pickle"] = (pickle.dumps(dict(sd, x=_RunsCode(marker2)), protocol=2),
                                  marker2)
    wrong_keys = {("classifier." + k.split(".", 1)[1]) if k.startswith("fc2.") else k: v
                  for k, v in sd.items()}
    buf = io.BytesIO()
    torch.save(wrong_keys, buf)
    out["wrong keys"] = (buf.getvalue(), None)
    path = tmp_path / "shapes.safetensors"
    save_file(dict(sd, **{"conv1.weight": torch.zeros(16, 3, 3, 3)}), str(path))
    out["wrong shapes"] = (path.read_bytes(), None)
    out["empty file"] = (b"", None)
    out["not a checkpoint"] = (b"just some text that is not a checkpoint", None)
    return out


@pytest.mark.parametrize("page", ["inspector", "compare", "gradcam"])
def test_every_bad_checkpoint_is_one_error_and_the_page_goes_on(store, tmp_path, page):
    at = _app(page)
    _fine(at, "first view")
    for name, (blob, marker) in _checkpoints(tmp_path).items():
        at.radio(key=f"{page}_weights").set_value("upload").run()
        at.file_uploader(key=f"{page}_wfile").set_value(
            ("weights.pth", blob, "application/octet-stream")).run()
        if not at.error:
            _submit(at, page)
        _one_error(at, name)
        if marker is not None:
            assert not marker.exists(), f"{name}: the checkpoint's code ran"
        at.radio(key=f"{page}_weights").set_value("random").run()
        _submit(at, page)
        _fine(at, f"random weights after {name}")


# -- run ids in share links ----------------------------------------------------------------------
@pytest.mark.parametrize("page", ["hook_basics", "inspector", "compare", "gradcam", "runs"])
def test_every_unsafe_run_id_is_one_error_and_the_page_goes_on(store, page):
    for bad in BAD_IDS:
        at = _app(page, run=bad)
        msg = _one_error(at, repr(bad))
        assert "run" in msg.lower(), msg
        at.query_params.clear()
        at.run()
        _fine(at, f"after {bad!r}")


# -- run zips on the Runs page -------------------------------------------------------------------
def _zip(items: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for n, d in items:
            zf.writestr(zipfile.ZipInfo(n), d)
    return buf.getvalue()


def test_every_bad_run_zip_is_one_error_and_a_good_one_imports(store, tmp_path):
    rid = store.run_ids()[0]
    with zipfile.ZipFile(store.export(rid, tmp_path / "good.zip")) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    m = json.loads(members["manifest.json"])
    m["files"]["tensors.safetensors"]["sha256"] = "0" * 64
    tampered = [(n, json.dumps(m).encode() if n == "manifest.json" else d)
                for n, d in members.items()]
    bad = {
        "zip slip": _zip(list(members.items()) + [("../evil.txt", b"pwned")]),
        "absolute member": _zip(list(members.items()) + [("/tmp/hooklab-dash-evil", b"x")]),
        "tampered manifest": _zip(tampered),
        "not a zip": b"hello",
        "empty": b"",
    }
    at = _app("runs")
    _fine(at, "first view")
    n_runs = len(store.list())
    for name, blob in bad.items():
        at.file_uploader(key="runs_import_file").set_value((f"{name}.zip", blob,
                                                            "application/zip")).run()
        at.button(key="runs_import_btn").click().run()
        _one_error(at, name)
        assert len(store.list()) == n_runs
        assert not (tmp_path / "evil.txt").exists() and not os.path.exists("/tmp/hooklab-dash-evil")
        at.query_params["run"] = rid  # the next action: open a run (its share link)
        at.run()
        _fine(at, f"open a run after {name}")
        shown = [str(getattr(el, "value", "")) for kind in ("markdown", "caption", "subheader",
                                                              "code", "info", "title", "header")
                 for el in at.get(kind)]
        assert any(rid in v for v in shown), "the run is shown"
        at.query_params.clear()
        at.run()
    at.file_uploader(key="runs_import_file").set_value(("good.zip", (tmp_path / "good.zip")
                                                        .read_bytes(), "application/zip")).run()
    at.button(key="runs_import_btn").click().run()
    _fine(at, "good import")
    assert len(store.list()) == n_runs + 1


# -- server settings -----------------------------------------------------------------------------
def test_config_binds_localhost_and_limits_uploads():
    cfg = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    server = cfg["server"]
    assert server["address"] == "127.0.0.1"
    # fits the largest weights file (tests/dashboard/test_served_config.py), not unbounded
    assert isinstance(server["maxUploadSize"], int) and 1 <= server["maxUploadSize"] <= 1024
    assert server["fileWatcherType"] == "none"
    # what Streamlit itself reads from that file when started from the project root
    code = ("from streamlit import config; config.get_config_options(force_reparse=True); "
            "print(config.get_option('server.address'), config.get_option('server.maxUploadSize'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, env={k: v for k, v in os.environ.items()
                                           if not k.startswith("STREAMLIT_")})
    assert out.returncode == 0, out.stderr[-2000:]
    address, limit = out.stdout.split()
    assert address == "127.0.0.1" and int(limit) == server["maxUploadSize"]


# -- CAM of a non-spatial layer, NaN/Inf gradients -----------------------------------------------
def test_cam_of_a_non_spatial_layer_is_one_error_on_compare(store):
    at = _app("compare")
    at.text_input(key="compare_cam").set_value("fc1").run()
    at.button(key="compare_run").click().run()
    msg = _one_error(at, "CAM of fc1")
    assert "fc1" in msg and "spatial" in msg.lower(), msg
    at.text_input(key="compare_cam").set_value("auto").run()
    at.button(key="compare_run").click().run()
    _fine(at, "CAM of the automatic layer")


def test_a_run_with_nan_and_inf_gradients_opens_and_is_flagged(store):
    """Not a failure: a stored run whose gradients hold NaN and Inf opens on the Runs page and the
    Inspector without an exception; the Inspector flags the non-finite events (one message and
    the table's flag column)."""
    model = SimpleCNN().eval()
    x = torch.randn(1, 3, 32, 32)
    x[0, 0, 3, 3] = float("nan")
    with hooklab.record(model, ["conv1", "fc2"], param_grads=True,
                        meta={"model": "simple_cnn", "page": "inspector"}) as rec:
        rec.run(x, target=lambda out: (out * float("inf")).sum())
    ev = rec.trace.events
    assert (ev.nan_count > 0).any() and (ev.inf_count > 0).any()
    rid = store.save(rec.trace, notes="nan and inf")
    at = _app("runs", run=rid)
    _fine(at, "runs page showing the NaN/Inf run")
    at = _app("inspector", run=rid)
    assert not at.exception
    bad = int(((ev.nan_count > 0) | (ev.inf_count > 0)).sum())
    errors = _errors(at)  # exactly the one promised message, counting the flagged events
    assert len(errors) == 1 and errors[0].startswith(f"NaN/Inf in {bad} events: "), errors
    table = at.dataframe[0].value
    assert len(table) == len(ev)
    flagged = table[table["flag"].astype(str).str.len() > 0]
    assert len(flagged) == bad, table["flag"]


# -- the real server: bound to localhost, oversize uploads refused -------------------------------
def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_health(url: str, proc: subprocess.Popen, timeout: float = 180.0) -> None:
    import time
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"streamlit did not answer at {url}")


@pytest.fixture
def live_server(tmp_path):
    """``streamlit run dashboard/app.py`` with the project's config and no address override."""
    import signal

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_SERVER_ADDRESS")}
    env.update(HOOKLAB_STORE=str(tmp_path / "runs"), PYTHONUNBUFFERED="1")
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "dashboard/app.py",
                             "--server.port", str(port), "--server.headless", "true"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        _wait_health(f"http://127.0.0.1:{port}", proc)
        yield proc, port
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=15)
        log.close()


@pytest.mark.e2e
def test_server_listens_on_localhost_only_and_refuses_oversize_uploads(live_server, tmp_path):
    import psutil

    proc, port = live_server
    listening = [c.laddr for p in [psutil.Process(proc.pid), *psutil.Process(proc.pid)
                                   .children(recursive=True)]
                 for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    assert any(a.port == port for a in listening), listening
    assert all(a.ip == "127.0.0.1" for a in listening), listening  # not 0.0.0.0, not ::
    limit_mb = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())["server"][
        "maxUploadSize"]

    if not os.path.exists("/usr/bin/chromium"):
        if os.environ.get("HOOKLAB_REQUIRE_BROWSER") == "1":
            pytest.fail("/usr/bin/chromium is missing")
        pytest.skip("the upload check needs Debian's Chromium")
    from playwright.sync_api import sync_playwright

    url = f"http://127.0.0.1:{port}"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page()
            page.set_default_timeout(120_000)
            uploads: list = []
            page.on("request", lambda r: uploads.append(r) if "/_stcore/upload_file/" in r.url
                    and r.method == "PUT" else None)
            page.goto(f"{url}/runs", wait_until="domcontentloaded")
            page.wait_for_selector("[data-testid='stMain'] h1")
            page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']")
            chooser = page.locator("[data-testid='stFileUploader'] input[type='file']").first
            # a small file goes through (this also gives us a real upload request to replay)
            chooser.set_input_files(files=[{"name": "small.zip", "mimeType": "application/zip",
                                            "buffer": b"PK\x05\x06" + b"\x00" * 18}])
            page.wait_for_timeout(1500)
            assert uploads, "the browser never uploaded the small file"
            good = uploads[-1]
            n_before = len(uploads)
            # over the limit: the browser refuses it and says so; nothing is sent
            big = tmp_path / "huge.zip"  # sparse: nothing is held in memory
            with open(big, "wb") as f:
                f.truncate(limit_mb * 2**20 + 1024)
            chooser.set_input_files(files=[str(big)])
            page.wait_for_timeout(1500)
            text = page.inner_text("[data-testid='stFileUploader']")
            assert "must be" in text and ("MB" in text or "GB" in text), text  # "0.5GB"
            assert len(uploads) == n_before
            # and a client that ignores the browser's check gets 413 from the server
            headers = {k: v for k, v in good.headers.items()
                       if k.lower() in ("x-xsrftoken", "cookie")}
            target = good.url.rsplit("/", 1)[0] + "/oversize-test"
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.putrequest("PUT", urlsplit(target).path)
            cookies = "; ".join(f"{c['name']}={c['value']}" for c in page.context.cookies())
            conn.putheader("Cookie", cookies)  # the browser's XSRF cookie, as it would send it
            for k, v in headers.items():
                if k.lower() != "cookie":
                    conn.putheader(k, v)
            conn.putheader("Content-Type", "multipart/form-data; boundary=x")
            conn.putheader("Content-Length", str(big.stat().st_size + 200))
            conn.endheaders()  # the server answers from the header, before any body
            resp = conn.getresponse()
            assert resp.status == 413, (resp.status, resp.read()[:200])
            conn.close()
            # the app still works: the page has no exception and answers a rerun
            assert page.locator("[data-testid='stException']").count() == 0
        finally:
            browser.close()
