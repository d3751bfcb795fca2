"""Sign-in in AppTest (no browser): only the sign-in page without a session, one message for a
misconfigured provider, the Runs page routes changes through the store's policy and says why;
the provider check against a real OpenID Connect provider (oidc-provider-mock, in a thread)."""

from __future__ import annotations

import hashlib
import json
import socket
import urllib.request
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from hooklab.store.access import Identity
from hooklab.store.runs import TraceStore
from hooklab.testing.store_stress import synthetic_trace

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "dashboard" / "app.py")
RUNS = str(ROOT / "dashboard" / "views" / "runs.py")
TIMEOUT = 90
IDP = "http://idp.test"
ANA = Identity(name="Ana", email="ana@lab.org", subject="sub-ana", provider=IDP)


def _dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/.well-known/openid-configuration"


def _secrets(metadata_url: str, secret: str = "s3cret", client: str = "hooklab") -> dict:
    return {"auth": {"redirect_uri": "http://127.0.0.1:8501/oauth2callback",
                     "cookie_secret": "x" * 32, "client_id": client, "client_secret": secret,
                     "server_metadata_url": metadata_url},
            "hooklab": {"admins": ["boss@lab.org"]}}


def _member(name: str, email: str) -> dict:
    return {"is_logged_in": True, "name": name, "email": email, "sub": f"sub-{name.lower()}",
            "iss": IDP}


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("HOOKLAB_STORE", str(tmp_path / "runs"))
    from dashboard import auth, state

    state.store.clear()
    auth._cached_probe.clear()
    s = TraceStore(tmp_path / "runs", durable=False)
    yield s
    state.store.clear()
    auth._cached_probe.clear()


def _files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "lock"}


def test_unsigned_visitor_sees_only_the_sign_in_page(store):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.secrets.update(_secrets(_dead_url()))
    at.user = {"is_logged_in": False}
    at.run()
    assert not at.exception
    assert [h.value for h in at.title] == ["hooklab — sign in"]
    assert not at.text_input  # no author box, no page controls
    (err,) = at.error  # the provider is unreachable: one message, no sign-in button
    assert "Sign-in is not available" in err.value and "cannot be reached" in err.value
    assert [b.label for b in at.button] == ["Check again"]


def test_without_auth_the_author_box_stays(store):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception
    assert [ti.label for ti in at.sidebar.text_input] == ["Author"]
    assert "hooklab — sign in" not in [h.value for h in at.title]


def test_signed_in_member_sees_herself_in_the_sidebar(store):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.secrets.update(_secrets(_dead_url()))
    at.user = _member("Ana", "ana@lab.org")
    at.run()
    assert not at.exception
    assert "Ana <ana@lab.org>" in [tx.value for tx in at.sidebar.text]
    assert not at.sidebar.text_input  # no author box: the author is the signed-in member
    assert "Sign out" in [b.label for b in at.sidebar.button]


def _runs_page(user: dict, rid: str) -> AppTest:
    at = AppTest.from_file(RUNS, default_timeout=TIMEOUT)
    at.secrets.update(_secrets(_dead_url()))
    at.user = user
    at.query_params["run"] = rid
    return at.run()


def test_other_member_is_told_why_and_the_store_does_not_change(store):
    rid = store.save(synthetic_trace(1, 4), notes="orig", by=ANA)
    before = _files(store.root)
    at = _runs_page(_member("Ben", "ben@lab.org"), rid)
    assert not at.exception
    warning = " ".join(w.value for w in at.warning)
    assert "not change it" in warning and "only its owner" in warning
    at.text_area(key=f"runs_notes_{rid}").set_value("Ben was here")
    at.button(key=f"runs_save_meta_{rid}").click().run()
    assert any("may not change" in e.value for e in at.error)
    at.button(key=f"runs_delete_{rid}").click().run()
    assert any("may not move" in e.value for e in at.error)
    assert _files(store.root) == before
    assert store.exists(rid) and store.manifest(rid)["notes"] == "orig"


def test_admin_may_and_the_history_shows_it(store):
    rid = store.save(synthetic_trace(1, 4), notes="orig", by=ANA)
    at = _runs_page(_member("Boss", "boss@lab.org"), rid)
    assert not at.warning
    at.text_area(key=f"runs_notes_{rid}").set_value("checked by the PI")
    at.button(key=f"runs_save_meta_{rid}").click().run()
    assert not at.error
    assert store.manifest(rid)["notes"] == "checked by the PI"
    hist = store.history(rid)
    assert [e["action"] for e in hist] == ["save", "update"]
    assert hist[1]["who"]["email"] == "boss@lab.org"
    (table,) = [d.value for d in at.dataframe if "action" in d.value.columns]
    assert list(table["action"]) == ["save", "update"] and "Boss" in table["who"].iloc[1]


def test_signed_in_exercise_answer_is_the_members_run(store):
    """Hook basics under sign-in: no name box; the answer is saved under the member's identity
    (so she, not only an admin, may change it later)."""
    at = AppTest.from_file(str(ROOT / "dashboard" / "views" / "hook_basics.py"),
                           default_timeout=180)
    at.secrets.update(_secrets(_dead_url()))
    at.user = _member("Ana", "ana@lab.org")
    at.run()
    assert not at.exception, at.exception
    assert "hook_basics_student" not in [ti.key for ti in at.text_input]
    key = "hook_basics_ex_tensor-k"
    at.number_input(key=f"{key}_answer").set_value(96.0)
    at.button(key=f"{key}_check").click().run()
    at.button(key=f"{key}_save").click().run()
    assert not at.exception, at.exception
    assert any("under Ana `<ana@lab.org>`" in s.value for s in at.success)  # shown as text
    (rid,) = store.list()["run_id"]
    m = store.manifest(rid)
    assert m["author"] == "Ana <ana@lab.org>" and m["author_identity"]["subject"] == "sub-ana"


# -- the provider check against a real OpenID Connect provider ------------------------------------
@pytest.fixture(scope="module")
def provider():
    from oidc_provider_mock import run_server_in_thread

    with run_server_in_thread(require_client_registration=True) as server:
        base = f"http://localhost:{server.server_port}"
        req = urllib.request.Request(
            f"{base}/oauth2/clients", method="POST",
            data=json.dumps({"redirect_uris": ["http://127.0.0.1:8501/oauth2callback"]}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            client = json.loads(r.read())
        yield f"{base}/.well-known/openid-configuration", client


def test_probe_accepts_a_good_client_and_names_a_wrong_secret(provider):
    from dashboard import auth

    url, client = provider
    good = {"server_metadata_url": url, "client_id": client["client_id"],
            "client_secret": client["client_secret"]}
    assert auth._probe(good) is None
    problem = auth._probe({**good, "client_secret": "wrong"})
    assert problem is not None and "refused" in problem and "client_secret" in problem
    assert "cannot be reached" in (auth._probe({**good, "server_metadata_url": _dead_url()})
                                   or "")
