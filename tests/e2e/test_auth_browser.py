"""Sign-in in the browser against a real OpenID Connect provider (oidc-provider-mock on a
127.0.0.1 port): one provider and one ``streamlit run`` with a temporary secrets.toml for the
whole module.

An unsigned visitor sees only the sign-in page; member Ana signs in, saves a run and is its
author; member Ben opens and exports it but cannot trash it or change its notes (the page says
why, the store is unchanged on disk); the admin can; the audit log holds each change.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from hooklab.store.runs import TraceStore
from tests.e2e.conftest import (
    ARTIFACTS,
    CHROMIUM_ARGS,
    ROOT,
    SLOW_MS,
    free_port,
    open_page,
    stop_server,
    wait_health,
    wait_idle,
    warm_default_model,
)

pytestmark = pytest.mark.e2e
#: Playwright's waiting assertions (the module is skipped where Playwright is not installed).
expect = pytest.importorskip("playwright.sync_api").expect
RUN_ID = re.compile(r"\b\d{8}-\d{6}-[0-9a-f]{8}\b")
USERS = {"ana": ("Ana", "ana@lab.org"), "ben": ("Ben", "ben@lab.org"),
         "boss": ("Boss", "boss@lab.org")}


@pytest.fixture(scope="module")
def lab(chromium_path, tmp_path_factory) -> Iterator[dict]:
    """The provider (in a thread), a registered client, and the dashboard configured for it."""
    from oidc_provider_mock import User, run_server_in_thread

    os.environ["AUTHLIB_INSECURE_TRANSPORT"] = "1"  # plain http on 127.0.0.1 in the test
    base = tmp_path_factory.mktemp("auth")
    port = free_port()
    app_url = f"http://127.0.0.1:{port}"
    users = [User(sub=s, claims={"name": n, "email": e}) for s, (n, e) in USERS.items()]
    with run_server_in_thread(require_client_registration=True, user_claims=users) as idp:
        idp_url = f"http://127.0.0.1:{idp.server_port}"
        req = urllib.request.Request(
            f"{idp_url}/oauth2/clients", method="POST",
            data=json.dumps({"redirect_uris": [f"{app_url}/oauth2callback"]}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            client = json.loads(r.read())
        secrets = base / "secrets.toml"
        secrets.write_text(
            "[auth]\n"
            f'redirect_uri = "{app_url}/oauth2callback"\n'
            f'cookie_secret = "{"c" * 40}"\n'
            f'client_id = "{client["client_id"]}"\n'
            f'client_secret = "{client["client_secret"]}"\n'
            f'server_metadata_url = "{idp_url}/.well-known/openid-configuration"\n\n'
            "[hooklab]\n"
            'admins = ["boss@lab.org"]\n')
        ARTIFACTS.mkdir(exist_ok=True)
        warm_default_model()
        env = dict(os.environ, HOOKLAB_STORE=str(base / "store"), PYTHONUNBUFFERED="1",
                   STREAMLIT_BROWSER_GATHER_USAGE_STATS="false", AUTHLIB_INSECURE_TRANSPORT="1")
        with open(ARTIFACTS / "e2e-auth-server.log", "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "streamlit", "run", "dashboard/app.py",
                 "--server.port", str(port), "--server.headless", "true",
                 "--server.address", "127.0.0.1", "--server.fileWatcherType", "none",
                 "--browser.gatherUsageStats", "false", "--secrets.files", str(secrets)],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
            try:
                wait_health(app_url, proc)
                yield {"url": app_url, "store": base / "store"}
            finally:
                stop_server(proc)


@pytest.fixture(scope="module")
def chrome(chromium_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def _ctx(chrome):
    ctx = chrome.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    ctx.set_default_timeout(SLOW_MS)
    return ctx


def _shot(ctx, name: str) -> None:
    for i, pg in enumerate(ctx.pages):
        try:
            pg.screenshot(path=str(ARTIFACTS / f"auth-{name}-{i}.png"), full_page=True)
        except Exception:  # noqa: BLE001 - best effort
            pass


def _sign_in(page, url: str, sub: str) -> None:
    """Sign-in page -> "Sign in" -> the provider's form -> the user's button -> back, signed in."""
    open_page(page, url + "/")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/oauth2/authorize"), timeout=SLOW_MS)
    page.get_by_role("button", name=sub, exact=True).click()
    page.wait_for_url(re.compile(re.escape(url) + r"/?(\?.*)?$"), timeout=SLOW_MS)
    name, email = USERS[sub]
    page.locator("[data-testid='stSidebar']").get_by_text(f"{name} <{email}>").wait_for(
        timeout=SLOW_MS)
    wait_idle(page)


def _main(page):
    return page.locator("[data-testid='stMain']")


def _files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "lock"}


def _click_and_wait(page, button) -> None:
    button.click()
    wait_idle(page)


def test_unsigned_visitor_sees_only_the_sign_in_page(lab, chrome):
    ctx = _ctx(chrome)
    try:
        page = ctx.new_page()
        for path in ("/", "/runs", "/inspector"):
            open_page(page, lab["url"] + path)
            assert _main(page).locator("h1").first.inner_text().startswith("hooklab — sign in")
            # The button comes after the provider check (a request to the provider), which
            # can still be under way when the title is there.
            expect(page.get_by_role("button", name="Sign in")).to_have_count(1, timeout=SLOW_MS)
            assert page.locator("[data-testid='stSidebarNav']").count() == 0
            assert page.get_by_role("button", name="Save run").count() == 0
    except Exception:
        _shot(ctx, "unsigned")
        raise
    finally:
        ctx.close()


def test_members_and_admin_permission_matrix(lab, chrome, tmp_path):
    url, root = lab["url"], lab["store"]
    # -- Ana saves a run and is its author ----------------------------------------------------
    ctx = _ctx(chrome)
    try:
        page = ctx.new_page()
        _sign_in(page, url, "ana")
        assert page.locator("[data-testid='stSidebar'] input[type='text']").count() == 0
        _click_and_wait(page, _main(page).get_by_role("button", name="Save run"))
        saved = _main(page).get_by_text(re.compile(r"Saved as run")).first
        saved.wait_for(timeout=SLOW_MS)
        rid = RUN_ID.search(saved.inner_text()).group(0)
        open_page(page, f"{url}/runs?run={rid}")
        detail = _main(page).locator("[data-testid='stMarkdown']").filter(
            has_text=re.compile(r"Author:.*Time:")).first
        detail.wait_for(timeout=SLOW_MS)  # the author shown as text (e-mail may be code)
        assert re.search(r"Author:\s*Ana\s*<?ana@lab\.org>?\s*·", detail.inner_text())
    except Exception:
        _shot(ctx, "ana")
        raise
    finally:
        ctx.close()
    store = TraceStore(root)
    assert store.manifest(rid)["author_identity"]["email"] == "ana@lab.org"

    # -- Ben opens and exports it, but cannot change or trash it --------------------------------
    before = _files(root)
    ctx = _ctx(chrome)
    try:
        page = ctx.new_page()
        _sign_in(page, url, "ben")
        open_page(page, f"{url}/runs?run={rid}")
        main = _main(page)
        main.get_by_text(re.compile("not change it")).first.wait_for(timeout=SLOW_MS)
        with page.expect_download(timeout=SLOW_MS) as dl:
            main.get_by_role("button", name="Export run (.zip)").click()
        zpath = tmp_path / "ben.zip"
        dl.value.save_as(zpath)
        with zipfile.ZipFile(zpath) as zf:
            assert sorted(zf.namelist()) == ["events.parquet", "manifest.json",
                                             "tensors.safetensors"]
        notes = main.get_by_label("Notes")
        notes.fill("Ben was here")
        _click_and_wait(page, main.get_by_role("button", name="Save notes and tags"))
        main.get_by_text(re.compile("may not change the notes")).first.wait_for(timeout=SLOW_MS)
        _click_and_wait(page, main.get_by_role("button", name="Move to trash"))
        main.get_by_text(re.compile("may not move to the trash")).first.wait_for(
            timeout=SLOW_MS)
    except Exception:
        _shot(ctx, "ben")
        raise
    finally:
        ctx.close()
    assert _files(root) == before  # refused: not one byte changed, no audit line either

    # -- the admin can -------------------------------------------------------------------------
    ctx = _ctx(chrome)
    try:
        page = ctx.new_page()
        _sign_in(page, url, "boss")
        open_page(page, f"{url}/runs?run={rid}")
        main = _main(page)
        assert main.get_by_text(re.compile("not change it")).count() == 0
        main.get_by_label("Notes").fill("checked by the PI")
        _click_and_wait(page, main.get_by_role("button", name="Save notes and tags"))
        _click_and_wait(page, main.get_by_role("button", name="Move to trash"))
        main.get_by_text(re.compile(rf"Run {rid} moved to the trash")).first.wait_for(
            timeout=SLOW_MS)
    except Exception:
        _shot(ctx, "boss")
        raise
    finally:
        ctx.close()
    assert not store.exists(rid) and list(store.trash_list()["run_id"]) == [rid]
    hist = store.history(rid)
    assert [(e["action"], e["who"]["email"]) for e in hist] == [
        ("save", "ana@lab.org"), ("update", "boss@lab.org"), ("trash", "boss@lab.org")]
    assert hist[1]["after"] == {"notes": "checked by the PI"}
    assert store.verify_audit().ok
