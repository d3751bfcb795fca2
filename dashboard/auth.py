"""Sign-in for a lab server: Streamlit's native OpenID Connect (``st.login`` / ``st.user`` /
``st.logout``), configured in ``.streamlit/secrets.toml`` as Streamlit documents it::

    [auth]
    redirect_uri = "https://lab.example.org/oauth2callback"
    cookie_secret = "a long random string"
    client_id = "hooklab"
    client_secret = "..."
    server_metadata_url = "https://idp.example.org/.well-known/openid-configuration"

    [hooklab]
    admins = ["pi@lab.example.org"]     # e-mails or subjects who may change every run

Off by default: without an ``[auth]`` section nothing changes (the local user may do
everything, the sidebar's author box stays). With it, the router shows only the sign-in page
until the visitor is signed in; the author of a saved run is the signed-in identity, and the
store enforces :class:`hooklab.store.access.LabPolicy` with these admins.

A provider that is unreachable or refuses the client (wrong client secret) is found *before*
``st.login`` sends the browser away (Streamlit answers a failed redirect with a bare
"Authentication error" page, and a failed token exchange with a silent return to the app), so
the sign-in page says what is wrong and the server keeps running.
"""

from __future__ import annotations

import base64
import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

import streamlit as st

from dashboard.i18n import t
from hooklab.store.access import Identity, LabPolicy

log = logging.getLogger(__name__)
#: Seconds a provider check is reused (one check per sign-in page view would be slow).
CHECK_TTL = 30.0
TIMEOUT = 5.0


def auth_section() -> Mapping[str, Any] | None:
    """The ``[auth]`` section of the secrets, or ``None`` when sign-in is not configured."""
    try:
        if "auth" not in st.secrets:
            return None
        section = st.secrets["auth"]
    except Exception:  # noqa: BLE001 - no secrets file at all: not configured
        return None
    return section if isinstance(section, Mapping) and section else None


def configured() -> bool:
    """True when the operator configured sign-in (an ``[auth]`` section)."""
    return auth_section() is not None


def admins() -> tuple[str, ...]:
    """``[hooklab] admins`` from the secrets (a list, or one comma-separated string)."""
    try:
        section = st.secrets.get("hooklab", {})
        value = section.get("admins", ()) if isinstance(section, Mapping) else ()
    except Exception:  # noqa: BLE001 - no secrets file
        return ()
    if isinstance(value, str):
        value = value.split(",")
    return tuple(str(a).strip() for a in value if str(a).strip())


def policy() -> LabPolicy:
    """The store's policy: enforced with the configured admins when sign-in is on, else open."""
    return LabPolicy.lab(admins()) if configured() else LabPolicy.open()


def identity() -> Identity | None:
    """The signed-in member, or ``None`` (not signed in, or sign-in not configured)."""
    if not configured():
        return None
    try:
        if not st.user.is_logged_in:
            return None
        claims = st.user.to_dict()
    except Exception:  # noqa: BLE001 - no session (bare mode)
        return None
    return Identity.from_claims(claims)


def _provider_name(section: Mapping[str, Any]) -> str | None:
    """``None`` for settings in ``[auth]`` itself, else the name of the first ``[auth.x]``."""
    if "client_id" in section:
        return None
    named = [k for k, v in section.items() if isinstance(v, Mapping) and "client_id" in v]
    return named[0] if named else None


def _provider_settings(section: Mapping[str, Any]) -> Mapping[str, Any]:
    """The settings of the provider sign-in uses (``[auth]`` itself, or the first ``[auth.x]``)."""
    name = _provider_name(section)
    return section if name is None else section[name]


def _probe(settings: Mapping[str, Any]) -> str | None:
    """What is wrong with the provider, or ``None``: fetch its metadata, then present the
    client's credentials at the token endpoint with a dummy code (RFC 6749 5.2: a provider
    answers ``invalid_client`` when the credentials are wrong, ``invalid_grant`` otherwise)."""
    url = str(settings.get("server_metadata_url") or "")
    if not url.startswith(("http://", "https://")):
        return "server_metadata_url is missing or not an http(s) URL"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as r:  # noqa: S310 - operator's URL
            meta = json.loads(r.read(1 << 20))
        token_url = str(meta["token_endpoint"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"the identity provider at {url} cannot be reached or answered no metadata ({exc})"
    cid, secret = str(settings.get("client_id", "")), str(settings.get("client_secret", ""))
    body = urllib.parse.urlencode({"grant_type": "authorization_code", "code": "hooklab-probe",
                                   "redirect_uri": str(auth_section_value("redirect_uri"))})
    basic = base64.b64encode(f"{urllib.parse.quote(cid)}:{urllib.parse.quote(secret)}"
                             .encode()).decode()
    req = urllib.request.Request(token_url, data=body.encode(), method="POST", headers={
        "Authorization": f"Basic {basic}", "Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT):  # noqa: S310
            return None
    except urllib.error.HTTPError as exc:
        try:
            error = json.loads(exc.read(65536)).get("error", "")
        except (ValueError, AttributeError, OSError):
            error = ""
        if error in ("invalid_client", "unauthorized_client") or exc.code == 401:
            return ("the identity provider refused this server's client_id / client_secret "
                    f"({error or exc.code})")
        return None
    except OSError as exc:
        return f"the identity provider's token endpoint {token_url} cannot be reached ({exc})"


def auth_section_value(key: str) -> Any:
    section = auth_section() or {}
    return section.get(key, "")


@st.cache_data(ttl=CHECK_TTL, show_spinner=False)
def _cached_probe(settings_json: str) -> str | None:
    return _probe(json.loads(settings_json))


def provider_problem() -> str | None:
    """Why sign-in cannot work right now (checked at most every :data:`CHECK_TTL` s), or None."""
    section = auth_section()
    if section is None:
        return None
    settings = _provider_settings(section)
    keys = ("server_metadata_url", "client_id", "client_secret")
    return _cached_probe(json.dumps({k: str(settings.get(k, "")) for k in keys}, sort_keys=True))


def sign_in_page() -> None:
    """The only page an unsigned visitor sees: what this is, and a sign-in button (or, when
    the provider is misconfigured, one message saying what is wrong)."""
    st.title(t("hooklab — sign in", "hooklab — 登录"))
    st.write(t("This hooklab server is for the members of the lab. Sign in with the lab's "
               "account to see and save runs.",
               "此 hooklab 服务器仅供实验室成员使用。请使用实验室账号登录以查看和保存运行。"))
    problem = provider_problem()
    if problem:
        st.error(t(f"Sign-in is not available: {problem}. Tell the server's operator; the "
                   "settings are in .streamlit/secrets.toml [auth].",
                   f"无法登录：{problem}。请联系服务器管理员；设置位于 .streamlit/secrets.toml [auth]。"))
        if st.button(t("Check again", "重新检查"), key="hooklab_auth_retry"):
            _cached_probe.clear()
            st.rerun()
        return
    if st.button(t("Sign in", "登录"), type="primary", key="hooklab_sign_in"):
        try:
            st.login(_provider_name(auth_section() or {}))
        except st.errors.StreamlitAPIException as exc:  # incomplete [auth] settings
            log.warning("st.login failed: %s", exc)
            st.error(t(f"Sign-in is not available: {exc}", f"无法登录：{exc}"))


def sidebar_account(who: Identity) -> None:
    """Who is signed in, and the sign-out button."""
    st.caption(t("Signed in as", "当前登录") + ":")
    st.text(who.label)
    if st.button(t("Sign out", "退出登录"), key="hooklab_sign_out"):
        st.logout()


def require_sign_in() -> Identity | None:
    """With sign-in configured: the signed-in member, or show the sign-in page and stop the
    script (no page, no sidebar). Without it: ``None`` and nothing happens."""
    if not configured():
        return None
    who = identity()
    if who is None:
        sign_in_page()
        st.stop()
    return who
